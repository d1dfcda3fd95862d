import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startHarness } from '../helpers/harness.js';
import { keyPair, signed } from '../policies/auth/tokens.js';
import { eventually } from '../helpers/wait.js';

/**
 * A request runs under the generation it started on until it ends, however long after a
 * reload that is: the replaced generation is retired (its policies closed) once its last
 * request ended, not after a fixed delay (listen.shutdown_timeout). Before, a request still
 * waiting for its JWKS keys when that delay ran out had its JWKS client disposed under it
 * (the auth policy gave back what it held) and got 401 key_unavailable.
 */
t.test('a request outliving its generation keeps its policies; retired once it ended', async (t) => {
  const pair = await keyPair('RS256', 'k1');
  // a JWKS endpoint that answers only when told to (a slow identity provider)
  const waiting: http.ServerResponse[] = [];
  let answering = false;
  const answer = (res: http.ServerResponse) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: [pair.jwk] }));
  };
  const jwks = http.createServer((_req, res) => (answering ? answer(res) : waiting.push(res)));
  await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        jwks.closeAllConnections();
        jwks.close(() => resolve());
      }),
  );
  const url = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`;
  const config = (timeout: string) =>
    `listen: { shutdown_timeout: 200ms }\n` +
    `policies: { auth: { jwt: { algorithms: [RS256], jwks_url: "${url}", jwks: { timeout: ${timeout} } } } }`;
  const h = await startHarness({ config: config('5s') });
  t.teardown(() => h.close());
  const jwksClients = () =>
    [...h.gateway.services.persistent.keys()].filter((k) => k.startsWith('auth:jwks:'));
  t.equal(jwksClients().length, 1, 'one JWKS client, fetching its keys');

  const now = Math.floor(Date.now() / 1000);
  const token = await signed(pair, { iat: now, exp: now + 3600 });
  await h.clearMock();
  const slow = fetch(`${h.url}/api/slow?ms=0`, {
    headers: { authorization: `Bearer ${token}`, 'x-request-id': 'outlives-its-generation' },
  });
  await eventually('the request waits for the keys', () => waiting.length > 0);
  // a reload that changes the JWKS settings: the new generation has a client of its own
  await h.reload(config('6s'));
  t.equal(jwksClients().length, 2, 'the old generation still holds its client');
  // well past the old generation's shutdown_timeout (200 ms)
  await new Promise((resolve) => setTimeout(resolve, 600));
  t.equal(jwksClients().length, 2, 'the replaced generation is not retired while its request runs');
  answering = true;
  for (const res of waiting.splice(0)) answer(res);

  const r = await slow;
  t.equal(r.status, 200, 'the request authenticated with the keys its generation fetched');
  t.same(await r.json(), { slept_ms: 0 });
  t.ok(
    (await h.mockRequests()).some((m) => m.headers['x-request-id'] === 'outlives-its-generation'),
    'and reached the upstream',
  );
  await eventually(
    'the replaced generation is retired once its request ended',
    () => jwksClients().length === 1,
  );
  t.match(jwksClients()[0], /\|6000\|/, 'the client left is the new generation’s (timeout 6 s)');
});
