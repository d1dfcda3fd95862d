import t, { type Test } from 'tap';
import { startHarness, type Harness } from '../../helpers/harness.js';
import { startRedis, type TestRedis } from '../../helpers/redis.js';
import { eventually as waitFor } from '../../helpers/wait.js';

/**
 * Two gateway instances (each with its own mock upstream) sharing one real redis-server:
 * one rate limit, one lockout, one ban between them; then Redis dies mid-traffic and
 * comes back.
 */

let redis: TestRedis;
t.before(async () => {
  redis = await startRedis();
});
t.teardown(() => redis.stop());

let seq = 0;
function config(extraHealth = '', timeout = '200ms'): string {
  seq += 1;
  return `
store:
  prefix: "shared${seq}:"
  timeout: ${timeout}
policies:
  rate_limit:
    enabled: true
    default: "off"
  ip_ban:
    enabled: true
    threshold: 2
routes:
  - name: login
    methods: [POST]
    path: /api/auth/login
    policies:
      auth: { require: [none] }
      login_lockout: { enabled: true, max_attempts: 2 }
      rate_limit: { route_rules: [{ name: login, limits: 100/minute, fail: closed }] }
  - name: health
    methods: [GET]
    path: /api/health
    policies:
      auth: { require: [none] }
      rate_limit: { route_rules: [{ name: health, limits: 4/minute }${extraHealth}] }
`;
}

/** `timeout`: the store timeout (a slower one where a loaded machine must not turn counting into fail-open). */
async function pair(t: Test, timeout?: string): Promise<[Harness, Harness]> {
  const yaml = config('', timeout);
  const a = await startHarness({ config: yaml, abuseControls: true, env: { REDIS_URL: redis.url } });
  const b = await startHarness({ config: yaml, abuseControls: true, env: { REDIS_URL: redis.url } });
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  // both connected to Redis before the first request: a request that comes first waits at most
  // store.timeout (200 ms) for the connection, which a loaded CI machine can exceed (the
  // fail-closed login rule then answered 503)
  for (const h of [a, b])
    await eventually('the instance to be ready (Redis connected)', async () => {
      const r = await fetch(`${h.adminUrl}/readyz`);
      await r.arrayBuffer();
      return r.status === 200;
    });
  return [a, b];
}

const health = async (h: Harness, headers: Record<string, string> = {}) =>
  (await fetch(`${h.url}/api/health`, { headers })).status;
