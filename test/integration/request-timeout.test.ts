import t, { type Test } from 'tap';
import {
  startHarness,
  startFileHarness,
  mark,
  auditOf,
  metricsText,
  metricValue,
  type Harness,
} from '../helpers/harness.js';
import { rawExchange, head, type RawResponse } from '../helpers/raw-http.js';
import { hasSecurityHeaders } from '../helpers/gateway-errors.js';
import { eventually } from '../helpers/wait.js';

/**
 * A request whose head was accepted but whose body stalls (Content-Length: 100, 10 bytes,
 * then nothing) until `listen.request_timeout`: the gateway answers 408 request_timeout with
 * `Connection: close` (as Envoy, HAProxy and Node's own server do) instead of closing without a
 * word, audits and counts it once, and the upstream never gets the request whole (not at all
 * when the body is buffered for inspection or spooled; aborted when it was streaming).
 * A head that stalls is cut by `listen.header_timeout` without an answer (no request exists).
 */

const TIMEOUTS = 'listen:\n  header_timeout: 1s\n  request_timeout: 1s\n';
const API_KEY = 'request-timeout-test-key-0123456789';

/** The shipped config (bodies of POST /api/receipts buffered for inspection), 1 s to send a request. */
const { h, token } = await startFileHarness(t, { config: TIMEOUTS });

/** The head of an authenticated JSON POST to `path`?p=marker announcing 100 bytes of body. */
function stalledHead(path: string, marker: string, auth: 'jwt' | 'api_key' = 'jwt'): string {
  return head(`POST ${path}?p=${marker} HTTP/1.1`, [
    ['Host', 'x'],
    auth === 'jwt' ? ['Authorization', `Bearer ${token}`] : ['X-API-Key', API_KEY],
    ['Content-Type', 'application/json'],
    ['Content-Length', '100'],
  ]);
}
/** 10 of the 100 bytes announced. */
const TEN_BYTES = '{"total":1';

/** The gateway's own 408 request_timeout, announcing the close. */
function isRequestTimeout(t: Test, r: RawResponse | undefined): void {
  t.ok(r, 'a response came back');
  if (!r) return;
  t.equal(r.status, 408, 'status');
  t.equal(r.reason, 'Request Timeout', 'reason phrase');
  t.same(
    r.json,
    {
      error: 'request_timeout',
      message: 'The request body was not received in time.',
      request_id: r.headers['x-request-id'],
    },
    'the SPEC error shape, nothing else',
  );
  t.equal(r.headers['content-type'], 'application/json; charset=utf-8');
  t.equal(r.headers['cache-control'], 'no-store');
  hasSecurityHeaders(t, r);
  t.equal(r.headers.connection, 'close', 'Connection: close');
}

/** Audited once, as request_blocked with the timeout; no other line for the request (no 400, no 499). */
async function auditedOnce(t: Test, gw: Harness, r: RawResponse | undefined, marker: string): Promise<void> {
  const lines = (await auditOf(gw, r?.headers['x-request-id'])).filter((l) => l.event !== 'auth_success');
  t.equal(lines.length, 1, 'one audit line for the request');
  const a = lines[0];
  t.equal(a?.event, 'request_blocked');
  t.equal(a?.decision, 'deny');
  t.equal(a?.status, 408);
  t.equal(a?.code, 'request_timeout');
  t.equal(a?.reason, 'timeout');
  t.equal(a?.method, 'POST');
  t.ok(String(a?.path).includes(marker), 'the path of the request');
  t.same(a?.rule_ids, ['request-timeout']);
  t.same(a?.detail, { timeout_ms: 1000 }, 'the timeout that expired');
}

async function stillServes(t: Test, gw: Harness): Promise<void> {
  const ok = await fetch(`${gw.url}/api/health`);
  t.equal(ok.status, 200, 'the gateway still serves');
  await ok.arrayBuffer();
}

t.test(
  'a buffered body that stalls: 408, connection closed, audited and counted once, never forwarded',
  async (t) => {
    const m = mark();
    const before = await metricsText(h);
    const x = await rawExchange(h.url, stalledHead('/api/receipts', m) + TEN_BYTES, { waitMs: 15_000 });
    t.equal(x.responses.length, 1, 'one answer');
    isRequestTimeout(t, x.responses[0]);
    t.ok(x.closed, 'the connection is closed');
    await auditedOnce(t, h, x.responses[0], m);
    const after = await metricsText(h);
    const delta = (name: string, l: Record<string, string>) =>
      metricValue(after, name, l) - metricValue(before, name, l);
    const route = { route: 'api', method: 'POST' };
    t.equal(delta('gateway_requests_total', { ...route, code: '408', decision: 'deny' }), 1, 'one 408');
    t.equal(delta('gateway_requests_total', route), 1, 'nothing else (no 400, no 499) for it');
    t.equal(delta('gateway_blocked_requests_total', { reason: 'timeout' }), 1);
    t.equal(delta('gateway_blocked_requests_total', {}), 1, 'no other block reason');
    t.equal(delta('gateway_audit_events_total', { event: 'request_blocked' }), 1);
    t.notOk(
      (await h.mockRequests()).some((r) => r.path.includes(m)),
      'the upstream never saw the request',
    );
    await stillServes(t, h);
  },
);

