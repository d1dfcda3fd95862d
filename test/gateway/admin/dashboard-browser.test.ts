/**
 * The admin dashboard in a real browser (headless Chromium via playwright-core), served
 * by a small HTTP server with the real page, the real snapshot function and a real
 * DecisionLog, Metrics registry and KPI sampler fed with synthetic traffic. Saves the
 * screenshot shown in the docs (docs/dashboard.png).
 *
 * Fails (does not skip) when /usr/bin/chromium is missing: `apt-get install -y chromium`.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser } from 'playwright-core';
import {
  dashboardSnapshot,
  KpiSampler,
  DASHBOARD_API_PATH,
  type ReloadRecord,
} from '../../../gateway/admin/dashboard-api.js';
import { loadDashboardPage } from '../../../gateway/admin/dashboard-page.js';
import { Metrics } from '../../../gateway/observability/metrics.js';
import { securityScore } from '../../../gateway/observability/score.js';
import {
  DecisionLog,
  isWellFormedRequestId,
  type DecisionEntry,
} from '../../../gateway/observability/decisions.js';

const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT = path.resolve('docs/dashboard.png');

/** deterministic pseudo-random numbers for the synthetic traffic */
function rng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
}

async function fixture() {
  const metrics = new Metrics({ defaultMetrics: false });
  let now = Date.parse('2026-03-02T09:00:00Z');
  const sampler = new KpiSampler({ registry: metrics.registry, now: () => now });
  const rand = rng(7);
  await sampler.sample();
  for (let i = 0; i < 360; i++) {
    now += 10_000;
    const wave = 40 + 25 * Math.sin(i / 30);
    const ok = Math.round(wave + rand() * 15);
    metrics.requests.inc({ route: 'api', method: 'GET', code: '200', decision: 'allow' }, ok);
    for (let k = 0; k < ok; k++) metrics.requestDuration.observe({ route: 'api' }, 0.002 + rand() * 0.004);
    const attack = i > 200 && i < 230 ? Math.round(6 + rand() * 6) : rand() < 0.2 ? 1 : 0;
    if (attack) {
      metrics.blocked.inc({ reason: rand() < 0.6 ? 'sqli' : 'xss' }, attack);
      metrics.requests.inc({ route: 'api', method: 'GET', code: '403', decision: 'deny' }, attack);
    }
    if (i % 37 === 0) {
      metrics.blocked.inc({ reason: 'rate_limit' }, 3);
      metrics.rateLimited.inc({ rule: 'login' }, 3);
      metrics.requests.inc({ route: 'login', method: 'POST', code: '429', decision: 'deny' }, 3);
    }
    if (i % 45 === 0) metrics.loginFailures.inc(2);
    if (i === 215) metrics.ipBans.inc();
    if (i === 300) metrics.accountLockouts.inc();
    if (i === 205) metrics.securityAlerts.inc({ kind: 'suspicious_requests' });
    await sampler.sample();
  }
  metrics.auditEvents.inc({ event: 'api_access' }, 1200);

  const decisions = new DecisionLog({ size: 50 });
  const deny = (id: string, extra: Partial<DecisionEntry>): DecisionEntry => ({
    request_id: id,
    time: new Date(now - 60_000).toISOString(),
    method: 'GET',
    path: '/api/receipts',
    route: 'api',
    client_ip: '203.0.113.50',
    status: 403,
    decision: 'deny',
    code: 'request_blocked',
    steps: [
      { policy: 'ip-ban', verdict: 'pass', micros: 3 },
      { policy: 'user-agent', verdict: 'pass', micros: 4 },
      {
        policy: 'pattern-block',
        verdict: 'deny',
        code: 'request_blocked',
        reason: 'sqli',
        rule_ids: ['sqli-100', 'sqli-110'],
        detail: {
          score: 10,
          matches: [{ target: 'query:q', rule: 'sqli-100', excerpt: "1' union select pass" }],
        },
        micros: 142,
      },
    ],
    score: 9,
    total_ms: 0.41,
    ...extra,
  });
  decisions.record(deny('7f3c9a10-sqli', { path: "/api/receipts?q=1'%20UNION%20SELECT%20pass" }));
  decisions.record(
    deny('7f3c9a11-xss', {
      path: '/api/search?q=<img src=x onerror=alert(1)>',
      client_ip: '198.51.100.23',
      steps: [
        { policy: 'ip-ban', verdict: 'pass', micros: 2 },
        {
          policy: 'pattern-block',
          verdict: 'deny',
          code: 'request_blocked',
          reason: 'xss',
          rule_ids: ['xss-210'],
          micros: 98,
        },
      ],
    }),
  );
  decisions.record(
    deny('7f3c9a12-rl', {
      method: 'POST',
      path: '/api/auth/login',
      route: 'login',
      status: 429,
      code: 'rate_limited',
      client_ip: '192.0.2.77',
      steps: [
        {
          policy: 'rate-limit',
          verdict: 'deny',
          code: 'rate_limited',
          reason: 'rate_limit',
          rule_ids: ['login'],
          micros: 21,
        },
      ],
    }),
  );
  decisions.record({ ...deny('ok-1', {}), decision: 'allow', status: 200, code: undefined, steps: [] });

  const score = securityScore({
    jwtSecret: 'k3Jx9vQz2LmP8rTb5WcY1nHd7FgA4sE6',
    jwtHasIssuer: true,
    jwtHasAudience: false,
    hsts: true,
    csp: true,
    corsWildcardWithCredentials: false,
    monitorPolicies: ['user-agent'],
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
  const reloads: ReloadRecord[] = [
    { time: '2026-03-02T08:00:00.000Z', result: 'success', generation: 1, trigger: 'start' },
    {
      time: '2026-03-02T09:40:12.000Z',
      result: 'error',
      trigger: 'watch',
      errors: ['gateway.yaml:41:18: routes.3.policies.rate_limit.limits: invalid limit "10 per fortnight"'],
    },
    { time: '2026-03-02T09:41:30.000Z', result: 'success', generation: 2, trigger: 'watch' },
  ];
  const state = { extraDenial: undefined as DecisionEntry | undefined };
  const snapshot = async () => {
    const denials = decisions.recent({ deniedOnly: true });
    return dashboardSnapshot({
      score,
      metrics: await metrics.registry.getMetricsAsJSON(),
      denials,
      bans: [{ key: 'ip_ban:ip:203.0.113.50', ttlMs: 3_100_000, subject: '203.0.113.50' }],
      lockouts: [{ key: 'login_lockout:user:alice', ttlMs: 540_000, subject: 'user alice' }],
      config: {
        file: '/etc/receipt-gateway/gateway.yaml',
        upstream: 'http://127.0.0.1:9000',
        store: 'redis://:s3cr3t-redis@10.0.0.9:6379/0',
        routes: 8,
        policies: ['security_headers', 'cors', 'rate_limit', 'auth_jwt', 'pattern_block', 'upload_gate'],
        jwt: { secret: 'k3Jx9vQz2LmP8rTb5WcY1nHd7FgA4sE6', issuer: 'receipts-auth' },
        audit_log: 'logs/security_audit.log',
      },
      reloads,
      series: sampler.series(),
      now,
    });
  };
  return { decisions, snapshot, state, deny };
}

async function serve(t: Test, fx: Awaited<ReturnType<typeof fixture>>) {
  const page = loadDashboardPage();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === '/') {
      res.writeHead(200, page.headers);
      res.end(page.body);
    } else if (url.pathname === DASHBOARD_API_PATH) {
      fx.snapshot().then(
        (s) => json(200, s),
        (e: Error) => json(500, { error: 'internal_error', message: e.message }),
      );
    } else if (url.pathname.startsWith('/api/decisions/')) {
      const id = decodeURIComponent(url.pathname.slice('/api/decisions/'.length));
      if (!isWellFormedRequestId(id))
        return json(400, { error: 'bad_request', message: 'Malformed request id.' });
      const e = fx.decisions.get(id);
      return e
        ? json(200, e)
        : json(404, { error: 'not_found', message: 'No decision recorded for this request id.' });
    } else json(404, { error: 'not_found', message: 'No route matches this path.' });
    return undefined;
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

t.test(
  'the dashboard shows score, KPIs, denials with explanations, blocks, config and reloads',
  async (t) => {
    t.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} exists (apt-get install -y chromium)`);
    const fx = await fixture();
    const base = await serve(t, fx);
    const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    t.teardown(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    await page.goto(base + '/');
    await page.waitForSelector('body[data-loaded]');

    t.equal(await page.textContent('#conn'), 'live');
    const snap = await fx.snapshot();
    t.equal(await page.textContent('#score'), String(snap.score.score));
    t.equal(
      await page.textContent('#score-summary'),
      `${snap.score.passing} of ${snap.score.total} checks pass`,
    );
    const failing = await page.$$eval('#failing li', (els) => els.map((e) => e.getAttribute('data-check')));
    t.same(failing, ['monitor_mode', 'jwt_audience']);
    t.match(await page.textContent('#failing'), /monitor mode: user-agent/);

    const tile = (id: string) => page.textContent(`[data-kpi="${id}"] .value`);
    t.equal(await tile('bans'), '1');
    t.equal(await tile('lockouts'), '1');
    t.equal(await tile('alerts'), '1');
    t.equal(await tile('rate_limited'), String(snap.kpis.rate_limited));
    t.equal(await tile('denials'), String(snap.kpis.denied));
    t.match(await page.textContent('[data-kpi="alerts"] .sub'), 'suspicious_requests');
    t.equal(await page.locator('#traffic polyline').count(), 3, 'three lines in the traffic chart');
    t.equal(
      await page.locator('[data-kpi] svg polyline').count(),
      14,
      'a sparkline (area + line) per counter tile',
    );
    t.same(
      await page.$$eval('#reasons .bar', (els) => els.map((e) => e.getAttribute('data-reason'))),
      Object.keys(snap.kpis.denials_by_reason),
    );

    const rows = await page.$$eval('#denials tbody tr', (els) =>
      els.map((e) => e.getAttribute('data-request-id')),
    );
    t.same(
      rows,
      ['7f3c9a12-rl', '7f3c9a11-xss', '7f3c9a10-sqli'],
      'newest first; allowed requests not listed',
    );
    t.equal(await page.getAttribute('a[data-id="7f3c9a10-sqli"]', 'href'), '/api/decisions/7f3c9a10-sqli');
    // attacker-controlled text is shown as text, never interpreted
    t.equal(await page.locator('#denials img').count(), 0);
    t.match(
      await page.textContent('tr[data-request-id="7f3c9a11-xss"] td.path'),
      'GET /api/search?q=<img src=x onerror=alert(1)>',
    );

    await page.click('a[data-id="7f3c9a10-sqli"]');
    await page.waitForSelector('#explain-steps');
    t.match(await page.textContent('#explain h3'), 'Request 7f3c9a10-sqli: refused 403 request_blocked');
    t.same(
      await page.$$eval('#explain-steps tbody tr', (els) => els.map((e) => e.getAttribute('data-policy'))),
      ['ip-ban', 'user-agent', 'pattern-block'],
    );
    const denyRow = await page.textContent('#explain-steps tr[data-policy="pattern-block"]');
    t.match(denyRow, 'deny');
    t.match(denyRow, 'sqli-100, sqli-110');
    t.match(denyRow, "1' union select pass");

    t.match(await page.textContent('#bans tbody'), '203.0.113.50');
    t.match(await page.textContent('#bans tbody'), '51m 40s');
    t.match(await page.textContent('#lockouts tbody'), 'user alice');
    t.match(await page.textContent('#lockouts tbody'), '9m 0s');

    const config = await page.textContent('#config');
    t.match(config, 'redis://:[REDACTED]@10.0.0.9:6379/0');
    t.notMatch(config, 's3cr3t-redis');
    t.notMatch(
      await page.content(),
      'k3Jx9vQz2LmP8rTb5WcY1nHd7FgA4sE6',
      'the JWT secret is nowhere on the page',
    );

    const reloadResults = await page.$$eval('#reloads tbody tr td:nth-child(2)', (els) =>
      els.map((e) => e.textContent),
    );
    t.same(reloadResults, ['ok', 'error', 'ok']);
    const generations = await page.$$eval('#reloads tbody tr td:nth-child(3)', (els) =>
      els.map((e) => e.textContent),
    );
    t.same(generations, ['2', '', '1']);
    t.match(await page.textContent('#reloads'), 'invalid limit "10 per fortnight"');

    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    t.ok(fs.statSync(SCREENSHOT).size > 10_000, 'screenshot saved');

    // the page refreshes itself: a new denial appears without reload
    fx.decisions.record(fx.deny('7f3c9a13-new', { path: '/../../etc/passwd', client_ip: '192.0.2.99' }));
    await page.waitForSelector('tr[data-request-id="7f3c9a13-new"]', { timeout: 15_000 });
    t.pass('auto-refresh picked up the new denial');

    t.same(problems, [], 'no console errors (CSP violations would show here)');
  },
);

t.test('the page says so when the admin API is unreachable', async (t) => {
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  t.teardown(() => browser.close());
  const page = loadDashboardPage();
  const server = http.createServer((req, res) => {
    if (req.url === '/') {
      res.writeHead(200, page.headers);
      res.end(page.body);
    } else {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end('{"error":"service_unavailable"}');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  const p = await browser.newPage();
  await p.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  await p.waitForSelector('#conn.bad');
  t.equal(await p.textContent('#conn'), 'disconnected: HTTP 503');
});
