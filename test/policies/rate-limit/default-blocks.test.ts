import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { REPO, startHarness } from '../../helpers/harness.js';

/**
 * The "Default gateway.yaml blocks" of docs/abuse-controls.md load and do what the
 * document says (the lead pastes them into gateway.yaml).
 */
const doc = fs.readFileSync(path.join(REPO, 'docs', 'abuse-controls.md'), 'utf8');
const section = doc.slice(doc.indexOf('## Default gateway.yaml blocks'));
const yaml = /```yaml\n([\s\S]*?)```/.exec(section)![1]!;

t.test('the documented default blocks load, with the env defaults and overrides', async (t) => {
  const h = await startHarness({
    config: yaml,
    abuseControls: true,
    env: { RATELIMIT_DEFAULT: '100 per day;7 per minute', MAX_LOGIN_ATTEMPTS: '2' },
  });
  t.teardown(() => h.close());
  const login = (password: string) =>
    fetch(`${h.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password }),
    });
  const first = await login('wrong');
  t.equal(first.status, 401);
  t.equal(
    first.headers.get('ratelimit-policy'),
    '"default-86400s";q=100;w=86400, "default-60s";q=7;w=60, "login-60s";q=5;w=60, "login-3600s";q=20;w=3600',
    'RATELIMIT_DEFAULT feeds the default rule; the login route adds its own',
  );
  t.equal((await login('wrong')).status, 401);
  const locked = await login('alice-secret-pw');
  t.equal(locked.status, 429, 'MAX_LOGIN_ATTEMPTS=2 locks after two failures');
  t.equal(((await locked.json()) as { error: string }).error, 'account_locked');
  t.match(locked.headers.get('retry-after'), /^(899|900)$/, 'LOGIN_LOCKOUT_DURATION defaults to 15 minutes');

  const register = () =>
    fetch(`${h.url}/api/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: `new-user-${Math.random()}`, password: 'A-long-enough-p4ss!' }),
    });
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push((await register()).status);
  t.equal(statuses[3], 429, 'register: 3 per minute');
  t.equal(statuses.filter((s) => s === 429).length, 1);
});

t.test('the documented login and register limits are the shipped gateway.yaml ones', async (t) => {
  const shipped = fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8');
  for (const name of ['login', 'register']) {
    const inDoc = new RegExp(`- name: ${name}\\n\\s+limits: ([^\\n]+)`).exec(yaml)?.[1];
    const inShipped = new RegExp(`\\{ name: ${name}, limits: ([^,}]+)`).exec(shipped)?.[1];
    t.ok(inDoc, `${name} limits in the doc`);
    t.equal(inDoc, inShipped, `${name}: the doc says what gateway.yaml ships`);
  }
});
