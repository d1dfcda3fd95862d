import t, { type Test } from 'tap';
import http from 'node:http';
import net from 'node:net';
import { createHash, randomUUID } from 'node:crypto';
import { startHarness, type Harness } from '../helpers/harness.js';
import { rawExchange, head } from '../helpers/raw-http.js';
import { eventually } from '../helpers/wait.js';

/**
 * The proxy core over real TCP against the real mock: routing, forwarding, hop-by-hop
 * headers, X-Forwarded-*, trusted proxies, request ids, identity headers, upstream
 * failures, client aborts and the security response headers.
 */

const SEED_HEADERS: Record<string, string> = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'SAMEORIGIN',
  'x-xss-protection': '1; mode=block',
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'content-security-policy':
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; font-src 'self' data:; connect-src 'self'",
  'referrer-policy': 'strict-origin-when-cross-origin',
  'permissions-policy': 'geolocation=(), microphone=(), camera=()',
};
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function hasSeedHeaders(t: Test, headers: Headers | Record<string, string | undefined>, what: string): void {
  const get = (n: string) => (headers instanceof Headers ? headers.get(n) : headers[n]);
  for (const [name, value] of Object.entries(SEED_HEADERS)) t.equal(get(name), value, `${what}: ${name}`);
  t.equal(get('server'), headers instanceof Headers ? null : undefined, `${what}: no Server`);
  t.equal(get('x-powered-by'), headers instanceof Headers ? null : undefined, `${what}: no X-Powered-By`);
}

async function errorBody(
  t: Test,
  r: Response,
  status: number,
  code: string,
): Promise<Record<string, string>> {
  t.equal(r.status, status, `status ${status}`);
  t.match(r.headers.get('content-type'), /^application\/json/);
  const body = (await r.json()) as Record<string, string>;
  t.same(Object.keys(body).sort(), ['error', 'message', 'request_id']);
  t.equal(body.error, code);
  t.equal(body.request_id, r.headers.get('x-request-id'), 'the body carries the request id of the header');
  return body;
}

async function metricsText(h: Harness): Promise<string> {
  return (await fetch(`${h.adminUrl}/metrics`)).text();
}

function metricValue(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    const got: Record<string, string> = {};
    for (const m of inner.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[m[1]!] = m[2]!;
    if (Object.entries(labels).every(([k, v]) => got[k] === v))
      return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

/** A free local port with nothing listening on it. */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

let h: Harness;
let token: string;
t.before(async () => {
  h = await startHarness({
    config: `
routes:
  - name: login
    methods: [POST]
    path: /api/auth/login
    policies: { auth: { require: [none] } }
  - name: health
    methods: [GET]
    path: /api/health
    policies:
      auth: { require: [none] }
      security_headers: { extra: { X-Frame-Options: DENY, Content-Security-Policy: null, X-Route: health } }
  - name: receipts
    methods: [GET, POST]
    path: /api/receipts
  - name: receipt-one
    methods: [GET]
    path: /api/receipts/:id
  - name: receipts-any
    methods: [GET, DELETE]
    path: /api/receipts/**
  - name: api
    path: /api/**
`,
  });
  token = await h.login('alice');
});
t.teardown(() => h.close());

const auth = () => ({ authorization: `Bearer ${token}` });

/** A stand-in upstream on an ephemeral port, closed (connections and all) when the test ends; returns its URL. */
async function standInUpstream(t: Test, handler: http.RequestListener): Promise<string> {
  const upstream = http.createServer(handler);
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    upstream.closeAllConnections();
    return new Promise<void>((r) => upstream.close(() => r()));
  });
  return `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`;
}

