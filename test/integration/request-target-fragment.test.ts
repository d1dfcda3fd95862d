import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runReplay } from '../../gateway/commands/replay.js';
import {
  startFileHarness,
  mark,
  mockSaw,
  auditOf,
  metricsText,
  metricValue,
  REPO,
  TEST_SECRET,
} from '../helpers/harness.js';
import { rawExchange, head, type RawResponse } from '../helpers/raw-http.js';
import { hasSecurityHeaders } from '../helpers/gateway-errors.js';

/**
 * A request target with a fragment (`POST /api/auth/login#x HTTP/1.1`) is not HTTP/1.1
 * (RFC 9112 §3.2); Node's parser accepts it, and it used to be forwarded as received, routed
 * on the path with its fragment (the login route missed: `/api/**` judged it) while the
 * service drops the fragment. It is refused with 400 bad_request after the request checks,
 * never forwarded; `%23` (an encoded `#`) is an ordinary character and passes.
 */

const { h, token } = await startFileHarness(t);

function isFragmentRefusal(t: Test, r: RawResponse | undefined): void {
  t.ok(r, 'a response came back');
  if (!r) return;
  t.equal(r.status, 400, 'status');
  t.same(
    r.json,
    {
      error: 'bad_request',
      message: 'The request target must not contain a fragment (#).',
      request_id: r.headers['x-request-id'],
    },
    'the SPEC error shape, nothing else',
  );
  hasSecurityHeaders(t, r);
}

async function auditedAsBadRequest(t: Test, r: RawResponse | undefined, route: string): Promise<void> {
  const lines = (await auditOf(h, r?.headers['x-request-id'])).filter((l) => l.event !== 'auth_success');
  t.equal(lines.length, 1, 'one audit line for the request');
  t.equal(lines[0]?.event, 'request_blocked');
  t.equal(lines[0]?.code, 'bad_request');
  t.equal(lines[0]?.reason, 'protocol');
  t.equal(lines[0]?.status, 400);
  t.equal(lines[0]?.route, route, 'routed on the path without its fragment');
  t.same(lines[0]?.rule_ids, ['request-target-fragment']);
}

t.test('POST /api/auth/login#x: 400 bad_request, audited and counted, never forwarded', async (t) => {
  const m = mark();
  const body = JSON.stringify({ username: 'alice', password: 'alice-secret-pw' });
  const before = await metricsText(h);
  const x = await rawExchange(
    h.url,
    head(`POST /api/auth/login#${m} HTTP/1.1`, [
      ['Host', 'x'],
      ['X-Probe', m],
      ['Content-Type', 'application/json'],
      ['Content-Length', String(Buffer.byteLength(body))],
      ['Connection', 'close'],
    ]) + body,
  );
  t.equal(x.responses.length, 1, 'one answer');
  isFragmentRefusal(t, x.responses[0]);
  await auditedAsBadRequest(t, x.responses[0], 'login');
  const after = await metricsText(h);
  const delta = (name: string, l: Record<string, string>) =>
    metricValue(after, name, l) - metricValue(before, name, l);
  t.equal(
    delta('gateway_requests_total', { route: 'login', method: 'POST', code: '400', decision: 'deny' }),
    1,
  );
  t.equal(delta('gateway_requests_total', {}), 1, 'counted once');
  t.equal(delta('gateway_blocked_requests_total', { reason: 'protocol' }), 1);
  t.notOk(await mockSaw(h, m), 'the upstream never saw it');
});

t.test('a fragment anywhere in the target is refused, never forwarded', async (t) => {
  const cases: [string, string, string][] = [
    ['after the query', '/api/receipts?merchant=cafe&p=MARK#frag', 'api'],
    ['an empty fragment', '/api/receipts?p=MARK#', 'api'],
    ['before a question mark', '/api/receipts#MARK?merchant=cafe', 'api'],
    ['on a public route', '/api/health?p=MARK#x', 'health'],
    ['on no route', '/nothing-MARK#x', 'unmatched'],
    ['in an absolute-form target', 'http://x.example/api/health?p=MARK#x', 'health'],
  ];
  for (const [name, target, route] of cases) {
    await t.test(name, async (t) => {
      const m = mark();
      const x = await rawExchange(
        h.url,
        head(`GET ${target.replace('MARK', m)} HTTP/1.1`, [
          ['Host', 'x'],
          ['Authorization', `Bearer ${token}`],
          ['X-Probe', m],
          ['Connection', 'close'],
        ]),
      );
      t.equal(x.responses.length, 1, 'one answer');
      isFragmentRefusal(t, x.responses[0]);
      await auditedAsBadRequest(t, x.responses[0], route);
      t.notOk(await mockSaw(h, m), 'the upstream never saw it');
    });
  }
});

