import { Type, type Static } from '@sinclair/typebox';
import type { PolicyFactory, Policy, ResponseHead } from '../../gateway/policy.js';
import type { RequestContext } from '../../gateway/context.js';
import { policyBlock } from '../../gateway/config/policy-schema.js';

const secureMode = (extra: { default?: string } = {}) =>
  Type.Union([Type.Literal('auto'), Type.Literal('always'), Type.Literal('never')], {
    description:
      'auto: add Secure when the client connection is https (listener TLS or trusted X-Forwarded-Proto)',
    ...extra,
  });
const sameSite = (extra: { default?: string } = {}) =>
  Type.Union([Type.Literal('Lax'), Type.Literal('Strict'), Type.Literal('None'), Type.Literal('off')], {
    description: 'SameSite value added when the cookie has none; off = add nothing',
    ...extra,
  });

const Override = Type.Object(
  {
    http_only: Type.Optional(
      Type.Boolean({ description: 'add HttpOnly (false for a cookie scripts must read, e.g. a CSRF token)' }),
    ),
    secure: Type.Optional(secureMode()),
    same_site: Type.Optional(sameSite()),
  },
  { additionalProperties: false, description: 'settings for one cookie name, over the defaults' },
);

/**
 * `policies.cookie_hardening`: upstream `Set-Cookie` headers get `HttpOnly`, `Secure`
 * (on https) and `SameSite=Lax` unless the cookie already states them (a SameSite value
 * other than Strict, Lax or None states nothing). Attributes the upstream set are never
 * changed or removed.
 *
 * @example
 * ```yaml
 * policies:
 *   cookie_hardening:
 *     same_site: Lax
 *     cookies:
 *       csrf_token: { http_only: false }
 *       session: { same_site: Strict, secure: always }
 * ```
 */
export const cookieHardeningSchema = policyBlock(
  {
    http_only: Type.Boolean({ default: true, description: 'add HttpOnly' }),
    secure: secureMode({ default: 'auto' }),
    same_site: sameSite({ default: 'Lax' }),
    cookies: Type.Record(Type.String({ pattern: "^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$" }), Override, {
      default: {},
      description: 'per-cookie-name overrides',
    }),
  },
  { description: 'harden Set-Cookie from the upstream: HttpOnly, Secure, SameSite' },
);

export type CookieHardeningConfig = Static<typeof cookieHardeningSchema>;

interface Rule {
  readonly httpOnly: boolean;
  readonly secure: 'auto' | 'always' | 'never';
  readonly sameSite: 'Lax' | 'Strict' | 'None' | 'off';
}

/**
 * Add the missing attributes to one Set-Cookie line. Returns the line unchanged when it
 * already has them all (or is not a cookie line at all).
 */
export function hardenCookie(line: string, rule: Rule, secureRequest: boolean): string {
  const semi = line.indexOf(';');
  let hasHttpOnly = false;
  let hasSecure = false;
  // the value of the last SameSite attribute: the one a browser applies (RFC 6265bis §5.7)
  let sameSite: string | undefined;
  if (semi !== -1) {
    for (const attr of line.slice(semi + 1).split(';')) {
      const eq = attr.indexOf('=');
      const name = (eq === -1 ? attr : attr.slice(0, eq)).trim().toLowerCase();
      if (name === 'httponly') hasHttpOnly = true;
      else if (name === 'secure') hasSecure = true;
      else if (name === 'samesite')
        sameSite =
          eq === -1
            ? ''
            : attr
                .slice(eq + 1)
                .trim()
                .toLowerCase();
    }
  }
  // A SameSite value other than Strict, Lax or None (a typo, an empty one) leaves the cookie
  // without one (RFC 6265bis §5.6.7: enforcement "Default"; Firefox and Safari then send it
  // cross-site): it counts as absent, and the SameSite added after it is the last, so it applies.
  const hasSameSite = sameSite === 'strict' || sameSite === 'lax' || sameSite === 'none';
  const sameSiteNone = sameSite === 'none';
  let out = line.trimEnd();
  if (out.endsWith(';')) out = out.slice(0, -1);
  if (rule.httpOnly && !hasHttpOnly) out += '; HttpOnly';
  const addSameSite = rule.sameSite !== 'off' && !hasSameSite;
  // SameSite=None without Secure is rejected by browsers: None implies Secure.
  const wantSecure =
    rule.secure === 'always' ||
    (rule.secure === 'auto' && secureRequest) ||
    (addSameSite && rule.sameSite === 'None') ||
    sameSiteNone;
  if (wantSecure && !hasSecure && rule.secure !== 'never') out += '; Secure';
  if (addSameSite) out += `; SameSite=${rule.sameSite}`;
  return out === line.trimEnd() ? line : out;
}

function cookieName(line: string): string {
  const end = line.search(/[=;]/);
  return (end === -1 ? line : line.slice(0, end)).trim();
}

/** The cookie-hardening policy (onResponse). */
export const cookieHardening: PolicyFactory<typeof cookieHardeningSchema> = {
  name: 'cookie-hardening',
  key: 'cookie_hardening',
  schema: cookieHardeningSchema,
  compile(config): Policy {
    const base: Rule = { httpOnly: config.http_only, secure: config.secure, sameSite: config.same_site };
    const rules = new Map<string, Rule>();
    for (const [name, o] of Object.entries(config.cookies)) {
      rules.set(name, {
        httpOnly: o.http_only ?? base.httpOnly,
        secure: o.secure ?? base.secure,
        sameSite: o.same_site ?? base.sameSite,
      });
    }
    const monitor = config.mode === 'monitor';
    return {
      name: 'cookie-hardening',
      mode: config.mode,
      failure: 'open',
      onResponse(ctx: RequestContext, head: ResponseHead) {
        const value = head.headers['set-cookie'];
        if (value === undefined) return;
        const lines = Array.isArray(value) ? value : [value];
        const changed: string[] = [];
        const out = lines.map((line) => {
          const name = cookieName(line);
          const hardened = hardenCookie(line, rules.get(name) ?? base, ctx.secure);
          if (hardened !== line) changed.push(name);
          return hardened;
        });
        if (changed.length === 0) return;
        if (monitor) {
          ctx.audit.cookies_not_hardened = changed;
          return;
        }
        head.headers['set-cookie'] = Array.isArray(value) ? out : out[0];
      },
    };
  },
};
