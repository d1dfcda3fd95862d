import t from 'tap';
import { startHarness, type Harness } from '../../helpers/harness.js';

/** Over real TCP with the real mock: failures come from the mock's 401s. */

const CONFIG = `
routes:
  - name: login
    methods: [POST]
    path: /api/auth/login
    policies:
      auth: { require: [none] }
      login_lockout:
        enabled: true
        max_attempts: \${MAX_LOGIN_ATTEMPTS:-5}
        lockout: \${LOGIN_LOCKOUT_DURATION:-15}
        ip_max_attempts: 8
`;

async function post(h: Harness, body: string, contentType = 'application/json') {
  const r = await fetch(`${h.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': contentType },
    body,
  });
  return { status: r.status, headers: r.headers, body: await r.text() };
}
const creds = (username: unknown, password: string) => JSON.stringify({ username, password });

t.test(
  'MAX_LOGIN_ATTEMPTS failures lock the account for LOGIN_LOCKOUT_DURATION; the upstream is not called',
  async (t) => {
    const h = await startHarness({
      config: CONFIG,
      env: { MAX_LOGIN_ATTEMPTS: '3', LOGIN_LOCKOUT_DURATION: '2' },
    });
    t.teardown(() => h.close());
    await h.clearMock();
    for (let i = 0; i < 3; i++) t.equal((await post(h, creds('alice', `wrong-${i}`))).status, 401);
    const locked = await post(h, creds('alice', 'alice-secret-pw'));
    t.equal(locked.status, 429);
    t.match(
      locked.headers.get('retry-after'),
      /^(119|120)$/,
      'a bare 2 means two minutes (real clock: to the second)',
    );
    t.match(JSON.parse(locked.body), {
      error: 'account_locked',
      message: 'This account is temporarily locked; retry later.',
    });
    t.equal((await h.mockRequests()).length, 3, 'the locked attempt never reached the upstream');
    t.equal((await post(h, creds('admin', 'admin-secret-pw'))).status, 200, 'another account logs in');
    const ghost = 'nobody-has-this-name';
    for (let i = 0; i < 3; i++) t.equal((await post(h, creds(ghost, 'x'))).status, 401);
    t.equal(
      (await post(h, creds(ghost, 'x'))).status,
      429,
      'a username that does not exist is locked the same way',
    );

    const audit = await h.audit();
    t.equal(audit.filter((l) => l.event === 'login_failure').length, 6);
    const locks = audit.filter((l) => l.event === 'account_locked');
    t.equal(locks.length, 2);
    t.match(locks[0], { client_ip: '127.0.0.1', decision: 'deny', reason: 'lockout', status: 401 });
    t.notOk(JSON.stringify(audit).includes('alice-secret-pw'), 'no password in the audit log');
    const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
    t.match(metrics, /gateway_login_failures_total 6/);
    t.match(metrics, /gateway_account_lockouts_total 2/);
  },
);

t.test('bad input reaches the upstream and counts per IP only; the IP is locked past its bar', async (t) => {
  const h = await startHarness({ config: CONFIG, env: { MAX_LOGIN_ATTEMPTS: '1' } });
  t.teardown(() => h.close());
  const bodies: [string, string][] = [
    ['not json', '{"username": "alice"'],
    ['empty username', creds('', 'x')],
    ['number username', creds(42, 'x')],
    ['object username', creds({ $gt: '' }, 'x')],
    ['huge username', creds('u'.repeat(100_000), 'x')],
    ['missing username', JSON.stringify({ password: 'x' })],
  ];
  let failures = 0;
  for (const [what, body] of bodies) {
    for (let i = 0; i < 2; i++) {
      const r = await post(h, body);
      t.not(r.status, 429, `${what}: not locked`);
      if (r.status === 401) failures++;
    }
  }
  t.equal(
    (await post(h, creds('alice', 'alice-secret-pw'))).status,
    200,
    'alice was never counted, and a success is a success',
  );
  const form = await post(h, 'username=formuser&password=x', 'application/x-www-form-urlencoded');
  t.equal(form.status, 401);
  failures++;
  t.equal(
    (await post(h, 'username=formuser&password=x', 'application/x-www-form-urlencoded')).status,
    429,
    'form bodies are read too',
  );
  t.ok(failures < 8, `${failures} failures so far`);
  for (let i = failures; i < 8; i++) t.equal((await post(h, creds(`user-${i}`, 'x'))).status, 401);
  const ipLocked = await post(h, creds('someone-else', 'x'));
  t.equal(ipLocked.status, 429, '8 failures from one IP lock the IP, whatever the username');
  t.match(ipLocked.headers.get('retry-after'), /^(899|900)$/);
});

t.test(
  'a form naming several usernames is refused: no lockout bypass, no reset by another account',
  async (t) => {
    // The mock (like any server using the last value) logs in the last `username`, the
    // gateway used to count the first one: each attempt below was a free guess on admin.
    const h = await startHarness({ config: CONFIG, env: { MAX_LOGIN_ATTEMPTS: '2' } });
    t.teardown(() => h.close());
    await h.clearMock();
    const form = 'application/x-www-form-urlencoded';
    for (let i = 0; i < 4; i++) {
      const r = await post(h, `username=decoy-${i}&username=admin&password=wrong-${i}`, form);
      t.equal(r.status, 400, `attempt ${i}: refused`);
      t.equal(r.headers.get('content-type'), 'application/json; charset=utf-8');
      const body = JSON.parse(r.body) as Record<string, unknown>;
      t.same(Object.keys(body).sort(), ['error', 'message', 'request_id']);
      t.match(body, { error: 'bad_request', message: 'The login request names more than one username.' });
      t.equal(body.request_id, r.headers.get('x-request-id'));
    }
    // a success of another account must not reset admin's count either
    const reset = await post(h, 'username=admin&username=alice&password=alice-secret-pw', form);
    t.equal(reset.status, 400);
    t.same(await h.mockRequests(), [], 'none of them reached the upstream');

    // the same username twice (after normalisation) is one username: forwarded and counted
    const same = await post(h, 'username=admin&username=%EF%BC%A1dmin&password=wrong', form);
    t.equal(same.status, 401, 'forwarded; the upstream answered');
    t.equal((await post(h, creds('admin', 'wrong'))).status, 401);
    const locked = await post(h, creds('admin', 'admin-secret-pw'));
    t.equal(locked.status, 429, 'admin is locked after two counted failures');
    t.match(locked.headers.get('retry-after'), /^(899|900)$/);
    t.equal((await h.mockRequests()).length, 2, 'only the two counted attempts reached the upstream');

    const audit = await h.audit();
    const refused = audit.filter((l) => l.event === 'request_blocked');
    t.equal(refused.length, 5);
    for (const l of refused) {
      t.match(l, {
        event: 'request_blocked',
        path: '/api/auth/login',
        method: 'POST',
        decision: 'deny',
        status: 400,
        rule_ids: ['login-lockout-ambiguous-username'],
        detail: { check: 'ambiguous_username' },
      });
    }
    t.same(
      audit
        .filter((l) => l.event === 'login_failure')
        .map((l) => (l.detail as Record<string, unknown>).failures),
      [1, 2],
    );
    t.equal(audit.filter((l) => l.event === 'account_locked').length, 1);
    t.notOk(JSON.stringify(audit).includes('wrong-'), 'no password in the audit log');
  },
);

t.test('JSON keys naming the username in two spellings of different users are refused', async (t) => {
  // a case-insensitive binder (Go, ASP.NET Core) would log in one of them, the gateway used
  // to count the exact `username` only: a free guess on the other account
  const h = await startHarness({ config: CONFIG, env: { MAX_LOGIN_ATTEMPTS: '2' } });
  t.teardown(() => h.close());
  await h.clearMock();
  const r = await post(h, JSON.stringify({ username: 'decoy', USERNAME: 'admin', password: 'wrong-1' }));
  t.equal(r.status, 400);
  t.match(JSON.parse(r.body), {
    error: 'bad_request',
    message: 'The login request names more than one username.',
  });
  t.same(await h.mockRequests(), [], 'never forwarded');
  const line = (await h.audit()).find((l) => l.event === 'request_blocked');
  t.match(line, { status: 400, rule_ids: ['login-lockout-ambiguous-username'] });
});
