import t from 'tap';
import type { Deny } from '../../../gateway/policy.js';
import type { Identity } from '../../../gateway/context.js';
import { ConfigError } from '../../../gateway/errors.js';
import { csrf } from '../../../policies/csrf/index.js';
import { compilePolicy, makeContext, makeServices } from '../../helpers/context.js';

const cookieUser: Identity = { subject: 'alice', roles: ['user'], method: 'jwt', via: 'cookie' };
const headerUser: Identity = { subject: 'alice', roles: ['user'], method: 'jwt', via: 'header' };

const policy = await compilePolicy(csrf, {
  allowed_origins: ['https://app.example.com', 'http://localhost:10000'],
});

function req(
  method: string,
  headers: Record<string, string>,
  identity: Identity | null = cookieUser,
  secure = false,
) {
  return makeContext({
    method,
    target: '/api/receipts',
    headers: { host: 'gw.example.com', ...headers },
    identity: identity ?? undefined,
    secure,
  });
}

t.test('cookie-authenticated state-changing requests: Origin decides', async (t) => {
  const cases: [string, Record<string, string>, boolean, string | undefined][] = [
    ['same origin (http)', { origin: 'http://gw.example.com' }, false, undefined],
    ['same origin (https listener)', { origin: 'https://gw.example.com' }, true, undefined],
    ['scheme differs from the listener', { origin: 'http://gw.example.com' }, true, 'origin'],
    [
      'allowed origin',
      { origin: 'https://app.example.com', 'sec-fetch-site': 'cross-site' },
      false,
      undefined,
    ],
    ['allowed origin, other case', { origin: 'HTTP://LOCALHOST:10000' }, false, undefined],
    ['foreign origin', { origin: 'https://evil.example' }, false, 'origin'],
    [
      'foreign origin claiming same-origin fetch',
      { origin: 'https://evil.example', 'sec-fetch-site': 'same-origin' },
      false,
      'origin',
    ],
    ['origin null', { origin: 'null' }, false, 'origin'],
    ['lookalike host', { origin: 'http://gw.example.com.evil.example' }, false, 'origin'],
    ['no Origin, Sec-Fetch-Site same-origin', { 'sec-fetch-site': 'same-origin' }, false, undefined],
    ['no Origin, Sec-Fetch-Site none (user navigation)', { 'sec-fetch-site': 'none' }, false, undefined],
    ['no Origin, Sec-Fetch-Site same-site', { 'sec-fetch-site': 'same-site' }, false, 'sec_fetch_site'],
    ['no Origin, Sec-Fetch-Site cross-site', { 'sec-fetch-site': 'cross-site' }, false, 'sec_fetch_site'],
    ['neither header (not a browser)', {}, false, undefined],
  ];
  for (const [name, headers, secure, check] of cases) {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      const v = (await policy.onIdentified!(req(method, headers, cookieUser, secure))) as Deny | undefined;
      if (check === undefined) t.equal(v, undefined, `${name} ${method}`);
      else t.same(v, { code: 'csrf_rejected', detail: { check } }, `${name} ${method}`);
    }
  }
});