t.test('pipelined behind a complete request: that one is answered first, then the 408', async (t) => {
  const m = mark();
  const get = head(`GET /api/health?p=${m}-1 HTTP/1.1`, [['Host', 'x']]);
  const x = await rawExchange(h.url, get + stalledHead('/api/receipts', `${m}-2`) + TEN_BYTES, {
    waitMs: 15_000,
  });
  t.same(
    x.responses.map((r) => r.status),
    [200, 408],
  );
  isRequestTimeout(t, x.responses[1]);
  t.ok(x.closed, 'then the connection closes');
  await auditedOnce(t, h, x.responses[1], `${m}-2`);
  const seen = (await h.mockRequests()).filter((r) => r.path.includes(m)).map((r) => r.path);
  t.same(seen, [`/api/health?p=${m}-1`], 'only the complete request was forwarded');
});

t.test('a spooled upload that stalls: 408, never forwarded', async (t) => {
  const m = mark();
  const boundary = 'xTimeoutBoundary';
  const x = await rawExchange(
    h.url,
    head(`POST /api/receipts/upload?p=${m} HTTP/1.1`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Content-Type', `multipart/form-data; boundary=${boundary}`],
      ['Content-Length', '1000'],
    ]) +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="r.png"\r\n` +
      'Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n',
    { waitMs: 15_000 },
  );
  t.equal(x.responses.length, 1, 'one answer');
  isRequestTimeout(t, x.responses[0]);
  t.ok(x.closed);
  await auditedOnce(t, h, x.responses[0], m);
  t.notOk(
    (await h.mockRequests()).some((r) => r.path.includes(m)),
    'the upstream never saw the upload',
  );
});

t.test('a body sent in pieces within request_timeout is forwarded (control case)', async (t) => {
  const m = mark();
  const body = `{"merchant":"Cafe ${m}","total":12.5,"date":"2024-01-01"}`;
  const x = await rawExchange(
    h.url,
    [
      head(`POST /api/receipts?p=${m} HTTP/1.1`, [
        ['Host', 'x'],
        ['Authorization', `Bearer ${token}`],
        ['Content-Type', 'application/json'],
        ['Content-Length', String(Buffer.byteLength(body))],
        ['Connection', 'close'],
      ]) + body.slice(0, 10),
      body.slice(10),
    ],
    { pauseMs: 100 },
  );
  t.same(
    x.responses.map((r) => r.status),
    [201],
  );
  const rec = (await h.mockRequests()).find((r) => r.path.includes(m));
  t.equal(rec?.body_size, Buffer.byteLength(body), 'the whole body reached the upstream');
});

t.test('an unfinished head is cut by header_timeout without an answer (no request exists)', async (t) => {
  const m = mark();
  const before = (await h.audit()).length;
  const x = await rawExchange(h.url, `POST /api/receipts?p=${m} HTTP/1.1\r\nHost: x\r\nContent-Le`, {
    waitMs: 15_000,
  });
  t.ok(x.closed, 'the gateway closed the connection');
  t.equal(x.raw, '', 'nothing was written');
  t.notOk(
    (await h.audit()).slice(before).some((l) => String(l.path ?? '').includes(m)),
    'no audit line names it',
  );
  await stillServes(t, h);
});

t.test('a body already streaming to the upstream: 408, the upstream request is aborted', async (t) => {
  // without pattern_block no policy reads the body of POST /api/receipts: it streams upstream
  const gw = await startHarness({
    env: { API_KEY },
    config: `${TIMEOUTS}policies:\n  pattern_block: { enabled: false }\n`,
  });
  t.teardown(() => gw.close());
  const m = mark();
  const before = await metricsText(gw);
  const x = await rawExchange(gw.url, stalledHead('/api/receipts', m, 'api_key') + TEN_BYTES, {
    waitMs: 15_000,
  });
  t.equal(x.responses.length, 1, 'one answer');
  isRequestTimeout(t, x.responses[0]);
  t.ok(x.closed);
  await auditedOnce(t, gw, x.responses[0], m);
  await eventually('the upstream recorded the request', async () =>
    (await gw.mockRequests()).some((r) => r.path.includes(m)),
  );
  const rec = (await gw.mockRequests()).find((r) => r.path.includes(m)) as
    { body_size: number; body_error?: string } | undefined;
  t.equal(rec?.body_error, 'aborted', 'the upstream request was aborted, never completed');
  t.equal(rec?.body_size, 10, 'only the 10 bytes sent reached it');
  const after = await metricsText(gw);
  const delta = (l: Record<string, string>) =>
    metricValue(after, 'gateway_requests_total', l) - metricValue(before, 'gateway_requests_total', l);
  t.equal(delta({ route: 'api', method: 'POST', code: '408', decision: 'deny' }), 1);
  t.equal(delta({ route: 'api', method: 'POST' }), 1, 'no 499 or 502 besides');
  await stillServes(t, gw);
});
