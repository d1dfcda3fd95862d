/**
 * Over real TCP, the real gateway (shipped gateway.yaml, verified-token cache on) and the
 * real mock: a token has one accepted spelling, and a token issued in the future is refused.
 * Every refusal is a 401 `unauthorized` with an `invalid_token` challenge and an
 * `auth_failure` audit line with its reason, and never reaches the upstream.
 */
import t, { type Test } from 'tap';
import { createHmac } from 'node:crypto';
import { SignJWT } from 'jose';
import { startHarness, TEST_SECRET, type Harness } from '../../helpers/harness.js';
import { startMock } from '../../../upstream-mock/server.js';
import { respelledTokens } from './tokens.js';

const nowS = () => Math.floor(Date.now() / 1000);
const hs = (claims: Record<string, unknown>) =>
  new SignJWT({ sub: 'alice', role: 'user', exp: nowS() + 600, ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode(TEST_SECRET));

interface Answer {
  status: number;
  challenge: string | null;
  body: Record<string, unknown>;
  requestId: string;
}

async function get(h: Harness, token: string): Promise<Answer> {
  const r = await fetch(`${h.url}/api/receipts`, { headers: { authorization: `Bearer ${token}` } });
  return {
    status: r.status,
    challenge: r.headers.get('www-authenticate'),
    body: (await r.json()) as Record<string, unknown>,
    requestId: r.headers.get('x-request-id') ?? '',
  };
}

/** The refusal as the client and the audit log see it. */
async function refused(t: Test, h: Harness, token: string, reason: string, message: RegExp, name: string) {
  const a = await get(h, token);
  t.equal(a.status, 401, `${name}: 401`);
  t.equal(a.challenge, 'Bearer realm="receipt-gateway", error="invalid_token"', `${name}: challenge`);
  t.match(a.body, { error: 'unauthorized', message, request_id: a.requestId }, `${name}: body`);
  t.notOk(JSON.stringify(a.body).includes(token.split('.')[2]!), `${name}: no token in the answer`);
  const audit = (await h.audit()).filter((l) => l.request_id === a.requestId);
  t.match(
    audit,
    [{ event: 'auth_failure', status: 401, detail: { reason, method: 'jwt' } }],
    `${name}: auth_failure with reason ${reason}`,
  );
}

const apiRequests = async (h: Harness) =>
  (await h.mockRequests()).filter((m) => m.path.startsWith('/api/receipts')).length;

t.test('HS256, shipped config', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());

  await t.test('other spellings of a valid, cached token are refused', async (t) => {
    const token = await h.login('alice');
    await h.clearMock();
    t.equal((await get(h, token)).status, 200, 'the token as issued (now in the verified-token cache)');
    const others = respelledTokens(token, 2);
    t.equal(others.length, 3);
    for (const other of others) {
      t.same(
        Buffer.from(other.split('.')[2]!, 'base64url'),
        Buffer.from(token.split('.')[2]!, 'base64url'),
        'same signature bytes',
      );
      await refused(t, h, other, 'malformed', /malformed/, 'respelled signature');
    }
    t.equal(await apiRequests(h), 1, 'the upstream saw only the token as issued');
  });

  await t.test('iat: in the future beyond the tolerance refused; optional; numeric', async (t) => {
    await h.clearMock();
    await refused(t, h, await hs({ iat: nowS() + 86400 }), 'issued_in_future', /claims/, 'iat tomorrow');
    await refused(t, h, await hs({ iat: nowS() + 3600 }), 'issued_in_future', /claims/, 'iat in an hour');
    await refused(t, h, await hs({ iat: `${nowS()}` }), 'claims', /claims/, 'iat a string');
    t.equal(await apiRequests(h), 0, 'none reached the upstream');
    // the shipped clock_tolerance is 30 s
    t.equal(
      (await get(h, await hs({ iat: nowS() + 10 }))).status,
      200,
      'iat 10 s ahead: within the tolerance',
    );
    t.equal((await get(h, await hs({}))).status, 200, 'no iat');
    t.equal(await apiRequests(h), 2);
  });

  await t.test('nbf: beyond the tolerance refused, within it accepted', async (t) => {
    await h.clearMock();
    await refused(t, h, await hs({ nbf: nowS() + 3600 }), 'not_yet_valid', /claims/, 'nbf in an hour');
    await refused(t, h, await hs({ nbf: `${nowS()}` }), 'claims', /claims/, 'nbf a string');
    t.equal(await apiRequests(h), 0, 'none reached the upstream');
    t.equal(
      (await get(h, await hs({ nbf: nowS() + 10 }))).status,
      200,
      'nbf 10 s ahead: within the tolerance',
    );
    t.equal(await apiRequests(h), 1);
  });

  await t.test('a date beyond the range of a number (exp 1e400: never expiring) is refused', async (t) => {
    await h.clearMock();
    const raw = (payload: string) => {
      const head = Buffer.from('{"alg":"HS256","typ":"JWT"}').toString('base64url');
      const body = Buffer.from(payload).toString('base64url');
      const mac = createHmac('sha256', TEST_SECRET).update(`${head}.${body}`).digest('base64url');
      return `${head}.${body}.${mac}`;
    };
    await refused(t, h, raw('{"sub":"alice","role":"user","exp":1e400}'), 'claims', /claims/, 'exp 1e400');
    await refused(
      t,
      h,
      raw(`{"sub":"alice","role":"user","exp":${nowS() + 600},"nbf":-1e400}`),
      'claims',
      /claims/,
      'nbf -1e400',
    );
    t.equal(await apiRequests(h), 0, 'none reached the upstream');
    t.equal(
      (await get(h, raw(`{"sub":"alice","role":"user","exp":${nowS() + 600}}`))).status,
      200,
      'the same token with a finite exp',
    );
  });

  await t.test('metrics count each reason', async (t) => {
    const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
    t.match(metrics, /gateway_auth_failures_total\{method="jwt",reason="malformed"\} 3\n/);
    t.match(metrics, /gateway_auth_failures_total\{method="jwt",reason="issued_in_future"\} 2\n/);
    t.match(metrics, /gateway_auth_failures_total\{method="jwt",reason="claims"\} 4\n/);
    t.match(metrics, /gateway_auth_failures_total\{method="jwt",reason="not_yet_valid"\} 1\n/);
  });
});

t.test('ES256 from the mock JWKS', async (t) => {
  const mock = await startMock({
    port: 0,
    env: { MOCK_RECORD: '1', MOCK_JWT_ALG: 'ES256', JWT_SECRET_KEY: '' },
  });
  const h = await startHarness({
    upstreamUrl: mock.url,
    env: { JWKS_URL: `${mock.url}/.well-known/jwks.json`, JWT_SECRET_KEY: '' },
  });
  t.teardown(async () => {
    await h.close();
    await mock.close();
  });

  const token = await h.login('alice');
  t.equal(JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()).alg, 'ES256');
  await h.clearMock();
  t.equal((await get(h, token)).status, 200, 'the token as issued');
  const others = respelledTokens(token, 2);
  t.equal(others.length, 15, 'an 86-character signature: 4 unused bits in its last character');
  for (const other of others)
    await refused(t, h, other, 'malformed', /malformed/, 'respelled ES256 signature');
  const future = await mock.sign({ sub: 'alice', role: 'user', iat: nowS() + 86400 });
  await refused(t, h, future, 'issued_in_future', /claims/, 'ES256 token issued tomorrow');
  t.equal(await apiRequests(h), 1, 'the upstream saw only the token as issued');
});
