import t from 'tap';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Value } from '@sinclair/typebox/value';
import {
  patternBlock,
  engineFromConfig,
  type PatternBlockConfig,
} from '../../../policies/pattern-block/index.js';
import { inspectRequest } from '../../../policies/pattern-block/engine.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/**
 * The clean-value memos hold a few thousand short strings each. A short value cut out of a
 * long string (a query value of an 8 KB target, a cookie of an 8 KB header, a field of a
 * form body) is, in V8, a slice that keeps its whole parent alive: remembering slices let
 * the memos of one engine retain megabytes of old requests (measured: 58 MB for the
 * requests below, about 2 MB once they keep copies). Stated bound: the live heap after the
 * flood grows by less than 8 MB.
 */
const HEAP_GROWTH_LIMIT = 8 * 1024 * 1024;

t.test('the clean-value memos do not keep long requests alive', async (t) => {
  const e = engineFromConfig(Value.Default(patternBlock.schema, {}) as PatternBlockConfig, process.cwd());
  const pad = 'x'.repeat(8000);
  // clean values that spread over the memos' slots (their hash reads the length, the first,
  // the middle and the last two characters)
  const value = (i: number) =>
    `${(i * 7919).toString(36)}-receipt-${i.toString(36)}-w${((i * 31) % 997).toString(36)}`;
  gc();
  const before = process.memoryUsage().heapUsed;
  let denied = 0;
  for (let i = 0; i < 12_000; i++) {
    const v = value(i);
    const get = inspectRequest(e, {
      method: 'GET',
      target: `/api/receipts/${v}?${v}=${v}&q=${v}&pad=${pad}${i}`,
      headers: {
        Host: 'receipts.example.com',
        Accept: 'application/json',
        Cookie: `${v}=${v}; c=${v}; pad=${pad}${i}`,
      },
    });
    const form = inspectRequest(e, {
      method: 'POST',
      target: '/api/login',
      headers: { Host: 'receipts.example.com', 'Content-Type': 'application/x-www-form-urlencoded' },
      body: `${v}=${v}&u=${v}&pad=${pad}${i}`,
    });
    if (get.decision !== 'allow' || form.decision !== 'allow') denied++;
  }
  gc();
  const growth = process.memoryUsage().heapUsed - before;
  t.equal(denied, 0, 'the flood is benign (so every value is remembered)');
  t.ok(growth < HEAP_GROWTH_LIMIT, `live heap grew by ${Math.round(growth / 1048576)} MB (limit 8 MB)`);
  // the engine (and its memos) is still in use: the measurement is not of a collected engine
  const again = inspectRequest(e, {
    method: 'GET',
    target: `/api/receipts/${value(0)}?${value(0)}=${value(0)}`,
    headers: { Host: 'receipts.example.com', Accept: 'application/json' },
  });
  t.equal(again.decision, 'allow');
});

/**
 * The memos are two-way set-associative by a hash of a few code units: recurring values
 * that differ in one place (the day of a date, the number of a category) must not share a
 * pair and evict each other. With a hash of the first, middle and last unit alone, the 28
 * days below fell into ten pairs (at most 20 of them kept) and the 60 categories into twelve.
 */
t.test('recurring values that differ in one place stay remembered', async (t) => {
  const e = engineFromConfig(Value.Default(patternBlock.schema, {}) as PatternBlockConfig, process.cwd());
  const days = Array.from({ length: 28 }, (_, i) => `from=2025-01-${String(i + 1).padStart(2, '0')}`);
  const categories = Array.from({ length: 60 }, (_, i) => `category=meals-${i + 20}`);
  for (const pair of [...days, ...categories]) {
    const v = inspectRequest(e, {
      method: 'GET',
      target: `/api/receipts?${pair}`,
      headers: { Host: 'receipts.example.com', Accept: 'application/json' },
    });
    t.equal(v.decision, 'allow', pair);
  }
  const memo = e.cleanPairs;
  const kept = (list: string[]) => list.filter((p) => memo.holds(memo.hashOf(p), p)).length;
  t.equal(kept(days), days.length, 'every date is remembered');
  t.equal(kept(categories), categories.length, 'every category is remembered');
});

/**
 * Header names are remembered with their plan set and whether they were found clean (one
 * lookup per header): the map is bounded (cleared past 1024 names), and a name with a
 * finding is judged again on every request, whatever else was seen.
 */
t.test('the header-name map stays bounded and never remembers a finding as clean', async (t) => {
  const e = engineFromConfig(Value.Default(patternBlock.schema, {}) as PatternBlockConfig, process.cwd());
  const get = (headers: Record<string, string>) =>
    inspectRequest(e, { method: 'GET', target: '/api/receipts', headers: { Host: 'h.example', ...headers } });
  for (let round = 0; round < 3; round++) {
    t.equal(
      get({ Proxy: 'http://evil' }).matches.some((m) => m.ruleId === 'proto-260'),
      true,
      `Proxy, round ${round}`,
    );
    t.equal(
      get({ 'X-Scanner': '1' }).matches.some((m) => m.ruleId === 'scanner-110'),
      true,
      `X-Scanner, round ${round}`,
    );
    for (let i = 0; i < 1500; i++) get({ [`x-trace-${round}-${i}`]: 'a' });
    t.ok(e.headerNames.size <= 1024, `at most 1024 names (${e.headerNames.size})`);
  }
  t.equal(get({ Accept: 'text/html' }).decision, 'allow');
  t.equal(get({ Accept: 'text/html' }).decision, 'allow');
});
