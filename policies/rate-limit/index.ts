import { createHash } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import type { Deny, Policy, PolicyFactory, Verdict } from '../../gateway/policy.js';
import type { RequestContext } from '../../gateway/context.js';
import { policyBlock, Limits, FailureSchema } from '../../gateway/config/policy-schema.js';
import { LIMITS_PATTERN, parseLimits, type Limit } from '../../gateway/config/units.js';
import { ConfigError } from '../../gateway/errors.js';
import type { BucketSpec, ConsumeResult, Store } from '../../gateway/store/types.js';
import { checkLimits } from '../../gateway/store/bucket-math.js';
import { clientKey } from '../ip-ban/ip.js';
import { isRuleSkipped } from '../ip-ban/allowlist.js';

/** Store key prefix of every rate-limit bucket. */
export const RATE_LIMIT_PREFIX = 'rl:';

const KEY_PARTS = ['ip', 'api_key', 'subject', 'route'] as const;
type KeyPart = (typeof KEY_PARTS)[number];
const KEY_PATTERN = '^(ip|api_key|subject|route)(\\+(ip|api_key|subject|route))*$';

const RuleSchema = Type.Object(
  {
    name: Type.String({
      pattern: '^[a-z0-9][a-z0-9_-]{0,39}$',
      description:
        'rule name: the `rule` label of gateway_rate_limited_total and the RateLimit header item names',
    }),
    limits: Limits(undefined, 'the limits, all enforced together'),
    key: Type.String({
      pattern: KEY_PATTERN,
      default: 'ip',
      description:
        'what is counted: ip, api_key, subject, route, or a combination joined by + (e.g. ip+route). A rule whose key needs an identity only applies to authenticated requests',
    }),
    routes: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description:
        'route names the rule applies to (configured routes, or `unmatched` for requests no route matches); empty = every route the block applies to',
    }),
    methods: Type.Array(Type.String({ pattern: '^[A-Z]+$' }), {
      default: [],
      description: 'HTTP methods the rule applies to (GET includes HEAD, as for routes); empty = all',
    }),
    fail: FailureSchema('open'),
  },
  { additionalProperties: false },
);

const schema = policyBlock(
  {
    default: Type.Union([Type.String({ pattern: LIMITS_PATTERN }), Type.Literal('off')], {
      default: '200 per day;50 per hour;10 per minute',
      description:
        'the default rule (named `default`), per client IP unless default_key says otherwise (RATELIMIT_DEFAULT); `off` disables it',
    }),
    default_key: Type.String({
      pattern: KEY_PATTERN,
      default: 'ip',
      description: 'what the default rule counts',
    }),
    default_fail: FailureSchema('open'),
    rules: Type.Array(RuleSchema, { default: [], description: 'more rules, usually in the global block' }),
    route_rules: Type.Array(RuleSchema, {
      default: [],
      description:
        'rules added by a route block (route blocks replace `rules` when they set it, so use this key to add); a name used in `rules` is overridden',
    }),
    headers: Type.Boolean({
      default: true,
      description: 'send RateLimit-Policy / RateLimit on successful responses too (429s always carry them)',
    }),
    api_key_overrides: Type.Boolean({
      default: true,
      description:
        'an API key configured with its own `rate_limit` replaces the limits of rules keyed by api_key for that key',
    }),
    ipv6_prefix: Type.Integer({
      minimum: 32,
      maximum: 128,
      default: 64,
      description: 'IPv6 clients are counted per network of this many bits; 128 = per address',
    }),
  },
  { description: 'Token-bucket rate limits (IETF RateLimit headers, 429 rate_limited with Retry-After)' },
);

type RuleConfig = Static<typeof RuleSchema>;

interface Window {
  readonly count: number;
  readonly windowMs: number;
  /** `"name-60s";q=10;w=60` */
  readonly policyItem: string;
  /** `"name-60s"` */
  readonly itemName: string;
}

interface Rule {
  readonly name: string;
  /** `${prefix}${i}:` of each of `windows`, the store key without the caller's part */
  readonly keyPrefixes: readonly string[];
  readonly parts: readonly KeyPart[];
  readonly needsIdentity: boolean;
  readonly usesApiKey: boolean;
  readonly routes: ReadonlySet<string> | undefined;
  readonly methods: ReadonlySet<string> | undefined;
  readonly failClosed: boolean;
  /** `rl:<hash of the definition>:` */
  readonly prefix: string;
  readonly windows: readonly Window[];
}

