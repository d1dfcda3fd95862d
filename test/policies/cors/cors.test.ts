import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Answer, Deny, Policy } from '../../../gateway/policy.js';
import { ConfigError } from '../../../gateway/errors.js';
import { cors } from '../../../policies/cors/index.js';
import { loadConfigFile, ConfigLoadError, type ConfigProblem } from '../../../gateway/config/load.js';
import { compileGeneration, closeGeneration } from '../../../gateway/config/compile.js';
import { offlineServices } from '../../../gateway/commands/validate.js';
import { compilePolicy, makeContext, makeHead } from '../../helpers/context.js';

/**
 * The CORS policy by itself: preflight answers, origin matching, the headers added to
 * responses, and the configuration errors (directly and through the config loader).
 */

const APP = 'https://app.example';
const ADMIN = 'https://admin.example:8443';
const HOST = 'gw.example.com:8080';

const DEFAULT_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE';
const DEFAULT_HEADERS =
  'Authorization, Content-Type, X-API-Key, X-Request-Id, X-CSRF-Token, X-Requested-With';
const DEFAULT_EXPOSE = 'X-Request-Id, Retry-After, RateLimit, RateLimit-Policy';
const WILDCARD_CREDENTIALS =
  'origins "*" together with allow_credentials would let any site make credentialed requests; list the origins';

const policy = await compilePolicy(cors, { origins: [APP, ADMIN] });

function preflight(origin: string | undefined, method = 'POST', headers?: string, extra = {}) {
  return makeContext({
    method: 'OPTIONS',
    target: '/api/receipts',
    headers: {
      host: HOST,
      ...(origin !== undefined ? { origin } : {}),
      'access-control-request-method': method,
      ...(headers !== undefined ? { 'access-control-request-headers': headers } : {}),
      ...extra,
    },
  });
}

function actual(origin: string | undefined, method = 'GET', secure = false, host: string | null = HOST) {
  return makeContext({
    method,
    target: '/api/receipts',
    headers: { ...(host !== null ? { host } : {}), ...(origin !== undefined ? { origin } : {}) },
    secure,
  });
}

const run = async (p: Policy, ctx: ReturnType<typeof makeContext>) =>
  (await p.onRequest!(ctx)) as Answer | Deny | undefined;

const denied = (why: string): Deny => ({ code: 'cors_origin_denied', detail: { cors: why } });

t.test('schema defaults are the documented ones', async (t) => {
  const p = await compilePolicy(cors, {});
  t.equal(p.name, 'cors');
  t.equal(p.mode, 'enforce');
  t.equal(p.failure, 'closed');
  t.same(await run(p, preflight('http://localhost:10000')), {
    answer: {
      status: 204,
      headers: {
        'access-control-allow-origin': 'http://localhost:10000',
        'access-control-allow-methods': DEFAULT_METHODS,
        'access-control-allow-headers': DEFAULT_HEADERS,
        'access-control-max-age': '600',
        'access-control-allow-credentials': 'true',
      },
    },
  });
  t.equal(await run(p, actual('http://127.0.0.1:10000')), undefined);
  t.same(await run(p, actual('http://127.0.0.1:10001')), denied('origin not allowed'));
});

t.test('preflight from an allowed origin: 204 with the exact CORS headers', async (t) => {
  t.same(await run(policy, preflight(APP, 'PUT', 'content-type, authorization')), {
    answer: {
      status: 204,
      headers: {
        'access-control-allow-origin': APP,
        'access-control-allow-methods': DEFAULT_METHODS,
        'access-control-allow-headers': DEFAULT_HEADERS,
        'access-control-max-age': '600',
        'access-control-allow-credentials': 'true',
      },
    },
  });
  const a = (await run(policy, preflight(ADMIN, 'DELETE'))) as Answer;
  t.equal(a.answer.headers['access-control-allow-origin'], ADMIN, 'a non-default port is part of the origin');

  // request headers: case-insensitive, whitespace and empty members ignored
  for (const acrh of ['X-API-KEY', ' content-type ,,Authorization ', 'x-csrf-token,x-requested-with', ''])
    t.match(await run(policy, preflight(APP, 'POST', acrh)), { answer: { status: 204 } }, `ACRH "${acrh}"`);
  // the requested method is upper-cased before the check (browsers upper-case only the
  // standard methods; "patch" stays lower case on the wire and would then fail the
  // browser's own case-sensitive check of Access-Control-Allow-Methods)
  t.match(await run(policy, preflight(APP, 'patch')), { answer: { status: 204 } });
});

