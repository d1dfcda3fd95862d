/**
 * The JWKS client against a small in-test JWKS server: caching, one fetch in flight,
 * unknown-kid refetch at most once per cooldown (rotation), and failing closed when the
 * endpoint is down, slow or serves garbage, with the reasons shown by authReadiness().
 * Cooldowns and ages run on the fake clock; only the fetch timeout uses real time.
 */
import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Deny, Policy } from '../../../gateway/policy.js';
import { auth, authReadiness } from '../../../policies/auth/index.js';
import { jwksStates, JWKS_PREFIX } from '../../../policies/auth/readiness.js';
import { sharedWithPrefix } from '../../../policies/auth/shared.js';
import type { JwksClient } from '../../../policies/auth/jwks-client.js';
import { compilePolicy, makeContext, makeServices, type TestServices } from '../../helpers/context.js';
import { keyPair, signed, type KeyPair } from './tokens.js';

type Mode = 'ok' | 'down' | 'slow' | 'garbage' | 'not-jwks' | 'huge' | 'redirect';

interface JwksServer {
  url: string;
  mode: Mode;
  keys: KeyPair[];
  hits: number;
  close(): Promise<void>;
}

async function startJwks(keys: KeyPair[]): Promise<JwksServer> {
  const state = { mode: 'ok' as Mode, keys, hits: 0 };
  const server = http.createServer((_req, res) => {
    state.hits += 1;
    switch (state.mode) {
      case 'ok':
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ keys: state.keys.map((k) => k.jwk) }));
        return;
      case 'down':
        res.statusCode = 503;
        res.end('maintenance');
        return;
      case 'slow':
        return; // never answers; the client's timeout must fire
      case 'garbage':
        res.end('<html>oops</html>');
        return;
      case 'not-jwks':
        res.end(JSON.stringify({ keys: 'none' }));
        return;
      case 'huge':
        res.end(JSON.stringify({ keys: [{ kty: 'RSA', n: 'x'.repeat(300_000), e: 'AQAB' }] }));
        return;
      case 'redirect':
        res.statusCode = 302;
        res.setHeader('location', 'http://127.0.0.1:1/jwks.json');
        res.end();
        return;
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  }) as JwksServer;
}

/** Wait until the client has finished `n` fetch attempts (successes + failures). */
async function settled(s: TestServices, n: number): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const st = jwksStates(s)[0];
    if (st !== undefined && st.fetches + st.failures >= n) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`JWKS client did not finish ${n} fetches`);
}

const k1 = await keyPair('RS256', 'k1');
const k2 = await keyPair('RS256', 'k2');
const es = await keyPair('ES256', 'es1');

function jwksConfig(url: string, extra: Record<string, unknown> = {}) {
  return {
    jwt: {
      jwks_url: url,
      cache: { max_entries: 0 },
      jwks: {
        cooldown: '30s',
        cache_max_age: '10m',
        stale_if_error: '1h',
        failure_backoff: '2s',
        timeout: '300ms',
        ...extra,
      },
    },
  };
}

async function call(p: Policy, token: string): Promise<Deny | undefined> {
  return (await p.onRequest!(makeContext({ headers: { authorization: `Bearer ${token}` } }))) as
    Deny | undefined;
}

t.test('keys are fetched once at compile and cached; RS256 and ES256 verify', async (t) => {
  const srv = await startJwks([k1, es]);
  t.teardown(() => srv.close());
  const s = makeServices();
  const p = await compilePolicy(auth, jwksConfig(srv.url), s);
  await settled(s, 1);
  t.same(authReadiness(s), { ok: true, reasons: [], warnings: [] });
  for (let i = 0; i < 5; i++) t.equal(await call(p, await signed(k1)), undefined);
  t.equal(await call(p, await signed(es)), undefined);
  t.equal(srv.hits, 1, 'one fetch for everything');
  t.match(jwksStates(s)[0], { usable: true, keyCount: 2, fetches: 1, failures: 0 });
  s.clock.advance(10 * 60_000);
  t.equal(await call(p, await signed(k1)), undefined, 'stale keys serve while refreshing');
  await settled(s, 2);
  t.equal(srv.hits, 2, 'refreshed after cache_max_age');
});

t.test('rotation: an unknown kid refetches at most once per cooldown, one fetch in flight', async (t) => {
  const srv = await startJwks([k1]);
  t.teardown(() => srv.close());
  const s = makeServices();
  const p = await compilePolicy(auth, jwksConfig(srv.url), s);
  await settled(s, 1);
  srv.keys = [k2]; // the IdP rotated
  const rotated = await signed(k2);
  s.clock.advance(5_000);
  t.match(
    await call(p, rotated),
    { code: 'unauthorized', detail: { reason: 'unknown_key' } },
    'within the cooldown: no refetch',
  );
  t.equal(srv.hits, 1);
  s.clock.advance(25_000);
  const results = await Promise.all(Array.from({ length: 10 }, () => call(p, rotated)));
  t.same(results, Array(10).fill(undefined), 'after the cooldown the new key is fetched');
  t.equal(srv.hits, 2, 'ten concurrent requests, one fetch');
  const bogus = await signed(k1, {}, { kid: 'attacker-chosen' });
  t.match(await call(p, bogus), { detail: { reason: 'unknown_key' } });
  t.match(
    await call(p, await signed(k1)),
    { detail: { reason: 'unknown_key' } },
    'the old key is gone after rotation',
  );
  t.equal(srv.hits, 2, 'bogus kids do not cause fetches during the cooldown');
});

