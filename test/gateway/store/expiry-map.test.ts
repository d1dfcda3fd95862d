import t from 'tap';
import { ExpiryMap } from '../../../gateway/store/expiry-map.js';

const e = (expiresAt: number) => ({ expiresAt });

t.test('full: a new key pushes out the entry ending soonest, whatever was read', async (t) => {
  const m = new ExpiryMap<{ expiresAt: number }>(3);
  m.set('a', e(600));
  m.set('b', e(100));
  m.set('c', e(300));
  // reads do not count: b, read last, still goes first
  for (let i = 0; i < 5; i++) t.ok(m.get('b'));
  m.set('d', e(200));
  t.same(
    [...m.entries()].map(([k]) => k),
    ['a', 'c', 'd'],
    'b (ending at 100) went',
  );
  m.set('e', e(50));
  t.same(
    [...m.entries()].map(([k]) => k),
    ['a', 'c', 'e'],
    'then d (200); a new entry always goes in',
  );
  t.equal(m.size, 3);
});

t.test(
  'a key given a new value keeps its place and evicts nothing; its old end no longer counts',
  async (t) => {
    const m = new ExpiryMap<{ expiresAt: number }>(2);
    m.set('a', e(100));
    m.set('b', e(200));
    m.set('a', e(900));
    t.equal(m.size, 2);
    m.set('c', e(500));
    t.same(
      [...m.entries()].map(([k]) => k),
      ['a', 'c'],
      'b went: a ends at 900 now, not at 100',
    );
    t.equal(m.delete('a'), true);
    m.set('d', e(50));
    t.same(
      [...m.entries()].map(([k]) => k),
      ['c', 'd'],
      'room again after a delete: nothing evicted',
    );
  },
);

t.test('matches a naive model over a long random run (stale heap nodes, rebuilds)', async (t) => {
  const max = 50;
  const m = new ExpiryMap<{ expiresAt: number }>(max);
  const model = new Map<string, number>();
  // a small deterministic generator: the run is the same every time
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  let mismatches = 0;
  for (let i = 0; i < 20_000; i++) {
    const key = `k${rand(120)}`;
    const op = rand(10);
    if (op < 7) {
      // distinct ends, so that "the soonest" is one entry
      const end = rand(1_000_000) * 100_000 + i;
      if (!model.has(key) && model.size >= max) {
        let soonest: string | undefined;
        for (const [k, v] of model) if (soonest === undefined || v < model.get(soonest)!) soonest = k;
        model.delete(soonest!);
      }
      model.set(key, end);
      m.set(key, e(end));
    } else if (op < 9) {
      if (m.delete(key) !== model.delete(key)) mismatches++;
    } else if (m.get(key)?.expiresAt !== model.get(key)) mismatches++;
    if (m.size !== model.size) mismatches++;
  }
  t.equal(mismatches, 0);
  t.same(
    [...m.entries()].map(([k, v]) => [k, v.expiresAt]).sort(),
    [...model.entries()].sort(),
    'the same entries in the end',
  );
});

t.test('a bad bound is refused', async (t) => {
  t.throws(() => new ExpiryMap(0), /positive integer/);
  t.throws(() => new ExpiryMap(1.5), /positive integer/);
});
