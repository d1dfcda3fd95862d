/**
 * The data behind the admin dashboard (`GET /` on the admin listener), served as JSON at
 * {@link DASHBOARD_API_PATH}. `dashboardSnapshot()` is a pure function of what the admin
 * listener gathers (score, metric values, recent denials, blocks, config summary, reload
 * history, KPI time series); {@link KpiSampler} keeps the last hour of counter samples in
 * memory (bounded) for the charts.
 *
 * Nothing secret leaves here: the config summary is scrubbed (secret-looking keys and URL
 * passwords replaced), decision paths are already redacted by the decision log.
 */
import type { ScoreResult } from '../observability/score.js';
import type { DecisionEntry } from '../observability/decisions.js';

/** Where the admin listener serves the snapshot (the page polls it). */
export const DASHBOARD_API_PATH = '/api/dashboard';

/** A metric as returned by prom-client's `registry.getMetricsAsJSON()`. */
export interface MetricJson {
  name: string;
  values: { value: number; labels: Partial<Record<string, string | number>>; metricName?: string }[];
}

/** What `registry.getMetricsAsJSON()` needs to be (prom-client's Registry fits). */
export interface MetricSource {
  getMetricsAsJSON(): Promise<MetricJson[]>;
}

/** An active block (ban or lockout) as listed by `store.listBlocks()`. */
export interface BlockInfo {
  key: string;
  ttlMs: number;
  /** what is blocked (IP, username) when the caller knows how to read it out of the key */
  subject?: string;
}

/** One configuration (re)load, as the gateway records it (`Gateway.reloads`). */
export interface ReloadRecord {
  /** ISO 8601 */
  readonly time: string;
  readonly result: 'success' | 'ok' | 'error';
  /** the generation that became active */
  readonly generation?: number;
  /** config file hash or another version label */
  readonly version?: string | number;
  /** what started it: start, watch, sighup, api… */
  readonly trigger?: string;
  /** validation errors of a rejected reload (file:line:column: key: message) */
  readonly errors?: readonly string[];
  /** a short summary */
  readonly message?: string;
}

/** A reload as the dashboard shows it. */
export interface ReloadRow {
  time: string;
  result: 'ok' | 'error';
  version: string | null;
  trigger: string | null;
  message: string;
}

export interface DashboardSources {
  score: ScoreResult;
  /** `await metrics.registry.getMetricsAsJSON()` */
  metrics: MetricJson[];
  /** `decisions.recent({ deniedOnly: true })` */
  denials: DecisionEntry[];
  /** `store.listBlocks(<ban prefix>, n)` */
  bans: BlockInfo[];
  /** `store.listBlocks(<lockout prefix>, n)` */
  lockouts: BlockInfo[];
  /** a plain summary of the loaded config (routes, policies, listeners…); scrubbed again here */
  config: Record<string, unknown>;
  /** in any order; shown newest first, at most 50 */
  reloads: readonly ReloadRecord[];
  /** `sampler.series()`; empty charts when absent */
  series?: KpiSeries;
  /** Date.now() */
  now: number;
}

/** KPI names sampled for the charts. */
export const SERIES_KPIS = [
  'requests',
  'denials',
  'rate_limited',
  'lockouts',
  'bans',
  'alerts',
  'login_failures',
] as const;
export type SeriesKpi = (typeof SERIES_KPIS)[number];

export interface KpiSeries {
  interval_s: number;
  /** one point per interval: events in that interval */
  points: ({ t: string } & Record<SeriesKpi, number>)[];
}

export interface DashboardSnapshot {
  generated_at: string;
  score: {
    score: number;
    passing: number;
    total: number;
    failing: { id: string; title: string; weight: number; recommendation: string; detail?: string }[];
    recommendations: string[];
  };
  kpis: {
    requests: number;
    allowed: number;
    denied: number;
    monitored: number;
    denials_by_reason: Record<string, number>;
    rate_limited: number;
    rate_limited_by_rule: Record<string, number>;
    auth_failures: number;
    login_failures: number;
    lockouts: number;
    bans: number;
    alerts: number;
    alerts_by_kind: Record<string, number>;
    audit_events: number;
    audit_write_errors: number;
    upstream_errors: number;
    store_errors: number;
    open_connections: number;
    latency_p50_ms: number | null;
    latency_p99_ms: number | null;
  };
  series: KpiSeries;
  denials: {
    request_id: string;
    time: string;
    method: string;
    path: string;
    route: string;
    client_ip: string;
    status: number;
    decision: string;
    code: string | null;
    reason: string | null;
    policy: string | null;
    href: string;
  }[];
  bans: { subject: string; ttl_s: number }[];
  lockouts: { subject: string; ttl_s: number }[];
  config: Record<string, unknown>;
  reloads: ReloadRow[];
}