t.test('safe methods, header-authenticated and anonymous requests are not judged', async (t) => {
  const evil = { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' };
  for (const method of ['GET', 'HEAD', 'OPTIONS'])
    t.equal(await policy.onIdentified!(req(method, evil)), undefined, method);
  t.equal(await policy.onIdentified!(req('POST', evil, headerUser)), undefined);
  t.equal(await policy.onIdentified!(req('POST', evil, null)), undefined);
});

t.test('a WebSocket handshake (a GET) is judged like a state-changing request', async (t) => {
  const ws = { upgrade: 'websocket', connection: 'Upgrade' };
  const origin = { check: 'origin' };
  t.same(await policy.onIdentified!(req('GET', { ...ws, origin: 'https://evil.example' })), {
    code: 'csrf_rejected',
    detail: origin,
  });
  t.same(
    await policy.onIdentified!(req('GET', { upgrade: 'h2c, WebSocket', origin: 'null' })),
    { code: 'csrf_rejected', detail: origin },
    'the token in a list, in any case',
  );
  t.same(await policy.onIdentified!(req('GET', { ...ws, 'sec-fetch-site': 'cross-site' })), {
    code: 'csrf_rejected',
    detail: { check: 'sec_fetch_site' },
  });
  t.equal(await policy.onIdentified!(req('GET', { ...ws, origin: 'http://gw.example.com' })), undefined);
  t.equal(await policy.onIdentified!(req('GET', { ...ws, origin: 'http://localhost:10000' })), undefined);
  t.equal(await policy.onIdentified!(req('GET', ws)), undefined, 'no Origin: not a browser');
  const evil = { origin: 'https://evil.example' };
  t.equal(await policy.onIdentified!(req('GET', { ...ws, ...evil }, headerUser)), undefined, 'header auth');
  t.equal(await policy.onIdentified!(req('GET', { ...ws, ...evil }, null)), undefined, 'anonymous');
  t.equal(await policy.onIdentified!(req('GET', { upgrade: 'h2c', ...evil })), undefined, 'another protocol');
});

t.test(
  'cookie_only: false judges every state-changing request; require_origin refuses blind ones',
  async (t) => {
    const all = await compilePolicy(csrf, {
      cookie_only: false,
      require_origin: true,
      allowed_origins: 'https://a.example, https://b.example',
    });
    t.match(await all.onIdentified!(req('POST', { origin: 'https://evil.example' }, headerUser)), {
      code: 'csrf_rejected',
    });
    t.equal(await all.onIdentified!(req('POST', { origin: 'https://b.example' }, null)), undefined);
    t.same(await all.onIdentified!(req('POST', {}, headerUser)), {
      code: 'csrf_rejected',
      detail: { check: 'missing_origin' },
    });
    const ws = { upgrade: 'websocket', origin: 'https://evil.example' };
    t.same(
      await all.onIdentified!(req('GET', ws, null)),
      { code: 'csrf_rejected', detail: { check: 'origin' } },
      'an anonymous WebSocket handshake (the upstream may authenticate it by its own cookie)',
    );
    t.equal(await all.onIdentified!(req('GET', { origin: 'https://evil.example' }, null)), undefined);
  },
);

t.test('allowed origins default to CORS_ORIGINS, then to SPEC default', async (t) => {
  const fromEnv = await compilePolicy(
    csrf,
    {},
    makeServices({ env: { CORS_ORIGINS: 'https://shop.example,https://admin.example:8443' } }),
  );
  t.equal(await fromEnv.onIdentified!(req('POST', { origin: 'https://admin.example:8443' })), undefined);
  t.match(await fromEnv.onIdentified!(req('POST', { origin: 'http://localhost:10000' })), {
    code: 'csrf_rejected',
  });
  const dflt = await compilePolicy(csrf, {});
  t.equal(await dflt.onIdentified!(req('POST', { origin: 'http://127.0.0.1:10000' })), undefined);
});

t.test('config: wildcard and non-origins are refused', async (t) => {
  await t.rejects(compilePolicy(csrf, { allowed_origins: ['*'] }), ConfigError);
  await t.rejects(compilePolicy(csrf, { allowed_origins: ['https://a.example/path'] }), ConfigError);
  await t.rejects(compilePolicy(csrf, { allowed_origins: 'ftp://a.example' }), ConfigError);
  // a public suffix after "*." would trust every site registered under it
  await t.rejects(compilePolicy(csrf, { allowed_origins: ['https://*.github.io'] }), {
    name: 'ConfigError',
    message: /github\.io is a public suffix/,
  });
});

t.test('a subdomain wildcard (as CORS_ORIGINS may list it) is honoured, Referer included', async (t) => {
  const p = await compilePolicy(
    csrf,
    {},
    makeServices({ env: { CORS_ORIGINS: 'https://*.example.net,http://localhost:10000' } }),
  );
  t.equal(await p.onIdentified!(req('POST', { origin: 'https://app.example.net' })), undefined);
  t.equal(await p.onIdentified!(req('POST', { origin: 'https://a.b.example.net' })), undefined);
  for (const origin of ['https://example.net', 'https://evilexample.net', 'http://app.example.net'])
    t.same(
      await p.onIdentified!(req('POST', { origin })),
      { code: 'csrf_rejected', detail: { check: 'origin' } },
      origin,
    );
  t.equal(await p.onIdentified!(req('POST', { referer: 'https://app.example.net/receipts' })), undefined);
  t.same(await p.onIdentified!(req('POST', { referer: 'https://example.net/receipts' })), {
    code: 'csrf_rejected',
    detail: { check: 'referer' },
  });
  const err = await compilePolicy(csrf, { allowed_origins: ['https://a.example', 'https://*.com'] }).catch(
    (e: unknown) => e,
  );
  t.type(err, ConfigError);
  t.same(
    (err as ConfigError).path,
    ['policies', 'csrf', 'allowed_origins', 1],
    'the key path names the entry',
  );
});