t.test('max_age in seconds, credentials and methods from the configuration', async (t) => {
  const cases: [string, string][] = [
    ['90s', '90'],
    ['1h', '3600'],
    ['1500ms', '1'],
    ['500ms', '0'],
  ];
  for (const [maxAge, seconds] of cases) {
    const p = await compilePolicy(cors, { origins: [APP], max_age: maxAge });
    const a = (await run(p, preflight(APP))) as Answer;
    t.equal(a.answer.headers['access-control-max-age'], seconds, `max_age ${maxAge}`);
  }
  const p = await compilePolicy(cors, {
    origins: APP,
    allow_credentials: false,
    allow_methods: ['get', 'Post', 'GET'],
    allow_headers: ['X-One', 'x-two'],
  });
  t.same(await run(p, preflight(APP, 'GET', 'x-one, X-TWO')), {
    answer: {
      status: 204,
      headers: {
        'access-control-allow-origin': APP,
        'access-control-allow-methods': 'GET, POST',
        'access-control-allow-headers': 'X-One, x-two',
        'access-control-max-age': '600',
      },
    },
  });
  t.same(await run(p, preflight(APP, 'DELETE')), denied('preflight method not allowed'));
  t.same(await run(p, preflight(APP, 'GET', 'authorization')), denied('preflight header not allowed'));
});

t.test('preflights refused: method, header, foreign origin, Origin null', async (t) => {
  t.same(await run(policy, preflight(APP, 'OPTIONS')), denied('preflight method not allowed'));
  t.same(await run(policy, preflight(APP, 'TRACE')), denied('preflight method not allowed'));
  t.same(
    await run(policy, preflight(APP, 'POST', 'content-type, x-evil')),
    denied('preflight header not allowed'),
  );
  t.same(await run(policy, preflight(APP, 'POST', 'cookie')), denied('preflight header not allowed'));
  t.same(await run(policy, preflight('https://evil.example')), denied('preflight origin not allowed'));
  t.same(
    await run(policy, preflight('https://evil.example', 'TRACE', 'x-evil')),
    denied('preflight origin not allowed'),
    'the origin is judged first',
  );
  t.same(await run(policy, preflight('null')), denied('preflight origin not allowed'));
  t.equal(
    await run(policy, preflight(undefined)),
    undefined,
    'without Origin it is no CORS preflight: left to the other policies',
  );
  t.same(
    await run(policy, actual('https://evil.example', 'OPTIONS')),
    denied('origin not allowed'),
    'OPTIONS without Access-Control-Request-Method is an actual request',
  );
});

t.test('origin matching', async (t) => {
  const cases: [string, boolean][] = [
    [APP, true],
    [ADMIN, true],
    // scheme and host compared case-insensitively (browsers always send lower case)
    ['HTTPS://APP.EXAMPLE', true],
    ['HTTPS://Admin.Example:8443', true],
    // anything that is not the exact serialisation of an allowed origin
    ['https://app.example/', false],
    ['https://app.example/path', false],
    ['https://app.example:443', false], // browsers never serialise the default port
    ['https://admin.example', false],
    ['https://admin.example:8444', false],
    ['http://app.example', false],
    ['https://app.example.evil.example', false],
    ['https://evil-app.example', false],
    ['https://sub.app.example', false],
    ['https://app.example, https://evil.example', false],
    ['null', false],
    ['', false],
    ['*', false],
  ];
  for (const [origin, ok] of cases) {
    const v = await run(policy, actual(origin));
    if (ok) t.equal(v, undefined, `allowed: "${origin}"`);
    else t.same(v, denied('origin not allowed'), `refused: "${origin}"`);
  }
  const a = (await run(policy, preflight('HTTPS://APP.EXAMPLE'))) as Answer;
  t.equal(
    a.answer.headers['access-control-allow-origin'],
    'HTTPS://APP.EXAMPLE',
    'the Origin is reflected as sent, not as matched',
  );

  // configured origins are normalised through the URL parser
  const norm = await compilePolicy(cors, {
    origins: ['HTTPS://App.Example:443/', 'http://[::1]:80'],
  });
  t.equal(await run(norm, actual('https://app.example')), undefined, 'default port and slash dropped');
  t.equal(await run(norm, actual('http://[::1]')), undefined);
});

