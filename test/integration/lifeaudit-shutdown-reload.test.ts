import t from 'tap';
import fs from 'node:fs';
import YAML from 'yaml';
import { startHarness } from '../helpers/harness.js';
import type { OpsLogger } from '../../gateway/policy.js';
import { eventually } from '../helpers/wait.js';

/**
 * A reload asked for while the gateway shuts down (SIGHUP or POST /api/reload during the
 * drain) is refused: nothing is loaded, compiled or swapped in (its generation's pools and
 * policies would outlive the close, and its config_reload line would go to a closing log),
 * and the ops log says so.
 */
t.test('a reload during the shutdown drain is refused and builds nothing', async (t) => {
  const warnings: string[] = [];
  const log: OpsLogger = {
    info() {},
    warn: (o, m) => warnings.push(`${m} ${JSON.stringify(o)}`),
    error: (o, m) => warnings.push(`error: ${m} ${JSON.stringify(o)}`),
  };
  const h = await startHarness({
    config: 'listen: { shutdown_timeout: 30s }\npolicies: { security_headers: { extra: { X-Gen: "1" } } }',
    log,
  });
  const drain: { closing?: Promise<void> } = {};
  t.teardown(async () => {
    await drain.closing;
    await h.close();
  });
  const token = await h.login();
  const reloadsBefore = h.gateway.reloads.length;
  const generation = h.gateway.generation.id;
  const slow = fetch(`${h.url}/api/slow?ms=1200`, { headers: { authorization: `Bearer ${token}` } });
  await eventually('the slow request reached the mock', async () =>
    (await h.mockRequests()).some((r) => r.path.startsWith('/api/slow')),
  );
  const closing = h.gateway.close();
  drain.closing = closing;
  // the file now asks for something else: a reload would have swapped it in
  const cfg = YAML.parse(fs.readFileSync(h.configFile, 'utf8')) as {
    policies: { security_headers: { extra: Record<string, string> } };
  };
  cfg.policies.security_headers.extra['X-Gen'] = '2';
  fs.writeFileSync(h.configFile, YAML.stringify(cfg));

  const rec = await h.gateway.reload('SIGHUP');
  t.equal(rec.result, 'error', 'the SIGHUP reload is refused');
  t.same(rec.errors, ['the gateway is shutting down; the configuration was not reloaded']);
  t.equal(rec.trigger, 'SIGHUP');
  // (the admin listener serves until the main one has drained)
  const admin = await fetch(`${h.adminUrl}/api/reload`, { method: 'POST' });
  t.equal(admin.status, 503, 'POST /api/reload during the drain: 503, not a config error');
  t.match(await admin.json(), {
    result: 'error',
    errors: ['the gateway is shutting down; the configuration was not reloaded'],
    trigger: 'admin',
  });
  t.equal(h.gateway.generation.id, generation, 'no new generation was swapped in');
  t.equal(h.gateway.reloads.length, reloadsBefore, 'nothing added to the reload history');

  const r = await slow;
  t.equal(r.status, 200, 'the request in flight finished');
  t.equal(r.headers.get('x-gen'), '1', 'under the configuration it started with');
  await r.arrayBuffer();
  await closing;
  t.same(
    warnings,
    [
      'reload refused: the gateway is shutting down {"trigger":"SIGHUP"}',
      'reload refused: the gateway is shutting down {"trigger":"admin"}',
    ],
    'the ops log says each reload was refused, and nothing else went wrong',
  );
  const audit = await h.audit();
  t.same(
    audit.filter((l) => l.event === 'config_reload'),
    [],
    'no config_reload audit line: nothing was reloaded',
  );
  const metric = await h.gateway.metrics.registry.getSingleMetric('gateway_config_reloads_total')?.get();
  t.same(
    metric?.values.filter((v) => v.value > 0),
    [],
    'gateway_config_reloads_total counts no reload',
  );
});