t.test('routing: first match wins, route names label the metrics', async (t) => {
  await h.clearMock();
  const before0 = await metricsText(h);
  const d = await fetch(`${h.url}/api/receipts/r-9`, { method: 'DELETE', headers: auth() });
  await d.arrayBuffer();
  const after0 = await metricsText(h);
  t.equal(
    metricValue(after0, 'gateway_requests_total', {
      route: 'receipts-any',
      method: 'DELETE',
      code: String(d.status),
    }) -
      metricValue(before0, 'gateway_requests_total', {
        route: 'receipts-any',
        method: 'DELETE',
        code: String(d.status),
      }),
    1,
    'DELETE /api/receipts/:id skips the GET-only route before it',
  );
  await h.clearMock();
  const before = await metricsText(h);
  const r1 = await fetch(`${h.url}/api/receipts/r-1`, { headers: auth() });
  await r1.arrayBuffer();
  const r2 = await fetch(`${h.url}/api/receipts/a/b`, { headers: auth() });
  await r2.arrayBuffer();
  const r3 = await fetch(`${h.url}/api/receipts`, { headers: auth() });
  t.equal(r3.status, 200);
  await r3.arrayBuffer();
  const r4 = await fetch(`${h.url}/api/echo-headers`, { headers: auth() });
  t.equal(r4.status, 200);
  await r4.arrayBuffer();
  const after = await metricsText(h);
  const delta = (route: string, code: string) =>
    metricValue(after, 'gateway_requests_total', { route, method: 'GET', code, decision: 'allow' }) -
    metricValue(before, 'gateway_requests_total', { route, method: 'GET', code, decision: 'allow' });
  t.equal(delta('receipt-one', String(r1.status)), 1, '/api/receipts/:id matched the first route that fits');
  t.equal(delta('receipts-any', String(r2.status)), 1, '/api/receipts/a/b matched the ** route');
  t.equal(
    delta('receipts', '200'),
    1,
    '/api/receipts: the exact route listed before the ** route that also matches it',
  );
  t.equal(delta('api', '200'), 1, 'the catch-all');
  t.same(
    (await h.mockRequests()).map((r) => `${r.method} ${r.path}`),
    ['GET /api/receipts/r-1', 'GET /api/receipts/a/b', 'GET /api/receipts', 'GET /api/echo-headers'],
  );
});

t.test('a route that matches the path but not the method falls through to the next one', async (t) => {
  // POST /api/health: the health route is GET only, the catch-all takes it (and wants a token)
  const r = await fetch(`${h.url}/api/health`, { method: 'POST' });
  await errorBody(t, r, 401, 'unauthorized');
});

t.test('deny by default: 404 not_found, never forwarded, counted', async (t) => {
  await h.clearMock();
  for (const p of ['/', '/nope', '/admin', '/apiv2/receipts', '/apix', '/API/receipts']) {
    const r = await fetch(`${h.url}${p}`, { headers: auth() });
    const body = await errorBody(t, r, 404, 'not_found');
    t.equal(body.message, 'No route matches this path.');
    hasSeedHeaders(t, r.headers, `404 ${p}`);
  }
  t.same(await h.mockRequests(), [], 'nothing reached the mock');
  const m = await metricsText(h);
  t.ok(
    metricValue(m, 'gateway_requests_total', {
      route: 'unmatched',
      method: 'GET',
      code: '404',
      decision: 'deny',
    }) >= 6,
  );
  t.ok(metricValue(m, 'gateway_blocked_requests_total', { reason: 'not_found' }) >= 6);
});

t.test('405 method_not_allowed with Allow listing every route that matches the path', async (t) => {
  await h.clearMock();
  const hh = await startHarness({
    config: `
routes:
  - name: one
    methods: [GET]
    path: /api/receipts/:id
  - name: two
    methods: [GET, DELETE]
    path: /api/receipts/**
`,
  });
  t.teardown(() => hh.close());
  const tok = await hh.login();
  await hh.clearMock();
  const r = await fetch(`${hh.url}/api/receipts/r-1`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
    body: '{"merchant":"x"}',
  });
  await errorBody(t, r, 405, 'method_not_allowed');
  t.equal(r.headers.get('allow'), 'GET, DELETE');
  hasSeedHeaders(t, r.headers, '405');
  t.same(await hh.mockRequests(), []);
  const m = await metricsText(hh);
  t.equal(
    metricValue(m, 'gateway_requests_total', {
      route: 'unmatched',
      method: 'PUT',
      code: '405',
      decision: 'deny',
    }),
    1,
  );
  // HEAD is accepted where GET is
  const head = await fetch(`${hh.url}/api/receipts/r-1`, {
    method: 'HEAD',
    headers: { authorization: `Bearer ${tok}` },
  });
  t.not(head.status, 405);
});

