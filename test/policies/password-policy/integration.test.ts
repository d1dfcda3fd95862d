/** Password requirements over real TCP: a weak password never reaches the mock. */
import t from 'tap';
import { startHarness } from '../../helpers/harness.js';

const config = `
policies:
  # the pattern engine refuses unparseable JSON itself (403); off here to see this policy's answer
  pattern_block: { enabled: false }
  password_policy:
    min_length: 10
routes:
  - name: login
    methods: [POST]
    path: /api/auth/login
    policies: { auth: { require: [none] } }
  - name: register
    methods: [POST]
    path: /api/auth/register
    policies: { auth: { require: [none] }, password_policy: { enabled: true } }
  - name: password
    methods: [POST]
    path: /api/auth/password
    policies: { auth: { require: [jwt] }, password_policy: { enabled: true } }
  - name: api
    path: /api/**
`;

const h = await startHarness({ config });
t.teardown(() => h.close());

const post = (path: string, body: string, headers: Record<string, string> = {}) =>
  fetch(`${h.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
  });

t.test('register: each weak password is refused with its rule, strong ones pass', async (t) => {
  await h.clearMock();
  const weak: [string, RegExp][] = [
    ['short!1', /at least 10 characters/],
    ['longenoughbutplain', /special character/],
    ['carol-is-my-name', /must not contain the username/],
    [`${'x'.repeat(72)}!`, /at most 72 bytes/],
    ['pass\u0000word-long!', /must not contain control characters/],
    ['            ', /must not be only spaces/],
  ];
  for (const [password, message] of weak) {
    const r = await post('/api/auth/register', JSON.stringify({ username: 'carol', password }));
    t.equal(r.status, 400);
    const text = await r.text();
    t.notOk(text.includes(password), 'the password is not echoed');
    const body = JSON.parse(text) as { error: string; message: string };
    t.equal(body.error, 'weak_password');
    t.match(body.message, message);
  }
  const bad = await post('/api/auth/register', '{"username":"carol","password":');
  t.equal(bad.status, 400);
  t.equal(((await bad.json()) as { error: string }).error, 'bad_request');
  t.same(await h.mockRequests(), [], 'none reached the mock');
  const ok = await post(
    '/api/auth/register',
    JSON.stringify({ username: 'carol', password: 'a long pass-phrase' }),
  );
  t.equal(ok.status, 201);
  t.same(
    (await h.mockRequests()).map((m) => m.path),
    ['/api/auth/register'],
  );
  const audit = await h.audit();
  t.notOk(JSON.stringify(audit).includes('short!1'), 'no password in the audit log');
  t.ok(
    audit.some((l) => l.event === 'access_denied' && l.status === 400),
    'weak passwords audited',
  );
});

t.test('change password: new_password is checked against the authenticated subject', async (t) => {
  const token = await h.login('alice');
  await h.clearMock();
  const auth = { authorization: `Bearer ${token}` };
  const r = await post(
    '/api/auth/password',
    JSON.stringify({ old_password: 'alice-secret-pw', new_password: 'Alice-2024-new!' }),
    auth,
  );
  t.equal(r.status, 400);
  t.match(await r.json(), { error: 'weak_password', message: /username/ });
  t.same(await h.mockRequests(), []);
  const ok = await post(
    '/api/auth/password',
    JSON.stringify({ old_password: 'alice-secret-pw', new_password: 'a much better one!' }),
    auth,
  );
  t.equal(ok.status, 204);
});

t.test(
  'a password field in another case is checked too: case-insensitive binders (Go, ASP.NET Core) use it',
  async (t) => {
    const token = await h.login('alice');
    await h.clearMock();
    const cases: [string, string, string, Record<string, string>][] = [
      // Go's encoding/json and ASP.NET Core bind the last of these to the Password property
      [
        'register',
        '/api/auth/register',
        '{"username":"dave","password":"a long pass-phrase","PASSWORD":"weak"}',
        {},
      ],
      // Go also folds the long s (U+017F) to s
      [
        'register',
        '/api/auth/register',
        '{"username":"dave","password":"a long pass-phrase","pa\u017f\u017fword":"weak"}',
        {},
      ],
      ['register', '/api/auth/register', '{"username":"dave","Password":"weak"}', {}],
      [
        'password',
        '/api/auth/password',
        '{"old_password":"alice-secret-pw","new_password":"a much better one!","New_Password":"weak"}',
        { authorization: `Bearer ${token}` },
      ],
    ];
    for (const [route, path, body, headers] of cases) {
      const r = await post(path, body, headers);
      t.equal(r.status, 400, body);
      const json = (await r.json()) as { error: string; message: string; request_id: string };
      t.equal(json.error, 'weak_password');
      t.match(json.message, /at least 10 characters/);
      const line = (await h.audit()).find((l) => l.request_id === json.request_id);
      t.equal(line?.event, 'access_denied');
      t.equal(line?.route, route);
      t.equal(line?.status, 400);
    }
    const form = await fetch(`${h.url}/api/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'username=dave&password=a+long+pass-phrase&PassWord=weak',
    });
    t.equal(form.status, 400, 'a form body alike');
    t.equal(((await form.json()) as { error: string }).error, 'weak_password');
    t.same(await h.mockRequests(), [], 'none reached the mock');
  },
);