function hash(v: unknown): string {
  return createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 12);
}

function makeWindows(name: string, limits: readonly Limit[]): Window[] {
  return limits.map((l) => {
    const w = Math.ceil(l.windowMs / 1000);
    const itemName = `"${name}-${w}s"`;
    return { count: l.count, windowMs: l.windowMs, itemName, policyItem: `${itemName};q=${l.count};w=${w}` };
  });
}

interface Override {
  readonly limits: readonly Limit[];
  readonly hash: string;
  /** windows per rule name (item names carry the rule name) */
  readonly windowsFor: Map<string, Window[]>;
}

function makeOverride(limits: readonly Limit[]): Override | null {
  try {
    checkLimits(limits);
  } catch {
    return null;
  }
  return { limits, windowsFor: new Map(), hash: hash(limits.map((l) => [l.count, l.windowMs])) };
}

/** Overrides from Identity.limits text, parsed once per distinct text. */
const textOverrides = new Map<string, Override | null>();
/** Overrides the auth policy parsed itself (ctx.locals 'auth'.rateLimit), per array. */
const parsedOverrides = new WeakMap<readonly Limit[], Override | null>();

/**
 * The API key's own limits: the auth policy's parsed `rateLimit` in ctx.locals('auth'),
 * else the `limits` text of the identity. Invalid texts are ignored (auth validates them
 * at load).
 */
function overrideOf(ctx: RequestContext): Override | null {
  const parsed = (ctx.locals.get('auth') as { rateLimit?: readonly Limit[] } | undefined)?.rateLimit;
  if (parsed !== undefined && parsed.length > 0) {
    let o = parsedOverrides.get(parsed);
    if (o === undefined) parsedOverrides.set(parsed, (o = makeOverride(parsed)));
    return o;
  }
  const text = ctx.identity?.limits;
  if (text === undefined) return null;
  let o = textOverrides.get(text);
  if (o !== undefined) return o;
  try {
    o = makeOverride(parseLimits(text));
  } catch {
    o = null;
  }
  // the texts come from the configuration (API keys), so this stays small; bound it anyway
  if (textOverrides.size > 1000) textOverrides.clear();
  textOverrides.set(text, o);
  return o;
}

/**
 * A subject can be long or odd: keep keys short and printable. A hashed value starts with
 * `#`, so a value that itself starts with `#` is hashed too: a subject spelt like the hash
 * of another (`#` and 32 hex digits) must not share that one's buckets.
 */
function keyValue(v: string): string {
  if (v === lastKeyIn) return lastKeyOut;
  const out =
    v.length <= 64 && /^[\x21-\x22\x24-\x7e][\x21-\x7e]*$/.test(v)
      ? v
      : `#${createHash('sha256').update(v).digest('hex').slice(0, 32)}`;
  lastKeyIn = v;
  lastKeyOut = out;
  return out;
}
// the same client (or subject) is keyed by several rules and requests in a row
let lastKeyIn: string | undefined;
let lastKeyOut = '';

interface HeaderState {
  policy: string[];
  state: string[];
}
const HEADER_LOCAL = 'rate-limit.headers';

/**
 * `rate_limit`: token buckets, several windows per rule, all enforced together. The
 * default rule (`default:`, fed by RATELIMIT_DEFAULT) counts per client IP; `rules` and
 * `route_rules` add rules keyed by ip, api_key, subject, route or a combination, scoped
 * to routes and methods. Rules keyed only by ip/route run before authentication, the
 * others after it. Over a limit: 429 `rate_limited` with `Retry-After` (whole seconds
 * until the request would pass) and the IETF `RateLimit-Policy` / `RateLimit` fields
 * (draft-ietf-httpapi-ratelimit-headers, one item per window), also sent on successful
 * responses unless `headers: false`. State is keyed by a hash of each rule's definition,
 * so a reload keeps the buckets of unchanged rules. Store down: `fail: open` rules let
 * the request through, `fail: closed` rules refuse it (503).
 * ```yaml
 * policies:
 *   rate_limit:
 *     default: ${RATELIMIT_DEFAULT:-200 per day;50 per hour;10 per minute}
 *     rules:
 *       - { name: per-key, limits: 1000/hour, key: api_key }
 * routes:
 *   - name: login
 *     policies:
 *       rate_limit:
 *         route_rules: [{ name: login, limits: 5/minute;20/hour, key: ip, fail: closed }]
 * ```
 */
