import t from 'tap';
import { MemoryStore } from '../../../gateway/store/memory.js';

/**
 * The memory store bounds buckets, counters, and blocks with leases apart: a flood of one kind
 * evicts only that kind. Blocks evict the one ending soonest, never by recency.
 */

function fakeClock() {
  let now = 1_750_000_000_000;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

const bucket = (key: string) => [{ key, capacity: 10, windowMs: 60_000 }];

t.test(
  'a flood of distinct clients (buckets) past maxKeys evicts no ban, lock, count or lease',
  async (t) => {
    const clock = fakeClock();
    const s = new MemoryStore({ maxKeys: 100, now: clock.now });
    await s.block('ipban:ban:203.0.113.9', 3_600_000, true);
    await s.block('lockout:lock:u:admin', 900_000, true);
    await s.increment('lockout:n:u:admin', 900_000);
    await s.increment('lockout:n:u:admin', 900_000);
    const lease = await s.acquire('lockout:lease:u:admin', 37_000);
    t.type(lease, 'string');
    for (let i = 0; i < 5_000; i++) s.consumeSync(bucket(`rl:ip:2001:db8:1:${i.toString(16)}::/64`));
    t.same(s.sizes, { buckets: 100, counters: 1, blocks: 3 }, 'only buckets were evicted');
    t.equal(s.blockedForSync('ipban:ban:203.0.113.9'), 3_600_000, 'the ban holds');
    t.equal(s.blockedForSync('lockout:lock:u:admin'), 900_000, 'the lock holds');
    t.equal(await s.count('lockout:n:u:admin', 900_000), 2, 'the failure count holds');
    t.equal(await s.acquire('lockout:lease:u:admin', 37_000), undefined, 'the lease holds');
    t.equal(await s.release('lockout:lease:u:admin', lease!), true);
  },
);

t.test('a flood of counters evicts counters only (least recently used first)', async (t) => {
  const clock = fakeClock();
  const s = new MemoryStore({ maxKeys: 100, now: clock.now });
  await s.block('ipban:ban:203.0.113.9', 3_600_000);
  s.consumeSync(bucket('rl:ip:203.0.113.1'));
  await s.increment('lockout:n:u:admin', 900_000);
  for (let i = 0; i < 1_000; i++) await s.increment(`lockout:n:u:random-${i}`, 900_000);
  t.same(s.sizes, { buckets: 1, counters: 100, blocks: 1 });
  t.equal(await s.count('lockout:n:u:admin', 900_000), 0, 'the oldest counter went');
  t.equal(await s.count('lockout:n:u:random-999', 900_000), 1, 'the newest stayed');
  t.equal(s.blockedForSync('ipban:ban:203.0.113.9'), 3_600_000, 'the ban holds');
  t.equal(s.consumeSync(bucket('rl:ip:203.0.113.1')).buckets[0]!.remaining, 8, 'the bucket holds');
});

t.test('blocks past maxKeys: the one ending soonest goes, however often it was read', async (t) => {
  const clock = fakeClock();
  const s = new MemoryStore({ maxKeys: 3, now: clock.now });
  await s.block('ban:a', 60_000);
  await s.block('ban:b', 10_000);
  const lease = await s.acquire('lease:c', 30_000);
  // a banned client retrying keeps reading its ban: that does not keep it
  for (let i = 0; i < 10; i++) t.equal(s.blockedForSync('ban:b'), 10_000);
  await s.block('ban:d', 5_000);
  t.equal(s.blockedForSync('ban:b'), 0, 'b (10 s left) went');
  t.equal(s.blockedForSync('ban:a'), 60_000);
  t.equal(s.blockedForSync('ban:d'), 5_000, 'a new block always goes in');
  t.equal(await s.acquire('lease:c', 30_000), undefined, 'the lease (30 s left) stayed');
  // ended blocks go before running ones
  clock.advance(6_000);
  await s.block('ban:e', 1_000);
  t.equal(s.sizes.blocks, 3);
  t.equal(s.blockedForSync('ban:a'), 54_000);
  t.equal(await s.release('lease:c', lease!), true, 'the lease was still held');
  // a block set again replaces its entry and evicts nothing
  await s.block('ban:a', 120_000);
  await s.block('ban:e', 2_000);
  t.same(s.sizes, { buckets: 0, counters: 0, blocks: 2 });
  t.same(await s.listBlocks('ban:', 10), [
    { key: 'ban:a', ttlMs: 120_000 },
    { key: 'ban:e', ttlMs: 2_000 },
  ]);
});
