import t from 'tap';
import type { Deny } from '../../../gateway/policy.js';
import { ConfigError } from '../../../gateway/errors.js';
import { passwordPolicy } from '../../../policies/password-policy/index.js';
import { compilePolicy, jsonBody, makeConfig, makeContext } from '../../helpers/context.js';

const on = { enabled: true };

async function run(config: Record<string, unknown>, body: unknown, identity?: { subject: string }) {
  const p = await compilePolicy(passwordPolicy, { ...on, ...config });
  const ctx = makeContext({
    method: 'POST',
    target: '/api/auth/register',
    body: jsonBody(body),
    ...(identity ? { identity: { subject: identity.subject, roles: ['user'], method: 'jwt' as const } } : {}),
  });
  return (await p.onBody!(ctx)) as Deny | undefined;
}

t.test('defaults: off unless a route enables it; min 8, max 72 bytes, special, username', async (t) => {
  t.match(makeConfig(passwordPolicy.schema, {}), {
    enabled: false,
    min_length: 8,
    max_bytes: 72,
    require_special: true,
  });
  const p = await compilePolicy(passwordPolicy, on);
  t.equal(p.needsBody, true);
  t.equal(p.failure, 'closed');
});

t.test('each unmet rule is named, the password never echoed', async (t) => {
  const cases: [string, unknown, string | undefined, string][] = [
    [
      'too short',
      { username: 'alice', password: 'a!1' },
      'min_length',
      'The new password must be at least 8 characters long.',
    ],
    [
      '7 chars',
      { username: 'alice', password: 'abcde!1' },
      'min_length',
      'The new password must be at least 8 characters long.',
    ],
    [
      'no special',
      { username: 'alice', password: 'abcdefgh12' },
      'special',
      'The new password must contain a special character (not a letter or digit).',
    ],
    [
      'over 72 bytes',
      { username: 'alice', password: `${'é'.repeat(36)}!` },
      'max_bytes',
      'The new password must be at most 72 bytes long.',
    ],
    [
      'equals the username',
      { username: 'Alice-Smith', password: 'alice-smith' },
      'username',
      'The new password must not contain the username.',
    ],
    [
      'contains the username',
      { username: 'alice', password: 'my-ALICE-pw!' },
      'username',
      'The new password must not contain the username.',
    ],
    [
      'contains the e-mail local part',
      { email: 'bob.k@example.com', password: 'xx-bob.k-yy!' },
      'username',
      'The new password must not contain the username.',
    ],
    ['missing', { username: 'alice' }, 'required', 'The new password is missing.'],
    [
      'a NUL (bcrypt in C stops reading there)',
      { username: 'alice', password: 'pass\u0000word-long!' },
      'control_characters',
      'The new password must not contain control characters.',
    ],
    [
      'a C1 control',
      { username: 'alice', password: 'pass\u0085word-long!' },
      'control_characters',
      'The new password must not contain control characters.',
    ],
    [
      'only spaces',
      { username: 'alice', password: '            ' },
      'blank',
      'The new password must not be only spaces.',
    ],
    [
      'only Unicode spaces',
      { username: 'alice', password: '\u3000\u3000\u2003\u2003\u00a0\u00a0\u2009\u2009' },
      'blank',
      'The new password must not be only spaces.',
    ],
  ];
  for (const [name, body, rule, message] of cases) {
    const v = await run({}, body);
    t.equal(v?.code, 'weak_password', name);
    t.equal(v?.detail?.rule, rule, name);
    t.equal(v?.message, message, name);
    const pw = (body as { password?: string }).password;
    if (pw !== undefined) t.notOk(JSON.stringify(v).includes(pw), `${name}: not echoed`);
  }
});

t.test(
  'good passwords pass; 72 bytes exactly passes; a short username is not a substring rule',
  async (t) => {
    t.equal(await run({}, { username: 'alice', password: 'correct horse battery' }), undefined);
    t.equal(await run({}, { username: 'al', password: 'pal-al-ready!' }), undefined);
    t.equal(await run({}, { username: 'alice', password: `${'a'.repeat(71)}!` }), undefined);
    t.equal(await run({}, { username: 'alice', password: 'Zoë-passwörd' }), undefined);
  },
);

t.test(
  'change-password: new_password is checked, old_password is not, the subject is the username',
  async (t) => {
    t.equal(
      await run({}, { old_password: 'x', new_password: 'N3w-secret!' }, { subject: 'alice' }),
      undefined,
    );
    t.match(await run({}, { old_password: 'x', new_password: 'alice-2024!' }, { subject: 'alice' }), {
      code: 'weak_password',
      detail: { rule: 'username', field: 'new_password' },
    });
    t.match(await run({}, { old_password: 'long-enough!', new_password: 'short' }), {
      detail: { rule: 'min_length', field: 'new_password' },
    });
  },
);

t.test(
  'configured rules: PASSWORD_MIN_LENGTH=12, PASSWORD_REQUIRE_SPECIAL=false, other field names',
  async (t) => {
    const cfg = { min_length: 12, require_special: false, fields: ['secret'], username_fields: ['login'] };
    t.equal(await run(cfg, { login: 'bob', secret: 'abcdefghijkl' }), undefined);
    t.match(await run(cfg, { login: 'bob', secret: 'abcdefghijk' }), {
      detail: { rule: 'min_length', field: 'secret' },
    });
    t.match(await run(cfg, { login: 'bob', password: 'ignored' }), {
      detail: { rule: 'required', field: 'secret' },
    });
    t.equal(await run({ ...cfg, require_field: false }, { login: 'bob' }), undefined);
  },
);

t.test('invalid bodies are 400 bad_request', async (t) => {
  const p = await compilePolicy(passwordPolicy, on);
  const bodies = [
    undefined,
    {
      raw: Buffer.from('{"password":'),
      mediaType: 'application/json',
      parseError: 'Unexpected end of JSON input',
    },
    { raw: Buffer.from('[1]'), mediaType: 'application/json', json: [1] },
    { raw: Buffer.from('password=x'), mediaType: 'text/plain' },
    {
      raw: Buffer.from('{"password":12345678}'),
      mediaType: 'application/json',
      json: { password: 12345678 },
    },
  ];
  for (const body of bodies) {
    const v = (await p.onBody!(makeContext({ method: 'POST', ...(body ? { body } : {}) }))) as Deny;
    t.equal(v.code, 'bad_request');
    t.equal(v.reason, 'password');
  }
});

t.test('form bodies: every occurrence of the field is checked', async (t) => {
  const p = await compilePolicy(passwordPolicy, on);
  const form = (pairs: [string, string][]) => ({
    raw: Buffer.from('x'),
    mediaType: 'application/x-www-form-urlencoded',
    form: pairs,
  });
  t.equal(
    await p.onBody!(
      makeContext({
        method: 'POST',
        body: form([
          ['username', 'al'],
          ['password', 'Str0ng-pass'],
        ]),
      }),
    ),
    undefined,
  );
  const v = (await p.onBody!(
    makeContext({
      method: 'POST',
      body: form([
        ['password', 'Str0ng-pass'],
        ['password', 'weak'],
      ]),
    }),
  )) as Deny;
  t.equal(v.detail?.rule, 'min_length');
});

t.test('config: max_bytes below min_length is a ConfigError', async (t) => {
  await t.rejects(compilePolicy(passwordPolicy, { min_length: 40, max_bytes: 32 }), ConfigError);
});
