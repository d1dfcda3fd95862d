import t from 'tap';
import { rateLimit } from '../../../policies/rate-limit/index.js';
import { SKIP_LOCAL } from '../../../policies/ip-ban/allowlist.js';
import { MemoryStore } from '../../../gateway/store/memory.js';
import type { Deny, Policy, Verdict } from '../../../gateway/policy.js';
import type { RequestContext } from '../../../gateway/context.js';
import { parseLimits } from '../../../gateway/config/units.js';
import {
  compilePolicy,
  makeClock,
  makeContext,
  makeServices,
  noStore,
  type ContextInit,
  type TestServices,
} from '../../helpers/context.js';

function setup() {
  const clock = makeClock();
  const store = new MemoryStore({ now: clock.now });
  const services = makeServices({ store, clock });
  return { clock, store, services };
}

async function run(p: Policy, init: ContextInit = {}): Promise<{ ctx: RequestContext; v: Verdict }> {
  const ctx = makeContext(init);
  let v: Verdict = await p.onRequest?.(ctx);
  if (v === undefined) v = await p.onIdentified?.(ctx);
  return { ctx, v };
}

async function metric(s: TestServices, rule: string): Promise<number> {
  return (await s.metrics.rateLimited.get()).values.find((v) => v.labels.rule === rule)?.value ?? 0;
}

t.test('default rule: three windows, headers on every response, 429 with exact Retry-After', async (t) => {
  const { clock, services } = setup();
  const p = await compilePolicy(rateLimit, {}, services);
  t.equal(p.onIdentified, undefined, 'a per-IP rule runs before authentication only');
  const policyHeader = '"default-86400s";q=200;w=86400, "default-3600s";q=50;w=3600, "default-60s";q=10;w=60';

  const first = await run(p, { clientIp: '198.51.100.7' });
  t.equal(first.v, undefined);
  t.same(first.ctx.responseHeaders, {
    'ratelimit-policy': policyHeader,
    ratelimit: '"default-86400s";r=199;t=432, "default-3600s";r=49;t=72, "default-60s";r=9;t=6',
  });
  for (let i = 2; i <= 10; i++)
    t.equal((await run(p, { clientIp: '198.51.100.7' })).v, undefined, `request ${i} passes`);

  const { v, ctx } = await run(p, { clientIp: '198.51.100.7' });
  const deny = v as Deny;
  t.equal(deny.code, 'rate_limited');
  t.same(deny.ruleIds, ['default']);
  t.same(deny.headers, {
    'retry-after': '6',
    'ratelimit-policy': policyHeader,
    ratelimit: '"default-86400s";r=190;t=4320, "default-3600s";r=40;t=720, "default-60s";r=0;t=60',
  });
  t.same(deny.detail, { rules: ['default'], retry_after_s: 6 });
  t.equal(ctx.responseHeaders.ratelimit, deny.headers!.ratelimit, 'the 429 and responseHeaders agree');
  t.equal(await metric(services, 'default'), 1);

  clock.advance(2500);
  t.equal(
    ((await run(p, { clientIp: '198.51.100.7' })).v as Deny).headers!['retry-after'],
    '4',
    '3.5 s left: rounded up',
  );
  clock.advance(3499);
  t.equal(
    ((await run(p, { clientIp: '198.51.100.7' })).v as Deny).headers!['retry-after'],
    '1',
    '1 ms left: still a whole second',
  );
  clock.advance(1);
  t.equal((await run(p, { clientIp: '198.51.100.7' })).v, undefined, 'one token refilled after exactly 6 s');
  t.equal(await metric(services, 'default'), 3);

  t.equal((await run(p, { clientIp: '198.51.100.8' })).v, undefined, 'another IP has its own buckets');
});

t.test('several windows: the longer window refuses once the short one refilled', async (t) => {
  const { clock, services } = setup();
  const p = await compilePolicy(rateLimit, { default: '2/second;3/minute' }, services);
  t.equal((await run(p)).v, undefined);
  t.equal((await run(p)).v, undefined);
  const a = (await run(p)).v as Deny;
  t.equal(a.headers!['retry-after'], '1');
  t.equal(a.headers!.ratelimit, '"default-1s";r=0;t=1, "default-60s";r=1;t=40');
  clock.advance(1000);
  t.equal((await run(p)).v, undefined, 'the second refilled; the minute had one left');
  const b = (await run(p)).v as Deny;
  t.equal(b.code, 'rate_limited');
  // minute bucket: 3 tokens taken, 1000 ms of refill at one token per 20 s: 19 s to go
  t.equal(b.headers!['retry-after'], '19');
  t.equal(b.headers!.ratelimit, '"default-1s";r=1;t=1, "default-60s";r=0;t=59', 'full again in 59 s');
  clock.advance(18_999);
  t.equal(((await run(p)).v as Deny).headers!['retry-after'], '1');
  clock.advance(1);
  t.equal((await run(p)).v, undefined);
});

