/**
 * CSRF when a browser sends neither Origin nor Sec-Fetch-Site (Firefox before 70 on a
 * cross-site form post): a Referer naming another site was not looked at, so the
 * cookie-authenticated POST reached the service.
 */
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
const token = await h.login('alice');
const own = new URL(h.url).origin;
const receipt = JSON.stringify({ merchant: 'Cafe', total: 4.5, date: '2024-05-01' });

const send = (method: string, path: string, headers: Record<string, string>) =>
  fetch(`${h.url}${path}`, {
    method,
    headers: { 'content-type': 'application/json', cookie: `session=${token}`, ...headers },
    ...(method === 'DELETE' ? {} : { body: receipt }),
  });

t.test('a cross-site Referer without Origin or Sec-Fetch-Site is refused', async (t) => {
  await h.clearMock();
  const cases: [string, string, string][] = [
    ['POST', '/api/receipts', 'https://evil.example/attack.html'],
    ['PUT', '/api/receipts/1', 'https://evil.example/'],
    ['DELETE', '/api/receipts/1', 'http://localhost:10000.evil.example/x'],
    ['POST', '/api/receipts', 'not a url'],
  ];
  for (const [method, path, referer] of cases) {
    const r = await send(method, path, { referer });
    t.equal(r.status, 403, `${method} ${referer}`);
    const body = (await r.json()) as Record<string, unknown>;
    t.same(body, {
      error: 'csrf_rejected',
      message: 'Cross-site request refused.',
      request_id: r.headers.get('x-request-id'),
    });
    const line = (await h.audit()).find((l) => l.request_id === r.headers.get('x-request-id'));
    t.match(line, { event: 'access_denied', status: 403, method, detail: { check: 'referer' } });
  }
  t.same(await h.mockRequests(), [], 'none reached the service');
});

t.test('an own or allowed Referer, or none, still passes; header auth is not judged', async (t) => {
  await h.clearMock();
  t.equal((await send('POST', '/api/receipts', { referer: `${own}/app/page?x=1` })).status, 201);
  t.equal((await send('POST', '/api/receipts', { referer: 'http://localhost:10000/' })).status, 201);
  t.equal((await send('POST', '/api/receipts', {})).status, 201, 'no Referer: not a browser');
  const bearer = await fetch(`${h.url}/api/receipts`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${token}`,
      referer: 'https://evil.example/',
    },
    body: receipt,
  });
  t.equal(bearer.status, 201, 'a bearer token is not a CSRF risk');
  t.equal((await h.mockRequests()).length, 4);
});