t.test('subdomain wildcards: scheme://*.domain[:port]', async (t) => {
  const star = await compilePolicy(cors, {
    origins: ['https://*.Example.com', 'http://*.dev.example.org:8080', 'https://*.bücher.example'],
  });
  for (const o of [
    'https://app.example.com',
    'https://a.b.example.com',
    'https://x-1.example.com',
    'http://app.dev.example.org:8080',
    'https://shop.xn--bcher-kva.example',
  ])
    t.equal(await run(star, actual(o)), undefined, `${o} allowed`);
  for (const o of [
    'https://example.com', // the domain itself is not a subdomain
    'http://app.example.com', // another scheme
    'https://app.example.com:8443', // another port
    'https://evilexample.com',
    'https://app.example.com.evil.net',
    'https://app.example.comx',
    'https://-x.example.com',
    'https://a..example.com',
    'https://.example.com',
    'https://user@app.example.com',
    'http://app.dev.example.org', // the port is part of the origin
    'http://app.dev.example.org:80800',
  ])
    t.same(await run(star, actual(o)), denied('origin not allowed'), `${o} refused`);
  // a preflight from a subdomain is answered, with the Origin reflected
  const pre = (await run(star, preflight('https://app.example.com', 'PUT'))) as Answer;
  t.equal(pre.answer.status, 204);
  t.equal(pre.answer.headers['access-control-allow-origin'], 'https://app.example.com');
  t.same(await run(star, preflight('https://example.com', 'PUT')), denied('preflight origin not allowed'));
  // a registrable domain under a multi-label public suffix, or under a suffix the list does
  // not know (an internal TLD), is an operator's own
  const own = await compilePolicy(cors, { origins: ['https://*.example.co.uk', 'https://*.corp.internal'] });
  for (const o of ['https://app.example.co.uk', 'https://wiki.corp.internal'])
    t.equal(await run(own, actual(o)), undefined, `${o} allowed`);
  t.same(await run(own, actual('https://other.co.uk')), denied('origin not allowed'));
});

t.test('same origin: Origin equal to scheme://Host of the request', async (t) => {
  t.equal(await run(policy, actual('http://gw.example.com:8080')), undefined);
  t.equal(await run(policy, actual('https://gw.example.com:8080', 'POST', true)), undefined, 'TLS listener');
  t.equal(
    await run(policy, actual('http://GW.example.com:8080', 'GET', false, 'GW.EXAMPLE.COM:8080')),
    undefined,
  );
  t.same(
    await run(policy, actual('http://gw.example.com:8080', 'GET', true)),
    denied('origin not allowed'),
    'the scheme must be the listener’s',
  );
  t.same(await run(policy, actual('http://gw.example.com:8081')), denied('origin not allowed'));
  t.same(await run(policy, actual('http://gw.example.com')), denied('origin not allowed'));
  t.same(
    await run(policy, actual('http://gw.example.com:8080', 'GET', false, null)),
    denied('origin not allowed'),
  );
  t.match(await run(policy, preflight('http://gw.example.com:8080')), {
    answer: { status: 204, headers: { 'access-control-allow-origin': 'http://gw.example.com:8080' } },
  });

  const strict = await compilePolicy(cors, { origins: [APP], allow_same_origin: false });
  t.same(await run(strict, actual('http://gw.example.com:8080')), denied('origin not allowed'));
  t.same(await run(strict, preflight('http://gw.example.com:8080')), denied('preflight origin not allowed'));
  t.equal(await run(strict, actual(APP)), undefined);
  const hs = makeHead(200);
  strict.onResponse!(actual('http://gw.example.com:8080'), hs);
  t.same(hs.headers, { vary: 'Origin' }, 'no CORS headers for a refused same-origin');
});

