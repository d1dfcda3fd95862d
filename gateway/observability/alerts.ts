/**
 * Threshold alerts (SPEC §6): sliding-window counts per kind, kept in the state store
 * so that several gateway instances count together; a cooldown per kind, also in the
 * store; an alert is a `security_alert` audit event, `gateway_security_alerts_total{kind}`
 * and a JSON POST to the webhook.
 *
 * Nothing here ever delays a request: `record()` is synchronous and only starts
 * background work, bounded by `maxPending` store operations in flight; the webhook is
 * fed from a bounded queue (the oldest alert is dropped and counted when it is full),
 * sent one at a time with a timeout and a few retries with exponential backoff.
 */
import { Agent, request } from 'undici';
import { MAX_WINDOW_EVENTS, type Store } from '../store/types.js';
import type { AuditLog } from './audit.js';
import type { Metrics } from './metrics.js';
import type { OpsLogger } from '../policy.js';
import { parseDuration } from '../config/units.js';

export const ALERT_KINDS = ['failed_logins', 'suspicious_requests', 'api_violations'] as const;
export type AlertKind = (typeof ALERT_KINDS)[number];

/** One threshold: `count` events within `window` raise an alert. */
export interface AlertThreshold {
  /** events in the window that raise the alert */
  count: number;
  /** sliding window, a duration (`1h`, `30m`) or milliseconds */
  window: string | number;
}

/** The part of the operational logger (`services.log`) the alerts use. */
export type AlertLogger = Pick<OpsLogger, 'warn' | 'error'>;

export interface WebhookOptions {
  /** per attempt, duration or ms; default 5s */
  timeout?: string | number;
  /** retries after the first attempt; default 3 */
  retries?: number;
  /** alerts waiting for delivery; the oldest is dropped when full; default 100 */
  queueSize?: number;
  /** first backoff between attempts, doubled each retry (±20 % jitter); default 500ms */
  backoff?: string | number;
}

/**
 * Options of {@link createAlerts}. YAML (`observability.alerts`):
 * ```yaml
 * alerts:
 *   thresholds:
 *     failed_logins: { count: 10, window: 1h }
 *     suspicious_requests: { count: 5, window: 1h }
 *     api_violations: { count: 3, window: 1h }
 *   cooldown: 5m
 *   webhook: { timeout: 5s, retries: 3, queue_size: 100 }
 * ```
 */
export interface AlertsOptions {
  store: Store;
  audit: AuditLog;
  metrics: Metrics;
  log: AlertLogger;
  /** clock in ms (tests use a fake one) */
  now: () => number;
  /** where alerts are POSTed (`ALERT_WEBHOOK_URL`); none when unset */
  webhookUrl?: string;
  /** per kind; defaults: failed_logins 10/1h, suspicious_requests 5/1h, api_violations 3/1h */
  thresholds?: Partial<Record<AlertKind, AlertThreshold>>;
  /** the same kind is not raised again within this duration; default 5m */
  cooldown?: string | number;
  webhook?: WebhookOptions;
  /** key prefix in the store; default `alerts:` */
  keyPrefix?: string;
  /** offending IPs tracked per kind (for `top_ips`); default 1000 */
  maxTrackedIps?: number;
  /** store operations in flight at most; further events are dropped and counted; default 1000 */
  maxPending?: number;
  /** names this instance in the webhook body (e.g. the host name) */
  instance?: string;
}

/** What an alert carries: the audit fields and the webhook body. */
export interface AlertPayload {
  event: 'security_alert';
  kind: AlertKind;
  /** events counted in the window when the alert was raised (every instance) */
  count: number;
  threshold: number;
  /** the window as configured, e.g. `1h` */
  window: string;
  window_seconds: number;
  /** the most frequent client IPs of this kind seen by this instance in the window */
  top_ips: { ip: string; count: number }[];
  time: string;
  instance?: string;
}

