import { LRUCache } from 'lru-cache';
import {
  MAX_WINDOW_EVENTS,
  type BucketResult,
  type BucketSpec,
  type ConsumeResult,
  type Store,
} from './types.js';
import { ceilDiv, checkBucket, floorDiv, levelAt } from './bucket-math.js';
import { ExpiryMap } from './expiry-map.js';

/** Options of the in-process store. */
export interface MemoryStoreOptions {
  /**
   * The most entries of each kind held at once: at most maxKeys token buckets, maxKeys
   * sliding-window counters, and maxKeys blocks and leases together. Each kind is bounded
   * apart, so a flood of distinct client IPs (a bucket each) cannot grow memory without bound
   * and evicts only buckets: never a counter, a ban, a lock or a lease. Buckets and counters
   * evict the least recently used; blocks and leases the one ending soonest. Default 100 000
   * (about 85 MB of heap with all three kinds full; buckets alone about 23 MB).
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
  constructor(public readonly expiresAt: number) {}
}

/** A lease held by the owner of token until expiresAt. */
class LeaseEntry {
  constructor(
    public readonly expiresAt: number,
    public readonly token: string,
  ) {}
}

// Blocks and leases share one bounded map under distinct prefixes, so that one caller key
// can hold a block and a lease without collisions.
const K = 'k:';
const L = 'l:';

/** The entry of `lru` at key, unless it has expired. */
function live<T extends { expiresAt: number }>(
  lru: LRUCache<string, T>,
  key: string,
  now: number,
): T | undefined {
  const e = lru.get(key);
  if (e === undefined) return undefined;
  // An expired entry reads as absent and is overwritten by the next write (or evicted).
  // Not deleted here: lru-cache clears (fills) its whole preallocated arrays when the
  // last key is deleted, an O(maxKeys) cost that a single hot client would pay per request.
  if (e.expiresAt <= now) return undefined;
  return e;
}

/**
 * The bounded in-process store (`REDIS_URL=memory://`). Three structures of at most
 * `maxKeys` entries each, so that the churn of one kind never evicts another: token buckets
 * (an LRU: every new client makes one), sliding-window counters (an LRU: each event is an
 * offence or a failed login), and blocks and leases (an ExpiryMap: when full, the one ending
 * soonest goes, so only setting blocks or taking leases pushes blocks out; a ban or a lock
 * costs offences or failed logins, a lease is held only while its login is in flight).
 * Expiry is computed from the injected clock, so tests drive it with a fake clock; expired
 * entries read as absent and are dropped when touched or evicted. State is per process:
 * several gateway instances each enforce their own limits.
 */
export class MemoryStore implements Store {
  readonly kind = 'memory' as const;
  readonly #buckets: LRUCache<string, BucketEntry>;
  readonly #counters: LRUCache<string, WindowEntry>;
  readonly #blocks: ExpiryMap<BlockEntry | LeaseEntry>;
  readonly #now: () => number;
  #leaseSeq = 0;

  constructor(opts: MemoryStoreOptions = {}) {
    const max = opts.maxKeys ?? DEFAULT_MAX_KEYS;
    if (!Number.isInteger(max) || max < 1) throw new Error(`maxKeys must be a positive integer (got ${max})`);
    this.#buckets = new LRUCache<string, BucketEntry>({ max });
    this.#counters = new LRUCache<string, WindowEntry>({ max });
    this.#blocks = new ExpiryMap<BlockEntry | LeaseEntry>(max);
    this.#now = opts.now ?? Date.now;
  }

  /** Number of entries held, all kinds (expired ones included until touched or evicted). */
  get size(): number {
    return this.#buckets.size + this.#counters.size + this.#blocks.size;
  }

