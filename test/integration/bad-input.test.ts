import t, { type Test } from 'tap';
import http from 'node:http';
import net from 'node:net';
import fc from 'fast-check';
import { startHarness, startFileHarness, mark, mockSaw } from '../helpers/harness.js';
import { rawExchange, head, type RawExchange } from '../helpers/raw-http.js';
import { isGatewayError } from '../helpers/gateway-errors.js';
import { eventually } from '../helpers/wait.js';

/**
 * Malformed and hostile requests over raw sockets against the real gateway and the real
 * mock: each gets a 4xx SPEC JSON error or a closed connection, never a 500 or a crash,
 * and the mock's record proves the refused request never reached it.
 */

const { h, token } = await startFileHarness(t, {
  config: `
listen:
  header_timeout: 1s
  request_timeout: 60s
`,
});

/** After every hostile request: the gateway still serves, and the refused request never reached the mock. */
async function stillServes(t: Test, marker: string | undefined): Promise<void> {
  const ok = await fetch(`${h.url}/api/health`);
  t.equal(ok.status, 200, 'the gateway still serves');
  await ok.arrayBuffer();
  if (marker !== undefined) t.notOk(await mockSaw(h, marker), 'the mock never saw the refused request');
}

function never500(t: Test, x: RawExchange): void {
  for (const r of x.responses) t.ok(r.status < 500, `no 5xx (got ${r.status})`);
}

// ------------------------------------------------------------------ framing and smuggling

interface FramingCase {
  readonly name: string;
  /** the request; MARK is replaced by a fresh marker (smuggled requests carry it too) */
  readonly payload: string;
  readonly status: number;
  readonly code: string;
}

const SMUGGLED = 'GET /api/health?smuggled=MARK HTTP/1.1\r\nHost: x\r\nX-Probe: MARK\r\n\r\n';

const FRAMING: FramingCase[] = [
  {
    name: 'Content-Length and Transfer-Encoding together (CL.TE)',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nContent-Length: ${5 + SMUGGLED.length}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'Transfer-Encoding before Content-Length (TE.CL)',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n${SMUGGLED.length.toString(16)}\r\n${SMUGGLED}\r\n0\r\n\r\n`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'Transfer-Encoding: gzip (not chunked)',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'Transfer-Encoding: gzip, chunked (a coding the gateway does not forward)',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'Transfer-Encoding: chunked, identity',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'TE.TE: Transfer-Encoding: xchunked',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'TE.TE: Transfer-Encoding : chunked (space before the colon)',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'TE.TE: two Transfer-Encoding headers (chunked, then x)',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'TE.TE: vertical tab before chunked',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'TE.TE: Transfer-Encoding folded onto the previous line (obs-fold)',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nX-Pad: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'TE.TE: Transfer-Encoding with a NUL byte',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'two Content-Length headers with different values',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: ${5 + SMUGGLED.length}\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'Content-Length list "5, 50"',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 50\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'Content-Length with a sign',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n0\r\n\r\n`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'negative Content-Length',
    payload: `POST /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'malformed chunk size',
    payload: `POST /api/echo-headers?p=MARK HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'a bare LF inside a header value',
    payload: `GET /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nX-Evil: a\nTransfer-Encoding: chunked\r\n\r\n`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'a header name with a space',
    payload: `GET /api/health?p=MARK HTTP/1.1\r\nHost: x\r\nX Evil: a\r\n\r\n`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'two Host headers',
    payload: `GET /api/health?p=MARK HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n${SMUGGLED}`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'HTTP/0.9 request line',
    payload: `GET /api/health?p=MARK\r\n\r\n`,
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'HTTP/2.0 in an HTTP/1 request line',
    payload: `GET /api/health?p=MARK HTTP/2.0\r\nHost: x\r\n\r\n`,
    status: 400,
    code: 'bad_request',
  },
];

t.test('framing attacks and request smuggling: 400, connection closed, nothing forwarded', async (t) => {
  for (const c of FRAMING) {
    await t.test(c.name, async (t) => {
      const m = mark();
      const x = await rawExchange(h.url, c.payload.replaceAll('MARK', m).replace('TOKEN', token));
      never500(t, x);
      t.equal(x.responses.length, 1, 'exactly one response (the smuggled request is never answered)');
      isGatewayError(t, x.responses[0], c.status, c.code);
      t.ok(x.closed, 'the connection is closed after a framing error');
      await stillServes(t, m);
    });
  }
});

/** An authenticated receipt POST to `/api/receipts?p=marker`: a JSON body, or (`framing`) these framing headers and no body. */
function receiptPost(marker: string, framing?: readonly (readonly [string, string])[]): string {
  const body = `{"merchant":"Cafe ${marker}","total":12.5,"date":"2024-01-01"}`;
  const headers: (readonly [string, string])[] = [
    ['Host', 'x'],
    ['Authorization', `Bearer ${token}`],
    ['Content-Type', 'application/json'],
  ];
  const request = (more: readonly (readonly [string, string])[]) =>
    head(`POST /api/receipts?p=${marker} HTTP/1.1`, [...headers, ...more]);
  return framing !== undefined
    ? request(framing)
    : request([['Content-Length', String(Buffer.byteLength(body))]]) + body;
}

