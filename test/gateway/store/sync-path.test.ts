import t from 'tap';
import { Metrics } from '../../../gateway/observability/metrics.js';
import { createStore } from '../../../gateway/store/index.js';

/**
 * The memory store answers consume() and blockedFor() synchronously too (the hot path of
 * rate_limit and ip_ban uses them): same answers as the promise forms, same error accounting.
 */

const silent = { info() {}, warn() {}, error() {} };

t.test('memory: the synchronous forms share the state of the promise forms', async (t) => {
  let now = 1_750_000_000_000;
  const s = createStore({
    url: 'memory://',
    metrics: new Metrics({ defaultMetrics: false }),
    log: silent,
    now: () => now,
  });
  t.teardown(() => s.close());
  t.type(s.consumeSync, 'function');
  t.type(s.blockedForSync, 'function');
  const spec = [{ key: 'k', capacity: 2, windowMs: 1000 }];
  t.equal(s.consumeSync!(spec).allowed, true);
  t.equal((await s.consume(spec)).allowed, true);
  const refused = s.consumeSync!(spec);
  t.equal(refused.allowed, false);
  t.same(refused, await s.consume(spec));
  t.equal(s.blockedForSync!('ban:a'), 0);
  await s.block('ban:a', 5000);
  now += 1000;
  t.equal(s.blockedForSync!('ban:a'), 4000);
  t.equal(await s.blockedFor('ban:a'), 4000);
});

t.test('memory: a failing synchronous call is counted and rethrown', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false });
  const s = createStore({ url: 'memory://', metrics, log: silent });
  t.teardown(() => s.close());
  t.throws(() => s.consumeSync!([{ key: 'bad', capacity: 0, windowMs: 1000 }]));
  const errors = (await metrics.registry.getSingleMetric('gateway_store_errors_total')!.get()).values;
  t.same(
    errors.map((v) => [v.labels.store, v.value]),
    [['memory', 1]],
  );
});
