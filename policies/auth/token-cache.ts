import { LRUCache } from 'lru-cache';
import { ownString } from '../../gateway/own-string.js';

/** A verified token's claims and until when the verification may be reused. */
export interface CachedToken {
  readonly claims: Readonly<Record<string, unknown>>;
  /** ms since epoch; never later than the token's `exp` */
  readonly until: number;
}

export interface TokenCacheOptions {
  /** entries (0 disables the cache) */
  readonly maxEntries: number;
  /** total size of the cached tokens and claims, roughly in bytes */
  readonly maxBytes: number;
  /** a verification is reused at most this long, even when `exp` is later */
  readonly maxTtlMs: number;
  readonly now: () => number;
}

/**
 * The verified-token cache: a bounded LRU keyed by the exact token string, so a hot
 * token is verified once and then only looked up. An entry is never used at or after
 * the token's `exp` (without clock tolerance) nor longer than `maxTtlMs` after it was
 * verified, which bounds how long a key removed from the JWKS keeps being honoured.
 * One cache is shared by every route whose verification settings are identical (the
 * settings are part of the key it is stored under in `services.persistent`).
 */
export class TokenCache {
  private readonly lru: LRUCache<string, CachedToken> | undefined;
  private readonly opts: TokenCacheOptions;
  hits = 0;
  misses = 0;
  // The entry of the last hit or set: a request with the same token (the common case of a
  // client sending its token again) is answered by one string comparison, not a hash of
  // the token. It is the most recently used entry of the LRU whenever it is checked
  // (any other lookup or insertion replaces it), so skipping the LRU touch keeps the
  // eviction order exact.
  private lastToken: string | undefined;
  private last: CachedToken | undefined;

  constructor(opts: TokenCacheOptions) {
    this.opts = opts;
    this.lru =
      opts.maxEntries > 0
        ? new LRUCache<string, CachedToken>({
            max: opts.maxEntries,
            maxSize: Math.max(1, opts.maxBytes),
            sizeCalculation: (v, k) => k.length + 256 + approxClaimsSize(v.claims),
          })
        : undefined;
  }

  get enabled(): boolean {
    return this.lru !== undefined;
  }

  get size(): number {
    return this.lru?.size ?? 0;
  }

  get(token: string): CachedToken | undefined {
    if (this.lru === undefined) return undefined;
    if (token === this.lastToken) {
      const last = this.last!;
      if (this.opts.now() < last.until) {
        this.hits += 1;
        return last;
      }
    }
    this.lastToken = undefined;
    this.last = undefined;
    const hit = this.lru.get(token);
    if (hit === undefined) {
      this.misses += 1;
      return undefined;
    }
    if (this.opts.now() >= hit.until) {
      this.lru.delete(token);
      this.misses += 1;
      return undefined;
    }
    this.hits += 1;
    this.lastToken = token;
    this.last = hit;
    return hit;
  }

  /**
   * Remember a verification; `expSeconds` is the token's `exp` claim when present. The
   * token is kept as a copy (see {@link ownString}).
   */
  set(token: string, claims: Readonly<Record<string, unknown>>, expSeconds: number | undefined): void {
    if (this.lru === undefined) return;
    const now = this.opts.now();
    let until = now + this.opts.maxTtlMs;
    if (expSeconds !== undefined) until = Math.min(until, expSeconds * 1000);
    this.lastToken = undefined;
    this.last = undefined;
    if (until <= now) return;
    const entry: CachedToken = { claims, until };
    // A copy: a token read from the Cookie header (or the Authorization header) is a slice
    // of it, which would keep the whole header alive as long as the entry lives.
    const key = ownString(token);
    this.lru.set(key, entry);
    if (this.lru.peek(key) === entry) {
      this.lastToken = key;
      this.last = entry;
    }
  }

  clear(): void {
    this.lastToken = undefined;
    this.last = undefined;
    this.lru?.clear();
  }
}

function approxClaimsSize(claims: Readonly<Record<string, unknown>>): number {
  let n = 0;
  for (const k in claims) {
    const v = claims[k];
    n += k.length + (typeof v === 'string' ? v.length : 16);
  }
  return n;
}
