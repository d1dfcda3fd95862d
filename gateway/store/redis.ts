import { randomBytes, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Redis, RedisOptions } from 'ioredis';
import type * as IoRedis from 'ioredis';
import { MAX_WINDOW_EVENTS, type BucketSpec, type ConsumeResult, type Store } from './types.js';
import { checkBucket } from './bucket-math.js';

/**
 * ioredis, loaded when the first Redis store is built: a gateway on the memory store never
 * pays its memory (about 10 MB of RSS) or start-up time.
 */
let ioredis: typeof IoRedis | undefined;
function loadIoredis(): typeof IoRedis {
  ioredis ??= createRequire(import.meta.url)('ioredis') as typeof IoRedis;
  return ioredis;
}

/** Options of the redis store. */
export interface RedisStoreOptions {
  /** `redis://[user:pass@]host:port/db` or `rediss://…` */
  readonly url: string;
  /** prefix of every key this gateway writes. Default `rg:` */
  readonly prefix?: string;
  /** how long one operation may take before it fails (ms). Default 200 */
  readonly timeoutMs?: number;
  /** ms since epoch; every instance must share (roughly) one clock. Default Date.now */
  readonly now?: () => number;
  /** told about connection errors (the instrumented wrapper counts and logs them) */
  readonly onConnectionError?: (err: Error) => void;
  /** told when the connection is (re)established */
  readonly onReady?: () => void;
  /** extra ioredis options (tests) */
  readonly redisOptions?: RedisOptions;
}

export const DEFAULT_TIMEOUT_MS = 200;

// Shared Lua helpers. Numbers are written with %.0f: every stored value is an integer
// below 2^53 (see bucket-math.ts), and Lua 5.1's tostring would switch to exponent form.
const LUA_HELPERS = `
local function ceildiv(a, b)
  if a <= 0 then return 0 end
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 end
  if q * b == a then return q end
  return q + 1
end
local function floordiv(a, b)
  if a <= 0 then return 0 end
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function n(x) return string.format('%.0f', x) end
`;

/**
 * KEYS: bucket keys. ARGV: now, cost, then capacity, windowMs per bucket.
 * Returns {allowed, retryAfterMs, remaining1, resetMs1, limited1, …}.
 */
const CONSUME = `${LUA_HELPERS}
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local levels, limited = {}, {}
local allowed, retry = 1, 0
for i = 1, #KEYS do
  local cap = tonumber(ARGV[1 + 2 * i])
  local win = tonumber(ARGV[2 + 2 * i])
  local full = cap * win
  local level = full
  local st = redis.call('HMGET', KEYS[i], 'l', 't')
  if st[1] then
    local el = now - tonumber(st[2])
    level = tonumber(st[1])
    if el > 0 then level = level + el * cap end
    if level > full then level = full end
  end
  local need = cost * win
  if level < need then
    allowed = 0
    limited[i] = 1
    local w = ceildiv(need - level, cap)
    if w > retry then retry = w end
  else
    limited[i] = 0
  end
  levels[i] = level
end
local out = {allowed, 0}
if allowed == 0 then out[2] = retry end
for i = 1, #KEYS do
  local cap = tonumber(ARGV[1 + 2 * i])
  local win = tonumber(ARGV[2 + 2 * i])
  local level = levels[i]
  if allowed == 1 then
    level = level - cost * win
    local reset = ceildiv(cap * win - level, cap)
    redis.call('HSET', KEYS[i], 'l', n(level), 't', n(now))
    redis.call('PEXPIRE', KEYS[i], n(reset + 1000))
  end
  out[#out + 1] = floordiv(level, win)
  out[#out + 1] = ceildiv(cap * win - level, cap)
  out[#out + 1] = limited[i]
end
return out
`;

/** KEYS[1] counter. ARGV: now, windowMs, unique member, max events. Returns the count. */
const INCREMENT = `
local now = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - win))
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[3])
local c = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[4])
if c > max then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, c - max - 1)
  c = max
end
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', win + 1000))
return c
`;

