import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  loadConfigFile,
  parseConfig,
  ConfigLoadError,
  formatProblem,
  type ConfigProblem,
} from '../../gateway/config/load.js';
import { validateConfigFile } from '../../gateway/commands/validate.js';

/**
 * Configuration audit: ${…} references that are not ${VAR} or ${VAR:-default}, values typed
 * from the environment where a string is wanted, files that are not UTF-8, alias bombs.
 */

const SECRET = 'cfgaudit-test-secret-0123456789-abcdefghij';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-cfgaudit-test-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

function problems(yaml: string, env: Record<string, string> = {}): readonly ConfigProblem[] {
  try {
    parseConfig(yaml, 'c.yaml', { JWT_SECRET_KEY: SECRET, ...env });
    return [];
  } catch (err) {
    if (err instanceof ConfigLoadError) return err.problems;
    throw err;
  }
}

const MALFORMED =
  'malformed ${…} reference: write ${VAR} or ${VAR:-default} (a default cannot hold another reference), or $${ for a literal ${';

t.test('a ${ that is no reference is an error, never the value itself', async (t) => {
  // Each of these used to load with the literal text as the JWT secret (>= 32 characters,
  // so compile accepted it): anyone reading the file could sign tokens.
  const cases = [
    ['unterminated', '${JWT_SECRET_KEY_FOR_PRODUCTION_USE_ONLY'],
    ['shell :? form', '${JWT_SECRET_KEY:?must be set in production}'],
    ['shell - form', '${JWT_SECRET_KEY-a-default-secret-of-enough-length}'],
    ['nested default', '${JWT_SECRET_KEY:-${JWT_SECRET_FALLBACK_SHARED_VALUE}}'],
  ];
  for (const [name, ref] of cases) {
    const ps = problems(`policies:\n  auth:\n    jwt:\n      secret: ${ref}\n`, {
      JWT_SECRET_FALLBACK_SHARED_VALUE: SECRET,
    });
    t.same(
      ps.map(formatProblem),
      [`c.yaml:4:15: policies.auth.jwt.secret: ${MALFORMED}`],
      `${name}: one problem at the value, the text not repeated`,
    );
  }
  // inside a longer quoted string too
  t.same(problems('upstream:\n  url: "http://${UPSTREAM_HOST:9000"\n').map(formatProblem), [
    `c.yaml:2:8: upstream.url: ${MALFORMED}`,
  ]);
});

t.test('$${ is a literal ${; well-formed references around it still expand', async (t) => {
  const c = parseConfig(
    'audit:\n  file: logs/$${HOME}/${SUB:-x}.log\nmonitoring:\n  webhook_url: "https://h.example/$${a}"\n',
    'c.yaml',
    { HOME: '/root' },
  ).config;
  t.equal(c.audit.file, 'logs/${HOME}/x.log');
  t.equal(c.monitoring.webhook_url, 'https://h.example/${a}');
  // an expanded value is never scanned again
  const d = parseConfig('audit:\n  file: ${F}\n', 'c.yaml', { F: 'a${B}$${C}' }).config;
  t.equal(d.audit.file, 'a${B}$${C}');
});

t.test('a number or boolean from the environment where a string is wanted stays the text', async (t) => {
  const yaml = `audit:
  file: \${AUDIT_LOG_FILE:-logs/a.log}
policies:
  auth:
    jwt:
      secret: \${JWT_SECRET_KEY}
    api_keys:
      env_key: \${API_KEY:-}
listen:
  port: \${GATEWAY_PORT:-8080}
`;
  const digits = '12345678901234567890123456789012';
  const c = parseConfig(yaml, 'c.yaml', {
    API_KEY: digits,
    JWT_SECRET_KEY: '9'.repeat(40),
    AUDIT_LOG_FILE: 'true',
    GATEWAY_PORT: '8081',
  }).config;
  const auth = c.policies.auth as { api_keys: { env_key: string }; jwt: { secret: string } };
  t.equal(auth.api_keys.env_key, digits, 'an all-digit API key, every digit kept');
  t.equal(auth.jwt.secret, '9'.repeat(40), 'an all-digit secret');
  t.equal(c.audit.file, 'true');
  t.equal(c.listen.port, 8081, 'a number where a number is wanted');
  // and a number where an integer is wanted but not given is still refused
  t.same(problems('listen:\n  port: ${P}\n', { P: '8.5' }).map(formatProblem), [
    'c.yaml:2:9: listen.port: expected integer',
  ]);
});

