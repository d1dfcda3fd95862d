import t from 'tap';
import { isoFormatter } from '../../../gateway/observability/iso-time.js';

t.test('isoFormatter gives what Date#toISOString gives', async (t) => {
  const iso = isoFormatter();
  const base = Date.UTC(2026, 10, 28, 3, 59, 59, 990);
  const times: number[] = [];
  for (let i = 0; i < 40; i++) times.push(base + i); // across a second boundary
  times.push(base + 5, base + 5, base - 86_400_000, base + 1000, base + 1001, base + 1999, base + 2000);
  times.push(0, 1, 999, 1000, -1, -999, -1000, -1001, 1.7, 1.7, -0.5, 8.64e15, -8.64e15, 253402300799999);
  times.push(253402300800000, Date.UTC(-1, 0, 1), base, base);
  for (const ms of times) t.equal(iso(ms), new Date(ms).toISOString(), String(ms));
  t.throws(() => iso(NaN), RangeError);
  t.throws(() => iso(8.64e15 + 1), RangeError);
  t.equal(iso(base), new Date(base).toISOString(), 'usable after a throw');
});