t.test('forwarding: a JSON POST streams through, byte for byte', async (t) => {
  await h.clearMock();
  const body = JSON.stringify({
    merchant: 'Cafe Central',
    total: 12.5,
    date: '2024-03-01',
    items: [{ name: 'coffee', quantity: 2, price: 3.5 }],
  });
  const r = await fetch(`${h.url}/api/receipts`, {
    method: 'POST',
    headers: { ...auth(), 'content-type': 'application/json' },
    body,
  });
  t.equal(r.status, 201);
  const created = (await r.json()) as Record<string, unknown>;
  t.equal(created.merchant, 'Cafe Central');
  const [rec] = await h.mockRequests();
  t.equal(rec?.method, 'POST');
  t.equal(rec?.body_size, Buffer.byteLength(body));
  t.equal(rec?.body_sha256, createHash('sha256').update(body).digest('hex'));
  t.equal(rec?.headers['content-type'], 'application/json');
});

t.test('forwarding: a chunked request body of 900 KB arrives whole', async (t) => {
  await h.clearMock();
  const big = Buffer.from(JSON.stringify({ data: 'x'.repeat(900 * 1024) }));
  const u = new URL(h.url);
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        method: 'POST',
        path: '/api/echo-headers',
        headers: { ...auth(), 'content-type': 'application/json' },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    for (let i = 0; i < big.length; i += 64 * 1024) req.write(big.subarray(i, i + 64 * 1024));
    req.end();
  });
  t.equal(status, 200);
  const [rec] = await h.mockRequests();
  t.equal(rec?.body_size, big.length);
  t.equal(rec?.body_sha256, createHash('sha256').update(big).digest('hex'));
});

t.test('hop-by-hop request headers are not forwarded', async (t) => {
  await h.clearMock();
  const x = await rawExchange(
    h.url,
    head('GET /api/echo-headers HTTP/1.1', [
      ['Host', 'gw.example'],
      ['Authorization', `Bearer ${token}`],
      ['Connection', 'keep-alive, X-Hop-One, x-hop-two'],
      ['X-Hop-One', '1'],
      ['X-Hop-Two', '2'],
      ['Keep-Alive', 'timeout=5, max=100'],
      ['TE', 'trailers'],
      ['Trailer', 'X-Checksum'],
      ['Upgrade', 'h2c'],
      ['Proxy-Connection', 'keep-alive'],
      ['Proxy-Authorization', 'Basic Zm9vOmJhcg=='],
      ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA'],
      ['X-End-To-End', 'kept'],
    ]),
    { responses: 1 },
  );
  t.equal(x.responses[0]?.status, 200);
  const seen = x.responses[0]?.json as Record<string, string>;
  for (const name of [
    'x-hop-one',
    'x-hop-two',
    'keep-alive',
    'te',
    'trailer',
    'upgrade',
    'proxy-connection',
    'proxy-authorization',
    'http2-settings',
  ]) {
    t.equal(seen[name], undefined, `${name} stripped`);
  }
  t.not(seen.connection, 'keep-alive, X-Hop-One, x-hop-two', 'the client Connection header is not forwarded');
  t.equal(seen['x-end-to-end'], 'kept', 'end-to-end headers pass');
  t.equal(seen.authorization, `Bearer ${token}`, 'Authorization is end-to-end');
});

