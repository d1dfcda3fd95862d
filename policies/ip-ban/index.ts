import { BlockList, isIP } from 'node:net';
import { createHash } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { Deny, Policy, PolicyFactory, Verdict } from '../../gateway/policy.js';
import type { RequestContext } from '../../gateway/context.js';
import { policyBlock, Duration, FailureSchema } from '../../gateway/config/policy-schema.js';
import { parseDuration } from '../../gateway/config/units.js';
import { CODES, ConfigError } from '../../gateway/errors.js';
import { MAX_WINDOW_EVENTS } from '../../gateway/store/types.js';
import { blockedAtAnyPrefix, canonicalIp, clientKey, configuredPrefixes } from './ip.js';
import { SKIP_LOCAL, SKIP_NAMES_PATTERN, isSkipped } from './allowlist.js';

/** Store key prefix of automatic bans (`listBlocks(BAN_PREFIX, n)` lists them). */
export const BAN_PREFIX = 'ipban:ban:';

/** ctx.locals key of the promise of the auto-ban accounting started in onDone. */
export const PENDING_LOCAL = 'ip-ban.pending';

/** Denials that count towards an automatic ban by default. `code:reason` matches `detail.reason`. */
export const DEFAULT_BAN_CODES = [
  'request_blocked',
  'user_agent_rejected',
  'upload_rejected',
  'unauthorized:signature',
  'unauthorized:malformed',
  'unauthorized:algorithm',
];

const Cidr = Type.String({
  minLength: 2,
  maxLength: 64,
  description: 'an IPv4 or IPv6 address or network (CIDR), e.g. 10.0.0.0/8, 2001:db8::/32',
});

const schema = policyBlock(
  {
    allow: Type.Array(
      Type.Union([
        Cidr,
        Type.Object(
          {
            cidr: Cidr,
            skip: Type.Array(Type.String({ pattern: SKIP_NAMES_PATTERN }), {
              default: ['*'],
              minItems: 1,
              description:
                'checks this network skips: * (all), ip_ban, login_lockout, rate_limit, rate_limit.<rule>',
            }),
          },
          { additionalProperties: false },
        ),
      ]),
      {
        default: [],
        description:
          'networks exempt from checks: a bare CIDR skips everything (deny list, bans, rate limits, login lockout); {cidr, skip: [...]} skips only the named checks',
      },
    ),
    deny: Type.Array(Cidr, { default: [], description: 'networks always refused with 403 ip_blocked' }),
    auto_ban: Type.Boolean({
      default: true,
      description: 'ban a client IP that collects `threshold` suspicious denials within `window`',
    }),
    threshold: Type.Integer({
      minimum: 1,
      maximum: MAX_WINDOW_EVENTS,
      default: 10,
      description: 'suspicious denials within `window` that trigger a ban (SUSPICIOUS_ACTIVITY_THRESHOLD)',
    }),
    window: Duration('1h', 'sliding window in which suspicious denials are counted'),
    ban_duration: Duration('1h', 'how long an automatic ban lasts'),
    ban_codes: Type.Array(Type.String({ pattern: '^[a-z_]+(:[a-z_]+)?$' }), {
      default: DEFAULT_BAN_CODES,
      description:
        'denial codes that count as suspicious; `code:reason` matches only denials whose detail.reason is `reason` (e.g. unauthorized:signature)',
    }),
    ipv6_prefix: Type.Integer({
      minimum: 32,
      maximum: 128,
      default: 64,
      description:
        'IPv6 clients are counted and banned per network of this many bits (a subscriber usually holds a /64); 128 = per address',
    }),
    fail: FailureSchema('open'),
  },
  { description: 'IP allow/deny lists and automatic bans of clients that collect suspicious denials' },
);

type ParsedCidr = { address: string; prefix: number; family: 'ipv4' | 'ipv6' };

