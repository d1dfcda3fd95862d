import t, { type Test } from 'tap';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  createAlerts,
  type AlertsOptions,
  type AlertPayload,
} from '../../../gateway/observability/alerts.js';
import { Metrics } from '../../../gateway/observability/metrics.js';
import type { AuditLog, AuditFields } from '../../../gateway/observability/audit.js';
import type { Store, ConsumeResult } from '../../../gateway/store/types.js';

/** A minimal Store with exact sliding windows on a fake clock (what memory/redis stores implement). */
class TestStore implements Store {
  readonly kind = 'memory' as const;
  readonly events = new Map<string, number[]>();
  readonly blocks = new Map<string, number>();
  constructor(readonly clock: { now: number }) {}
  async consume(): Promise<ConsumeResult> {
    return { allowed: true, buckets: [], retryAfterMs: 0 };
  }
  async increment(key: string, windowMs: number): Promise<number> {
    const list = (this.events.get(key) ?? []).filter((ts) => ts > this.clock.now - windowMs);
    list.push(this.clock.now);
    this.events.set(key, list);
    return list.length;
  }
  async count(key: string, windowMs: number): Promise<number> {
    return (this.events.get(key) ?? []).filter((ts) => ts > this.clock.now - windowMs).length;
  }
  async block(key: string, ttlMs: number, onlyIfAbsent = false): Promise<boolean> {
    if (onlyIfAbsent && (this.blocks.get(key) ?? 0) > this.clock.now) return false;
    this.blocks.set(key, this.clock.now + ttlMs);
    return true;
  }
  async acquire(): Promise<string | undefined> {
    throw new Error('alerts take no leases');
  }
  async release(): Promise<boolean> {
    throw new Error('alerts take no leases');
  }
  async blockedFor(key: string): Promise<number> {
    return Math.max(0, (this.blocks.get(key) ?? 0) - this.clock.now);
  }
  async reset(key: string): Promise<void> {
    this.events.delete(key);
    this.blocks.delete(key);
  }
  async listBlocks(prefix: string, limit: number) {
    return [...this.blocks]
      .filter(([k, until]) => k.startsWith(prefix) && until > this.clock.now)
      .slice(0, limit)
      .map(([key, until]) => ({ key, ttlMs: until - this.clock.now }));
  }
  async ping(): Promise<void> {}
  healthy(): boolean {
    return true;
  }
  async close(): Promise<void> {}
}