t.test('hop-by-hop response headers are not returned; Server and X-Powered-By removed', async (t) => {
  const upstreamUrl = await standInUpstream(t, (req, res) => {
    req.resume();
    res.setHeader('Connection', 'X-Up-Hop, keep-alive');
    res.setHeader('X-Up-Hop', 'secret');
    res.setHeader('Keep-Alive', 'timeout=60');
    res.setHeader('Proxy-Authenticate', 'Basic realm="up"');
    res.setHeader('Trailer', 'X-Checksum');
    res.setHeader('Upgrade', 'h2c');
    res.setHeader('Server', 'nginx/1.0 (Ubuntu)');
    res.setHeader('X-Powered-By', 'Express');
    res.setHeader('X-AspNet-Version', '4.0');
    res.setHeader('X-End-To-End', 'kept');
    res.setHeader('Content-Type', 'application/json');
    res.end('{"ok":true}');
  });
  const hh = await startHarness({ upstreamUrl });
  t.teardown(() => hh.close());
  const x = await rawExchange(
    hh.url,
    head('GET /api/health HTTP/1.1', [
      ['Host', 'x'],
      ['Connection', 'close'],
    ]),
  );
  const r = x.responses[0];
  t.equal(r?.status, 200);
  t.equal(r?.body.toString(), '{"ok":true}');
  for (const name of [
    'x-up-hop',
    'keep-alive',
    'proxy-authenticate',
    'trailer',
    'upgrade',
    'server',
    'x-powered-by',
    'x-aspnet-version',
  ]) {
    t.equal(r?.headers[name], undefined, `${name} not returned`);
  }
  t.equal(r?.headers['x-end-to-end'], 'kept');
  hasSeedHeaders(t, r?.headers ?? {}, 'upstream response');
});

t.test('X-Forwarded-For/Proto/Host are set; an untrusted peer cannot spoof them', async (t) => {
  await h.clearMock();
  const x = await rawExchange(
    h.url,
    head('GET /api/echo-headers HTTP/1.1', [
      ['Host', 'shop.example:8443'],
      ['Authorization', `Bearer ${token}`],
      ['X-Forwarded-For', '6.6.6.6'],
      ['X-Forwarded-Proto', 'https'],
      ['X-Forwarded-Host', 'evil.example'],
      ['Forwarded', 'for=6.6.6.6'],
      ['Connection', 'close'],
    ]),
  );
  const r = x.responses[0];
  t.equal(r?.status, 200);
  const seen = r?.json as Record<string, string>;
  t.equal(seen['x-forwarded-for'], '127.0.0.1', 'the socket address, the spoofed entry dropped');
  t.equal(seen['x-forwarded-proto'], 'http', 'the client connection was plain http');
  t.equal(seen['x-forwarded-host'], 'shop.example:8443', 'the Host the client asked for');
  t.equal(seen.forwarded, undefined, 'a client Forwarded header is dropped');
  t.equal(seen.host, 'shop.example:8443', 'Host passes unchanged');
  const audit = await h.audit();
  const line = audit.find((l) => l.request_id === r?.headers['x-request-id']);
  t.equal(line?.client_ip, '127.0.0.1', 'the audit line has the socket address');
});