export const rateLimit: PolicyFactory<typeof schema> = {
  name: 'rate-limit',
  key: 'rate_limit',
  schema,
  compile(config, cctx): Policy {
    const { store, metrics } = cctx.services;
    const at = (...p: (string | number)[]) => [...cctx.path, ...p];
    // the route names a rule may be scoped to (`unmatched`: requests no route matches)
    const routeNames = new Set<string>(['unmatched']);
    const configRoutes = (cctx.config as { routes?: readonly { name?: unknown }[] }).routes ?? [];
    for (const r of configRoutes) if (typeof r.name === 'string') routeNames.add(r.name);

    const build = (r: RuleConfig, limitsPath: (string | number)[], rulePath = limitsPath): Rule => {
      let limits: Limit[];
      try {
        limits = parseLimits(r.limits);
        checkLimits(limits);
      } catch (err) {
        throw new ConfigError((err as Error).message, limitsPath);
      }
      // a typo must not leave a rule that never applies
      r.routes.forEach((name, j) => {
        if (!routeNames.has(name))
          throw new ConfigError(`no route is named "${name}"`, [...rulePath, 'routes', j]);
      });
      // HEAD is a GET without the body: a route accepting GET accepts it, and so does a GET rule
      const methods =
        r.methods.includes('GET') && !r.methods.includes('HEAD') ? [...r.methods, 'HEAD'] : r.methods;
      const parts = [...new Set(r.key.split('+') as KeyPart[])].sort(
        (a, b) => KEY_PARTS.indexOf(a) - KEY_PARTS.indexOf(b),
      );
      const prefix = `${RATE_LIMIT_PREFIX}${hash({ name: r.name, key: parts, limits: limits.map((l) => [l.count, l.windowMs]) })}:`;
      return {
        name: r.name,
        parts,
        needsIdentity: parts.includes('api_key') || parts.includes('subject'),
        usesApiKey: parts.includes('api_key'),
        routes: r.routes.length > 0 ? new Set(r.routes) : undefined,
        methods: methods.length > 0 ? new Set(methods) : undefined,
        failClosed: r.fail === 'closed',
        prefix,
        keyPrefixes: limits.map((_, i) => `${prefix}${i}:`),
        windows: makeWindows(r.name, limits),
      };
    };

    const byName = new Map<string, Rule>();
    if (config.default !== 'off') {
      byName.set(
        'default',
        build(
          {
            name: 'default',
            limits: config.default,
            key: config.default_key,
            routes: [],
            methods: [],
            fail: config.default_fail,
          },
          at('default'),
        ),
      );
    }
    const add = (list: RuleConfig[], key: string) => {
      const names = new Set<string>();
      list.forEach((r, i) => {
        if (r.name === 'default')
          throw new ConfigError(
            'the rule name "default" is reserved for the `default` limits',
            at(key, i, 'name'),
          );
        if (names.has(r.name)) throw new ConfigError(`duplicate rule name "${r.name}"`, at(key, i, 'name'));
        names.add(r.name);
        byName.set(r.name, build(r, at(key, i, 'limits'), at(key, i)));
      });
    };
    add(config.rules, 'rules');
    add(config.route_rules, 'route_rules');

    const all = [...byName.values()];
    const early = all.filter((r) => !r.needsIdentity);
    const late = all.filter((r) => r.needsIdentity);
    const v6Prefix = config.ipv6_prefix;
    const sendHeaders = config.headers;
    const overrides = config.api_key_overrides;

    const keyOf = (r: Rule, ctx: RequestContext): string | undefined => {
      let out = '';
      for (const p of r.parts) {
        let v: string | undefined;
        if (p === 'ip') v = clientKey(ctx.clientIp, v6Prefix);
        else if (p === 'route') v = ctx.routeName;
        else if (p === 'api_key') v = ctx.identity?.method === 'api_key' ? ctx.identity.keyId : undefined;
        else v = ctx.identity?.subject;
        if (v === undefined || v === '') return undefined;
        out += out === '' ? keyValue(v) : `|${keyValue(v)}`;
      }
      return out;
    };

    /** The store failed: `fail: closed` rules refuse (503), the others let the request through. */
    const storeFailed = (applied: readonly Rule[], ctx: RequestContext, err: unknown): Verdict => {
      const closed = applied.filter((r) => r.failClosed).map((r) => r.name);
      ctx.audit.rate_limit_store = 'unavailable';
      if (closed.length === 0) return undefined;
      return {
        code: 'service_unavailable',
        ruleIds: closed,
        detail: { policy: 'rate-limit', failure: 'closed', rules: closed, error: (err as Error).message },
      };
    };

    /** The store answered: response headers, and the refusal when a bucket was empty. */
    const conclude = (
      applied: readonly Rule[],
      windows: readonly (readonly Window[])[],
      result: ConsumeResult,
      ctx: RequestContext,
    ): Verdict => {
      let hs = ctx.locals.get(HEADER_LOCAL) as HeaderState | undefined;
      if (hs === undefined) ctx.locals.set(HEADER_LOCAL, (hs = { policy: [], state: [] }));
      const limited: string[] = [];
      let j = 0;
      for (let a = 0; a < applied.length; a++) {
        let ruleLimited = false;
        for (const w of windows[a]!) {
          const b = result.buckets[j++]!;
          if (b.limited) ruleLimited = true;
          hs.policy.push(w.policyItem);
          hs.state.push(`${w.itemName};r=${b.remaining};t=${Math.ceil(b.resetMs / 1000)}`);
        }
        if (ruleLimited) limited.push(applied[a]!.name);
      }
      const policyHeader = hs.policy.join(', ');
      const stateHeader = hs.state.join(', ');
      if (sendHeaders) {
        ctx.responseHeaders['ratelimit-policy'] = policyHeader;
        ctx.responseHeaders['ratelimit'] = stateHeader;
      }
      if (result.allowed) return undefined;
      for (const name of limited) metrics.rateLimited.inc({ rule: name });
      const retryAfter = Math.max(1, Math.ceil(result.retryAfterMs / 1000));
      const deny: Deny = {
        code: 'rate_limited',
        ruleIds: limited,
        headers: {
          'retry-after': String(retryAfter),
          'ratelimit-policy': policyHeader,
          ratelimit: stateHeader,
        },
        detail: { rules: limited, retry_after_s: retryAfter },
      };
      return deny;
    };

    /**
     * Synchronous with an in-process store (no promise on the hot path), a promise with
     * redis.
     */
    const check = (rules: readonly Rule[], ctx: RequestContext, s: Store): Verdict | Promise<Verdict> => {
      const applied: Rule[] = [];
      const windows: Window[][] = [];
      const specs: BucketSpec[] = [];
      for (const r of rules) {
        if (r.routes !== undefined && !r.routes.has(ctx.routeName)) continue;
        if (r.methods !== undefined && !r.methods.has(ctx.method)) continue;
        const k = keyOf(r, ctx);
        if (k === undefined || isRuleSkipped(ctx, r.name)) continue;
        let ws = r.windows;
        let prefix = r.prefix;
        if (overrides && r.usesApiKey) {
          const o = overrideOf(ctx);
          if (o !== null) {
            let cached = o.windowsFor.get(r.name);
            if (cached === undefined) o.windowsFor.set(r.name, (cached = makeWindows(r.name, o.limits)));
            ws = cached;
            prefix = `${r.prefix}o${o.hash}:`;
          }
        }
        applied.push(r);
        windows.push(ws as Window[]);
        const keyPrefixes = ws === r.windows ? r.keyPrefixes : undefined;
        for (let i = 0; i < ws.length; i++) {
          const w = ws[i]!;
          const key = keyPrefixes !== undefined ? keyPrefixes[i]! + k : `${prefix}${i}:${k}`;
          specs.push({ key, capacity: w.count, windowMs: w.windowMs });
        }
      }
      if (specs.length === 0) return undefined;
      if (s.consumeSync !== undefined) {
        let result: ConsumeResult;
        try {
          result = s.consumeSync(specs);
        } catch (err) {
          return storeFailed(applied, ctx, err);
        }
        return conclude(applied, windows, result, ctx);
      }
      return s.consume(specs).then(
        (result) => conclude(applied, windows, result, ctx),
        (err: unknown) => storeFailed(applied, ctx, err),
      );
    };

    const policy: Policy = {
      name: 'rate-limit',
      mode: config.mode,
      // Store failures are handled per rule above; anything else is a bug: let the request through.
      failure: 'open',
    };
    if (early.length > 0)
      (policy as { onRequest: Policy['onRequest'] }).onRequest = (ctx) => check(early, ctx, store);
    if (late.length > 0)
      (policy as { onIdentified: Policy['onIdentified'] }).onIdentified = (ctx) => check(late, ctx, store);
    return policy;
  },
};
