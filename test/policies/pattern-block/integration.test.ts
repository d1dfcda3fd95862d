import t from 'tap';
import http from 'node:http';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { startHarness } from '../../helpers/harness.js';

/** Over real TCP: 403 request_blocked, nothing reaches the mock, audit and metric carry the family. */
t.test('a SQL injection in a JSON body is refused and audited; benign receipts pass', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const auth = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
  await h.clearMock();

  const bad = await fetch(`${h.url}/api/receipts`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({ merchant: "x' UNION SELECT password FROM users--", total: 1 }),
  });
  t.equal(bad.status, 403);
  const body = (await bad.json()) as Record<string, string>;
  t.equal(body.error, 'request_blocked');
  t.notOk(JSON.stringify(body).includes('UNION'), 'the client never sees the payload or rule ids');

  const good = await fetch(`${h.url}/api/receipts`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({
      merchant: "O'Brien's Pub & Grill",
      total: 42.17,
      notes: 'Order by phone; Union Square location',
    }),
  });
  t.equal(good.status, 201);

  const seen = await h.mockRequests();
  t.equal(
    seen.filter((r) => r.method === 'POST' && r.path === '/api/receipts').length,
    1,
    'only the benign POST reached the upstream',
  );

  const audit = await h.audit();
  const ev = audit.find(
    (e) =>
      e.event === 'request_blocked' &&
      Array.isArray(e.rule_ids) &&
      (e.rule_ids as string[]).includes('sqli-100'),
  );
  t.ok(ev, 'request_blocked audit event with the rule ids');
  const detail = (ev?.detail ?? {}) as {
    score?: number;
    families?: Record<string, number>;
    matches?: { target: string; excerpt: string }[];
  };
  t.ok((detail.score ?? 0) >= 5);
  t.ok((detail.families?.sqli ?? 0) >= 5);
  t.ok(detail.matches?.some((m) => m.target === 'json:merchant' && m.excerpt.length <= 40));

  const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
  t.match(metrics, /gateway_blocked_requests_total\{reason="sqli"\} [1-9]/);
});

t.test('path traversal in the query of a GET is refused before authentication', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const r = await fetch(`${h.url}/api/receipts?file=..%2F..%2Fetc%2Fpasswd`);
  t.equal(r.status, 403);
  t.equal(((await r.json()) as Record<string, string>).error, 'request_blocked');
  t.same(await h.mockRequests(), []);
  const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
  t.match(metrics, /gateway_blocked_requests_total\{reason="path_traversal"\} [1-9]/);
});

t.test('monitor mode for a pack lets the request through', async (t) => {
  const h = await startHarness({ config: 'policies:\n  pattern_block:\n    packs: { xss: monitor }\n' });
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const r = await fetch(`${h.url}/api/receipts`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ merchant: '<img src=x onerror=alert(1)>', total: 1 }),
  });
  t.equal(r.status, 201, 'a monitored pack does not block');
  const seen = await h.mockRequests();
  t.ok(seen.some((x) => x.method === 'POST' && x.path === '/api/receipts'));
});

/** A compressed body would be inspected as compressed bytes: refused, whatever it holds (proto-173). */
t.test('a body sent with a content coding is refused and never forwarded', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const token = await h.login('alice');
  await h.clearMock();
  const json = JSON.stringify({ merchant: 'Corner Cafe', total: 4.5 });
  const post = (headers: Record<string, string>, body: Buffer | string, chunked = false) =>
    new Promise<number>((resolve, reject) => {
      const req = http.request(`${h.url}/api/receipts`, {
        method: 'POST',
        headers: {
          Authorization: `Bearer ${token}`,
          'Content-Type': 'application/json',
          ...(chunked
            ? { 'Transfer-Encoding': 'chunked' }
            : { 'Content-Length': String(Buffer.byteLength(body)) }),
          ...headers,
        },
        agent: false,
      });
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      req.on('error', reject);
      req.end(body);
    });
  t.equal(await post({ 'Content-Encoding': 'gzip' }, gzipSync(json)), 403, 'gzip, with Content-Length');
  t.equal(await post({ 'Content-Encoding': 'br' }, brotliCompressSync(json), true), 403, 'br, chunked');
  t.equal(await post({ 'Content-Encoding': 'identity' }, json), 201, 'identity is no coding');
  t.equal(await post({}, json), 201);
  const seen = (await h.mockRequests()).filter((r) => r.method === 'POST' && r.path === '/api/receipts');
  t.equal(seen.length, 2, 'only the two uncoded bodies reached the upstream');
  const blocked = (await h.audit()).filter((e) => e.event === 'request_blocked');
  t.equal(blocked.length, 2);
  for (const e of blocked) t.same(e.rule_ids, ['proto-173']);
});

/**
 * A reload whose exclusion names a rule id prefix that matches no rule is refused with the
 * key path and the id; the previous configuration (its working exclusion) stays in force.
 */
t.test('a reload with an unknown rule id in an exclusion is refused; the old one stays', async (t) => {
  const good = `policies:
  pattern_block:
    exclusions:
      - paths: [/api/receipts]
        rules: [sqli-1*]
`;
  const h = await startHarness({ config: good });
  t.teardown(() => h.close());
  const token = await h.login('alice');
  // sqli-100, sqli-110 and sqli-140 find this query: the exclusion drops all three
  const get = async () =>
    (
      await fetch(`${h.url}/api/receipts?q=1%27%20UNION%20SELECT%20password%20FROM%20users--`, {
        headers: { Authorization: `Bearer ${token}` },
      })
    ).status;
  t.equal(await get(), 200, 'excluded by the loaded configuration');
  const before = h.gateway.generation.id;

  await t.rejects(
    h.reload(good.replace('sqli-1*', 'sqli-1O*')),
    {
      message:
        /policies\.pattern_block\.exclusions\[0\]\.rules\[0\]: rule id prefix "sqli-1O\*" matches no rule of the loaded packs/,
    },
    'the reload is refused, naming the key path and the prefix',
  );
  t.equal(h.gateway.generation.id, before, 'the generation is unchanged');
  t.equal(await get(), 200, 'the old exclusion is still in force');
  const refused = (await h.audit()).filter((e) => e.event === 'config_reload' && e.result === 'error');
  t.match(
    refused.map((e) => e.errors),
    [[/exclusions\[0\]\.rules\[0\]: rule id prefix "sqli-1O\*" matches no rule/]],
    'the refused reload is audited with the error',
  );

  // without the exclusion the same request is refused: the 200 above was the old exclusion
  await h.reload('policies:\n  pattern_block:\n    exclusions: []\n');
  t.equal(await get(), 403);
});
