import t from 'tap';
import { startHarness } from '../../helpers/harness.js';
import { eventually } from '../../helpers/wait.js';
import { IN_PROGRESS, LOGIN_ROUTE, guess, login, upstreamLogins } from '../../helpers/concurrent-logins.js';

/**
 * Over real TCP with a slow upstream (the mock answers 300 ms late): concurrent wrong logins
 * for one username cannot outrun the lock. One attempt per username is with the upstream
 * at a time, so exactly MAX_LOGIN_ATTEMPTS guesses reach it, however many are sent together.
 */

const CONFIG = LOGIN_ROUTE;

const SLOW_MS = 300;

t.test(
  '20 parallel wrong logins for one username with MAX_LOGIN_ATTEMPTS=3: exactly 3 reach the upstream',
  async (t) => {
    const h = await startHarness({ config: CONFIG, env: { MAX_LOGIN_ATTEMPTS: '3' } });
    t.teardown(() => h.close());
    await h.clearMock();

    const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => guess(h, 'admin', i, SLOW_MS)));
    t.equal(await upstreamLogins(h), 3, 'exactly max_attempts guesses reached the upstream');
    const finals = outcomes.map((o) => o.final);
    t.equal(finals.filter((r) => r.status === 401).length, 3, 'three guessers got the upstream 401');
    const locked = finals.filter((r) => r.status === 429);
    t.equal(locked.length, 17, 'the seventeen others met the lock');
    for (const r of locked) {
      t.equal(r.error, 'account_locked');
      t.equal(r.message, 'This account is temporarily locked; retry later.');
    }
    const waits = outcomes.reduce((n, o) => n + o.waits, 0);

    const audit = await h.audit();
    t.equal(audit.filter((l) => l.event === 'login_failure').length, 3, 'three login_failure events');
    t.equal(audit.filter((l) => l.event === 'account_locked').length, 1, 'one account_locked event');
    const denied = audit.filter((l) => l.event === 'access_denied');
    const inProgress = denied.filter((l) => (l.rule_ids as string[])[0] === 'login-lockout-concurrent');
    t.equal(inProgress.length, waits, 'every "in progress" refusal is audited');
    t.equal(denied.length - inProgress.length, 17, 'and every refusal by the lock');
    for (const l of inProgress)
      t.match(l, { decision: 'deny', reason: 'lockout', code: 'account_locked', status: 429 });

    // The lock ends; the owner logs in (no guess is in flight any more).
    await eventually(
      'the lock ended',
      async () => (await login(h, 'admin', 'admin-secret-pw')).status !== 429,
    );
    await h.clearMock();
    t.equal((await login(h, 'admin', 'admin-secret-pw')).status, 200, 'a correct login works after the lock');
    t.equal(await upstreamLogins(h), 1);
  },
);

t.test('sequential use is unchanged: a typo, then the right password; no 429', async (t) => {
  const h = await startHarness({ config: CONFIG, env: { MAX_LOGIN_ATTEMPTS: '3' } });
  t.teardown(() => h.close());
  t.equal((await login(h, 'alice', 'alice-typo-pw', SLOW_MS)).status, 401);
  t.equal((await login(h, 'alice', 'alice-secret-pw', SLOW_MS)).status, 200);
  // the success reset the count: three more typos before the lock, as ever
  for (let i = 0; i < 3; i++) t.equal((await login(h, 'alice', `typo-${i}`)).status, 401);
  const locked = await login(h, 'alice', 'alice-secret-pw');
  t.equal(locked.status, 429);
  t.equal(locked.error, 'account_locked');
  t.not(locked.message, IN_PROGRESS);
  // while one login of alice is with the upstream, bob's is not held up
  const [a, b] = await Promise.all([
    login(h, 'admin', 'admin-secret-pw', SLOW_MS),
    login(h, 'bob', 'bob-wrong', SLOW_MS),
  ]);
  t.equal(a.status, 200);
  t.equal(b.status, 401);
  const audit = await h.audit();
  t.equal(
    audit.filter((l) => l.event === 'access_denied').length,
    1,
    'the only refusal was the lock after three typos',
  );
});

t.test(
  'a second login for the same account while the first is with the upstream: 429, Retry-After 1',
  async (t) => {
    const h = await startHarness({ config: CONFIG, env: { MAX_LOGIN_ATTEMPTS: '3' } });
    t.teardown(() => h.close());
    await h.clearMock();
    const first = login(h, 'alice', 'alice-secret-pw', 2_000);
    // the first is with the upstream once the mock has recorded it
    await eventually('the first login reached the upstream', async () => (await upstreamLogins(h)) === 1);
    const second = await login(h, 'alice', 'alice-secret-pw');
    t.equal(second.status, 429);
    t.equal(second.error, 'account_locked');
    t.equal(second.message, IN_PROGRESS);
    t.equal(second.retryAfter, '1');
    t.equal((await first).status, 200);
    t.equal(
      (await login(h, 'alice', 'alice-secret-pw')).status,
      200,
      'free again once the first was answered',
    );
    t.equal(await upstreamLogins(h), 2, 'the refused one never reached the upstream');
  },
);
