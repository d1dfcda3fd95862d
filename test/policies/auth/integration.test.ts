/**
 * Authentication over real TCP: the real gateway with the shipped gateway.yaml and the
 * real mock (HS256 by default, RS256 with its JWKS for rotation). Every refused request
 * is checked against the mock's record: it never reached the upstream.
 */
import t from 'tap';
import http from 'node:http';
import { SignJWT } from 'jose';
import { startHarness, TEST_SECRET, type Harness } from '../../helpers/harness.js';
import { startMock } from '../../../upstream-mock/server.js';
import { authReadiness } from '../../../policies/auth/index.js';

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: Record<string, unknown> | undefined;
}

/** One request with exact headers (arrays are sent as repeated header lines). */
function send(
  base: string,
  path: string,
  opts: { method?: string; headers?: Record<string, string | string[]>; body?: string } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${base}${path}`,
      { method: opts.method ?? 'GET', headers: opts.headers ?? {}, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown> | undefined;
          try {
            json = JSON.parse(body) as Record<string, unknown>;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json });
        });
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

const nowS = () => Math.floor(Date.now() / 1000);
const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const hs = (claims: Record<string, unknown>, secret = TEST_SECRET, header: Record<string, unknown> = {}) =>
  new SignJWT({ sub: 'alice', role: 'user', exp: nowS() + 600, ...claims })
    .setProtectedHeader({ alg: 'HS256', ...header } as never)
    .sign(new TextEncoder().encode(secret));

const API_KEY = 'integration-api-key-0123456789abcdef';

t.test('HS256 with the shipped config', async (t) => {
  // the shipped config samples auth_success (1 in 10); this test reads every one
  const h: Harness = await startHarness({
    env: { API_KEY },
    config: 'policies: { auth: { audit_success_sample_rate: 1 } }',
  });
  t.teardown(() => h.close());

  await t.test(
    'a valid token reaches the upstream with the identity headers; client X-Auth-* are replaced',
    async (t) => {
      const token = await h.login('alice');
      await h.clearMock();
      const r = await send(h.url, '/api/receipts', {
        headers: {
          authorization: `Bearer ${token}`,
          'x-auth-roles': 'admin',
          'x-auth-subject': 'admin',
          'x-auth-key-id': 'forged',
        },
      });
      t.equal(r.status, 200);
      const [rec] = await h.mockRequests();
      t.equal(rec?.path, '/api/receipts');
      t.equal(rec?.headers['x-auth-subject'], 'alice');
      t.equal(rec?.headers['x-auth-roles'], 'user');
      t.equal(rec?.headers['x-auth-method'], 'jwt');
      t.equal(rec?.headers['x-auth-key-id'], undefined);
      t.equal(rec?.headers.authorization, `Bearer ${token}`, 'Authorization forwarded by default');
    },
  );

  await t.test('forged and broken tokens: 401, never reach the upstream', async (t) => {
    const good = await h.login('alice');
    await h.clearMock();
    const [gh, gp, gs] = good.split('.');
    const forged: [string, string | string[], string][] = [
      [
        'alg none',
        `Bearer ${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'admin', role: 'admin', exp: nowS() + 600 })}.`,
        'algorithm',
      ],
      ['wrong secret', `Bearer ${await hs({}, 'not-the-secret-but-long-enough-0123456789')}`, 'signature'],
      [
        'tampered payload',
        `Bearer ${gh}.${b64({ sub: 'alice', role: 'admin', exp: nowS() + 600 })}.${gs}`,
        'signature',
      ],
      ['expired', `Bearer ${await hs({ iat: nowS() - 7200, exp: nowS() - 3600 })}`, 'expired'],
      ['not yet valid', `Bearer ${await hs({ nbf: nowS() + 3600 })}`, 'not_yet_valid'],
      [
        'unlisted alg',
        `Bearer ${await new SignJWT({ sub: 'a', exp: nowS() + 60 }).setProtectedHeader({ alg: 'HS384' }).sign(new TextEncoder().encode(TEST_SECRET))}`,
        'algorithm',
      ],
      ['oversized', `Bearer ${await hs({ pad: 'x'.repeat(9000) })}`, 'oversized'],
      ['non-base64url', `Bearer ${gh}.${gp}+/=.${gs}`, 'malformed'],
      ['header JSON not an object', `Bearer ${b64('[1,2]')}.${gp}.${gs}`, 'malformed'],
      ['payload JSON not an object', `Bearer ${gh}.${b64('"alice"')}.${gs}`, 'signature'],
      ['duplicate Authorization headers', [`Bearer ${good}`, `Bearer ${good}`], 'malformed'],
    ];
    for (const [name, authorization, reason] of forged) {
      const r = await send(h.url, '/api/receipts', { headers: { authorization } });
      t.equal(r.status, 401, name);
      t.equal(r.json?.error, 'unauthorized', name);
      t.equal(r.headers['www-authenticate'], 'Bearer realm="receipt-gateway", error="invalid_token"', name);
      t.notOk(r.body.includes(good.slice(0, 20)), `${name}: no token in the answer`);
      const audit = (await h.audit()).filter((l) => l.request_id === r.headers['x-request-id']);
      t.match(
        audit,
        [{ event: 'auth_failure', status: 401, detail: { reason, method: 'jwt' } }],
        `${name}: audited with the reason`,
      );
    }
    t.same(await h.mockRequests(), [], 'the mock saw none of them');
    const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
    t.match(metrics, /gateway_auth_failures_total\{method="jwt",reason="signature"\} 3/);
    t.match(metrics, /gateway_auth_failures_total\{method="jwt",reason="malformed"\} 3/);
    const text = (await h.audit()).map((l) => JSON.stringify(l)).join('\n');
    t.notOk(text.includes(gs!), 'no token signature in the audit log');
  });

  await t.test('missing credentials: 401 without error parameter; public routes need none', async (t) => {
    await h.clearMock();
    const r = await send(h.url, '/api/receipts');
    t.equal(r.status, 401);
    t.equal(r.headers['www-authenticate'], 'Bearer realm="receipt-gateway"');
    t.match(r.json, { error: 'unauthorized', message: /missing/ });
    t.equal((await send(h.url, '/api/health')).status, 200);
    t.same(
      (await h.mockRequests()).map((m) => m.path),
      ['/api/health'],
    );
  });

  await t.test('roles: /api/admin/** needs admin (403 insufficient_scope for a user)', async (t) => {
    const alice = await h.login('alice');
    const admin = await h.login('admin');
    await h.clearMock();
    const r = await send(h.url, '/api/admin/users', { headers: { authorization: `Bearer ${alice}` } });
    t.equal(r.status, 403);
    t.equal(r.json?.error, 'forbidden');
    t.equal(r.headers['www-authenticate'], 'Bearer realm="receipt-gateway", error="insufficient_scope"');
    t.same(await h.mockRequests(), []);
    const ok = await send(h.url, '/api/admin/users', { headers: { authorization: `Bearer ${admin}` } });
    t.equal(ok.status, 200);
    const [rec] = await h.mockRequests();
    t.equal(rec?.headers['x-auth-roles'], 'admin');
  });

  await t.test('API key from API_KEY: key id upstream, never the key in the audit log', async (t) => {
    await h.clearMock();
    const r = await send(h.url, '/api/receipts', { headers: { 'x-api-key': API_KEY } });
    t.equal(r.status, 200);
    const [rec] = await h.mockRequests();
    t.equal(rec?.headers['x-auth-method'], 'api_key');
    t.equal(rec?.headers['x-auth-key-id'], 'env');
    t.equal(rec?.headers['x-auth-subject'], 'api_key:env');
    const bad = await send(h.url, '/api/receipts', { headers: { 'x-api-key': `${API_KEY}-nope` } });
    t.equal(bad.status, 401);
    t.equal((await h.mockRequests()).length, 1);
    const admin = await send(h.url, '/api/admin/users', { headers: { 'x-api-key': API_KEY } });
    t.equal(admin.status, 401, 'the admin route takes JWTs only');
    const text = (await h.audit()).map((l) => JSON.stringify(l)).join('\n');
    t.notOk(text.includes(API_KEY));
    t.match(text, /"event":"auth_success"/);
  });

  await t.test('reload: issuer/audience checks apply to new requests', async (t) => {
    await h.reload('policies:\n  auth:\n    jwt:\n      audience: receipt-api\n');
    const alice = await h.login('alice');
    await h.clearMock();
    const r = await send(h.url, '/api/receipts', { headers: { authorization: `Bearer ${alice}` } });
    t.equal(r.status, 401);
    t.match(r.json, { message: /claims/ });
    const withAud = await send(h.url, '/api/receipts', {
      headers: { authorization: `Bearer ${await hs({ aud: 'receipt-api' })}` },
    });
    t.equal(withAud.status, 200);
    t.equal((await h.mockRequests()).length, 1);
    await h.reload('');
  });
});

for (const alg of ['RS256', 'ES256'] as const)
  t.test(`${alg} from the mock JWKS, with key rotation`, async (t) => {
    const mock = await startMock({
      port: 0,
      env: { MOCK_RECORD: '1', MOCK_JWT_ALG: alg, JWT_SECRET_KEY: '' },
    });
    const h = await startHarness({
      upstreamUrl: mock.url,
      env: { JWKS_URL: `${mock.url}/.well-known/jwks.json`, JWT_SECRET_KEY: '' },
      // cooldown 0: the rotated key is fetched on the first unknown kid; no token cache, so
      // the old key's tokens are judged against the new JWKS at once
      config:
        'policies:\n  auth:\n    jwt:\n      jwks:\n        cooldown: 0s\n      cache:\n        max_entries: 0\n',
    });
    t.teardown(async () => {
      await h.close();
      await mock.close();
    });
    const api = async () => (await h.mockRequests()).filter((m) => m.path.startsWith('/api/receipts'));

    const oldToken = await h.login('alice');
    t.equal(JSON.parse(Buffer.from(oldToken.split('.')[0]!, 'base64url').toString()).alg, alg);
    t.equal(
      (await send(h.url, '/api/receipts', { headers: { authorization: `Bearer ${oldToken}` } })).status,
      200,
    );
    t.same(authReadiness(h.gateway.services), { ok: true, reasons: [], warnings: [] });

    // alg confusion: HS256 "signed" with the published public key
    const jwks = await (await fetch(`${mock.url}/.well-known/jwks.json`)).text();
    const confused = await hs({ role: 'admin' }, jwks, { kid: mock.kid() });
    const c = await send(h.url, '/api/receipts', { headers: { authorization: `Bearer ${confused}` } });
    t.equal(c.status, 401);
    t.match(c.json, { message: /signature/ });

    const rotate = await fetch(`${mock.url}/__mock/rotate-key`, { method: 'POST' });
    t.ok(rotate.ok, 'the mock rotated its key');
    const newToken = await h.login('alice');
    t.not(
      JSON.parse(Buffer.from(newToken.split('.')[0]!, 'base64url').toString()).kid,
      JSON.parse(Buffer.from(oldToken.split('.')[0]!, 'base64url').toString()).kid,
    );
    t.equal(
      (await send(h.url, '/api/receipts', { headers: { authorization: `Bearer ${newToken}` } })).status,
      200,
      'new kid: refetched',
    );
    const old = await send(h.url, '/api/receipts', { headers: { authorization: `Bearer ${oldToken}` } });
    t.equal(old.status, 401, 'the retired key is no longer trusted');
    t.equal((await api()).length, 2, 'the mock saw only the two accepted requests');
  });

t.test('JWKS unreachable: fail closed, the gateway stays up, readiness says why', async (t) => {
  const signer = await startMock({ port: 0, env: { MOCK_JWT_ALG: 'RS256', JWT_SECRET_KEY: '' } });
  // a port that was free a moment ago: nothing listens there
  const probe = http.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const closedPort = (probe.address() as { port: number }).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const jwksUrl = `http://127.0.0.1:${closedPort}/.well-known/jwks.json`;
  const h = await startHarness({ env: { JWKS_URL: jwksUrl, JWT_SECRET_KEY: '' } });
  t.teardown(async () => {
    await h.close();
    await signer.close();
  });
  await h.clearMock();
  const token = await signer.sign({ sub: 'alice', role: 'user' });
  const r = await send(h.url, '/api/receipts', { headers: { authorization: `Bearer ${token}` } });
  t.equal(r.status, 401);
  t.equal(r.headers['www-authenticate'], 'Bearer realm="receipt-gateway", error="invalid_token"');
  t.match(r.json, { error: 'unauthorized', message: /could not be checked/ });
  t.equal((await send(h.url, '/api/health')).status, 200, 'still serving');
  const ready = authReadiness(h.gateway.services);
  t.equal(ready.ok, false);
  t.equal(ready.reasons.length, 1);
  t.match(ready.reasons[0], `jwks ${jwksUrl}: no usable keys (network error ECONNREFUSED; `);
  t.same(
    (await h.mockRequests()).map((m) => m.path),
    ['/api/health'],
  );
});