class TestAudit implements AuditLog {
  readonly enabled = true;
  readonly lines: Record<string, unknown>[] = [];
  request(): void {}
  system(event: string, fields: AuditFields): void {
    this.lines.push({ event, ...fields });
  }
  reopen(): void {}
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

const quietLog = {
  warns: [] as string[],
  warn(_o: object, m?: string) {
    this.warns.push(m ?? '');
  },
  error() {},
};

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** lets background store work (in-memory promises) finish */
const settle = () => new Promise((r) => setTimeout(r, 20));

type Mode = 'ok' | '500' | 'hang' | '400' | 'redirect';
async function webhookServer(t: Test) {
  const state = {
    mode: 'ok' as Mode,
    bodies: [] as AlertPayload[],
    hits: 0,
    headers: [] as http.IncomingHttpHeaders[],
    location: '',
  };
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (data += c));
    req.on('end', () => {
      state.hits++;
      state.headers.push(req.headers);
      if (state.mode === 'hang') return; // never answer
      state.bodies.push(JSON.parse(data) as AlertPayload);
      if (state.mode === 'redirect') {
        res.writeHead(307, { location: state.location });
        res.end();
        return;
      }
      res.statusCode = state.mode === '500' ? 500 : state.mode === '400' ? 400 : 204;
      res.end();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return { state, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook` };
}

function setup(
  t: Test,
  extra: Partial<AlertsOptions> = {},
  shared?: { store: TestStore; clock: { now: number } },
) {
  const clock = shared?.clock ?? { now: Date.parse('2026-01-01T00:00:00Z') };
  const store = shared?.store ?? new TestStore(clock);
  const audit = new TestAudit();
  const metrics = new Metrics({ defaultMetrics: false });
  const log = { ...quietLog, warns: [] as string[] };
  const alerts = createAlerts({
    store,
    audit,
    metrics,
    log,
    now: () => clock.now,
    webhook: { timeout: 200, retries: 2, queueSize: 10, backoff: 1 },
    ...extra,
  });
  t.teardown(() => alerts.close(0));
  const alertCount = async (kind: string) =>
    (await metrics.registry.getSingleMetric('gateway_security_alerts_total')!.get()).values.find(
      (v) => v.labels.kind === kind,
    )?.value ?? 0;
  return { clock, store, audit, metrics, alerts, log, alertCount };
}

t.test('api_violations: 3 within the hour raise one alert with audit, metric and webhook', async (t) => {
  const hook = await webhookServer(t);
  const { alerts, audit, alertCount } = setup(t, { webhookUrl: hook.url, instance: 'gw-1' });
  alerts.record('api_violations', '10.0.0.1');
  alerts.record('api_violations', '10.0.0.2');
  await settle();
  t.equal(audit.lines.length, 0, 'two events: no alert');
  alerts.record('api_violations', '10.0.0.1');
  await waitFor(() => hook.state.bodies.length === 1, 'webhook');
  t.equal(audit.lines.length, 1);
  t.same(audit.lines[0], {
    event: 'security_alert',
    kind: 'api_violations',
    count: 3,
    threshold: 3,
    window: '1h',
    top_ips: [
      { ip: '10.0.0.1', count: 2 },
      { ip: '10.0.0.2', count: 1 },
    ],
  });
  t.equal(await alertCount('api_violations'), 1);
  const body = hook.state.bodies[0]!;
  t.same(body, {
    event: 'security_alert',
    kind: 'api_violations',
    count: 3,
    threshold: 3,
    window: '1h',
    window_seconds: 3600,
    top_ips: [
      { ip: '10.0.0.1', count: 2 },
      { ip: '10.0.0.2', count: 1 },
    ],
    time: '2026-01-01T00:00:00.000Z',
    instance: 'gw-1',
  });
  t.equal(hook.state.headers[0]!['content-type'], 'application/json');
  await waitFor(() => alerts.stats().delivered === 1, 'delivery counted once the answer is read');
  t.same(alerts.stats(), {
    raised: 1,
    delivered: 1,
    failed: 0,
    dropped: 0,
    eventsDropped: 0,
    storeErrors: 0,
    queued: 0,
  });
});

t.test('default thresholds: failed_logins 10, suspicious_requests 5', async (t) => {
  const { alerts, audit } = setup(t);
  for (let i = 0; i < 9; i++) alerts.record('failed_logins', '10.1.1.1');
  for (let i = 0; i < 4; i++) alerts.record('suspicious_requests', '10.1.1.2');
  await settle();
  t.equal(audit.lines.length, 0, 'below thresholds');
  alerts.record('failed_logins', '10.1.1.1');
  alerts.record('suspicious_requests', '10.1.1.2');
  await waitFor(() => audit.lines.length === 2, 'two alerts');
  t.same(audit.lines.map((l) => [l.kind, l.count, l.threshold]).sort(), [
    ['failed_logins', 10, 10],
    ['suspicious_requests', 5, 5],
  ]);
});

t.test('cooldown: the same kind is not raised again within 5 minutes, then is', async (t) => {
  const { alerts, audit, clock, alertCount } = setup(t);
  for (let i = 0; i < 3; i++) alerts.record('api_violations', '10.0.0.9');
  await waitFor(() => audit.lines.length === 1, 'first alert');
  clock.now += 60_000;
  for (let i = 0; i < 5; i++) alerts.record('api_violations', '10.0.0.9');
  // another kind is not affected by this kind's cooldown
  for (let i = 0; i < 5; i++) alerts.record('suspicious_requests', '10.0.0.9');
  await waitFor(() => audit.lines.length === 2, 'other kind');
  await settle();
  t.equal(audit.lines.filter((l) => l.kind === 'api_violations').length, 1, 'still cooling down');
  clock.now += 4 * 60_000 + 1;
  alerts.record('api_violations', '10.0.0.9');
  await waitFor(() => audit.lines.filter((l) => l.kind === 'api_violations').length === 2, 'second alert');
  t.equal(audit.lines.at(-1)!.count, 9, 'count covers the whole hour');
  t.equal(await alertCount('api_violations'), 2);
});

t.test('sliding window: events older than the window do not count', async (t) => {
  const { alerts, audit, clock } = setup(t, { thresholds: { api_violations: { count: 3, window: '10m' } } });
  alerts.record('api_violations', '10.0.0.1');
  alerts.record('api_violations', '10.0.0.1');
  await settle();
  clock.now += 10 * 60_000 + 1;
  alerts.record('api_violations', '10.0.0.1');
  await settle();
  t.equal(audit.lines.length, 0);
  alerts.record('api_violations', '10.0.0.1');
  alerts.record('api_violations', '10.0.0.1');
  await waitFor(() => audit.lines.length === 1, 'alert');
  t.equal(audit.lines[0]!.window, '10m');
  t.same(audit.lines[0]!.top_ips, [{ ip: '10.0.0.1', count: 3 }], 'per-IP counts restart with the window');
});

t.test('two instances on one store count together and share the cooldown', async (t) => {
  const clock = { now: Date.parse('2026-01-01T00:00:00Z') };
  const store = new TestStore(clock);
  const a = setup(t, {}, { store, clock });
  const b = setup(t, {}, { store, clock });
  a.alerts.record('api_violations', '10.0.0.1');
  b.alerts.record('api_violations', '10.0.0.2');
  a.alerts.record('api_violations', '10.0.0.3');
  b.alerts.record('api_violations', '10.0.0.4');
  await waitFor(() => a.audit.lines.length + b.audit.lines.length >= 1, 'alert');
  await settle();
  t.equal(a.audit.lines.length + b.audit.lines.length, 1, 'exactly one alert across both');
  t.equal(store.events.get('alerts:count:api_violations')!.length, 4, 'one shared counter');
});

t.test('webhook answering 500: retried, then counted as failed; requests never wait', async (t) => {
  const hook = await webhookServer(t);
  hook.state.mode = '500';
  const { alerts, audit, log } = setup(t, { webhookUrl: hook.url });
  for (let i = 0; i < 3; i++)
    t.equal(alerts.record('api_violations', '10.0.0.1'), undefined, 'record returns at once');
  await waitFor(() => alerts.stats().failed === 1, 'failed delivery');
  t.equal(hook.state.hits, 3, 'first attempt + 2 retries');
  t.equal(audit.lines.length, 1, 'the alert is in the audit log regardless');
  t.equal(alerts.stats().delivered, 0);
  t.ok(log.warns.includes('alert webhook delivery failed'));
});

t.test('webhook secrets: credentials in the URL go as Basic auth; logs name only the origin', async (t) => {
  const hook = await webhookServer(t);
  hook.state.mode = '500';
  const warned: string[] = [];
  const origin = hook.url.replace(/\/hook$/, '');
  const url = `${origin.replace('http://', 'http://alert%40ops:pa%3Ass@')}/hook/T000/s3cr3t-path?token=s3cr3t-query`;
  const { alerts } = setup(t, {
    webhookUrl: url,
    log: { warn: (o: object, m?: string) => warned.push(`${JSON.stringify(o)} ${m ?? ''}`), error() {} },
  });
  for (let i = 0; i < 3; i++) alerts.record('api_violations', '10.0.0.1');
  await waitFor(() => alerts.stats().failed === 1, 'failed delivery');
  t.equal(hook.state.hits, 3);
  t.same(
    hook.state.headers.map((h) => h.authorization),
    Array(3).fill(`Basic ${Buffer.from('alert@ops:pa:ss').toString('base64')}`),
    'user and password from the URL, percent-decoded, on every attempt',
  );
  t.same(warned, [
    `{"webhook":"${origin}","kind":"api_violations","why":"HTTP 500"} alert webhook delivery failed`,
  ]);
});

t.test('webhook answering a redirect: not followed to the other host, not retried', async (t) => {
  const hook = await webhookServer(t);
  const other = await webhookServer(t);
  hook.state.mode = 'redirect';
  hook.state.location = other.url;
  const { alerts } = setup(t, { webhookUrl: hook.url });
  for (let i = 0; i < 3; i++) alerts.record('api_violations', '10.0.0.1');
  await waitFor(() => alerts.stats().failed === 1, 'failed delivery');
  t.equal(hook.state.hits, 1);
  t.equal(other.state.hits, 0, 'the redirect target never gets the alert');
});

t.test('webhook answering 400: not retried', async (t) => {
  const hook = await webhookServer(t);
  hook.state.mode = '400';
  const { alerts } = setup(t, { webhookUrl: hook.url });
  for (let i = 0; i < 3; i++) alerts.record('api_violations', '10.0.0.1');
  await waitFor(() => alerts.stats().failed === 1, 'failed delivery');
  t.equal(hook.state.hits, 1);
});

t.test('hanging webhook: each attempt times out, alerts keep being raised', async (t) => {
  const hook = await webhookServer(t);
  hook.state.mode = 'hang';
  const { alerts, audit } = setup(t, {
    webhookUrl: hook.url,
    webhook: { timeout: 100, retries: 1, queueSize: 10, backoff: 1 },
  });
  for (let i = 0; i < 3; i++) alerts.record('api_violations', '10.0.0.1');
  await waitFor(() => hook.state.hits >= 1, 'first attempt');
  // while the webhook hangs, another kind is still counted and raised
  for (let i = 0; i < 5; i++) alerts.record('suspicious_requests', '10.0.0.2');
  await waitFor(() => audit.lines.length === 2, 'second alert written while the hook hangs');
  await waitFor(() => alerts.stats().failed === 2, 'both deliveries failed');
  t.equal(hook.state.hits, 4, 'two alerts × (1 attempt + 1 retry)');
});

t.test('refused connections: counted as failed after retries', async (t) => {
  const srv = http.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  const { alerts, audit } = setup(t, { webhookUrl: `http://127.0.0.1:${port}/hook` });
  for (let i = 0; i < 3; i++) alerts.record('api_violations', '10.0.0.1');
  await waitFor(() => alerts.stats().failed === 1, 'failed');
  t.equal(audit.lines.length, 1);
});

t.test('bounded queue: the oldest alerts are dropped and counted when the webhook is stuck', async (t) => {
  const hook = await webhookServer(t);
  hook.state.mode = 'hang';
  const { alerts, audit } = setup(t, {
    webhookUrl: hook.url,
    cooldown: 0,
    thresholds: { api_violations: { count: 1, window: '1h' } },
    webhook: { timeout: 5000, retries: 0, queueSize: 2, backoff: 1 },
  });
  for (let i = 0; i < 7; i++) alerts.record('api_violations', `10.0.0.${i}`);
  await waitFor(() => audit.lines.length === 7, 'seven alerts');
  await waitFor(() => hook.state.hits === 1, 'one in flight');
  const s = alerts.stats();
  t.equal(s.raised, 7);
  t.equal(s.queued, 2, 'queue holds at most queueSize');
  t.equal(s.dropped, 4, '7 raised - 1 in flight - 2 queued');
  await alerts.close(0);
  t.equal(alerts.stats().dropped, 6, 'close abandons what is left after its deadline');
});

t.test('store failures never throw and are counted', async (t) => {
  const clock = { now: 0 };
  const store = new TestStore(clock);
  store.increment = async () => {
    throw new Error('store down');
  };
  const { alerts, audit, log } = setup(t, {}, { store, clock });
  t.doesNotThrow(() => alerts.record('failed_logins', '10.0.0.1'));
  await waitFor(() => alerts.stats().storeErrors === 1, 'store error counted');
  t.equal(audit.lines.length, 0);
  t.ok(log.warns.includes('alert counter store operation failed'));
});

t.test('a store that never answers: in-flight work is bounded, extra events dropped', async (t) => {
  const clock = { now: 0 };
  const store = new TestStore(clock);
  const hung: (() => void)[] = [];
  store.increment = () =>
    new Promise<number>((resolve) => {
      hung.push(() => resolve(1));
    });
  const { alerts } = setup(t, { maxPending: 3 }, { store, clock });
  for (let i = 0; i < 10; i++) alerts.record('failed_logins', '10.0.0.1');
  t.equal(alerts.stats().eventsDropped, 7);
  t.equal(hung.length, 3);
  for (const h of hung) h();
  await alerts.close(0);
});

t.test('per-IP tracking is bounded', async (t) => {
  const { alerts, audit } = setup(t, {
    maxTrackedIps: 3,
    thresholds: { api_violations: { count: 20, window: '1h' } },
  });
  for (let i = 0; i < 19; i++) alerts.record('api_violations', `10.0.0.${i}`);
  alerts.record('api_violations', '10.0.0.18');
  await waitFor(() => audit.lines.length === 1, 'alert');
  t.same(audit.lines[0]!.top_ips, [
    { ip: '10.0.0.18', count: 2 },
    { ip: '10.0.0.16', count: 1 },
    { ip: '10.0.0.17', count: 1 },
  ]);
});

t.test('close() waits for queued deliveries', async (t) => {
  const hook = await webhookServer(t);
  const { alerts } = setup(t, {
    webhookUrl: hook.url,
    cooldown: 0,
    thresholds: { failed_logins: { count: 1, window: '1h' } },
  });
  for (let i = 0; i < 3; i++) alerts.record('failed_logins', '10.0.0.1');
  await alerts.close(5000);
  t.equal(hook.state.bodies.length, 3);
  alerts.record('failed_logins', '10.0.0.1');
  t.equal(alerts.stats().raised, 3, 'closed: record is a no-op');
});

t.test('invalid options are refused at creation', async (t) => {
  const clock = { now: 0 };
  const base = {
    store: new TestStore(clock),
    audit: new TestAudit(),
    metrics: new Metrics({ defaultMetrics: false }),
    log: quietLog,
    now: () => 0,
  };
  t.throws(() => createAlerts({ ...base, webhookUrl: 'ftp://x/' }), /http\(s\)/);
  t.throws(
    () => createAlerts({ ...base, thresholds: { failed_logins: { count: 0, window: '1h' } } }),
    /positive integer/,
  );
  t.throws(() => createAlerts({ ...base, cooldown: 'soon' }), /invalid duration/);
  t.throws(
    () => createAlerts({ ...base, thresholds: { api_violations: { count: 1001, window: '1h' } } }),
    /at most 1000/,
  );
});
