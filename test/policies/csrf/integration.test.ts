/** CSRF over real TCP: a cross-site POST with the session cookie never reaches the mock. */
import t from 'tap';
import { startHarness } from '../../helpers/harness.js';

const h = await startHarness({
  config: `
policies:
  auth:
    jwt:
      cookie: session
  csrf:
    allowed_origins: [http://localhost:10000]
`,
});
t.teardown(() => h.close());

const receipt = JSON.stringify({ merchant: 'Cafe', total: 4.5, date: '2024-05-01' });

t.test(
  'cookie session: cross-site refused, same-origin and allowed origins pass; header auth unaffected',
  async (t) => {
    const token = await h.login('alice');
    await h.clearMock();
    const host = new URL(h.url).host;
    const post = (headers: Record<string, string>) =>
      fetch(`${h.url}/api/receipts`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: receipt,
      });

    const cross = await post({ cookie: `session=${token}`, 'sec-fetch-site': 'cross-site' });
    t.equal(cross.status, 403);
    t.match(await cross.json(), { error: 'csrf_rejected' });
    const sameSite = await post({ cookie: `session=${token}`, 'sec-fetch-site': 'same-site' });
    t.equal(sameSite.status, 403);
    const evil = await post({ cookie: `session=${token}`, origin: 'https://evil.example' });
    t.equal(evil.status, 403, 'a foreign Origin is refused (by CORS or CSRF, whichever runs first)');
    t.same(await h.mockRequests(), [], 'none reached the mock');

    t.equal(
      (await post({ cookie: `session=${token}`, origin: `http://${host}`, 'sec-fetch-site': 'same-origin' }))
        .status,
      201,
    );
    t.equal(
      (
        await post({
          cookie: `session=${token}`,
          origin: 'http://localhost:10000',
          'sec-fetch-site': 'same-site',
        })
      ).status,
      201,
    );
    t.equal(
      (await post({ authorization: `Bearer ${token}`, 'sec-fetch-site': 'cross-site' })).status,
      201,
      'a bearer token is not a CSRF risk',
    );
    const get = await fetch(`${h.url}/api/receipts`, {
      headers: { cookie: `session=${token}`, 'sec-fetch-site': 'cross-site' },
    });
    t.equal(get.status, 200, 'safe methods are not judged');
    t.equal((await h.mockRequests()).length, 4);
    const audit = await h.audit();
    t.ok(
      audit.some(
        (l) =>
          l.event === 'access_denied' &&
          l.status === 403 &&
          (l.detail as { check?: string } | undefined)?.check === 'sec_fetch_site',
      ),
    );
  },
);
