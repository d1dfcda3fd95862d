/**
 * The shipped ops files: Prometheus rules (promtool check + unit tests), the Grafana
 * dashboard (valid JSON, only existing metrics, every expression parses), the Kubernetes
 * example (valid YAML, its gateway.yaml passes the real config validation) and the
 * logrotate example (its postrotate script really sends SIGUSR2 to the gateway).
 *
 * promtool comes from the Debian package `prometheus` (.ci/run installs it); without it
 * these tests fail, they do not skip.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { Metrics } from '../../gateway/observability/metrics.js';
import { parseConfig } from '../../gateway/config/load.js';

const OPS = path.resolve('ops');
const RULES = path.join(OPS, 'prometheus-rules.yml');
const RULES_TEST = path.join(OPS, 'prometheus-rules.test.yml');
const DASHBOARD = path.join(OPS, 'grafana-dashboard.json');

function promtool(args: string[]) {
  const r = spawnSync('promtool', args, { encoding: 'utf8', timeout: 60_000 });
  if (r.error)
    throw new Error(`promtool could not run (${r.error.message}); install it: apt-get install -y prometheus`);
  return { code: r.status, out: r.stdout + r.stderr };
}

/** Metric names the gateway exports, with the series names histograms add. */
async function gatewayMetricNames(): Promise<Set<string>> {
  const m = new Metrics({ defaultMetrics: false });
  const names = new Set<string>();
  for (const metric of await m.registry.getMetricsAsJSON()) {
    const type = String(metric.type);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(metric.name + s);
    else names.add(metric.name);
  }
  return names;
}

/** gateway_* identifiers in a PromQL expression (label values in quotes are skipped). */
function metricsIn(expr: string): string[] {
  const noStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  return [...new Set([...noStrings.matchAll(/\b(gateway_[a-z0-9_]+)\b/g)].map((m) => m[1]!))];
}

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

t.test('promtool check rules', async (t) => {
  const r = promtool(['check', 'rules', RULES]);
  t.equal(r.code, 0, r.out);
  t.match(r.out, /SUCCESS: 14 rules found/);
});

t.test('promtool test rules (alert thresholds and labels)', async (t) => {
  const r = promtool(['test', 'rules', RULES_TEST]);
  t.equal(r.code, 0, r.out);
  t.match(r.out, /SUCCESS/);
});

t.test('rules: seed thresholds, existing metrics, labels and annotations', async (t) => {
  const doc = YAML.parse(fs.readFileSync(RULES, 'utf8')) as { groups: { name: string; rules: Rule[] }[] };
  const rules = doc.groups.flatMap((g) => g.rules);
  const byName = new Map(rules.map((r) => [r.alert!, r]));
  t.match(byName.get('GatewayFailedLoginsHigh')!.expr, /gateway_login_failures_total\[1h\]\)\) >= 10$/);
  t.match(
    byName.get('GatewaySuspiciousRequestsHigh')!.expr,
    /gateway_blocked_requests_total\{reason=~".*"\}\[1h\]\)\) >= 5$/,
  );
  t.match(
    byName.get('GatewayApiViolationsHigh')!.expr,
    /gateway_requests_total\{code=~"401\|403"\}\[1h\]\)\) >= 3$/,
  );
  t.match(byName.get('GatewayUpstreamErrors')!.expr, /gateway_upstream_errors_total/);
  t.match(byName.get('GatewayStoreErrors')!.expr, /gateway_store_errors_total/);
  const known = await gatewayMetricNames();
  for (const r of rules) {
    t.ok(r.alert, 'alerting rules only');
    for (const name of metricsIn(r.expr)) t.ok(known.has(name), `${r.alert}: ${name} exists in metrics.ts`);
    t.ok(['info', 'warning', 'critical'].includes(r.labels?.severity ?? ''), `${r.alert} has a severity`);
    t.ok(r.annotations?.summary && r.annotations.description, `${r.alert} has summary and description`);
  }
  // every rule is exercised by the unit tests
  const tested = new Set(
    (
      YAML.parse(fs.readFileSync(RULES_TEST, 'utf8')) as {
        tests: { alert_rule_test: { alertname: string }[] }[];
      }
    ).tests.flatMap((x) => x.alert_rule_test.map((a) => a.alertname)),
  );
  for (const r of rules) t.ok(tested.has(r.alert!), `${r.alert} has a promtool unit test`);
  // the suspicious reasons are real block reasons
  const { BLOCK_REASONS } = await import('../../gateway/errors.js');
  const reasons = /reason=~"([^"]+)"/.exec(byName.get('GatewaySuspiciousRequestsHigh')!.expr)![1]!.split('|');
  for (const reason of reasons)
    t.ok((BLOCK_REASONS as readonly string[]).includes(reason), `block reason ${reason} exists`);
});

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: { expr: string; refId: string }[];
  panels?: Panel[];
}

