import {
  createLocalJWKSet,
  errors,
  type JWSHeaderParameters,
  type FlattenedJWSInput,
  type CryptoKey,
} from 'jose';
import type { OpsLogger } from '../../gateway/policy.js';
import { AuthFailure } from './reasons.js';
import { displayUrl } from './readiness.js';

/**
 * A JWKS client built on jose's `createLocalJWKSet` (key selection by `alg`, `kid`,
 * `use`, `key_ops`) with the fetching done here rather than by `createRemoteJWKSet`,
 * because the gateway needs what jose's remote set does not give: the injected clock
 * (`services.now`, so cooldowns are testable), serving cached keys while a refresh
 * fails, a back-off after failures (a down JWKS endpoint is not hammered at request
 * rate), a response size cap, and failure state for `/readyz`.
 *
 * - keys are fetched once and cached for `cacheMaxAgeMs`; after that the next request
 *   triggers a refresh in the background and keeps using the cached keys;
 * - when a refresh fails, cached keys stay usable until `cacheMaxAgeMs + staleIfErrorMs`;
 * - at most one fetch is in flight; concurrent callers wait for the same one;
 * - a token whose `kid` matches no cached key, or whose signature a cached key of its `kid`
 *   does not verify (a `kid` reused for a new key), triggers a refetch at most once per
 *   `cooldownMs` (key rotation), otherwise it is refused without any network call;
 * - after a failed fetch, no new fetch starts for `failureBackoffMs` (an unknown kid
 *   included, also when the cooldown is shorter);
 * - each fetch is aborted after `timeoutMs` (headers and body) and refused above
 *   `maxBytes`; redirects are not followed.
 */
export interface JwksClientOptions {
  readonly url: string;
  readonly timeoutMs: number;
  readonly cooldownMs: number;
  readonly cacheMaxAgeMs: number;
  readonly staleIfErrorMs: number;
  readonly failureBackoffMs: number;
  readonly maxBytes: number;
  readonly now: () => number;
  readonly log: OpsLogger;
}

/** What `/readyz` and the dashboard learn about one JWKS client. */
export interface JwksState {
  readonly url: string;
  /** keys are cached and usable for verification now */
  readonly usable: boolean;
  readonly keyCount: number;
  /** ms since epoch of the last successful fetch (undefined before the first) */
  readonly lastSuccessAt: number | undefined;
  readonly lastFailureAt: number | undefined;
  /** short description of the last failure (HTTP status, timeout, invalid JSON, …) */
  readonly lastError: string | undefined;
  /** failed fetches since the process started */
  readonly failures: number;
  /** failed fetches since the last success */
  readonly consecutiveFailures: number;
  /** successful fetches since the process started */
  readonly fetches: number;
}

type LocalSet = ReturnType<typeof createLocalJWKSet>;

const LOG_INTERVAL_MS = 30_000;

export class JwksClient {
  readonly url: string;
  private readonly opts: JwksClientOptions;
  private local: LocalSet | undefined;
  private keyCount = 0;
  private fetchedAt: number | undefined;
  private lastAttemptAt = Number.NEGATIVE_INFINITY;
  private lastFailureAt: number | undefined;
  private lastError: string | undefined;
  private failures = 0;
  private consecutiveFailures = 0;
  private fetches = 0;
  private lastLogAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<void> | undefined;
  /** aborts fetches in flight when the client is disposed */
  private readonly disposer = new AbortController();

  constructor(opts: JwksClientOptions) {
    this.opts = opts;
    this.url = opts.url;
  }

  /** Keys cached and within max age + stale-if-error. */
  private usable(now: number): boolean {
    return (
      this.local !== undefined &&
      this.fetchedAt !== undefined &&
      now < this.fetchedAt + this.opts.cacheMaxAgeMs + this.opts.staleIfErrorMs
    );
  }

  private fresh(now: number): boolean {
    return this.fetchedAt !== undefined && now < this.fetchedAt + this.opts.cacheMaxAgeMs;
  }

  private inBackoff(now: number): boolean {
    return (
      this.lastFailureAt !== undefined &&
      this.lastFailureAt >= this.lastAttemptAt &&
      now < this.lastFailureAt + this.opts.failureBackoffMs
    );
  }

  state(): JwksState {
    return {
      url: this.url,
      usable: this.usable(this.opts.now()),
      keyCount: this.keyCount,
      lastSuccessAt: this.fetchedAt,
      lastFailureAt: this.lastFailureAt,
      lastError: this.lastError,
      failures: this.failures,
      consecutiveFailures: this.consecutiveFailures,
      fetches: this.fetches,
    };
  }

