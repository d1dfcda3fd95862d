import t from 'tap';
import { LEASE_MARGIN_MS, loginLockout } from '../../../policies/login-lockout/index.js';
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

/** A lease's lifetime with the default upstream timeouts (connect 2s + response 30s + margin). */
const LEASE_MS = 2_000 + 30_000 + LEASE_MARGIN_MS;

t.test(
  'failures of attempts in flight past their lease: one lock, one account_locked event, the lock is not extended',
  async (t) => {
    const { clock, services } = setup();
    const p = await compilePolicy(
      loginLockout,
      { enabled: true, max_attempts: 3, ip_max_attempts: 0 },
      services,
    );
    // Six guesses in flight together, each passed the lock checks before any answer came
    // back: possible only when the leases ran out (a Redis restarted without persistence
    // forgets them too). The clock moves on by a lease's lifetime between them.
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
      if (i < 5) clock.advance(LEASE_MS);
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

/** Start an attempt: onRequest then onBody; the verdict, and the context to answer later. */
async function begin(
  p: Policy,
  username: string,
  clientIp: string,
  signal?: AbortSignal,
): Promise<{ ctx: RequestContext; verdict: Verdict }> {
  const ctx = makeContext({
    method: 'POST',
    target: '/api/auth/login',
    clientIp,
    routeName: 'login',
    body: login(username),
    ...(signal ? { signal } : {}),
  });
  let verdict: Verdict = await p.onRequest!(ctx);
  if (verdict === undefined) verdict = await p.onBody!(ctx);
  return { ctx, verdict };
}

t.test(
  'concurrent guesses from many IPs: one attempt per username with the upstream; exactly max_attempts reach it',
  async (t) => {
    const { clock, services } = setup();
    const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 3 }, services);
    // 20 bots, each from its own IP, guess `admin` together and retry at once whenever the
    // gateway refuses them (the per-IP limits are no help here). The upstream answers 401.
    let forwarded = 0;
    let concurrentRefusals = 0;
    let lockedRefusals = 0;
    for (let round = 0; round < 10; round++) {
      const started = await Promise.all(
        Array.from({ length: 20 }, (_, i) => begin(p, 'admin', `203.0.113.${i + 1}`)),
      );
      const through = started.filter((s) => s.verdict === undefined);
      t.ok(through.length <= 1, `round ${round}: at most one attempt with the upstream`);
      for (const s of started) {
        const d = s.verdict as Deny | undefined;
        if (d === undefined) continue;
        t.equal(d.code, 'account_locked');
        if (d.ruleIds?.[0] === 'login-lockout-concurrent') {
          concurrentRefusals++;
          t.same(d.headers, { 'retry-after': '1' });
          t.equal(d.message, 'Another login attempt for this account is in progress; retry in a moment.');
        } else {
          lockedRefusals++;
          t.same(d.ruleIds, ['login-lockout-username']);
        }
        await p.onResponse!(s.ctx, makeHead(429, {}, true));
      }
      forwarded += through.length;
      await Promise.all(through.map((s) => p.onResponse!(s.ctx, makeHead(401))));
    }
    t.equal(forwarded, 3, 'exactly max_attempts guesses reached the upstream');
    t.equal(concurrentRefusals, 3 * 19, 'the others of the first three rounds were told to wait');
    t.equal(lockedRefusals, 7 * 20, 'then every guess met the lock');
    t.equal(await counter(services, 'loginFailures'), 3);
    t.equal(await counter(services, 'accountLockouts'), 1);
    t.same(
      services.audited.map((a) => a.event),
      ['login_failure', 'login_failure', 'login_failure', 'account_locked'],
    );
    clock.advance(900_000);
    t.equal((await attempt(p, login('admin'), 200)).forwarded, true, 'the lock ended: a login goes through');
    t.equal((await attempt(p, login('admin'), 401)).forwarded, true, 'and the count started again');
  },
);

