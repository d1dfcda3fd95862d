import t, { type Test } from 'tap';
import http from 'node:http';
import net from 'node:net';
import {
  startHarness,
  startFileHarness,
  mark,
  mockSaw,
  auditOf,
  metricsText,
  metricValue,
  type Harness,
} from '../helpers/harness.js';
import { rawExchange, head, parseResponses, type RawResponse } from '../helpers/raw-http.js';
import { isGatewayError } from '../helpers/gateway-errors.js';
import { eventually } from '../helpers/wait.js';

/**
 * A request whose head was accepted but whose body then breaks HTTP/1.1 framing (chunked
 * coding errors) or ends early: Node's parser reports it after the request was handed to the
 * gateway. The gateway answers it as NGINX does — 400 bad_request, `Connection: close`, after
 * the requests pipelined before it — audits and counts it once, and the upstream never gets it
 * as a complete request (not at all when the body is buffered for inspection; aborted when it
 * was already streaming).
 */

/** The shipped config in front of the mock: the body of POST /api/receipts is buffered for inspection. */
const { h, token } = await startFileHarness(t);

/** The gateway's own 400 bad_request, as for the other framing errors, announcing the close. */
function isBadRequest(t: Test, r: RawResponse | undefined): void {
  isGatewayError(t, r, 400, 'bad_request');
  if (!r) return;
  t.equal(r.headers.connection, 'close', 'Connection: close');
}

/** Its refusal is audited as request_blocked with the parser's error code, and nothing else is. */
async function auditedOnce(t: Test, gw: Harness, r: RawResponse | undefined, marker: string): Promise<void> {
  const lines = (await auditOf(gw, r?.headers['x-request-id'])).filter((l) => l.event !== 'auth_success');
  t.equal(lines.length, 1, 'one audit line for the request (no api_access 499 besides)');
  const a = lines[0];
  t.equal(a?.event, 'request_blocked');
  t.equal(a?.status, 400);
  t.equal(a?.code, 'bad_request');
  t.equal(a?.reason, 'protocol');
  t.equal(a?.method, 'POST');
  t.ok(String(a?.path).includes(marker), 'the path of the request');
  t.match(a?.rule_ids, [/^parser:HPE_[A-Z_]+$/], "the parser's error code");
}

/** An authenticated JSON POST to /api/receipts?p=marker, with these framing headers. */
function receiptHead(marker: string, framing: readonly (readonly [string, string])[], auth?: string): string {
  return head(`POST /api/receipts?p=${marker} HTTP/1.1`, [
    ['Host', 'x'],
    auth !== undefined ? ['X-API-Key', auth] : ['Authorization', `Bearer ${token}`],
    ['Content-Type', 'application/json'],
    ...framing,
  ]);
}
const CHUNKED = [['Transfer-Encoding', 'chunked']] as const;

interface BrokenCase {
  readonly name: string;
  /** the chunked body, broken somewhere */
  readonly body: string;
  /** the parser's error code, where llhttp's choice is not an implementation detail */
  readonly rule?: string;
}

const BROKEN: BrokenCase[] = [
  {
    name: 'a chunk size that is not hex',
    body: 'zz\r\n{"a":1}\r\n0\r\n\r\n',
    rule: 'parser:HPE_INVALID_CHUNK_SIZE',
  },
  { name: 'chunk data longer than its size', body: '3\r\n{"a":1}\r\n0\r\n\r\n' },
  { name: 'no CRLF after the chunk data', body: '7\r\n{"a":1}X0\r\n\r\n' },
  { name: 'a control character in a chunk extension', body: '7;\x01\r\n{"a":1}\r\n0\r\n\r\n' },
  { name: 'an unterminated quoted chunk extension', body: '7;a="x\r\n{"a":1}\r\n0\r\n\r\n' },
  {
    name: 'a chunk size over 64 bits',
    body: 'fffffffffffffffff1\r\n{"a":1}\r\n0\r\n\r\n',
    rule: 'parser:HPE_INVALID_CHUNK_SIZE',
  },
  {
    name: 'a negative chunk size',
    body: '-7\r\n{"a":1}\r\n0\r\n\r\n',
    rule: 'parser:HPE_INVALID_CHUNK_SIZE',
  },
  { name: 'a bare LF after the chunk size', body: '7\n{"a":1}\r\n0\r\n\r\n' },
  { name: 'a malformed trailer field', body: '7\r\n{"a":1}\r\n0\r\nBad Trailer: x\r\n\r\n' },
];