/** Parse `addr` or `addr/prefix` to a canonical network; IPv4-mapped IPv6 networks become IPv4. */
export function parseCidr(text: string): ParsedCidr {
  const slash = text.indexOf('/');
  const rawAddr = (slash === -1 ? text : text.slice(0, slash)).trim();
  const rawFamily = isIP(rawAddr);
  if (rawFamily === 0) throw new Error(`"${text}" is not an IP address or CIDR network`);
  const address = canonicalIp(rawAddr);
  const family = isIP(address) === 4 ? 'ipv4' : 'ipv6';
  const max = rawFamily === 4 ? 32 : 128;
  let prefix = max;
  if (slash !== -1) {
    const p = text.slice(slash + 1).trim();
    if (!/^\d{1,3}$/.test(p) || Number(p) > max)
      throw new Error(`"${text}" has an invalid prefix length (0-${max})`);
    prefix = Number(p);
  }
  if (rawFamily === 6 && family === 'ipv4') {
    // ::ffff:10.0.0.0/104 is 10.0.0.0/8
    if (prefix < 96) throw new Error(`"${text}": an IPv4-mapped network needs a prefix of at least 96`);
    prefix -= 96;
  }
  return { address, prefix, family };
}

function hash(v: unknown): string {
  return createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 10);
}

/**
 * `ip_ban`: static allow and deny lists (CIDR, IPv4 and IPv6; IPv4-mapped IPv6 addresses
 * are the IPv4 address), and automatic bans: an IP that collects `threshold` denials of
 * the suspicious kinds (`ban_codes`) within `window` is refused with 403 `ip_blocked` for
 * `ban_duration`, written as an `ip_banned` audit event and counted in
 * `gateway_ip_bans_total`. Bans live in the state store, so with `REDIS_URL=redis://…`
 * every instance refuses a banned IP. The allow list also exempts networks from the rate
 * limits and the login lockout it names.
 * ```yaml
 * policies:
 *   ip_ban:
 *     allow: [10.0.0.0/8, { cidr: 192.0.2.10, skip: [rate_limit] }]
 *     deny: [203.0.113.0/24, "2001:db8:bad::/48"]
 *     threshold: ${SUSPICIOUS_ACTIVITY_THRESHOLD:-10}
 *     window: 1h
 *     ban_duration: 1h
 * ```
 */