t.test('client IP forms: IPv4-mapped IPv6 is the IPv4 address; IPv6 is counted per /64', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(rateLimit, { default: '2/minute' }, services);
  t.equal((await run(p, { clientIp: '192.0.2.1' })).v, undefined);
  t.equal((await run(p, { clientIp: '::ffff:192.0.2.1' })).v, undefined);
  t.equal(((await run(p, { clientIp: '::FFFF:c000:0201' })).v as Deny).code, 'rate_limited');
  t.equal((await run(p, { clientIp: '2001:db8:1:2::1' })).v, undefined);
  t.equal((await run(p, { clientIp: '2001:DB8:1:2:ffff::9' })).v, undefined);
  t.equal(
    ((await run(p, { clientIp: '2001:0db8:0001:0002:0:0:0:77' })).v as Deny).code,
    'rate_limited',
    'same /64',
  );
  t.equal((await run(p, { clientIp: '2001:db8:1:3::1' })).v, undefined, 'another /64');

  const { services: s2 } = setup();
  const exact = await compilePolicy(rateLimit, { default: '1/minute', ipv6_prefix: 128 }, s2);
  t.equal((await run(exact, { clientIp: '2001:db8::1' })).v, undefined);
  t.equal((await run(exact, { clientIp: '2001:db8::2' })).v, undefined, 'per address with ipv6_prefix: 128');
  t.equal(
    ((await run(exact, { clientIp: '2001:DB8:0:0::1' })).v as Deny).code,
    'rate_limited',
    'same address written differently',
  );
});

t.test(
  'rules: scope by route and method, keys by route, api_key, subject; route_rules add and override',
  async (t) => {
    const { services } = setup();
    const p = await compilePolicy(
      rateLimit,
      {
        default: 'off',
        rules: [
          { name: 'login', limits: '1/minute', key: 'ip', routes: ['login'], methods: ['POST'] },
          { name: 'per-route', limits: '2/minute', key: 'route' },
          { name: 'per-key', limits: '1/minute', key: 'api_key' },
        ],
        route_rules: [{ name: 'per-route', limits: '3/minute', key: 'route' }],
      },
      services,
      { config: { routes: [{ name: 'login' }] } },
    );
    t.type(p.onIdentified, 'function');
    const login = { routeName: 'login', method: 'POST', clientIp: '203.0.113.1' };
    t.equal((await run(p, login)).v, undefined);
    const r = (await run(p, login)).v as Deny;
    t.same(r.ruleIds, ['login']);
    t.equal((await run(p, { ...login, method: 'GET' })).v, undefined, 'other methods are not in scope');
    t.equal((await run(p, { routeName: 'other', clientIp: '203.0.113.1' })).v, undefined);
    // per-route: overridden by route_rules to 3/minute, shared by every client of the route
    for (const ip of ['203.0.113.2', '203.0.113.3', '203.0.113.4'])
      t.equal((await run(p, { routeName: 'receipts', clientIp: ip })).v, undefined);
    t.same(
      ((await run(p, { routeName: 'receipts', clientIp: '203.0.113.5' })).v as Deny).ruleIds,
      ['per-route'],
      'one bucket for the route',
    );
    // api_key rule: skipped without an API-key identity
    const jwt = { routeName: 'x1', identity: { subject: 'alice', roles: [], method: 'jwt' as const } };
    t.equal((await run(p, jwt)).v, undefined);
    t.equal((await run(p, jwt)).v, undefined);
    const key = {
      routeName: 'x2',
      identity: { subject: 'svc', roles: [], method: 'api_key' as const, keyId: 'partner' },
    };
    t.equal((await run(p, key)).v, undefined);
    t.same(((await run(p, { ...key, routeName: 'x3' })).v as Deny).ruleIds, ['per-key']);
  },
);

t.test('API-key overrides: from Identity.limits or the auth policy locals', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(
    rateLimit,
    { default: 'off', rules: [{ name: 'per-key', limits: '1/minute', key: 'api_key' }] },
    services,
  );
  const big = { subject: 'svc', roles: [], method: 'api_key' as const, keyId: 'big', limits: '3/minute' };
  for (let i = 0; i < 3; i++) t.equal((await run(p, { identity: big })).v, undefined);
  const d = (await run(p, { identity: big })).v as Deny;
  t.equal(d.code, 'rate_limited');
  t.equal(d.headers!['ratelimit-policy'], '"per-key-60s";q=3;w=60');

  const viaLocals = makeContext({
    identity: { subject: 'svc2', roles: [], method: 'api_key', keyId: 'big2' },
  });
  viaLocals.locals.set('auth', { keyId: 'big2', rateLimit: parseLimits('2/second') });
  t.equal(await p.onIdentified!(viaLocals), undefined);
  t.equal(viaLocals.responseHeaders['ratelimit-policy'], '"per-key-1s";q=2;w=1');

  const bad = { subject: 'svc', roles: [], method: 'api_key' as const, keyId: 'odd', limits: 'lots' };
  t.equal((await run(p, { identity: bad })).v, undefined);
  t.equal(
    ((await run(p, { identity: bad })).v as Deny).code,
    'rate_limited',
    'an unparsable override falls back to the rule',
  );
});

