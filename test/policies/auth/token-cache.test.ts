import t from 'tap';
import { TokenCache } from '../../../policies/auth/token-cache.js';

/** The repeated-token shortcut must answer exactly as the LRU would. */

function cache(maxEntries = 3) {
  let now = 1_000_000;
  const c = new TokenCache({ maxEntries, maxBytes: 1 << 20, maxTtlMs: 60_000, now: () => now });
  return { c, advance: (ms: number) => void (now += ms), at: () => now };
}

t.test('a repeated token is a hit until it expires, then a miss', async (t) => {
  const { c, advance, at } = cache();
  const claims = { sub: 'alice' };
  c.set('A', claims, Math.floor(at() / 1000) + 11); // until 1_011_000
  t.equal(c.get('A')?.claims, claims);
  t.equal(c.get('A')?.claims, claims);
  t.equal(c.hits, 2);
  advance(10_000);
  t.equal(c.get('A')?.claims, claims, 'still before exp');
  advance(1_000);
  t.equal(c.get('A'), undefined, 'expired on the repeated path too');
  t.equal(c.get('A'), undefined, 'and dropped');
  t.equal(c.size, 0);
  t.equal(c.misses, 2);
});

t.test('eviction order is the LRU order whatever path answered', async (t) => {
  const { c } = cache(3);
  c.set('A', { n: 1 }, undefined);
  c.set('B', { n: 2 }, undefined);
  c.set('C', { n: 3 }, undefined);
  t.ok(c.get('A'));
  t.ok(c.get('A'), 'repeated');
  c.set('D', { n: 4 }, undefined); // evicts B, the least recently used
  t.ok(c.get('A'));
  t.equal(c.get('B'), undefined);
  t.ok(c.get('C'));
  t.ok(c.get('D'));
  t.ok(c.get('D'));
  c.set('E', { n: 5 }, undefined); // evicts A
  t.equal(c.get('A'), undefined);
  t.ok(c.get('E'));
});

t.test('clear and overwrite are seen by the repeated path', async (t) => {
  const { c } = cache();
  c.set('A', { n: 1 }, undefined);
  t.same(c.get('A')?.claims, { n: 1 });
  c.set('A', { n: 2 }, undefined);
  t.same(c.get('A')?.claims, { n: 2 });
  c.clear();
  t.equal(c.get('A'), undefined);
  const off = new TokenCache({ maxEntries: 0, maxBytes: 1, maxTtlMs: 1000, now: () => 0 });
  off.set('A', {}, undefined);
  t.equal(off.get('A'), undefined, 'disabled cache');
});
