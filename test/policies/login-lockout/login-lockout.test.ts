import t from 'tap';
import { loginLockout } from '../../../policies/login-lockout/index.js';
import { SKIP_LOCAL } from '../../../policies/ip-ban/allowlist.js';
import { MemoryStore } from '../../../gateway/store/memory.js';
import type { Deny, Policy, Verdict } from '../../../gateway/policy.js';
import type { RequestBody, RequestContext } from '../../../gateway/context.js';
import {
  compilePolicy,
  jsonBody,
  makeClock,
  makeContext,
  makeHead,
  makeServices,
  noStore,
  type TestServices,
} from '../../helpers/context.js';

function setup() {
  const clock = makeClock();
  const store = new MemoryStore({ now: clock.now });
  const services = makeServices({ store, clock });
  return { clock, store, services };
}

interface Attempt {
  /** the refusal, when the gateway refused before the upstream */
  deny: Deny | undefined;
  /** whether the request reached the upstream */
  forwarded: boolean;
  ctx: RequestContext;
}

/** One login attempt through the hooks, the upstream answering `status` if reached. */
async function attempt(
  p: Policy,
  body: RequestBody | undefined,
  status: number,
  clientIp = '198.51.100.1',
  skip?: string[],
): Promise<Attempt> {
  const ctx = makeContext({
    method: 'POST',
    target: '/api/auth/login',
    clientIp,
    routeName: 'login',
    ...(body ? { body } : {}),
  });
  if (skip) ctx.locals.set(SKIP_LOCAL, new Set(skip));
  let v: Verdict = await p.onRequest!(ctx);
  if (v === undefined) v = await p.onBody!(ctx);
  if (v !== undefined) {
    // the gateway's own 429 also goes through onResponse: it must not count
    await p.onResponse!(ctx, makeHead(429, {}, true));
    return { deny: v as Deny, forwarded: false, ctx };
  }
  await p.onResponse!(ctx, makeHead(status));
  return { deny: undefined, forwarded: true, ctx };
}
const login = (username: unknown) => jsonBody({ username, password: 'wrong' });

async function counter(s: TestServices, name: 'loginFailures' | 'accountLockouts'): Promise<number> {
  return (await s.metrics[name].get()).values[0]?.value ?? 0;
}

t.test('schema: off unless enabled; LOGIN_LOCKOUT_DURATION as minutes or a duration', async (t) => {
  t.equal(loginLockout.schema.properties.enabled.default, false);
  const { services } = setup();
  for (const [lockout, seconds] of [
    [15, '900'],
    ['15', '900'],
    ['15m', '900'],
    ['1h', '3600'],
    [0.5, '30'],
  ] as const) {
    const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 1, lockout }, services);
    const u = `user-${String(lockout)}`;
    await attempt(p, login(u), 401);
    t.equal(
      (await attempt(p, login(u), 401)).deny?.headers?.['retry-after'],
      seconds,
      `lockout ${JSON.stringify(lockout)}`,
    );
  }
  await t.rejects(compilePolicy(loginLockout, { enabled: true, lockout: 0 }, services), {
    name: 'ConfigError',
    path: ['policies', 'login_lockout', 'lockout'],
  });
  await t.rejects(compilePolicy(loginLockout, { enabled: true, lockout: 'soon' }, services));
});

