import t, { type Test } from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  createDashboardRoutes,
  blockSubject,
  type DashboardRoutesOptions,
} from '../../../gateway/admin/routes.js';
import { KpiSampler, type DashboardSnapshot } from '../../../gateway/admin/dashboard-api.js';
import { dashboardPageFromHtml } from '../../../gateway/admin/dashboard-page.js';
import { Metrics } from '../../../gateway/observability/metrics.js';
import { DecisionLog, type DecisionEntry } from '../../../gateway/observability/decisions.js';
import { securityScore } from '../../../gateway/observability/score.js';

const denied: DecisionEntry = {
  request_id: 'r-1',
  time: '2026-01-01T00:00:00.000Z',
  method: 'GET',
  path: '/api/x',
  route: 'api',
  client_ip: '192.0.2.1',
  status: 403,
  decision: 'deny',
  code: 'request_blocked',
  steps: [{ policy: 'pattern-block', verdict: 'deny', code: 'request_blocked', reason: 'sqli', micros: 5 }],
  total_ms: 1,
};

async function setup(t: Test, over: Partial<DashboardRoutesOptions> = {}) {
  const metrics = new Metrics({ defaultMetrics: false });
  metrics.blocked.inc({ reason: 'sqli' });
  const decisions = new DecisionLog({ size: 10 });
  decisions.record(denied);
  const blocks: Record<string, { key: string; ttlMs: number }[]> = {
    'ipban:ban:': [{ key: 'ipban:ban:192.0.2.1', ttlMs: 10_000 }],
    'lockout:lock:': [
      { key: 'lockout:lock:u:5e884898da28', ttlMs: 60_000 },
      { key: 'lockout:lock:ip:192.0.2.9', ttlMs: 30_000 },
    ],
  };
  const sampler = new KpiSampler({ registry: metrics.registry, now: () => 0 });
  const routes = createDashboardRoutes({
    metrics,
    store: { listBlocks: async (prefix: string) => blocks[prefix] ?? [] },
    decisions,
    score: () =>
      securityScore({
        jwtHasIssuer: true,
        jwtHasAudience: true,
        hsts: false,
        csp: true,
        corsWildcardWithCredentials: false,
        monitorPolicies: [],
        storeKind: 'memory',
        workers: 1,
        auditEnabled: true,
        adminHost: '127.0.0.1',
        apiKeysWithoutRoles: 0,
        uploadGatingOn: true,
        patternBlockingOn: true,
        rateLimitOn: true,
        debugLogging: false,
      }),
    config: () => ({ store: 'redis://:pw@r:6379' }),
    reloads: () => [{ time: '2026-01-01T00:00:00.000Z', result: 'success', generation: 1, trigger: 'start' }],
    now: () => Date.parse('2026-01-01T00:01:00Z'),
    sampler,
    page: dashboardPageFromHtml('<!doctype html><title>x</title><script>1</script>'),
    ...over,
  });
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://admin');
    routes.handle(req, res, url).then((handled) => {
      if (!handled) {
        res.statusCode = 418;
        res.end('not mine');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(async () => {
    routes.close();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, routes };
}

t.test('GET / serves the page with its CSP', async (t) => {
  const { base } = await setup(t);
  const r = await fetch(base + '/');
  t.equal(r.status, 200);
  t.equal(r.headers.get('content-type'), 'text/html; charset=utf-8');
  t.match(r.headers.get('content-security-policy'), /script-src 'sha256-/);
  t.equal(r.headers.get('x-frame-options'), 'DENY');
  t.equal(await r.text(), '<!doctype html><title>x</title><script>1</script>');
  const h = await fetch(base + '/', { method: 'HEAD' });
  t.equal(h.status, 200);
  t.equal(await h.text(), '');
});

t.test('GET /api/dashboard: the snapshot with blocks read from the store', async (t) => {
  const { base } = await setup(t);
  const r = await fetch(base + '/api/dashboard');
  t.equal(r.status, 200);
  t.equal(r.headers.get('cache-control'), 'no-store');
  const s = (await r.json()) as DashboardSnapshot;
  t.equal(s.generated_at, '2026-01-01T00:01:00.000Z');
  t.same(s.bans, [{ subject: '192.0.2.1', ttl_s: 10 }]);
  t.same(s.lockouts, [
    { subject: 'user 5e884898da28', ttl_s: 60 },
    { subject: 'ip 192.0.2.9', ttl_s: 30 },
  ]);
  t.same(s.kpis.denials_by_reason, { sqli: 1 });
  t.same(
    s.denials.map((d) => [d.request_id, d.reason, d.policy]),
    [['r-1', 'sqli', 'pattern-block']],
  );
  t.same(s.config, { store: 'redis://:[REDACTED]@r:6379' });
  t.equal(s.reloads[0]!.version, '1');
  t.same(
    s.score.failing.map((f) => f.id),
    ['hsts'],
  );
});

t.test('monitoring off and store down: the dashboard still answers', async (t) => {
  const { base } = await setup(t, {
    score: () => undefined,
    store: {
      listBlocks: async () => {
        throw new Error('store down');
      },
    },
  });
  const s = (await (await fetch(base + '/api/dashboard')).json()) as DashboardSnapshot;
  t.equal(s.score.score, 0);
  t.same(s.score.recommendations, ['Security monitoring is disabled (monitoring.enabled).']);
  t.same(s.bans, []);
  t.same(s.lockouts, []);
});

t.test('GET /api/decisions/{id}: 200, or 404 JSON for unknown and malformed ids', async (t) => {
  const { base } = await setup(t);
  const ok = await fetch(base + '/api/decisions/r-1');
  t.equal(ok.status, 200);
  t.same(await ok.json(), denied);
  const unknown = await fetch(base + '/api/decisions/nope');
  t.equal(unknown.status, 404);
  t.equal(unknown.headers.get('content-type'), 'application/json; charset=utf-8');
  t.match(await unknown.json(), { error: 'not_found', message: /No recent decision/ });
  for (const bad of ['%20space', '%E0%A4%A', 'x'.repeat(129)]) {
    const r = await fetch(base + '/api/decisions/' + bad);
    t.equal(r.status, 404, bad);
    t.same(await r.json(), { error: 'not_found', message: 'Malformed request id.' });
  }
});

t.test('other paths and methods are left to the admin listener', async (t) => {
  const { base } = await setup(t);
  t.equal((await fetch(base + '/metrics')).status, 418);
  t.equal((await fetch(base + '/api/decisions/r-1/extra')).status, 418);
  t.equal((await fetch(base + '/', { method: 'POST' })).status, 418);
});

t.test('the sampler is created and started when none is given, and stopped by close()', async (t) => {
  const { routes } = await setup(t, { sampler: undefined });
  for (let i = 0; i < 200 && routes.sampler.size === 0; i++) await new Promise((r) => setTimeout(r, 5));
  t.equal(routes.sampler.size, 1, 'one sample taken at start');
  routes.close();
});

t.test('blockSubject', async (t) => {
  t.equal(blockSubject('ipban:ban:203.0.113.5', 'ipban:ban:'), '203.0.113.5');
  t.equal(blockSubject('lockout:lock:u:abc', 'lockout:lock:'), 'user abc');
  t.equal(blockSubject('lockout:lock:ip:2001:db8::/64', 'lockout:lock:'), 'ip 2001:db8::/64');
  t.equal(blockSubject('other', 'x:'), 'other');
});

t.test('GET /api/dashboard with peerDashboard: its figures, or a 503 when it fails', async (t) => {
  const merged = {
    metrics: [
      { name: 'gateway_requests_total', values: [{ value: 7, labels: { decision: 'allow' } }] },
      { name: 'gateway_requests_total_other', values: [] },
    ],
    denials: [{ ...denied, request_id: 'r-9' }],
    series: { interval_s: 10, points: [] },
  };
  const { base, routes } = await setup(t, { peerDashboard: async () => merged });
  const s = (await (await fetch(base + '/api/dashboard')).json()) as DashboardSnapshot;
  t.equal(s.kpis.requests, 7, 'the peers’ counts, not this process’s');
  t.same(
    s.denials.map((d) => d.request_id),
    ['r-9'],
  );
  t.same(s.bans, [{ subject: '192.0.2.1', ttl_s: 10 }], 'blocks from the store as before');
  const own = await routes.part();
  t.same(
    own.denials.map((d) => d.request_id),
    ['r-1'],
    'part(): this process’s own figures',
  );
  t.ok(own.metrics.some((m) => m.name === 'gateway_blocked_requests_total'));

  const down = await setup(t, {
    peerDashboard: () => Promise.reject(new Error('worker 42 did not answer within 2 s')),
  });
  const r = await fetch(down.base + '/api/dashboard');
  t.equal(r.status, 503);
  t.match(await r.json(), { error: 'unavailable', message: /worker 42 did not answer within 2 s/ });
});
