/**
 * The admin routes of the observability layer, ready to plug into the admin listener
 * (`observers.adminRoute`):
 *
 *   GET /                          the dashboard page (dashboard.html, strict CSP)
 *   GET /api/dashboard             the dashboard's JSON ({@link dashboardSnapshot}); its figures
 *                                  (metrics, recent denials, series) asked of `peerDashboard`
 *                                  when set (503 JSON when that fails)
 *   GET /api/decisions/{id}        why a recent request was allowed or refused (404 JSON when
 *                                  unknown or malformed; asked of `peerDecision` when not
 *                                  here, 503 JSON when that fails)
 *
 * ```ts
 * const routes = createDashboardRoutes({ metrics, store, decisions, score: () => report,
 *   config: () => configSummary(gw.generation), reloads: () => gw.reloads });
 * observers.adminRoute = routes.handle;   // and routes.close() on shutdown
 * ```
 */
import type http from 'node:http';
import type { Store } from '../store/types.js';
import type { ScoreResult } from '../observability/score.js';
import { isWellFormedRequestId, type DecisionLog } from '../observability/decisions.js';
import type { Generation } from '../config/compile.js';
import type { RestartBound } from '../server.js';
import { restartBoundOf } from '../config/restart-bound.js';
import { BAN_PREFIX } from '../../policies/ip-ban/index.js';
import { LOCK_PREFIX } from '../../policies/login-lockout/index.js';
import {
  DASHBOARD_API_PATH,
  dashboardSnapshot,
  scrubConfig,
  KpiSampler,
  type BlockInfo,
  type DashboardPart,
  type MetricSource,
  type ReloadRecord,
} from './dashboard-api.js';
import { loadDashboardPage, type DashboardPage } from './dashboard-page.js';

export interface DashboardRoutesOptions {
  /** the process's metrics (`gw.metrics`); only its registry is read */
  metrics: { registry: MetricSource };
  /** the state store, for active bans and lockouts */
  store: Pick<Store, 'listBlocks'>;
  decisions: DecisionLog;
  /**
   * asked for a decision this process does not have (cluster workers: the other workers);
   * resolves undefined when none has it, rejects when they cannot all be asked (a 503)
   */
  peerDecision?: (requestId: string) => Promise<unknown>;
  /**
   * asked for the snapshot's figures instead of this process's {@link DashboardRoutes.part}
   * (cluster workers: every worker's, merged); rejects when not every worker answered (a 503)
   */
  peerDashboard?: () => Promise<DashboardPart>;
  /** the current security report; undefined when monitoring is off */
  score: () => ScoreResult | undefined;
  /** a summary of the running config (see {@link configSummary}); scrubbed again before it is served */
  config: () => Record<string, unknown>;
  /** reload history (`gw.reloads`) */
  reloads: () => readonly ReloadRecord[];
  /** store key prefix of IP bans; default the ip_ban policy's */
  banPrefix?: string;
  /** store key prefix of lockouts; default the login_lockout policy's */
  lockoutPrefix?: string;
  /** most bans / lockouts listed; default 100 */
  maxBlocks?: number;
  now?: () => number;
  /** a sampler to use instead of creating (and starting) one */
  sampler?: KpiSampler;
  /** the page to serve instead of dashboard.html (tests) */
  page?: DashboardPage;
}

export interface DashboardRoutes {
  /** Serves the routes above; false when the path is not one of them. */
  handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<boolean>;
  readonly sampler: KpiSampler;
  /** This process's figures: metric values, the 50 latest denials, the KPI series. */
  part(): Promise<DashboardPart>;
  /** Stops the sampler's timer. */
  close(): void;
}

function sendJson(res: http.ServerResponse, status: number, value: unknown, head: boolean): void {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
    'x-content-type-options': 'nosniff',
  });
  res.end(head ? undefined : body);
}

/** How a ban or lockout key reads on the dashboard: `ip 203.0.113.5`, `user alice`. */
export function blockSubject(key: string, prefix: string): string {
  const rest = key.startsWith(prefix) ? key.slice(prefix.length) : key;
  const m = /^(ip|u|user):(.*)$/.exec(rest);
  if (!m) return rest;
  return `${m[1] === 'ip' ? 'ip' : 'user'} ${m[2]}`;
}