t.test('actual requests: allowed, foreign, none', async (t) => {
  for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']) {
    t.equal(await run(policy, actual(APP, method)), undefined, `${method} allowed origin`);
    t.same(await run(policy, actual('https://evil.example', method)), denied('origin not allowed'), method);
    t.equal(await run(policy, actual(undefined, method)), undefined, `${method} without Origin`);
  }
});

t.test('onResponse: CORS headers for allowed origins, on upstream and gateway responses', async (t) => {
  for (const fromGateway of [false, true]) {
    const head = makeHead(fromGateway ? 401 : 200, { 'content-type': 'application/json' }, fromGateway);
    await policy.onResponse!(actual(APP), head);
    t.same(
      head.headers,
      {
        'content-type': 'application/json',
        vary: 'Origin',
        'access-control-allow-origin': APP,
        'access-control-allow-credentials': 'true',
        'access-control-expose-headers': DEFAULT_EXPOSE,
      },
      fromGateway ? 'gateway-made 401' : 'upstream 200',
    );
  }
  const same = makeHead(200);
  await policy.onResponse!(actual('http://gw.example.com:8080'), same);
  t.equal(same.headers['access-control-allow-origin'], 'http://gw.example.com:8080');

  for (const origin of [undefined, 'https://evil.example', 'null']) {
    const head = makeHead(403, {}, true);
    await policy.onResponse!(actual(origin), head);
    t.same(head.headers, { vary: 'Origin' }, `only Vary for Origin ${origin}`);
  }

  const quiet = await compilePolicy(cors, { origins: [APP], allow_credentials: false, expose_headers: [] });
  const q = makeHead(200);
  await quiet.onResponse!(actual(APP), q);
  t.same(
    q.headers,
    { vary: 'Origin', 'access-control-allow-origin': APP },
    'no ACAC, no empty Expose-Headers',
  );
});

t.test('onResponse: Vary: Origin is added once and merged with the upstream Vary', async (t) => {
  const cases: [string | undefined, string][] = [
    [undefined, 'Origin'],
    ['Accept-Encoding', 'Accept-Encoding, Origin'],
    ['Accept-Encoding, Accept-Language', 'Accept-Encoding, Accept-Language, Origin'],
    ['Origin', 'Origin'],
    ['origin', 'origin'],
    ['Accept-Encoding,Origin', 'Accept-Encoding,Origin'],
  ];
  for (const [upstream, expected] of cases) {
    for (const origin of [APP, undefined]) {
      const head = makeHead(200, upstream === undefined ? {} : { vary: upstream });
      await policy.onResponse!(actual(origin), head);
      t.equal(head.headers.vary, expected, `Vary ${upstream} (Origin ${origin})`);
    }
  }
});

t.test('wildcard without credentials', async (t) => {
  const p = await compilePolicy(cors, { origins: '*', allow_credentials: false });
  t.same(await run(p, preflight('https://anyone.example', 'DELETE', 'x-api-key')), {
    answer: {
      status: 204,
      headers: {
        'access-control-allow-origin': '*',
        'access-control-allow-methods': DEFAULT_METHODS,
        'access-control-allow-headers': DEFAULT_HEADERS,
        'access-control-max-age': '600',
      },
    },
  });
  t.match(await run(p, preflight('null')), { answer: { headers: { 'access-control-allow-origin': '*' } } });
  t.equal(await run(p, actual('https://anyone.example', 'POST')), undefined);
  t.same(
    await run(p, preflight('https://anyone.example', 'PUT', 'x-evil')),
    denied('preflight header not allowed'),
    'methods and headers are still checked',
  );
  const head = makeHead(200);
  await p.onResponse!(actual('https://anyone.example'), head);
  t.same(head.headers, {
    vary: 'Origin',
    'access-control-allow-origin': '*',
    'access-control-expose-headers': DEFAULT_EXPOSE,
  });
  const mixed = await compilePolicy(cors, { origins: `${APP}, *`, allow_credentials: false });
  t.match(await run(mixed, preflight('https://other.example')), {
    answer: { headers: { 'access-control-allow-origin': '*' } },
  });
});

