import t from 'tap';
import { ipBan, parseCidr, PENDING_LOCAL, BAN_PREFIX } from '../../../policies/ip-ban/index.js';
import { canonicalIp, clientKey } from '../../../policies/ip-ban/ip.js';
import { SKIP_LOCAL, isSkipped, isRuleSkipped } from '../../../policies/ip-ban/allowlist.js';
import { MemoryStore } from '../../../gateway/store/memory.js';
import type { Deny, Outcome, Policy } from '../../../gateway/policy.js';
import {
  compilePolicy,
  makeClock,
  makeContext,
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

const denied = (deny: Deny, status = 403): Outcome => ({
  status,
  decision: 'deny',
  deny,
  deniedBy: 'pattern-block',
});

/** A request from `ip` that some other policy refused with `deny`: run onRequest, then onDone. */
async function suspicious(
  p: Policy,
  ip: string,
  deny: Deny = { code: 'request_blocked' },
  decision: Outcome['decision'] = 'deny',
) {
  const ctx = makeContext({ clientIp: ip });
  const v = await p.onRequest!(ctx);
  if (v !== undefined) return v as Deny;
  p.onDone!(ctx, { ...denied(deny), decision });
  await ctx.locals.get(PENDING_LOCAL);
  return undefined;
}

async function bans(s: TestServices): Promise<number> {
  return (await s.metrics.ipBans.get()).values[0]?.value ?? 0;
}

t.test('address forms', async (t) => {
  t.equal(canonicalIp('::ffff:192.0.2.1'), '192.0.2.1');
  t.equal(canonicalIp('::FFFF:C000:0201'), '192.0.2.1');
  t.equal(canonicalIp('0:0:0:0:0:ffff:192.0.2.1'), '192.0.2.1');
  t.equal(canonicalIp('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
  t.equal(canonicalIp('2001:0:0:1:0:0:0:1'), '2001:0:0:1::1', 'RFC 5952: the longest zero run');
  t.equal(canonicalIp('fe80::1%eth0'), 'fe80::1');
  t.equal(canonicalIp('::1'), '::1');
  t.equal(canonicalIp('not-an-ip'), 'not-an-ip');
  t.equal(clientKey('2001:db8:aaaa:bbbb:1:2:3:4', 64), '2001:db8:aaaa:bbbb::/64');
  t.equal(clientKey('2001:db8:aaaa:bbbb:1:2:3:4', 56), '2001:db8:aaaa:bb00::/56');
  t.equal(clientKey('2001:db8::1', 128), '2001:db8::1');
  t.equal(clientKey('::ffff:10.0.0.1', 64), '10.0.0.1');
  t.same(parseCidr('::ffff:10.0.0.0/104'), { address: '10.0.0.0', prefix: 8, family: 'ipv4' });
  t.same(parseCidr('2001:DB8::/32'), { address: '2001:db8::', prefix: 32, family: 'ipv6' });
  t.same(parseCidr('192.0.2.7'), { address: '192.0.2.7', prefix: 32, family: 'ipv4' });
  t.throws(() => parseCidr('10.0.0.0/33'));
  t.throws(() => parseCidr('10.0.0/8'));
  t.throws(() => parseCidr('::ffff:10.0.0.0/64'));
});

t.test('deny list: IPv4, IPv6 and IPv4-mapped forms are refused with 403 ip_blocked', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(ipBan, { deny: ['203.0.113.0/24', '2001:db8:bad::/48'] }, services);
  for (const ip of ['203.0.113.77', '::ffff:203.0.113.77', '2001:db8:bad:1::9', '2001:DB8:BAD::']) {
    t.same(
      await p.onRequest!(makeContext({ clientIp: ip })),
      { code: 'ip_blocked', ruleIds: ['deny-list'], detail: { source: 'deny_list' } },
      ip,
    );
  }
  for (const ip of ['203.0.114.1', '2001:db8:bac::1', '127.0.0.1'])
    t.equal(await p.onRequest!(makeContext({ clientIp: ip })), undefined, ip);
});

t.test('allow list: a bare network skips everything; {cidr, skip} only the named checks', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(
    ipBan,
    {
      allow: ['10.0.0.0/8', { cidr: '192.0.2.0/24', skip: ['rate_limit.login', 'login_lockout'] }],
      deny: ['10.0.0.0/16', '192.0.2.0/24'],
    },
    services,
  );
  const a = makeContext({ clientIp: '10.0.5.5' });
  t.equal(await p.onRequest!(a), undefined, 'allow wins over deny for a bare entry');
  t.equal(isSkipped(a, 'rate_limit'), true);
  t.equal(isRuleSkipped(a, 'anything'), true);
  const b = makeContext({ clientIp: '::ffff:192.0.2.3' });
  t.equal(((await p.onRequest!(b)) as Deny).code, 'ip_blocked', 'a partial skip keeps the deny list');
  t.same([...(b.locals.get(SKIP_LOCAL) as Set<string>)].sort(), ['login_lockout', 'rate_limit.login']);
  t.equal(isRuleSkipped(b, 'login'), true);
  t.equal(isRuleSkipped(b, 'default'), false);
  const c = makeContext({ clientIp: '172.16.0.1' });
  t.equal(await p.onRequest!(c), undefined);
  t.equal(c.locals.has(SKIP_LOCAL), false);
});

t.test('auto-ban: threshold suspicious denials within the window ban the IP for ban_duration', async (t) => {
  const { clock, services, store } = setup();
  const p = await compilePolicy(ipBan, { threshold: 3, window: '1h', ban_duration: '30m' }, services);
  t.equal(await suspicious(p, '198.51.100.20'), undefined);
  t.equal(await suspicious(p, '198.51.100.20', { code: 'user_agent_rejected' }), undefined);
  t.equal(await bans(services), 0);
  t.equal(
    await suspicious(p, '198.51.100.20', { code: 'unauthorized', detail: { reason: 'signature' } }),
    undefined,
  );
  t.equal(await bans(services), 1);
  const refused = (await p.onRequest!(makeContext({ clientIp: '198.51.100.20' }))) as Deny;
  t.same(refused, {
    code: 'ip_blocked',
    ruleIds: ['auto-ban'],
    detail: { source: 'auto_ban', ttl_ms: 1_800_000 },
  });
  t.equal(await p.onRequest!(makeContext({ clientIp: '198.51.100.21' })), undefined, 'only that IP');
  const ev = services.audited.filter((a) => a.event === 'ip_banned');
  t.equal(ev.length, 1);
  t.match(ev[0]!.fields, {
    decision: 'deny',
    reason: 'auto_ban',
    detail: { key: '198.51.100.20', count: 3, ban_ms: 1_800_000, last_code: 'unauthorized' },
  });
  t.same(await store.listBlocks(BAN_PREFIX, 10), [{ key: `${BAN_PREFIX}198.51.100.20`, ttlMs: 1_800_000 }]);

  clock.advance(1_800_000 - 1);
  t.equal(((await p.onRequest!(makeContext({ clientIp: '198.51.100.20' }))) as Deny).code, 'ip_blocked');
  clock.advance(1);
  t.equal(await p.onRequest!(makeContext({ clientIp: '198.51.100.20' })), undefined, 'the ban expired');
  t.equal(await suspicious(p, '198.51.100.20'), undefined);
  t.equal(await suspicious(p, '198.51.100.20'), undefined);
  t.equal(await bans(services), 1, 'the count restarted after the ban');
});

t.test(
  'auto-ban: denials of requests that passed the ban check before it was set ban once, and do not extend the ban',
  async (t) => {
    const { clock, services, store } = setup();
    const p = await compilePolicy(ipBan, { threshold: 3, ban_duration: '30m' }, services);
    const ip = '198.51.100.40';
    // Seven requests in flight together: each passed the ban check, then was refused.
    const ctxs = [];
    for (let i = 0; i < 7; i++) {
      const ctx = makeContext({ clientIp: ip });
      t.equal(await p.onRequest!(ctx), undefined, `request ${i + 1} passes the ban check`);
      ctxs.push(ctx);
    }
    for (const ctx of ctxs) p.onDone!(ctx, denied({ code: 'request_blocked' }));
    await Promise.all(ctxs.map((c) => c.locals.get(PENDING_LOCAL)));
    t.equal(await bans(services), 1, 'gateway_ip_bans_total counts one ban');
    const ev = services.audited.filter((a) => a.event === 'ip_banned');
    t.equal(ev.length, 1, 'one ip_banned audit event');
    t.match(ev[0]!.fields, { detail: { key: ip, count: 3, ban_ms: 1_800_000 } });
    t.same(await store.listBlocks(BAN_PREFIX, 10), [{ key: `${BAN_PREFIX}${ip}`, ttlMs: 1_800_000 }]);

    // Ten minutes later, more requests that were in flight when the ban was set are refused.
    clock.advance(600_000);
    for (let i = 0; i < 4; i++) p.onDone!(ctxs[i]!, denied({ code: 'request_blocked' }));
    await Promise.all(ctxs.slice(0, 4).map((c) => c.locals.get(PENDING_LOCAL)));
    t.equal(await bans(services), 1, 'still one ban');
    t.equal(services.audited.filter((a) => a.event === 'ip_banned').length, 1);
    t.same(
      await p.onRequest!(makeContext({ clientIp: ip })),
      { code: 'ip_blocked', ruleIds: ['auto-ban'], detail: { source: 'auto_ban', ttl_ms: 1_200_000 } },
      'the ban ends when it was set to, not later',
    );
    clock.advance(1_200_000);
    t.equal(await p.onRequest!(makeContext({ clientIp: ip })), undefined, 'and then it is over');
  },
);

t.test('auto-ban: only the configured kinds, only real denials, only within the window', async (t) => {
  const { clock, services } = setup();
  const p = await compilePolicy(ipBan, { threshold: 2 }, services);
  const ip = '198.51.100.30';
  await suspicious(p, ip, { code: 'unauthorized', detail: { reason: 'missing' } });
  await suspicious(p, ip, { code: 'unauthorized', detail: { reason: 'expired' } });
  await suspicious(p, ip, { code: 'unauthorized' });
  await suspicious(p, ip, { code: 'rate_limited' });
  await suspicious(p, ip, { code: 'not_found' });
  await suspicious(p, ip, { code: 'request_blocked' }, 'monitor');
  t.equal(await bans(services), 0, 'none of these count');
  await suspicious(p, ip);
  clock.advance(3_600_000);
  await suspicious(p, ip);
  t.equal(await bans(services), 0, 'the first one slid out of the 1h window');
  await suspicious(p, ip, { code: 'upload_rejected' }, 'deny');
  t.equal(await bans(services), 1);

  const { services: s2 } = setup();
  const custom = await compilePolicy(
    ipBan,
    { threshold: 1, ban_codes: ['not_found', 'unauthorized:missing'] },
    s2,
  );
  await suspicious(custom, '192.0.2.50', { code: 'request_blocked' });
  t.equal(await bans(s2), 0, 'ban_codes replaces the defaults');
  await suspicious(custom, '192.0.2.50', { code: 'unauthorized', detail: { reason: 'missing' } });
  t.equal(await bans(s2), 1);
});

t.test('auto-ban: IPv6 clients are banned per /64; allowlisted clients are never counted', async (t) => {
  const { services } = setup();
  const p = await compilePolicy(
    ipBan,
    { threshold: 2, allow: [{ cidr: '2001:db8:ffff::/48', skip: ['ip_ban'] }] },
    services,
  );
  await suspicious(p, '2001:db8:1:1::1');
  await suspicious(p, '2001:db8:1:1:abcd::2');
  t.equal(((await p.onRequest!(makeContext({ clientIp: '2001:db8:1:1::99' }))) as Deny).code, 'ip_blocked');
  t.equal(await p.onRequest!(makeContext({ clientIp: '2001:db8:1:2::1' })), undefined);
  for (let i = 0; i < 5; i++) await suspicious(p, '2001:db8:ffff::1');
  t.equal(await bans(services), 1);
});

t.test('bans are shared through the store (two gateways, one store) and survive a reload', async (t) => {
  const { services, store } = setup();
  const gw1 = await compilePolicy(ipBan, { threshold: 2 }, services);
  const gw2 = await compilePolicy(ipBan, { threshold: 2 }, makeServices({ store, clock: services.clock }));
  await suspicious(gw1, '192.0.2.99');
  await suspicious(gw2, '192.0.2.99');
  t.equal(
    ((await gw1.onRequest!(makeContext({ clientIp: '192.0.2.99' }))) as Deny).code,
    'ip_blocked',
    'counted together',
  );
  const reloaded = await compilePolicy(ipBan, { threshold: 5, deny: ['203.0.113.1'] }, services);
  t.equal(
    ((await reloaded.onRequest!(makeContext({ clientIp: '192.0.2.99' }))) as Deny).code,
    'ip_blocked',
    'the ban survives a reload',
  );
});

t.test('a ban holds at every ipv6_prefix the config keys clients by (sync and async stores)', async (t) => {
  // the whole config, as compileGeneration hands it to every route's compile
  const config = {
    policies: { ip_ban: { ipv6_prefix: 64 } },
    routes: [{ policies: { ip_ban: { ipv6_prefix: 128 } } }, { policies: { ip_ban: { ipv6_prefix: 48 } } }],
  };
  for (const sync of [true, false]) {
    const kind = sync ? 'sync store' : 'async store';
    const { services, store } = setup();
    if (!sync) {
      // what the redis backend offers: blockedFor() without the synchronous variant
      (services as { store: unknown }).store = new Proxy(store, {
        get: (target, key) => {
          if (key === 'blockedForSync') return undefined;
          const v: unknown = Reflect.get(target, key, target);
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    }
    const by = async (prefix: number) =>
      compilePolicy(ipBan, { threshold: 1, ipv6_prefix: prefix }, services, { config });
    const [p64, p128, p48] = [await by(64), await by(128), await by(48)];
    const code = async (p: Policy, ip: string) =>
      ((await p.onRequest!(makeContext({ clientIp: ip }))) as Deny | undefined)?.code;
    t.equal(await suspicious(p128, '2001:db8:1:2::1'), undefined, 'banned at /128 on one route');
    for (const p of [p64, p128, p48])
      t.equal(await code(p, '2001:db8:1:2::1'), 'ip_blocked', `/128 ban on every route (${kind})`);
    t.equal(await code(p64, '2001:db8:1:2::2'), undefined, 'a /128 ban is of that address alone');
    t.equal(await suspicious(p48, '2001:db8:7:1::1'), undefined, 'banned at /48 on another');
    for (const p of [p64, p128, p48])
      t.equal(await code(p, '2001:db8:7:ffff::9'), 'ip_blocked', `/48 ban on every route (${kind})`);
    t.equal(await code(p128, '2001:db8:8::1'), undefined, 'the next /48 is not banned');
    t.equal(await suspicious(p64, '192.0.2.1'), undefined);
    for (const p of [p64, p128, p48])
      t.equal(await code(p, '::ffff:192.0.2.1'), 'ip_blocked', 'IPv4: one key');
  }
});

t.test('store down: onRequest rejects (pipeline applies `fail`), onDone never throws', async (t) => {
  const services = makeServices({ store: noStore() });
  const p = await compilePolicy(ipBan, { fail: 'closed', deny: ['203.0.113.0/24'] }, services);
  t.equal(p.failure, 'closed');
  t.equal(
    ((await p.onRequest!(makeContext({ clientIp: '203.0.113.1' }))) as Deny).code,
    'ip_blocked',
    'the static list needs no store',
  );
  await t.rejects(Promise.resolve(p.onRequest!(makeContext({ clientIp: '192.0.2.1' }))));
  const ctx = makeContext({ clientIp: '192.0.2.1' });
  t.doesNotThrow(() => p.onDone!(ctx, denied({ code: 'request_blocked' })));
  await ctx.locals.get(PENDING_LOCAL);
  t.equal(services.logged.at(-1)?.msg, 'auto-ban counting failed (store unavailable)');
  const noAuto = await compilePolicy(ipBan, { auto_ban: false }, makeServices({ store: new MemoryStore() }));
  t.equal(noAuto.onDone, undefined);
});

t.test('config errors name the key', async (t) => {
  const services = makeServices();
  await t.rejects(compilePolicy(ipBan, { deny: ['10.0.0.1', '10.0.0.0/40'] }, services), {
    name: 'ConfigError',
    path: ['policies', 'ip_ban', 'deny', 1],
  });
  await t.rejects(compilePolicy(ipBan, { allow: [{ cidr: 'nope' }] }, services), {
    name: 'ConfigError',
    path: ['policies', 'ip_ban', 'allow', 0, 'cidr'],
  });
  await t.rejects(compilePolicy(ipBan, { ban_codes: ['request_blocked', 'no_such_code'] }, services), {
    path: ['policies', 'ip_ban', 'ban_codes', 1],
    message: 'unknown denial code "no_such_code"',
  });
  // names every object has (`'constructor' in CODES`) are no denial codes either
  for (const name of ['constructor', '__proto__'])
    await t.rejects(compilePolicy(ipBan, { ban_codes: [name] }, services), {
      name: 'ConfigError',
      path: ['policies', 'ip_ban', 'ban_codes', 0],
      message: `unknown denial code "${name}"`,
    });
  await t.rejects(compilePolicy(ipBan, { ban_codes: ['ip_blocked'] }, services), {
    name: 'ConfigError',
    path: ['policies', 'ip_ban', 'ban_codes', 0],
  });
  await t.rejects(
    compilePolicy(ipBan, { allow: [{ cidr: '10.0.0.0/8', skip: ['everything'] }] }, services),
    /invalid test config/,
  );
});
