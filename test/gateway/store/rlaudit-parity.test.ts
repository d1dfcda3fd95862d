import t from 'tap';
import { MemoryStore } from '../../../gateway/store/memory.js';
import { RedisStore } from '../../../gateway/store/redis.js';
import type { BucketSpec, ConsumeResult } from '../../../gateway/store/types.js';
import { startRedis } from '../../helpers/redis.js';

/**
 * The memory store and the redis Lua script answer every consume() alike: a seeded random
 * run of several-window consumes (shared and separate buckets, fractional refills, cost 2,
 * and a clock that now and then goes backwards) against both, with one fake clock.
 */
t.test('memory and redis take the same decisions with the same headers, step by step', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  let now = 1_750_000_000_000;
  const clock = () => now;
  const memory = new MemoryStore({ now: clock, maxKeys: 1000 });
  const shared = new RedisStore({ url: redis.url, now: clock, prefix: 'parity:' });
  t.teardown(() => shared.close());

  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const sets: BucketSpec[][] = [
    [
      { key: 'a', capacity: 3, windowMs: 10_000 },
      { key: 'b', capacity: 7, windowMs: 60_000 },
    ],
    [{ key: 'c', capacity: 1, windowMs: 1000 }],
    [
      { key: 'a', capacity: 3, windowMs: 10_000 },
      { key: 'd', capacity: 200, windowMs: 86_400_000 },
    ],
  ];
  const view = (r: ConsumeResult) => ({
    allowed: r.allowed,
    retryAfterMs: r.retryAfterMs,
    buckets: r.buckets,
  });
  const differences: string[] = [];
  let refused = 0;
  for (let i = 0; i < 2000; i++) {
    const x = random();
    if (x < 0.3) now += Math.floor(random() * 5000);
    else if (x < 0.33) now -= Math.floor(random() * 3000);
    const specs = sets[Math.floor(random() * sets.length)]!;
    const cost = random() < 0.1 ? 2 : 1;
    const m = view(memory.consumeSync(specs, cost));
    const r = view(await shared.consume(specs, cost));
    if (!m.allowed) refused++;
    if (JSON.stringify(m) !== JSON.stringify(r)) differences.push(`${i}: ${JSON.stringify([m, r])}`);
  }
  t.same(differences.slice(0, 5), [], 'no step differs');
  t.ok(refused > 200 && refused < 1800, `both refusals and grants were exercised (${refused} refused)`);
});
