/**
 * The state store behind rate limits, lockouts, bans and alert counters.
 * Two backends implement it: memory (bounded maps, one process) and redis (Lua scripts,
 * shared by every gateway instance). Keys are namespaced by the caller
 * (`policy:rule:…`) so that state survives a reload where the rule is unchanged.
 * Every method may reject (store down); callers never wait longer than the store's
 * configured timeout.
 */
export interface BucketSpec {
  /** full key, namespaced by the caller */
  readonly key: string;
  /** tokens when full (the limit's count) */
  readonly capacity: number;
  /** time to refill from empty to full, in ms (the limit's window) */
  readonly windowMs: number;
}

export interface BucketResult {
  /** whole tokens left after this request (0 when refused) */
  readonly remaining: number;
  /** ms until the bucket is full again */
  readonly resetMs: number;
  /** true when this bucket lacked the tokens (it is one of the reasons for a refusal) */
  readonly limited: boolean;
}

export interface ConsumeResult {
  /** true when every bucket had a token; then one token was taken from each */
  readonly allowed: boolean;
  /** per bucket, in the order given */
  readonly buckets: readonly BucketResult[];
  /** when refused: ms until every bucket would have one token again; 0 when allowed */
  readonly retryAfterMs: number;
}

/** The most events a sliding-window counter remembers per key; thresholds must stay below. */
export const MAX_WINDOW_EVENTS = 1000;

export interface Store {
  readonly kind: 'memory' | 'redis';
  /**
   * Token buckets, all or nothing: takes `cost` tokens from each bucket only when all of
   * them have enough; atomic across instances on redis.
   */
  consume(buckets: readonly BucketSpec[], cost?: number): Promise<ConsumeResult>;
  /**
   * consume() answered synchronously (throws where consume() rejects), offered by
   * in-process backends only: the hot path skips the promises when it is present.
   */
  readonly consumeSync?: ((buckets: readonly BucketSpec[], cost?: number) => ConsumeResult) | undefined;
  /**
   * Count an event in a sliding window of windowMs; returns the count including this one.
   * The window keeps at most MAX_WINDOW_EVENTS events per key (counts saturate there).
   */
  increment(key: string, windowMs: number): Promise<number>;
  /** The current count of a sliding window without adding to it. */
  count(key: string, windowMs: number): Promise<number>;
  /**
   * Set a block (ban, lockout) for ttlMs. With `onlyIfAbsent`, a block still running is
   * left as it is (neither extended nor shortened), atomically across instances on redis.
   * Resolves true when this call set the block.
   */
  block(key: string, ttlMs: number, onlyIfAbsent?: boolean): Promise<boolean>;
  /**
   * Take the lease on key for ttlMs (one holder at a time, across instances on redis):
   * resolves a fresh owner token when no lease is held there, undefined when another holder's
   * lease is still running. The lease ends with release(key, token), or by itself after ttlMs.
   * Leases are apart from blocks: blockedFor() and listBlocks() do not see them.
   */
  acquire(key: string, ttlMs: number): Promise<string | undefined>;
  /**
   * Give back the lease taken with token: only while key still holds that lease, so a holder
   * whose lease ran out (and was taken by another since) releases nothing. Resolves true when
   * this call ended the lease.
   */
  release(key: string, token: string): Promise<boolean>;
  /** ms left on a block, 0 when not blocked. */
  blockedFor(key: string): Promise<number>;
  /** blockedFor() answered synchronously, offered by in-process backends only (as consumeSync). */
  readonly blockedForSync?: ((key: string) => number) | undefined;
  /** Forget a key of any kind (bucket, counter, block or lease). */
  reset(key: string): Promise<void>;
  /** List active blocks whose key starts with prefix, with ms left (admin dashboard). */
  listBlocks(prefix: string, limit: number): Promise<{ key: string; ttlMs: number }[]>;
  /** Resolves when the store answers; rejects otherwise (readiness). */
  ping(): Promise<void>;
  /** Whether the last operation succeeded (cheap, for /readyz). */
  healthy(): boolean;
  close(): Promise<void>;
}