t.test('configuration errors from compile()', async (t) => {
  const at = (partial: Record<string, unknown>) =>
    compilePolicy(cors, partial).then(
      () => undefined,
      (err: unknown) => err,
    );
  for (const origins of ['*', ['*'], `${APP},*`, [APP, ' * ']]) {
    const err = await at({ origins });
    t.type(err, ConfigError, JSON.stringify(origins));
    t.equal((err as ConfigError).message, WILDCARD_CREDENTIALS);
    t.same((err as ConfigError).path, ['policies', 'cors', 'origins']);
  }
  const bad: [string, string][] = [
    ['app.example', 'invalid origin "app.example" (use scheme://host[:port])'],
    ['not an origin', 'invalid origin "not an origin" (use scheme://host[:port])'],
    ['null', 'invalid origin "null" (use scheme://host[:port])'],
    ['//app.example', 'invalid origin "//app.example" (use scheme://host[:port])'],
    ['https://app.example/path', 'origin "https://app.example/path" must be scheme://host[:port] only'],
    ['https://app.example?x=1', 'origin "https://app.example?x=1" must be scheme://host[:port] only'],
    ['https://app.example#x', 'origin "https://app.example#x" must be scheme://host[:port] only'],
    ['localhost:10000', 'origin "localhost:10000" must be scheme://host[:port] only'],
    ['file:///etc/passwd', 'origin "file:///etc/passwd" must be scheme://host[:port] only'],
    ['data:text/plain', 'origin "data:text/plain" must be scheme://host[:port] only'],
    [
      'http://user:pw@creds.example',
      'origin "http://user:pw@creds.example" must be scheme://host[:port] only',
    ],
    [
      'https://app*.example.com',
      '"https://app*.example.com": a wildcard may only stand for the subdomains of a domain, as in https://*.example.com[:port]',
    ],
    [
      'https://*.example.com/x',
      '"https://*.example.com/x": a wildcard may only stand for the subdomains of a domain, as in https://*.example.com[:port]',
    ],
    [
      'https://*.*.example.com',
      '"https://*.*.example.com": a wildcard may only stand for the subdomains of a domain, as in https://*.example.com[:port]',
    ],
    [
      'https://*.com',
      '"https://*.com": a wildcard needs a domain of two labels or more after "*." (not an IP address or a top-level domain)',
    ],
    [
      'https://*.10.0.0.1',
      '"https://*.10.0.0.1": a wildcard needs a domain of two labels or more after "*." (not an IP address or a top-level domain)',
    ],
    // public suffixes, ICANN and private: every site anyone registers there would be trusted
    [
      'https://*.co.uk',
      '"https://*.co.uk": co.uk is a public suffix (anyone can register a site under it); list your own domain after "*."',
    ],
    [
      'https://*.github.io',
      '"https://*.github.io": github.io is a public suffix (anyone can register a site under it); list your own domain after "*."',
    ],
    [
      'https://*.herokuapp.com:8443',
      '"https://*.herokuapp.com:8443": herokuapp.com is a public suffix (anyone can register a site under it); list your own domain after "*."',
    ],
  ];
  for (const [entry, message] of bad) {
    const err = await at({ origins: `${APP}, ${entry}`, allow_credentials: false });
    t.type(err, ConfigError, entry);
    t.equal((err as ConfigError).message, message);
    t.same((err as ConfigError).path, ['policies', 'cors', 'origins']);
  }
  t.equal(await at({ origins: '*', allow_credentials: false }), undefined);
  t.equal(await at({ origins: ` ${APP} ,, ${ADMIN} ,` }), undefined, 'empty members ignored');
  t.equal(await at({ origins: [] }), undefined);
  await t.rejects(compilePolicy(cors, { origins: 5 }), /invalid test config at \/origins/);
  await t.rejects(compilePolicy(cors, { max_age: '10 minutes' }), /invalid test config at \/max_age/);
  await t.rejects(compilePolicy(cors, { mode: 'audit' }), /invalid test config at \/mode/);

  const empty = await compilePolicy(cors, { origins: ' , ' });
  t.same(await run(empty, actual(APP)), denied('origin not allowed'), 'no origin listed: only same-origin');
  t.equal(await run(empty, actual('http://gw.example.com:8080')), undefined);
});

