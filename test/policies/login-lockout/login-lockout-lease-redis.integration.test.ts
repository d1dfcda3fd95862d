import t from 'tap';
import { startHarness } from '../../helpers/harness.js';
import { startRedis, type TestRedis } from '../../helpers/redis.js';
import { eventually } from '../../helpers/wait.js';
import { IN_PROGRESS, LOGIN_ROUTE, login, upstreamLogins } from '../../helpers/concurrent-logins.js';

/**
 * The per-username lease is given back only by the attempt that holds it. A Redis restarted
 * without persistence forgets a lease while its attempt is with the upstream; a second attempt
 * then takes a new one. When the first answers, its release must leave the second's lease in
 * place (compare-and-delete on its owner token): before, it deleted the key, and a third guess
 * went to the upstream alongside the second.
 */

let redis: TestRedis;
t.before(async () => {
  redis = await startRedis();
});
t.teardown(() => redis.stop());

t.test('a lease forgotten by a Redis restart: the first holder does not release the second’s', async (t) => {
  const h = await startHarness({
    config: `
store:
  prefix: "leaseown:"
  timeout: 500ms
${LOGIN_ROUTE}`,
    env: { REDIS_URL: redis.url },
  });
  t.teardown(() => h.close());
  const store = h.gateway.services.store;
  t.equal(store.kind, 'redis');
  await h.clearMock();

  const first = login(h, 'admin', 'wrong-1', 3_000);
  let firstAnswered = false;
  void first.then(() => (firstAnswered = true));
  await eventually('the first attempt is with the upstream', async () => (await upstreamLogins(h)) === 1);
  await redis.kill();
  await redis.restart();
  await eventually('the gateway reconnected to the restarted Redis', () => store.healthy());

  const second = login(h, 'admin', 'wrong-2', 6_000);
  await eventually('the second attempt is with the upstream', async () => (await upstreamLogins(h)) === 2);
  t.equal(firstAnswered, false, 'the first attempt was still with the upstream then');
  const firstAnswer = await first;
  t.equal(firstAnswer.status, 401, 'the first attempt answered (and gave its lease back)');

  const third = await login(h, 'admin', 'wrong-3');
  t.equal(third.status, 429, 'the second attempt still holds the lease');
  t.equal(third.error, 'account_locked');
  t.equal(third.message, IN_PROGRESS);
  t.equal(third.retryAfter, '1');
  t.equal(await upstreamLogins(h), 2, 'the third guess never reached the upstream');

  t.equal((await second).status, 401);
  t.equal((await login(h, 'admin', 'admin-secret-pw')).status, 200, 'free again once the second answered');
  t.equal(await upstreamLogins(h), 3);

  const audit = await h.audit();
  t.equal(audit.filter((l) => l.event === 'login_failure').length, 2);
  const refused = audit.filter((l) => l.event === 'access_denied');
  t.equal(refused.length, 1);
  t.match(refused[0], {
    decision: 'deny',
    reason: 'lockout',
    code: 'account_locked',
    status: 429,
    rule_ids: ['login-lockout-concurrent'],
  });
});