  /** Entries held per structure (blocks counts blocks and leases). */
  get sizes(): { buckets: number; counters: number; blocks: number } {
    return { buckets: this.#buckets.size, counters: this.#counters.size, blocks: this.#blocks.size };
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
      const be = live(this.#buckets, b.key, now);
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
          this.#buckets.set(b.key, new BucketEntry(level, now, now + resetMs));
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
    const e = live(this.#counters, key, now);
    if (e === undefined) {
      // a literal of one: an empty array grown by push() reserves room for 17 events, and
      // most counters (one per client that offended once) never hold a second
      this.#counters.set(key, new WindowEntry([now], now + windowMs));
      return 1;
    }
    prune(e.events, now - windowMs);
    e.events.push(now);
    if (e.events.length > MAX_WINDOW_EVENTS) e.events.splice(0, e.events.length - MAX_WINDOW_EVENTS);
    e.expiresAt = now + windowMs;
    return e.events.length;
  }

  async count(key: string, windowMs: number): Promise<number> {
    const now = this.#now();
    const e = live(this.#counters, key, now);
    if (e === undefined) return 0;
    const from = now - windowMs;
    let n = 0;
    for (let i = e.events.length - 1; i >= 0 && e.events[i]! > from; i--) n++;
    return n;
  }

  async block(key: string, ttlMs: number, onlyIfAbsent = false): Promise<boolean> {
    if (!(ttlMs > 0)) throw new Error(`block ttl must be positive (got ${ttlMs})`);
    const now = this.#now();
    if (onlyIfAbsent && this.#liveBlock(K + key, now) !== undefined) return false;
    this.#blocks.set(K + key, new BlockEntry(now + Math.ceil(ttlMs)));
    return true;
  }

  async acquire(key: string, ttlMs: number): Promise<string | undefined> {
    if (!(ttlMs > 0)) throw new Error(`lease ttl must be positive (got ${ttlMs})`);
    const now = this.#now();
    if (this.#liveBlock(L + key, now) !== undefined) return undefined;
    // unique in this store, which alone compares it; short and flat (100 000 held leases
    // took 75 MB of heap with randomUUID() tokens, 32 MB with these)
    const token = String(++this.#leaseSeq);
    this.#blocks.set(L + key, new LeaseEntry(now + Math.ceil(ttlMs), token));
    return token;
  }

  async release(key: string, token: string): Promise<boolean> {
    const e = this.#blocks.get(L + key);
    if (!(e instanceof LeaseEntry) || e.token !== token) return false;
    this.#blocks.delete(L + key);
    return e.expiresAt > this.#now();
  }

  /** The block or lease at a prefixed key, unless it has ended (then it is dropped). */
  #liveBlock(k: string, now: number): BlockEntry | LeaseEntry | undefined {
    const e = this.#blocks.get(k);
    if (e === undefined) return undefined;
    if (e.expiresAt > now) return e;
    this.#blocks.delete(k);
    return undefined;
  }

  async blockedFor(key: string): Promise<number> {
    return this.blockedForSync(key);
  }

  /** blockedFor() without the promise. */
  blockedForSync(key: string): number {
    const now = this.#now();
    const e = this.#liveBlock(K + key, now);
    return e === undefined ? 0 : e.expiresAt - now;
  }

  async reset(key: string): Promise<void> {
    // Expire rather than delete (see live()): same effect, no O(maxKeys) clear when the
    // last key of a cache goes. peek() leaves the recency order alone.
    for (const e of [this.#buckets.peek(key), this.#counters.peek(key)]) {
      if (e !== undefined) e.expiresAt = -Infinity;
    }
    this.#blocks.delete(K + key);
    this.#blocks.delete(L + key);
  }

  async listBlocks(prefix: string, limit: number): Promise<{ key: string; ttlMs: number }[]> {
    const now = this.#now();
    const out: { key: string; ttlMs: number }[] = [];
    const full = K + prefix;
    for (const [k, e] of this.#blocks.entries()) {
      if (e instanceof BlockEntry && k.startsWith(full) && e.expiresAt > now) {
        out.push({ key: k.slice(K.length), ttlMs: e.expiresAt - now });
      }
    }
    // the longest first, as on redis
    return out.sort((a, b) => b.ttlMs - a.ttlMs).slice(0, Math.max(0, limit));
  }

  async ping(): Promise<void> {}

  healthy(): boolean {
    return true;
  }

  async close(): Promise<void> {
    this.#buckets.clear();
    this.#counters.clear();
    this.#blocks.clear();
  }
}

/** Drop event times <= from (the array is sorted ascending). */
function prune(events: number[], from: number): void {
  let i = 0;
  while (i < events.length && events[i]! <= from) i++;
  if (i > 0) events.splice(0, i);
}