t.test('configuration through the loader: ${CORS_ORIGINS}, key paths, exact messages', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-cors-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  const load = async (yaml: string, env: Record<string, string> = {}) => {
    const file = path.join(dir, `c${++n}.yaml`);
    fs.writeFileSync(file, yaml);
    const fullEnv = { JWT_SECRET_KEY: 'cors-test-secret-0123456789-abcdefghijkl', ...env };
    const services = offlineServices(fullEnv);
    try {
      const gen = await compileGeneration(await loadConfigFile(file, fullEnv), services);
      const policies = gen.allPolicies.filter((p) => p.name === 'cors');
      await closeGeneration(gen);
      return { problems: [] as readonly ConfigProblem[], policies, file };
    } catch (err) {
      if (err instanceof ConfigLoadError) return { problems: err.problems, policies: [], file };
      throw err;
    } finally {
      await services.store.close();
    }
  };
  const HEAD = `upstream:\n  url: http://127.0.0.1:9\npolicies:\n  auth:\n    jwt:\n      secret: \${JWT_SECRET_KEY}\n  csrf:\n    enabled: false\n`;
  const ROUTE = `routes:\n  - name: api\n    path: /api/**\n`;

  const fromEnv = await load(
    `${HEAD}  cors:\n    origins: \${CORS_ORIGINS:-http://localhost:10000}\n${ROUTE}`,
    {
      CORS_ORIGINS: `${APP},${ADMIN}`,
    },
  );
  t.same(fromEnv.problems, []);
  t.equal(fromEnv.policies.length, 1);
  const p = fromEnv.policies[0]!;
  t.equal(await run(p, actual(ADMIN)), undefined, 'second origin of CORS_ORIGINS');
  t.same(
    await run(p, actual('http://localhost:10000')),
    denied('origin not allowed'),
    'the default is replaced',
  );
  const dflt = await load(`${HEAD}  cors:\n    origins: \${CORS_ORIGINS:-http://localhost:10000}\n${ROUTE}`);
  t.equal(await run(dflt.policies[0]!, actual('http://localhost:10000')), undefined, 'the ${VAR:-default}');

  const wild = await load(`${HEAD}  cors:\n    origins: \${CORS_ORIGINS}\n${ROUTE}`, { CORS_ORIGINS: '*' });
  t.same(wild.problems, [
    {
      file: wild.file,
      line: 10,
      column: 14,
      keyPath: 'policies.cors.origins',
      message: WILDCARD_CREDENTIALS,
    },
  ]);
  const badEnv = await load(`${HEAD}  cors:\n    origins: \${CORS_ORIGINS}\n${ROUTE}`, {
    CORS_ORIGINS: `${APP},https://app.example/api`,
  });
  t.same(badEnv.problems, [
    {
      file: badEnv.file,
      line: 10,
      column: 14,
      keyPath: 'policies.cors.origins',
      message: 'origin "https://app.example/api" must be scheme://host[:port] only',
    },
  ]);
  const missing = await load(`${HEAD}  cors:\n    origins: \${CORS_ORIGINS}\n${ROUTE}`);
  t.equal(missing.problems.length, 1);
  t.match(missing.problems[0], { keyPath: 'policies.cors.origins', message: /CORS_ORIGINS/ });

  const onRoute = await load(
    `${HEAD}${ROUTE}    policies:\n      cors: { origins: "*", allow_credentials: true }\n`,
  );
  t.same(
    onRoute.problems.map((p) => [p.keyPath, p.message]),
    [['routes[0].policies.cors.origins', WILDCARD_CREDENTIALS]],
  );
  const inherited = await load(
    `${HEAD}  cors:\n    origins: "*"\n    allow_credentials: false\n${ROUTE}    policies:\n      cors: { allow_credentials: true }\n`,
  );
  t.same(
    inherited.problems.map((p) => [p.keyPath, p.message]),
    [['policies.cors.origins', WILDCARD_CREDENTIALS]],
    'a route that turns credentials on over a global "*" is pointed at the global origins',
  );
  const monitor = await load(`${HEAD}  cors:\n    mode: monitor\n${ROUTE}`);
  t.equal(monitor.policies[0]!.mode, 'monitor');
});

