/**
 * Over real TCP, the real gateway (shipped gateway.yaml) and the recording mock: the JWT
 * subject reaches the upstream as one `X-Auth-Subject` value per subject. Two different
 * subjects never arrive as the same value: a `%` in the subject would otherwise make it
 * look like the encoding of another one (`j%C3%B6rg` and `jörg`), and HTTP parsers strip
 * the spaces at either end of a header value (` admin ` would arrive as `admin`). A subject
 * that is not text (a lone UTF-16 surrogate) is refused like any other unusable subject:
 * 401 `claims`, never reaching the upstream.
 */
import t, { type Test } from 'tap';
import { SignJWT } from 'jose';
import { startHarness, TEST_SECRET } from '../../helpers/harness.js';

const nowS = () => Math.floor(Date.now() / 1000);
/** The subject a header value stands for: decoded when it contains `%` (undefined if it cannot be). */
const decoded = (value: string): string | undefined => {
  if (!value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return undefined;
  }
};
const hs = (sub: unknown) =>
  new SignJWT({ sub, role: 'user', exp: nowS() + 600 } as never)
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode(TEST_SECRET));

t.test('X-Auth-Subject: one value per subject, and a subject that is not text refused', async (t) => {
  const h = await startHarness({ config: 'policies: { auth: { audit_success_sample_rate: 1 } }' });
  t.teardown(() => h.close());

  /** The X-Auth-Subject the upstream received for a token with this `sub`. */
  const upstreamSubject = async (t: Test, sub: string): Promise<string | undefined> => {
    await h.clearMock();
    const r = await fetch(`${h.url}/api/receipts`, { headers: { authorization: `Bearer ${await hs(sub)}` } });
    t.equal(r.status, 200, `${JSON.stringify(sub)}: 200`);
    await r.arrayBuffer();
    const recs = await h.mockRequests();
    t.equal(recs.length, 1, `${JSON.stringify(sub)}: forwarded once`);
    return recs[0]?.headers['x-auth-subject'];
  };

  await t.test('distinct subjects arrive as distinct values, each decodable', async (t) => {
    const expected: [string, string][] = [
      ['alice', 'alice'],
      ['a b', 'a b'],
      ['jörg', 'j%C3%B6rg'],
      ['j%C3%B6rg', 'j%25C3%25B6rg'],
      ['admin', 'admin'],
      [' admin ', '%20admin%20'],
      ['admin ', 'admin%20'],
      ['100%', '100%25'],
      // an API key's identity is `api_key:<id>`: a JWT subject spelt so must not pass for it
      ['api_key:ops', 'api_key%3Aops'],
    ];
    const seen = new Map<string, string>();
    for (const [sub, value] of expected) {
      const got = await upstreamSubject(t, sub);
      t.equal(got, value, `${JSON.stringify(sub)} arrives as ${JSON.stringify(value)}`);
      t.equal(
        got === undefined ? undefined : decoded(got),
        sub,
        `${JSON.stringify(sub)}: recovered from the header value`,
      );
      if (got !== undefined) {
        t.equal(seen.get(got), undefined, `${JSON.stringify(sub)}: no other subject has this value`);
        seen.set(got, sub);
      }
    }
    const audit = (await h.audit()).filter((l) => l.event === 'auth_success');
    t.same(
      audit.map((l) => l.subject),
      expected.map(([, value]) => value),
      'auth_success names each subject by its header value',
    );
  });

  await t.test('a lone surrogate in the subject: 401 claims, not forwarded', async (t) => {
    await h.clearMock();
    const r = await fetch(`${h.url}/api/receipts`, {
      headers: { authorization: `Bearer ${await hs('\ud800admin')}` },
    });
    const body = (await r.json()) as Record<string, unknown>;
    t.equal(r.status, 401);
    t.equal(r.headers.get('www-authenticate'), 'Bearer realm="receipt-gateway", error="invalid_token"');
    t.match(body, {
      error: 'unauthorized',
      message: 'Authentication failed: the token claims are not valid.',
      request_id: r.headers.get('x-request-id'),
    });
    const lines = (await h.audit()).filter((l) => l.request_id === r.headers.get('x-request-id'));
    t.match(lines, [{ event: 'auth_failure', status: 401, detail: { reason: 'claims', method: 'jwt' } }]);
    t.same(await h.mockRequests(), [], 'the upstream saw nothing');
    const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
    t.match(metrics, /gateway_auth_failures_total\{method="jwt",reason="claims"\} 1\n/);
  });
});
