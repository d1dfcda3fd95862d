import t from 'tap';
import { Metrics } from '../../../gateway/observability/metrics.js';
import { createStore } from '../../../gateway/store/index.js';
import { MAX_WINDOW_EVENTS, type Store } from '../../../gateway/store/types.js';
import { startRedis, type TestRedis } from '../../helpers/redis.js';
import { eventually } from '../../helpers/wait.js';

/**
 * One contract, two backends: every assertion below runs against the memory store and
 * against a real redis-server, with the same fake clock.
 */

const silent = { info() {}, warn() {}, error() {} };

interface Clock {
  now: () => number;
  advance(ms: number): void;
}
function fakeClock(): Clock {
  let t = 1_750_000_000_000;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

type Make = (clock: Clock, prefix: string) => Store;

let prefixSeq = 0;

function contract(name: string, make: Make): void {
  t.test(name, async (t) => {
    const open: Store[] = [];
    const mk = () => {
      const clock = fakeClock();
      const s = make(clock, `test${++prefixSeq}:`);
      open.push(s);
      return { s, clock };
    };
    t.teardown(async () => {
      for (const s of open) await s.close();
    });

    t.test('token bucket: takes tokens, refuses at empty, refills at the window rate', async (t) => {
      const { s, clock } = mk();
      await s.ping();
      const spec = [{ key: 'k1', capacity: 10, windowMs: 60_000 }];
      for (let i = 9; i >= 0; i--) {
        const r = await s.consume(spec);
        t.equal(r.allowed, true);
        t.equal(r.retryAfterMs, 0);
        t.same(r.buckets, [{ remaining: i, resetMs: (10 - i) * 6000, limited: false }]);
      }
      const refused = await s.consume(spec);
      t.equal(refused.allowed, false);
      t.equal(refused.retryAfterMs, 6000, 'one token comes back every 6 s');
      t.same(refused.buckets, [{ remaining: 0, resetMs: 60_000, limited: true }]);

      clock.advance(5999);
      const stillRefused = await s.consume(spec);
      t.equal(stillRefused.allowed, false);
      t.equal(stillRefused.retryAfterMs, 1, 'Retry-After is exact to the ms');

      clock.advance(1);
      const ok = await s.consume(spec);
      t.equal(ok.allowed, true);
      t.same(ok.buckets, [{ remaining: 0, resetMs: 60_000, limited: false }]);

      clock.advance(60_000);
      const full = await s.consume(spec);
      t.same(
        full.buckets,
        [{ remaining: 9, resetMs: 6000, limited: false }],
        'refills to capacity, never past it',
      );
      clock.advance(10 * 60_000);
      const capped = await s.consume(spec);
      t.equal(capped.buckets[0]!.remaining, 9);
    });

    t.test('fractional refill: 3 per 10 s refills one token every 3334 ms (rounded up)', async (t) => {
      const { s, clock } = mk();
      const spec = [{ key: 'frac', capacity: 3, windowMs: 10_000 }];
      for (let i = 0; i < 3; i++) t.equal((await s.consume(spec)).allowed, true);
      const r = await s.consume(spec);
      t.equal(r.retryAfterMs, 3334);
      clock.advance(3333);
      t.equal((await s.consume(spec)).allowed, false);
      clock.advance(1);
      t.equal((await s.consume(spec)).allowed, true);
    });

    t.test('several windows: all or nothing, Retry-After is the longest wait', async (t) => {
      const { s, clock } = mk();
      const spec = [
        { key: 'multi:sec', capacity: 2, windowMs: 1000 },
        { key: 'multi:min', capacity: 5, windowMs: 60_000 },
      ];
      t.equal((await s.consume(spec)).allowed, true);
      const second = await s.consume(spec);
      t.same(
        second.buckets.map((b) => b.remaining),
        [0, 3],
      );
      const third = await s.consume(spec);
      t.equal(third.allowed, false);
      t.same(
        third.buckets.map((b) => [b.remaining, b.limited]),
        [
          [0, true],
          [3, false],
        ],
        'the minute bucket is not charged for a refused request',
      );
      t.equal(third.retryAfterMs, 500);

      clock.advance(1000);
      t.equal((await s.consume(spec)).allowed, true);
      t.equal((await s.consume(spec)).allowed, true);
      clock.advance(1000);
      t.equal((await s.consume(spec)).allowed, true);
      const capped = await s.consume(spec);
      t.equal(capped.allowed, false, 'five a minute, however the seconds are spread');
      t.same(
        capped.buckets.map((b) => b.limited),
        [false, true],
      );
      // five tokens taken, 2000 ms of refill at one token per 12 000 ms: 1/6 token left
      t.equal(
        capped.retryAfterMs,
        12_000 - 2000,
        'a token every 12 s; 2 s have passed since the bucket was drained',
      );
    });

    t.test('cost above one', async (t) => {
      const { s } = mk();
      const spec = [{ key: 'cost', capacity: 10, windowMs: 10_000 }];
      t.same((await s.consume(spec, 4)).buckets[0]!.remaining, 6);
      t.same((await s.consume(spec, 4)).buckets[0]!.remaining, 2);
      const r = await s.consume(spec, 4);
      t.equal(r.allowed, false);
      t.equal(r.retryAfterMs, 2000);
    });

    t.test('buckets with different keys are independent', async (t) => {
      const { s } = mk();
      const a = [{ key: 'ip:1', capacity: 1, windowMs: 1000 }];
      const b = [{ key: 'ip:2', capacity: 1, windowMs: 1000 }];
      t.equal((await s.consume(a)).allowed, true);
      t.equal((await s.consume(a)).allowed, false);
      t.equal((await s.consume(b)).allowed, true);
    });

    t.test('sliding-window counter', async (t) => {
      const { s, clock } = mk();
      t.equal(await s.count('fails', 100), 0);
      t.equal(await s.increment('fails', 100), 1);
      clock.advance(10);
      t.equal(await s.increment('fails', 100), 2);
      clock.advance(10);
      t.equal(await s.increment('fails', 100), 3);
      t.equal(await s.count('fails', 100), 3, 'count does not add');
      clock.advance(79);
      t.equal(await s.count('fails', 100), 3, 'the first event is 99 ms old: still inside');
      clock.advance(1);
      t.equal(await s.count('fails', 100), 2, 'at exactly the window length it has slid out');
      t.equal(await s.increment('fails', 100), 3);
      clock.advance(1000);
      t.equal(await s.count('fails', 100), 0);
      t.equal(await s.increment('fails', 100), 1);
    });

    t.test('sliding-window counter saturates at MAX_WINDOW_EVENTS', async (t) => {
      const { s } = mk();
      let last = 0;
      for (let i = 0; i < MAX_WINDOW_EVENTS + 5; i++) last = await s.increment('flood', 60_000);
      t.equal(last, MAX_WINDOW_EVENTS);
      t.equal(await s.count('flood', 60_000), MAX_WINDOW_EVENTS);
    });

    t.test('blocks: ttl, expiry, listing, reset', async (t) => {
      const { s, clock } = mk();
      t.equal(await s.blockedFor('ban:1.2.3.4'), 0);
      await s.block('ban:1.2.3.4', 60_000);
      await s.block('ban:5.6.7.8', 30_000);
      await s.block('lock:alice', 10_000);
      t.equal(await s.blockedFor('ban:1.2.3.4'), 60_000);
      clock.advance(20_000);
      t.equal(await s.blockedFor('ban:1.2.3.4'), 40_000);
      t.equal(await s.blockedFor('lock:alice'), 0, 'expired');
      t.same(await s.listBlocks('ban:', 10), [
        { key: 'ban:1.2.3.4', ttlMs: 40_000 },
        { key: 'ban:5.6.7.8', ttlMs: 10_000 },
      ]);
      t.same(await s.listBlocks('ban:', 1), [{ key: 'ban:1.2.3.4', ttlMs: 40_000 }]);
      t.same(await s.listBlocks('lock:', 10), []);
      await s.reset('ban:1.2.3.4');
      t.equal(await s.blockedFor('ban:1.2.3.4'), 0);
      t.same(await s.listBlocks('ban:', 10), [{ key: 'ban:5.6.7.8', ttlMs: 10_000 }]);
      await s.block('ban:5.6.7.8', 5000);
      t.equal(await s.blockedFor('ban:5.6.7.8'), 5000, 'a new block replaces the old one');
    });

    t.test('blocks only if absent: a running block is left as it is', async (t) => {
      const { s, clock } = mk();
      t.equal(await s.block('ban:9.9.9.9', 60_000, true), true, 'set when there is none');
      clock.advance(10_000);
      t.equal(await s.block('ban:9.9.9.9', 60_000, true), false, 'not set while one runs');
      t.equal(await s.blockedFor('ban:9.9.9.9'), 50_000, 'neither extended nor shortened');
      t.same(await s.listBlocks('ban:', 10), [{ key: 'ban:9.9.9.9', ttlMs: 50_000 }]);
      clock.advance(50_000);
      t.equal(await s.block('ban:9.9.9.9', 5000, true), true, 'set again once it ended');
      t.equal(await s.blockedFor('ban:9.9.9.9'), 5000);
      t.equal(await s.block('ban:9.9.9.9', 20_000), true, 'without the flag a block replaces the old one');
      t.equal(await s.blockedFor('ban:9.9.9.9'), 20_000);
    });

    t.test('one key may hold a bucket, a counter and a block; reset forgets all', async (t) => {
      const { s } = mk();
      const spec = [{ key: 'same', capacity: 1, windowMs: 60_000 }];
      await s.consume(spec);
      await s.increment('same', 60_000);
      await s.block('same', 60_000);
      t.equal((await s.consume(spec)).allowed, false);
      t.equal(await s.count('same', 60_000), 1);
      t.equal(await s.blockedFor('same'), 60_000);
      await s.reset('same');
      t.equal((await s.consume(spec)).allowed, true);
      t.equal(await s.count('same', 60_000), 0);
      t.equal(await s.blockedFor('same'), 0);
    });

    t.test('leases: one holder at a time; only its token gives it back', async (t) => {
      const { s } = mk();
      const a = await s.acquire('lease:u:alice', 60_000);
      t.type(a, 'string', 'taken: the owner token');
      t.equal(await s.acquire('lease:u:alice', 60_000), undefined, 'held: not taken again');
      t.type(await s.acquire('lease:u:bob', 60_000), 'string', 'another key is free');
      t.equal(await s.release('lease:u:alice', 'not-the-token'), false, 'another token releases nothing');
      t.equal(await s.acquire('lease:u:alice', 60_000), undefined, 'still held');
      t.equal(await s.release('lease:u:alice', a!), true, 'its token releases it');
      t.equal(await s.release('lease:u:alice', a!), false, 'once');
      const b = await s.acquire('lease:u:alice', 60_000);
      t.type(b, 'string', 'free again');
      t.not(b, a, 'every lease has a token of its own');
      t.equal(await s.blockedFor('lease:u:alice'), 0, 'a lease is no block');
      t.same(await s.listBlocks('lease:', 10), [], 'nor listed as one');
      await s.reset('lease:u:alice');
      t.type(await s.acquire('lease:u:alice', 60_000), 'string', 'reset forgets a lease');
    });

    t.test('leases: a holder whose lease ran out does not release the next holder’s', async (t) => {
      const { s, clock } = mk();
      // 300 ms: the memory store runs it out on the fake clock, redis by its own clock
      const first = await s.acquire('lease:u:carol', 300);
      t.type(first, 'string');
      clock.advance(300);
      let second: string | undefined;
      await eventually('the first lease ran out', async () => {
        second = await s.acquire('lease:u:carol', 60_000);
        return second !== undefined;
      });
      t.equal(await s.release('lease:u:carol', first!), false, 'the late release of the first holder');
      t.equal(await s.acquire('lease:u:carol', 60_000), undefined, 'the second holder still holds it');
      t.equal(await s.release('lease:u:carol', second!), true);
      t.type(await s.acquire('lease:u:carol', 60_000), 'string');
    });

    t.test('bucket churn past the memory bound leaves blocks, counters and leases', async (t) => {
      const { s } = mk();
      await s.block('ban:198.51.100.7', 3_600_000);
      await s.block('lock:u:admin', 900_000);
      t.equal(await s.increment('fails:u:admin', 900_000), 1);
      const lease = await s.acquire('lease:u:admin', 60_000);
      t.type(lease, 'string');
      // 12 000 distinct clients (more than the memory store's 10 000 keys), a bucket each
      let allowed = 0;
      for (let i = 0; i < 120; i++) {
        const spec = Array.from({ length: 100 }, (_, j) => ({
          key: `rl:ip:2001:db8:1:${(i * 100 + j).toString(16)}::/64`,
          capacity: 10,
          windowMs: 60_000,
        }));
        if ((await s.consume(spec)).allowed) allowed++;
      }
      t.equal(allowed, 120, 'every client had a token');
      t.equal(await s.blockedFor('ban:198.51.100.7'), 3_600_000, 'the ban holds');
      t.equal(await s.blockedFor('lock:u:admin'), 900_000, 'the account lock holds');
      t.equal(await s.count('fails:u:admin', 900_000), 1, 'the failure count holds');
      t.equal(await s.acquire('lease:u:admin', 60_000), undefined, 'the lease holds');
      t.same(await s.listBlocks('', 10), [
        { key: 'ban:198.51.100.7', ttlMs: 3_600_000 },
        { key: 'lock:u:admin', ttlMs: 900_000 },
      ]);
    });

    t.test('bad arguments are refused', async (t) => {
      const { s } = mk();
      await t.rejects(s.consume([{ key: 'x', capacity: 0, windowMs: 1000 }]));
      await t.rejects(s.consume([{ key: 'x', capacity: 1.5, windowMs: 1000 }]));
      await t.rejects(s.block('x', 0));
      await t.rejects(s.acquire('x', 0));
    });

    t.test('ping and healthy', async (t) => {
      const { s } = mk();
      await s.ping();
      t.equal(s.healthy(), true);
    });
  });
}

const metrics = new Metrics({ defaultMetrics: false });

contract('memory store', (clock) =>
  createStore({ url: 'memory://', maxKeys: 10_000, metrics, log: silent, now: clock.now }),
);

let redis: TestRedis | undefined;
let redisError: Error | undefined;
t.before(async () => {
  try {
    redis = await startRedis();
  } catch (err) {
    // fail every redis test with the reason (a missing binary is a failure, never a skip)
    redisError = err as Error;
  }
});
const redisUrl = (): string => {
  if (redis === undefined) throw redisError ?? new Error('redis-server did not start');
  return redis.url;
};
t.teardown(async () => {
  await redis?.stop();
});

contract('redis store', (clock, prefix) =>
  createStore({ url: redisUrl(), prefix, timeoutMs: 1000, metrics, log: silent, now: clock.now }),
);

t.test('redis: prefixes separate gateways sharing one server; keys expire', async (t) => {
  const clock = fakeClock();
  const a = createStore({ url: redisUrl(), prefix: 'gwA:', metrics, log: silent, now: clock.now });
  const b = createStore({ url: redisUrl(), prefix: 'gwB:', metrics, log: silent, now: clock.now });
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  await a.ping();
  await b.ping();
  const spec = [{ key: 'shared', capacity: 1, windowMs: 60_000 }];
  t.equal((await a.consume(spec)).allowed, true);
  t.equal((await a.consume(spec)).allowed, false);
  t.equal((await b.consume(spec)).allowed, true, 'another prefix, another bucket');

  const { Redis } = await import('ioredis');
  const raw = new Redis(redisUrl());
  t.teardown(() => raw.disconnect());
  await a.increment('cnt', 30_000);
  await a.block('blk', 45_000);
  const token = await a.acquire('lse', 20_000);
  const keys = (await raw.keys('gwA:*')).sort();
  t.same(keys, ['gwA:b:shared', 'gwA:blocks', 'gwA:c:cnt', 'gwA:k:blk', 'gwA:l:lse']);
  t.equal(await raw.get('gwA:l:lse'), token, 'a lease holds its owner token');
  t.same(await raw.zrange('gwA:blocks', 0, -1), ['blk'], 'leases stay out of the block index');
  for (const k of ['gwA:b:shared', 'gwA:c:cnt', 'gwA:k:blk', 'gwA:l:lse', 'gwA:blocks']) {
    const ttl = await raw.pttl(k);
    t.ok(ttl > 0 && ttl <= 61_000, `${k} expires (pttl ${ttl})`);
  }
});

t.test('redis: two clients on one server enforce one limit together', async (t) => {
  const clock = fakeClock();
  const a = createStore({ url: redisUrl(), prefix: 'pair:', metrics, log: silent, now: clock.now });
  const b = createStore({ url: redisUrl(), prefix: 'pair:', metrics, log: silent, now: clock.now });
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  await a.ping();
  await b.ping();
  const spec = [{ key: 'ip:9.9.9.9', capacity: 20, windowMs: 60_000 }];
  const results = await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).consume(spec)));
  t.equal(results.filter((r) => r.allowed).length, 20, 'exactly the capacity, whichever instance answered');
  t.equal(await a.increment('c', 60_000), 1);
  t.equal(await b.increment('c', 60_000), 2);
});