// ---------------------------------------------------------------------------------------
// Behaviour these tests found wrong (since fixed); they fail on the policy before the fix.

t.test('Vary: Origin is added when the upstream Vary only names a header containing "Origin"', async (t) => {
  // `/\borigin\b/i` also matches inside hyphenated names: a cache keyed on X-Origin-Region
  // alone would serve one origin's Access-Control-Allow-Origin to another (RFC 9110 §12.5.5:
  // Vary lists field names; "Origin" must be a member, not a substring).
  const cases: [string, string][] = [
    ['X-Origin-Region', 'X-Origin-Region, Origin'],
    ['Accept-Encoding, Origin-Trial', 'Accept-Encoding, Origin-Trial, Origin'],
    ['Access-Control-Request-Origin-Hint', 'Access-Control-Request-Origin-Hint, Origin'],
  ];
  for (const [upstream, expected] of cases) {
    const head = makeHead(200, { vary: upstream });
    await policy.onResponse!(actual(APP), head);
    t.equal(head.headers.vary, expected, `Vary ${upstream}`);
    t.equal(head.headers['access-control-allow-origin'], APP);
  }
});

t.test('the gateway’s grant replaces the upstream’s Access-Control-* headers', async (t) => {
  // A strict gateway owns the CORS headers: for an allowed origin the client must get the
  // gateway's grant (this origin, credentials, exposed headers), never the upstream's.
  // Before the fix, any upstream Access-Control-Allow-Origin was kept as is and the gateway
  // added nothing: a `*` breaks credentialed requests (Fetch: `*` never matches credentials
  // mode "include") and a foreign origin is advertised that the allowlist does not contain.
  const upstreams: Record<string, string>[] = [
    { 'access-control-allow-origin': '*' },
    {
      'access-control-allow-origin': 'https://evil.example',
      'access-control-allow-credentials': 'true',
      'access-control-expose-headers': 'X-Secret',
    },
  ];
  for (const up of upstreams) {
    for (const fromGateway of [false, true]) {
      const head = makeHead(200, up, fromGateway);
      await policy.onResponse!(actual(APP), head);
      t.same(
        head.headers,
        {
          vary: 'Origin',
          'access-control-allow-origin': APP,
          'access-control-allow-credentials': 'true',
          'access-control-expose-headers': DEFAULT_EXPOSE,
        },
        `upstream ${JSON.stringify(up)}`,
      );
    }
  }
});

t.test('same origin is accepted when Host spells out the default port', async (t) => {
  // RFC 6454 §4-5: http://gw.example.com and http://gw.example.com:80 are the same origin;
  // the policy compared the Origin with the raw `scheme://Host` string before the fix.
  t.equal(await run(policy, actual('http://gw.example.com', 'POST', false, 'gw.example.com:80')), undefined);
  t.equal(await run(policy, actual('https://gw.example.com', 'POST', true, 'gw.example.com:443')), undefined);
});