t.test('junk after complete requests: those are answered, then the connection closes', async (t) => {
  // a receipt created, then garbage on the same connection: the client still learns it was created
  const m = mark();
  const x = await rawExchange(h.url, `${receiptPost(m)}X\r\n\r\n`);
  never500(t, x);
  t.equal(x.responses.length, 1, 'one answer: the request before the junk');
  t.equal(x.responses[0]?.status, 201);
  t.ok(x.closed, 'then the connection is closed');
  t.ok(await mockSaw(h, m), 'the request was forwarded once');
  t.equal((await h.mockRequests()).filter((r) => r.path.includes(m)).length, 1);
  // two pipelined requests, then junk: both answered, in order
  const m2 = mark();
  const get = (p: string) => head(`GET /api/health?p=${p} HTTP/1.1`, [['Host', 'x']]);
  const y = await rawExchange(h.url, `${get(`${m2}-1`)}${get(`${m2}-2`)}GARBAGE\r\n\r\n`);
  never500(t, y);
  t.same(
    y.responses.map((r) => r.status),
    [200, 200],
  );
  t.ok(y.closed);
  // a request created, then one whose chunked body is broken: the first is answered, then
  // the broken one gets 400, the connection closes (more in broken-body.test.ts)
  const m3 = mark();
  const broken = receiptPost(`${m3}-broken`, [['Transfer-Encoding', 'chunked']]);
  const z = await rawExchange(h.url, `${receiptPost(m3)}${broken}zz\r\n`);
  never500(t, z);
  t.same(
    z.responses.map((r) => r.status),
    [201, 400],
    'the complete request is answered, then the broken one',
  );
  isGatewayError(t, z.responses[1], 400, 'bad_request');
  t.ok(z.closed);
  t.equal(
    (await h.mockRequests()).filter((r) => r.path.includes(m3)).length,
    1,
    'only the first was forwarded',
  );
  // a GET, then a request with a transfer coding the gateway refuses: 200, then 400, then closed
  const m4 = mark();
  const te = receiptPost(`${m4}-te`, [['Transfer-Encoding', 'gzip']]);
  const w = await rawExchange(h.url, `${get(`${m4}-1`)}${te}0\r\n\r\n`, { waitMs: 15_000 });
  never500(t, w);
  t.same(
    w.responses.map((r) => r.status),
    [200, 400],
  );
  t.ok(w.closed, 'closed, without waiting for a timeout');
  t.notOk(await mockSaw(h, `${m4}-te`), 'the refused request was not forwarded');
  await stillServes(t, undefined);
});

t.test(
  'a request refused after an asynchronous check still stops the requests pipelined behind it',
  async (t) => {
    // a bad JWT (checked asynchronously) and a chunked body (unknown length): 401, and the
    // connection closes; the health check behind it passes its own checks at once, but must
    // never be forwarded
    for (let i = 0; i < 5; i++) {
      const m = mark();
      const refused = head('POST /api/receipts HTTP/1.1', [
        ['Host', 'x'],
        [
          'Authorization',
          'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
        ],
        ['Content-Type', 'application/json'],
        ['Transfer-Encoding', 'chunked'],
      ]);
      const behind = head(`GET /api/health?p=${m} HTTP/1.1`, [['Host', 'x']]);
      const x = await rawExchange(h.url, `${refused}7\r\n{"a":1}\r\n0\r\n\r\n${behind}`);
      never500(t, x);
      t.same(
        x.responses.map((r) => r.status),
        [401],
      );
      t.ok(x.closed);
      t.notOk(await mockSaw(h, m), 'the request behind it never reached the upstream');
    }
    await stillServes(t, undefined);
  },
);

t.test('a chunked request that is well-formed is forwarded with its body (control case)', async (t) => {
  const m = mark();
  const body = '{"merchant":"Cafe","total":12.5,"date":"2024-01-01"}';
  const chunked = `${(20).toString(16)}\r\n${body.slice(0, 20)}\r\n${(body.length - 20).toString(16)}\r\n${body.slice(20)}\r\n0\r\n\r\n`;
  const x = await rawExchange(
    h.url,
    head(`POST /api/receipts?p=${m} HTTP/1.1`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Content-Type', 'application/json'],
      ['Transfer-Encoding', 'chunked'],
      ['Connection', 'close'],
    ]) + chunked,
  );
  t.equal(x.responses[0]?.status, 201);
  const rec = (await h.mockRequests()).find((r) => r.path.includes(m));
  t.ok(rec, 'forwarded');
  t.equal(rec?.body_size, body.length, 'whole body forwarded');
  t.notOk(
    rec?.headers['transfer-encoding'] === 'chunked' && rec?.headers['content-length'] !== undefined,
    'never both framings upstream',
  );
});

