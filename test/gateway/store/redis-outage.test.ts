import t from 'tap';
import { Metrics } from '../../../gateway/observability/metrics.js';
import type { AuditLog } from '../../../gateway/observability/audit.js';
import { createStore } from '../../../gateway/store/index.js';
import { startRedis } from '../../helpers/redis.js';

/** Settles within `ms` or fails the test: a dead store must never hang a caller. */
async function settles<T>(
  p: Promise<T>,
  ms = 5000,
): Promise<{ ok: true; value: T } | { ok: false; error: Error }> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`did not settle within ${ms} ms`)), ms);
  });
  try {
    const value = await Promise.race([p, hang]);
    return { ok: true, value };
  } catch (error) {
    if ((error as Error).message.startsWith('did not settle')) throw error;
    return { ok: false, error: error as Error };
  } finally {
    clearTimeout(timer);
  }
}

async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

t.test(
  'redis killed mid-traffic: operations fail fast, errors are counted and reported once, recovery is automatic',
  async (t) => {
    const redis = await startRedis();
    t.teardown(() => redis.stop());
    const metrics = new Metrics({ defaultMetrics: false });
    const warnings: Record<string, unknown>[] = [];
    const infos: string[] = [];
    const infoFields: Record<string, unknown>[] = [];
    const audits: { event: string; fields: Record<string, unknown> }[] = [];
    const audit = {
      enabled: true,
      request() {},
      system(event: string, fields: Record<string, unknown>) {
        audits.push({ event, fields });
      },
      reopen() {},
      flush: async () => {},
      close: async () => {},
    } as unknown as AuditLog;
    const store = createStore({
      url: redis.url,
      prefix: 'outage:',
      timeoutMs: 200,
      metrics,
      audit,
      errorLogIntervalMs: 60_000,
      log: {
        info: (o, m) => {
          infos.push(m ?? '');
          infoFields.push(o as Record<string, unknown>);
        },
        warn: (o) => void warnings.push(o),
        error: (o) => void warnings.push(o),
      },
    });
    t.teardown(() => store.close());
    await store.ping();
    t.equal(store.healthy(), true);
    const spec = [{ key: 'ip:1.1.1.1', capacity: 100, windowMs: 60_000 }];
    for (let i = 0; i < 5; i++) t.equal((await store.consume(spec)).allowed, true);
    t.equal((await store.consume(spec)).buckets[0]!.remaining, 94);

    await redis.kill();
    await until(() => !store.healthy(), 'the store to notice');
    const errorsBefore =
      (await metrics.storeErrors.get()).values.find((v) => v.labels.store === 'redis')?.value ?? 0;
    for (let i = 0; i < 10; i++) {
      const r = await settles(store.consume(spec));
      t.equal(r.ok, false, `operation ${i} rejects while redis is down`);
    }
    const r2 = await settles(store.blockedFor('x'));
    t.equal(r2.ok, false);
    const errorsAfter =
      (await metrics.storeErrors.get()).values.find((v) => v.labels.store === 'redis')?.value ?? 0;
    t.equal(
      errorsAfter - errorsBefore,
      11,
      'every failed operation is counted in gateway_store_errors_total{store="redis"}',
    );
    t.equal(audits.filter((a) => a.event === 'store_unavailable').length, 1, 'reported once per interval');
    t.equal(audits[0]!.fields.store, 'redis');
    t.equal(warnings.length, 1);

    await redis.restart();
    await until(async () => {
      try {
        await store.ping();
        return true;
      } catch {
        return false;
      }
    }, 'reconnection');
    t.equal(store.healthy(), true, 'healthy again without intervention');
    t.ok(infos.includes('state store available again'), 'recovery is logged');
    const after = await store.consume(spec);
    t.equal(after.allowed, true);
    t.equal(after.buckets[0]!.remaining, 99, 'the restarted (empty) redis starts a fresh bucket');
    t.equal(await store.increment('c', 1000), 1, 'scripts are reloaded after the restart (NOSCRIPT handled)');
    const recovery = infoFields[infos.indexOf('state store available again')]!;
    t.ok(
      (recovery.suppressed as number) >= 10,
      `the recovery line tells the errors of the outage not reported yet (${String(recovery.suppressed)})`,
    );

    // a second outage: its first report counts its own errors, not the first outage's
    await redis.kill();
    await until(() => !store.healthy(), 'the store to notice the second outage');
    t.equal((await settles(store.consume(spec))).ok, false);
    await until(() => audits.length === 2, 'the second outage to be reported');
    t.equal(audits[1]!.event, 'store_unavailable');
    t.equal(audits[1]!.fields.suppressed, 0, 'nothing of this outage was suppressed before its first report');
    await redis.restart();
  },
);

t.test('redis unreachable from the start: operations fail within the timeout, nothing hangs', async (t) => {
  const redis = await startRedis();
  await redis.stop();
  const metrics = new Metrics({ defaultMetrics: false });
  const store = createStore({
    url: redis.url,
    timeoutMs: 150,
    metrics,
    log: { info() {}, warn() {}, error() {} },
  });
  t.teardown(() => store.close());
  const r = await settles(store.consume([{ key: 'k', capacity: 1, windowMs: 1000 }]));
  t.equal(r.ok, false);
  t.equal(store.healthy(), false);
  const p = await settles(store.ping());
  t.equal(p.ok, false);
});

t.test('unsupported store URL is refused with the password hidden', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false });
  t.throws(
    () =>
      createStore({
        url: 'mongodb://user:hunter2@host/db',
        metrics,
        log: { info() {}, warn() {}, error() {} },
      }),
    {
      message: 'unsupported store URL "mongodb://***@host/db" (use memory:// or redis://host:port/db)',
    },
  );
});