t.test('a file that is not UTF-8 is refused with where the bad byte is', async (t) => {
  const file = path.join(dir, 'latin1.yaml');
  fs.writeFileSync(
    file,
    Buffer.concat([
      Buffer.from(`policies:\n  auth:\n    jwt:\n      secret: ${SECRET}`),
      Buffer.from([0xe9]), // é in Latin-1
      Buffer.from('\n'),
    ]),
  );
  await t.rejects(loadConfigFile(file, {}), ConfigLoadError);
  const r = await validateConfigFile(file, {});
  t.same(r.ok ? [] : r.errors, [`${file}:4:57: the file is not valid UTF-8 (save it as UTF-8)`]);
  // valid UTF-8 beyond ASCII (and a BOM) is fine
  const ok = path.join(dir, 'utf8.yaml');
  fs.writeFileSync(ok, `\uFEFFaudit:\n  file: logs/sécurité.log\n`);
  t.equal((await loadConfigFile(ok, {})).config.audit.file, 'logs/sécurité.log');
});

t.test('an alias bomb is one located problem, quickly', async (t) => {
  const levels = ['a: &a [x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 9; i++) {
    const prev = String.fromCharCode(96 + i);
    const cur = String.fromCharCode(97 + i);
    levels.push(`${cur}: &${cur} [${Array(9).fill(`*${prev}`).join(', ')}]`);
  }
  const file = path.join(dir, 'bomb.yaml');
  fs.writeFileSync(file, `${levels.join('\n')}\n`);
  const r = await validateConfigFile(file, {});
  t.same(r.ok ? [] : r.errors, [
    `${file}:1:1: cannot expand the YAML aliases: Excessive alias count indicates a resource exhaustion attack`,
  ]);
});

t.test('a plain API key pasted where its hash belongs is not repeated in the error', async (t) => {
  const key = 'live-key-4f9a8b7c6d5e4f3a2b1c';
  const ps = problems(`policies:
  auth:
    api_keys:
      keys: [{ id: batch, hash: "${key}" }]
`);
  t.same(ps.map(formatProblem), [
    'c.yaml:4:33: policies.auth.api_keys.keys[0].hash: invalid value: `sha256:<hex>` printed by `receipt-gateway hash-key`',
  ]);
  t.notMatch(ps.map(formatProblem).join('\n'), key);
  // other values are still quoted, to show what is wrong
  t.match(problems('routes:\n  - name: Bad Name\n    path: /a\n')[0]?.message, /^invalid value "Bad Name"/);
});

t.test('LOGIN_LOCKOUT_DURATION that is neither minutes nor a duration says what it must be', async (t) => {
  const yaml = 'policies:\n  login_lockout:\n    lockout: ${LOGIN_LOCKOUT_DURATION:-15}\n';
  t.same(problems(yaml, { LOGIN_LOCKOUT_DURATION: 'abc' }).map(formatProblem), [
    'c.yaml:3:14: policies.login_lockout.lockout: invalid value "abc": how long a lock lasts (LOGIN_LOCKOUT_DURATION) (a bare number is minutes; or a duration like 15m, 1h)',
  ]);
  t.same(problems(yaml, { LOGIN_LOCKOUT_DURATION: '15m' }), []);
  t.same(problems(yaml, { LOGIN_LOCKOUT_DURATION: '20' }), []);
});
