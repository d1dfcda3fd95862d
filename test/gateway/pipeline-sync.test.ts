import t from 'tap';
import { POLICY_FAILURE_LOG_INTERVAL_MS, runRequestPhase } from '../../gateway/pipeline.js';
import type { CompiledRoute } from '../../gateway/config/compile.js';
import type { Policy, Verdict } from '../../gateway/policy.js';
import { makeContext, makeServices } from '../helpers/context.js';

/**
 * Hooks that answer synchronously run without promises; from the first hook that returns
 * one, the stage goes on asynchronously. Either way: same order, same verdicts, same
 * trace, throws and rejections both count as 'error'.
 */

function route(onRequest: Policy[], onIdentified: Policy[] = []): CompiledRoute {
  return {
    name: 'r',
    index: 0,
    adminApi: false,
    stripPrefix: undefined,
    policies: [...onRequest, ...onIdentified],
    onRequest,
    onIdentified,
    readBody: [],
    onBody: [],
    onResponse: [],
    onDone: [],
    needsBody: false,
    bodyLimit: Infinity,
    websocket: false,
  };
}

type Kind = 'sync' | 'async' | 'throw' | 'reject' | 'deny' | 'deny-async';

function policy(name: string, kind: Kind, calls: string[], failure: 'open' | 'closed' = 'open'): Policy {
  const hook = (): Verdict | Promise<Verdict> => {
    calls.push(name);
    switch (kind) {
      case 'sync':
        return undefined;
      case 'async':
        return Promise.resolve(undefined);
      case 'throw':
        throw new Error(`${name} threw`);
      case 'reject':
        return Promise.reject(new Error(`${name} rejected`));
      case 'deny':
        return { code: 'forbidden' };
      case 'deny-async':
        return Promise.resolve({ code: 'forbidden' });
    }
  };
  return { name, mode: 'enforce', failure, onRequest: hook, onIdentified: hook };
}

const ctx = () => makeContext({});

t.test('all synchronous: every hook runs in order, trace complete', async (t) => {
  const calls: string[] = [];
  const c = ctx();
  const r = await runRequestPhase(
    route([policy('a', 'sync', calls), policy('b', 'sync', calls)], [policy('c', 'sync', calls)]),
    c,
    makeServices(),
  );
  t.same(r, {});
  t.same(calls, ['a', 'b', 'c']);
  t.same(
    c.trace.map((s) => [s.policy, s.verdict]),
    [
      ['a', 'pass'],
      ['b', 'pass'],
      ['c', 'pass'],
    ],
  );
});

t.test('a promise in the middle: the rest runs after it, in order', async (t) => {
  const calls: string[] = [];
  const c = ctx();
  const r = await runRequestPhase(
    route(
      [policy('a', 'sync', calls), policy('b', 'async', calls), policy('c', 'sync', calls)],
      [policy('d', 'async', calls), policy('e', 'sync', calls)],
    ),
    c,
    makeServices(),
  );
  t.same(r, {});
  t.same(calls, ['a', 'b', 'c', 'd', 'e']);
  t.same(
    c.trace.map((s) => s.policy),
    ['a', 'b', 'c', 'd', 'e'],
  );
});

t.test('denials stop the phase, synchronous or not', async (t) => {
  for (const kind of ['deny', 'deny-async'] as const) {
    for (const before of ['sync', 'async'] as const) {
      const calls: string[] = [];
      const c = ctx();
      const r = await runRequestPhase(
        route([policy('a', before, calls), policy('b', kind, calls), policy('c', 'sync', calls)]),
        c,
        makeServices(),
      );
      t.equal(r.deny?.code, 'forbidden', `${before} then ${kind}`);
      t.equal(r.by, 'b');
      t.same(calls, ['a', 'b']);
      t.same(
        c.trace.map((s) => [s.policy, s.verdict]),
        [
          ['a', 'pass'],
          ['b', 'deny'],
        ],
      );
    }
  }
});

t.test('a throw and a rejection are both errors: fail open goes on, fail closed refuses', async (t) => {
  for (const kind of ['throw', 'reject'] as const) {
    for (const before of ['sync', 'async'] as const) {
      const calls: string[] = [];
      const services = makeServices();
      const c = ctx();
      const r = await runRequestPhase(
        route([policy('a', before, calls), policy('b', kind, calls), policy('c', 'sync', calls)]),
        c,
        services,
      );
      t.same(r, {}, `open: ${before} then ${kind}`);
      t.same(calls, ['a', 'b', 'c']);
      t.equal(c.trace[1]!.verdict, 'error');
      t.equal(services.logged.filter((l) => l.level === 'error').length, 1);

      const calls2: string[] = [];
      const c2 = ctx();
      const closed = await runRequestPhase(
        route([
          policy('a', before, calls2),
          policy('b', kind, calls2, 'closed'),
          policy('c', 'sync', calls2),
        ]),
        c2,
        makeServices(),
      );
      t.equal(closed.deny?.code, 'service_unavailable', `closed: ${before} then ${kind}`);
      t.same(calls2, ['a', 'b']);
    }
  }
});

t.test('`only` skips the other policies in both paths', async (t) => {
  const calls: string[] = [];
  await runRequestPhase(
    route([policy('a', 'sync', calls), policy('b', 'async', calls), policy('c', 'sync', calls)]),
    ctx(),
    makeServices(),
    { only: new Set(['b', 'c']) },
  );
  t.same(calls, ['b', 'c']);
});

t.test('a failing hook is counted every time and logged at most once per interval', async (t) => {
  const services = makeServices();
  const failing = route([policy('b', 'throw', [])]);
  for (let i = 0; i < 5; i++) await runRequestPhase(failing, ctx(), services);
  const errors = () => services.logged.filter((l) => l.level === 'error' && l.msg === 'policy failed');
  t.equal(errors().length, 1, 'five failures in a row: one line');
  const count = async () =>
    (await services.metrics.registry.getSingleMetric('gateway_policy_errors_total')!.get()).values.find(
      (v) => v.labels.policy === 'b',
    )?.value;
  t.equal(await count(), 5, 'every failure counted');
  services.clock.advance(POLICY_FAILURE_LOG_INTERVAL_MS);
  await runRequestPhase(failing, ctx(), services);
  t.equal(errors().length, 2, 'logged again after the interval');
  t.equal(errors()[1]!.obj.failures_not_logged, 4, 'saying how many failures it stands for');
  t.equal(errors()[1]!.obj.hook, 'onRequest');
  // another gateway (its own services) logs its own first failure
  const other = makeServices();
  await runRequestPhase(failing, ctx(), other);
  t.equal(other.logged.filter((l) => l.msg === 'policy failed').length, 1);
});