const SECRET_KEY =
  /secret|passw(or)?d|token|api[_-]?key|apikey|credential|authorization|cookie|private|hash|salt|signing/i;

/**
 * Replace secrets in a config summary: strings under secret-looking keys (at any depth
 * below them, so `api_keys: [k1, k2]` is hidden too) and passwords in URLs. Numbers and
 * booleans are kept (`token_ttl: 60`, `password_require_special: true`).
 */
export function scrubConfig(value: unknown, depth = 0, underSecret = false): unknown {
  if (depth > 12) return '[…]';
  if (typeof value === 'string') return underSecret ? '[REDACTED]' : scrubUrl(value);
  if (Array.isArray(value)) return value.slice(0, 200).map((v) => scrubConfig(v, depth + 1, underSecret));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      out[k] = scrubConfig(v, depth + 1, underSecret || SECRET_KEY.test(k));
    }
    return out;
  }
  return value;
}

function scrubUrl(s: string): string {
  // scheme://user:password@host → scheme://user:[REDACTED]@host (redis://:pw@host too)
  return s.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:\s]*):[^/@\s]*@/i, '$1:[REDACTED]@');
}

function find(metrics: readonly MetricJson[], name: string): MetricJson | undefined {
  return metrics.find((m) => m.name === name);
}

function sum(
  metrics: readonly MetricJson[],
  name: string,
  filter?: (labels: MetricJson['values'][number]['labels']) => boolean,
): number {
  const m = find(metrics, name);
  if (!m) return 0;
  let s = 0;
  for (const v of m.values) if (!filter || filter(v.labels)) s += v.value;
  return s;
}

function byLabel(metrics: readonly MetricJson[], name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  const m = find(metrics, name);
  if (!m) return out;
  for (const v of m.values) {
    const k = v.labels[label];
    if (k === undefined || v.value === 0) continue;
    out[String(k)] = (out[String(k)] ?? 0) + v.value;
  }
  return Object.fromEntries(Object.entries(out).sort((a, b) => b[1] - a[1]));
}

