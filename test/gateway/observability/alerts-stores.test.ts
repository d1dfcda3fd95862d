/**
 * Alerts on the real stores: the memory store (fake clock: windows and cooldown) and a
 * real redis-server shared by two gateway instances (they count into one window and raise
 * one alert between them). Needs redis-server (.ci/run installs it); fails without it.
 */
import t from 'tap';
import { createAlerts } from '../../../gateway/observability/alerts.js';
import { Metrics } from '../../../gateway/observability/metrics.js';
import { MemoryStore } from '../../../gateway/store/memory.js';
import { RedisStore } from '../../../gateway/store/redis.js';
import type { AuditLog, AuditFields } from '../../../gateway/observability/audit.js';
import type { Store } from '../../../gateway/store/types.js';
import { startRedis } from '../../helpers/redis.js';

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
const log = { warn() {}, error() {} };

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}
const settle = () => new Promise((r) => setTimeout(r, 50));

function engine(store: Store, now: () => number) {
  const audit = new TestAudit();
  const alerts = createAlerts({ store, audit, metrics: new Metrics({ defaultMetrics: false }), log, now });
  return { audit, alerts };
}

t.test('memory store: window, threshold and cooldown on a fake clock', async (t) => {
  let now = Date.parse('2026-01-01T00:00:00Z');
  const store = new MemoryStore({ now: () => now });
  const { audit, alerts } = engine(store, () => now);
  t.teardown(() => alerts.close(0));
  for (let i = 0; i < 4; i++) alerts.record('suspicious_requests', '198.51.100.1');
  await settle();
  t.equal(audit.lines.length, 0, '4 < 5');
  alerts.record('suspicious_requests', '198.51.100.2');
  await waitFor(() => audit.lines.length === 1, 'alert at 5');
  t.match(audit.lines[0], { kind: 'suspicious_requests', count: 5, threshold: 5, window: '1h' });
  now += 4 * 60_000;
  alerts.record('suspicious_requests', '198.51.100.1');
  await settle();
  t.equal(audit.lines.length, 1, 'cooldown (5m) holds');
  now += 60_000 + 1;
  alerts.record('suspicious_requests', '198.51.100.1');
  await waitFor(() => audit.lines.length === 2, 'raised again after the cooldown');
  t.equal(audit.lines[1]!.count, 7);
  now += 61 * 60_000;
  alerts.record('suspicious_requests', '198.51.100.1');
  await settle();
  t.equal(audit.lines.length, 2, 'the hour slid past: count restarts at 1');
});

t.test('redis: two instances count together and raise one alert', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const stores = [
    new RedisStore({ url: redis.url, prefix: 'rgtest:' }),
    new RedisStore({ url: redis.url, prefix: 'rgtest:' }),
  ];
  t.teardown(() => Promise.all(stores.map((s) => s.close())));
  await Promise.all(stores.map((s) => s.ping()));
  const a = engine(stores[0]!, Date.now);
  const b = engine(stores[1]!, Date.now);
  t.teardown(() => Promise.all([a.alerts.close(0), b.alerts.close(0)]));
  // api_violations: 3 per hour; instance A sees 2, instance B sees 2
  a.alerts.record('api_violations', '203.0.113.1');
  b.alerts.record('api_violations', '203.0.113.2');
  a.alerts.record('api_violations', '203.0.113.1');
  b.alerts.record('api_violations', '203.0.113.3');
  await waitFor(() => a.audit.lines.length + b.audit.lines.length >= 1, 'an alert');
  await settle();
  t.equal(a.audit.lines.length + b.audit.lines.length, 1, 'exactly one alert for the fleet');
  const line = (a.audit.lines[0] ?? b.audit.lines[0])!;
  t.equal(line.kind, 'api_violations');
  t.ok((line.count as number) >= 3, 'count is the shared window count');
  t.ok((await stores[0]!.blockedFor('alerts:cooldown:api_violations')) > 0, 'cooldown shared in redis');
  // more events on either instance during the cooldown: no new alert
  for (let i = 0; i < 3; i++) b.alerts.record('api_violations', '203.0.113.9');
  await settle();
  t.equal(a.audit.lines.length + b.audit.lines.length, 1);
  t.equal(a.alerts.stats().storeErrors + b.alerts.stats().storeErrors, 0);
});
