import { createHash } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { Deny, Policy, PolicyFactory } from '../../gateway/policy.js';
import type { RequestBody, RequestContext } from '../../gateway/context.js';
import { policyBlock, FailureSchema } from '../../gateway/config/policy-schema.js';
import { DURATION_PATTERN, parseDuration } from '../../gateway/config/units.js';
import { ConfigError } from '../../gateway/errors.js';
import { MAX_WINDOW_EVENTS } from '../../gateway/store/types.js';
import { foldFieldName } from '../../gateway/body.js';
import { blockedAtAnyPrefix, clientKey, configuredPrefixes } from '../ip-ban/ip.js';
import { isSkipped } from '../ip-ban/allowlist.js';

/** Store key prefix of lockouts: `lockout:lock:u:<hash>` (username) and `lockout:lock:ip:<ip>`. */
export const LOCK_PREFIX = 'lockout:lock:';
/**
 * Store key prefix of the per-username leases (`lockout:lease:u:<hash>`, `store.acquire`):
 * one login attempt per username is with the upstream at a time, so failures are counted one
 * after the other and no more than `max_attempts` guesses reach the upstream before the lock,
 * however many are sent together (from one IP or many, to one instance or several sharing
 * Redis).
 */
export const LEASE_PREFIX = 'lockout:lease:';
/** Added to the upstream's connect and response timeouts to make a lease's lifetime. */
export const LEASE_MARGIN_MS = 5_000;

/** A duration, or a bare number of minutes (LOGIN_LOCKOUT_DURATION=15). */
const Minutes = (dflt: number | string, description: string) =>
  Type.Union(
    [
      Type.Number({ minimum: 0 }),
      Type.String({ pattern: `(${DURATION_PATTERN})|(^\\s*\\d+(\\.\\d+)?\\s*$)` }),
    ],
    {
      default: dflt,
      description: `${description} (a bare number is minutes; or a duration like 15m, 1h)`,
    },
  );

const schema = policyBlock(
  {
    username_field: Type.String({
      pattern: '^[A-Za-z0-9_.-]{1,64}$',
      default: 'username',
      description:
        'field of the JSON or form body that holds the username (dots reach into JSON objects: user.email)',
    }),
    max_attempts: Type.Integer({
      minimum: 1,
      maximum: MAX_WINDOW_EVENTS,
      default: 5,
      description: 'failed logins for one username within `window` that lock it (MAX_LOGIN_ATTEMPTS)',
    }),
    ip_max_attempts: Type.Union(
      [Type.Integer({ minimum: 0, maximum: MAX_WINDOW_EVENTS }), Type.Literal('auto')],
      {
        default: 'auto',
        description:
          'failed logins from one client IP within `window`, whatever the usernames, that lock that IP out of the login route; auto = 4 × max_attempts; 0 = off; otherwise at least max_attempts',
      },
    ),
    window: Minutes('15m', 'sliding window in which failures are counted'),
    lockout: Minutes(15, 'how long a lock lasts (LOGIN_LOCKOUT_DURATION)'),
    failure_statuses: Type.Array(Type.Integer({ minimum: 400, maximum: 599 }), {
      default: [401, 403],
      minItems: 1,
      description: 'upstream statuses that count as a failed login',
    }),
    case_sensitive: Type.Boolean({
      default: false,
      description:
        'count `Alice` and `alice` apart (false: usernames are compared after Unicode NFKC and lowercasing)',
    }),
    max_username_length: Type.Integer({
      minimum: 1,
      maximum: 4096,
      default: 256,
      description: 'longer usernames are not counted per username (the client IP still is)',
    }),
    ipv6_prefix: Type.Integer({
      minimum: 32,
      maximum: 128,
      default: 64,
      description: 'IPv6 clients are counted per network of this many bits',
    }),
    fail: FailureSchema('open'),
  },
  {
    description: 'Failed-login lockout per username and per client IP (enable it on the login route)',
    enabled: false,
  },
);

function hash(v: string): string {
  return createHash('sha256').update(v).digest('hex').slice(0, 32);
}

