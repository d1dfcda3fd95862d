import t from 'tap';
import type { Deny, Outcome } from '../../../gateway/policy.js';
import { ConfigError } from '../../../gateway/errors.js';
import { auth, hashApiKey, rolesFromClaims, readCookie } from '../../../policies/auth/index.js';
import { compilePolicy, makeContext, makeServices, type TestServices } from '../../helpers/context.js';
import { SECRET, NOW_S, hs, keyPair } from './tokens.js';

const KEY = 'rk_live_7f3c9a1e5b2d4f6a8c0e1b3d5f7a9c1e';
const KEY2 = 'rk_live_second_key_0123456789abcdef0123';

async function failures(s: TestServices, method: string, reason: string): Promise<number> {
  const m = await s.metrics.authFailures.get();
  return m.values.find((v) => v.labels.method === method && v.labels.reason === reason)?.value ?? 0;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const done = (status: number): Outcome => ({
  status,
  decision: 'allow',
  deny: undefined,
  deniedBy: undefined,
});

t.test('a valid HS256 token sets the identity and the X-Auth-* upstream headers', async (t) => {
  const s = makeServices();
  const p = await compilePolicy(auth, { jwt: { secret: SECRET } }, s);
  const ctx = makeContext({
    target: '/api/receipts',
    headers: bearer(await hs({ sub: 'alice', role: 'user' })),
  });
  t.equal(await p.onRequest!(ctx), undefined);
  t.match(ctx.identity, { subject: 'alice', roles: ['user'], method: 'jwt', via: 'header' });
  t.equal(ctx.identity?.claims?.sub, 'alice');
  t.same(ctx.upstreamHeaders, { 'x-auth-subject': 'alice', 'x-auth-roles': 'user', 'x-auth-method': 'jwt' });
  t.same([...ctx.dropUpstreamHeaders], [], 'Authorization is forwarded by default');
  t.same(s.audited, [], 'auth_success waits for the response');
  p.onDone!(ctx, done(201));
  t.same(
    s.audited.map((a) => [
      a.event,
      a.fields.subject,
      a.fields.auth_method,
      a.fields.decision,
      a.fields.status,
    ]),
    [['auth_success', 'alice', 'jwt', 'allow', 201]],
    'written when the request is over, with the status the client got',
  );
});

t.test('auth_success of a caller refused later carries the refusal status', async (t) => {
  const s = makeServices();
  const p = await compilePolicy(auth, { jwt: { secret: SECRET }, roles: ['admin'] }, s);
  const ctx = makeContext({ headers: bearer(await hs({ sub: 'alice', role: 'user' })) });
  t.match(await p.onRequest!(ctx), { code: 'forbidden' });
  t.same(s.audited, []);
  p.onDone!(ctx, {
    status: 403,
    decision: 'deny',
    deny: { code: 'forbidden' },
    deniedBy: 'auth',
  });
  t.same(
    s.audited.map((a) => [a.event, a.fields.subject, a.fields.decision, a.fields.status]),
    [['auth_success', 'alice', 'allow', 403]],
  );
  p.onDone!(makeContext({}), done(401));
  t.equal(s.audited.length, 1, 'nothing for a request that did not authenticate');
});

t.test('missing credentials: 401 without an error parameter, counted as method none', async (t) => {
  const s = makeServices();
  const p = await compilePolicy(auth, { jwt: { secret: SECRET } }, s);
  const variants: Record<string, string>[] = [
    {},
    { authorization: 'Basic YWxpY2U6cHc=' },
    { cookie: 'session=abc' },
  ];
  for (const headers of variants) {
    const v = (await p.onRequest!(makeContext({ headers }))) as Deny;
    t.equal(v.code, 'unauthorized');
    t.equal(v.headers?.['www-authenticate'], 'Bearer realm="receipt-gateway"');
    t.same(v.detail, { reason: 'missing', method: 'none' });
    t.equal(v.message, 'Authentication is required: credentials are missing.');
  }
  t.equal(await failures(s, 'none', 'missing'), 3);
  t.same(s.audited, [], 'no auth_success');
});

t.test('the bearer scheme is case-insensitive', async (t) => {
  const p = await compilePolicy(auth, { jwt: { secret: SECRET } });
  const ctx = makeContext({ headers: { authorization: `bearer ${await hs()}` } });
  t.equal(await p.onRequest!(ctx), undefined);
});

t.test('API keys: hashed in the config, env key, constant-time match, key id upstream', async (t) => {
  const s = makeServices();
  const p = await compilePolicy(
    auth,
    {
      require: ['api_key'],
      api_keys: {
        keys: [
          { id: 'ci', hash: hashApiKey(KEY), roles: ['user', 'uploader'], rate_limit: '100/minute' },
          { id: 'ops', hash: hashApiKey(KEY2), roles: ['admin'] },
        ],
        env_key: 'env-provided-api-key-0123456789',
      },
    },
    s,
  );
  const ctx = makeContext({ headers: { 'X-API-Key': KEY } });
  t.equal(await p.onRequest!(ctx), undefined);
  t.same(ctx.identity, {
    subject: 'api_key:ci',
    roles: ['user', 'uploader'],
    method: 'api_key',
    keyId: 'ci',
    via: 'header',
  });
  t.same(ctx.upstreamHeaders, {
    'x-auth-subject': 'api_key:ci',
    'x-auth-roles': 'user,uploader',
    'x-auth-method': 'api_key',
    'x-auth-key-id': 'ci',
  });
  t.same(ctx.locals.get('auth'), {
    keyId: 'ci',
    rateLimit: [{ count: 100, windowMs: 60_000, text: '100/minute' }],
  });
  p.onDone!(ctx, done(200));
  t.match(s.audited[0], {
    event: 'auth_success',
    fields: { auth_method: 'api_key', key_id: 'ci', status: 200 },
  });
  t.notMatch(JSON.stringify(s.audited), KEY, 'the key itself is never audited');

  const envCtx = makeContext({ headers: { 'x-api-key': 'env-provided-api-key-0123456789' } });
  t.equal(await p.onRequest!(envCtx), undefined);
  t.same(envCtx.identity?.roles, ['user']);
  t.equal(envCtx.identity?.keyId, 'env');

  const bad = (await p.onRequest!(makeContext({ headers: { 'x-api-key': `${KEY}x` } }))) as Deny;
  t.equal(bad.code, 'unauthorized');
  t.same(bad.detail, { reason: 'invalid_key', method: 'api_key' });
  t.equal(bad.message, 'Authentication failed: the API key is not valid.');
  t.equal(await failures(s, 'api_key', 'invalid_key'), 1);

  const dup = (await p.onRequest!(makeContext({ headers: { 'x-api-key': [KEY, KEY2] } }))) as Deny;
  t.same(dup.detail, { reason: 'malformed', method: 'api_key' });
  const empty = (await p.onRequest!(makeContext({ headers: { 'x-api-key': '  ' } }))) as Deny;
  t.same(empty.detail, { reason: 'malformed', method: 'api_key' });
});

t.test('a custom API key header name', async (t) => {
  const p = await compilePolicy(auth, {
    require: ['api_key'],
    api_keys: { header: 'X-Receipt-Key', keys: [{ id: 'a', hash: hashApiKey(KEY) }] },
  });
  const ctx = makeContext({ headers: { 'x-receipt-key': KEY } });
  t.equal(await p.onRequest!(ctx), undefined);
  const v = (await p.onRequest!(makeContext({ headers: { 'x-api-key': KEY } }))) as Deny;
  t.equal(v.detail?.reason, 'missing');
});

t.test(
  'require is any-of, in order; credentials of a kind the route does not accept are ignored',
  async (t) => {
    const keys = { keys: [{ id: 'ci', hash: hashApiKey(KEY) }] };
    const jwtOnly = await compilePolicy(auth, { require: ['jwt'], jwt: { secret: SECRET }, api_keys: keys });
    const keyOnly = await compilePolicy(auth, {
      require: ['api_key'],
      jwt: { secret: SECRET },
      api_keys: keys,
    });
    const both = await compilePolicy(auth, {
      require: ['jwt', 'api_key'],
      jwt: { secret: SECRET },
      api_keys: keys,
    });
    const token = await hs();

    t.match(await jwtOnly.onRequest!(makeContext({ headers: { 'x-api-key': KEY } })), {
      detail: { reason: 'missing' },
    });
    t.match(await keyOnly.onRequest!(makeContext({ headers: bearer(token) })), {
      detail: { reason: 'missing' },
    });
    const a = makeContext({ headers: { 'x-api-key': KEY } });
    t.equal(await both.onRequest!(a), undefined);
    t.equal(a.identity?.method, 'api_key');
    const b = makeContext({ headers: bearer(token) });
    t.equal(await both.onRequest!(b), undefined);
    t.equal(b.identity?.method, 'jwt');
    // both present: the first in require order decides, a bad token is not rescued by a good key
    const c = makeContext({ headers: { ...bearer('bad.token.here'), 'x-api-key': KEY } });
    t.match(await both.onRequest!(c), { code: 'unauthorized', detail: { method: 'jwt' } });
  },
);

t.test('require [none]: a public route does nothing, even with broken credentials', async (t) => {
  const s = makeServices();
  const p = await compilePolicy(auth, { require: ['none'], jwt: { secret: '' } }, s);
  const ctx = makeContext({ headers: { authorization: 'Bearer garbage' } });
  t.equal(p.onRequest, undefined);
  t.equal(ctx.identity, undefined);
  t.equal(s.persistent.size, 0, 'no JWKS client or cache is created for a public route');
});

t.test('roles: any-of; 403 with insufficient_scope', async (t) => {
  const s = makeServices();
  const p = await compilePolicy(auth, { roles: ['admin', 'auditor'], jwt: { secret: SECRET } }, s);
  const user = makeContext({ headers: bearer(await hs({ role: 'user' })) });
  const v = (await p.onRequest!(user)) as Deny;
  t.equal(v.code, 'forbidden');
  t.equal(v.headers?.['www-authenticate'], 'Bearer realm="receipt-gateway", error="insufficient_scope"');
  t.same(v.detail, { reason: 'insufficient_role', method: 'jwt' });
  t.equal(await failures(s, 'jwt', 'missing'), 0, '403s are not authentication failures');
  const admin = makeContext({ headers: bearer(await hs({ sub: 'root', role: 'admin' })) });
  t.equal(await p.onRequest!(admin), undefined);
  const auditor = makeContext({ headers: bearer(await hs({ sub: 'eve', role: 'auditor' })) });
  t.equal(await p.onRequest!(auditor), undefined);
});

t.test('roles_claim paths: role, roles, realm_access.roles, scope', async (t) => {
  const cases: [string, Record<string, unknown>, string[]][] = [
    ['role', { role: 'admin' }, ['admin']],
    ['roles', { roles: ['user', 'admin', 7, 'user'] }, ['user', 'admin']],
    [
      'realm_access.roles',
      { realm_access: { roles: ['offline_access', 'admin'] } },
      ['offline_access', 'admin'],
    ],
    ['scope', { scope: 'read:receipts  write:receipts admin' }, ['read:receipts', 'write:receipts', 'admin']],
    ['realm_access.roles', { realm_access: 'admin' }, []],
    ['roles', { roles: ['ok', 'bad,role', 'x'.repeat(65), 'a b'] }, ['ok']],
  ];
  for (const [claim, claims, roles] of cases) {
    t.same(rolesFromClaims(claims, claim.split('.')), roles, claim);
    const p = await compilePolicy(auth, { roles: [], jwt: { secret: SECRET, roles_claim: claim } });
    const ctx = makeContext({ headers: bearer(await hs({ role: undefined, ...claims })) });
    t.equal(await p.onRequest!(ctx), undefined);
    t.same(ctx.identity?.roles, roles);
    t.equal(ctx.upstreamHeaders['x-auth-roles'], roles.join(','));
  }
  const admin = await compilePolicy(auth, {
    roles: ['admin'],
    jwt: { secret: SECRET, roles_claim: 'scope' },
  });
  t.equal(
    await admin.onRequest!(makeContext({ headers: bearer(await hs({ scope: 'read admin' })) })),
    undefined,
  );
});

t.test('a non-ASCII subject is percent-encoded for the header', async (t) => {
  const p = await compilePolicy(auth, { jwt: { secret: SECRET } });
  const ctx = makeContext({ headers: bearer(await hs({ sub: 'zoë' })) });
  t.equal(await p.onRequest!(ctx), undefined);
  t.equal(ctx.upstreamHeaders['x-auth-subject'], 'zo%C3%AB');
});

t.test('session cookie: token from the named cookie, Authorization first', async (t) => {
  const p = await compilePolicy(auth, { jwt: { secret: SECRET, cookie: 'session' } });
  const token = await hs({ sub: 'bob' });
  const ctx = makeContext({ headers: { cookie: `theme=dark; session=${token}; other=1` } });
  t.equal(await p.onRequest!(ctx), undefined);
  t.equal(ctx.identity?.via, 'cookie');
  t.equal(ctx.identity?.subject, 'bob');
  const both = makeContext({
    headers: { ...bearer(await hs({ sub: 'carol' })), cookie: `session=${token}` },
  });
  t.equal(await p.onRequest!(both), undefined);
  t.equal(both.identity?.subject, 'carol');
  t.equal(both.identity?.via, 'header');
  const broken = (await p.onRequest!(makeContext({ headers: { cookie: 'session=not-a-jwt' } }))) as Deny;
  t.same(broken.detail, { reason: 'malformed', method: 'jwt' });
  t.equal(readCookie('a=1; session="quoted"', 'session'), 'quoted');
  t.equal(readCookie('xsession=1; session=2', 'session'), '2');
  t.equal(readCookie('a=1', 'session'), undefined);
});

t.test('forward_authorization: false strips Authorization and the API key header upstream', async (t) => {
  const p = await compilePolicy(auth, {
    forward_authorization: false,
    jwt: { secret: SECRET },
    api_keys: { keys: [{ id: 'ci', hash: hashApiKey(KEY) }] },
  });
  const ctx = makeContext({ headers: bearer(await hs()) });
  t.equal(await p.onRequest!(ctx), undefined);
  t.same([...ctx.dropUpstreamHeaders].sort(), ['authorization', 'x-api-key']);
});

t.test('auth_success sampling', async (t) => {
  const s0 = makeServices();
  const p0 = await compilePolicy(auth, { audit_success_sample_rate: 0, jwt: { secret: SECRET } }, s0);
  const token = await hs();
  for (let i = 0; i < 5; i++) {
    const ctx = makeContext({ headers: bearer(token) });
    t.equal(await p0.onRequest!(ctx), undefined);
    p0.onDone!(ctx, done(200));
  }
  t.same(s0.audited, []);
  const s1 = makeServices();
  const p1 = await compilePolicy(auth, { jwt: { secret: SECRET } }, s1);
  for (let i = 0; i < 5; i++) {
    const ctx = makeContext({ headers: bearer(token) });
    await p1.onRequest!(ctx);
    p1.onDone!(ctx, done(200));
  }
  t.equal(s1.audited.length, 5);
});

t.test('verified-token cache: hot tokens are looked up, never served past exp', async (t) => {
  const s = makeServices();
  const p = await compilePolicy(auth, { jwt: { secret: SECRET, clock_tolerance: '0s' } }, s);
  const token = await hs({ exp: NOW_S + 60 });
  const first = p.onRequest!(makeContext({ headers: bearer(token) }));
  t.ok(first instanceof Promise, 'the first verification is asynchronous');
  t.equal(await first, undefined);
  const second = makeContext({ headers: bearer(token) });
  const v = p.onRequest!(second);
  t.equal(v, undefined, 'a cache hit answers synchronously');
  t.equal(second.identity?.subject, 'alice');
  s.clock.advance(59_999);
  t.equal(p.onRequest!(makeContext({ headers: bearer(token) })), undefined);
  s.clock.advance(1);
  const expired = (await p.onRequest!(makeContext({ headers: bearer(token) }))) as Deny;
  t.same(expired.detail, { reason: 'expired', method: 'jwt' });
});

t.test('verified-token cache: max_ttl bounds reuse; max_entries 0 disables it', async (t) => {
  const s = makeServices();
  const p = await compilePolicy(auth, { jwt: { secret: SECRET, cache: { max_ttl: '10s' } } }, s);
  const token = await hs();
  await p.onRequest!(makeContext({ headers: bearer(token) }));
  t.equal(p.onRequest!(makeContext({ headers: bearer(token) })), undefined);
  s.clock.advance(10_000);
  const again = p.onRequest!(makeContext({ headers: bearer(token) }));
  t.ok(again instanceof Promise, 're-verified after max_ttl');
  t.equal(await again, undefined);

  const off = await compilePolicy(auth, { jwt: { secret: SECRET, cache: { max_entries: 0 } } });
  await off.onRequest!(makeContext({ headers: bearer(token) }));
  t.ok(off.onRequest!(makeContext({ headers: bearer(token) })) instanceof Promise);
});

t.test('caches are shared by identical settings, separate otherwise, and released on close', async (t) => {
  const s = makeServices();
  const a = await compilePolicy(auth, { jwt: { secret: SECRET } }, s);
  const b = await compilePolicy(auth, { roles: ['admin'], jwt: { secret: SECRET } }, s);
  t.equal(s.persistent.size, 1, 'roles do not change verification: one shared cache');
  const token = await hs({ role: 'admin' });
  await a.onRequest!(makeContext({ headers: bearer(token) }));
  t.equal(
    b.onRequest!(makeContext({ headers: bearer(token) })),
    undefined,
    'verified by route a, a hit for route b',
  );
  const c = await compilePolicy(auth, { jwt: { secret: SECRET, audience: 'x' } }, s);
  t.equal(s.persistent.size, 2, 'another audience: another cache');
  t.match(await c.onRequest!(makeContext({ headers: bearer(token) })), { detail: { reason: 'claims' } });
  await a.close!();
  t.equal(s.persistent.size, 2, 'still held by b');
  await b.close!();
  await c.close!();
  t.equal(s.persistent.size, 0);
});

t.test('a changed secret is a different cache (a token of the old secret is re-verified)', async (t) => {
  const s = makeServices();
  const oldP = await compilePolicy(auth, { jwt: { secret: SECRET } }, s);
  const token = await hs();
  t.equal(await oldP.onRequest!(makeContext({ headers: bearer(token) })), undefined);
  const newP = await compilePolicy(auth, { jwt: { secret: 'rotated-secret-abcdefghijklmnopqrstuvwxyz' } }, s);
  await oldP.close!();
  t.match(await newP.onRequest!(makeContext({ headers: bearer(token) })), {
    detail: { reason: 'signature' },
  });
});

t.test(
  'static public keys: PEM and JWK, RS256 / ES256 / EdDSA, kid selection and keys without kid',
  async (t) => {
    const rs = await keyPair('RS256', 'rs1');
    const es = await keyPair('ES256', 'es1');
    const ed = await keyPair('EdDSA', 'ed1');
    const p = await compilePolicy(auth, {
      jwt: {
        public_keys: [{ kid: 'rs1', pem: rs.pem }, { jwk: es.jwk }, { pem: ed.pem }],
      },
    });
    const { signed } = await import('./tokens.js');
    for (const [pair, header] of [
      [rs, {}],
      [es, {}],
      [ed, { kid: null }],
    ] as const) {
      const ctx = makeContext({ headers: bearer(await signed(pair, { sub: pair.alg }, header)) });
      t.equal(await p.onRequest!(ctx), undefined, pair.alg);
      t.equal(ctx.identity?.subject, pair.alg);
    }
    // two RSA keys without kid: both are tried
    const rs2 = await keyPair('RS256', 'unused');
    const two = await compilePolicy(auth, { jwt: { public_keys: [{ pem: rs.pem }, { pem: rs2.pem }] } });
    const ctx = makeContext({ headers: bearer(await signed(rs2, {}, { kid: null })) });
    t.equal(await two.onRequest!(ctx), undefined);
    const foreign = await keyPair('RS256', 'x');
    t.match(
      await two.onRequest!(makeContext({ headers: bearer(await signed(foreign, {}, { kid: null })) })),
      {
        detail: { reason: 'signature' },
      },
    );
  },
);

t.test('config errors are ConfigErrors with the key path', async (t) => {
  const rs = await keyPair('RS256', 'k');
  const { exportPKCS8, generateKeyPair } = await import('jose');
  const priv = await exportPKCS8((await generateKeyPair('RS256', { extractable: true })).privateKey);
  const bad: [string, Record<string, unknown>, (string | number)[], RegExp][] = [
    [
      'short secret',
      { jwt: { secret: 'too-short' } },
      ['policies', 'auth', 'jwt', 'secret'],
      /too short \(9 characters; at least 32/,
    ],
    [
      'missing secret',
      { jwt: { secret: '' } },
      ['policies', 'auth', 'jwt', 'secret'],
      /JWT_SECRET_KEY is missing/,
    ],
    ['none with roles', { require: ['none'], roles: ['admin'] }, ['policies', 'auth', 'roles'], /roles need/],
    ['none with jwt', { require: ['none', 'jwt'] }, ['policies', 'auth', 'require'], /cannot be combined/],
    [
      'api_key only, no keys',
      { require: ['api_key'] },
      ['policies', 'auth', 'api_keys', 'keys'],
      /no API keys/,
    ],
    [
      'asymmetric without keys',
      { jwt: { secret: SECRET, algorithms: ['RS256'] } },
      ['policies', 'auth', 'jwt', 'algorithms'],
      /neither public_keys nor jwks_url/,
    ],
    [
      'private key PEM',
      { jwt: { public_keys: [{ pem: priv }] } },
      ['policies', 'auth', 'jwt', 'public_keys'],
      /private key/,
    ],
    [
      'garbage PEM',
      { jwt: { public_keys: [{ pem: 'hello' }] } },
      ['policies', 'auth', 'jwt', 'public_keys'],
      /not a PEM/,
    ],
    [
      'two sources in one key',
      { jwt: { public_keys: [{ pem: rs.pem, jwk: rs.jwk }] } },
      ['policies', 'auth', 'jwt', 'public_keys', 0],
      /exactly one/,
    ],
    [
      'unreadable pem_file',
      { jwt: { public_keys: [{ pem_file: 'nope.pem' }] } },
      ['policies', 'auth', 'jwt', 'public_keys', 0, 'pem_file'],
      /cannot read/,
    ],
    [
      'jwks_url not a URL',
      { jwt: { jwks_url: 'not a url' } },
      ['policies', 'auth', 'jwt', 'jwks_url'],
      /not a URL/,
    ],
    [
      'duplicate key ids',
      {
        api_keys: {
          keys: [
            { id: 'a', hash: hashApiKey('1') },
            { id: 'a', hash: hashApiKey('2') },
          ],
        },
        jwt: { secret: SECRET },
      },
      ['policies', 'auth', 'api_keys', 'keys', 1, 'id'],
      /duplicate/,
    ],
  ];
  for (const [name, config, path, message] of bad) {
    const s = makeServices();
    await t.rejects(compilePolicy(auth, config, s), ConfigError, name).then(() => undefined);
    try {
      await compilePolicy(auth, config, s);
    } catch (err) {
      t.same((err as ConfigError).path, path, `${name}: path`);
      t.match((err as Error).message, message, `${name}: message`);
    }
    t.equal(s.persistent.size, 0, `${name}: nothing left in persistent`);
  }
});

t.test('allow_weak_secret (demo) accepts a short secret with a warning', async (t) => {
  const s = makeServices();
  const weak = 'demo-secret';
  const p = await compilePolicy(auth, { jwt: { secret: weak, allow_weak_secret: true } }, s);
  t.match(s.logged, [{ level: 'warn', msg: /allow_weak_secret/ }]);
  t.equal(await p.onRequest!(makeContext({ headers: bearer(await hs({}, weak)) })), undefined);
});

t.test('the schema refuses alg none, plaintext hashes and unknown keys', async (t) => {
  const { makeConfig } = await import('../../helpers/context.js');
  t.throws(() => makeConfig(auth.schema, { jwt: { algorithms: ['none'] } }));
  t.throws(() => makeConfig(auth.schema, { api_keys: { keys: [{ id: 'a', hash: 'plaintext-key' }] } }));
  t.throws(() => makeConfig(auth.schema, { jwt: { secrte: 'typo' } }));
  t.throws(() => makeConfig(auth.schema, { require: [] }));
});