/** Quantile (seconds → ms) from a prom-client histogram's cumulative buckets, all label sets merged. */
export function histogramQuantile(metrics: readonly MetricJson[], name: string, q: number): number | null {
  const m = find(metrics, name);
  if (!m) return null;
  const buckets = new Map<number, number>();
  for (const v of m.values) {
    if (v.metricName !== `${name}_bucket`) continue;
    const le = v.labels.le;
    const bound = le === '+Inf' ? Infinity : Number(le);
    buckets.set(bound, (buckets.get(bound) ?? 0) + v.value);
  }
  const sorted = [...buckets].sort((a, b) => a[0] - b[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total === 0) return null;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (const [bound, count] of sorted) {
    if (count >= rank) {
      if (bound === Infinity) return Math.round(prevBound * 1000 * 1000) / 1000;
      const inBucket = count - prevCount;
      const frac = inBucket === 0 ? 1 : (rank - prevCount) / inBucket;
      return Math.round((prevBound + (bound - prevBound) * frac) * 1000 * 1000) / 1000;
    }
    prevBound = bound;
    prevCount = count;
  }
  return null;
}

/** The cumulative totals sampled for the charts. */
export function kpiTotals(metrics: readonly MetricJson[]): Record<SeriesKpi, number> {
  return {
    requests: sum(metrics, 'gateway_requests_total'),
    denials: sum(metrics, 'gateway_blocked_requests_total'),
    rate_limited: sum(metrics, 'gateway_rate_limited_total'),
    lockouts: sum(metrics, 'gateway_account_lockouts_total'),
    bans: sum(metrics, 'gateway_ip_bans_total'),
    alerts: sum(metrics, 'gateway_security_alerts_total'),
    login_failures: sum(metrics, 'gateway_login_failures_total'),
  };
}

function blockRows(blocks: readonly BlockInfo[]): { subject: string; ttl_s: number }[] {
  return blocks
    .map((b) => ({ subject: b.subject ?? b.key, ttl_s: Math.max(0, Math.ceil(b.ttlMs / 1000)) }))
    .sort((a, b) => b.ttl_s - a.ttl_s);
}

/** Build the dashboard's JSON. Pure: same sources, same snapshot. */
export function dashboardSnapshot(src: DashboardSources): DashboardSnapshot {
  const m = src.metrics;
  const failing = src.score.checks
    .filter((c) => !c.pass)
    .sort((a, b) => b.weight - a.weight)
    .map((c) => {
      const f: DashboardSnapshot['score']['failing'][number] = {
        id: c.id,
        title: c.title,
        weight: c.weight,
        recommendation: c.recommendation,
      };
      if (c.detail !== undefined) f.detail = c.detail;
      return f;
    });
  const reloads: ReloadRow[] = [...src.reloads]
    .sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0))
    .slice(0, 50)
    .map((r) => {
      const version = r.version ?? r.generation;
      return {
        time: r.time,
        result: r.result === 'error' ? 'error' : 'ok',
        version: version === undefined ? null : String(version),
        trigger: r.trigger ?? null,
        message: [r.message, ...(r.errors ?? []).slice(0, 5)].filter(Boolean).join('; '),
      };
    });
  return {
    generated_at: new Date(src.now).toISOString(),
    score: {
      score: src.score.score,
      passing: src.score.checks.filter((c) => c.pass).length,
      total: src.score.checks.length,
      failing,
      recommendations: src.score.recommendations,
    },
    kpis: {
      requests: sum(m, 'gateway_requests_total'),
      allowed: sum(m, 'gateway_requests_total', (l) => l.decision === 'allow'),
      denied: sum(m, 'gateway_requests_total', (l) => l.decision === 'deny'),
      monitored: sum(m, 'gateway_requests_total', (l) => l.decision === 'monitor'),
      denials_by_reason: byLabel(m, 'gateway_blocked_requests_total', 'reason'),
      rate_limited: sum(m, 'gateway_rate_limited_total'),
      rate_limited_by_rule: byLabel(m, 'gateway_rate_limited_total', 'rule'),
      auth_failures: sum(m, 'gateway_auth_failures_total'),
      login_failures: sum(m, 'gateway_login_failures_total'),
      lockouts: sum(m, 'gateway_account_lockouts_total'),
      bans: sum(m, 'gateway_ip_bans_total'),
      alerts: sum(m, 'gateway_security_alerts_total'),
      alerts_by_kind: byLabel(m, 'gateway_security_alerts_total', 'kind'),
      audit_events: sum(m, 'gateway_audit_events_total'),
      audit_write_errors: sum(m, 'gateway_audit_write_errors_total'),
      upstream_errors: sum(m, 'gateway_upstream_errors_total'),
      store_errors: sum(m, 'gateway_store_errors_total'),
      open_connections: sum(m, 'gateway_open_connections'),
      latency_p50_ms: histogramQuantile(m, 'gateway_request_duration_seconds', 0.5),
      latency_p99_ms: histogramQuantile(m, 'gateway_request_duration_seconds', 0.99),
    },
    series: src.series ?? { interval_s: 10, points: [] },
    denials: src.denials.slice(0, 100).map((d) => {
      const step = d.steps.find((s) => s.verdict === 'deny') ?? d.steps.find((s) => s.verdict === 'monitor');
      return {
        request_id: d.request_id,
        time: d.time,
        method: d.method,
        path: d.path,
        route: d.route,
        client_ip: d.client_ip,
        status: d.status,
        decision: d.decision,
        code: d.code ?? step?.code ?? null,
        reason: step?.reason ?? null,
        policy: step?.policy ?? null,
        href: `/api/decisions/${encodeURIComponent(d.request_id)}`,
      };
    }),
    bans: blockRows(src.bans),
    lockouts: blockRows(src.lockouts),
    config: scrubConfig(src.config) as Record<string, unknown>,
    reloads,
  };
}

/**
 * What one process contributes to the snapshot's figures: its metric values, its recent
 * denials (newest first), its KPI series. In cluster mode every worker sends its part and
 * {@link mergeDashboardParts} makes one of them for the whole gateway.
 */
export interface DashboardPart {
  metrics: MetricJson[];
  denials: DecisionEntry[];
  series: KpiSeries;
}