const LOCAL = 'login-lockout';
/** usernameOf(): the body names several different usernames. */
const AMBIGUOUS = Symbol('ambiguous username');
interface LoginState {
  /** hash of the normalised username, when the body carried a usable one */
  user: string | undefined;
  /**
   * the owner token of the username's lease this attempt holds, given back once its answer
   * was accounted for; the store releases it only while it is still this attempt's (one that
   * ran out, or was forgotten by a restarted Redis, may be another attempt's by then)
   */
  lease: string | undefined;
}

/**
 * `login_lockout`: on the login route, counts failed logins (upstream answered one of
 * `failure_statuses`) per username (JSON or form field `username_field`) and per client
 * IP. At `max_attempts` failures within `window` the username is locked for `lockout`;
 * at `ip_max_attempts` the client IP is. A locked request gets 429 `account_locked` with
 * `Retry-After` and never reaches the upstream. A successful login resets the username's
 * count. One attempt per username is with the upstream at a time (a lease in the store,
 * taken before the lock check and given back once the answer was accounted for), so
 * concurrent guesses cannot outrun the lock: at most `max_attempts` reach the upstream;
 * the others get 429 `account_locked` (rule `login-lockout-concurrent`, `Retry-After: 1`).
 * Any username string can be locked, whether the account exists or not, so a lock
 * reveals nothing. Usernames are stored only as hashes. Audit events
 * `login_failure` and `account_locked`; metrics `gateway_login_failures_total` and
 * `gateway_account_lockouts_total`.
 * ```yaml
 * routes:
 *   - name: login
 *     match: { path: /api/auth/login, methods: [POST] }
 *     policies:
 *       login_lockout:
 *         enabled: true
 *         max_attempts: ${MAX_LOGIN_ATTEMPTS:-5}
 *         lockout: ${LOGIN_LOCKOUT_DURATION:-15}
 * ```
 */
