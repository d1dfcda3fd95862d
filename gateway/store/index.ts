import type { Metrics } from '../observability/metrics.js';
import type { AuditLog } from '../observability/audit.js';
import type { OpsLogger } from '../policy.js';
import type { Store } from './types.js';
import { withoutCredentials } from './url.js';
import { MemoryStore, DEFAULT_MAX_KEYS } from './memory.js';
import { RedisStore, DEFAULT_TIMEOUT_MS } from './redis.js';

export type { Store } from './types.js';
export { MemoryStore } from './memory.js';
export { RedisStore } from './redis.js';

/** How to build the state store (from `REDIS_URL` and the `store:` settings). */
export interface StoreOptions {
  /** `memory://` (default) or `redis://host:port/db` / `rediss://…` */
  readonly url?: string;
  /** memory store: most buckets, most counters, most blocks and leases held (each apart). Default 100 000 */
  readonly maxKeys?: number;
  /** redis: per-operation timeout in ms. Default 200 */
  readonly timeoutMs?: number;
  /** redis: key prefix, so several gateways (or other apps) can share a server. Default `rg:` */
  readonly prefix?: string;
  readonly metrics: Metrics;
  readonly log: OpsLogger;
  /** when given, outages are also written as `store_unavailable` audit events */
  readonly audit?: AuditLog;
  /** errors are logged at most once per this many ms (counted every time). Default 10 000 */
  readonly errorLogIntervalMs?: number;
  /** ms since epoch; tests pass a fake clock. Default Date.now */
  readonly now?: () => number;
}

/**
 * Create the store named by `url`, wrapped so that every failed operation is counted in
 * `gateway_store_errors_total{store}` and reported (ops log + `store_unavailable` audit
 * event) at most once per interval, with the number of errors since the last report.
 * Recovery is logged once. The returned store rejects exactly as the backend does, so each
 * policy applies its own fail-open / fail-closed choice.
 *
 * ```ts
 * const store = createStore({ url: process.env.REDIS_URL ?? 'memory://', metrics, log, audit });
 * ```
 */
export function createStore(opts: StoreOptions): Store {
  const url = (opts.url ?? 'memory://').trim();
  const reporter = new ErrorReporter(opts);
  if (url === '' || url.startsWith('memory:')) {
    return new InstrumentedStore(
      new MemoryStore({ maxKeys: opts.maxKeys ?? DEFAULT_MAX_KEYS, ...(opts.now ? { now: opts.now } : {}) }),
      reporter,
    );
  }
  if (url.startsWith('redis://') || url.startsWith('rediss://')) {
    const backend = new RedisStore({
      url,
      prefix: opts.prefix ?? 'rg:',
      timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      ...(opts.now ? { now: opts.now } : {}),
      onConnectionError: (err) => reporter.error(err, false),
      onReady: () => reporter.recovered(true),
    });
    return new InstrumentedStore(backend, reporter);
  }
  throw new Error(`unsupported store URL "${redactUrl(url)}" (use memory:// or redis://host:port/db)`);
}

/** Hide the password of a redis URL in messages. */
export function redactUrl(url: string): string {
  return withoutCredentials(url);
}

/**
 * Counts every error, reports once per interval, and says when the store is back.
 *
 * Only a reconnection ends an outage for the interval: an operation that succeeds while
 * others fail on the same connection (a Redis refusing writes under `maxmemory` while reads
 * pass, a Redis paused between two commands) marks the store healthy again but does not let
 * the next failure be reported before the interval is over, or such a store would write a
 * `store_unavailable` event and a recovery line for every request.
 */
class ErrorReporter {
  readonly #opts: StoreOptions;
  readonly #interval: number;
  #lastReport = -Infinity;
  #suppressed = 0;
  #down = false;
  /** a report was written since the last recovery line */
  #reported = false;
  store = 'memory';

  constructor(opts: StoreOptions) {
    this.#opts = opts;
    this.#interval = opts.errorLogIntervalMs ?? 10_000;
  }

