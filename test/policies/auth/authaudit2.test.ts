/**
 * Second authentication audit: JWKS endpoints as an operator writes them, against a real
 * JWKS server on a local port. A `jwks_url` with a user name or password is refused at
 * compile (fetch() cannot send it and its error named the whole URL, password included, in
 * /readyz and the logs); the failure log names the endpoint without its query. An API key
 * header or token cookie name that no request can carry is refused at start.
 */
import t, { type Test } from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '../../../gateway/errors.js';
import { auth, authReadiness } from '../../../policies/auth/index.js';
import { jwksStates } from '../../../policies/auth/readiness.js';
import { startHarness } from '../../helpers/harness.js';
import { compilePolicy, makeServices, type TestServices } from '../../helpers/context.js';
import { keyPair } from './tokens.js';

const k1 = await keyPair('RS256', 'k1');

interface JwksServer {
  /** base URL, e.g. http://127.0.0.1:4711 */
  readonly base: string;
  /** request targets received, in order */
  readonly seen: string[];
  status: number;
}

async function startJwks(t: Test): Promise<JwksServer> {
  const state = { seen: [] as string[], status: 200 };
  const server = http.createServer((req, res) => {
    state.seen.push(req.url ?? '');
    res.statusCode = state.status;
    res.setHeader('content-type', 'application/json');
    res.end(state.status === 200 ? JSON.stringify({ keys: [k1.jwk] }) : 'maintenance');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, { base: `http://127.0.0.1:${port}` });
}

/** Wait until the JWKS client has finished `n` fetch attempts. */
async function settled(s: TestServices, n: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const st = jwksStates(s)[0];
    if (st !== undefined && st.fetches + st.failures >= n) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`JWKS client did not finish ${n} fetches`);
}

t.test('a jwks_url with a user name or password is refused, the password named nowhere', async (t) => {
  const srv = await startJwks(t);
  const host = srv.base.slice('http://'.length);
  for (const userinfo of ['idp:s3cret-pw@', 'idp@', ':s3cret-pw@']) {
    const s = makeServices();
    const err = await compilePolicy(
      auth,
      { jwt: { jwks_url: `http://${userinfo}${host}/jwks.json` } },
      s,
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.type(err, ConfigError, userinfo);
    t.same((err as ConfigError | undefined)?.path, ['policies', 'auth', 'jwt', 'jwks_url'], userinfo);
    t.match((err as Error | undefined)?.message, /must not contain a user name or password/, userinfo);
    t.notMatch(
      (err as Error | undefined)?.message ?? '',
      /s3cret|idp/,
      `${userinfo}: the message does not echo the URL`,
    );
    t.same(jwksStates(s), [], `${userinfo}: no JWKS client is left behind`);
  }
  // the same URL without credentials is fine
  const s = makeServices();
  const p = await compilePolicy(auth, { jwt: { jwks_url: `${srv.base}/jwks.json` } }, s);
  t.teardown(() => p.close!());
  await settled(s, 1);
  t.same(authReadiness(s), { ok: true, reasons: [], warnings: [] });
  t.same(srv.seen, ['/jwks.json'], 'only the URL without credentials was fetched');
});

t.test('JWKS_URL with a password: the gateway does not start and says which key is wrong', async (t) => {
  const srv = await startJwks(t);
  const url = srv.base.replace('http://', 'http://idp:s3cret-pw@');
  let message = '(started)';
  try {
    const h = await startHarness({
      env: { JWKS_URL: `${url}/jwks.json` },
      config: 'audit: { enabled: false }',
    });
    await h.close();
  } catch (err) {
    message = (err as Error).message;
  }
  t.match(message, /policies\.auth\.jwt\.jwks_url: jwks_url must not contain a user name or password/);
  t.notMatch(message, /s3cret-pw/);
  t.same(srv.seen, [], 'the JWKS server was never asked');
});

t.test('a failed fetch is logged with the endpoint, not its query', async (t) => {
  const srv = await startJwks(t);
  srv.status = 503;
  const s = makeServices();
  const p = await compilePolicy(auth, { jwt: { jwks_url: `${srv.base}/jwks.json?tenant_key=s3cret-q` } }, s);
  t.teardown(() => p.close!());
  await settled(s, 1);
  t.same(srv.seen, ['/jwks.json?tenant_key=s3cret-q'], 'the query is sent to the endpoint');
  t.same(
    s.logged.map((l) => l.obj),
    [{ jwks_url: `${srv.base}/jwks.json`, error: 'HTTP status 503', failures: 1 }],
  );
  t.same(authReadiness(s).reasons, [
    `jwks ${srv.base}/jwks.json: no usable keys (HTTP status 503; 1 failed fetches)`,
  ]);
});

/** The error a start with this config fails with (closing the gateway if it did start). */
async function startError(config: string): Promise<string> {
  try {
    const h = await startHarness({ config: `audit: { enabled: false }\n${config}` });
    await h.close();
  } catch (err) {
    return (err as Error).message;
  }
  return '(started)';
}

t.test('an API key header or token cookie name no request can carry is refused at start', async (t) => {
  // each would have made every API key / cookie token "missing": 401 for every caller
  for (const header of ['X-API-Key ', 'X-API-Key:', 'X API Key']) {
    t.match(
      await startError(`policies: { auth: { api_keys: { header: ${JSON.stringify(header)} } } }`),
      /policies\.auth\.api_keys\.header: invalid value: request header carrying the key: a header name/,
      JSON.stringify(header),
    );
  }
  for (const cookie of ['session id', 'session=', ' session', 'a;b']) {
    const message = await startError(`policies: { auth: { jwt: { cookie: ${JSON.stringify(cookie)} } } }`);
    t.ok(
      message.includes(
        `policies.auth.jwt.cookie: invalid value ${JSON.stringify(cookie)}: cookie carrying the token for browser sessions; empty = none; a cookie name`,
      ),
      `${JSON.stringify(cookie)}: ${message}`,
    );
  }
});