t.test(
  'a username is locked at max_attempts; the lock expires; the upstream is not called meanwhile',
  async (t) => {
    const { clock, services } = setup();
    const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 3 }, services);
    t.equal(p.needsBody, true);
    for (let i = 1; i <= 3; i++) {
      const a = await attempt(p, login('alice'), 401);
      t.equal(a.forwarded, true, `failure ${i} reaches the upstream`);
    }
    const locked = await attempt(p, login('alice'), 200);
    t.equal(locked.forwarded, false);
    t.same(locked.deny, {
      code: 'account_locked',
      ruleIds: ['login-lockout-username'],
      headers: { 'retry-after': '900' },
      detail: { scope: 'username', retry_after_s: 900 },
    });
    t.equal(await counter(services, 'loginFailures'), 3);
    t.equal(await counter(services, 'accountLockouts'), 1);
    const events = services.audited.map((a) => a.event);
    t.same(events, ['login_failure', 'login_failure', 'login_failure', 'account_locked']);
    const lockEvent = services.audited[3]!;
    t.equal(lockEvent.fields.decision, 'deny');
    t.match(lockEvent.fields.detail, { scope: 'username', failures: 3, lockout_ms: 900_000 });
    t.notOk(JSON.stringify(services.audited).includes('alice'), 'usernames are written only as hashes');
    t.notOk(JSON.stringify(services.audited).includes('wrong'), 'passwords never');

    t.equal((await attempt(p, login('bob'), 200)).forwarded, true, 'other accounts are not affected');
    clock.advance(900_000 - 1000);
    t.equal((await attempt(p, login('alice'), 200)).deny?.headers?.['retry-after'], '1');
    clock.advance(1000);
    const after = await attempt(p, login('alice'), 401);
    t.equal(after.forwarded, true, 'the lock expired');
    t.equal((await attempt(p, login('alice'), 401)).forwarded, true, 'the count started again from zero');
  },
);

t.test(
  'concurrent failures: one lock, one account_locked event, the lock is not extended by attempts already in flight',
  async (t) => {
    const { clock, services } = setup();
    const p = await compilePolicy(
      loginLockout,
      { enabled: true, max_attempts: 3, ip_max_attempts: 0 },
      services,
    );
    // Six guesses in flight together: each passed the lock checks before any answer came back.
    const ctxs: RequestContext[] = [];
    for (let i = 0; i < 6; i++) {
      const ctx = makeContext({
        method: 'POST',
        target: '/api/auth/login',
        clientIp: '198.51.100.1',
        routeName: 'login',
        body: login('alice'),
      });
      t.equal(await p.onRequest!(ctx), undefined);
      t.equal(await p.onBody!(ctx), undefined, `guess ${i + 1} passes the lock check`);
      ctxs.push(ctx);
    }
    await Promise.all(ctxs.slice(0, 4).map((c) => p.onResponse!(c, makeHead(401))));
    t.equal(await counter(services, 'loginFailures'), 4);
    t.equal(await counter(services, 'accountLockouts'), 1, 'gateway_account_lockouts_total counts one lock');
    clock.advance(600_000);
    await Promise.all(ctxs.slice(4).map((c) => p.onResponse!(c, makeHead(401))));
    t.equal(await counter(services, 'accountLockouts'), 1);
    t.equal(
      services.audited.filter((a) => a.event === 'account_locked').length,
      1,
      'one account_locked event',
    );
    const locked = await attempt(p, login('alice'), 200);
    t.equal(locked.forwarded, false);
    t.equal(locked.deny?.headers?.['retry-after'], '300', 'the lock ends 15 minutes after it was set');
  },
);

t.test('failures outside the window do not add up', async (t) => {
  const { clock, services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 3, window: '10m' }, services);
  await attempt(p, login('carol'), 401);
  await attempt(p, login('carol'), 401);
  clock.advance(600_000);
  await attempt(p, login('carol'), 401);
  t.equal((await attempt(p, login('carol'), 401)).forwarded, true, 'only one failure inside the window');
  t.equal((await attempt(p, login('carol'), 401)).forwarded, true, 'two inside the window');
  t.equal((await attempt(p, login('carol'), 200)).forwarded, false, 'the third inside the window locked it');
});

t.test('a success resets the username count', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 3 }, services);
  await attempt(p, login('dave'), 401);
  await attempt(p, login('dave'), 401);
  await attempt(p, login('dave'), 200);
  await attempt(p, login('dave'), 401);
  await attempt(p, login('dave'), 401);
  t.equal((await attempt(p, login('dave'), 401)).forwarded, true);
  t.equal((await attempt(p, login('dave'), 200)).forwarded, false);
});

