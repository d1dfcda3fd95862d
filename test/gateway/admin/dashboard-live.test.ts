/**
 * The dashboard, the decision endpoint and `explain` against the real gateway (harness:
 * real mock upstream, real listeners) after real traffic: an SQL injection, failed logins
 * up to a lockout, an unauthenticated API call. The page is checked in headless Chromium.
 */
import t from 'tap';
import { chromium } from 'playwright-core';
import { startHarness } from '../../helpers/harness.js';
import { createDashboardRoutes, configSummary } from '../../../gateway/admin/routes.js';
import type { DashboardSnapshot } from '../../../gateway/admin/dashboard-api.js';
import type { ScoreResult } from '../../../gateway/observability/score.js';
import type { DecisionEntry } from '../../../gateway/observability/decisions.js';
import { runExplain } from '../../../gateway/commands/explain.js';

const CHROMIUM = '/usr/bin/chromium';

t.test('real traffic shows up on the dashboard, in /api/decisions and in explain', async (t) => {
  const h = await startHarness({
    config: 'policies:\n  login_lockout:\n    enabled: true\n    max_attempts: 3\n',
  });
  t.teardown(() => h.close());
  const gw = h.gateway;
  const routes = createDashboardRoutes({
    metrics: gw.metrics,
    store: gw.store,
    decisions: h.observability.decisions,
    score: () => gw.observers.securityHealth?.() as ScoreResult | undefined,
    config: () => configSummary(gw.generation),
    reloads: () => gw.reloads,
  });
  t.teardown(() => routes.close());
  const previous = gw.observers.adminRoute;
  gw.observers.adminRoute = async (req, res, url) =>
    (await routes.handle(req, res, url)) || (previous ? previous(req, res, url) : false);

  // --- traffic ---
  const sqli = await fetch(`${h.url}/api/receipts?q=1'%20UNION%20SELECT%20password%20FROM%20users--`);
  t.equal(sqli.status, 403);
  const sqliId = ((await sqli.json()) as { request_id: string }).request_id;
  const logins: number[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await fetch(`${h.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password: `wrong-${i}` }),
    });
    logins.push(r.status);
    await r.arrayBuffer();
  }
  t.same(logins, [401, 401, 401, 429], 'locked after 3 failures');
  const noAuth = await fetch(`${h.url}/api/receipts`);
  t.equal(noAuth.status, 401);
  await noAuth.arrayBuffer();
  const token = await h.login('alice');
  const ok = await fetch(`${h.url}/api/receipts`, { headers: { authorization: `Bearer ${token}` } });
  t.equal(ok.status, 200);
  const okId = ok.headers.get('x-request-id')!;
  await ok.arrayBuffer();

  // --- decision endpoint ---
  const d = await fetch(`${h.adminUrl}/api/decisions/${encodeURIComponent(sqliId)}`);
  t.equal(d.status, 200);
  const entry = (await d.json()) as DecisionEntry;
  t.equal(entry.decision, 'deny');
  t.equal(entry.status, 403);
  t.equal(entry.code, 'request_blocked');
  const decisive = entry.steps.find((s) => s.verdict === 'deny')!;
  t.equal(decisive.reason, 'sqli');
  t.ok(decisive.rule_ids!.length > 0, 'rule ids recorded');
  const allowed = (await (await fetch(`${h.adminUrl}/api/decisions/${okId}`)).json()) as DecisionEntry;
  t.equal(allowed.decision, 'allow', 'allowed requests are explained too');
  const missing = await fetch(`${h.adminUrl}/api/decisions/never-seen-id`);
  t.equal(missing.status, 404);
  t.equal(((await missing.json()) as { error: string }).error, 'not_found');

  // --- explain command ---
  const out = { text: '', err: '' };
  const code = await runExplain([sqliId, '--admin', h.adminUrl], {
    stdout: { write: (s: string) => (out.text += s) },
    stderr: { write: (s: string) => (out.err += s) },
    env: {},
  });
  t.equal(code, 0, out.err);
  t.match(out.text, new RegExp(`^Request ${sqliId}: REFUSED 403 request_blocked`));
  t.match(out.text, /DENY {2}request_blocked {2}reason=sqli/);

  // --- snapshot ---
  const snap = (await (await fetch(`${h.adminUrl}/api/dashboard`)).json()) as DashboardSnapshot;
  t.equal(snap.kpis.requests, 7);
  t.equal(snap.kpis.allowed, 4, 'the good request and the 3 failed logins the upstream answered');
  t.equal(snap.kpis.denied, 3, 'sqli, lockout, missing credentials');
  t.same(snap.kpis.denials_by_reason, { sqli: 1, lockout: 1, auth: 1 });
  t.equal(snap.kpis.login_failures, 3);
  t.equal(snap.kpis.lockouts, 1);
  t.equal(snap.lockouts.length, 1);
  t.match(snap.lockouts[0]!.subject, /^user [0-9a-f]+$/, 'usernames appear hashed, as the store keeps them');
  t.same(
    snap.denials.map((x) => [x.status, x.code, x.reason]),
    [
      [401, 'unauthorized', 'auth'],
      [429, 'account_locked', 'lockout'],
      [403, 'request_blocked', 'sqli'],
    ],
    'recent denials, newest first',
  );
  t.equal(snap.denials[2]!.request_id, sqliId);
  t.equal(snap.config.generation, gw.generation.id);
  t.notOk(JSON.stringify(snap).includes(h.env.JWT_SECRET_KEY!), 'the JWT secret is nowhere in the snapshot');
  t.equal(snap.score.score, (gw.observers.securityHealth?.() as ScoreResult).score);

  // --- the page in a browser ---
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(e.message));
  await page.goto(`${h.adminUrl}/`);
  await page.waitForSelector('body[data-loaded]');
  t.equal(await page.textContent('#score'), String(snap.score.score));
  t.equal(await page.textContent('[data-kpi="lockouts"] .value'), '1');
  t.equal(await page.textContent('[data-kpi="requests"] .value'), '7');
  await page.click(`a[data-id="${sqliId}"]`);
  await page.waitForSelector('#explain-steps');
  const policies = await page.$$eval('#explain-steps tbody tr', (els) =>
    els.map((e) => e.getAttribute('data-policy')),
  );
  t.same(
    policies,
    entry.steps.map((s) => s.policy),
  );
  t.match(await page.textContent('#lockouts tbody'), /user [0-9a-f]+/);
  t.notMatch(await page.content(), h.env.JWT_SECRET_KEY!);
  t.same(problems, [], 'no console errors');
});
