/**
 * CORS over real TCP: the shipped gateway.yaml (origins from ${CORS_ORIGINS}) in front of
 * the real mock, then a hand-made upstream that sends its own Vary and CORS headers.
 * Every refusal and every answered preflight is checked against what reached the upstream.
 */
import t, { type Test } from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startHarness, type Harness } from '../../helpers/harness.js';
import { eventually } from '../../helpers/wait.js';

const APP = 'https://app.example';
const ADMIN = 'https://admin.example:8443';
const EVIL = 'https://evil.example';
const DEFAULT_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE';
const DEFAULT_HEADERS =
  'Authorization, Content-Type, X-API-Key, X-Request-Id, X-CSRF-Token, X-Requested-With';
const DEFAULT_EXPOSE = 'X-Request-Id, Retry-After, RateLimit, RateLimit-Policy';
const DENIED_MESSAGE = 'The request Origin is not allowed.';

async function blockedCors(h: Harness): Promise<number> {
  const text = await (await fetch(`${h.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('gateway_blocked_requests_total{reason="cors"} '));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

interface Got {
  status: number;
  headers: Headers;
  text: string;
}

async function send(url: string, init: RequestInit = {}): Promise<Got> {
  const r = await fetch(url, init);
  return { status: r.status, headers: r.headers, text: await r.text() };
}

function preflight(url: string, origin: string, method: string, headers?: string): Promise<Got> {
  return send(url, {
    method: 'OPTIONS',
    headers: {
      origin,
      'access-control-request-method': method,
      ...(headers !== undefined ? { 'access-control-request-headers': headers } : {}),
    },
  });
}

/**
 * The audit line of the request answered by `r`, once written: a monitored refusal's line
 * is written after the response reached the client.
 */
async function lineOf(h: Harness, r: Got): Promise<Record<string, unknown> | undefined> {
  const id = r.headers.get('x-request-id');
  let line: Record<string, unknown> | undefined;
  await eventually(`the audit line of ${id}`, async () => {
    line = (await h.audit()).find((l) => l.request_id === id);
    return line !== undefined;
  });
  return line;
}

/** The `cors_violation` audit line of the refusal `r` of a request to /api/receipts. */
async function expectViolationLine(
  t: Test,
  h: Harness,
  r: Got,
  method: string,
  why: string,
  what: string,
): Promise<Record<string, unknown> | undefined> {
  const line = await lineOf(h, r);
  t.match(
    line,
    {
      event: 'cors_violation',
      decision: 'deny',
      reason: 'cors',
      code: 'cors_origin_denied',
      status: 403,
      method,
      path: '/api/receipts',
      client_ip: '127.0.0.1',
      detail: { cors: why },
    },
    `${what}: audit line`,
  );
  return line;
}

/**
 * The exact gateway refusal body, its request id equal to the X-Request-Id header.
 * `granted`: the origin is allowed (a preflight refused for its method or headers), so the
 * response phase still adds its CORS headers to the 403; harmless, as a browser fails any
 * preflight whose status is not 2xx (Fetch, CORS-preflight fetch).
 */
function assertDenied(t: Test, r: Got, what: string, granted?: { origin: string; credentials: boolean }) {
  t.equal(r.status, 403, `${what}: 403`);
  const body = JSON.parse(r.text) as Record<string, unknown>;
  t.same(
    body,
    { error: 'cors_origin_denied', message: DENIED_MESSAGE, request_id: r.headers.get('x-request-id') },
    `${what}: body`,
  );
  t.match(body.request_id, /^[0-9a-f-]{36}$/);
  t.equal(r.headers.get('content-type'), 'application/json; charset=utf-8');
  t.equal(
    r.headers.get('access-control-allow-origin'),
    granted?.origin ?? null,
    `${what}: ${granted ? 'ACAO of the allowed origin' : 'no ACAO for a refused origin'}`,
  );
  t.equal(r.headers.get('access-control-allow-credentials'), granted?.credentials ? 'true' : null);
  t.equal(r.headers.get('vary'), 'Origin');
}

t.test('shipped config, origins from CORS_ORIGINS', async (t) => {
  const h = await startHarness({ env: { CORS_ORIGINS: `${APP}, ${ADMIN}` } });
  t.teardown(() => h.close());
  const self = new URL(h.url).origin; // http://127.0.0.1:PORT, the Host fetch sends

  t.test('preflight from an allowed origin: 204 answered by the gateway', async (t) => {
    await h.clearMock();
    const before = await blockedCors(h);
    const r = await preflight(
      `${h.url}/api/receipts`,
      APP,
      'POST',
      'content-type, authorization, x-csrf-token',
    );
    t.equal(r.status, 204);
    t.equal(r.text, '');
    t.equal(r.headers.get('access-control-allow-origin'), APP);
    t.equal(r.headers.get('access-control-allow-methods'), DEFAULT_METHODS);
    t.equal(r.headers.get('access-control-allow-headers'), DEFAULT_HEADERS);
    t.equal(r.headers.get('access-control-max-age'), '600');
    t.equal(r.headers.get('access-control-allow-credentials'), 'true');
    t.equal(r.headers.get('access-control-expose-headers'), null, 'not on a preflight');
    t.equal(r.headers.get('vary'), 'Origin');
    t.equal(r.headers.get('content-length'), null, 'a 204 has no Content-Length');
    t.match(r.headers.get('x-request-id'), /^[0-9a-f-]{36}$/);
    t.equal(r.headers.get('x-content-type-options'), 'nosniff', 'security headers on the answer');

    // routed by the method it asks for: the login route allows POST only
    const login = await preflight(`${h.url}/api/auth/login`, ADMIN, 'POST', 'content-type');
    t.equal(login.status, 204);
    t.equal(login.headers.get('access-control-allow-origin'), ADMIN);
    const other = await preflight(`${h.url}/api/auth/login`, APP, 'DELETE');
    t.equal(other.status, 204, 'DELETE /api/auth/login falls to the /api/** route');
    const wrongMethod = await preflight(`${h.url}/.well-known/jwks.json`, APP, 'DELETE');
    t.equal(wrongMethod.status, 405, 'CORS allows DELETE, the jwks route does not');
    t.equal(JSON.parse(wrongMethod.text).error, 'method_not_allowed');
    t.equal(wrongMethod.headers.get('allow'), 'GET');
    const unknown = await preflight(`${h.url}/nowhere`, APP, 'GET');
    t.equal(unknown.status, 404, 'a preflight for a path no route serves');

    t.same(await h.mockRequests(), [], 'no preflight reached the upstream');
    t.equal(await blockedCors(h), before, 'an answered preflight is no block');
    const audit = (await h.audit()).filter((l) => l.method === 'OPTIONS');
    t.equal(audit.filter((l) => l.event === 'cors_violation').length, 0);
  });

  t.test('preflights refused: method, header, foreign origin, Origin null', async (t) => {
    await h.clearMock();
    const before = await blockedCors(h);
    const cases: [string, () => Promise<Got>, string, boolean][] = [
      [
        'method',
        () => preflight(`${h.url}/api/receipts`, APP, 'OPTIONS'),
        'preflight method not allowed',
        true,
      ],
      [
        'header',
        () => preflight(`${h.url}/api/receipts`, APP, 'POST', 'content-type, x-evil'),
        'preflight header not allowed',
        true,
      ],
      [
        'foreign origin',
        () => preflight(`${h.url}/api/receipts`, EVIL, 'GET'),
        'preflight origin not allowed',
        false,
      ],
      [
        'Origin null',
        () => preflight(`${h.url}/api/receipts`, 'null', 'GET'),
        'preflight origin not allowed',
        false,
      ],
      [
        'trailing slash',
        () => preflight(`${h.url}/api/receipts`, `${APP}/`, 'GET'),
        'preflight origin not allowed',
        false,
      ],
    ];
    const ids: string[] = [];
    for (const [what, call, why, granted] of cases) {
      const r = await call();
      assertDenied(t, r, what, granted ? { origin: APP, credentials: true } : undefined);
      ids.push(r.headers.get('x-request-id')!);
      await expectViolationLine(t, h, r, 'OPTIONS', why, what);
    }
    t.equal(await blockedCors(h), before + cases.length, 'gateway_blocked_requests_total{reason="cors"}');
    t.same(await h.mockRequests(), [], 'no refused preflight reached the upstream');
  });

  t.test('actual requests from an allowed origin get the CORS headers', async (t) => {
    await h.clearMock();
    const ok = await send(`${h.url}/api/health`, { headers: { origin: APP } });
    t.equal(ok.status, 200);
    t.same(JSON.parse(ok.text), { status: 'ok' });
    t.equal(ok.headers.get('access-control-allow-origin'), APP);
    t.equal(ok.headers.get('access-control-allow-credentials'), 'true');
    t.equal(ok.headers.get('access-control-expose-headers'), DEFAULT_EXPOSE);
    t.equal(ok.headers.get('access-control-allow-methods'), null, 'preflight headers only on preflights');
    t.equal(ok.headers.get('vary'), 'Origin');
    const rec = await h.mockRequests();
    t.equal(rec.length, 1);
    t.equal(rec[0]!.headers.origin, APP, 'Origin is forwarded');

    // a gateway-made error is readable by the allowed page too
    const anon = await send(`${h.url}/api/receipts`, { headers: { origin: ADMIN } });
    t.equal(anon.status, 401);
    t.equal(JSON.parse(anon.text).error, 'unauthorized');
    t.match(anon.headers.get('www-authenticate'), /^Bearer/);
    t.equal(anon.headers.get('access-control-allow-origin'), ADMIN);
    t.equal(anon.headers.get('access-control-allow-credentials'), 'true');
    t.equal(anon.headers.get('access-control-expose-headers'), DEFAULT_EXPOSE);
    t.equal(anon.headers.get('vary'), 'Origin');

    const token = await h.login();
    const post = await send(`${h.url}/api/receipts`, {
      method: 'POST',
      headers: { origin: APP, authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ merchant: 'Cafe', total: 4.5 }),
    });
    t.equal(post.status, 201);
    t.equal(post.headers.get('access-control-allow-origin'), APP);

    const sameOrigin = await send(`${h.url}/api/health`, { headers: { origin: self } });
    t.equal(sameOrigin.status, 200, 'same origin (scheme://Host) passes without being listed');
    t.equal(sameOrigin.headers.get('access-control-allow-origin'), self);

    const upper = await send(`${h.url}/api/health`, { headers: { origin: APP.toUpperCase() } });
    t.equal(upper.status, 200, 'scheme and host compared case-insensitively');
    t.equal(upper.headers.get('access-control-allow-origin'), 'HTTPS://APP.EXAMPLE', 'reflected as sent');
    t.same(
      (await h.mockRequests()).map((m) => `${m.method} ${m.path}`),
      ['GET /api/health', 'POST /api/auth/login', 'POST /api/receipts', 'GET /api/health', 'GET /api/health'],
      'health, the direct login of the test, the POST, same-origin, upper-case (not the 401)',
    );
  });

  t.test('actual requests from a foreign origin: 403, never forwarded, audited, counted', async (t) => {
    const token = await h.login(); // straight to the mock, before its record is cleared
    await h.clearMock();
    const before = await blockedCors(h);
    const cases: [string, string, RequestInit][] = [
      ['GET foreign', EVIL, {}],
      ['GET Origin null', 'null', {}],
      ['GET default port spelled out', 'https://app.example:443', {}],
      ['GET lookalike', 'https://app.example.evil.example', {}],
      [
        'authenticated POST',
        EVIL,
        {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ merchant: 'Evil', total: 1 }),
        },
      ],
      ['OPTIONS without Access-Control-Request-Method', EVIL, { method: 'OPTIONS' }],
    ];
    for (const [what, origin, init] of cases) {
      const r = await send(`${h.url}/api/receipts`, {
        ...init,
        headers: { ...(init.headers as Record<string, string> | undefined), origin },
      });
      assertDenied(t, r, what);
      const line = await expectViolationLine(t, h, r, init.method ?? 'GET', 'origin not allowed', what);
      t.notOk('subject' in (line ?? {}), 'refused before authentication');
    }
    t.equal(await blockedCors(h), before + cases.length);
    t.same(await h.mockRequests(), [], 'nothing reached the upstream');

    // also on paths no route serves (CORS runs on the unmatched route)
    const missing = await send(`${h.url}/nowhere`, { headers: { origin: EVIL } });
    assertDenied(t, missing, 'unmatched path');
    t.equal(await blockedCors(h), before + cases.length + 1);
  });

  t.test('without Origin: untouched except Vary', async (t) => {
    await h.clearMock();
    const r = await send(`${h.url}/api/health`);
    t.equal(r.status, 200);
    t.equal(r.headers.get('vary'), 'Origin');
    for (const name of [
      'access-control-allow-origin',
      'access-control-allow-credentials',
      'access-control-expose-headers',
    ])
      t.equal(r.headers.get(name), null, name);
    const opts = await send(`${h.url}/api/health`, {
      method: 'OPTIONS',
      headers: { 'access-control-request-method': 'GET' },
    });
    t.not(opts.status, 204, 'Access-Control-Request-Method without Origin is no preflight');
    t.equal(opts.headers.get('access-control-allow-origin'), null);
    t.equal((await h.mockRequests()).filter((m) => m.method === 'GET').length, 1);
  });
});

/** An upstream that sets its own Vary and CORS headers, per path; records what it got. */
async function headerUpstream() {
  const seen: { method: string; path: string; origin: string | undefined }[] = [];
  const replies: Record<string, Record<string, string>> = {
    '/open/plain': {},
    '/open/vary': { vary: 'Accept-Encoding' },
    '/open/vary-origin': { vary: 'Accept-Encoding, Origin' },
    '/open/vary-lookalike': { vary: 'X-Origin-Region' },
    '/open/acao-star': { 'access-control-allow-origin': '*' },
    '/open/acao-evil': {
      'access-control-allow-origin': EVIL,
      'access-control-allow-credentials': 'true',
      'access-control-expose-headers': 'X-Secret',
    },
  };
  const server = http.createServer((req, res) => {
    const p = new URL(req.url ?? '/', 'http://x').pathname;
    seen.push({ method: req.method ?? '', path: p, origin: req.headers.origin });
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ path: p });
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
        ...(replies[p.replace(/^\/(partner|monitor|public)\//, '/open/')] ?? {}),
      });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const OPEN = { auth: { require: ['none'] } };
const ROUTES_YAML = JSON.stringify({
  policies: { cors: { origins: [APP], max_age: '90s' } },
  routes: [
    {
      name: 'partner',
      path: '/partner/**',
      policies: {
        ...OPEN,
        cors: {
          origins: 'https://partner.example',
          allow_credentials: false,
          max_age: '1h',
          allow_methods: ['GET'],
          expose_headers: ['X-Request-Id'],
        },
      },
    },
    { name: 'monitor', path: '/monitor/**', policies: { ...OPEN, cors: { mode: 'monitor' } } },
    {
      name: 'public',
      path: '/public/**',
      policies: { ...OPEN, cors: { origins: '*', allow_credentials: false } },
    },
    { name: 'open', path: '/open/**', policies: OPEN },
  ],
});

t.test('an upstream with its own Vary / CORS headers; per-route blocks; monitor mode', async (t) => {
  const up = await headerUpstream();
  t.teardown(() => up.close());
  const h = await startHarness({ upstreamUrl: up.url, config: ROUTES_YAML });
  t.teardown(() => h.close());

  t.test('Vary: Origin merged with the upstream Vary, never doubled', async (t) => {
    const cases: [string, string][] = [
      ['/open/plain', 'Origin'],
      ['/open/vary', 'Accept-Encoding, Origin'],
      ['/open/vary-origin', 'Accept-Encoding, Origin'],
    ];
    for (const [p, vary] of cases) {
      for (const origin of [APP, undefined]) {
        const r = await send(`${h.url}${p}`, { headers: origin ? { origin } : {} });
        t.equal(r.status, 200);
        t.equal(r.headers.get('vary'), vary, `${p} with Origin ${origin}`);
      }
    }
  });

  t.test('the upstream’s own CORS headers without Origin pass through', async (t) => {
    // documents the current behaviour: with no Origin the policy leaves them alone
    const r = await send(`${h.url}/open/acao-star`);
    t.equal(r.headers.get('access-control-allow-origin'), '*');
    t.equal(r.headers.get('vary'), 'Origin');
  });

  t.test('per-route block: its own origins, credentials, max age, methods', async (t) => {
    up.seen.length = 0;
    const pf = await preflight(`${h.url}/partner/x`, 'https://partner.example', 'GET', 'authorization');
    t.equal(pf.status, 204);
    t.equal(pf.headers.get('access-control-allow-origin'), 'https://partner.example');
    t.equal(pf.headers.get('access-control-allow-methods'), 'GET');
    t.equal(pf.headers.get('access-control-max-age'), '3600');
    t.equal(pf.headers.get('access-control-allow-credentials'), null);
    assertDenied(
      t,
      await preflight(`${h.url}/partner/x`, 'https://partner.example', 'POST'),
      'route method',
      {
        origin: 'https://partner.example',
        credentials: false,
      },
    );
    assertDenied(t, await send(`${h.url}/partner/x`, { headers: { origin: APP } }), 'global origin on route');
    const ok = await send(`${h.url}/partner/x`, { headers: { origin: 'https://partner.example' } });
    t.equal(ok.status, 200);
    t.equal(ok.headers.get('access-control-allow-origin'), 'https://partner.example');
    t.equal(ok.headers.get('access-control-allow-credentials'), null);
    t.equal(ok.headers.get('access-control-expose-headers'), 'X-Request-Id');

    const global = await preflight(`${h.url}/open/x`, APP, 'GET');
    t.equal(global.status, 204);
    t.equal(global.headers.get('access-control-max-age'), '90', 'the global block elsewhere');
    assertDenied(
      t,
      await send(`${h.url}/open/x`, { headers: { origin: 'https://partner.example' } }),
      'open',
    );
    t.same(
      up.seen.map((s) => `${s.method} ${s.path}`),
      ['GET /partner/x'],
      'only the allowed actual request reached the upstream',
    );
  });

  t.test('wildcard route without credentials', async (t) => {
    const pf = await preflight(`${h.url}/public/x`, 'https://anyone.example', 'PUT', 'content-type');
    t.equal(pf.status, 204);
    t.equal(pf.headers.get('access-control-allow-origin'), '*');
    t.equal(pf.headers.get('access-control-allow-credentials'), null);
    for (const origin of ['https://anyone.example', 'null']) {
      const r = await send(`${h.url}/public/x`, { headers: { origin } });
      t.equal(r.status, 200, origin);
      t.equal(r.headers.get('access-control-allow-origin'), '*');
      t.equal(r.headers.get('access-control-allow-credentials'), null);
      t.equal(r.headers.get('access-control-expose-headers'), DEFAULT_EXPOSE);
    }
  });

  t.test('monitor mode: a foreign origin is let through, audited, not counted', async (t) => {
    up.seen.length = 0;
    const before = await blockedCors(h);
    const r = await send(`${h.url}/monitor/x`, { headers: { origin: EVIL } });
    t.equal(r.status, 200);
    t.same(JSON.parse(r.text), { path: '/monitor/x' });
    t.equal(r.headers.get('access-control-allow-origin'), null, 'no CORS grant for the foreign origin');
    t.equal(r.headers.get('vary'), 'Origin');
    t.same(up.seen, [{ method: 'GET', path: '/monitor/x', origin: EVIL }]);
    const line = await lineOf(h, r);
    t.match(line, {
      event: 'cors_violation',
      decision: 'monitor',
      reason: 'cors',
      code: 'cors_origin_denied',
      status: 200,
      detail: { cors: 'origin not allowed' },
    });
    t.equal(await blockedCors(h), before, 'monitor does not count as blocked');

    // a refused preflight in monitor mode is not answered by the gateway: it goes upstream
    up.seen.length = 0;
    const pf = await preflight(`${h.url}/monitor/x`, EVIL, 'GET');
    t.equal(pf.status, 200, 'the upstream answered the OPTIONS');
    t.equal(pf.headers.get('access-control-allow-origin'), null);
    t.same(
      up.seen.map((s) => `${s.method} ${s.path}`),
      ['OPTIONS /monitor/x'],
    );
    const allowed = await preflight(`${h.url}/monitor/x`, APP, 'GET');
    t.equal(allowed.status, 204, 'an allowed preflight is still answered');
    t.equal(up.seen.length, 1);
  });

  // ---- behaviour these tests found wrong (since fixed); they fail before the fix ----

  t.test('an upstream Vary naming X-Origin-Region still gets Vary: Origin', async (t) => {
    const r = await send(`${h.url}/open/vary-lookalike`, { headers: { origin: APP } });
    t.equal(r.status, 200);
    t.equal(r.headers.get('access-control-allow-origin'), APP);
    t.equal(r.headers.get('vary'), 'X-Origin-Region, Origin');
  });

  t.test('the gateway’s Access-Control-Allow-Origin replaces the upstream’s', async (t) => {
    for (const p of ['/open/acao-star', '/open/acao-evil']) {
      const r = await send(`${h.url}${p}`, { headers: { origin: APP } });
      t.equal(r.status, 200);
      t.equal(
        r.headers.get('access-control-allow-origin'),
        APP,
        `${p}: the allowed origin, not the upstream's`,
      );
      t.equal(r.headers.get('access-control-allow-credentials'), 'true', p);
      t.equal(r.headers.get('access-control-expose-headers'), DEFAULT_EXPOSE, p);
    }
  });

  t.test('allow_same_origin: false refuses the gateway’s own origin', async (t) => {
    const self = new URL(h.url).origin;
    const on = await send(`${h.url}/open/x`, { headers: { origin: self } });
    t.equal(on.status, 200);
    t.equal(on.headers.get('access-control-allow-origin'), self);
    await h.reload(
      JSON.stringify({
        ...JSON.parse(ROUTES_YAML),
        policies: { cors: { origins: [APP], allow_same_origin: false } },
      }),
    );
    up.seen.length = 0;
    assertDenied(t, await send(`${h.url}/open/x`, { headers: { origin: self } }), 'same origin, off');
    assertDenied(t, await preflight(`${h.url}/open/x`, self, 'GET'), 'same-origin preflight, off');
    t.equal((await send(`${h.url}/open/x`, { headers: { origin: APP } })).status, 200);
    t.equal(up.seen.length, 1);
  });
});
