import t from 'tap';
import { cookieHardening, hardenCookie } from '../../../policies/cookie-hardening/index.js';
import { compilePolicy, makeContext, makeHead } from '../../helpers/context.js';

const rule = { httpOnly: true, secure: 'auto', sameSite: 'Lax' } as const;

t.test('hardenCookie adds only what is missing', async (t) => {
  const cases: [string, boolean, string][] = [
    ['sid=abc', false, 'sid=abc; HttpOnly; SameSite=Lax'],
    ['sid=abc', true, 'sid=abc; HttpOnly; Secure; SameSite=Lax'],
    ['sid=abc; Path=/; HttpOnly', true, 'sid=abc; Path=/; HttpOnly; Secure; SameSite=Lax'],
    ['sid=abc; secure; httponly; samesite=strict', true, 'sid=abc; secure; httponly; samesite=strict'],
    ['sid=abc; SameSite=None', false, 'sid=abc; SameSite=None; HttpOnly; Secure'],
    ['sid=abc; Path=/;', false, 'sid=abc; Path=/; HttpOnly; SameSite=Lax'],
    ['sid="a;b"; Max-Age=60', false, 'sid="a;b"; Max-Age=60; HttpOnly; SameSite=Lax'],
  ];
  for (const [line, secure, want] of cases) t.equal(hardenCookie(line, rule, secure), want, line);
  t.equal(
    hardenCookie('a=1; HttpOnly; SameSite=Lax', rule, false),
    'a=1; HttpOnly; SameSite=Lax',
    'unchanged is the same string',
  );
  t.equal(hardenCookie('a=1', { httpOnly: false, secure: 'never', sameSite: 'off' }, true), 'a=1');
  t.equal(
    hardenCookie('a=1', { httpOnly: false, secure: 'always', sameSite: 'Strict' }, false),
    'a=1; Secure; SameSite=Strict',
  );
  t.equal(
    hardenCookie('a=1', { httpOnly: true, secure: 'auto', sameSite: 'None' }, false),
    'a=1; HttpOnly; Secure; SameSite=None',
  );
});

t.test(
  'the policy rewrites upstream Set-Cookie headers, single or many, with per-name overrides',
  async (t) => {
    const p = await compilePolicy(cookieHardening, {
      cookies: { csrf_token: { http_only: false }, session: { same_site: 'Strict', secure: 'always' } },
    });
    const head = makeHead(200, {
      'set-cookie': [
        'session=s1; Path=/',
        'csrf_token=t1; Path=/',
        'theme=dark',
        'pref=1; HttpOnly; Secure; SameSite=None',
      ],
    });
    await p.onResponse!(makeContext({ secure: false }), head);
    t.same(head.headers['set-cookie'], [
      'session=s1; Path=/; HttpOnly; Secure; SameSite=Strict',
      'csrf_token=t1; Path=/; SameSite=Lax',
      'theme=dark; HttpOnly; SameSite=Lax',
      'pref=1; HttpOnly; Secure; SameSite=None',
    ]);
    const single = makeHead(200, { 'set-cookie': 'theme=dark' });
    await p.onResponse!(makeContext({ secure: true }), single);
    t.equal(single.headers['set-cookie'], 'theme=dark; HttpOnly; Secure; SameSite=Lax');
    const none = makeHead(204, { 'content-type': 'text/plain' });
    await p.onResponse!(makeContext(), none);
    t.same(none.headers, { 'content-type': 'text/plain' });
  },
);

t.test('monitor mode reports instead of rewriting', async (t) => {
  const p = await compilePolicy(cookieHardening, { mode: 'monitor' });
  const ctx = makeContext();
  const head = makeHead(200, { 'set-cookie': ['sid=1', 'ok=1; HttpOnly; SameSite=Lax'] });
  await p.onResponse!(ctx, head);
  t.same(head.headers['set-cookie'], ['sid=1', 'ok=1; HttpOnly; SameSite=Lax']);
  t.same(ctx.audit.cookies_not_hardened, ['sid']);
});

t.test('schema: unknown same_site values and keys are refused', async (t) => {
  const { makeConfig } = await import('../../helpers/context.js');
  t.throws(() => makeConfig(cookieHardening.schema, { same_site: 'lax' }));
  t.throws(() => makeConfig(cookieHardening.schema, { cookies: { sid: { httponly: true } } }));
  t.same(makeConfig(cookieHardening.schema, {}), {
    enabled: true,
    mode: 'enforce',
    http_only: true,
    secure: 'auto',
    same_site: 'Lax',
    cookies: {},
  });
});
