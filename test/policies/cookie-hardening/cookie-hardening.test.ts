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

t.test('a SameSite value browsers do not recognise counts as none', async (t) => {
  // RFC 6265bis §5.6.7: a value other than Strict, Lax or None gives enforcement "Default"
  // (Firefox and Safari send such a cookie cross-site); the browser applies the last SameSite.
  const cases: [string, string][] = [
    ['sid=abc; SameSite=Lx', 'sid=abc; SameSite=Lx; HttpOnly; SameSite=Lax'],
    ['sid=abc; SameSite=', 'sid=abc; SameSite=; HttpOnly; SameSite=Lax'],
    ['sid=abc; HttpOnly; SameSite', 'sid=abc; HttpOnly; SameSite; SameSite=Lax'],
    [
      'sid=abc; SameSite=Strict; SameSite=Nonee',
      'sid=abc; SameSite=Strict; SameSite=Nonee; HttpOnly; SameSite=Lax',
    ],
    ['sid=abc; SameSite=Bogus; SameSite=None', 'sid=abc; SameSite=Bogus; SameSite=None; HttpOnly; Secure'],
    ['sid=abc; samesite = LAX ', 'sid=abc; samesite = LAX; HttpOnly'],
  ];
  for (const [line, want] of cases) t.equal(hardenCookie(line, rule, false), want, line);
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