t.test('the lease is given back whatever ends the attempt; other usernames never wait', async (t) => {
  const { clock, services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 5 }, services);
  const concurrent = (v: Verdict) => (v as Deny | undefined)?.ruleIds?.[0] === 'login-lockout-concurrent';

  const a = await begin(p, 'erin', '198.51.100.7');
  t.equal(a.verdict, undefined);
  t.ok(concurrent((await begin(p, 'erin', '198.51.100.8')).verdict), 'a second attempt is refused');
  t.equal((await begin(p, 'frank', '198.51.100.8')).verdict, undefined, 'another username goes on');
  t.ok(concurrent((await begin(p, 'ERIN ', '198.51.100.8')).verdict), 'the normalised username is one');

  // the gateway's own answer (504 gateway_timeout, a later policy's refusal) releases it
  await p.onResponse!(a.ctx, makeHead(504, {}, true));
  const b = await begin(p, 'erin', '198.51.100.8');
  t.equal(b.verdict, undefined, 'released by a gateway response');
  t.equal(services.audited.length, 0, 'a gateway response is no failure');

  // no response phase at all (the client went away while the upstream answered): onDone
  p.onDone!(b.ctx, { status: 499, decision: 'allow', deny: undefined, deniedBy: undefined });
  const ac = new AbortController();
  const c = await begin(p, 'erin', '198.51.100.9', ac.signal);
  t.equal(c.verdict, undefined, 'released by onDone');

  // neither hook ran (cut off with its connection): the abort signal
  ac.abort();
  await new Promise((r) => setImmediate(r));
  const d = await begin(p, 'erin', '198.51.100.9');
  t.equal(d.verdict, undefined, 'released on abort');

  // nothing ran at all: the lease runs out after the upstream timeouts and a margin
  clock.advance(LEASE_MS - 1);
  t.ok(concurrent((await begin(p, 'erin', '198.51.100.9')).verdict), 'held until it runs out');
  clock.advance(1);
  const e = await begin(p, 'erin', '198.51.100.9');
  t.equal(e.verdict, undefined, 'the lease ran out');

  // a late answer of an attempt that has already given its lease back releases nothing
  await p.onResponse!(d.ctx, makeHead(401));
  await p.onResponse!(b.ctx, makeHead(401));
  t.ok(concurrent((await begin(p, 'erin', '198.51.100.9')).verdict), 'e still holds the lease');
  await p.onResponse!(e.ctx, makeHead(200));
  t.equal((await begin(p, 'erin', '198.51.100.9')).verdict, undefined);
});

t.test('an attempt whose lease ran out gives back nothing: the next holder keeps it', async (t) => {
  const { clock, services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 5 }, services);
  const first = await begin(p, 'ivy', '198.51.100.1');
  t.equal(first.verdict, undefined);
  clock.advance(LEASE_MS);
  const second = await begin(p, 'ivy', '198.51.100.2');
  t.equal(second.verdict, undefined, 'the first lease ran out: the second attempt takes one');
  await p.onResponse!(first.ctx, makeHead(401));
  const third = await begin(p, 'ivy', '198.51.100.3');
  t.same((third.verdict as Deny).ruleIds, ['login-lockout-concurrent'], 'the second still holds it');
  await p.onResponse!(third.ctx, makeHead(429, {}, true));
  await p.onResponse!(second.ctx, makeHead(401));
  t.equal((await begin(p, 'ivy', '198.51.100.3')).verdict, undefined, 'given back by its holder');
});

t.test('the lease lasts the upstream connect and response timeouts plus a margin', async (t) => {
  const { clock, services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true }, services, {
    config: { upstream: { connect_timeout: '1s', response_timeout: '4s' } },
  });
  t.equal((await begin(p, 'gus', '198.51.100.1')).verdict, undefined);
  clock.advance(5_000 + LEASE_MARGIN_MS - 1);
  t.equal((await begin(p, 'gus', '198.51.100.1')).verdict !== undefined, true, 'still held');
  clock.advance(1);
  t.equal((await begin(p, 'gus', '198.51.100.1')).verdict, undefined, 'ran out');
});

t.test('a locked username answers account_locked (its lock time), not "in progress"', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 1 }, services);
  const first = await begin(p, 'hank', '198.51.100.1');
  await p.onResponse!(first.ctx, makeHead(401));
  const held = await begin(p, 'hank', '198.51.100.2');
  t.same((held.verdict as Deny).ruleIds, ['login-lockout-username'], 'lease free: the lock refuses');
  // the refused attempt has given its lease back with the gateway's 429
  await p.onResponse!(held.ctx, makeHead(429, {}, true));
  // while a refused attempt still holds the lease (its 429 not sent yet), the next one is
  // told about the lock too, not that another attempt is in progress
  const refused = await begin(p, 'hank', '198.51.100.3');
  t.same((refused.verdict as Deny).ruleIds, ['login-lockout-username']);
  const other = await begin(p, 'hank', '198.51.100.4');
  t.same((other.verdict as Deny).ruleIds, ['login-lockout-username']);
  t.equal((other.verdict as Deny).headers?.['retry-after'], '900');
});