t.test('any username string can be locked; case and Unicode forms are one username', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 2 }, services);
  await attempt(p, login('no-such-user-anywhere'), 401);
  await attempt(p, login('NO-SUCH-USER-ANYWHERE '), 401);
  t.equal(
    (await attempt(p, login('no-such-user-anywhere'), 401)).deny?.code,
    'account_locked',
    'same answer as for a real account',
  );
  await attempt(p, login('ｅｖｅ'), 401);
  await attempt(p, login('EVE'), 401);
  t.equal(
    (await attempt(p, login('eve'), 401)).deny?.code,
    'account_locked',
    'fullwidth forms are normalised (NFKC)',
  );

  const { services: s2 } = setup();
  const cs = await compilePolicy(loginLockout, { enabled: true, max_attempts: 2, case_sensitive: true }, s2);
  await attempt(cs, login('Frank'), 401);
  await attempt(cs, login('frank'), 401);
  t.equal(
    (await attempt(cs, login('frank'), 401)).forwarded,
    true,
    'case_sensitive: two different usernames',
  );
});

t.test('the client IP is locked past the higher bar, whatever the usernames', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(
    loginLockout,
    { enabled: true, max_attempts: 3, ip_max_attempts: 4 },
    services,
  );
  for (let i = 0; i < 4; i++)
    t.equal((await attempt(p, login(`spray-${i}`), 401, '203.0.113.9')).forwarded, true);
  const d = await attempt(p, login('fresh-name'), 200, '203.0.113.9');
  t.equal(d.forwarded, false);
  t.same(d.deny?.detail, { scope: 'ip', retry_after_s: 900 });
  t.equal((await attempt(p, login('fresh-name'), 200, '203.0.113.10')).forwarded, true, 'another IP logs in');
  t.equal(
    (await attempt(p, login('fresh-name'), 200, '::ffff:203.0.113.9')).forwarded,
    false,
    'IPv4-mapped form is the same IP',
  );
  t.equal(services.audited.filter((a) => a.event === 'account_locked').length, 1);
  t.match(services.audited.find((a) => a.event === 'account_locked')!.fields.detail, {
    scope: 'ip',
    failures: 4,
  });

  const { services: s2 } = setup();
  const off = await compilePolicy(loginLockout, { enabled: true, max_attempts: 50, ip_max_attempts: 0 }, s2);
  for (let i = 0; i < 30; i++) await attempt(off, login(`n${i}`), 401);
  t.equal((await attempt(off, login('x'), 401)).forwarded, true, 'ip_max_attempts: 0 turns the IP lock off');

  const { services: s3 } = setup();
  const auto = await compilePolicy(loginLockout, { enabled: true, max_attempts: 2 }, s3);
  for (let i = 0; i < 8; i++) t.equal((await attempt(auto, login(`a${i}`), 401)).forwarded, true);
  t.same(
    (await attempt(auto, login('b'), 401)).deny?.detail,
    { scope: 'ip', retry_after_s: 900 },
    'auto: 4 × max_attempts',
  );
  await t.rejects(compilePolicy(loginLockout, { enabled: true, max_attempts: 10, ip_max_attempts: 5 }, s3), {
    name: 'ConfigError',
    path: ['policies', 'login_lockout', 'ip_max_attempts'],
  });
});