  /** counted: an operation failed (counts in the metric); otherwise a connection event */
  error(err: unknown, counted: boolean): void {
    if (counted) this.#opts.metrics.storeErrors.inc({ store: this.store });
    this.#down = true;
    const now = Date.now();
    if (now - this.#lastReport < this.#interval) {
      this.#suppressed++;
      return;
    }
    this.#lastReport = now;
    this.#reported = true;
    const fields = {
      store: this.store,
      error: err instanceof Error ? err.message : String(err),
      suppressed: this.#suppressed,
    };
    this.#suppressed = 0;
    this.#opts.log.warn(fields, 'state store unavailable');
    this.#opts.audit?.system('store_unavailable', { decision: 'allow', reason: 'store_error', ...fields });
  }

  /**
   * reconnected: the backend's connection is (re)established, which ends the outage (its next
   * failure is reported at once); otherwise an operation succeeded.
   */
  recovered(reconnected = false): void {
    if (!this.#down) return;
    this.#down = false;
    if (reconnected) this.#lastReport = -Infinity;
    // after a recovery line, flapping within the interval is told by the next report
    if (!this.#reported && !(reconnected && this.#suppressed > 0)) return;
    this.#reported = false;
    // the errors of this outage not reported yet are told now, not in the next outage's report
    this.#opts.log.info({ store: this.store, suppressed: this.#suppressed }, 'state store available again');
    this.#suppressed = 0;
  }
}

/** Wraps a backend: same answers, plus error accounting. */
class InstrumentedStore implements Store {
  readonly kind: 'memory' | 'redis';
  readonly #s: Store;
  readonly #r: ErrorReporter;
  readonly consumeSync: Store['consumeSync'];
  readonly blockedForSync: Store['blockedForSync'];

  constructor(backend: Store, reporter: ErrorReporter) {
    this.#s = backend;
    this.#r = reporter;
    this.kind = backend.kind;
    reporter.store = backend.kind;
    // The synchronous forms exist only where the backend has them (the memory store).
    const consumeSync = backend.consumeSync?.bind(backend);
    if (consumeSync !== undefined) {
      this.consumeSync = (b, c) => {
        try {
          const v = consumeSync(b, c);
          reporter.recovered();
          return v;
        } catch (err) {
          reporter.error(err, true);
          throw err;
        }
      };
    }
    const blockedForSync = backend.blockedForSync?.bind(backend);
    if (blockedForSync !== undefined) {
      this.blockedForSync = (k) => {
        try {
          const v = blockedForSync(k);
          reporter.recovered();
          return v;
        } catch (err) {
          reporter.error(err, true);
          throw err;
        }
      };
    }
  }

  /** the backend (tests, benchmarks) */
  get backend(): Store {
    return this.#s;
  }

  async #w<T>(p: Promise<T>): Promise<T> {
    try {
      const v = await p;
      this.#r.recovered();
      return v;
    } catch (err) {
      this.#r.error(err, true);
      throw err;
    }
  }

  consume: Store['consume'] = (b, c) => this.#w(this.#s.consume(b, c));
  increment: Store['increment'] = (k, w) => this.#w(this.#s.increment(k, w));
  count: Store['count'] = (k, w) => this.#w(this.#s.count(k, w));
  block: Store['block'] = (k, t, o) => this.#w(this.#s.block(k, t, o));
  acquire: Store['acquire'] = (k, t) => this.#w(this.#s.acquire(k, t));
  release: Store['release'] = (k, t) => this.#w(this.#s.release(k, t));
  blockedFor: Store['blockedFor'] = (k) => this.#w(this.#s.blockedFor(k));
  reset: Store['reset'] = (k) => this.#w(this.#s.reset(k));
  listBlocks: Store['listBlocks'] = (p, l) => this.#w(this.#s.listBlocks(p, l));
  ping: Store['ping'] = () => this.#w(this.#s.ping());
  healthy(): boolean {
    return this.#s.healthy();
  }
  close(): Promise<void> {
    return this.#s.close();
  }
}
