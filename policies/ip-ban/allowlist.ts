import type { RequestContext } from '../../gateway/context.js';

/**
 * How the `ip_ban` allow list tells later policies which checks an allowlisted client
 * skips. ip-ban runs first (registry order) and leaves the set of skipped names in
 * `ctx.locals`; rate-limit and login-lockout ask `isSkipped()`.
 *
 * Names: `*` (everything below), `ip_ban` (deny list, bans, auto-ban counting),
 * `rate_limit` (every rate-limit rule), `rate_limit.<rule>` (one rule), `login_lockout`.
 */
export const SKIP_LOCAL = 'ip_ban.skip';

export const SKIP_NAMES_PATTERN = '^(\\*|ip_ban|login_lockout|rate_limit|rate_limit\\.[a-z0-9_.-]+)$';

/** Whether the allow list exempts this request from the named check. */
export function isSkipped(ctx: RequestContext, name: string): boolean {
  const s = ctx.locals.get(SKIP_LOCAL) as ReadonlySet<string> | undefined;
  return s !== undefined && (s.has('*') || s.has(name));
}

/** Whether a rate-limit rule is skipped (all rules, or this one by name). */
export function isRuleSkipped(ctx: RequestContext, rule: string): boolean {
  const s = ctx.locals.get(SKIP_LOCAL) as ReadonlySet<string> | undefined;
  return s !== undefined && (s.has('*') || s.has('rate_limit') || s.has(`rate_limit.${rule}`));
}
