import { LRUCache } from 'lru-cache';
import {
  MAX_WINDOW_EVENTS,
  type BucketResult,
  type BucketSpec,
  type ConsumeResult,
  type Store,
} from './types.js';
import { ceilDiv, checkBucket, floorDiv, levelAt } from './bucket-math.js';

/** Options of the in-process store. */
export interface MemoryStoreOptions {
  /**
   * The most keys held at once (buckets, counters and blocks together). Past it the least
   * recently used keys are evicted, so a flood of distinct client IPs cannot grow memory
   * without bound. Default 100 000 (about 30 MB of heap).
   */
  readonly maxKeys?: number;
  /** ms since epoch; tests pass a fake clock. Default Date.now. */
  readonly now?: () => number;
}

export const DEFAULT_MAX_KEYS = 100_000;

/** One token bucket: its level in token-ms units (see bucket-math.ts) at time ts. */
class BucketEntry {
  constructor(
    public level: number,
    public ts: number,
    public expiresAt: number,
  ) {}
}

/** A sliding-window counter: event times, oldest first. */
class WindowEntry {
  constructor(
    public readonly events: number[],
    public expiresAt: number,
  ) {}
}

/** A block (ban, lockout) until expiresAt. */
class BlockEntry {
  constructor(public expiresAt: number) {}
}

/** A lease held by the owner of token until expiresAt. */
class LeaseEntry {
  constructor(
    public expiresAt: number,
    public readonly token: string,
  ) {}
}

type Entry = BucketEntry | WindowEntry | BlockEntry | LeaseEntry;

// Kinds share one LRU (one bound for everything) under distinct prefixes, so that one
// caller key can hold a bucket, a counter and a block without collisions.
const B = 'b:';
const C = 'c:';
const K = 'k:';
const L = 'l:';

/**
 * The bounded in-process store (`REDIS_URL=memory://`): an LRU of at most `maxKeys`
 * entries. Expiry is computed from the injected clock, so tests drive it with a fake
 * clock; expired entries read as absent and are dropped when touched or evicted.
 * State is per process: several gateway instances each enforce their own limits.
 */
export class MemoryStore implements Store {
  readonly kind = 'memory' as const;
  readonly #lru: LRUCache<string, Entry>;
  readonly #now: () => number;
  #leaseSeq = 0;

  constructor(opts: MemoryStoreOptions = {}) {
    const max = opts.maxKeys ?? DEFAULT_MAX_KEYS;
    if (!Number.isInteger(max) || max < 1) throw new Error(`maxKeys must be a positive integer (got ${max})`);
    this.#lru = new LRUCache<string, Entry>({ max });
    this.#now = opts.now ?? Date.now;
  }

  /** Number of keys held (expired ones included until they are touched or evicted). */
  get size(): number {
    return this.#lru.size;
  }