t.test(
  'headers the gateway owns never come from the client, in any spelling; X-Real-IP is the client',
  async (t) => {
    await h.clearMock();
    const x = await rawExchange(
      h.url,
      head('GET /api/echo-headers HTTP/1.1', [
        ['Host', 'shop.example'],
        ['Authorization', `Bearer ${token}`],
        ['X-Real-IP', '6.6.6.6'],
        ['X_Real_IP', '6.6.6.7'],
        ['X_Forwarded_For', '6.6.6.8'],
        ['x-forwarded_host', 'evil.example'],
        ['X_Forwarded_Proto', 'https'],
        ['X_Request_Id', 'forged-id'],
        ['X-Original-URL', '/api/admin/users'],
        ['X_Rewrite_URL', '/api/admin/users'],
        ['X-HTTP-Method-Override', 'DELETE'],
        ['X-HTTP-Method', 'DELETE'],
        ['X_Method_Override', 'DELETE'],
        ['X-Custom_Header', 'kept'],
        ['True-Client-IP', '6.6.6.9'],
        ['CF-Connecting-IP', '6.6.6.10'],
        ['Fastly-Client-IP', '6.6.6.11'],
        ['X-Client-IP', '6.6.6.12'],
        ['Client-IP', '6.6.6.13'],
        ['X-Cluster-Client-IP', '6.6.6.14'],
        ['X-Forwarded', 'for=6.6.6.15'],
        ['Forwarded-For', '6.6.6.16'],
        ['X_Client_IP', '6.6.6.17'],
        ['Connection', 'close'],
      ]),
    );
    const r = x.responses[0];
    t.equal(r?.status, 200);
    const seen = r?.json as Record<string, string>;
    t.equal(seen['x-real-ip'], '127.0.0.1', 'X-Real-IP is the address the gateway determined');
    t.same(
      Object.keys(seen)
        .filter((k) => k.includes('_') || /override|original|rewrite|x-http-method/.test(k))
        .sort(),
      ['x-custom_header'],
      'no underscore spelling of an owned header and no path or method override reaches the upstream',
    );
    t.equal(seen['x-custom_header'], 'kept', 'other names with underscores pass');
    t.same(
      Object.entries(seen).filter(([, v]) => typeof v === 'string' && v.includes('6.6.6.')),
      [],
      'no client-sent address reaches the upstream under any header name',
    );
    t.equal(seen['x-forwarded-for'], '127.0.0.1');
    t.equal(seen['x-forwarded-host'], 'shop.example');
    t.equal(seen['x-request-id'], r?.headers['x-request-id']);
    t.not(seen['x-request-id'], 'forged-id');
  },
);

t.test('trusted proxies: the right-most untrusted X-Forwarded-For entry is the client', async (t) => {
  const hh = await startHarness({
    config: 'listen: { trusted_proxies: [127.0.0.1/32, 10.0.0.0/8, "fd00::/8"] }',
  });
  t.teardown(() => hh.close());
  const tok = await hh.login();
  const cases: [string, string, string][] = [
    ['6.6.6.6, 203.0.113.7, 10.1.2.3', '203.0.113.7', '6.6.6.6, 203.0.113.7, 10.1.2.3, 127.0.0.1'],
    ['203.0.113.9', '203.0.113.9', '203.0.113.9, 127.0.0.1'],
    ['10.0.0.1, 10.0.0.2', '10.0.0.1', '10.0.0.1, 10.0.0.2, 127.0.0.1'],
    ['2001:db8::1, fd00::5', '2001:db8::1', '2001:db8::1, fd00::5, 127.0.0.1'],
    ['not-an-ip, 10.0.0.9', '10.0.0.9', 'not-an-ip, 10.0.0.9, 127.0.0.1'],
  ];
  for (const [xff, client, upstreamXff] of cases) {
    await hh.clearMock();
    const r = await fetch(`${hh.url}/api/echo-headers`, {
      headers: { authorization: `Bearer ${tok}`, 'x-forwarded-for': xff, 'x-forwarded-proto': 'https' },
    });
    const seen = (await r.json()) as Record<string, string>;
    t.equal(seen['x-forwarded-for'], upstreamXff, `upstream X-Forwarded-For for "${xff}"`);
    t.equal(seen['x-forwarded-proto'], 'https', 'a trusted proxy says the client used https');
    const line = (await hh.audit()).find((l) => l.request_id === r.headers.get('x-request-id'));
    t.equal(line?.client_ip, client, `client ip for "${xff}"`);
  }
  // no X-Forwarded-For from a trusted peer: the peer itself
  const r = await fetch(`${hh.url}/api/echo-headers`, { headers: { authorization: `Bearer ${tok}` } });
  const seen = (await r.json()) as Record<string, string>;
  t.equal(seen['x-forwarded-for'], '127.0.0.1');
  t.equal(seen['x-forwarded-proto'], 'http');
});