export const loginLockout: PolicyFactory<typeof schema> = {
  name: 'login-lockout',
  key: 'login_lockout',
  schema,
  compile(config, cctx): Policy {
    const { store, metrics, audit, log } = cctx.services;
    const at = (...p: (string | number)[]) => [...cctx.path, ...p];
    const minutes = (v: number | string, key: string): number => {
      try {
        const ms = parseDuration(v, 'm');
        if (!(ms > 0)) throw new Error(`${key} must be positive`);
        return Math.round(ms);
      } catch (err) {
        throw new ConfigError((err as Error).message, at(key));
      }
    };
    const windowMs = minutes(config.window, 'window');
    const lockMs = minutes(config.lockout, 'lockout');
    const maxAttempts = config.max_attempts;
    const ipMax =
      config.ip_max_attempts === 'auto'
        ? Math.min(MAX_WINDOW_EVENTS, 4 * maxAttempts)
        : config.ip_max_attempts;
    if (ipMax > 0 && ipMax < maxAttempts) {
      throw new ConfigError(
        `ip_max_attempts (${ipMax}) must be at least max_attempts (${maxAttempts}), or 0 to turn the IP lock off`,
        at('ip_max_attempts'),
      );
    }
    const failures = new Set(config.failure_statuses);
    const fieldPath = config.username_field.split('.');
    const field = config.username_field;
    const caseSensitive = config.case_sensitive;
    const maxLen = config.max_username_length;
    const v6Prefix = config.ipv6_prefix;
    // an IP lock set on a login route keyed by another prefix holds here too (see onRequest)
    const lockPrefixes = configuredPrefixes(cctx.config, 'login_lockout', v6Prefix);
    // The lease outlives the longest an attempt can be with the upstream (connect + response
    // timeouts; the gateway answers 504 then and releases it) plus the store operations that
    // account for the answer. It only runs out when no hook ran (the process died).
    const upstream = (cctx.config.upstream ?? {}) as {
      connect_timeout?: string | number;
      response_timeout?: string | number;
    };
    const leaseMs =
      parseDuration(upstream.connect_timeout ?? '2s') +
      parseDuration(upstream.response_timeout ?? '30s') +
      LEASE_MARGIN_MS;
    const counterPrefix = `lockout:${hash(JSON.stringify({ window: windowMs })).slice(0, 10)}:n:`;

    const normalise = (v: string): string => {
      const u = v.normalize('NFKC').trim();
      return caseSensitive ? u : u.toLowerCase();
    };

    // field names are matched whatever their case (foldFieldName): Go's encoding/json, ASP.NET
    // Core and case-insensitive Jackson bind `USERNAME` to the `username` property
    const foldedPath = fieldPath.map(foldFieldName);
    const foldedField = foldFieldName(field);

    /**
     * The hash of the body's username; undefined when it has no usable one; AMBIGUOUS when the
     * body names several different ones (a repeated form field, or JSON keys differing only in
     * case: frameworks disagree on which one counts, the first, the last, a list), so no count
     * could be trusted to be the upstream's username.
     */
    const usernameOf = (body: RequestBody | undefined): string | undefined | typeof AMBIGUOUS => {
      if (body === undefined) return undefined;
      let u: string | undefined;
      if (body.json !== undefined) {
        let v: unknown = body.json;
        for (const seg of foldedPath) {
          if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
          let found = false;
          let next: unknown;
          for (const k of Object.keys(v)) {
            if (foldFieldName(k) !== seg) continue;
            const w = (v as Record<string, unknown>)[k];
            if (!found) {
              found = true;
              next = w;
            } else if (typeof w !== 'string' || typeof next !== 'string' || normalise(w) !== normalise(next))
              return AMBIGUOUS;
          }
          if (!found) return undefined;
          v = next;
        }
        if (typeof v !== 'string') return undefined;
        u = normalise(v);
      } else {
        const pairs = body.form ?? body.fields;
        if (pairs === undefined) return undefined;
        for (const [name, value] of pairs) {
          if (name !== field && foldFieldName(name) !== foldedField) continue;
          const n = normalise(value);
          if (u === undefined) u = n;
          else if (n !== u) return AMBIGUOUS;
        }
        if (u === undefined) return undefined;
      }
      if (u === '' || u.length > maxLen) return undefined;
      return hash(u);
    };

    const ambiguous: Deny = {
      code: 'bad_request',
      message: 'The login request names more than one username.',
      ruleIds: ['login-lockout-ambiguous-username'],
      detail: { check: 'ambiguous_username' },
    };

    const locked = (ms: number, scope: 'username' | 'ip'): Deny => ({
      code: 'account_locked',
      // (the code's default message speaks of the account: an IP lock says what it is)
      ...(scope === 'ip' ? { message: 'Too many failed logins from this address; retry later.' } : {}),
      ruleIds: [`login-lockout-${scope}`],
      headers: { 'retry-after': String(Math.max(1, Math.ceil(ms / 1000))) },
      detail: { scope, retry_after_s: Math.max(1, Math.ceil(ms / 1000)) },
    });

    const concurrent: Deny = {
      code: 'account_locked',
      message: 'Another login attempt for this account is in progress; retry in a moment.',
      ruleIds: ['login-lockout-concurrent'],
      headers: { 'retry-after': '1' },
      detail: { scope: 'username', check: 'concurrent', retry_after_s: 1 },
    };

    /** Give the username's lease back (once); a store failure leaves it to expire. */
    const release = async (ctx: RequestContext, state: LoginState): Promise<void> => {
      const token = state.lease;
      if (token === undefined || state.user === undefined) return;
      state.lease = undefined;
      try {
        await store.release(`${LEASE_PREFIX}u:${state.user}`, token);
      } catch (err) {
        log.warn(
          { policy: 'login-lockout', request_id: ctx.id, err: (err as Error).message, lease_ms: leaseMs },
          'login lease release failed (it expires by itself)',
        );
      }
    };

    const lock = async (
      ctx: RequestContext,
      scope: 'username' | 'ip',
      key: string,
      count: number,
      status: number,
    ) => {
      // Failures of attempts that passed the lock check before the lock was set (concurrent
      // ones, or on another instance) neither extend the running lock nor report it again.
      if (!(await store.block(LOCK_PREFIX + key, lockMs, true))) return;
      metrics.accountLockouts.inc();
      audit.request('account_locked', ctx, {
        decision: 'deny',
        reason: 'lockout',
        status,
        detail: {
          scope,
          failures: count,
          window_ms: windowMs,
          lockout_ms: lockMs,
          ...(scope === 'username' ? { username_hash: key.slice(2) } : {}),
        },
      });
    };

    const recordFailure = async (
      ctx: RequestContext,
      user: string | undefined,
      status: number,
    ): Promise<void> => {
      const ip = clientKey(ctx.clientIp, v6Prefix);
      const [userCount, ipCount] = await Promise.all([
        user === undefined ? Promise.resolve(0) : store.increment(`${counterPrefix}u:${user}`, windowMs),
        ipMax > 0 ? store.increment(`${counterPrefix}ip:${ip}`, windowMs) : Promise.resolve(0),
      ]);
      metrics.loginFailures.inc();
      audit.request('login_failure', ctx, {
        decision: 'allow',
        reason: 'invalid_credentials',
        status,
        detail: {
          username_present: user !== undefined,
          ...(user ? { username_hash: user, failures: userCount } : {}),
          ip_failures: ipCount,
        },
      });
      const jobs: Promise<void>[] = [];
      if (user !== undefined && userCount >= maxAttempts) {
        jobs.push(
          lock(ctx, 'username', `u:${user}`, userCount, status).then(() =>
            store.reset(`${counterPrefix}u:${user}`),
          ),
        );
      }
      if (ipMax > 0 && ipCount >= ipMax) {
        jobs.push(
          lock(ctx, 'ip', `ip:${ip}`, ipCount, status).then(() => store.reset(`${counterPrefix}ip:${ip}`)),
        );
      }
      await Promise.all(jobs);
    };

    return {
      name: 'login-lockout',
      mode: config.mode,
      failure: config.fail,
      needsBody: true,
      async onRequest(ctx) {
        if (isSkipped(ctx, 'login_lockout')) return undefined;
        const state: LoginState = { user: undefined, lease: undefined };
        ctx.locals.set(LOCAL, state);
        if (ipMax === 0) return undefined;
        // an IP lock set under any prefix the config keys IPv6 clients by holds here
        const left = await blockedAtAnyPrefix(
          store,
          ctx.clientIp,
          lockPrefixes,
          (k) => `${LOCK_PREFIX}ip:${k}`,
        );
        return left > 0 ? locked(left, 'ip') : undefined;
      },
      async onBody(ctx) {
        const state = ctx.locals.get(LOCAL) as LoginState | undefined;
        if (state === undefined) return undefined;
        const user = usernameOf(ctx.body);
        if (user === AMBIGUOUS) return ambiguous;
        state.user = user;
        if (user === undefined) return undefined;
        // Take the username's lease before looking at its lock: the attempt before (holding
        // the lease) has had its failure counted, and the lock set, when the lease comes free.
        const token = await store.acquire(`${LEASE_PREFIX}u:${user}`, leaseMs);
        if (token === undefined) {
          const left = await store.blockedFor(`${LOCK_PREFIX}u:${user}`);
          return left > 0 ? locked(left, 'username') : concurrent;
        }
        state.lease = token;
        // released by onResponse, or by onDone when no response came (client gone); a
        // request that ends without either (cut off with its connection) releases on abort
        if (ctx.signal.aborted) {
          await release(ctx, state);
          return undefined;
        }
        ctx.signal.addEventListener('abort', () => void release(ctx, state), { once: true });
        const left = await store.blockedFor(`${LOCK_PREFIX}u:${user}`);
        return left > 0 ? locked(left, 'username') : undefined;
      },
      async onResponse(ctx, head) {
        const state = ctx.locals.get(LOCAL) as LoginState | undefined;
        if (state === undefined) return;
        try {
          // the gateway's own refusals and errors (429 locked, 403 blocked, 504…) are not login attempts
          if (head.fromGateway) return;
          if (failures.has(head.status)) await recordFailure(ctx, state.user, head.status);
          else if (head.status >= 200 && head.status < 300 && state.user !== undefined)
            await store.reset(`${counterPrefix}u:${state.user}`);
        } catch (err) {
          // store down: the attempt is not counted (fail open for accounting), the response goes on
          log.warn(
            { policy: 'login-lockout', request_id: ctx.id, err: (err as Error).message },
            'login failure accounting failed',
          );
        } finally {
          // only now: the next attempt for this username sees this one's failure and lock
          await release(ctx, state);
        }
      },
      onDone(ctx) {
        // no response phase ran (the client went away while the upstream answered)
        const state = ctx.locals.get(LOCAL) as LoginState | undefined;
        if (state !== undefined) void release(ctx, state);
      },
    };
  },
};