/** Create the dashboard and decision routes (the page is read once, here). */
export function createDashboardRoutes(opts: DashboardRoutesOptions): DashboardRoutes {
  const page = opts.page ?? loadDashboardPage();
  const now = opts.now ?? Date.now;
  const banPrefix = opts.banPrefix ?? BAN_PREFIX;
  const lockPrefix = opts.lockoutPrefix ?? LOCK_PREFIX;
  const maxBlocks = opts.maxBlocks ?? 100;
  const sampler = opts.sampler ?? new KpiSampler({ registry: opts.metrics.registry, now });
  if (!opts.sampler) sampler.start();

  const blocks = async (prefix: string): Promise<BlockInfo[]> => {
    try {
      const list = await opts.store.listBlocks(prefix, maxBlocks);
      return list.map((b) => ({ ...b, subject: blockSubject(b.key, prefix) }));
    } catch {
      return []; // store down: the dashboard still renders; /readyz says why
    }
  };

  const EMPTY_SCORE: ScoreResult = {
    score: 0,
    checks: [],
    recommendations: ['Security monitoring is disabled (monitoring.enabled).'],
  };

  const part = async (): Promise<DashboardPart> => ({
    metrics: await opts.metrics.registry.getMetricsAsJSON(),
    denials: opts.decisions.recent({ deniedOnly: true, limit: 50 }),
    series: sampler.series(),
  });

  return {
    sampler,
    part,
    close: () => sampler.stop(),
    async handle(req, res, url) {
      const head = req.method === 'HEAD';
      if (req.method !== 'GET' && !head) return false;
      if (url.pathname === '/' || url.pathname === '/index.html') {
        res.writeHead(200, { ...page.headers, 'content-length': String(page.body.length) });
        res.end(head ? undefined : page.body);
        return true;
      }
      if (url.pathname === DASHBOARD_API_PATH) {
        let figures: DashboardPart;
        let bans: BlockInfo[];
        let lockouts: BlockInfo[];
        try {
          [figures, bans, lockouts] = await Promise.all([
            opts.peerDashboard?.() ?? part(),
            blocks(banPrefix),
            blocks(lockPrefix),
          ]);
        } catch (err) {
          if (opts.peerDashboard === undefined) throw err;
          sendJson(
            res,
            503,
            {
              error: 'unavailable',
              message: `Not every worker could be asked for the dashboard figures: ${(err as Error).message}.`,
            },
            head,
          );
          return true;
        }
        const snapshot = dashboardSnapshot({
          score: opts.score() ?? EMPTY_SCORE,
          metrics: figures.metrics,
          denials: figures.denials,
          bans,
          lockouts,
          config: opts.config(),
          reloads: opts.reloads(),
          series: figures.series,
          now: now(),
        });
        sendJson(res, 200, snapshot, head);
        return true;
      }
      const m = /^\/api\/decisions\/([^/]+)$/.exec(url.pathname);
      if (m) {
        let id = '';
        try {
          id = decodeURIComponent(m[1]!);
        } catch {
          // malformed percent-encoding: treated as a malformed id below
        }
        const wellFormed = isWellFormedRequestId(id);
        let entry: unknown = wellFormed ? opts.decisions.get(id) : undefined;
        if (entry === undefined && wellFormed && opts.peerDecision !== undefined) {
          try {
            entry = await opts.peerDecision(id);
          } catch (err) {
            sendJson(
              res,
              503,
              {
                error: 'unavailable',
                message: `Not every worker could be asked for this decision: ${(err as Error).message}.`,
              },
              head,
            );
            return true;
          }
        }
        if (entry !== undefined) sendJson(res, 200, entry, head);
        else
          sendJson(
            res,
            404,
            {
              error: 'not_found',
              message: wellFormed
                ? 'No recent decision has this request id (it is older than the decision log keeps, or was handled by another instance).'
                : 'Malformed request id.',
            },
            head,
          );
        return true;
      }
      return false;
    },
  };
}

/**
 * What the dashboard shows of the running configuration: listeners, upstream, store
 * kind, routes, policies and their modes, audit and monitoring settings. No secret:
 * URLs lose their credentials, the JWT secret and API keys are not included at all.
 */
export function configSummary(
  gen: Generation,
  running: RestartBound = restartBoundOf(gen),
): Record<string, unknown> {
  const c = gen.config;
  const storeUrl = (() => {
    try {
      const u = new URL(running.storeUrl);
      return u.protocol === 'memory:' ? 'memory://' : `${u.protocol}//${u.host}${u.pathname}`;
    } catch {
      return running.storeUrl.replace(/\/\/[^@/]*@/, '//');
    }
  })();
  const webhook = (() => {
    if (!c.monitoring.webhook_url) return 'off';
    try {
      return new URL(c.monitoring.webhook_url).host;
    } catch {
      return 'set';
    }
  })();
  const policies = [...new Set(Object.keys(c.policies))].sort();
  const monitor = [...new Set(gen.allPolicies.filter((p) => p.mode === 'monitor').map((p) => p.name))].sort();
  const summary: Record<string, unknown> = {
    file: gen.file,
    generation: gen.id,
    loaded_at: new Date(gen.loadedAt).toISOString(),
    listen: `${running.listen.host}:${running.listen.port}`,
    admin: `${running.admin.host}:${running.admin.port}`,
    upstream: `${gen.upstream.origin}${gen.upstream.basePath === '/' ? '' : gen.upstream.basePath}`,
    store: storeUrl,
    workers: running.workers,
    routes: c.routes.map((r) => `${r.name} ${r.methods?.join(',') ?? '*'} ${r.path}`),
    policies,
    monitor_mode: monitor.length ? monitor : 'none',
    audit: running.audit.enabled
      ? `${running.audit.file} (api_access sampled at ${running.audit.accessSampleRate})`
      : 'off',
    monitoring: c.monitoring.enabled ? `on; webhook ${webhook}; cooldown ${c.monitoring.cooldown}` : 'off',
    trusted_proxies: c.listen.trusted_proxies.length ? c.listen.trusted_proxies : 'none',
  };
  return scrubConfig(summary) as Record<string, unknown>;
}
