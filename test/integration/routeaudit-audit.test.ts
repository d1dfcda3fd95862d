import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runReplay } from '../../gateway/commands/replay.js';
import { Router, lenientPath, type RoutePattern } from '../../gateway/router.js';
import {
  startHarness,
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
 * Route matching against the path the service acts on. The gateway routes on the normalised
 * path literally, and `/api/ADMIN/users`, `/api/admin%2Fusers`, `/api/admin;x/users` and
 * `/api/x/..;/admin/users` all matched `/api/**` (any user, any API key) and were forwarded
 * as sent, while Express routes case-insensitively, WSGI servers decode `%2F` before routing
 * and Tomcat/Spring drop `;` path parameters: each serves `/api/admin/users`, which needs role
 * admin. Likewise `POST /api/receipts/upload/` skipped the upload gate (Express and Spring
 * match `/upload/` as `/upload`). Such a path is refused with 400 (rule `path-ambiguous`)
 * after the request checks, never forwarded.
 */

const API_KEY = 'routeaudit-key-0123456789abcdef';
const { h, token } = await startFileHarness(t, { env: { API_KEY } });

const MESSAGE =
  'The request path is ambiguous (letter case, an encoded slash or backslash, a ";" parameter or a trailing slash would route it elsewhere).';

function isAmbiguityRefusal(t: Test, r: RawResponse | undefined): void {
  t.ok(r, 'a response came back');
  if (!r) return;
  t.equal(r.status, 400, 'status');
  t.same(
    r.json,
    { error: 'bad_request', message: MESSAGE, request_id: r.headers['x-request-id'] },
    'the SPEC error shape',
  );
  hasSecurityHeaders(t, r);
}

async function send(
  method: string,
  target: string,
  headers: [string, string][],
  body = '',
): Promise<{ r: RawResponse | undefined; m: string }> {
  const m = mark();
  const x = await rawExchange(
    h.url,
    head(`${method} ${target} HTTP/1.1`, [
      ['Host', 'x'],
      ['X-Probe', m],
      ...headers,
      ...(body !== '' ? ([['Content-Length', String(Buffer.byteLength(body))]] as [string, string][]) : []),
      ['Connection', 'close'],
    ]) + body,
  );
  return { r: x.responses[0], m };
}

const BYPASSES = [
  '/api/ADMIN/users',
  '/api/Admin/users',
  '/api/admin%2Fusers',
  '/api/admin%2fusers',
  '/api/admin%5Cusers',
  '/api/admin\\users',
  '/api/admin;x=1/users',
  '/api/admin;/users',
  '/api/x/..;/admin/users',
  '/api/health/..;/admin/users',
  '/api/admin./users',
];

t.test('paths a lenient service reads as /api/admin/**: 400, audited, never forwarded', async (t) => {
  const before = await metricsText(h);
  for (const p of BYPASSES) {
    for (const cred of [
      ['X-API-Key', API_KEY],
      ['Authorization', `Bearer ${token}`],
    ] as [string, string][]) {
      await t.test(`${p} with ${cred[0]}`, async (t) => {
        const { r, m } = await send('GET', p, [cred]);
        isAmbiguityRefusal(t, r);
        const lines = (await auditOf(h, r?.headers['x-request-id'])).filter(
          (l) => l.event !== 'auth_success',
        );
        t.equal(lines.length, 1, 'one audit line');
        t.equal(lines[0]?.event, 'request_blocked');
        t.equal(lines[0]?.code, 'bad_request');
        t.equal(lines[0]?.reason, 'protocol');
        t.equal(lines[0]?.status, 400);
        t.equal(lines[0]?.route, 'api', 'judged by the route its literal path matched');
        t.same(lines[0]?.rule_ids, ['path-ambiguous']);
        t.notOk(await mockSaw(h, m), 'the service never got it');
      });
    }
  }
  const after = await metricsText(h);
  t.equal(
    metricValue(after, 'gateway_requests_total', { route: 'api', code: '400', decision: 'deny' }) -
      metricValue(before, 'gateway_requests_total', { route: 'api', code: '400', decision: 'deny' }),
    BYPASSES.length * 2,
    'each counted as a 400 deny of its route',
  );
});

t.test('without credentials the route still answers 401 first', async (t) => {
  const { r, m } = await send('GET', '/api/admin%2Fusers', []);
  t.equal(r?.status, 401);
  t.equal(r?.json?.error, 'unauthorized');
  t.notOk(await mockSaw(h, m));
});

t.test('POST /api/receipts/upload/ and /UPLOAD cannot skip the upload gate', async (t) => {
  const boundary = 'b0undary';
  const body =
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="evil.exe"\r\n` +
    `Content-Type: application/octet-stream\r\n\r\nMZ-not-an-image\r\n--${boundary}--\r\n`;
  for (const p of ['/api/receipts/upload/', '/api/receipts/UPLOAD', '/api/receipts/upload;x']) {
    const { r, m } = await send(
      'POST',
      p,
      [
        ['Authorization', `Bearer ${token}`],
        ['Content-Type', `multipart/form-data; boundary=${boundary}`],
      ],
      body,
    );
    isAmbiguityRefusal(t, r);
    t.notOk(await mockSaw(h, m), `${p}: the file never reached the service`);
  }
  // the exact path still meets the upload gate
  const { r, m } = await send(
    'POST',
    '/api/receipts/upload',
    [
      ['Authorization', `Bearer ${token}`],
      ['Content-Type', `multipart/form-data; boundary=${boundary}`],
    ],
    body,
  );
  t.equal(r?.status, 400);
  t.equal(r?.json?.error, 'upload_rejected');
  t.notOk(await mockSaw(h, m));
});

t.test('paths whose lenient reading names the same route pass as before', async (t) => {
  for (const p of [
    '/api/receipts/ABC123',
    '/api/receipts/a%2Fb',
    '/api/receipts/',
    '/api/receipts;v=1',
    '/api/admin/',
    '/api/receipts?q=A;B',
  ]) {
    const { r, m } = await send('GET', p, [['Authorization', `Bearer ${token}`]]);
    t.not(r?.status, 400, `${p}: not refused by the gateway`);
    t.ok((await mockSaw(h, m)) || p === '/api/admin/', `${p}: forwarded`);
  }
  const { r } = await send('GET', '/api/admin/', [['Authorization', `Bearer ${token}`]]);
  t.equal(r?.status, 403, '/api/admin/ is the admin route: alice is forbidden');
  t.equal(r?.json?.error, 'forbidden');
});

t.test('Router.ambiguous and lenientPath', async (t) => {
  const route = (name: string, p: string, methods?: string[]): RoutePattern<string> => ({
    name,
    path: p,
    methods: methods ? new Set(methods) : undefined,
    value: name,
  });
  const r = new Router(
    [
      route('login', '/api/auth/login', ['POST']),
      route('Mixed', '/api/Reports/:Id'),
      route('admin', '/api/admin/**'),
      route('api', '/api/**'),
    ],
    (i) => ['routes', i],
  );
  const amb = (method: string, p: string) => r.ambiguous(method, p, r.match(method, p));
  t.equal(lenientPath('/api/receipts'), undefined, 'a plain path has no other reading');
  t.equal(lenientPath('/api/A%2Fb;x/../c/'), '/api/a/c');
  t.equal(lenientPath('/api/a\\b'), '/api/a/b');
  t.equal(lenientPath('/api/v1.2/x./.hidden/..'), '/api/v1.2/x');
  t.equal(lenientPath('/api/...'), undefined, 'a segment of dots is left to the dot-segment rules');
  t.equal(amb('GET', '/api/ADMIN/x'), true);
  t.equal(amb('POST', '/api/auth/login/'), true, 'POST /login/ is the login route to Express');
  t.equal(amb('GET', '/api/auth/login/'), false, 'GET: /api/** either way');
  t.equal(amb('GET', '/api/Reports/X1'), false, 'an upper-case route pattern matches its own path');
  t.equal(amb('GET', '/api/reports/X1'), true, 'its lower-case spelling routes to the pattern leniently');
  t.equal(amb('GET', '/api/..;'), true, 'a reading that matches no route is ambiguous too');
  t.equal(amb('GET', '/nope/A'), false, 'no route matched: 404 whatever the reading');
});

t.test('replay decides the same', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-routeaudit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'req.jsonl');
  const row = (id: string, p: string) =>
    JSON.stringify({
      id,
      method: 'GET',
      path: p,
      headers: { Host: 'x', 'User-Agent': 'curl/8', 'X-API-Key': API_KEY },
      body: null,
    });
  fs.writeFileSync(file, [row('slash', '/api/admin%2Fusers'), row('plain', '/api/receipts')].join('\n'));
  let out = '';
  const code = await runReplay(
    ['--config', path.join(REPO, 'gateway.yaml'), '--requests', file, '--format', 'jsonl'],
    { write: (s: string) => (out += s) },
    { write: () => true },
    { JWT_SECRET_KEY: TEST_SECRET, API_KEY },
  );
  t.equal(code, 0);
  const got = out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(got[0], {
    id: 'slash',
    decision: 'deny',
    code: 'bad_request',
    status: 400,
    rule_ids: ['path-ambiguous'],
  });
  t.equal(got[1]?.code, null);
});

t.test('client claims about the scheme and port never reach the service', async (t) => {
  // Rack takes `X-Forwarded-Ssl: on` (then X-Forwarded-Scheme) before X-Forwarded-Proto, so a
  // plain-HTTP client could pass for HTTPS (secure cookies, force_ssl) by sending one.
  const claims: [string, string][] = [
    ['X-Forwarded-Ssl', 'on'],
    ['X-Forwarded-Scheme', 'https'],
    ['X-Forwarded-Port', '443'],
    ['Front-End-Https', 'on'],
    ['X-Url-Scheme', 'https'],
    ['X_Forwarded_Ssl', 'on'],
  ];
  const { r, m } = await send('GET', '/api/health', claims);
  t.equal(r?.status, 200);
  const rec = (await h.mockRequests()).find((x) => x.headers['x-probe'] === m);
  t.ok(rec, 'forwarded');
  for (const [name] of claims) t.equal(rec?.headers[name.toLowerCase()], undefined, `${name} dropped`);
  t.equal(rec?.headers['x-forwarded-proto'], 'http', "the gateway's own scheme");
});

t.test('strip_prefix on a WebSocket route removes a whole leading segment only', async (t) => {
  const wh = await startHarness({
    config: `
routes:
  - name: wsany
    methods: [GET]
    path: /**
    strip_prefix: /ws
    websocket: true
    policies: { auth: { require: [none] } }
`,
  });
  t.teardown(() => wh.close());
  const upgrade = (p: string) =>
    rawExchange(
      wh.url,
      head(`GET ${p} HTTP/1.1`, [
        ['Host', 'x'],
        ['Upgrade', 'websocket'],
        ['Connection', 'Upgrade'],
        ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
        ['Sec-WebSocket-Version', '13'],
        ['Origin', 'http://localhost:10000'],
      ]),
      { responses: 1 },
    );
  const a = await upgrade('/ws/api/ws/echo');
  t.equal(a.responses[0]?.status, 101, 'the prefix is stripped');
  const b = await upgrade('/wsx/api/ws/echo');
  t.equal(b.responses[0]?.status, 404, "the service's answer for a path it does not have");
  t.same(
    (await wh.mockRequests()).map((r) => r.path),
    ['/api/ws/echo', '/wsx/api/ws/echo'],
    '/wsx is not /ws: the path reaches the service whole, with its leading slash',
  );
});
