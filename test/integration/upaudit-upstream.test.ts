import t, { type Test } from 'tap';
import { startHarness, auditOf, metricsText, metricValue, type Harness } from '../helpers/harness.js';
import {
  rawExchange,
  head,
  startRawUpstream,
  type RawResponse,
  type RawUpstream,
} from '../helpers/raw-http.js';

/**
 * A misbehaving upstream, played by a raw TCP server: a response body that fails before its
 * first byte (the client must get a clean 502/504, not a connection closed without an
 * answer), and an upstream that answers before it read the request body (the client's
 * connection must not hang with the rest of the body unread).
 */

/** Each request head the upstream read ("METHOD path"), in order. */
const seen: string[] = [];

let h: Harness;
let upstream: RawUpstream;

t.before(async () => {
  upstream = await startRawUpstream((s, method, path) => {
    seen.push(`${method} ${path}`);
    if (path.startsWith('/u/bad-first-chunk')) {
      // a chunk size no parser accepts, before any byte of content
      s.write(
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nsecret\r\n0\r\n\r\n',
      );
    } else if (path.startsWith('/u/close-after-head')) {
      s.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n');
    } else if (path.startsWith('/u/stall-after-head')) {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n');
    } else if (path.startsWith('/u/early')) {
      // answers from the head alone, keeps the connection, never reads the body
      s.write(
        'HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\ntoo big',
      );
    } else {
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`);
    }
    return path.startsWith('/u/early') ? 'stop-reading' : undefined;
  });
  h = await startHarness({
    upstreamUrl: upstream.url,
    config: `
upstream: { body_timeout: 300ms }
routes:
  - name: up
    methods: [GET, POST]
    path: /u/**
    policies: { auth: { require: [none] }, csrf: { enabled: false }, pattern_block: { enabled: false } }
`,
  });
});

t.teardown(async () => {
  await h.close();
  await upstream.close();
});

const get = (path: string) => head(`GET ${path} HTTP/1.1`, [['Host', 'gw.example']]);

const metric = async (name: string, labels: Record<string, string>): Promise<number> =>
  metricValue(await metricsText(h), name, labels);
const audited = (requestId: string | undefined) => auditOf(h, requestId);

function isCleanError(t: Test, r: RawResponse | undefined, status: number, error: string): void {
  t.equal(r?.status, status, `status ${status}`);
  t.same(
    Object.keys(r?.json ?? {}).sort(),
    ['error', 'message', 'request_id'],
    'the SPEC error body, no detail',
  );
  t.equal(r?.json?.error, error);
  t.equal(r?.json?.request_id, r?.headers['x-request-id'], 'the request id, in the body and the header');
  t.equal(r?.headers['x-content-type-options'], 'nosniff', 'with the security headers');
  t.notOk(r?.body.toString().includes('secret'), 'nothing of the upstream body');
}

t.test('a body that fails before its first byte: a clean 502/504, the connection kept', async (t) => {
  const cases = [
    { path: '/u/bad-first-chunk', status: 502, error: 'bad_gateway', kind: 'reset' },
    { path: '/u/close-after-head', status: 502, error: 'bad_gateway', kind: 'reset' },
    { path: '/u/stall-after-head', status: 504, error: 'gateway_timeout', kind: 'timeout' },
  ];
  for (const c of cases) {
    const before = await metric('gateway_upstream_errors_total', { route: 'up', kind: c.kind });
    const requests = await metric('gateway_requests_total', { route: 'up', code: String(c.status) });
    // a second request pipelined behind it: the connection must stay usable
    const x = await rawExchange(h.url, get(c.path) + get(`/u/after${c.path}`), {
      responses: 2,
      waitMs: 5000,
    });
    t.equal(x.closed, false, `${c.path}: the client connection is not closed`);
    t.equal(x.responses.length, 2, `${c.path}: both answers arrive`);
    t.match(x.raw, new RegExp(`^HTTP/1\\.1 ${c.status} `), `${c.path}: the error is the first thing sent`);
    isCleanError(t, x.responses[0], c.status, c.error);
    t.equal(x.responses[1]?.status, 200);
    t.equal(
      x.responses[1]?.body.toString(),
      `/u/after${c.path}`,
      `${c.path}: the next request gets its own answer`,
    );
    const lines = await audited(x.responses[0]?.headers['x-request-id']);
    t.equal(lines.length, 1, `${c.path}: one audit line`);
    t.equal(lines[0]?.event, 'api_access');
    t.equal(lines[0]?.status, c.status, `${c.path}: audited as the ${c.status} the client got`);
    t.equal(
      await metric('gateway_upstream_errors_total', { route: 'up', kind: c.kind }),
      before + 1,
      `${c.path}: counted as an upstream ${c.kind}`,
    );
    t.equal(await metric('gateway_requests_total', { route: 'up', code: String(c.status) }), requests + 1);
  }
});

t.test(
  'an upstream that answers before it read a large body: its answer, then the connection closes',
  async (t) => {
    const body = 'x'.repeat(600_000);
    const t0 = Date.now();
    const x = await rawExchange(
      h.url,
      [
        head('POST /u/early HTTP/1.1', [
          ['Host', 'gw.example'],
          ['Content-Type', 'application/octet-stream'],
          ['Content-Length', String(body.length)],
        ]),
        body.slice(0, 1000),
        // the rest of the body, then a request the gateway must not serve on this connection
        body.slice(1000) + get('/u/behind-early'),
      ],
      { pauseMs: 200, waitMs: 5000 },
    );
    t.equal(x.responses.length, 1, 'one answer');
    const r = x.responses[0];
    t.equal(r?.status, 413, "the upstream's answer");
    t.equal(r?.body.toString(), 'too big');
    t.equal(r?.headers['x-request-id'] !== undefined, true);
    t.equal(r?.headers.connection, 'close', 'Connection: close: the rest of the body is not read');
    t.equal(x.closed, true, 'the gateway closes the connection');
    // (it hung until listen.request_timeout, 60 s, with the rest of the body unread)
    t.ok(Date.now() - t0 < 4000, 'promptly');
    t.notOk(seen.includes('GET /u/behind-early'), 'the request behind the body never reached the upstream');
    const lines = await audited(r?.headers['x-request-id']);
    t.equal(lines.length, 1);
    t.equal(lines[0]?.status, 413, 'audited with the status the client got');
  },
);