export interface AlertStats {
  /** alerts raised by this instance */
  raised: number;
  /** webhook deliveries that succeeded */
  delivered: number;
  /** webhook deliveries that failed after every retry */
  failed: number;
  /** alerts dropped because the webhook queue was full */
  dropped: number;
  /** events dropped because too many store operations were in flight */
  eventsDropped: number;
  /** store operations that failed */
  storeErrors: number;
  /** alerts waiting for delivery */
  queued: number;
}

export interface Alerts {
  /** Count one event. Synchronous: never awaits, never throws. */
  record(kind: AlertKind, clientIp: string): void;
  /** Counters of this instance (tests, dashboard). */
  stats(): AlertStats;
  /** Resolves when in-flight store work settles; waits for queued deliveries at most `deadlineMs` (default: one webhook timeout), then abandons them. */
  close(deadlineMs?: number): Promise<void>;
}

export const DEFAULT_THRESHOLDS: Record<AlertKind, AlertThreshold> = {
  failed_logins: { count: 10, window: '1h' },
  suspicious_requests: { count: 5, window: '1h' },
  api_violations: { count: 3, window: '1h' },
};

const TOP_IPS = 5;

interface IpCount {
  count: number;
  since: number;
}

interface Compiled {
  count: number;
  windowMs: number;
  windowLabel: string;
  counterKey: string;
  cooldownKey: string;
  lockKey: string;
  ips: Map<string, IpCount>;
}

/**
 * The webhook URL, checked: http(s) only. Throws an operator-readable message that never
 * repeats the URL (it may hold a secret). Config validation uses it too.
 */
export function webhookTarget(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error('the alert webhook URL is not a valid URL (use http(s)://host[:port]/path)');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new Error(`the alert webhook URL must be http(s), got ${u.protocol}`);
  }
  return u;
}

function durationLabel(v: string | number): string {
  return typeof v === 'number' ? `${v}ms` : v.trim();
}

