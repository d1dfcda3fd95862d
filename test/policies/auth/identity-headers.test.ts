/**
 * Client-sent identity headers never reach the upstream, in any spelling: over real TCP with
 * the shipped gateway.yaml and the recording mock. CGI/WSGI/Rack servers map `X_Auth_Roles`
 * and `X-Auth-Roles` to the same variable, so the underscore spellings are identity headers
 * too, on authenticated and on public routes.
 */
import t from 'tap';
import http from 'node:http';
import { startHarness, type Harness } from '../../helpers/harness.js';

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request with the header lines exactly as given (names keep their spelling). */
function send(
  base: string,
  path: string,
  lines: [string, string][],
  opts: { method?: string; body?: string } = {},
): Promise<Res> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        path,
        method: opts.method ?? 'GET',
        headers: [['Host', u.host], ...lines].flat(),
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

const FORGED: [string, string][] = [
  ['X_Auth_Subject', 'admin'],
  ['X_AUTH_ROLES', 'admin'],
  ['x_auth_method', 'api_key'],
  ['X-Auth_Roles', 'admin'],
  ['X_Auth-Key-Id', 'forged'],
  ['X-Auth-Subject', 'admin'],
  ['x-auth-roles', 'admin'],
  ['X-AUTH-ROLES', 'admin'],
];

/** The header names the upstream received that spell "x auth" in any way. */
const authNames = (headers: Record<string, string>) =>
  Object.keys(headers)
    .filter((k) => /^x[-_]auth[-_]/i.test(k))
    .sort();

t.test('identity headers spelled with underscores never reach the upstream', async (t) => {
  const h: Harness = await startHarness({
    config: 'policies: { auth: { audit_success_sample_rate: 1 } }',
  });
  t.teardown(() => h.close());

  await t.test('authenticated route: only the gateway-set identity goes upstream', async (t) => {
    const token = await h.login('alice');
    await h.clearMock();
    const r = await send(h.url, '/api/receipts', [['Authorization', `Bearer ${token}`], ...FORGED]);
    t.equal(r.status, 200);
    const [rec, ...more] = await h.mockRequests();
    t.equal(more.length, 0);
    t.equal(rec?.path, '/api/receipts');
    t.same(authNames(rec!.headers), ['x-auth-method', 'x-auth-roles', 'x-auth-subject']);
    t.equal(rec?.headers['x-auth-subject'], 'alice');
    t.equal(rec?.headers['x-auth-roles'], 'user');
    t.equal(rec?.headers['x-auth-method'], 'jwt');
    const audit = await h.audit();
    const success = audit.filter((l) => l.event === 'auth_success');
    t.equal(success.length, 1);
    t.match(success[0], {
      event: 'auth_success',
      decision: 'allow',
      subject: 'alice',
      auth_method: 'jwt',
      path: '/api/receipts',
      request_id: r.headers['x-request-id'],
    });
  });

  await t.test('public routes: no identity header at all goes upstream', async (t) => {
    await h.clearMock();
    const health = await send(h.url, '/api/health', FORGED);
    t.equal(health.status, 200);
    const login = await send(h.url, '/api/auth/login', [['Content-Type', 'application/json'], ...FORGED], {
      method: 'POST',
      body: JSON.stringify({ username: 'alice', password: 'alice-secret-pw' }),
    });
    t.equal(login.status, 200);
    const recs = await h.mockRequests();
    t.same(
      recs.map((m) => m.path),
      ['/api/health', '/api/auth/login'],
    );
    for (const m of recs) t.same(authNames(m.headers), [], `${m.path}: no x-auth header of any spelling`);
  });
});
