import t from 'tap';
import {
  dashboardSnapshot,
  scrubConfig,
  histogramQuantile,
  KpiSampler,
  kpiTotals,
  mergeDashboardParts,
  type DashboardPart,
  type DashboardSources,
} from '../../../gateway/admin/dashboard-api.js';
import { dashboardPageFromHtml, loadDashboardPage } from '../../../gateway/admin/dashboard-page.js';
import { Metrics } from '../../../gateway/observability/metrics.js';
import { securityScore } from '../../../gateway/observability/score.js';
import type { DecisionEntry } from '../../../gateway/observability/decisions.js';
import { createHash } from 'node:crypto';

const score = securityScore({
  jwtSecret: 'short',
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
});

const denial: DecisionEntry = {
  request_id: 'req/1',
  time: '2026-01-01T00:00:05.000Z',
  method: 'GET',
  path: '/api/x?q=[REDACTED]',
  route: 'api',
  client_ip: '203.0.113.5',
  status: 403,
  decision: 'deny',
  code: 'request_blocked',
  steps: [
    { policy: 'ip_ban', verdict: 'pass', micros: 2 },
    {
      policy: 'pattern_block',
      verdict: 'deny',
      code: 'request_blocked',
      reason: 'sqli',
      rule_ids: ['942100'],
      micros: 40,
    },
  ],
  total_ms: 0.4,
};

async function sources(over: Partial<DashboardSources> = {}): Promise<DashboardSources> {
  const m = new Metrics({ defaultMetrics: false });
  m.requests.inc({ route: 'api', method: 'GET', code: '200', decision: 'allow' }, 90);
  m.requests.inc({ route: 'api', method: 'GET', code: '403', decision: 'deny' }, 7);
  m.requests.inc({ route: 'login', method: 'POST', code: '429', decision: 'deny' }, 3);
  m.requests.inc({ route: 'api', method: 'GET', code: '200', decision: 'monitor' }, 2);
  m.blocked.inc({ reason: 'sqli' }, 5);
  m.blocked.inc({ reason: 'xss' }, 2);
  m.blocked.inc({ reason: 'rate_limit' }, 3);
  m.rateLimited.inc({ rule: 'login' }, 3);
  m.loginFailures.inc(6);
  m.accountLockouts.inc();
  m.ipBans.inc(2);
  m.securityAlerts.inc({ kind: 'failed_logins' });
  m.auditEvents.inc({ event: 'api_access' }, 90);
  m.auditEvents.inc({ event: 'request_blocked' }, 7);
  for (const s of [0.001, 0.002, 0.003, 0.004, 0.02]) m.requestDuration.observe({ route: 'api' }, s);
  return {
    score,
    metrics: await m.registry.getMetricsAsJSON(),
    denials: [denial],
    bans: [{ key: 'ip_ban:203.0.113.5', ttlMs: 3_599_001, subject: '203.0.113.5' }],
    lockouts: [{ key: 'lockout:user:alice', ttlMs: 60_000 }],
    config: {
      file: 'gateway.yaml',
      routes: 7,
      store: 'redis://:hunter2@redis:6379/0',
      jwt: { secret: 'x'.repeat(40), audience: 'receipts' },
      api_keys: [{ id: 'ci', hash: 'scrypt$abc', roles: ['uploader'] }],
      webhook_token: 'tok',
      workers: 2,
    },
    reloads: [
      { time: '2026-01-01T00:00:00.000Z', result: 'success', generation: 1, trigger: 'start' },
      {
        time: '2026-01-01T00:10:00.000Z',
        result: 'error',
        trigger: 'watch',
        errors: [
          'gateway.yaml:12:5: routes.2.path: invalid value',
          'gateway.yaml:20:3: unknown key "polices"',
        ],
      },
      { time: '2026-01-01T00:12:00.000Z', result: 'ok', version: 'abc123', message: 'manual' },
    ],
    now: Date.parse('2026-01-01T00:15:00Z'),
    ...over,
  };
}