t.test('grafana dashboard: valid JSON, a panel per KPI, only existing metrics', async (t) => {
  const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as {
    uid: string;
    title: string;
    panels: Panel[];
    templating: { list: { query: { query: string } }[] };
    annotations: { list: { expr: string }[] };
  };
  t.equal(dash.uid, 'receipt-gateway');
  const panels = dash.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  const ids = panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of panels) {
    t.ok(p.gridPos.w > 0 && p.gridPos.w <= 24 && p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the grid`);
    if (p.type !== 'row') t.ok(p.targets?.length, `${p.title} has queries`);
  }
  const exprs = [
    ...panels.flatMap((p) => (p.targets ?? []).map((x) => ({ where: p.title, expr: x.expr }))),
    ...dash.templating.list.map((v) => ({ where: 'variable', expr: v.query.query })),
    ...dash.annotations.list.map((a) => ({ where: 'annotation', expr: a.expr })),
  ];
  const known = await gatewayMetricNames();
  const used = new Set<string>();
  for (const { where, expr } of exprs) {
    const names = metricsIn(expr);
    t.ok(names.length > 0, `${where}: refers to a gateway metric`);
    for (const n of names) {
      used.add(n);
      t.ok(known.has(n), `${where}: ${n} exists in metrics.ts`);
    }
  }
  const titleOf = (metric: string) =>
    panels.filter((p) => p.targets?.some((x) => x.expr.includes(metric))).map((p) => p.title);
  // the KPIs of the issue, each with a panel
  t.ok(titleOf('gateway_security_score').includes('Security score'));
  t.ok(titleOf('gateway_login_failures_total').includes('Failed-login rate'));
  t.ok(titleOf('gateway_blocked_requests_total').includes('Suspicious-request rate'));
  t.ok(titleOf('gateway_rate_limited_total').includes('Rate-limit violations'));
  t.ok(titleOf('gateway_audit_events_total').includes('Audit-log volume'));
  t.ok(titleOf('gateway_requests_total').includes('Requests by decision'));
  t.ok(titleOf('gateway_request_duration_seconds_bucket').includes('Latency'));
  // every SPEC §7 metric appears somewhere
  const spec7 = [
    'gateway_requests_total',
    'gateway_request_duration_seconds',
    'gateway_upstream_duration_seconds',
    'gateway_blocked_requests_total',
    'gateway_rate_limited_total',
    'gateway_auth_failures_total',
    'gateway_login_failures_total',
    'gateway_account_lockouts_total',
    'gateway_ip_bans_total',
    'gateway_upload_rejections_total',
    'gateway_audit_events_total',
    'gateway_security_alerts_total',
    'gateway_security_score',
    'gateway_config_reloads_total',
    'gateway_store_errors_total',
  ];
  for (const base of spec7)
    t.ok(
      [...used].some((u) => u === base || u.startsWith(`${base}_`)),
      `${base} is on the dashboard`,
    );
});

t.test('grafana dashboard: every expression is valid PromQL (promtool)', async (t) => {
  const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as {
    panels: Panel[];
    annotations: { list: { expr: string }[] };
  };
  const exprs = [
    ...dash.panels
      .flatMap((p) => [p, ...(p.panels ?? [])])
      .flatMap((p) => (p.targets ?? []).map((x) => x.expr)),
    ...dash.annotations.list.map((a) => a.expr),
  ];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grafana-promql-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'exprs.yml');
  fs.writeFileSync(
    file,
    YAML.stringify({
      groups: [
        {
          name: 'grafana-dashboard',
          rules: exprs.map((e, i) => ({
            record: `grafana:expr_${i}`,
            expr: e.replaceAll('$instance', '.*'),
          })),
        },
      ],
    }),
  );
  const r = promtool(['check', 'rules', file]);
  t.equal(r.code, 0, r.out);
  t.match(r.out, new RegExp(`SUCCESS: ${exprs.length} rules found`));
});

t.test('k8s sidecar example: valid YAML; its gateway.yaml passes config validation', async (t) => {
  const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(OPS, 'k8s-sidecar.yaml'), 'utf8'));
  for (const d of docs) t.same(d.errors, [], 'YAML parses');
  const objs = docs.map((d) => d.toJS() as { kind: string; data?: Record<string, string>; spec?: unknown });
  t.same(
    objs.map((o) => o.kind),
    ['ConfigMap', 'Deployment', 'Service', 'NetworkPolicy', 'PodMonitor'],
  );
  const gatewayYaml = objs[0]!.data!['gateway.yaml']!;
  const loaded = parseConfig(gatewayYaml, 'k8s-sidecar.yaml#gateway.yaml', {
    REDIS_URL: 'redis://redis:6379/0',
    JWT_SECRET_KEY: 'k3Jx9vQz2LmP8rTb5WcY1nHd7FgA4sE6k3Jx9vQz',
  });
  t.equal(loaded.config.store.url, 'redis://redis:6379/0');
  t.equal(loaded.config.admin.port, 9901);
  const deployment = objs[1] as unknown as {
    spec: {
      template: {
        spec: {
          containers: { name: string; readinessProbe?: { httpGet: { path: string; port: string } } }[];
        };
      };
    };
  };
  const gw = deployment.spec.template.spec.containers.find((c) => c.name === 'receipt-gateway')!;
  t.same(gw.readinessProbe!.httpGet, { path: '/readyz', port: 'admin' });
});

t.test('logrotate example: rotates the audit log and signals the gateway with SIGUSR2', async (t) => {
  const conf = fs.readFileSync(path.join(OPS, 'logrotate.conf'), 'utf8');
  t.match(
    conf,
    /^\/var\/log\/receipt-gateway\/security_audit\.log \{$/m,
    'rotates the audit log (AUDIT_LOG_FILE basename)',
  );
  for (const d of ['missingok', 'notifempty', 'compress', 'delaycompress', 'sharedscripts'])
    t.match(conf, new RegExp(`^\\s+${d}$`, 'm'));
  t.notMatch(conf, /copytruncate/, 'no copytruncate: the gateway reopens the file instead');
  const script = /postrotate\n([\s\S]*?)\n\s*endscript/.exec(conf)![1]!;
  t.match(script, /kill -USR2/);

  // run the postrotate script for real against a process that reopens on SIGUSR2
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logrotate-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const marker = path.join(dir, 'reopened');
  const child = spawn(
    process.execPath,
    [
      '-e',
      `process.on('SIGUSR2', () => { require('fs').writeFileSync(${JSON.stringify(marker)}, 'yes'); process.exit(0); });
       process.stdout.write('ready\\n'); setInterval(() => {}, 1000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  const pidFile = path.join(dir, 'gateway.pid');
  fs.writeFileSync(pidFile, String(child.pid));
  const r = spawnSync('sh', ['-c', script.replaceAll('/run/receipt-gateway/gateway.pid', pidFile)], {
    encoding: 'utf8',
  });
  t.equal(r.status, 0, r.stderr);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  t.equal(code, 0, 'the process received SIGUSR2');
  t.equal(fs.readFileSync(marker, 'utf8'), 'yes');
});
