/**
 * Over real TCP, the real gateway (shipped gateway.yaml, verified-token cache on) and the
 * real mock: a token has one accepted spelling.
 * Every refusal is a 401 `unauthorized` with an `invalid_token` challenge and an
 * `auth_failure` audit line with its reason, and never reaches the upstream.
 */
import t, { type Test } from 'tap';
import { startHarness, type Harness } from '../../helpers/harness.js';
import { startMock } from '../../../upstream-mock/server.js';
import { respelledTokens } from './tokens.js';

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

  await t.test('metrics count each reason', async (t) => {
    const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
    t.match(metrics, /gateway_auth_failures_total\{method="jwt",reason="malformed"\} 3\n/);
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
  t.equal(await apiRequests(h), 1, 'the upstream saw only the token as issued');
});