  #live<T extends Entry>(key: string, now: number): T | undefined {
    const e = this.#lru.get(key);
    if (e === undefined) return undefined;
    // An expired entry reads as absent and is overwritten by the next write (or evicted).
    // Not deleted here: lru-cache clears (fills) its whole preallocated arrays when the
    // last key is deleted, an O(maxKeys) cost that a single hot client would pay per request.
    if (e.expiresAt <= now) return undefined;
    return e as T;
  }

  async consume(buckets: readonly BucketSpec[], cost = 1): Promise<ConsumeResult> {
    return this.consumeSync(buckets, cost);
  }

  /** consume() without the promise (the micro-benchmark and tests use it). */
  consumeSync(buckets: readonly BucketSpec[], cost = 1): ConsumeResult {
    const now = this.#now();
    const levels: number[] = new Array<number>(buckets.length);
    const limited: boolean[] = new Array<boolean>(buckets.length);
    const entries: (BucketEntry | undefined)[] = new Array<BucketEntry | undefined>(buckets.length);
    let allowed = true;
    let retryAfterMs = 0;
    for (let i = 0; i < buckets.length; i++) {
      const b = buckets[i]!;
      checkBucket(b.capacity, b.windowMs);
      const e = this.#live<Entry>(B + b.key, now);
      const be = e instanceof BucketEntry ? e : undefined;
      entries[i] = be;
      const level = levelAt(b.capacity, b.windowMs, be, now);
      levels[i] = level;
      const need = cost * b.windowMs;
      limited[i] = level < need;
      if (level < need) {
        allowed = false;
        retryAfterMs = Math.max(retryAfterMs, ceilDiv(need - level, b.capacity));
      }
    }
    const results: BucketResult[] = new Array<BucketResult>(buckets.length);
    for (let i = 0; i < buckets.length; i++) {
      const b = buckets[i]!;
      let level = levels[i]!;
      if (allowed) {
        level -= cost * b.windowMs;
        const resetMs = ceilDiv(b.capacity * b.windowMs - level, b.capacity);
        const e = entries[i];
        if (e !== undefined) {
          e.level = level;
          e.ts = now;
          e.expiresAt = now + resetMs;
        } else {
          this.#lru.set(B + b.key, new BucketEntry(level, now, now + resetMs));
        }
      }
      results[i] = {
        remaining: floorDiv(level, b.windowMs),
        resetMs: ceilDiv(b.capacity * b.windowMs - level, b.capacity),
        limited: limited[i]!,
      };
    }
    return { allowed, buckets: results, retryAfterMs: allowed ? 0 : retryAfterMs };
  }

  async increment(key: string, windowMs: number): Promise<number> {
    const now = this.#now();
    const k = C + key;
    let e = this.#live<WindowEntry>(k, now);
    if (!(e instanceof WindowEntry)) {
      e = new WindowEntry([], now + windowMs);
      this.#lru.set(k, e);
    }
    prune(e.events, now - windowMs);
    e.events.push(now);
    if (e.events.length > MAX_WINDOW_EVENTS) e.events.splice(0, e.events.length - MAX_WINDOW_EVENTS);
    e.expiresAt = now + windowMs;
    return e.events.length;
  }

  async count(key: string, windowMs: number): Promise<number> {
    const now = this.#now();
    const e = this.#live<WindowEntry>(C + key, now);
    if (!(e instanceof WindowEntry)) return 0;
    const from = now - windowMs;
    let n = 0;
    for (let i = e.events.length - 1; i >= 0 && e.events[i]! > from; i--) n++;
    return n;
  }

  async block(key: string, ttlMs: number, onlyIfAbsent = false): Promise<boolean> {
    if (!(ttlMs > 0)) throw new Error(`block ttl must be positive (got ${ttlMs})`);
    const now = this.#now();
    if (onlyIfAbsent && this.#live<Entry>(K + key, now) instanceof BlockEntry) return false;
    this.#lru.set(K + key, new BlockEntry(now + Math.ceil(ttlMs)));
    return true;
  }

  async acquire(key: string, ttlMs: number): Promise<string | undefined> {
    if (!(ttlMs > 0)) throw new Error(`lease ttl must be positive (got ${ttlMs})`);
    const now = this.#now();
    if (this.#live<Entry>(L + key, now) instanceof LeaseEntry) return undefined;
    // unique in this store, which alone compares it; short and flat (100 000 held leases
    // took 75 MB of heap with randomUUID() tokens, 32 MB with these)
    const token = String(++this.#leaseSeq);
    this.#lru.set(L + key, new LeaseEntry(now + Math.ceil(ttlMs), token));
    return token;
  }

  async release(key: string, token: string): Promise<boolean> {
    const e = this.#lru.peek(L + key);
    if (!(e instanceof LeaseEntry) || e.token !== token) return false;
    const held = e.expiresAt > this.#now();
    // expired rather than deleted, as in reset()
    e.expiresAt = -Infinity;
    return held;
  }

  async blockedFor(key: string): Promise<number> {
    return this.blockedForSync(key);
  }

  /** blockedFor() without the promise. */
  blockedForSync(key: string): number {
    const now = this.#now();
    const e = this.#live<BlockEntry>(K + key, now);
    return e instanceof BlockEntry ? e.expiresAt - now : 0;
  }

  async reset(key: string): Promise<void> {
    // Expire rather than delete (see #live): same effect, no O(maxKeys) clear when the
    // last key of the cache goes. peek() leaves the recency order alone.
    for (const k of [B + key, C + key, K + key, L + key]) {
      const e = this.#lru.peek(k);
      if (e !== undefined) e.expiresAt = -Infinity;
    }
  }

  async listBlocks(prefix: string, limit: number): Promise<{ key: string; ttlMs: number }[]> {
    const now = this.#now();
    const out: { key: string; ttlMs: number }[] = [];
    const full = K + prefix;
    // peek-style iteration: listing must not refresh recency.
    for (const [k, e] of this.#lru.entries()) {
      if (out.length >= limit) break;
      if (e instanceof BlockEntry && k.startsWith(full) && e.expiresAt > now) {
        out.push({ key: k.slice(K.length), ttlMs: e.expiresAt - now });
      }
    }
    return out.sort((a, b) => b.ttlMs - a.ttlMs);
  }

  async ping(): Promise<void> {}

  healthy(): boolean {
    return true;
  }

  async close(): Promise<void> {
    this.#lru.clear();
  }
}

/** Drop event times <= from (the array is sorted ascending). */
function prune(events: number[], from: number): void {
  let i = 0;
  while (i < events.length && events[i]! <= from) i++;
  if (i > 0) events.splice(0, i);
}