/** KEYS[1] counter. ARGV: now, windowMs. */
const COUNT = `
local from = tonumber(ARGV[1]) - tonumber(ARGV[2])
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', from), '+inf')
`;

/**
 * KEYS: block key, block index. ARGV: now, ttlMs, the caller's key (index member), '1' to
 * leave a running block alone. Returns 1 when it set the block, 0 when one was running.
 */
const BLOCK = `
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
if ARGV[4] == '1' then
  local cur = redis.call('GET', KEYS[1])
  if cur and tonumber(cur) > now then return 0 end
end
local exp = string.format('%.0f', now + ttl)
redis.call('SET', KEYS[1], exp, 'PX', string.format('%.0f', ttl))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
redis.call('ZADD', KEYS[2], exp, ARGV[3])
-- the index lives as long as its longest block
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], string.format('%.0f', ttl)) end
return 1
`;

/** KEYS[1] block key. ARGV: now. Returns ms left (0 = not blocked). */
const BLOCKED_FOR = `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local left = tonumber(v) - tonumber(ARGV[1])
if left <= 0 then return 0 end
return left
`;

/**
 * KEYS[1] lease. ARGV: the holder's token. Deletes the lease only while it is still that
 * holder's (compare-and-delete): one that ran out and was taken by another stays.
 * Returns 1 when it deleted the lease.
 */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/** KEYS: bucket, counter, block, lease, block index. ARGV: the caller's key. */
const RESET = `
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
return 1
`;

/** KEYS[1] block index. ARGV: now, prefix, limit, scan cap. Returns {key, ttl, key, ttl, …}. */
const LIST_BLOCKS = `
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
local prefix = ARGV[2]
local limit = tonumber(ARGV[3])
local rows = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  if #out >= 2 * limit then break end
  local k = rows[i]
  if string.sub(k, 1, #prefix) == prefix then
    out[#out + 1] = k
    out[#out + 1] = string.format('%.0f', tonumber(rows[i + 1]) - now)
  end
end
return out
`;

interface ScriptedRedis extends Redis {
  rgConsume(...args: (string | number)[]): Promise<number[]>;
  rgIncrement(key: string, now: number, windowMs: number, member: string, max: number): Promise<number>;
  rgCount(key: string, now: number, windowMs: number): Promise<number>;
  rgBlock(
    key: string,
    index: string,
    now: number,
    ttlMs: number,
    member: string,
    onlyIfAbsent: '0' | '1',
  ): Promise<number>;
  rgBlockedFor(key: string, now: number): Promise<number>;
  rgRelease(key: string, token: string): Promise<number>;
  rgReset(b: string, c: string, k: string, l: string, index: string, member: string): Promise<number>;
  rgListBlocks(index: string, now: number, prefix: string, limit: number, scan: number): Promise<string[]>;
}

/**
 * The shared store (`REDIS_URL=redis://…`): every operation is one Lua script, so it is
 * atomic however many gateway instances share the server. Keys are `<prefix><kind>:<key>`
 * (kind b = bucket, c = counter, k = block, l = lease) and every key expires once it carries
 * no information. Commands are never queued while the connection is down and time out after
 * `timeoutMs`, so a dead Redis costs a request at most that long; ioredis reconnects in
 * the background and the store recovers by itself.
 *
 * Time comes from the gateway (`now`), not from Redis, so every instance should run NTP;
 * a skew of a few ms only shifts refills by that much. Leases are the exception: a lease is
 * `SET NX PX` with its holder's token, so it runs out by the Redis server's clock alone.
 */
export class RedisStore implements Store {
  readonly kind = 'redis' as const;
  readonly client: ScriptedRedis;
  readonly #prefix: string;
  readonly #now: () => number;
  readonly #timeoutMs: number;
  readonly #index: string;
  #ok = false;
  #everReady = false;
  #closed = false;
  #seq = 0;
  /** the last connection error, until the next connection (told in errors and /readyz) */
  #lastError: string | undefined;
  /** #lastError is the first error of the current connection attempt (the cause, not its echoes) */
  #attemptFailed = false;
  /** resolves on the first connection */
  readonly #connected: Promise<void>;
  readonly #node = randomBytes(6).toString('hex');

