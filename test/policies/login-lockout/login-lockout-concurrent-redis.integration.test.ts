import t from 'tap';
import { startHarness } from '../../helpers/harness.js';
import { startRedis, type TestRedis } from '../../helpers/redis.js';
import { eventually } from '../../helpers/wait.js';
import { LOGIN_ROUTE, guess, login, upstreamLogins } from '../../helpers/concurrent-logins.js';

/**
 * Two gateway instances (each with its own slow mock upstream) sharing one real
 * redis-server: the per-username lease is shared too, so guesses spread over both
 * instances still reach the upstreams only MAX_LOGIN_ATTEMPTS times in all.
 */

let redis: TestRedis;
t.before(async () => {
  redis = await startRedis();
});
t.teardown(() => redis.stop());

const CONFIG = `
store:
  prefix: "lease:"
  timeout: 500ms
${LOGIN_ROUTE}`;

t.test(
  '20 parallel wrong logins over two instances sharing Redis: exactly 3 reach the upstreams',
  async (t) => {
    const a = await startHarness({ config: CONFIG, env: { REDIS_URL: redis.url } });
    const b = await startHarness({ config: CONFIG, env: { REDIS_URL: redis.url } });
    t.teardown(async () => {
      await a.close();
      await b.close();
    });
    t.equal(a.gateway.services.store.kind, 'redis');
    await a.clearMock();
    await b.clearMock();

    const outcomes = await Promise.all(
      Array.from({ length: 20 }, (_, i) => guess(i % 2 === 0 ? a : b, 'admin', i, 300)),
    );
    t.equal((await upstreamLogins(a)) + (await upstreamLogins(b)), 3, 'exactly max_attempts in all');
    const finals = outcomes.map((o) => o.final);
    t.equal(finals.filter((r) => r.status === 401).length, 3);
    t.equal(finals.filter((r) => r.status === 429 && r.error === 'account_locked').length, 17);
    const audit = [...(await a.audit()), ...(await b.audit())];
    t.equal(audit.filter((l) => l.event === 'login_failure').length, 3);
    t.equal(audit.filter((l) => l.event === 'account_locked').length, 1, 'one lock, on one instance');

    await eventually(
      'the lock ended',
      async () => (await login(b, 'admin', 'admin-secret-pw')).status !== 429,
    );
    t.equal((await login(a, 'admin', 'admin-secret-pw')).status, 200, 'a correct login works after the lock');
  },
);