t.test('X-Request-Id: a well-formed one is kept everywhere', async (t) => {
  await h.clearMock();
  const id = `client-${randomUUID()}`;
  const ok = await fetch(`${h.url}/api/echo-headers`, { headers: { ...auth(), 'x-request-id': id } });
  t.equal(ok.headers.get('x-request-id'), id, 'returned to the client');
  const seen = (await ok.json()) as Record<string, string>;
  t.equal(seen['x-request-id'], id, 'sent upstream');
  const denied = await fetch(`${h.url}/nope`, { headers: { 'x-request-id': `${id}-2` } });
  const body = await errorBody(t, denied, 404, 'not_found');
  t.equal(body.request_id, `${id}-2`, 'in the error body');
  const audit = await h.audit();
  t.ok(
    audit.some((l) => l.request_id === id && l.event === 'api_access'),
    'on the access audit line',
  );
  t.ok(
    audit.some((l) => l.request_id === `${id}-2` && l.event === 'access_denied'),
    'on the denial audit line',
  );
});

t.test('X-Request-Id: a malformed one is replaced by a fresh one', async (t) => {
  for (const bad of ['a'.repeat(129), 'has space', 'tab\there', '', '.', '..']) {
    await h.clearMock();
    const r = await fetch(`${h.url}/api/echo-headers`, { headers: { ...auth(), 'x-request-id': bad } });
    const id = r.headers.get('x-request-id') ?? '';
    t.match(id, UUID_RE, `a new id for ${JSON.stringify(bad.slice(0, 20))}`);
    const seen = (await r.json()) as Record<string, string>;
    t.equal(seen['x-request-id'], id, 'the new id goes upstream');
  }
  const x = await rawExchange(
    h.url,
    head('GET /nope HTTP/1.1', [
      ['Host', 'x'],
      ['X-Request-Id', 'caf\xe9-id'],
      ['Connection', 'close'],
    ]),
  );
  t.match(x.responses[0]?.headers['x-request-id'], UUID_RE, 'non-ASCII id replaced');
  t.equal(x.responses[0]?.json?.request_id, x.responses[0]?.headers['x-request-id']);
});

t.test('client-sent X-Auth-* identity headers are always stripped', async (t) => {
  await h.clearMock();
  const forged = {
    'x-auth-subject': 'admin',
    'x-auth-roles': 'admin',
    'x-auth-method': 'api_key',
    'x-auth-key-id': 'root',
    'X-Auth-Anything': 'x',
  };
  const r = await fetch(`${h.url}/api/whoami`, { headers: { ...auth(), ...forged } });
  t.equal(r.status, 200);
  const who = (await r.json()) as Record<string, unknown>;
  t.equal(who.subject, 'alice', 'the gateway sets the subject from the token');
  t.same(who.roles, ['user']);
  t.equal(who.method, 'jwt');
  t.equal(who.key_id, null, 'the forged key id is gone');
  const [rec] = await h.mockRequests();
  t.equal(rec?.headers['x-auth-anything'], undefined);
  // on a public route, no identity at all reaches the upstream
  await h.clearMock();
  const pub = await fetch(`${h.url}/api/health`, { headers: forged });
  t.equal(pub.status, 200);
  const [rec2] = await h.mockRequests();
  t.same(
    Object.keys(rec2?.headers ?? {}).filter((k) => k.startsWith('x-auth-')),
    [],
    'no x-auth-* header on an unauthenticated request',
  );
});

t.test('upstream down: 502 bad_gateway, SPEC JSON, security headers', async (t) => {
  const port = await deadPort();
  const hh = await startHarness({ upstreamUrl: `http://127.0.0.1:${port}` });
  t.teardown(() => hh.close());
  const r = await fetch(`${hh.url}/api/health`);
  const body = await errorBody(t, r, 502, 'bad_gateway');
  t.equal(body.message, 'The upstream service is unreachable.');
  t.notMatch(JSON.stringify(body), /ECONNREFUSED|127\.0\.0\.1|undici|at /, 'no upstream detail or stack');
  hasSeedHeaders(t, r.headers, '502');
  const m = await metricsText(hh);
  t.equal(metricValue(m, 'gateway_requests_total', { route: 'health', method: 'GET', code: '502' }), 1);
  t.equal(metricValue(m, 'gateway_upstream_errors_total', { route: 'health', kind: 'connect' }), 1);
});