t.test(
  'a chunked body that breaks its framing: 400, connection closed, audited, never forwarded',
  async (t) => {
    for (const c of BROKEN) {
      // all at once (the request is still in its checks when the parser fails), or a good
      // first chunk, a pause, then the rest (the gateway is reading the body to inspect it)
      for (const split of [false, true]) {
        await t.test(`${c.name}${split ? ', after a good first chunk' : ''}`, async (t) => {
          const m = mark();
          const first = '2\r\n{"\r\n';
          const payload = split
            ? [receiptHead(m, CHUNKED) + first, c.body]
            : receiptHead(m, CHUNKED) + c.body;
          const x = await rawExchange(h.url, payload, { pauseMs: 100 });
          t.equal(x.responses.length, 1, 'one answer');
          isBadRequest(t, x.responses[0]);
          t.ok(x.closed, 'the connection is closed');
          await auditedOnce(t, h, x.responses[0], m);
          if (c.rule !== undefined) {
            const [a] = await auditOf(h, x.responses[0]?.headers['x-request-id']).then((l) =>
              l.filter((e) => e.event === 'request_blocked'),
            );
            t.same(a?.rule_ids, [c.rule]);
          }
          t.notOk(await mockSaw(h, m), 'the upstream never saw the request');
          const ok = await fetch(`${h.url}/api/health`);
          t.equal(ok.status, 200, 'the gateway still serves');
          await ok.arrayBuffer();
        });
      }
    }
  },
);

t.test('counted once, as a refused 400 of its route', async (t) => {
  const labels = { route: 'api', method: 'POST' };
  const before = await metricsText(h);
  const x = await rawExchange(h.url, receiptHead(mark(), CHUNKED) + 'zz\r\n');
  isBadRequest(t, x.responses[0]);
  const after = await metricsText(h);
  const delta = (name: string, l: Record<string, string>) =>
    metricValue(after, name, l) - metricValue(before, name, l);
  t.equal(delta('gateway_requests_total', { ...labels, code: '400', decision: 'deny' }), 1);
  t.equal(delta('gateway_requests_total', { ...labels, code: '499' }), 0, 'no 499 besides');
  t.equal(delta('gateway_blocked_requests_total', { reason: 'protocol' }), 1);
  t.equal(delta('gateway_audit_events_total', { event: 'request_blocked' }), 1);
});

t.test('pipelined: the requests before the broken one are answered first, in order', async (t) => {
  const m = mark();
  const body = `{"merchant":"Cafe ${m}","total":12.5,"date":"2024-01-01"}`;
  const get = head(`GET /api/health?p=${m}-1 HTTP/1.1`, [['Host', 'x']]);
  const post = receiptHead(`${m}-2`, [['Content-Length', String(Buffer.byteLength(body))]]) + body;
  const broken = `${receiptHead(`${m}-3`, CHUNKED)}7\r\n{"a":1}\r\nzz\r\n`;
  const x = await rawExchange(h.url, get + post + broken);
  t.same(
    x.responses.map((r) => r.status),
    [200, 201, 400],
    'the health check, the receipt created, then the refusal',
  );
  isBadRequest(t, x.responses[2]);
  t.ok(x.closed, 'then the connection closes');
  const ids = new Set(x.responses.map((r) => r.headers['x-request-id']));
  t.equal(ids.size, 3, 'three requests, three ids');
  await auditedOnce(t, h, x.responses[2], `${m}-3`);
  const seen = (await h.mockRequests()).filter((r) => r.path.includes(m)).map((r) => r.path);
  t.same(seen, [`/api/health?p=${m}-1`, `/api/receipts?p=${m}-2`], 'the first two were forwarded once each');
  // the same with the broken bytes arriving later, while the first answers are on their way
  const n = mark();
  const y = await rawExchange(
    h.url,
    [
      head(`GET /api/health?p=${n}-1 HTTP/1.1`, [['Host', 'x']]) + receiptHead(`${n}-2`, CHUNKED),
      '7\r\n{"a":1}\r\n',
      'zz\r\n',
    ],
    { pauseMs: 100 },
  );
  t.same(
    y.responses.map((r) => r.status),
    [200, 400],
  );
  isBadRequest(t, y.responses[1]);
  t.ok(y.closed);
  t.notOk(await mockSaw(h, `${n}-2`), 'the broken request never reached the upstream');
});

t.test('a body that ends early (the client half-closes): 400, never forwarded', async (t) => {
  const cases = [
    { name: 'Content-Length larger than what is sent', framing: [['Content-Length', '100']], body: '{"a":1' },
    { name: 'chunked, no last chunk', framing: CHUNKED, body: '6\r\n{"a":1\r\n' },
    { name: 'Content-Length, no body at all', framing: [['Content-Length', '10']], body: '' },
  ] as const;
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const m = mark();
      const x = await rawExchange(h.url, receiptHead(m, c.framing) + c.body, { keepOpen: false });
      t.equal(x.responses.length, 1, 'one answer');
      isBadRequest(t, x.responses[0]);
      t.equal(x.responses[0]?.json?.message, 'The request body was not received completely.');
      t.ok(x.closed);
      await auditedOnce(t, h, x.responses[0], m);
      const [a] = (await auditOf(h, x.responses[0]?.headers['x-request-id'])).filter(
        (l) => l.event === 'request_blocked',
      );
      t.same(a?.rule_ids, ['parser:HPE_INVALID_EOF_STATE']);
      t.notOk(await mockSaw(h, m), 'the upstream never saw the request');
    });
  }
});

