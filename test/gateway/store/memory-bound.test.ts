import t from 'tap';
import v8 from 'node:v8';
import vm from 'node:vm';
import { MemoryStore } from '../../../gateway/store/memory.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/**
 * A flood of one million distinct client keys (each taking a token from a rate-limit
 * bucket, one in four also counting an auto-ban event, one in four also banned) must not
 * grow memory past the bounds. Stated bounds, with maxKeys 100 000 (the default): the
 * process RSS grows by less than 300 MB during the flood (with a full GC every 250 000
 * keys), the live heap after a full GC grows by less than 100 MB with all three kinds full
 * (an unbounded map of the same keys retains over 500 MB), and the store holds exactly
 * maxKeys buckets, maxKeys counters and maxKeys blocks.
 */
const RSS_GROWTH_LIMIT = 300 * 1024 * 1024;
const HEAP_GROWTH_LIMIT = 100 * 1024 * 1024;

t.test('a million distinct keys stay under the stated RSS', async (t) => {
  const store = new MemoryStore({ maxKeys: 100_000, now: () => 1_750_000_000_000 });
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const rssBefore = process.memoryUsage().rss;
  let peak = rssBefore;
  for (let i = 0; i < 1_000_000; i++) {
    const ip = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}:${i >>> 24}`;
    store.consumeSync([{ key: `rl:default:60s:${ip}`, capacity: 10, windowMs: 60_000 }]);
    if (i % 4 === 0) await store.increment(`ban:${ip}`, 3_600_000);
    if (i % 4 === 1) await store.block(`ipban:ban:${ip}`, 3_600_000 + i, true);
    if (i % 50_000 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    // a full collection now and then, as a long-running process gets: RSS then tracks
    // what the store retains rather than how lazily V8 collects garbage
    if (i % 250_000 === 0) gc();
  }
  peak = Math.max(peak, process.memoryUsage().rss);
  gc();
  const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
  t.same(
    store.sizes,
    { buckets: 100_000, counters: 100_000, blocks: 100_000 },
    'exactly maxKeys keys of each kind are held',
  );
  t.ok(
    peak - rssBefore < RSS_GROWTH_LIMIT,
    `RSS grew by ${Math.round((peak - rssBefore) / 1048576)} MB from ${Math.round(rssBefore / 1048576)} MB (limit 300 MB)`,
  );
  t.ok(
    heapGrowth < HEAP_GROWTH_LIMIT,
    `live heap grew by ${Math.round(heapGrowth / 1048576)} MB (limit 100 MB)`,
  );
  // the most recent keys are still there, the oldest were evicted
  const last = 999_999;
  const ip = `10.${(last >>> 16) & 255}.${(last >>> 8) & 255}.${last & 255}:0`;
  const r = store.consumeSync([{ key: `rl:default:60s:${ip}`, capacity: 10, windowMs: 60_000 }]);
  t.equal(r.buckets[0]!.remaining, 8, 'recent key kept its state');
  const r0 = store.consumeSync([{ key: 'rl:default:60s:10.0.0.0:0', capacity: 10, windowMs: 60_000 }]);
  t.equal(r0.buckets[0]!.remaining, 9, 'oldest key was evicted (starts full again)');
  await store.close();
});