t.test(
  'an unknown kid does not refetch during the failure back-off, even past a shorter cooldown',
  async (t) => {
    const srv = await startJwks([k1]);
    t.teardown(() => srv.close());
    const s = makeServices();
    const p = await compilePolicy(auth, jwksConfig(srv.url, { cooldown: '1s', failure_backoff: '1m' }), s);
    await settled(s, 1);
    srv.mode = 'down';
    const token = await signed(k1, { exp: Math.floor(s.now() / 1000) + 3600 });
    const unknown = () => signed(k2, { exp: Math.floor(s.now() / 1000) + 3600 }, { kid: 'not-published' });
    s.clock.advance(2_000);
    t.match(await call(p, await unknown()), { code: 'unauthorized', detail: { reason: 'unknown_key' } });
    t.equal(srv.hits, 2, 'past the cooldown: one refetch, which fails');
    for (const wait of [2_000, 20_000, 30_000]) {
      s.clock.advance(wait);
      t.match(await call(p, await unknown()), { detail: { reason: 'unknown_key', method: 'jwt' } });
      t.equal(srv.hits, 2, `${wait / 1000}s later, past the cooldown but within the back-off: no fetch`);
    }
    t.equal(await call(p, token), undefined, 'the cached keys keep verifying meanwhile');
    s.clock.advance(10_000);
    t.match(await call(p, await unknown()), { detail: { reason: 'unknown_key' } });
    t.equal(srv.hits, 3, 'after the back-off: the next refetch');
    t.match(jwksStates(s)[0], { failures: 2, consecutiveFailures: 2, usable: true });
  },
);

t.test('rotation: a kid given to a new key refetches at most once per cooldown', async (t) => {
  const srv = await startJwks([k1]);
  t.teardown(() => srv.close());
  const s = makeServices();
  const p = await compilePolicy(auth, jwksConfig(srv.url), s);
  await settled(s, 1);
  const old = await signed(k1);
  t.equal(await call(p, old), undefined, 'the first key verifies');
  const reused = await keyPair('RS256', 'k1'); // the IdP's new key, under the old kid
  srv.keys = [reused];
  const rotated = await signed(reused);
  s.clock.advance(5_000);
  t.match(
    await call(p, rotated),
    { code: 'unauthorized', detail: { reason: 'signature' } },
    'within the cooldown: no refetch',
  );
  t.equal(srv.hits, 1);
  s.clock.advance(25_000);
  const results = await Promise.all(Array.from({ length: 5 }, () => call(p, rotated)));
  t.same(results, Array(5).fill(undefined), 'after the cooldown the new key is fetched and verifies');
  t.equal(srv.hits, 2, 'five concurrent requests, one fetch');
  t.match(await call(p, old), { detail: { reason: 'signature' } }, 'the old key is gone');
  const forged = await signed(await keyPair('RS256', 'k1'));
  t.match(await call(p, forged), { detail: { reason: 'signature' } }, 'a forged signature is refused');
  t.equal(srv.hits, 2, 'bad signatures do not cause fetches during the cooldown');
  s.clock.advance(31_000);
  t.match(await call(p, forged), { detail: { reason: 'signature' } }, 'after the cooldown: refused');
  t.equal(srv.hits, 3, 'one refetch per cooldown');
});

t.test('JWKS down from the start: fail closed, back off, readiness says why, recover', async (t) => {
  const srv = await startJwks([k1]);
  t.teardown(() => srv.close());
  srv.mode = 'down';
  const s = makeServices();
  const p = await compilePolicy(auth, jwksConfig(srv.url), s);
  await settled(s, 1);
  const token = await signed(k1);
  const v = await call(p, token);
  t.equal(v?.code, 'unauthorized');
  t.same(v?.detail, { reason: 'key_unavailable', method: 'jwt' });
  t.equal(v?.headers?.['www-authenticate'], 'Bearer realm="receipt-gateway", error="invalid_token"');
  t.equal(srv.hits, 1, 'within the failure back-off: no new fetch');
  const r = authReadiness(s);
  t.equal(r.ok, false);
  t.same(r.reasons, [`jwks ${srv.url}: no usable keys (HTTP status 503; 1 failed fetches)`]);
  t.match(s.logged, [{ level: 'warn', obj: { error: 'HTTP status 503' } }]);
  s.clock.advance(2_000);
  t.match(await call(p, token), { detail: { reason: 'key_unavailable' } });
  t.equal(srv.hits, 2, 'retried after the back-off');
  t.match(jwksStates(s)[0], { failures: 2, consecutiveFailures: 2, usable: false });
  srv.mode = 'ok';
  s.clock.advance(2_000);
  t.equal(await call(p, token), undefined, 'recovered');
  t.same(authReadiness(s), { ok: true, reasons: [], warnings: [] });
  const m = await s.metrics.authFailures.get();
  t.equal(m.values.find((x) => x.labels.reason === 'key_unavailable')?.value, 2);
});