  constructor(opts: RedisStoreOptions) {
    this.#prefix = opts.prefix ?? 'rg:';
    this.#now = opts.now ?? Date.now;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#index = `${this.#prefix}blocks`;
    const client = new (loadIoredis().Redis)(opts.url, {
      // Fail at once while disconnected instead of queueing: the policy decides open/closed.
      enableOfflineQueue: false,
      commandTimeout: this.#timeoutMs,
      connectTimeout: Math.max(1000, this.#timeoutMs),
      maxRetriesPerRequest: 0,
      // A timed-out consume must not be replayed after a reconnect (it would count twice).
      autoResendUnfulfilledCommands: false,
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
      ...opts.redisOptions,
    }) as ScriptedRedis;
    client.defineCommand('rgConsume', { lua: CONSUME });
    client.defineCommand('rgIncrement', { lua: INCREMENT, numberOfKeys: 1 });
    client.defineCommand('rgCount', { lua: COUNT, numberOfKeys: 1 });
    client.defineCommand('rgBlock', { lua: BLOCK, numberOfKeys: 2 });
    client.defineCommand('rgBlockedFor', { lua: BLOCKED_FOR, numberOfKeys: 1 });
    client.defineCommand('rgRelease', { lua: RELEASE, numberOfKeys: 1 });
    client.defineCommand('rgReset', { lua: RESET, numberOfKeys: 5 });
    client.defineCommand('rgListBlocks', { lua: LIST_BLOCKS, numberOfKeys: 1 });
    client.on('ready', () => {
      this.#everReady = true;
      this.#ok = true;
      this.#lastError = undefined;
      opts.onReady?.();
    });
    client.on('error', (err: Error) => {
      this.#ok = false;
      // A store being closed has no outage to report: closed while its first connection was
      // being set up (a start that failed at once, its port taken), the ready check ioredis
      // sends on the connection it is giving up fails with "Stream isn't writeable".
      if (this.#closed) return;
      if (!this.#attemptFailed) this.#lastError = err.message;
      this.#attemptFailed = true;
      opts.onConnectionError?.(err);
    });
    client.on('reconnecting', () => {
      this.#attemptFailed = false;
    });
    // one promise for every caller waiting for the first connection (not a listener each)
    this.#connected = new Promise((resolve) => client.once('ready', () => resolve()));
    client.on('close', () => {
      this.#ok = false;
    });
    this.client = client;
  }

  /**
   * Before the first connection only, wait for it (bounded by the timeout), unless an attempt
   * failed already: then fail at once, as a store that lost its connection does, saying why.
   */
  async #ready(): Promise<void> {
    if (this.client.status === 'ready' || this.#everReady) return;
    if (this.#closed) throw new Error('store closed');
    if (this.#lastError !== undefined) throw new Error(`redis not connected (${this.#lastError})`);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const why = this.#lastError !== undefined ? ` (${this.#lastError})` : '';
        reject(new Error(`redis not connected after ${this.#timeoutMs}ms${why}`));
      }, this.#timeoutMs);
    });
    try {
      await Promise.race([this.#connected, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #run<T>(op: () => Promise<T>): Promise<T> {
    await this.#ready();
    try {
      const v = await op();
      this.#ok = true;
      return v;
    } catch (err) {
      this.#ok = false;
      throw err;
    }
  }

  #k(kind: 'b' | 'c' | 'k' | 'l', key: string): string {
    return `${this.#prefix}${kind}:${key}`;
  }

  async consume(buckets: readonly BucketSpec[], cost = 1): Promise<ConsumeResult> {
    const args: (string | number)[] = [buckets.length];
    for (const b of buckets) {
      checkBucket(b.capacity, b.windowMs);
      args.push(this.#k('b', b.key));
    }
    args.push(this.#now(), cost);
    for (const b of buckets) args.push(b.capacity, b.windowMs);
    const r = await this.#run(() => this.client.rgConsume(...args));
    const out: ConsumeResult['buckets'][number][] = [];
    for (let i = 0; i < buckets.length; i++) {
      out.push({
        remaining: Number(r[2 + 3 * i]),
        resetMs: Number(r[3 + 3 * i]),
        limited: r[4 + 3 * i] === 1,
      });
    }
    return { allowed: r[0] === 1, retryAfterMs: Number(r[1]), buckets: out };
  }

  async increment(key: string, windowMs: number): Promise<number> {
    const now = this.#now();
    const member = `${now}:${this.#node}:${(this.#seq = (this.#seq + 1) % 1e9)}`;
    return Number(
      await this.#run(() =>
        this.client.rgIncrement(this.#k('c', key), now, windowMs, member, MAX_WINDOW_EVENTS),
      ),
    );
  }

  async count(key: string, windowMs: number): Promise<number> {
    return Number(await this.#run(() => this.client.rgCount(this.#k('c', key), this.#now(), windowMs)));
  }

  async block(key: string, ttlMs: number, onlyIfAbsent = false): Promise<boolean> {
    if (!(ttlMs > 0)) throw new Error(`block ttl must be positive (got ${ttlMs})`);
    const set = await this.#run(() =>
      this.client.rgBlock(
        this.#k('k', key),
        this.#index,
        this.#now(),
        Math.ceil(ttlMs),
        key,
        onlyIfAbsent ? '1' : '0',
      ),
    );
    return Number(set) === 1;
  }

  async acquire(key: string, ttlMs: number): Promise<string | undefined> {
    if (!(ttlMs > 0)) throw new Error(`lease ttl must be positive (got ${ttlMs})`);
    const token = randomUUID();
    const lease = this.#k('l', key);
    let set: string | null;
    try {
      set = await this.#run(() => this.client.set(lease, token, 'PX', Math.ceil(ttlMs), 'NX'));
    } catch (err) {
      // A command that timed out may still run (a slow or paused Redis answers late): the
      // lease would then be held by nobody until it runs out, refusing every attempt on the
      // key meanwhile. The release goes out on the same connection, so Redis runs it after
      // the SET; when the connection is gone it fails too and the lease runs out by itself.
      this.client.rgRelease(lease, token).catch(() => {});
      throw err;
    }
    return set === 'OK' ? token : undefined;
  }

  async release(key: string, token: string): Promise<boolean> {
    return Number(await this.#run(() => this.client.rgRelease(this.#k('l', key), token))) === 1;
  }

  async blockedFor(key: string): Promise<number> {
    return Number(await this.#run(() => this.client.rgBlockedFor(this.#k('k', key), this.#now())));
  }

  async reset(key: string): Promise<void> {
    await this.#run(() =>
      this.client.rgReset(
        this.#k('b', key),
        this.#k('c', key),
        this.#k('k', key),
        this.#k('l', key),
        this.#index,
        key,
      ),
    );
  }

  async listBlocks(prefix: string, limit: number): Promise<{ key: string; ttlMs: number }[]> {
    const rows = await this.#run(() =>
      this.client.rgListBlocks(this.#index, this.#now(), prefix, limit, 10_000),
    );
    const out: { key: string; ttlMs: number }[] = [];
    for (let i = 0; i + 1 < rows.length; i += 2) out.push({ key: rows[i]!, ttlMs: Number(rows[i + 1]) });
    return out;
  }

  async ping(): Promise<void> {
    await this.#run(() => this.client.ping());
  }

  healthy(): boolean {
    return this.#ok && this.client.status === 'ready';
  }

  async close(): Promise<void> {
    this.#closed = true;
    // QUIT can only be sent on a ready connection (no offline queue): otherwise just drop it
    if (this.client.status !== 'ready') {
      this.client.disconnect();
      return;
    }
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}
