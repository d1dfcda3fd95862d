import t from 'tap';
import { startHarness, auditOf, metricsText, metricValue, type Harness } from '../helpers/harness.js';
import { eventually } from '../helpers/wait.js';
import {
  rawExchange,
  head,
  startRawUpstream,
  type RawResponse,
  type RawUpstream,
} from '../helpers/raw-http.js';

/**
 * Forwarding against an upstream that answers with exactly the bytes each test chooses
 * (a raw TCP server, no HTTP library on that side): malformed framing, bodyless statuses
 * with framing headers, hop-by-hop fields, bytes after a response. What must the client get?
 */

/** The raw answer for each request path; a path not listed gets a plain 200 "ok". */
const ANSWERS: Record<string, string> = {
  // RFC 9110 §8.6: a 304 may state the Content-Length of the representation it stands for
  '/hostile/304-length': 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 5\r\n\r\n',
  // a 204 must not have Content-Length or content; bytes after the head are not a body
  '/hostile/204-body': 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Kept: yes\r\n\r\nhello',
  '/hostile/two-connection-lines':
    'HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: X-Secret, X-Other\r\nConnection: x-third\r\n' +
    'X-Secret: internal\r\nX-Other: internal\r\nX-Third: internal\r\nX-End-To-End: kept\r\nContent-Length: 2\r\n\r\nok',
  '/hostile/te-gzip': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nCODED',
  '/hostile/te-gzip-chunked':
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nCODED\r\n0\r\n\r\n',
  '/hostile/te-chunked-upper': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nplain\r\n0\r\n\r\n',
  '/hostile/cl-and-te':
    'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  '/hostile/two-lengths': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
  // then the connection closes (below)
  '/hostile/short-body': 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789',
  '/hostile/bad-chunk':
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n',
  // a second, unrequested response on the same keep-alive connection
  '/hostile/extra-bytes':
    'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON',
};
const CLOSE_AFTER = new Set(['/hostile/short-body']);

let h: Harness;
let upstream: RawUpstream;