t.test('subject keys: long or odd subjects are hashed, never break the key', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(
    rateLimit,
    { default: 'off', rules: [{ name: 'user', limits: '1/minute', key: 'subject' }] },
    services,
  );
  const odd = { subject: 'x'.repeat(5000) + ' \n|', roles: [], method: 'jwt' as const };
  t.equal((await run(p, { identity: odd })).v, undefined);
  t.equal(((await run(p, { identity: odd })).v as Deny).code, 'rate_limited');
  t.equal((await run(p, { identity: { ...odd, subject: 'x'.repeat(5000) } })).v, undefined);
});

t.test('headers: false keeps successful responses clean, the 429 still carries them', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(rateLimit, { default: '1/minute', headers: false }, services);
  const ok = await run(p);
  t.same(ok.ctx.responseHeaders, {});
  const no = await run(p);
  t.same(no.ctx.responseHeaders, {});
  t.equal((no.v as Deny).headers!['retry-after'], '60');
  t.equal((no.v as Deny).headers!.ratelimit, '"default-60s";r=0;t=60');
});

t.test('store down: fail open lets requests through, fail closed refuses with 503', async (t) => {
  const services = makeServices({ store: noStore() });
  const open = await compilePolicy(rateLimit, {}, services);
  const r = await run(open);
  t.equal(r.v, undefined);
  t.equal(r.ctx.audit.rate_limit_store, 'unavailable');
  t.same(r.ctx.responseHeaders, {});
  const closed = await compilePolicy(
    rateLimit,
    { default_fail: 'open', rules: [{ name: 'strict', limits: '5/minute', fail: 'closed' }] },
    services,
  );
  const c = (await run(closed)).v as Deny;
  t.equal(c.code, 'service_unavailable');
  t.same(c.ruleIds, ['strict']);
  t.equal(closed.failure, 'open');
});

t.test('allowlisted networks skip the limits they name', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(
    rateLimit,
    { default: '1/minute', rules: [{ name: 'other', limits: '1/minute', key: 'ip' }] },
    services,
  );
  const skipAll = () => {
    const ctx = makeContext({ clientIp: '10.0.0.1' });
    ctx.locals.set(SKIP_LOCAL, new Set(['rate_limit']));
    return ctx;
  };
  for (let i = 0; i < 3; i++) t.equal(await p.onRequest!(skipAll()), undefined);
  const skipOne = () => {
    const ctx = makeContext({ clientIp: '10.0.0.2' });
    ctx.locals.set(SKIP_LOCAL, new Set(['rate_limit.default']));
    return ctx;
  };
  t.equal(await p.onRequest!(skipOne()), undefined);
  t.same(((await p.onRequest!(skipOne())) as Deny).ruleIds, ['other'], 'only the named rule is skipped');
});

t.test('reload: unchanged rules keep their buckets, changed rules start afresh', async (t) => {
  const { services } = setup();
  const block = { default: '2/minute', rules: [{ name: 'b', limits: '5/minute' }] };
  const gen1 = await compilePolicy(rateLimit, block, services);
  t.equal((await run(gen1)).v, undefined);
  t.equal((await run(gen1)).v, undefined);
  const gen2 = await compilePolicy(
    rateLimit,
    { ...block, headers: false, rules: [{ name: 'b', limits: '6/minute' }] },
    services,
  );
  t.same(((await run(gen2)).v as Deny).ruleIds, ['default'], 'the default bucket survived the reload');
  const gen3 = await compilePolicy(rateLimit, { ...block, default: '3/minute' }, services);
  t.equal((await run(gen3)).v, undefined, 'a changed default is a new rule');
});

t.test('config errors name the key', async (t) => {
  const services = makeServices();
  await t.rejects(compilePolicy(rateLimit, { rules: [{ name: 'default', limits: '1/minute' }] }, services), {
    name: 'ConfigError',
    path: ['policies', 'rate_limit', 'rules', 0, 'name'],
  });
  await t.rejects(
    compilePolicy(
      rateLimit,
      {
        rules: [
          { name: 'a', limits: '1/minute' },
          { name: 'a', limits: '2/minute' },
        ],
      },
      services,
    ),
    {
      message: 'duplicate rule name "a"',
    },
  );
  await t.rejects(compilePolicy(rateLimit, { default: '1/minute;2 per minute' }, services), {
    path: ['policies', 'rate_limit', 'default'],
    message: /share the window/,
  });
  await t.rejects(
    compilePolicy(rateLimit, { default: 'ten a minute' }, services),
    /invalid test config at \/default/,
  );
  await t.rejects(
    compilePolicy(rateLimit, { rules: [{ name: 'x', limits: '1/minute', key: 'ip+email' }] }, services),
    /rules\/0\/key/,
  );
});
