import { loadConfigFile, ConfigLoadError, formatProblem } from '../config/load.js';
import { compileGeneration, closeGeneration } from '../config/compile.js';
import { Metrics } from '../observability/metrics.js';
import { createAuditLog } from '../observability/audit.js';
import { MemoryStore } from '../store/memory.js';
import { silentLogger } from '../observability/ops-log.js';
import type { Services } from '../policy.js';

export type ValidateResult =
  | { readonly ok: true; readonly summary: string; readonly workers: number }
  | { readonly ok: false; readonly errors: readonly string[] };

/** Services for compiling a config without running it (validate, replay). */
export function offlineServices(env: Readonly<Record<string, string | undefined>>): Services {
  const metrics = new Metrics({ defaultMetrics: false });
  return {
    store: new MemoryStore({ maxKeys: 100_000 }),
    metrics,
    audit: createAuditLog({ enabled: false, file: '', accessSampleRate: 1, metrics }),
    log: silentLogger,
    now: Date.now,
    persistent: new Map(),
    env,
  };
}

/** `receipt-gateway validate`: like `nginx -t`, every error with file:line:column and key path. */
export async function validateConfigFile(
  file: string,
  env: Readonly<Record<string, string | undefined>>,
): Promise<ValidateResult> {
  const services = offlineServices(env);
  try {
    const loaded = await loadConfigFile(file, env);
    const gen = await compileGeneration(loaded, services);
    const policyCount = new Set(gen.allPolicies.map((p) => p.name)).size;
    const monitor = [...new Set(gen.allPolicies.filter((p) => p.mode === 'monitor').map((p) => p.name))];
    const summary =
      `${file}: ok: ${gen.routes.length} routes, ${policyCount} policies` +
      `${monitor.length > 0 ? ` (monitor: ${monitor.join(', ')})` : ''}, upstream ${gen.upstream.origin}${gen.upstream.basePath}, ` +
      `store ${gen.config.store.url.startsWith('memory:') ? 'memory' : 'redis'}, workers ${gen.config.workers}`;
    await closeGeneration(gen);
    return { ok: true, summary, workers: gen.config.workers };
  } catch (err) {
    if (err instanceof ConfigLoadError) return { ok: false, errors: err.problems.map(formatProblem) };
    return { ok: false, errors: [`${file}: ${(err as Error).message}`] };
  } finally {
    await services.store.close();
  }
}