/** Create the alert engine. Throws on an invalid option (at config load, never on a request). */
export function createAlerts(opts: AlertsOptions): Alerts {
  const { store, audit, metrics, log, now } = opts;
  const prefix = opts.keyPrefix ?? 'alerts:';
  const cooldownMs = parseDuration(opts.cooldown ?? '5m');
  const maxTracked = Math.max(1, opts.maxTrackedIps ?? 1000);
  const maxPending = Math.max(1, opts.maxPending ?? 1000);
  const timeoutMs = parseDuration(opts.webhook?.timeout ?? '5s');
  const retries = Math.max(0, Math.floor(opts.webhook?.retries ?? 3));
  const queueSize = Math.max(1, Math.floor(opts.webhook?.queueSize ?? 100));
  const backoffMs = parseDuration(opts.webhook?.backoff ?? '500ms');

  let webhook: URL | undefined;
  /** `Basic …` from credentials in the URL (`https://user:pass@host/…`), sent as curl does */
  let webhookAuthorization: string | undefined;
  if (opts.webhookUrl) {
    webhook = webhookTarget(opts.webhookUrl);
    if (webhook.username !== '' || webhook.password !== '') {
      const user = decodeURIComponent(webhook.username);
      const pass = decodeURIComponent(webhook.password);
      webhookAuthorization = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
      webhook.username = '';
      webhook.password = '';
    }
  }
  // Logs name the origin only: chat and paging webhooks carry their secret in the path or
  // the query (https://hooks.slack.com/services/T…/B…/<secret>).
  const webhookLabel = webhook?.origin;

  const kinds = new Map<AlertKind, Compiled>();
  for (const kind of ALERT_KINDS) {
    const t = opts.thresholds?.[kind] ?? DEFAULT_THRESHOLDS[kind];
    if (!Number.isInteger(t.count) || t.count < 1)
      throw new Error(`alert threshold ${kind}.count must be a positive integer`);
    if (t.count > MAX_WINDOW_EVENTS) {
      throw new Error(
        `alert threshold ${kind}.count must be at most ${MAX_WINDOW_EVENTS} (the store's sliding windows saturate there)`,
      );
    }
    const windowMs = parseDuration(t.window);
    if (windowMs <= 0) throw new Error(`alert threshold ${kind}.window must be positive`);
    kinds.set(kind, {
      count: t.count,
      windowMs,
      windowLabel: durationLabel(t.window),
      counterKey: `${prefix}count:${kind}`,
      cooldownKey: `${prefix}cooldown:${kind}`,
      lockKey: `${prefix}lock:${kind}`,
      ips: new Map(),
    });
  }

  const stats: AlertStats = {
    raised: 0,
    delivered: 0,
    failed: 0,
    dropped: 0,
    eventsDropped: 0,
    storeErrors: 0,
    queued: 0,
  };
  let closed = false;
  let pending = 0;
  const pendingWork = new Set<Promise<void>>();
  let lastWarn = -Infinity;
  const warnOnce = (obj: Record<string, unknown>, msg: string) => {
    const t = now();
    if (t - lastWarn < 60_000) return;
    lastWarn = t;
    log.warn(obj, msg);
  };

  // ---- per-IP counts, bounded (LRU order by last event) ----
  function trackIp(c: Compiled, ip: string, t: number): void {
    const cur = c.ips.get(ip);
    if (cur && t - cur.since < c.windowMs) {
      cur.count++;
      c.ips.delete(ip);
      c.ips.set(ip, cur);
      return;
    }
    if (cur) c.ips.delete(ip);
    c.ips.set(ip, { count: 1, since: t });
    if (c.ips.size > maxTracked) {
      const oldest = c.ips.keys().next().value as string;
      c.ips.delete(oldest);
    }
  }

  function topIps(c: Compiled, t: number): { ip: string; count: number }[] {
    const out: { ip: string; count: number }[] = [];
    for (const [ip, v] of c.ips) if (t - v.since < c.windowMs) out.push({ ip, count: v.count });
    out.sort((a, b) => b.count - a.count || (a.ip < b.ip ? -1 : 1));
    return out.slice(0, TOP_IPS);
  }

  // ---- webhook delivery: bounded queue, one sender ----
  const queue: AlertPayload[] = [];
  let sending = false;
  const aborter = new AbortController();
  const agent = webhook
    ? new Agent({
        connect: { timeout: timeoutMs },
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        keepAliveTimeout: 10_000,
      })
    : undefined;
  let drained: (() => void) | undefined;

  function enqueue(p: AlertPayload): void {
    if (!webhook) return;
    if (queue.length >= queueSize) {
      queue.shift();
      stats.dropped++;
      warnOnce({ webhook: webhookLabel, queueSize }, 'alert webhook queue full; dropped the oldest alert');
    }
    queue.push(p);
    stats.queued = queue.length;
    if (!sending) void pump();
  }

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (aborter.signal.aborted) return resolve();
      const timer = setTimeout(done, ms);
      timer.unref();
      function done() {
        clearTimeout(timer);
        aborter.signal.removeEventListener('abort', done);
        resolve();
      }
      aborter.signal.addEventListener('abort', done, { once: true });
    });

  async function sendOnce(body: string): Promise<{ ok: boolean; retryable: boolean; why: string }> {
    const signal = AbortSignal.any([aborter.signal, AbortSignal.timeout(timeoutMs)]);
    try {
      const res = await request(webhook!, {
        method: 'POST',
        dispatcher: agent,
        headers: {
          'content-type': 'application/json',
          'user-agent': 'receipt-gateway-alerts',
          ...(webhookAuthorization !== undefined ? { authorization: webhookAuthorization } : {}),
        },
        body,
        signal,
      });
      // read and discard the answer so the connection can be reused
      await res.body.dump({ limit: 64 * 1024, signal });
      const s = res.statusCode;
      if (s >= 200 && s < 300) return { ok: true, retryable: false, why: String(s) };
      return { ok: false, retryable: s >= 500 || s === 408 || s === 429, why: `HTTP ${s}` };
    } catch (err) {
      const e = err as Error & { code?: string };
      return { ok: false, retryable: true, why: e.code ?? e.name ?? 'error' };
    }
  }

  async function pump(): Promise<void> {
    sending = true;
    try {
      while (queue.length && !aborter.signal.aborted) {
        const p = queue.shift()!;
        stats.queued = queue.length;
        const body = JSON.stringify(p);
        let result = { ok: false, retryable: true, why: '' };
        for (let attempt = 0; attempt <= retries && !aborter.signal.aborted; attempt++) {
          if (attempt > 0) {
            const base = backoffMs * 2 ** (attempt - 1);
            await sleep(base * (0.8 + Math.random() * 0.4));
            if (aborter.signal.aborted) break;
          }
          result = await sendOnce(body);
          if (result.ok || !result.retryable) break;
        }
        if (result.ok) stats.delivered++;
        else {
          stats.failed++;
          warnOnce({ webhook: webhookLabel, kind: p.kind, why: result.why }, 'alert webhook delivery failed');
        }
      }
    } finally {
      sending = false;
      if (!queue.length && drained) drained();
    }
  }

  // ---- counting and raising ----
  function raise(kind: AlertKind, c: Compiled, count: number): void {
    const t = now();
    const payload: AlertPayload = {
      event: 'security_alert',
      kind,
      count,
      threshold: c.count,
      window: c.windowLabel,
      window_seconds: Math.round(c.windowMs / 1000),
      top_ips: topIps(c, t),
      time: new Date(t).toISOString(),
    };
    if (opts.instance) payload.instance = opts.instance;
    stats.raised++;
    metrics.securityAlerts.inc({ kind });
    audit.system('security_alert', {
      kind,
      count,
      threshold: c.count,
      window: c.windowLabel,
      top_ips: payload.top_ips,
    });
    enqueue(payload);
  }

  async function handle(kind: AlertKind, c: Compiled): Promise<void> {
    const count = await store.increment(c.counterKey, c.windowMs);
    if (count < c.count) return;
    if ((await store.blockedFor(c.cooldownKey)) > 0) return;
    // Several instances may pass the check above together: the first increment of the
    // lock window wins, the others see 2, 3… (atomic on redis).
    if (cooldownMs > 0) {
      const n = await store.increment(c.lockKey, cooldownMs);
      if (n !== 1) return;
      await store.block(c.cooldownKey, cooldownMs);
    }
    raise(kind, c, count);
  }

  return {
    record(kind, clientIp) {
      if (closed) return;
      const c = kinds.get(kind);
      if (!c) return;
      trackIp(c, clientIp, now());
      if (pending >= maxPending) {
        stats.eventsDropped++;
        warnOnce({ maxPending }, 'alert counting is behind (store slow); events dropped');
        return;
      }
      pending++;
      const p: Promise<void> = handle(kind, c)
        .catch((err: unknown) => {
          stats.storeErrors++;
          warnOnce({ err: (err as Error).message, kind }, 'alert counter store operation failed');
        })
        .finally(() => {
          pending--;
          pendingWork.delete(p);
        });
      pendingWork.add(p);
    },
    stats: () => ({ ...stats, queued: queue.length }),
    async close(deadlineMs = timeoutMs) {
      closed = true;
      await Promise.allSettled([...pendingWork]);
      if (sending || queue.length) {
        await new Promise<void>((resolve) => {
          drained = resolve;
          const timer = setTimeout(resolve, deadlineMs);
          timer.unref();
        });
      }
      aborter.abort();
      if (queue.length) {
        stats.dropped += queue.length;
        queue.length = 0;
      }
      if (agent) await agent.destroy().catch(() => {});
    },
  };
}