export const ipBan: PolicyFactory<typeof schema> = {
  name: 'ip-ban',
  key: 'ip_ban',
  schema,
  compile(config, cctx): Policy {
    const { store, metrics, audit, log } = cctx.services;
    const at = (...p: (string | number)[]) => [...cctx.path, ...p];

    const allowGroups = new Map<string, { list: BlockList; skip: ReadonlySet<string> }>();
    config.allow.forEach((entry, i) => {
      const cidr = typeof entry === 'string' ? entry : entry.cidr;
      const skip = typeof entry === 'string' ? ['*'] : entry.skip;
      let net: ParsedCidr;
      try {
        net = parseCidr(cidr);
      } catch (err) {
        throw new ConfigError(
          (err as Error).message,
          typeof entry === 'string' ? at('allow', i) : at('allow', i, 'cidr'),
        );
      }
      const id = [...skip].sort().join(',');
      let g = allowGroups.get(id);
      if (g === undefined) allowGroups.set(id, (g = { list: new BlockList(), skip: new Set(skip) }));
      g.list.addSubnet(net.address, net.prefix, net.family);
    });
    const allow = [...allowGroups.values()];

    const deny = new BlockList();
    config.deny.forEach((cidr, i) => {
      try {
        const net = parseCidr(cidr);
        deny.addSubnet(net.address, net.prefix, net.family);
      } catch (err) {
        throw new ConfigError((err as Error).message, at('deny', i));
      }
    });
    const hasDeny = config.deny.length > 0;

    const codes = new Set<string>();
    const codeReasons = new Set<string>();
    config.ban_codes.forEach((c, i) => {
      const [code, reason] = c.split(':');
      if (!Object.hasOwn(CODES, code!))
        throw new ConfigError(`unknown denial code "${code}"`, at('ban_codes', i));
      if (code === 'ip_blocked')
        throw new ConfigError(
          'ip_blocked cannot count towards a ban (a banned client would stay banned)',
          at('ban_codes', i),
        );
      if (reason === undefined) codes.add(code!);
      else codeReasons.add(c);
    });

    const windowMs = parseDuration(config.window);
    const banMs = parseDuration(config.ban_duration);
    if (windowMs <= 0) throw new ConfigError('window must be positive', at('window'));
    if (banMs <= 0) throw new ConfigError('ban_duration must be positive', at('ban_duration'));
    const counterPrefix = `ipban:${hash({ window: windowMs, ipv6_prefix: config.ipv6_prefix })}:n:`;
    const v6Prefix = config.ipv6_prefix;
    const checkPrefixes = configuredPrefixes(cctx.config, 'ip_ban', v6Prefix);
    const threshold = config.threshold;

    const suspicious = (deny: Deny): boolean => {
      if (codes.has(deny.code)) return true;
      if (codeReasons.size === 0) return false;
      const reason = deny.detail?.reason;
      return typeof reason === 'string' && codeReasons.has(`${deny.code}:${reason}`);
    };

    const countSuspicious = async (ctx: RequestContext, status: number, code: string): Promise<void> => {
      const key = clientKey(ctx.clientIp, v6Prefix);
      const n = await store.increment(counterPrefix + key, windowMs);
      if (n < threshold) return;
      // Denials of requests that passed the ban check before the ban was set (concurrent
      // ones, or on another instance) reach the threshold too: they neither extend the
      // running ban nor report it again. Only the call that set the ban does.
      const banned = await store.block(BAN_PREFIX + key, banMs, true);
      await store.reset(counterPrefix + key);
      if (!banned) return;
      metrics.ipBans.inc();
      audit.request('ip_banned', ctx, {
        decision: 'deny',
        reason: 'auto_ban',
        status,
        detail: { key, count: n, window_ms: windowMs, ban_ms: banMs, last_code: code },
      });
    };

    const banVerdict = (left: number): Verdict =>
      left > 0
        ? { code: 'ip_blocked', ruleIds: ['auto-ban'], detail: { source: 'auto_ban', ttl_ms: left } }
        : undefined;

    const policy: Policy = {
      name: 'ip-ban',
      mode: config.mode,
      failure: config.fail,
      onRequest(ctx) {
        const ip = canonicalIp(ctx.clientIp);
        const fam = isIP(ip);
        const type = fam === 6 ? 'ipv6' : 'ipv4';
        if (fam !== 0 && allow.length > 0) {
          let skip: Set<string> | undefined;
          for (const g of allow) {
            if (!g.list.check(ip, type)) continue;
            skip ??= new Set<string>();
            for (const s of g.skip) skip.add(s);
          }
          if (skip !== undefined) {
            const prev = ctx.locals.get(SKIP_LOCAL) as ReadonlySet<string> | undefined;
            if (prev) for (const s of prev) skip.add(s);
            ctx.locals.set(SKIP_LOCAL, skip);
            if (skip.has('*') || skip.has('ip_ban')) return undefined;
          }
        }
        if (hasDeny && fam !== 0 && deny.check(ip, type)) {
          return { code: 'ip_blocked', ruleIds: ['deny-list'], detail: { source: 'deny_list' } };
        }
        // a ban set under any prefix the config keys IPv6 clients by holds here
        const left = blockedAtAnyPrefix(store, ip, checkPrefixes, (k) => BAN_PREFIX + k);
        return typeof left === 'number' ? banVerdict(left) : left.then(banVerdict);
      },
    };
    if (config.auto_ban) {
      (policy as { onDone: Policy['onDone'] }).onDone = (ctx, outcome) => {
        if (outcome.decision !== 'deny' || outcome.deny === undefined) return;
        if (!suspicious(outcome.deny) || isSkipped(ctx, 'ip_ban')) return;
        const done = countSuspicious(ctx, outcome.status, outcome.deny.code).catch((err: unknown) => {
          log.warn(
            { policy: 'ip-ban', request_id: ctx.id, err: (err as Error).message },
            'auto-ban counting failed (store unavailable)',
          );
        });
        // the accounting runs after the response; tests (and graceful shutdown) can await it
        ctx.locals.set(PENDING_LOCAL, done);
      };
    }
    return policy;
  },
};
