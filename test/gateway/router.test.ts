import t from 'tap';
import fc from 'fast-check';
import { Router, normalizePath, type RoutePattern } from '../../gateway/router.js';
import { ConfigError } from '../../gateway/errors.js';

/** Route patterns (literal, `:name`, `*`, final `**`), first match wins, and path normalisation. */

type R = RoutePattern<string>;
const route = (name: string, path: string, methods?: string[]): R => ({
  name,
  path,
  methods: methods ? new Set(methods) : undefined,
  value: name,
});
const router = (routes: R[]) => new Router(routes, (i) => ['routes', i]);
const matchName = (r: Router<string>, method: string, path: string): string => {
  const m = r.match(method, path);
  return m.kind === 'match' ? m.route.name : m.kind === 'method' ? `405:${m.allow.join(',')}` : '404';
};

t.test('normalizePath: dot segments, clamped at the root', async (t) => {
  const cases: [string, string][] = [
    ['/a/b', '/a/b'],
    ['/a/./b', '/a/b'],
    ['/a/../b', '/b'],
    ['/a/b/../../c', '/c'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/a/../../../b', '/b'],
    ['/a/b/..', '/a/'],
    ['/a/b/.', '/a/b/'],
    ['/.', '/'],
    ['/..', '/'],
    ['/', '/'],
    ['/a/./../b/./c', '/b/c'],
    ['/api/receipts/..', '/api/'],
    ['/a/.../b', '/a/.../b'],
    ['/a/..b/c', '/a/..b/c'],
    ['/a/.b', '/a/.b'],
  ];
  for (const [raw, want] of cases) t.equal(normalizePath(raw), want, raw);
});

t.test('normalizePath: repeated slashes collapse, a trailing slash stays', async (t) => {
  t.equal(normalizePath('/a//b'), '/a/b');
  t.equal(normalizePath('//a'), '/a');
  t.equal(normalizePath('/a///b////c'), '/a/b/c');
  t.equal(normalizePath('/a/'), '/a/');
  t.equal(normalizePath('/a//'), '/a/');
  t.equal(
    normalizePath('/api//admin/users'),
    '/api/admin/users',
    'a double slash cannot dodge an /api/admin/** route',
  );
});

t.test('normalizePath: encoded unreserved characters are decoded, reserved ones stay encoded', async (t) => {
  t.equal(normalizePath('/%61pi/health'), '/api/health');
  t.equal(normalizePath('/api/%41dmin'), '/api/Admin');
  t.equal(normalizePath('/a%2Db%5Fc%7Ed%2Ee'), '/a-b_c~d.e');
  t.equal(normalizePath('/api/%2e%2e/admin'), '/admin', 'encoded dot segments are dot segments');
  t.equal(normalizePath('/api/.%2E/admin'), '/admin');
  t.equal(normalizePath('/api/%2E/admin'), '/api/admin');
  t.equal(normalizePath('/a%2Fb'), '/a%2Fb', 'an encoded slash is not a separator');
  t.equal(normalizePath('/a%2fb'), '/a%2Fb', 'escapes are uppercased');
  t.equal(normalizePath('/a%3Fb%23c'), '/a%3Fb%23c');
  t.equal(normalizePath('/a%25b'), '/a%25b', 'an encoded % stays (no double decoding)');
  t.equal(normalizePath('/a%252e%252e/b'), '/a%252e%252e/b', 'double-encoded dots are not dot segments');
  t.equal(normalizePath('/caf%c3%a9'), '/caf%C3%A9', 'non-ASCII stays encoded');
  t.equal(
    normalizePath('/a%zz'),
    '/a%zz',
    'not an escape: left as it is (framing refuses it before routing)',
  );
});

t.test('normalizePath: only origin-form', async (t) => {
  t.equal(normalizePath(''), undefined);
  t.equal(normalizePath('*'), undefined);
  t.equal(normalizePath('a/b'), undefined);
  t.equal(normalizePath('http://x/a'), undefined);
});

t.test('normalizePath is idempotent', async (t) => {
  await fc.assert(
    fc.property(
      fc
        .array(fc.constantFrom('a', 'b', '.', '..', '', '%2e', '%2E', '%41', '%2F', '%25', 'x%2e'), {
          maxLength: 10,
        })
        .map((s) => `/${s.join('/')}`),
      (p) => {
        const once = normalizePath(p)!;
        return (
          normalizePath(once) === once && !once.split('/').includes('..') && !once.split('/').includes('.')
        );
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});

t.test('literal patterns match exactly', async (t) => {
  const r = router([route('health', '/api/health', ['GET'])]);
  t.equal(matchName(r, 'GET', '/api/health'), 'health');
  t.equal(matchName(r, 'GET', '/api/health/'), '404');
  t.equal(matchName(r, 'GET', '/api/healthz'), '404');
  t.equal(matchName(r, 'GET', '/api/Health'), '404', 'case-sensitive');
  t.equal(matchName(r, 'GET', '/api'), '404');
});

t.test(':name and * match one non-empty segment', async (t) => {
  const r = router([route('one', '/api/receipts/:id'), route('star', '/files/*/meta')]);
  const m = r.match('GET', '/api/receipts/r-42');
  t.equal(m.kind, 'match');
  if (m.kind === 'match') t.same(m.params, { id: 'r-42' });
  t.equal(matchName(r, 'GET', '/api/receipts/'), '404');
  t.equal(matchName(r, 'GET', '/api/receipts'), '404');
  t.equal(matchName(r, 'GET', '/api/receipts/a/b'), '404');
  t.equal(matchName(r, 'GET', '/files/x/meta'), 'star');
  t.equal(matchName(r, 'GET', '/files//meta'), '404');
  t.equal(matchName(r, 'GET', '/files/x/y/meta'), '404');
});

t.test('** (last) matches any rest, including nothing', async (t) => {
  const r = router([route('api', '/api/**')]);
  for (const p of ['/api', '/api/', '/api/a', '/api/a/b/c']) t.equal(matchName(r, 'GET', p), 'api', p);
  for (const p of ['/apix', '/ap', '/', '/x/api']) t.equal(matchName(r, 'GET', p), '404', p);
  const all = router([route('all', '/**')]);
  for (const p of ['/', '/a', '/a/b']) t.equal(matchName(all, 'GET', p), 'all', p);
  const mid = router([route('mid', '/api/:v/**')]);
  t.equal(matchName(mid, 'GET', '/api/v1'), 'mid');
  t.equal(matchName(mid, 'GET', '/api/v1/x/y'), 'mid');
  t.equal(matchName(mid, 'GET', '/api'), '404');
});

t.test('regex metacharacters in literal segments are literal', async (t) => {
  const r = router([route('dot', '/a.b/:id'), route('plus', '/c+d/**')]);
  t.equal(matchName(r, 'GET', '/a.b/1'), 'dot');
  t.equal(matchName(r, 'GET', '/axb/1'), '404');
  t.equal(matchName(r, 'GET', '/c+d/x'), 'plus');
  t.equal(matchName(r, 'GET', '/ccd/x'), '404');
});

t.test('bad patterns are configuration errors with their key path', async (t) => {
  for (const [p, msg] of [
    ['/a/**/b', /\*\*/],
    ['/a/:9x', /parameter/],
    ['/a/:', /parameter/],
    ['/a/b*c', /segment/],
    ['/a/**x', /segment/],
    ['/a/:id/b/:id', /duplicate parameter ":id"/],
  ] as const) {
    try {
      router([route('ok', '/ok'), route('bad', p)]);
      t.fail(`${p} accepted`);
    } catch (err) {
      t.ok(err instanceof ConfigError, p);
      t.match((err as ConfigError).message, msg);
      t.same((err as ConfigError).path, ['routes', 1, 'path']);
    }
  }
});

t.test(
  'first match wins; methods; HEAD is served by GET routes; 405 lists every matching route',
  async (t) => {
    const r = router([
      route('login', '/api/auth/login', ['POST']),
      route('health', '/api/health', ['GET']),
      route('one', '/api/receipts/:id', ['GET']),
      route('any', '/api/receipts/**', ['GET', 'DELETE']),
      route('catch', '/api/**'),
    ]);
    t.equal(matchName(r, 'POST', '/api/auth/login'), 'login');
    t.equal(
      matchName(r, 'GET', '/api/auth/login'),
      'catch',
      'a method mismatch falls through to the next route',
    );
    t.equal(matchName(r, 'HEAD', '/api/health'), 'health', 'HEAD where GET is allowed');
    t.equal(matchName(r, 'GET', '/api/receipts/1'), 'one');
    t.equal(matchName(r, 'DELETE', '/api/receipts/1'), 'any');
    t.equal(matchName(r, 'PUT', '/api/receipts/1'), 'catch');
    const strict = router([
      route('one', '/api/receipts/:id', ['GET']),
      route('any', '/api/receipts/**', ['GET', 'DELETE']),
    ]);
    t.equal(matchName(strict, 'PUT', '/api/receipts/1'), '405:GET,DELETE');
    t.equal(matchName(strict, 'GET', '/nope'), '404');
    const first = router([route('all', '/**'), route('health', '/api/health')]);
    t.equal(
      matchName(first, 'GET', '/api/health'),
      'all',
      'an earlier catch-all wins over a later exact route',
    );
    const param = router([route('p', '/:x/health'), route('health', '/api/health')]);
    t.equal(matchName(param, 'GET', '/api/health'), 'p', 'an earlier parameter route wins');
  },
);

/** Reference matcher: every route in order, its pattern as a plain regular expression. */
function reference(routes: R[], method: string, path: string): string {
  const allow = new Set<string>();
  for (const r of routes) {
    const segs = r.path.split('/').slice(1);
    let src = '^';
    for (const s of segs) {
      if (s === '**') src += '(?:/.*)?';
      else if (s === '*' || s.startsWith(':')) src += '/[^/]+';
      else src += '/' + s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    }
    if (!new RegExp(src + '$').test(path)) continue;
    if (r.methods === undefined || r.methods.has(method) || (method === 'HEAD' && r.methods.has('GET')))
      return r.name;
    for (const m of r.methods) allow.add(m);
  }
  return allow.size > 0 ? `405:${[...allow].join(',')}` : '404';
}

t.test('property: the router agrees with a plain in-order matcher on random route tables', async (t) => {
  const seg = fc.constantFrom('api', 'a', 'b', 'receipts', 'health', ':id', '*');
  const patternArb = fc
    .tuple(fc.array(seg, { minLength: 0, maxLength: 3 }), fc.boolean())
    .map(([segs, rest]) => {
      const named = segs.map((s, i) => (s === ':id' ? `:p${i}` : s));
      return named.length === 0 && !rest ? '/a' : `/${[...named, ...(rest ? ['**'] : [])].join('/')}`;
    });
  const methodsArb = fc.option(fc.subarray(['GET', 'POST', 'DELETE'], { minLength: 1 }), { nil: undefined });
  const tableArb = fc.array(fc.tuple(patternArb, methodsArb), { minLength: 1, maxLength: 8 });
  const pathArb = fc
    .array(fc.constantFrom('api', 'a', 'b', 'receipts', 'health', 'x', ''), { maxLength: 4 })
    .map((s) => `/${s.join('/')}`);
  await fc.assert(
    fc.property(
      tableArb,
      fc.array(fc.tuple(fc.constantFrom('GET', 'HEAD', 'POST', 'DELETE', 'PUT'), pathArb), {
        minLength: 1,
        maxLength: 10,
      }),
      (table, requests) => {
        const routes = table.map(([p, m], i) => route(`r${i}`, p, m));
        const r = router(routes);
        return requests.every(
          ([method, path]) => matchName(r, method, path) === reference(routes, method, path),
        );
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});
