/**
 * The whole metrics path with real software: the real gateway (harness) serves /metrics on
 * its admin listener; `promtool check metrics` accepts the exposition; a real Prometheus
 * server (Debian package `prometheus`) scrapes it every second with ops/prometheus-rules.yml
 * loaded, and its HTTP API then answers for gateway_requests_total and
 * gateway_blocked_requests_total, reports the shipped rule groups healthy, and fires
 * GatewayApiViolationsHigh after real 401/403 traffic.
 *
 * Fails (does not skip) when prometheus/promtool are missing.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { startHarness } from '../helpers/harness.js';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function poll<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

interface PromVector {
  status: string;
  data: { result: { metric: Record<string, string>; value: [number, string] }[] };
}

t.test('a real Prometheus scrapes the admin listener and evaluates the shipped rules', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());

  // some traffic before the first scrape
  const token = await h.login('alice');
  for (let i = 0; i < 3; i++) {
    const r = await fetch(`${h.url}/api/receipts`, { headers: { authorization: `Bearer ${token}` } });
    t.equal(r.status, 200);
    await r.arrayBuffer();
  }
  const sqli = await fetch(`${h.url}/api/receipts?q=1'%20UNION%20SELECT%20password%20FROM%20users--`);
  t.equal(sqli.status, 403);
  await sqli.arrayBuffer();

  // promtool accepts the exposition as it is served
  const exposition = await (await fetch(`${h.adminUrl}/metrics`)).text();
  const check = spawnSync('promtool', ['check', 'metrics'], { input: exposition, encoding: 'utf8' });
  if (check.error)
    throw new Error(`promtool could not run (${check.error.message}); apt-get install -y prometheus`);
  t.equal(check.status, 0, `promtool check metrics: ${check.stdout}${check.stderr}`);

  // a Prometheus server scraping the admin listener, with the shipped rules
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prom-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const rules = path.join(dir, 'rules.yml');
  fs.copyFileSync(path.resolve('ops/prometheus-rules.yml'), rules);
  const target = new URL(h.adminUrl).host;
  fs.writeFileSync(
    path.join(dir, 'prometheus.yml'),
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${rules}`,
      'scrape_configs:',
      '  - job_name: receipt-gateway',
      '    metrics_path: /metrics',
      '    static_configs:',
      `      - targets: ['${target}']`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const prom = spawn(
    'prometheus',
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let promLog = '';
  prom.stderr!.on('data', (d: Buffer) => (promLog = (promLog + d.toString()).slice(-4000)));
  const spawnError = new Promise<never>((_, reject) =>
    prom.once('error', (e) =>
      reject(new Error(`prometheus could not start (${e.message}); apt-get install -y prometheus`)),
    ),
  );
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        if (prom.exitCode !== null) return resolve();
        prom.once('exit', () => resolve());
        prom.kill('SIGTERM');
      }),
  );
  const api = `http://127.0.0.1:${port}/api/v1`;
  const query = async (q: string) =>
    (await (await fetch(`${api}/query?query=${encodeURIComponent(q)}`)).json()) as PromVector;

  const up = await Promise.race([
    spawnError,
    poll('the first scrape', async () => {
      const r = await query('up{job="receipt-gateway"}');
      return r.data.result[0]?.value[1] === '1' ? r : undefined;
    }),
  ]).catch((err: Error) => {
    throw new Error(`${err.message}\nprometheus log:\n${promLog}`);
  });
  t.equal(up.status, 'success');

  const requests = await poll('gateway_requests_total', async () => {
    const r = await query('sum by (decision) (gateway_requests_total{job="receipt-gateway"})');
    return r.data.result.length >= 2 ? r : undefined;
  });
  const byDecision = Object.fromEntries(
    requests.data.result.map((x) => [x.metric.decision, Number(x.value[1])]),
  );
  t.equal(byDecision.allow, 3, 'the three allowed requests');
  t.equal(byDecision.deny, 1, 'the blocked one');
  const blocked = await query('gateway_blocked_requests_total{job="receipt-gateway",reason="sqli"}');
  t.equal(blocked.data.result[0]?.value[1], '1');

  // the shipped rules load and evaluate in a real server
  const groups = await poll('rule groups', async () => {
    const r = (await (await fetch(`${api}/rules`)).json()) as {
      data: { groups: { name: string; rules: { name: string; health: string }[] }[] };
    };
    const g = r.data.groups;
    return g.length === 2 && g.every((x) => x.rules.every((rule) => rule.health === 'ok')) ? g : undefined;
  });
  t.same(groups.map((g) => g.name).sort(), ['receipt-gateway-operations', 'receipt-gateway-security']);
  t.equal(groups.flatMap((g) => g.rules).length, 14);

  // API violations: a first 401 creates the series (Prometheus counts increases from a
  // series' first sample on), then 4 more once it has been scraped; the alert fires.
  const unauthorized = async () => {
    const r = await fetch(`${h.url}/api/receipts`);
    t.equal(r.status, 401);
    await r.arrayBuffer();
  };
  await unauthorized();
  await poll('the 401 series', async () => {
    const r = await query('gateway_requests_total{job="receipt-gateway",code="401"}');
    return r.data.result.length ? r : undefined;
  });
  for (let i = 0; i < 4; i++) await unauthorized();
  const firing = await poll('GatewayApiViolationsHigh firing', async () => {
    const r = (await (await fetch(`${api}/alerts`)).json()) as {
      data: { alerts: { labels: Record<string, string>; state: string }[] };
    };
    return r.data.alerts.find(
      (a) => a.labels.alertname === 'GatewayApiViolationsHigh' && a.state === 'firing',
    );
  });
  t.same(firing.labels, {
    alertname: 'GatewayApiViolationsHigh',
    kind: 'api_violations',
    severity: 'warning',
  });
});