// ------------------------------------------------------------------ sizes

t.test('one huge header: 431 headers_too_large', async (t) => {
  const m = mark();
  const x = await rawExchange(
    h.url,
    head(`GET /api/health?p=${m} HTTP/1.1`, [
      ['Host', 'x'],
      ['X-Big', 'a'.repeat(20_000)],
    ]),
  );
  never500(t, x);
  isGatewayError(t, x.responses[0], 431, 'headers_too_large');
  t.ok(x.closed);
  await stillServes(t, m);
});

t.test('refusals by the HTTP parser are audited and counted like any other', async (t) => {
  const before = await (await fetch(`${h.adminUrl}/metrics`)).text();
  const count = (text: string, reason: string) =>
    Number(
      new RegExp(`^gateway_blocked_requests_total\\{reason="${reason}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0,
    );
  const big = await rawExchange(
    h.url,
    head('GET /api/health HTTP/1.1', [
      ['Host', 'x'],
      ['X-Big', 'a'.repeat(20_000)],
    ]),
  );
  const bad = await rawExchange(
    h.url,
    head('GET /api/health HTTP/1.1', [
      ['Host', 'x'],
      ['Bad Name', 'x'],
    ]),
  );
  const after = await (await fetch(`${h.adminUrl}/metrics`)).text();
  t.equal(count(after, 'size') - count(before, 'size'), 1, 'gateway_blocked_requests_total{reason="size"}');
  t.equal(
    count(after, 'protocol') - count(before, 'protocol'),
    1,
    'gateway_blocked_requests_total{reason="protocol"}',
  );
  const audit = await h.audit();
  const a = audit.find((l) => l.request_id === big.responses[0]?.headers['x-request-id']);
  t.equal(a?.event, 'request_blocked');
  t.equal(a?.status, 431);
  t.equal(a?.client_ip, '127.0.0.1');
  t.same(a?.rule_ids, ['parser:HPE_HEADER_OVERFLOW']);
  const b = audit.find((l) => l.request_id === bad.responses[0]?.headers['x-request-id']);
  t.equal(b?.event, 'request_blocked');
  t.equal(b?.status, 400);
  t.equal(b?.code, 'bad_request');
});

t.test('many headers adding up past max_header_size: 431', async (t) => {
  const m = mark();
  const hs: [string, string][] = [['Host', 'x']];
  for (let i = 0; i < 90; i++) hs.push([`X-H${i}`, 'v'.repeat(200)]);
  const x = await rawExchange(h.url, head(`GET /api/health?p=${m} HTTP/1.1`, hs));
  never500(t, x);
  isGatewayError(t, x.responses[0], 431, 'headers_too_large');
  await stillServes(t, m);
});

t.test('too many header lines (over listen.max_headers, default 100): 431', async (t) => {
  const m = mark();
  const hs: [string, string][] = [
    ['Host', 'x'],
    ['Connection', 'close'],
  ];
  for (let i = 0; i < 150; i++) hs.push([`X-N${i}`, '1']);
  const x = await rawExchange(h.url, head(`GET /api/health?p=${m} HTTP/1.1`, hs));
  never500(t, x);
  isGatewayError(t, x.responses[0], 431, 'headers_too_large');
  t.equal(x.responses[0]?.json?.message, 'Too many request headers.');
  await stillServes(t, m);
});

t.test('exactly max_headers header lines are accepted', async (t) => {
  const hs: [string, string][] = [
    ['Host', 'x'],
    ['Connection', 'close'],
  ];
  for (let i = 0; i < 98; i++) hs.push([`X-N${i}`, '1']);
  const x = await rawExchange(h.url, head('GET /api/health HTTP/1.1', hs));
  t.equal(x.responses[0]?.status, 200);
});

t.test('URL longer than size_limit.max_uri (8KB): 414 uri_too_long', async (t) => {
  const m = mark();
  const x = await rawExchange(
    h.url,
    head(`GET /api/health?p=${m}&pad=${'a'.repeat(10_000)} HTTP/1.1`, [
      ['Host', 'x'],
      ['Connection', 'close'],
    ]),
  );
  never500(t, x);
  isGatewayError(t, x.responses[0], 414, 'uri_too_long');
  await stillServes(t, m);
});

t.test('URL longer than the whole head limit (16KB): 431 from the parser', async (t) => {
  const m = mark();
  const x = await rawExchange(
    h.url,
    head(`GET /api/health?p=${m}&pad=${'a'.repeat(20_000)} HTTP/1.1`, [['Host', 'x']]),
  );
  never500(t, x);
  isGatewayError(t, x.responses[0], 431, 'headers_too_large');
  await stillServes(t, m);
});

t.test('body over max_body with Content-Length: 413 before the body is sent', async (t) => {
  const m = mark();
  // Only the head is written: the answer must come without the gateway reading any body.
  const x = await rawExchange(
    h.url,
    head(`POST /api/receipts?p=${m} HTTP/1.1`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Content-Type', 'application/json'],
      ['Content-Length', String(2 * 1024 * 1024)],
    ]),
    { responses: 1 },
  );
  never500(t, x);
  isGatewayError(t, x.responses[0], 413, 'payload_too_large');
  await stillServes(t, m);
});

/** Stream a chunked body of `total` bytes in 64 KB chunks until the response arrives. */
function streamChunked(
  path: string,
  total: number,
  headers: Record<string, string>,
  base = h.url,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: u.port,
      method: 'POST',
      path,
      headers: { ...headers, 'transfer-encoding': 'chunked' },
    });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: JSON.parse(Buffer.concat(parts).toString('utf8')) as Record<string, unknown>,
        }),
      );
      res.on('error', reject);
    });
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    const chunk = Buffer.alloc(64 * 1024, 'a');
    let sent = 0;
    const pump = () => {
      while (!answered && sent < total) {
        sent += chunk.length;
        if (!req.write(chunk)) {
          req.once('drain', pump);
          return;
        }
      }
      if (!answered) req.end();
    };
    pump();
  });
}

t.test(
  'chunked body over max_body without Content-Length: 413 while streaming, never a complete request upstream',
  async (t) => {
    const m = mark();
    const r = await streamChunked(`/api/receipts?p=${m}`, 3 * 1024 * 1024, {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
    });
    t.equal(r.status, 413);
    t.equal(r.body.error, 'payload_too_large');
    const recs = (await h.mockRequests()).filter((x) => x.path.includes(m));
    // Either buffered and refused before forwarding, or cut off mid-stream: never a whole body.
    for (const rec of recs) {
      t.ok(rec.body_size <= 1024 * 1024, 'no more than max_body reached the upstream');
      t.equal((rec as { body_error?: string }).body_error, 'aborted', 'the upstream saw the request cut off');
    }
    await stillServes(t, undefined);
  },
);

t.test(
  'size_limit disabled: a body buffered for inspection is still capped (64 MB), never forwarded',
  async (t) => {
    const hh = await startHarness({ config: 'policies:\n  size_limit:\n    enabled: false\n' });
    t.teardown(() => hh.close());
    const tok = await hh.login();
    const m = mark();
    const r = await streamChunked(
      `/api/echo-headers?p=${m}`,
      70 * 1024 * 1024,
      { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
      hh.url,
    );
    t.equal(r.status, 413);
    t.equal(r.body.error, 'payload_too_large');
    t.notOk(
      (await hh.mockRequests()).some((x) => x.path.includes(m)),
      'never reached the mock',
    );
    const ok = await fetch(`${hh.url}/api/health`);
    t.equal(ok.status, 200, 'still serving');
  },
);

// ------------------------------------------------------------------ encoding of the target

// Invalid percent-encoding is a protocol violation the request-inspection policy refuses
// (403 request_blocked, as a WAF answers, before any routing decision).
const TARGETS: [string, string][] = [
  ['invalid percent-encoding in the path', '/api/health%zz?p=MARK'],
  ['truncated percent-encoding in the path', '/api/health%2?p=MARK'],
  ['percent sign at the end of the query', '/api/health?p=MARK&q=%'],
  ['invalid percent-encoding in the query', '/api/health?p=MARK&q=%zz'],
  ['overlong UTF-8 "/" (path)', '/api/%c0%afhealth?p=MARK'],
  ['IIS %u escape', '/api/health?p=MARK&q=%u0027'],
];

// Well-formed escapes of bytes that are not UTF-8 are not a protocol violation (URIs carry
// bytes); like NGINX, the gateway forwards them untouched, for the service to judge.
const FORWARDED: [string, string][] = [
  ['encoded bytes that are not UTF-8 (query)', '/api/health?p=MARK&q=%ff%fe'],
  ['UTF-16 surrogate encoded as UTF-8 (query)', '/api/health?p=MARK&q=%ed%a0%80'],
];

t.test(
  'invalid percent-encoding in path or query: refused, not forwarded; non-UTF-8 escapes forwarded as sent',
  async (t) => {
    for (const [name, target] of TARGETS) {
      await t.test(name, async (t) => {
        const m = mark();
        const x = await rawExchange(
          h.url,
          head(`GET ${target.replace('MARK', m)} HTTP/1.1`, [
            ['Host', 'x'],
            ['Authorization', `Bearer ${token}`],
            ['Connection', 'close'],
          ]),
        );
        never500(t, x);
        isGatewayError(t, x.responses[0], 403, 'request_blocked');
        await stillServes(t, m);
      });
    }
    for (const [name, target] of FORWARDED) {
      await t.test(name, async (t) => {
        const m = mark();
        const x = await rawExchange(
          h.url,
          head(`GET ${target.replace('MARK', m)} HTTP/1.1`, [
            ['Host', 'x'],
            ['Connection', 'close'],
          ]),
        );
        never500(t, x);
        t.equal(x.responses[0]?.status, 200, 'forwarded');
        t.ok(await mockSaw(h, m), 'the mock saw it');
      });
    }
    await t.test('raw non-UTF-8 bytes in the target: 400 from the parser', async (t) => {
      const m = mark();
      const x = await rawExchange(
        h.url,
        Buffer.concat([
          Buffer.from(`GET /api/health?p=${m}&q=`),
          Buffer.from([0xff, 0xfe]),
          Buffer.from(' HTTP/1.1\r\nHost: x\r\n\r\n'),
        ]),
      );
      never500(t, x);
      isGatewayError(t, x.responses[0], 400, 'bad_request');
      await stillServes(t, m);
    });
    await t.test('valid UTF-8 escapes are forwarded as they are (control case)', async (t) => {
      const m = mark();
      const x = await rawExchange(
        h.url,
        head(`GET /api/health?p=${m}&q=Caf%C3%A9 HTTP/1.1`, [
          ['Host', 'x'],
          ['Connection', 'close'],
        ]),
      );
      t.equal(x.responses[0]?.status, 200);
      const rec = (await h.mockRequests()).find((r) => r.path.includes(m));
      t.equal(rec?.path, `/api/health?p=${m}&q=Caf%C3%A9`);
    });
  },
);

// ------------------------------------------------------------------ methods and targets

t.test('absurd methods', async (t) => {
  await t.test('an unknown token method: 400 from the parser', async (t) => {
    const m = mark();
    const x = await rawExchange(h.url, head(`FOOBAR /api/health?p=${m} HTTP/1.1`, [['Host', 'x']]));
    never500(t, x);
    isGatewayError(t, x.responses[0], 400, 'bad_request');
    await stillServes(t, m);
  });
  await t.test('a 10 KB method name', async (t) => {
    const m = mark();
    const x = await rawExchange(
      h.url,
      head(`${'G'.repeat(10_000)} /api/health?p=${m} HTTP/1.1`, [['Host', 'x']]),
    );
    never500(t, x);
    t.ok(x.closed);
    if (x.responses[0]) t.ok(x.responses[0].status === 400 || x.responses[0].status === 431);
    await stillServes(t, m);
  });
  await t.test('a lowercase method', async (t) => {
    const m = mark();
    const x = await rawExchange(h.url, head(`get /api/health?p=${m} HTTP/1.1`, [['Host', 'x']]));
    never500(t, x);
    isGatewayError(t, x.responses[0], 400, 'bad_request');
    await stillServes(t, m);
  });
  await t.test('a method that is a token but no HTTP method (|GET): 400 bad_request', async (t) => {
    const m = mark();
    const x = await rawExchange(h.url, head(`|GET /api/health?p=${m} HTTP/1.1`, [['Host', 'x']]));
    never500(t, x);
    isGatewayError(t, x.responses[0], 400, 'bad_request');
    await stillServes(t, m);
  });
  for (const method of ['TRACE', 'PROPFIND', 'MKCOL', 'PURGE', 'LINK']) {
    await t.test(`${method} (a method no route can name): 405 method_not_allowed with Allow`, async (t) => {
      const m = mark();
      const x = await rawExchange(
        h.url,
        head(`${method} /api/receipts?p=${m} HTTP/1.1`, [
          ['Host', 'x'],
          ['Authorization', `Bearer ${token}`],
          ['Connection', 'close'],
        ]),
      );
      never500(t, x);
      isGatewayError(t, x.responses[0], 405, 'method_not_allowed');
      t.equal(x.responses[0]?.headers.allow, 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
      await stillServes(t, m);
    });
  }
  await t.test('CONNECT: 400 bad_request, then the connection closes; nothing forwarded', async (t) => {
    const m = mark();
    const x = await rawExchange(
      h.url,
      head(`CONNECT ${m}.example:443 HTTP/1.1`, [['Host', `${m}.example:443`]]) + 'GET / HTTP/1.1\r\n\r\n',
    );
    never500(t, x);
    t.equal(x.responses.length, 1, 'the bytes after the CONNECT head are not read as a request');
    isGatewayError(t, x.responses[0], 400, 'bad_request');
    t.ok(x.closed);
    const line = (await h.audit()).find((l) => l.request_id === x.responses[0]?.headers['x-request-id']);
    t.equal(line?.event, 'request_blocked', 'audited');
    t.equal(line?.method, 'CONNECT');
    t.same(line?.rule_ids, ['request-target']);
    await stillServes(t, m);
  });
});

t.test(
  'a CONNECT or an upgrade pipelined behind a request: that one is answered, then the connection closes',
  async (t) => {
    for (const [what, second] of [
      ['CONNECT', head('CONNECT example.com:443 HTTP/1.1', [['Host', 'example.com:443']])],
      [
        'Upgrade: h2c',
        head('GET /api/health HTTP/1.1', [
          ['Host', 'x'],
          ['Connection', 'Upgrade'],
          ['Upgrade', 'h2c'],
        ]),
      ],
      [
        'a WebSocket upgrade',
        head('GET /api/health HTTP/1.1', [
          ['Host', 'x'],
          ['Connection', 'Upgrade'],
          ['Upgrade', 'websocket'],
          ['Sec-WebSocket-Version', '13'],
          ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
        ]),
      ],
    ] as const) {
      const m = mark();
      const x = await rawExchange(h.url, head(`GET /api/health?p=${m} HTTP/1.1`, [['Host', 'x']]) + second);
      never500(t, x);
      t.equal(x.responses.length, 1, `${what}: only the request before it is answered`);
      t.equal(x.responses[0]?.status, 200, `${what}: the first request's answer`);
      t.ok(x.closed, `${what}: then the connection closes`);
      await stillServes(t, undefined);
    }
  },
);

t.test('a CONNECT or an upgrade behind a slow request, then a reset: the gateway serves on', async (t) => {
  const url = new URL(h.url);
  for (const second of [
    head('CONNECT example.com:443 HTTP/1.1', [['Host', 'example.com:443']]),
    head('GET /api/health HTTP/1.1', [
      ['Host', 'x'],
      ['Connection', 'Upgrade'],
      ['Upgrade', 'h2c'],
    ]),
  ]) {
    for (let i = 0; i < 5; i++) {
      const s = net.connect(Number(url.port), url.hostname);
      s.on('error', () => {});
      await new Promise((r) => s.once('connect', r));
      // the first answer takes 300 ms upstream; the reset comes while it is awaited
      s.write(
        head('GET /api/health HTTP/1.1', [
          ['Host', 'x'],
          ['x-mock-delay-ms', '300'],
        ]) + second,
      );
      await new Promise((r) => setTimeout(r, 20 * i));
      s.resetAndDestroy();
    }
  }
  await new Promise((r) => setTimeout(r, 500));
  await stillServes(t, undefined);
});

t.test('OPTIONS * is answered by the gateway: 204 with Allow; * with another method is a 400', async (t) => {
  const m = mark();
  const x = await rawExchange(
    h.url,
    head('OPTIONS * HTTP/1.1', [
      ['Host', 'x'],
      ['X-Probe', m],
      ['Connection', 'close'],
    ]),
  );
  never500(t, x);
  const r = x.responses[0];
  t.equal(r?.status, 204);
  t.equal(r?.headers.allow, 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
  t.equal(r?.headers['content-length'], undefined, 'a 204 carries no Content-Length');
  t.match(r?.headers['x-request-id'], /^\S+$/);
  t.equal(r?.headers['x-content-type-options'], 'nosniff', 'with the security headers');
  await stillServes(t, m);
  // the request phase still runs on it: a scanner is refused as anywhere else
  const m2 = mark();
  const scanner = await rawExchange(
    h.url,
    head('OPTIONS * HTTP/1.1', [
      ['Host', 'x'],
      ['User-Agent', 'sqlmap/1.7'],
      ['X-Probe', m2],
      ['Connection', 'close'],
    ]),
  );
  isGatewayError(t, scanner.responses[0], 403, 'user_agent_rejected');
  await stillServes(t, m2);
  const m3 = mark();
  const get = await rawExchange(
    h.url,
    head('GET * HTTP/1.1', [
      ['Host', 'x'],
      ['X-Probe', m3],
      ['Connection', 'close'],
    ]),
  );
  isGatewayError(t, get.responses[0], 400, 'bad_request');
  await stillServes(t, m3);
});

t.test('absolute-form targets are routed on their path only', async (t) => {
  const m = mark();
  const x = await rawExchange(
    h.url,
    head(`GET http://evil.example/api/health?p=${m} HTTP/1.1`, [
      ['Host', 'x'],
      ['Connection', 'close'],
    ]),
  );
  t.equal(x.responses[0]?.status, 200);
  const rec = (await h.mockRequests()).find((r) => r.path.includes(m));
  t.equal(rec?.path, `/api/health?p=${m}`, 'the upstream gets origin-form');
  const m2 = mark();
  const y = await rawExchange(
    h.url,
    head(`GET http://evil.example/nothing-${m2} HTTP/1.1`, [
      ['Host', 'x'],
      ['Connection', 'close'],
    ]),
  );
  isGatewayError(t, y.responses[0], 404, 'not_found');
  const z = await rawExchange(
    h.url,
    head(`GET http://evil.example HTTP/1.1`, [
      ['Host', 'x'],
      ['X-Probe', m2],
      ['Connection', 'close'],
    ]),
  );
  isGatewayError(t, z.responses[0], 404, 'not_found');
  await stillServes(t, m2);
});

t.test('a non-http absolute-form target: 400', async (t) => {
  const m = mark();
  const x = await rawExchange(
    h.url,
    head(`GET ftp://evil.example/api/health?p=${m} HTTP/1.1`, [
      ['Host', 'x'],
      ['Connection', 'close'],
    ]),
  );
  never500(t, x);
  t.equal(x.responses[0]?.status, 400);
  await stillServes(t, m);
});

// ------------------------------------------------------------------ slow clients

t.test('slow client: an unfinished head is cut off by listen.header_timeout', async (t) => {
  const m = mark();
  const x = await rawExchange(h.url, `GET /api/health?p=${m} HTTP/1.1\r\nHost: x\r\n`, { waitMs: 20_000 });
  t.ok(x.closed, 'the gateway closed the connection');
  never500(t, x);
  await stillServes(t, m);
});

t.test('slowloris: a header line now and then does not extend header_timeout', async (t) => {
  const m = mark();
  const pieces = [`GET /api/health?p=${m} HTTP/1.1\r\nHost: x\r\n`];
  for (let i = 0; i < 40; i++) pieces.push(`X-Slow-${i}: 1\r\n`);
  const x = await rawExchange(h.url, pieces, { pauseMs: 250, waitMs: 20_000 });
  t.ok(x.closed, 'the gateway closed the connection before the head was complete');
  never500(t, x);
  await stillServes(t, m);
});

t.test('slow body: a request body that stalls is cut off by listen.request_timeout', async (t) => {
  const hh = await startHarness({ config: 'listen: { header_timeout: 1s, request_timeout: 2s }' });
  t.teardown(() => hh.close());
  const token = await hh.login();
  const m = mark();
  const x = await rawExchange(
    hh.url,
    head(`POST /api/receipts?p=${m} HTTP/1.1`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Content-Type', 'application/json'],
      ['Content-Length', '1000'],
    ]) + '{"merchant":',
    { waitMs: 20_000 },
  );
  t.ok(x.closed, 'the gateway closed the connection');
  never500(t, x);
  const recs = (await hh.mockRequests()).filter((r) => r.path.includes(m));
  for (const rec of recs)
    t.equal((rec as { body_error?: string }).body_error, 'aborted', 'never a complete request upstream');
  await stillServes(t, undefined);
});

t.test('max_connections: connections beyond the limit are dropped, the gateway recovers', async (t) => {
  const hh = await startHarness({
    config: 'listen: { max_connections: 3, header_timeout: 60s, request_timeout: 120s }',
  });
  t.teardown(() => hh.close());
  const u = new URL(hh.url);
  // three clients hold their connections with unfinished heads
  const holders = await Promise.all(
    [0, 1, 2].map(
      () =>
        new Promise<net.Socket>((resolve) => {
          const s = net.connect(Number(u.port), u.hostname, () => {
            s.write('GET /api/health HTTP/1.1\r\nHost: x\r\n');
            resolve(s);
          });
          s.on('error', () => {});
        }),
    ),
  );
  await eventually('the gateway counts the held connections', async () => {
    const m = await (await fetch(`${hh.adminUrl}/metrics`)).text();
    return /^gateway_open_connections 3$/m.test(m);
  });
  const m = mark();
  const x = await rawExchange(hh.url, head(`GET /api/health?p=${m} HTTP/1.1`, [['Host', 'x']]), {
    waitMs: 20_000,
  });
  t.ok(x.closed, 'the extra connection was closed');
  t.equal(x.responses.length, 0, 'without being served');
  for (const s of holders) s.destroy();
  await eventually('the gateway serves again once the holders left', async () => {
    try {
      return (await fetch(`${hh.url}/api/health`)).status === 200;
    } catch {
      return false;
    }
  });
  t.notOk(
    (await hh.mockRequests()).some((r) => r.path.includes(m)),
    'the dropped request never reached the mock',
  );
});

// ------------------------------------------------------------------ property-based

const PATH_CHARS = [
  ...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
  ..."-._~!$&'()*+,;=:@/?#[]%",
  '%2e',
  '%2f',
  '%00',
  '%ff',
  '%c0%af',
  '..',
  '//',
  '/./',
  '/../',
  '\u00e9',
  '\u202e',
  '\t',
  '"',
  '<',
  '>',
  '\\',
  '^',
  '`',
  '{',
  '|',
  '}',
];
const pathArb = fc
  .tuple(
    fc.constantFrom('/api/', '/api/receipts/', '/', '/api/health', '/.well-known/', '/api/admin/', ''),
    fc.array(fc.constantFrom(...PATH_CHARS), { maxLength: 40 }),
  )
  .map(([prefix, parts]) => prefix + parts.join(''));

/** One raw request with a marker header; returns the exchange. */
async function probe(
  method: string,
  target: string,
  headers: [string, string][],
  body?: Buffer,
): Promise<{ x: RawExchange; marker: string }> {
  const marker = mark();
  const hs: [string, string][] = [['Host', 'x'], ['X-Probe', marker], ['Connection', 'close'], ...headers];
  if (body !== undefined) hs.push(['Content-Length', String(body.length)]);
  const bytes = Buffer.concat([
    Buffer.from(head(`${method} ${target} HTTP/1.1`, hs), 'latin1'),
    body ?? Buffer.alloc(0),
  ]);
  const x = await rawExchange(h.url, bytes, { waitMs: 10_000, head: method === 'HEAD' });
  return { x, marker };
}

/** For a gateway-made refusal (JSON with request_id), the mock must not have seen the request. */
async function refusedNotForwarded(x: RawExchange, marker: string): Promise<boolean> {
  const r = x.responses[0];
  if (r === undefined) return !(await mockSaw(h, marker));
  if (r.status >= 500) return false;
  if (r.json !== undefined && typeof r.json.request_id === 'string' && r.status >= 400)
    return !(await mockSaw(h, marker));
  return true;
}

t.test('property: random and mutated paths never yield a 5xx or a forwarded refusal', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      pathArb,
      fc.constantFrom('GET', 'POST', 'DELETE', 'OPTIONS', 'HEAD'),
      fc.boolean(),
      async (target, method, auth) => {
        const { x, marker } = await probe(method, target, auth ? [['Authorization', `Bearer ${token}`]] : []);
        if (x.responses.length === 0) return x.closed && !(await mockSaw(h, marker));
        return refusedNotForwarded(x, marker);
      },
    ),
    { numRuns: 150, interruptAfterTimeLimit: 45_000 },
  );
  await stillServes(t, undefined);
  t.pass('ok');
});