  /**
   * Fetch now (joining a fetch in flight). Resolves when it succeeded; rejects with the
   * failure otherwise. Failures are recorded for readiness.
   */
  refresh(): Promise<void> {
    if (this.inflight) return this.inflight;
    this.lastAttemptAt = this.opts.now();
    const p = this.fetchOnce().then(
      ({ set, count }) => {
        this.local = set;
        this.keyCount = count;
        this.fetchedAt = this.opts.now();
        this.consecutiveFailures = 0;
        this.fetches += 1;
      },
      (err: unknown) => {
        if (this.disposer.signal.aborted) throw err;
        const now = this.opts.now();
        this.failures += 1;
        this.consecutiveFailures += 1;
        this.lastFailureAt = now;
        this.lastError = describe(err, this.opts.timeoutMs);
        if (now - this.lastLogAt >= LOG_INTERVAL_MS) {
          this.lastLogAt = now;
          this.opts.log.warn(
            { jwks_url: displayUrl(this.url), error: this.lastError, failures: this.failures },
            'JWKS fetch failed; tokens needing these keys are refused until it succeeds',
          );
        }
        throw err;
      },
    );
    const tracked = p.finally(() => {
      if (this.inflight === tracked) this.inflight = undefined;
    });
    this.inflight = tracked;
    return tracked;
  }

  /** Abort a fetch in flight and refuse new ones (the last route using this client is gone). */
  dispose(): void {
    this.disposer.abort();
  }

  /** Start a fetch in the background when nothing is cached yet (compile-time warm-up). */
  warmUp(): void {
    if (this.local === undefined && this.inflight === undefined && !this.inBackoff(this.opts.now())) {
      this.refresh().catch(() => undefined);
    }
  }

  /** jose key resolver: the key for this token's header, fetching as described above. */
  async getKey(header: JWSHeaderParameters, token?: FlattenedJWSInput): Promise<CryptoKey> {
    const now = this.opts.now();
    if (!this.usable(now)) {
      if (this.inflight === undefined && this.inBackoff(now)) throw new AuthFailure('key_unavailable');
      await this.refresh().catch(() => undefined);
      if (!this.usable(this.opts.now())) throw new AuthFailure('key_unavailable');
    } else if (!this.fresh(now) && this.inflight === undefined && !this.inBackoff(now)) {
      // stale-while-revalidate: this request uses the cached keys
      this.refresh().catch(() => undefined);
    }
    const local = this.local!;
    try {
      return await local(header, token);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
      // rotation: an unknown kid may be a new key
      if (!this.mayRefetch()) throw err;
      await this.refresh().catch(() => undefined);
      return this.local!(header, token);
    }
  }

  /**
   * Whether a rotation may refetch now (an unknown kid, a signature its key does not verify):
   * a fetch in flight is joined; otherwise at most once per cooldown, and not during the
   * back-off after a failed fetch (the cooldown may be the shorter one).
   */
  private mayRefetch(): boolean {
    const t = this.opts.now();
    return (
      this.inflight !== undefined || (t - this.lastAttemptAt >= this.opts.cooldownMs && !this.inBackoff(t))
    );
  }

  /** The cached key set (its identity changes with every successful fetch). */
  get keySet(): unknown {
    return this.local;
  }

  /**
   * A cached key failed to verify a token that named it: the issuer may have given its `kid`
   * to a new key (some reuse `kid`s across rotations). Refetch under the rules of an unknown
   * `kid` (at most once per cooldown, not during the back-off, joining a fetch in flight);
   * true when the keys were replaced, so the token is worth verifying again.
   */
  async refetchAfterBadSignature(): Promise<boolean> {
    if (!this.mayRefetch()) return false;
    const before = this.local;
    await this.refresh().catch(() => undefined);
    return this.local !== before;
  }

  private async fetchOnce(): Promise<{ set: LocalSet; count: number }> {
    const { url, timeoutMs, maxBytes } = this.opts;
    if (this.disposer.signal.aborted) throw new Error('client disposed');
    const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), this.disposer.signal]);
    const res = await fetch(url, {
      method: 'GET',
      signal,
      redirect: 'manual',
      headers: { accept: 'application/jwk-set+json, application/json' },
    });
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined);
      throw new Error(`HTTP status ${res.status}`);
    }
    const declared = Number(res.headers.get('content-length') ?? Number.NaN);
    if (declared > maxBytes) {
      await res.body?.cancel().catch(() => undefined);
      throw new Error(`response larger than ${maxBytes} bytes`);
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (res.body) {
      const reader = res.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > maxBytes) {
          await reader.cancel().catch(() => undefined);
          throw new Error(`response larger than ${maxBytes} bytes`);
        }
        chunks.push(value);
      }
    }
    let json: unknown;
    try {
      json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new Error('response is not JSON');
    }
    const keys = (json as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys) || keys.length === 0) throw new Error('response is not a JWKS with keys');
    let set: LocalSet;
    try {
      set = createLocalJWKSet(json as Parameters<typeof createLocalJWKSet>[0]);
    } catch {
      throw new Error('response is not a valid JWKS');
    }
    return { set, count: keys.length };
  }
}

function describe(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError') return `timed out after ${timeoutMs}ms`;
  if (e?.name === 'AbortError') return 'aborted (client disposed)';
  if (e?.cause?.code) return `network error ${e.cause.code}`;
  if (e?.name === 'TypeError' && e.message === 'fetch failed') {
    return e.cause?.message ? `network error (${e.cause.message})` : 'network error';
  }
  return e?.message ?? String(err);
}