const loginAs = async (h: Harness, username: string, password: string) => {
  const r = await fetch(`${h.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  return { status: r.status, headers: r.headers, body: (await r.json()) as Record<string, unknown> };
};

async function eventually(what: string, cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`never happened: ${what}`);
}

t.test('two instances enforce one rate limit together', async (t) => {
  const [a, b] = await pair(t);
  const statuses = [];
  for (let i = 0; i < 6; i++) statuses.push(await health(i % 2 ? b : a));
  t.same(statuses, [200, 200, 200, 200, 429, 429], '4/minute across both instances, not per instance');
});

t.test('two instances enforce one lockout together', async (t) => {
  const [a, b] = await pair(t);
  t.equal((await loginAs(a, 'alice', 'wrong-1')).status, 401);
  t.equal((await loginAs(b, 'alice', 'wrong-2')).status, 401);
  const locked = await loginAs(a, 'alice', 'alice-secret-pw');
  t.equal(locked.status, 429);
  t.equal(locked.body.error, 'account_locked');
  t.match(locked.headers.get('retry-after'), /^(899|900)$/);
  const lockedB = await loginAs(b, 'alice', 'alice-secret-pw');
  t.equal(lockedB.status, 429, 'the other instance knows too');
  t.equal((await a.mockRequests()).length, 1, 'instance A forwarded one login, not the locked one');
  t.equal((await b.mockRequests()).length, 1);
  t.equal((await loginAs(b, 'admin', 'admin-secret-pw')).status, 200, 'other accounts log in');
  const audit = [...(await a.audit()), ...(await b.audit())];
  t.equal(audit.filter((l) => l.event === 'login_failure').length, 2);
  t.equal(audit.filter((l) => l.event === 'account_locked').length, 1);
});

t.test('a ban made by one instance is enforced by the other', async (t) => {
  const [a, b] = await pair(t);
  t.equal(await health(a, { 'user-agent': 'sqlmap/1.7' }), 403);
  t.equal(await health(b, { 'user-agent': 'sqlmap/1.7' }), 403);
  await eventually(
    'the ban to reach instance A',
    async () => (await fetch(`${a.url}/api/health`)).status === 403,
  );
  const r = await fetch(`${b.url}/api/health`);
  t.equal(r.status, 403);
  t.equal(((await r.json()) as { error: string }).error, 'ip_blocked');
  const audit = [...(await a.audit()), ...(await b.audit())];
  t.equal(audit.filter((l) => l.event === 'ip_banned').length, 1);
});

t.test(
  'a burst of 40 parallel requests across both instances: exactly 4 pass a 4/minute limit',
  async (t) => {
    // (40 requests at once on a loaded CI machine can keep one Redis call past 200 ms, and the
    // health rule fails open: a fifth 200 that is the configured failure mode, not a miscount)
    const [a, b] = await pair(t, '5s');
    const statuses = await Promise.all(Array.from({ length: 40 }, (_, i) => health(i % 2 ? b : a)));
    t.equal(statuses.filter((s) => s === 200).length, 4);
    t.equal(statuses.filter((s) => s === 429).length, 36);
    const forwarded = (await a.mockRequests()).length + (await b.mockRequests()).length;
    t.equal(forwarded, 4, 'only the allowed requests reached the upstreams');
  },
);

t.test('a parallel burst of scanner requests across both instances: one ban, audited once', async (t) => {
  const [a, b] = await pair(t, '5s');
  const burst = await Promise.all(
    Array.from({ length: 40 }, async (_, i) => {
      const r = await fetch(`${(i % 2 ? b : a).url}/api/health`, { headers: { 'user-agent': 'sqlmap/1.7' } });
      return `${r.status} ${((await r.json()) as { error: string }).error}`;
    }),
  );
  t.equal(burst.filter((s) => s === '403 user_agent_rejected' || s === '403 ip_blocked').length, 40);
  const bans = async () => {
    let n = 0;
    for (const h of [a, b]) {
      const m = await (await fetch(`${h.adminUrl}/metrics`)).text();
      n += Number(/^gateway_ip_bans_total (\d+)/m.exec(m)?.[1] ?? 0);
    }
    return n;
  };
  const banned = async () =>
    [...(await a.audit()), ...(await b.audit())].filter((l) => l.event === 'ip_banned').length;
  await waitFor('the ban', async () => (await banned()) >= 1);
  // the accounting runs after each response: wait until it has settled
  let last = '';
  let stable = 0;
  await waitFor('the auto-ban accounting to settle', async () => {
    const now = `${await banned()}/${await bans()}`;
    stable = now === last ? stable + 1 : 0;
    last = now;
    return stable >= 5;
  });
  t.equal(await banned(), 1, 'one ip_banned audit event between both instances');
  t.equal(await bans(), 1, 'gateway_ip_bans_total is 1 between both instances');
  const r = await fetch(`${a.url}/api/health`);
  t.equal(r.status, 403);
  t.equal(((await r.json()) as { error: string }).error, 'ip_blocked');
  t.equal(
    (await a.mockRequests()).length + (await b.mockRequests()).length,
    0,
    'nothing reached the upstreams',
  );
});

t.test(
  'redis killed mid-traffic: fail open (and closed where configured), counted, not ready; recovery when it returns',
  async (t) => {
    const [a] = await pair(t);
    t.equal(await health(a), 200);
    t.equal((await fetch(`${a.adminUrl}/readyz`)).status, 200);

    await redis.kill();
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push(await health(a));
    t.same(
      statuses,
      [200, 200, 200, 200, 200, 200],
      'fail open: the rate limit lets traffic through, nothing hangs',
    );
    const r = await fetch(`${a.url}/api/health`);
    t.equal(r.headers.get('ratelimit'), null, 'no RateLimit headers when the store could not say');
    await r.arrayBuffer();
    const closed = await loginAs(a, 'alice', 'alice-secret-pw');
    t.equal(closed.status, 503, 'the login rule is fail: closed');
    t.equal(closed.body.error, 'service_unavailable');

    const ready = await fetch(`${a.adminUrl}/readyz`);
    t.equal(ready.status, 503);
    t.match(await ready.json(), { status: 'not_ready', reasons: [/store/] });
    const metrics = await (await fetch(`${a.adminUrl}/metrics`)).text();
    const errors = Number(/gateway_store_errors_total\{store="redis"\} (\d+)/.exec(metrics)?.[1] ?? 0);
    t.ok(errors >= 7, `store errors counted (${errors})`);
    await eventually('the store_unavailable audit event', async () =>
      (await a.audit()).some((l) => l.event === 'store_unavailable'),
    );

    await redis.restart();
    await eventually('readiness', async () => (await fetch(`${a.adminUrl}/readyz`)).status === 200);
    const after = [];
    for (let i = 0; i < 5; i++) after.push(await health(a));
    t.same(after, [200, 200, 200, 200, 429], 'limits are enforced again (the restarted redis is empty)');
    t.equal((await loginAs(a, 'alice', 'alice-secret-pw')).status, 200);
  },
);