t.test('snapshot: score, KPIs, denials, blocks, config, reloads', async (t) => {
  const snap = dashboardSnapshot(await sources());
  t.equal(snap.generated_at, '2026-01-01T00:15:00.000Z');
  t.equal(snap.score.score, score.score);
  t.same(
    snap.score.failing.map((f) => f.id),
    ['jwt_secret_length', 'jwt_secret_entropy', 'hsts'],
    'failing checks, heaviest first',
  );
  t.equal(snap.score.total, score.checks.length);
  t.equal(snap.score.passing, score.checks.length - 3);
  t.same(snap.kpis, {
    requests: 102,
    allowed: 90,
    denied: 10,
    monitored: 2,
    denials_by_reason: { sqli: 5, rate_limit: 3, xss: 2 },
    rate_limited: 3,
    rate_limited_by_rule: { login: 3 },
    auth_failures: 0,
    login_failures: 6,
    lockouts: 1,
    bans: 2,
    alerts: 1,
    alerts_by_kind: { failed_logins: 1 },
    audit_events: 97,
    audit_write_errors: 0,
    upstream_errors: 0,
    store_errors: 0,
    open_connections: 0,
    latency_p50_ms: snap.kpis.latency_p50_ms,
    latency_p99_ms: snap.kpis.latency_p99_ms,
  });
  t.same(snap.denials, [
    {
      request_id: 'req/1',
      time: '2026-01-01T00:00:05.000Z',
      method: 'GET',
      path: '/api/x?q=[REDACTED]',
      route: 'api',
      client_ip: '203.0.113.5',
      status: 403,
      decision: 'deny',
      code: 'request_blocked',
      reason: 'sqli',
      policy: 'pattern_block',
      href: '/api/decisions/req%2F1',
    },
  ]);
  t.same(snap.bans, [{ subject: '203.0.113.5', ttl_s: 3600 }]);
  t.same(snap.lockouts, [{ subject: 'lockout:user:alice', ttl_s: 60 }]);
  t.same(snap.config, {
    file: 'gateway.yaml',
    routes: 7,
    store: 'redis://:[REDACTED]@redis:6379/0',
    jwt: { secret: '[REDACTED]', audience: 'receipts' },
    api_keys: [{ id: '[REDACTED]', hash: '[REDACTED]', roles: ['[REDACTED]'] }],
    webhook_token: '[REDACTED]',
    workers: 2,
  });
  t.same(
    snap.reloads,
    [
      { time: '2026-01-01T00:12:00.000Z', result: 'ok', version: 'abc123', trigger: null, message: 'manual' },
      {
        time: '2026-01-01T00:10:00.000Z',
        result: 'error',
        version: null,
        trigger: 'watch',
        message: 'gateway.yaml:12:5: routes.2.path: invalid value; gateway.yaml:20:3: unknown key "polices"',
      },
      { time: '2026-01-01T00:00:00.000Z', result: 'ok', version: '1', trigger: 'start', message: '' },
    ],
    "newest first, the gateway's records normalised",
  );
  t.same(snap.series, { interval_s: 10, points: [] });
  const json = JSON.stringify(snap);
  for (const secret of ['hunter2', 'x'.repeat(40), 'scrypt$abc', '"tok"'])
    t.notOk(json.includes(secret), `no ${secret}`);
});

t.test('histogram quantiles', async (t) => {
  const m = new Metrics({ defaultMetrics: false });
  t.equal(
    histogramQuantile(await m.registry.getMetricsAsJSON(), 'gateway_request_duration_seconds', 0.5),
    null,
    'no data',
  );
  for (let i = 0; i < 100; i++) m.requestDuration.observe({ route: i % 2 ? 'a' : 'b' }, i < 90 ? 0.003 : 0.2);
  const j = await m.registry.getMetricsAsJSON();
  // 90 in (0.0025, 0.005], 10 in (0.1, 0.25]; routes merged
  t.equal(histogramQuantile(j, 'gateway_request_duration_seconds', 0.5), 3.889);
  t.equal(histogramQuantile(j, 'gateway_request_duration_seconds', 0.99), 235);
  t.equal(histogramQuantile(j, 'nope', 0.5), null);
});

t.test('scrubConfig', async (t) => {
  t.same(
    scrubConfig({ password: 'p', passwd: 'q', authorization: 'Bearer x', enabled: true, token_ttl: 60 }),
    {
      password: '[REDACTED]',
      passwd: '[REDACTED]',
      authorization: '[REDACTED]',
      enabled: true,
      token_ttl: 60,
    },
  );
  t.equal(scrubConfig('https://user:pw@example.com/hook'), 'https://user:[REDACTED]@example.com/hook');
  t.equal(scrubConfig('http://example.com/a@b'), 'http://example.com/a@b', 'no userinfo, unchanged');
  t.same(scrubConfig([{ private_key: 'k' }]), [{ private_key: '[REDACTED]' }]);
  t.same(scrubConfig({ api_keys: ['k1', 'k2'], api_key_count: 2 }), {
    api_keys: ['[REDACTED]', '[REDACTED]'],
    api_key_count: 2,
  });
});