t.before(async () => {
  // GET requests only: a head is a whole request
  upstream = await startRawUpstream((s, _method, path) => {
    s.write(ANSWERS[path] ?? 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    if (CLOSE_AFTER.has(path)) setTimeout(() => s.end(), 50);
  });
  h = await startHarness({
    upstreamUrl: upstream.url,
    config: `
routes:
  - name: hostile
    methods: [GET]
    path: /hostile/**
    policies: { auth: { require: [none] } }
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

async function auditStatus(requestId: string | undefined): Promise<unknown> {
  const lines = await h.audit();
  return lines.find((l) => l.request_id === requestId && l.event === 'api_access')?.status;
}

t.test('a 304 with the Content-Length of its representation reaches the client whole', async (t) => {
  // pipelined with a second request: the client connection must stay usable
  const x = await rawExchange(h.url, get('/hostile/304-length') + get('/hostile/after-304'), {
    responses: 2,
    waitMs: 5000,
  });
  t.equal(x.closed, false, 'the client connection is not closed');
  t.equal(x.responses.length, 2, 'both answers arrive');
  const r = x.responses[0];
  t.equal(r?.status, 304);
  t.equal(r?.headers.etag, '"v1"');
  t.equal(r?.headers['content-length'], '5', 'the representation length passes (RFC 9110 §8.6)');
  t.equal(r?.headers['x-content-type-options'], 'nosniff', 'the security headers are added');
  t.ok(x.raw.includes('\r\n\r\nHTTP/1.1 200 OK\r\n'), 'no byte of content follows the 304 head');
  t.equal(x.responses[1]?.status, 200);
  t.equal(x.responses[1]?.body.toString(), 'ok');
  t.equal(await auditStatus(r?.headers['x-request-id']), 304, 'audited with status 304');
  t.equal(await metric('gateway_requests_total', { route: 'hostile', code: '304', decision: 'allow' }), 1);
});

t.test('a 204 with Content-Length and bytes after its head: 204, no Content-Length, no body', async (t) => {
  const x = await rawExchange(h.url, get('/hostile/204-body') + get('/hostile/after-204'), {
    responses: 2,
    waitMs: 5000,
  });
  t.equal(x.closed, false, 'the client connection is not closed');
  t.equal(x.responses.length, 2, 'both answers arrive');
  const r = x.responses[0];
  t.equal(r?.status, 204);
  t.equal(r?.headers['content-length'], undefined, 'a 204 carries no Content-Length (RFC 9110 §8.6)');
  t.equal(r?.headers['transfer-encoding'], undefined);
  t.equal(r?.headers['x-kept'], 'yes');
  t.notOk(x.raw.includes('hello'), 'the bytes after the 204 head never reach the client');
  t.equal(x.responses[1]?.status, 200);
  t.equal(x.responses[1]?.body.toString(), 'ok');
});

t.test('repeated Connection lines: every field any of them names is stripped', async (t) => {
  const x = await rawExchange(h.url, get('/hostile/two-connection-lines'), { responses: 1 });
  const r = x.responses[0];
  t.equal(r?.status, 200);
  t.equal(r?.body.toString(), 'ok');
  for (const name of ['x-secret', 'x-other', 'x-third'])
    t.equal(r?.headers[name], undefined, `${name} not returned`);
  t.equal(r?.headers['x-end-to-end'], 'kept');
});

t.test('a transfer coding other than chunked: 502, none of the coded bytes', async (t) => {
  const before = await metric('gateway_upstream_errors_total', { route: 'hostile', kind: 'reset' });
  for (const path of ['/hostile/te-gzip', '/hostile/te-gzip-chunked']) {
    const x = await rawExchange(h.url, get(path), { responses: 1, waitMs: 5000 });
    const r: RawResponse | undefined = x.responses[0];
    t.equal(r?.status, 502, `${path}: 502`);
    t.equal(r?.json?.error, 'bad_gateway', `${path}: bad_gateway`);
    t.equal(r?.json?.request_id, r?.headers['x-request-id']);
    t.notOk(x.raw.includes('CODED'), `${path}: the coded body never reaches the client`);
    t.equal(await auditStatus(r?.headers['x-request-id']), 502, `${path}: audited as 502`);
  }
  t.equal(await metric('gateway_upstream_errors_total', { route: 'hostile', kind: 'reset' }), before + 2);
  const ok = await rawExchange(h.url, get('/hostile/te-chunked-upper'), { responses: 1 });
  t.equal(ok.responses[0]?.status, 200, '"Chunked" in another case is chunked');
  t.equal(ok.responses[0]?.body.toString(), 'plain');
});

t.test('conflicting framing (Content-Length with chunked, two lengths): 502', async (t) => {
  for (const path of ['/hostile/cl-and-te', '/hostile/two-lengths']) {
    const x = await rawExchange(h.url, get(path), { responses: 1, waitMs: 5000 });
    t.equal(x.responses[0]?.status, 502, path);
    t.equal(x.responses[0]?.json?.error, 'bad_gateway', path);
    t.equal(
      x.responses[0]?.json?.message,
      'The upstream service broke off or sent an invalid answer.',
      `${path}: not called unreachable`,
    );
    t.notOk(x.raw.includes('hello'), `${path}: nothing of the body`);
  }
});

t.test('a body cut short after its head was relayed: the client connection is closed', async (t) => {
  const before = await metric('gateway_upstream_errors_total', { route: 'hostile', kind: 'reset' });
  const id = `cut-${Date.now()}`;
  const x = await rawExchange(
    h.url,
    head('GET /hostile/short-body HTTP/1.1', [
      ['Host', 'gw.example'],
      ['X-Request-Id', id],
    ]),
    { waitMs: 5000 },
  );
  t.equal(x.closed, true, 'the gateway closes the client connection');
  t.equal(x.responses.length, 0, 'no complete response');
  t.match(x.raw, /^HTTP\/1\.1 200 OK\r\n/);
  t.match(x.raw, /\r\ncontent-length: 100\r\n/i, 'the declared length is kept, so the cut shows');
  t.ok(x.raw.endsWith('\r\n\r\n0123456789'), 'only the bytes the upstream sent');
  // the operator sees the cut: counted as an upstream failure, and on the access line
  t.equal(await metric('gateway_upstream_errors_total', { route: 'hostile', kind: 'reset' }), before + 1);
  const lineOf = async () => (await auditOf(h, id)).find((l) => l.event === 'api_access');
  await eventually('the access line', async () => (await lineOf()) !== undefined);
  t.match(await lineOf(), { status: 200, upstream_error: 'reset', response_cut: true });
});

t.test('an invalid chunk: the chunked relay is cut, never ended with its last chunk', async (t) => {
  const x = await rawExchange(h.url, get('/hostile/bad-chunk'), { waitMs: 5000 });
  t.equal(x.closed, true, 'the gateway closes the client connection');
  t.equal(x.responses.length, 0, 'no complete response');
  t.match(x.raw, /\r\ntransfer-encoding: chunked\r\n/i);
  t.notOk(x.raw.includes('\r\n0\r\n\r\n'), 'no last chunk');
});

t.test('bytes after a complete response never reach the next request', async (t) => {
  const x = await rawExchange(h.url, get('/hostile/extra-bytes'), { responses: 1 });
  t.equal(x.responses[0]?.body.toString(), 'hello');
  // the pooled upstream connection that carried the extra bytes must not answer this one
  for (let i = 0; i < 3; i++) {
    const y = await rawExchange(h.url, get(`/hostile/next-${i}`), { responses: 1 });
    t.equal(y.responses[0]?.body.toString(), 'ok', `request ${i} gets its own answer`);
    t.notOk(y.raw.includes('POISON'));
  }
});