/** Whether a value that came over IPC has the shape of a {@link DashboardPart}. */
export function isDashboardPart(v: unknown): v is DashboardPart {
  if (typeof v !== 'object' || v === null) return false;
  const p = v as Partial<Record<keyof DashboardPart, unknown>>;
  return (
    Array.isArray(p.metrics) &&
    Array.isArray(p.denials) &&
    typeof p.series === 'object' &&
    p.series !== null &&
    Array.isArray((p.series as { points?: unknown }).points)
  );
}

/**
 * The workers' parts as one. Metrics: the values of each metric, all workers' together, so
 * every KPI (summed over label sets) is the sum over workers, open connections included,
 * and the latency quantiles come from the summed histogram buckets. Denials: merged newest
 * first, at most `maxDenials`. Series: each worker samples on its own clock, so points are
 * put in the interval they fall in (time / interval) and summed there; a point's time is the
 * latest of the points summed.
 */
export function mergeDashboardParts(parts: readonly DashboardPart[], maxDenials = 50): DashboardPart {
  const byName = new Map<string, MetricJson>();
  for (const part of parts)
    for (const m of part.metrics) {
      const seen = byName.get(m.name);
      if (seen === undefined) byName.set(m.name, { ...m, values: [...m.values] });
      else seen.values.push(...m.values);
    }
  const denials = parts
    .flatMap((p) => p.denials)
    .sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0))
    .slice(0, maxDenials);
  const intervalS = parts[0]?.series.interval_s ?? 10;
  const slots = new Map<number, KpiSeries['points'][number]>();
  for (const part of parts)
    for (const p of part.series.points) {
      const at = Date.parse(p.t);
      const slot = Math.floor(at / (intervalS * 1000));
      const sum = slots.get(slot);
      if (sum === undefined) {
        slots.set(slot, { ...p });
        continue;
      }
      if (at > Date.parse(sum.t)) sum.t = p.t;
      for (const k of SERIES_KPIS) sum[k] += p[k];
    }
  const points = [...slots].sort((a, b) => a[0] - b[0]).map(([, p]) => p);
  return { metrics: [...byName.values()], denials, series: { interval_s: intervalS, points } };
}

/** Options of {@link KpiSampler}. */
export interface KpiSamplerOptions {
  /** the metrics registry (`metrics.registry`) */
  registry: MetricSource;
  /** sampling interval in ms; default 10 000 */
  intervalMs?: number;
  /** how far back the charts go, in ms; default 3 600 000 (one hour) */
  windowMs?: number;
  /** clock; default Date.now */
  now?: () => number;
}

/**
 * Samples the KPI counters every `intervalMs` and keeps the last `windowMs` of samples
 * (at most windowMs / intervalMs + 1 points) for the dashboard charts.
 */
export class KpiSampler {
  private readonly registry: MetricSource;
  readonly intervalMs: number;
  private readonly max: number;
  private readonly now: () => number;
  private readonly samples: { t: number; totals: Record<SeriesKpi, number> }[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: KpiSamplerOptions) {
    this.registry = opts.registry;
    this.intervalMs = Math.max(1, opts.intervalMs ?? 10_000);
    this.max = Math.floor((opts.windowMs ?? 3_600_000) / this.intervalMs) + 1;
    this.now = opts.now ?? Date.now;
  }

  /** Take one sample now (the timer calls this; tests call it directly). */
  async sample(): Promise<void> {
    const metrics = await this.registry.getMetricsAsJSON();
    this.samples.push({ t: this.now(), totals: kpiTotals(metrics) });
    if (this.samples.length > this.max) this.samples.splice(0, this.samples.length - this.max);
  }

  /** Start sampling (one sample at once, then every interval). The timer never keeps the process alive. */
  start(): void {
    if (this.timer) return;
    const tick = () => void this.sample().catch(() => {});
    tick();
    this.timer = setInterval(tick, this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Events per interval, oldest first. */
  series(): KpiSeries {
    const points: KpiSeries['points'] = [];
    for (let i = 1; i < this.samples.length; i++) {
      const a = this.samples[i - 1]!;
      const b = this.samples[i]!;
      const p = { t: new Date(b.t).toISOString() } as KpiSeries['points'][number];
      for (const k of SERIES_KPIS) p[k] = Math.max(0, b.totals[k] - a.totals[k]);
      points.push(p);
    }
    return { interval_s: Math.round(this.intervalMs / 1000), points };
  }

  get size(): number {
    return this.samples.length;
  }
}