t.test('KPI sampler: per-interval deltas over a bounded window', async (t) => {
  const m = new Metrics({ defaultMetrics: false });
  let now = Date.parse('2026-01-01T00:00:00Z');
  const sampler = new KpiSampler({
    registry: m.registry,
    intervalMs: 10_000,
    windowMs: 60_000,
    now: () => now,
  });
  t.same(sampler.series(), { interval_s: 10, points: [] });
  await sampler.sample();
  for (let i = 1; i <= 10; i++) {
    now += 10_000;
    m.requests.inc({ route: 'api', method: 'GET', code: '200', decision: 'allow' }, i);
    m.blocked.inc({ reason: 'sqli' });
    if (i === 5) m.ipBans.inc();
    await sampler.sample();
  }
  t.equal(sampler.size, 7, 'window / interval + 1 samples kept');
  const s = sampler.series();
  t.equal(s.points.length, 6);
  t.same(
    s.points.map((p) => p.requests),
    [5, 6, 7, 8, 9, 10],
  );
  t.same(
    s.points.map((p) => p.denials),
    [1, 1, 1, 1, 1, 1],
  );
  t.same(
    s.points.map((p) => p.bans),
    [1, 0, 0, 0, 0, 0],
  );
  t.equal(s.points.at(-1)!.t, '2026-01-01T00:01:40.000Z');
  t.same(kpiTotals(await m.registry.getMetricsAsJSON()), {
    requests: 55,
    denials: 10,
    rate_limited: 0,
    lockouts: 0,
    bans: 1,
    alerts: 0,
    login_failures: 0,
  });
  sampler.start();
  sampler.start();
  sampler.stop();
  sampler.stop();
});

t.test('dashboard page: CSP allows exactly its inline script and style', async (t) => {
  const page = loadDashboardPage();
  const html = page.body.toString('utf8');
  const script = /<script>([\s\S]*?)<\/script>/.exec(html)![1]!;
  const style = /<style>([\s\S]*?)<\/style>/.exec(html)![1]!;
  const h = (s: string) => createHash('sha256').update(s).digest('base64');
  const csp = page.headers['content-security-policy']!;
  t.match(csp, `script-src 'sha256-${h(script)}'`);
  t.match(csp, `style-src 'sha256-${h(style)}'`);
  t.match(csp, "default-src 'none'");
  t.match(csp, "connect-src 'self'");
  t.equal(page.headers['content-type'], 'text/html; charset=utf-8');
  t.notMatch(html, /https?:\/\/(?!www\.w3\.org\/2000\/svg)/, 'no external URL (no CDN)');
  t.notMatch(html, /\sstyle="/, 'no inline style attributes (blocked by the CSP)');
  t.notMatch(html, /innerHTML/, 'data is rendered as text only');
  t.same(dashboardPageFromHtml('<p>x</p>').headers['content-security-policy'].split('; ').slice(1, 3), [
    "script-src 'none'",
    "style-src 'none'",
  ]);
  t.throws(() => loadDashboardPage(['/nonexistent/dashboard.html']), /admin dashboard page not found/);
});

t.test('mergeDashboardParts: metric values together, denials newest first, series by interval', async (t) => {
  const entry = (id: string, time: string) => ({ ...denial, request_id: id, time });
  const point = (t: string, requests: number) => ({
    t,
    requests,
    denials: 1,
    rate_limited: 0,
    lockouts: 0,
    bans: 0,
    alerts: 0,
    login_failures: 0,
  });
  const a: DashboardPart = {
    metrics: [
      { name: 'gateway_requests_total', values: [{ value: 3, labels: { decision: 'allow' } }] },
      { name: 'gateway_open_connections', values: [{ value: 1, labels: {} }] },
    ],
    denials: [entry('a2', '2026-01-01T00:00:05.000Z'), entry('a1', '2026-01-01T00:00:01.000Z')],
    series: {
      interval_s: 10,
      points: [point('2026-01-01T00:00:12.000Z', 2), point('2026-01-01T00:00:22.000Z', 1)],
    },
  };
  const b: DashboardPart = {
    metrics: [
      { name: 'gateway_requests_total', values: [{ value: 4, labels: { decision: 'deny' } }] },
      { name: 'gateway_open_connections', values: [{ value: 2, labels: {} }] },
    ],
    denials: [entry('b2', '2026-01-01T00:00:07.000Z'), entry('b1', '2026-01-01T00:00:03.000Z')],
    series: {
      interval_s: 10,
      points: [point('2026-01-01T00:00:17.000Z', 5), point('2026-01-01T00:00:37.000Z', 4)],
    },
  };
  const m = mergeDashboardParts([a, b], 3);
  const snap = dashboardSnapshot(await sources({ metrics: m.metrics, denials: m.denials, series: m.series }));
  t.equal(snap.kpis.requests, 7);
  t.equal(snap.kpis.allowed, 3);
  t.equal(snap.kpis.denied, 4);
  t.equal(snap.kpis.open_connections, 3, 'open connections summed');
  t.same(
    m.denials.map((d) => d.request_id),
    ['b2', 'a2', 'b1'],
    'newest first, cut',
  );
  t.same(
    m.series.points.map((p) => [p.t, p.requests, p.denials]),
    [
      ['2026-01-01T00:00:17.000Z', 7, 2],
      ['2026-01-01T00:00:22.000Z', 1, 1],
      ['2026-01-01T00:00:37.000Z', 4, 1],
    ],
    'points summed per interval',
  );
  t.equal(a.metrics[0]!.values.length, 1, 'the parts are left as they were');
  t.same(mergeDashboardParts([]), { metrics: [], denials: [], series: { interval_s: 10, points: [] } });
});
