/**
 * `_method` overrides, over real TCP (shipped gateway.yaml, real mock): Laravel and Symfony
 * (query, form, JSON), Rails and Express's method-override (form, query) handle a POST whose
 * `_method` names another method as that method. The gateway judged a POST (routes, roles,
 * CSRF, rate limits), so such a request is refused by proto-280 (403 request_blocked) and
 * never reaches the service; an operator whose service relies on overrides excludes the rule.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
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
import { png } from '../../fixtures/uploads/generate.js';

let h: Harness;
let token: string;

t.before(async () => {
  h = await startHarness();
  token = await h.login('alice');
});
t.teardown(() => h.close());

const post = (query: string, contentType: string, body: string | Buffer) =>
  sendMarked(h, token, { method: 'POST', path: '/api/receipts', query, contentType, body });
const reached = (r: MarkedAnswer) => mockSaw(h, r.marker);
const RECEIPT = { merchant: 'Cafe', total: 4.5 };

t.test('a POST whose _method asks for another method is refused and never forwarded', async (t) => {
  const blocked = () =>
    metricsText(h).then((m) => metricValue(m, 'gateway_blocked_requests_total', { reason: 'protocol' }));
  const before = await blocked();
  const cases: [string, string, string, string | Buffer][] = [
    ['query', '&_method=DELETE', 'application/json', JSON.stringify(RECEIPT)],
    [
      'query, name percent-encoded, value in lower case',
      '&%5Fmethod=put',
      'application/json',
      JSON.stringify(RECEIPT),
    ],
    [
      'query, a letter of the name percent-encoded',
      '&_m%65thod=DELETE',
      'application/json',
      JSON.stringify(RECEIPT),
    ],
    [
      'query, `.method` (PHP reads it as `_method`)',
      '&.method=DELETE',
      'application/json',
      JSON.stringify(RECEIPT),
    ],
    ['top-level JSON member', '', 'application/json', JSON.stringify({ ...RECEIPT, _method: 'DELETE' })],
    [
      'JSON member that is not a string',
      '',
      'application/json',
      JSON.stringify({ ...RECEIPT, _method: ['DELETE'] }),
    ],
    ['form field', '', 'application/x-www-form-urlencoded', 'merchant=Cafe&total=4.5&_method=PATCH'],
  ];
  for (const [name, query, type, body] of cases) {
    await t.test(name, async (t) => {
      const r = await post(query, type, body);
      t.equal(r.status, 403, 'status');
      t.equal(r.json.error, 'request_blocked');
      const lines = await auditOf(h, r.requestId);
      const ev = lines.find((l) => l.event === 'request_blocked');
      t.ok(ev, 'audited');
      t.ok((ev?.rule_ids as string[] | undefined)?.includes('proto-280'), 'by proto-280');
      t.notOk(await reached(r), 'the upstream never saw it');
    });
  }
  t.equal((await blocked()) - before, cases.length, 'counted under reason="protocol"');
});

t.test('a multipart _method field on the upload route is refused', async (t) => {
  const marker = `mo-${randomUUID()}`;
  const form = new FormData();
  form.append('_method', 'DELETE');
  form.append('file', new Blob([png()], { type: 'image/png' }), 'r.png');
  const r = await fetch(`${h.url}/api/receipts/upload?m=${marker}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}` },
    body: form,
  });
  t.equal(r.status, 403);
  t.equal(((await r.json()) as Record<string, unknown>).error, 'request_blocked');
  const ev = (await auditOf(h, r.headers.get('x-request-id') ?? undefined)).find(
    (l) => l.event === 'request_blocked',
  );
  t.ok((ev?.rule_ids as string[] | undefined)?.includes('proto-280'), 'by proto-280');
  t.notOk(
    (await h.mockRequests()).some((s) => s.path.includes(marker)),
    'the upstream never saw it',
  );
});

t.test('what is not an override passes', async (t) => {
  const cases: [string, string, string, string][] = [
    ['_method=POST', '&_method=POST', 'application/json', JSON.stringify(RECEIPT)],
    ['a parameter named like it', '&payment_method=card', 'application/json', JSON.stringify(RECEIPT)],
    ['an empty _method', '&_method=', 'application/json', JSON.stringify(RECEIPT)],
    [
      'a nested JSON member',
      '',
      'application/json',
      JSON.stringify({ ...RECEIPT, meta: { _method: 'DELETE' } }),
    ],
  ];
  for (const [name, query, type, body] of cases) {
    await t.test(name, async (t) => {
      const r = await post(query, type, body);
      t.equal(r.status, 201, 'stored');
      t.ok(await reached(r), 'forwarded');
    });
  }
  // a GET is never overridden by the frameworks
  const marker = `mo-${randomUUID()}`;
  const g = await fetch(`${h.url}/api/receipts?m=${marker}&_method=DELETE`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  t.equal(g.status, 200, 'a GET with _method passes');
  t.ok(
    (await h.mockRequests()).some((s) => s.path.includes(marker)),
    'and is forwarded',
  );
});

t.test('an exclusion of proto-280 on a route lets the override through', async (t) => {
  const h2 = await startHarness({
    config:
      'policies:\n  pattern_block:\n    exclusions:\n      - routes: [api]\n        rules: [proto-280]\n',
  });
  t.teardown(() => h2.close());
  const tok = await h2.login('alice');
  const r = await fetch(`${h2.url}/api/receipts?_method=PUT`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${tok}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(RECEIPT),
  });
  t.equal(r.status, 201);
});