t.test('upstream slower than response_timeout: 504 gateway_timeout', async (t) => {
  const hh = await startHarness({ config: 'upstream: { response_timeout: 2s }' });
  t.teardown(() => hh.close());
  const tok = await hh.login();
  const r = await fetch(`${hh.url}/api/slow?ms=20000`, { headers: { authorization: `Bearer ${tok}` } });
  const body = await errorBody(t, r, 504, 'gateway_timeout');
  t.equal(body.message, 'The upstream service did not answer in time.');
  hasSeedHeaders(t, r.headers, '504');
  const r2 = await fetch(`${hh.url}/api/health`, { headers: { 'x-mock-delay-ms': '20000' } });
  await errorBody(t, r2, 504, 'gateway_timeout');
  const fast = await fetch(`${hh.url}/api/slow?ms=0`, { headers: { authorization: `Bearer ${tok}` } });
  t.equal(fast.status, 200, 'a quick answer still passes');
  await fast.arrayBuffer();
  const m = await metricsText(hh);
  t.equal(metricValue(m, 'gateway_upstream_errors_total', { route: 'api', kind: 'timeout' }), 1);
});

t.test('a client abort cancels the upstream request', async (t) => {
  let upstreamClosed!: () => void;
  const closed = new Promise<void>((r) => (upstreamClosed = r));
  let arrived!: () => void;
  const arrival = new Promise<void>((r) => (arrived = r));
  const upstreamUrl = await standInUpstream(t, (_req, res) => {
    // never answers; notes when the gateway gives up on the request
    res.on('close', () => {
      if (!res.writableFinished) upstreamClosed();
    });
    arrived();
  });
  const hh = await startHarness({ upstreamUrl });
  t.teardown(() => hh.close());
  const u = new URL(hh.url);
  const req = http.request({ host: u.hostname, port: u.port, path: '/api/health' });
  req.on('error', () => {});
  req.end();
  await arrival;
  req.destroy();
  await closed;
  t.pass('the upstream request was cancelled when the client went away');
  // the gateway still serves
  const ok = await fetch(`${h.url}/api/health`);
  t.equal(ok.status, 200);
});

t.test(
  'a client that pipelines requests and vanishes without reading frees every upstream request',
  async (t) => {
    // Each answer is 32 MB, far more than socket buffers hold: an upstream response only ends
    // when the gateway reads it all, or closes when the gateway gives up on it.
    const answer = Buffer.alloc(32 << 20, 120);
    let received = 0;
    let open = 0;
    const upstreamUrl = await standInUpstream(t, (_req, res) => {
      received++;
      open++;
      res.on('close', () => open--);
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': String(answer.length),
      });
      res.end(answer);
    });
    // a body timeout far beyond the test's wait: only the cancellation can free the upstream
    const hh = await startHarness({
      upstreamUrl,
      config: `
upstream:
  body_timeout: 300s
`,
    });
    t.teardown(() => hh.close());
    const u = new URL(hh.url);
    const socket = net.connect(Number(u.port), u.hostname);
    socket.on('error', () => {});
    socket.pause();
    await new Promise<void>((r) => socket.once('connect', () => r()));
    const n = 12;
    socket.write(`GET /api/health HTTP/1.1\r\nHost: ${u.host}\r\n\r\n`.repeat(n));
    await eventually('every pipelined request reached the upstream', () => received === n);
    t.equal(open, n, `all of them are in flight, their answers unread (${open} of ${n})`);
    socket.destroy();
    await eventually('the upstream requests were cancelled', () => open === 0);
    t.equal(open, 0);
    // the gateway still serves, through the same upstream
    const ok = await fetch(`${hh.url}/api/health`, { signal: AbortSignal.timeout(20_000) });
    t.equal(ok.status, 200);
    await ok.arrayBuffer();
  },
);

