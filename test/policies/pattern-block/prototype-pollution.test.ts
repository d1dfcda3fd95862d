/**
 * Prototype pollution through a JSON body, over real TCP (shipped gateway.yaml, real mock).
 * `{"constructor": {"prototype": {…}}}` is what a deep merge (lodash's defaultsDeep,
 * CVE-2019-10744) writes into Object.prototype, and a JSON Patch path
 * `/constructor/prototype/…` does the same through patch libraries (fast-json-patch,
 * CVE-2021-4279); each key alone is an ordinary word, so no value rule saw them. Both are
 * refused (403 request_blocked, node-110 and node-100, reason `nodejs`) and never forwarded;
 * the same words elsewhere pass.
 */
import t from 'tap';
import {
  startHarness,
  auditOf,
  metricsText,
  metricValue,
  mockSaw,
  sendMarked,
  type Harness,
  type MarkedAnswer,
} from '../../helpers/harness.js';

let h: Harness;
let token: string;

t.before(async () => {
  h = await startHarness();
  token = await h.login('alice');
});
t.teardown(() => h.close());

const send = (method: string, path: string, contentType: string, body: string) =>
  sendMarked(h, token, { method, path, contentType, body });
const reached = (r: MarkedAnswer) => mockSaw(h, r.marker);

t.test('constructor.prototype in a JSON body or a JSON Patch path is refused, never forwarded', async (t) => {
  const blocked = () =>
    metricsText(h).then((m) => metricValue(m, 'gateway_blocked_requests_total', { reason: 'nodejs' }));
  const before = await blocked();
  const cases: [string, string, string, string, string, string][] = [
    [
      'nested members',
      'POST',
      '/api/receipts',
      'application/json',
      JSON.stringify({ merchant: 'Cafe', total: 4.5, constructor: { prototype: { isAdmin: true } } }),
      'node-110',
    ],
    [
      'nested deeper, in an array',
      'POST',
      '/api/receipts',
      'application/json',
      JSON.stringify({
        merchant: 'Cafe',
        total: 4.5,
        items: [{ meta: { constructor: { prototype: { x: 1 } } } }],
      }),
      'node-110',
    ],
    [
      'a JSON Patch path',
      'PATCH',
      '/api/receipts/1',
      'application/json-patch+json',
      JSON.stringify([{ op: 'add', path: '/constructor/prototype/isAdmin', value: true }]),
      'node-100',
    ],
  ];
  for (const [name, method, path, type, body, rule] of cases) {
    await t.test(name, async (t) => {
      const r = await send(method, path, type, body);
      t.equal(r.status, 403, 'status');
      t.equal(r.json.error, 'request_blocked');
      const ev = (await auditOf(h, r.requestId)).find((l) => l.event === 'request_blocked');
      t.ok(ev, 'audited');
      t.ok((ev?.rule_ids as string[] | undefined)?.includes(rule), `by ${rule}`);
      t.equal(ev?.reason, 'nodejs', 'reason nodejs');
      const detail = (ev?.detail ?? {}) as { families?: Record<string, number> };
      t.ok((detail.families?.nodejs ?? 0) >= 5, 'scored under nodejs');
      t.notOk(await reached(r), 'the upstream never saw it');
    });
  }
  t.equal((await blocked()) - before, cases.length, 'counted under reason="nodejs"');
});

t.test('the same words elsewhere pass', async (t) => {
  const cases: [string, string][] = [
    [
      'members side by side',
      JSON.stringify({ merchant: 'Cafe', total: 4.5, constructor: 'Bob', prototype: 'v2' }),
    ],
    [
      'prototype under an array',
      JSON.stringify({ merchant: 'Cafe', total: 4.5, constructor: [{ prototype: 1 }] }),
    ],
    [
      'in prose',
      JSON.stringify({
        merchant: 'Constructor Ltd',
        total: 4.5,
        notes: 'prototype review, constructor fees',
      }),
    ],
  ];
  for (const [name, body] of cases) {
    await t.test(name, async (t) => {
      const r = await send('POST', '/api/receipts', 'application/json', body);
      t.equal(r.status, 201, 'stored');
      t.ok(await reached(r), 'forwarded');
    });
  }
});