t.test('JWKS slow: the fetch times out and the request fails closed', async (t) => {
  const srv = await startJwks([k1]);
  t.teardown(() => srv.close());
  srv.mode = 'slow';
  const s = makeServices();
  const p = await compilePolicy(auth, jwksConfig(srv.url, { timeout: '150ms' }), s);
  await settled(s, 1);
  t.match(await call(p, await signed(k1)), { code: 'unauthorized', detail: { reason: 'key_unavailable' } });
  const r = authReadiness(s);
  t.equal(r.ok, false);
  t.match(r.reasons[0], /no usable keys \(timed out after 150ms; 1 failed fetches\)/);
});

t.test('JWKS garbage: not JSON, not a JWKS, too large, a redirect', async (t) => {
  const expected: [Mode, RegExp][] = [
    ['garbage', /response is not JSON/],
    ['not-jwks', /not a JWKS with keys/],
    ['huge', /larger than 262144 bytes/],
    ['redirect', /HTTP status 302/],
  ];
  for (const [mode, why] of expected) {
    const srv = await startJwks([k1]);
    srv.mode = mode;
    const s = makeServices();
    const p = await compilePolicy(auth, jwksConfig(srv.url), s);
    await settled(s, 1);
    t.match(await call(p, await signed(k1)), { detail: { reason: 'key_unavailable' } }, mode);
    const r = authReadiness(s);
    t.equal(r.ok, false, mode);
    t.match(r.reasons[0], why, mode);
    await p.close!();
    await srv.close();
  }
});

t.test('refresh failures keep serving cached keys until stale_if_error runs out', async (t) => {
  const srv = await startJwks([k1]);
  t.teardown(() => srv.close());
  const s = makeServices();
  const p = await compilePolicy(auth, jwksConfig(srv.url, { stale_if_error: '5m' }), s);
  await settled(s, 1);
  srv.mode = 'down';
  s.clock.advance(10 * 60_000);
  const token = await signed(k1, { exp: Math.floor(s.now() / 1000) + 3600 });
  t.equal(await call(p, token), undefined, 'stale keys still verify');
  await settled(s, 2);
  const r = authReadiness(s);
  t.equal(r.ok, true);
  t.same(r.reasons, []);
  t.match(r.warnings[0], /serving cached keys, last refresh failed \(HTTP status 503/);
  s.clock.advance(5 * 60_000);
  t.match(
    await call(p, token),
    { detail: { reason: 'key_unavailable' } },
    'past stale_if_error: fail closed',
  );
  t.equal(authReadiness(s).ok, false);
});

t.test(
  'routes with the same JWKS settings share one client; it survives a reload and is released',
  async (t) => {
    const srv = await startJwks([k1]);
    t.teardown(() => srv.close());
    const s = makeServices();
    const a = await compilePolicy(auth, jwksConfig(srv.url), s);
    const b = await compilePolicy(auth, { ...jwksConfig(srv.url), roles: ['user'] }, s);
    await settled(s, 1);
    t.equal(jwksStates(s).length, 1);
    t.equal(await call(a, await signed(k1)), undefined);
    t.equal(await call(b, await signed(k1)), undefined);
    // reload: the new generation compiles before the old one is closed
    const a2 = await compilePolicy(auth, jwksConfig(srv.url), s);
    await a.close!();
    await b.close!();
    t.equal(await call(a2, await signed(k1)), undefined);
    t.equal(srv.hits, 1, 'keys carried over the reload');
    await a2.close!();
    t.equal(jwksStates(s).length, 0);
    t.same(authReadiness(s), { ok: true, reasons: [], warnings: [] });
  },
);

t.test('an HS256 token is refused on a JWKS route (algorithm pinned), without a fetch', async (t) => {
  const srv = await startJwks([k1]);
  t.teardown(() => srv.close());
  const s = makeServices();
  const p = await compilePolicy(auth, jwksConfig(srv.url), s);
  await settled(s, 1);
  const { hs } = await import('./tokens.js');
  t.match(await call(p, await hs({}, JSON.stringify(k1.jwk), { kid: 'k1' })), {
    detail: { reason: 'algorithm' },
  });
  t.equal(srv.hits, 1);
});

t.test(
  'closing the last policy aborts a fetch in flight (validate does not wait for the JWKS)',
  async (t) => {
    const srv = await startJwks([k1]);
    t.teardown(() => srv.close());
    srv.mode = 'slow';
    const s = makeServices();
    const p = await compilePolicy(auth, jwksConfig(srv.url, { timeout: '60s' }), s);
    const [client] = sharedWithPrefix<JwksClient>(s, JWKS_PREFIX);
    const pending = client!.refresh();
    await p.close!();
    await t.rejects(pending, { name: 'AbortError' });
    await t.rejects(client!.refresh(), { message: 'client disposed' });
    t.same(s.logged, [], 'a disposed client does not log failures');
  },
);