// ------------------------------------------------------------------ a body already streaming upstream

interface Seen {
  readonly path: string;
  bytes: number;
  /** the whole body arrived */
  ended: boolean;
  /** the connection closed before the whole body arrived */
  aborted: boolean;
}

t.test('a body already streaming to the upstream: the upstream request is aborted', async (t) => {
  const seen: Seen[] = [];
  const upstream = http.createServer((req, res) => {
    const s: Seen = { path: req.url ?? '', bytes: 0, ended: false, aborted: false };
    seen.push(s);
    // /api/early answers at once, before reading the body
    if (s.path.startsWith('/api/early')) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial answer');
    }
    req.on('data', (d: Buffer) => (s.bytes += d.length));
    req.on('end', () => {
      s.ended = true;
      if (!res.headersSent) res.writeHead(201, { 'content-type': 'application/json' });
      res.end('{}');
    });
    req.on('error', () => {});
    req.on('close', () => {
      if (!req.complete) s.aborted = true;
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    upstream.closeAllConnections();
    return new Promise<void>((r) => upstream.close(() => r()));
  });
  const API_KEY = 'broken-body-test-key-0123456789';
  // without pattern_block no policy reads the body: it is streamed to the upstream as it comes
  const gw = await startHarness({
    upstreamUrl: `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`,
    env: { API_KEY },
    config: 'policies:\n  pattern_block: { enabled: false }\n',
  });
  t.teardown(() => gw.close());

  /** A raw connection: write, look at what came back so far, wait for the close. */
  async function connect(): Promise<{ socket: net.Socket; text: () => string; closed: () => boolean }> {
    const u = new URL(gw.url);
    const socket = net.connect(Number(u.port), u.hostname);
    const chunks: Buffer[] = [];
    let closed = false;
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => {});
    socket.on('close', () => (closed = true));
    await new Promise<void>((r) => socket.once('connect', () => r()));
    t.teardown(() => socket.destroy());
    return { socket, text: () => Buffer.concat(chunks).toString('latin1'), closed: () => closed };
  }

  await t.test('no answer started: 400, and the upstream request is aborted', async (t) => {
    const m = mark();
    const before = await metricsText(gw);
    const c = await connect();
    c.socket.write(receiptHead(m, CHUNKED, API_KEY) + '7\r\n{"a":1}\r\n');
    await eventually('the first chunk reached the upstream', () =>
      seen.some((s) => s.path.includes(m) && s.bytes === 7),
    );
    c.socket.write('zz\r\n');
    await eventually('the gateway closed the connection', c.closed, 10_000);
    const { responses } = parseResponses(Buffer.from(c.text(), 'latin1'), true);
    t.equal(responses.length, 1, 'one answer');
    isBadRequest(t, responses[0]);
    const s = seen.find((x) => x.path.includes(m));
    await eventually('the upstream request ended', () => s?.aborted === true || s?.ended === true, 10_000);
    t.ok(s?.aborted, 'the upstream request was aborted');
    t.notOk(s?.ended, 'never completed as if the body were whole');
    t.equal(s?.bytes, 7, 'only the good chunk reached it');
    await auditedOnce(t, gw, responses[0], m);
    const after = await metricsText(gw);
    const delta = (l: Record<string, string>) =>
      metricValue(after, 'gateway_requests_total', l) - metricValue(before, 'gateway_requests_total', l);
    t.equal(delta({ route: 'api', method: 'POST', code: '400', decision: 'deny' }), 1);
    t.equal(delta({ route: 'api', method: 'POST', code: '499' }), 0, 'no 499 besides');
  });

  await t.test('the answer started (the upstream answered early): the connection is closed', async (t) => {
    const m = mark();
    const c = await connect();
    c.socket.write(
      head(`POST /api/early?p=${m} HTTP/1.1`, [
        ['Host', 'x'],
        ['X-API-Key', API_KEY],
        ['Content-Type', 'application/json'],
        ['Transfer-Encoding', 'chunked'],
      ]) + '7\r\n{"a":1}\r\n',
    );
    await eventually('the upstream answer began', () => c.text().includes('partial answer'));
    c.socket.write('zz\r\n');
    await eventually('the gateway closed the connection', c.closed, 10_000);
    t.match(c.text(), /^HTTP\/1\.1 200 /, "the upstream's answer, cut off");
    t.notMatch(c.text(), /HTTP\/1\.1 400/, 'no second answer');
    const s = seen.find((x) => x.path.includes(m));
    await eventually('the upstream request ended', () => s?.aborted === true || s?.ended === true, 10_000);
    t.ok(s?.aborted, 'the upstream request was aborted');
    t.notOk(s?.ended);
  });

  const ok = await fetch(`${gw.url}/api/health`);
  t.equal(ok.status, 201, 'the gateway still serves (the stand-in answers 201)');
  await ok.arrayBuffer();
});