t.test('store down while taking the lease: onBody rejects (the pipeline applies `fail`)', async (t) => {
  const { store, services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true }, services);
  const ctx = makeContext({ method: 'POST', body: login('ida') });
  t.equal(await p.onRequest!(ctx), undefined);
  store.acquire = () => Promise.reject(new Error('store down'));
  await t.rejects(Promise.resolve(p.onBody!(ctx)), /store down/);
  await t.resolves(Promise.resolve(p.onResponse!(ctx, makeHead(401))));
});

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
  t.equal(d.deny?.message, 'Too many failed logins from this address; retry later.', 'not "this account"');
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

t.test('an IP lock holds on every login route, whatever ipv6_prefix each keys clients by', async (t) => {
  // the whole config, as compileGeneration hands it to every route's compile
  const config = {
    policies: { login_lockout: { ipv6_prefix: 64 } },
    routes: [{ policies: { login_lockout: { ipv6_prefix: 128 } } }],
  };
  const { services } = setup();
  const by = async (prefix: number) =>
    compilePolicy(
      loginLockout,
      { enabled: true, max_attempts: 5, ip_max_attempts: 5, ipv6_prefix: prefix },
      services,
      { config },
    );
  const [p64, p128] = [await by(64), await by(128)];
  for (let i = 0; i < 5; i++) await attempt(p128, login(`user-${i}`), 401, '2001:db8:1:2::1');
  t.equal(
    (await attempt(p128, login('another'), 401, '2001:db8:1:2::1')).deny?.code,
    'account_locked',
    'locked at /128 on its own route',
  );
  const other = await attempt(p64, login('another'), 401, '2001:db8:1:2::1');
  t.equal(other.deny?.code, 'account_locked', 'the /128 lock holds on the /64 route');
  t.equal(other.deny?.ruleIds?.[0], 'login-lockout-ip');
  t.equal(
    (await attempt(p64, login('another'), 401, '2001:db8:1:2::2')).forwarded,
    true,
    'a /128 lock is of that address alone',
  );
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

t.test('field names are matched whatever their case, as case-insensitive binders do', async (t) => {
  // Go's encoding/json, ASP.NET Core and case-insensitive Jackson bind `USERNAME` (or
  // `uſername`, long s) to the `username` property: the guess is on that account
  const { services } = setup();
  const p = await compilePolicy(loginLockout, { enabled: true, max_attempts: 2 }, services);
  t.equal((await attempt(p, jsonBody({ USERNAME: 'ivan', password: 'x' }), 401)).forwarded, true);
  t.equal((await attempt(p, jsonBody({ 'u\u017fername': 'Ivan', password: 'x' }), 401)).forwarded, true);
  t.equal(
    (await attempt(p, login('ivan'), 200)).deny?.code,
    'account_locked',
    'two differently spelled fields counted for one username',
  );
  // two keys differing in case name two usernames: which one binds depends on the framework
  const two = await attempt(p, jsonBody({ username: 'decoy', Username: 'admin', password: 'x' }), 401);
  t.equal(two.forwarded, false);
  t.equal(two.deny?.code, 'bad_request');
  t.same(two.deny?.ruleIds, ['login-lockout-ambiguous-username']);
  t.equal(
    (await attempt(p, jsonBody({ username: 'Jo', USERNAME: 'jo', password: 'x' }), 401)).forwarded,
    true,
    'the same username under two spellings of the key is one username',
  );
  const form: RequestBody = {
    raw: Buffer.from('username=decoy&USERNAME=admin&password=x'),
    mediaType: 'application/x-www-form-urlencoded',
    form: [
      ['username', 'decoy'],
      ['USERNAME', 'admin'],
      ['password', 'x'],
    ],
  };
  t.equal((await attempt(p, form, 401)).deny?.code, 'bad_request', 'forms too');
  const nested = await compilePolicy(
    loginLockout,
    { enabled: true, max_attempts: 1, username_field: 'credentials.email' },
    services,
  );
  await attempt(nested, jsonBody({ Credentials: { EMAIL: 'k@example.com' } }), 401);
  t.equal(
    (await attempt(nested, jsonBody({ credentials: { email: 'k@example.com' } }), 401)).deny?.code,
    'account_locked',
    'each segment of a nested field name',
  );
  t.equal(
    (
      await attempt(
        nested,
        jsonBody({ credentials: { a: 1 }, CREDENTIALS: { email: 'x@y' } }),
        401,
        '198.51.100.77',
      )
    ).deny?.code,
    'bad_request',
    'two objects on the path are ambiguous too',
  );
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