const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const headerNameArb = fc.oneof(
  fc.constantFrom(
    'X-Auth-Subject',
    'X-Auth-Roles',
    'X-Auth-Method',
    'Transfer-Encoding',
    'Content-Length',
    'Connection',
    'Upgrade',
    'TE',
    'X-Forwarded-For',
    'X-Request-Id',
    'Origin',
    'User-Agent',
    'Cookie',
    'Authorization',
    'Expect',
    'Host',
  ),
  fc.array(fc.constantFrom(...TOKEN_CHARS), { minLength: 1, maxLength: 20 }).map((a) => a.join('')),
);
const headerValueArb = fc.oneof(
  fc.string({ maxLength: 60 }).map((s) => s.replace(/[\r\n]/g, '')),
  fc.constantFrom(
    'chunked',
    'close, x-probe',
    'keep-alive',
    '0',
    '-1',
    '99999999999999999999',
    'sqlmap/1.7',
    '*',
    'http://evil.example',
    '../../etc/passwd',
    "' OR 1=1 --",
    '100-continue',
  ),
);

t.test('property: random and mutated headers never yield a 5xx or a forwarded refusal', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(headerNameArb, headerValueArb), { maxLength: 8 }),
      fc.boolean(),
      async (headers, auth) => {
        const hs: [string, string][] = headers.filter(([n]) => n.toLowerCase() !== 'x-probe');
        if (auth) hs.push(['Authorization', `Bearer ${token}`]);
        const { x, marker } = await probe('GET', '/api/receipts', hs);
        if (x.responses.length === 0) return x.closed && !(await mockSaw(h, marker));
        if (!(await refusedNotForwarded(x, marker))) return false;
        // identity headers from the client never reach the upstream
        const rec = (await h.mockRequests()).find((r) => r.headers['x-probe'] === marker);
        if (rec && Object.keys(rec.headers).some((k) => k.startsWith('x-auth-') && !auth)) return false;
        return true;
      },
    ),
    { numRuns: 150, interruptAfterTimeLimit: 45_000 },
  );
  await stillServes(t, undefined);
  t.pass('ok');
});