t.test('bad input: odd usernames count per IP only, never crash', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(
    loginLockout,
    { enabled: true, max_attempts: 1, ip_max_attempts: 100 },
    services,
  );
  const notJson: RequestBody = {
    raw: Buffer.from('{"username": "alice"'),
    mediaType: 'application/json',
    parseError: 'Unexpected end of JSON input',
  };
  const text: RequestBody = { raw: Buffer.from('username=alice'), mediaType: 'text/plain' };
  const bodies: [string, RequestBody | undefined][] = [
    ['no body', undefined],
    ['missing field', jsonBody({ password: 'x' })],
    ['empty', login('')],
    ['blank', login('   ')],
    ['huge', login('a'.repeat(10_000))],
    ['number', login(12345)],
    ['object', login({ $ne: null })],
    ['array', login(['alice'])],
    ['null', login(null)],
    ['json array body', jsonBody([{ username: 'alice' }])],
    ['json string body', jsonBody('alice')],
    ['invalid json', notJson],
    ['text body', text],
  ];
  for (const [what, body] of bodies) {
    const a = await attempt(p, body, 401);
    const b = await attempt(p, body, 401);
    t.equal(a.forwarded && b.forwarded, true, `${what}: not locked per username`);
  }
  const failures = services.audited.filter((a) => a.event === 'login_failure');
  t.equal(failures.length, bodies.length * 2, 'every failure is still audited and counted per IP');
  t.match(failures[0]!.fields.detail, { username_present: false });
  t.equal(await counter(services, 'loginFailures'), bodies.length * 2);
  t.equal((await attempt(p, login('alice'), 401)).forwarded, true, 'alice was never counted');
  t.equal((await attempt(p, login('alice'), 401)).forwarded, false);
});

t.test('form bodies and a configured (nested) field name', async (t) => {
  const { services } = setup();
  const form = (u: string): RequestBody => ({
    raw: Buffer.from(`user=${u}`),
    mediaType: 'application/x-www-form-urlencoded',
    form: [['user', u]],
  });
  const p = await compilePolicy(
    loginLockout,
    { enabled: true, max_attempts: 1, username_field: 'user' },
    services,
  );
  await attempt(p, form('gina'), 401);
  t.equal((await attempt(p, form('gina'), 401)).deny?.code, 'account_locked');
  const nested = await compilePolicy(
    loginLockout,
    { enabled: true, max_attempts: 1, username_field: 'credentials.email' },
    services,
  );
  await attempt(nested, jsonBody({ credentials: { email: 'h@example.com' } }), 403);
  t.equal(
    (await attempt(nested, jsonBody({ credentials: { email: 'H@example.com' } }), 401)).deny?.code,
    'account_locked',
    '403 counts too',
  );
  t.equal((await attempt(nested, jsonBody({ credentials: 'h@example.com' }), 401)).forwarded, true);
});

t.test('other statuses are neither failures nor successes', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 2 }, services);
  await attempt(p, login('ivan'), 401);
  await attempt(p, login('ivan'), 500);
  await attempt(p, login('ivan'), 400);
  t.equal(services.audited.length, 1);
  await attempt(p, login('ivan'), 401);
  t.equal((await attempt(p, login('ivan'), 200)).deny?.code, 'account_locked');
});

t.test('allowlisted networks skip the lockout', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 1 }, services);
  for (let i = 0; i < 3; i++)
    t.equal((await attempt(p, login('judy'), 401, '10.1.1.1', ['login_lockout'])).forwarded, true);
  t.equal(services.audited.length, 0);
});

t.test('store down: the check throws (the pipeline applies `fail`), accounting never throws', async (t) => {
  const services = makeServices({ store: noStore() });
  const p = await compilePolicy(loginLockout, { enabled: true }, services);
  t.equal(p.failure, 'open');
  const ctx = makeContext({ method: 'POST', body: login('kim') });
  await t.rejects(Promise.resolve(p.onRequest!(ctx)));
  await t.resolves(Promise.resolve(p.onResponse!(ctx, makeHead(401))));
  t.equal(services.logged.at(-1)?.msg, 'login failure accounting failed');
  const closed = await compilePolicy(loginLockout, { enabled: true, fail: 'closed' }, services);
  t.equal(closed.failure, 'closed');
});