t.test('the checks run first: an attack carrying a fragment is refused as the attack (403)', async (t) => {
  const m = mark();
  const x = await rawExchange(
    h.url,
    head(`GET /api/receipts?p=${m}&q=1%27%20OR%201=1--#x HTTP/1.1`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Connection', 'close'],
    ]),
  );
  t.equal(x.responses[0]?.status, 403);
  t.equal(x.responses[0]?.json?.error, 'request_blocked');
  t.notOk(await mockSaw(h, m), 'the upstream never saw it');
  const y = await rawExchange(
    h.url,
    head(`GET /api/receipts?p=${m}#x HTTP/1.1`, [
      ['Host', 'x'],
      ['Connection', 'close'],
    ]),
  );
  t.equal(y.responses[0]?.status, 401, 'no credentials on a JWT route: 401 first');
  t.notOk(await mockSaw(h, m), 'the upstream never saw it');
});

t.test('the connection stays usable: a pipelined request after the refusal is answered', async (t) => {
  const m = mark();
  const x = await rawExchange(
    h.url,
    head(`GET /api/health?p=${m}-1#x HTTP/1.1`, [['Host', 'x']]) +
      head(`GET /api/health?p=${m}-2 HTTP/1.1`, [
        ['Host', 'x'],
        ['Connection', 'close'],
      ]),
  );
  t.same(
    x.responses.map((r) => r.status),
    [400, 200],
  );
  const seen = (await h.mockRequests()).filter((r) => r.path.includes(m)).map((r) => r.path);
  t.same(seen, [`/api/health?p=${m}-2`], 'only the second was forwarded');
});

t.test('an encoded hash (%23) is an ordinary character and is forwarded as sent', async (t) => {
  const m = mark();
  const x = await rawExchange(
    h.url,
    head(`GET /api/health?p=${m}&tag=%23receipts HTTP/1.1`, [
      ['Host', 'x'],
      ['Connection', 'close'],
    ]),
  );
  t.equal(x.responses[0]?.status, 200, 'in the query');
  const rec = (await h.mockRequests()).find((r) => r.path.includes(m));
  t.equal(rec?.path, `/api/health?p=${m}&tag=%23receipts`);
  const y = await rawExchange(
    h.url,
    head(`GET /api/receipts/${m}%23x HTTP/1.1`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Connection', 'close'],
    ]),
  );
  t.equal(y.responses[0]?.status, 404, 'in the path: the service answers (no such receipt)');
  const rec2 = (await h.mockRequests()).find((r) => r.path.includes(`${m}%23x`));
  t.equal(rec2?.path, `/api/receipts/${m}%23x`, 'forwarded with %23 kept');
});

t.test('replay decides the same: the fragment refused with 400, after the checks', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-fragment-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'req.jsonl');
  const row = (id: string, p: string) =>
    JSON.stringify({
      id,
      method: 'GET',
      path: p,
      headers: { Host: 'x', 'User-Agent': 'curl/8' },
      body: null,
    });
  fs.writeFileSync(
    file,
    [
      row('fragment', '/api/health#x'),
      row('attack', "/api/health?q=1'%20UNION%20SELECT%20password%20FROM%20users--#x"),
      row('encoded', '/api/health?tag=%23x'),
    ].join('\n'),
  );
  let out = '';
  const code = await runReplay(
    ['--config', path.join(REPO, 'gateway.yaml'), '--requests', file, '--format', 'jsonl'],
    { write: (s: string) => (out += s) },
    { write: () => true },
    { JWT_SECRET_KEY: TEST_SECRET },
  );
  t.equal(code, 0);
  const got = out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { id: string; code: string | null; status: number; rule_ids: string[] });
  t.same(got[0], {
    id: 'fragment',
    decision: 'deny',
    code: 'bad_request',
    status: 400,
    rule_ids: ['request-target-fragment'],
  });
  t.equal(got[1]?.code, 'request_blocked', 'the attack is judged as one');
  t.equal(got[1]?.status, 403);
  t.equal(got[2]?.code, null, '%23 passes');
  t.equal(got[2]?.status, 200);
});