t.test(
  'property: random JSON bodies (and mutated bytes) never yield a 5xx or a forwarded refusal',
  async (t) => {
    const bodyArb = fc.oneof(
      fc.json({ maxDepth: 4 }).map((s) => Buffer.from(s, 'utf8')),
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      fc.tuple(fc.json({ maxDepth: 3 }), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([s, i, b]) => {
        const buf = Buffer.from(s, 'utf8');
        if (buf.length > 0) buf[i % buf.length] = b;
        return buf;
      }),
    );
    await fc.assert(
      fc.asyncProperty(
        bodyArb,
        fc.constantFrom(
          'application/json',
          'application/json; charset=utf-8',
          'text/plain',
          'application/x-www-form-urlencoded',
          'application/merge-patch+json',
        ),
        fc.constantFrom('/api/receipts', '/api/auth/login', '/api/auth/register', '/api/echo-headers'),
        async (body, type, path) => {
          const { x, marker } = await probe(
            'POST',
            path,
            [
              ['Authorization', `Bearer ${token}`],
              ['Content-Type', type],
            ],
            body,
          );
          if (x.responses.length === 0) return x.closed && !(await mockSaw(h, marker));
          return refusedNotForwarded(x, marker);
        },
      ),
      { numRuns: 150, interruptAfterTimeLimit: 45_000 },
    );
    await stillServes(t, undefined);
    t.pass('ok');
  },
);

t.test('no request made the gateway answer 500 and no policy failed', async (t) => {
  const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
  t.notMatch(metrics, /gateway_requests_total\{[^}]*code="500"/, 'no 500 counted');
  t.notMatch(metrics, /gateway_policy_errors_total\{[^}]*\} [1-9]/, 'no policy threw');
});