t.test('security headers on upstream responses and on every gateway-made error', async (t) => {
  const ok = await fetch(`${h.url}/api/receipts`, { headers: auth() });
  t.equal(ok.status, 200);
  hasSeedHeaders(t, ok.headers, '200 from upstream');
  await ok.arrayBuffer();
  const unauth = await fetch(`${h.url}/api/receipts`);
  await errorBody(t, unauth, 401, 'unauthorized');
  hasSeedHeaders(t, unauth.headers, '401');
  const upNotFound = await fetch(`${h.url}/api/receipts/does-not-exist`, { headers: auth() });
  t.equal(upNotFound.status, 404);
  hasSeedHeaders(t, upNotFound.headers, '404 from the upstream');
  await upNotFound.arrayBuffer();
  const x = await rawExchange(
    h.url,
    head('GET /api/health HTTP/1.1', [
      ['Host', 'x'],
      ['X-Big', 'a'.repeat(20_000)],
    ]),
  );
  t.equal(x.responses[0]?.status, 431);
  hasSeedHeaders(t, x.responses[0]?.headers ?? {}, '431 from the parser');
});

t.test('per-route header override', async (t) => {
  const health = await fetch(`${h.url}/api/health`);
  t.equal(health.status, 200);
  t.equal(health.headers.get('x-frame-options'), 'DENY', 'the route replaces a seed header');
  t.equal(health.headers.get('content-security-policy'), null, 'null removes a header on that route');
  t.equal(health.headers.get('x-route'), 'health', 'the route adds a header');
  t.equal(health.headers.get('x-content-type-options'), 'nosniff', 'the rest of the seed set stays');
  await health.arrayBuffer();
  const other = await fetch(`${h.url}/api/receipts`, { headers: auth() });
  t.equal(other.headers.get('x-frame-options'), 'SAMEORIGIN', 'other routes keep the global set');
  t.equal(other.headers.get('x-route'), null);
  await other.arrayBuffer();
});

t.test('strip_prefix removes a whole leading segment only', async (t) => {
  const hh = await startHarness({
    config: `
routes:
  - name: v1
    path: /v1/**
    strip_prefix: /v1
    policies: { auth: { require: [none] } }
  - name: any
    path: /**
    strip_prefix: /api
    policies: { auth: { require: [none] } }
`,
  });
  t.teardown(() => hh.close());
  await hh.clearMock();
  const cases: [string, number][] = [
    ['/v1/api/health', 200],
    ['/v1', 404],
    ['/api/health', 404],
    ['/apix/health', 404],
  ];
  for (const [p, status] of cases) {
    const r = await fetch(`${hh.url}${p}`);
    t.equal(r.status, status, `${p} answered by the upstream`);
    await r.arrayBuffer();
  }
  t.same(
    (await hh.mockRequests()).map((r) => r.path),
    ['/api/health', '/', '/health', '/apix/health'],
    'the prefix is removed on a segment boundary, never leaving a path without its leading slash',
  );
});

t.test(
  'Expect: 100-continue (curl sends it for bodies over 1 KB) is answered by the gateway, not forwarded',
  async (t) => {
    await h.clearMock();
    const items = Array.from({ length: 40 }, (_, i) => ({ name: `item ${i}`, quantity: 1, price: 1 }));
    const body = JSON.stringify({ merchant: 'Tea House', total: 40, date: '2024-03-01', items });
    t.ok(body.length > 1024, 'a body curl would send with Expect');
    const x = await rawExchange(h.url, [
      head('POST /api/receipts HTTP/1.1', [
        ['Host', 'x'],
        ['Authorization', `Bearer ${token}`],
        ['Content-Type', 'application/json'],
        ['Content-Length', String(body.length)],
        ['Expect', '100-continue'],
        ['Connection', 'close'],
      ]),
      body,
    ]);
    t.match(x.raw, /^HTTP\/1\.1 100 Continue\r\n\r\n/, 'the client is told to go on');
    const final = x.responses.find((r) => r.status !== 100);
    t.equal(final?.status, 201, 'the receipt was created');
    const [rec] = await h.mockRequests();
    t.equal(rec?.body_size, body.length, 'the whole body reached the upstream');
    t.equal(rec?.headers.expect, undefined, 'without the Expect header');
  },
);
