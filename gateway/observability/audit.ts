import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import type { RequestContext } from '../context.js';
import type { AuditEvent } from '../errors.js';
import type { Metrics } from './metrics.js';

/** Query parameters whose values never reach the audit log. */
const SECRET_PARAM =
  /([?&](?:[^=&]*(?:pass(?:word|wd)?|secret|token|api[_-]?key|apikey|key|auth(?:orization)?|session|sig(?:nature)?|credential|jwt|otp|code)[^=&]*)=)[^&#]*/gi;

/** Field names whose values are replaced wherever they appear in an audit line. */
export const REDACT_PATHS = [
  'authorization',
  'cookie',
  'password',
  'new_password',
  'old_password',
  'token',
  'api_key',
  'x-api-key',
  'secret',
  'headers.authorization',
  'headers.cookie',
  'headers["x-api-key"]',
  'detail.password',
  'detail.token',
];

/** Replace secret-looking query values by `[REDACTED]`, keep the rest of the target. */
export function redactTarget(target: string): string {
  if (!target.includes('?')) return target;
  return target.replace(SECRET_PARAM, '$1[REDACTED]');
}

export interface AuditFields {
  decision?: 'allow' | 'deny' | 'monitor';
  reason?: string;
  rule_ids?: readonly string[];
  status?: number;
  subject?: string;
  [key: string]: unknown;
}

export interface AuditLog {
  /** Write one event for a request. */
  request(event: AuditEvent, ctx: RequestContext, fields: AuditFields): void;
  /** Write one event not tied to a request (config_reload, security_alert, store_unavailable). */
  system(event: AuditEvent, fields: AuditFields): void;
  /** Reopen the file (logrotate moved it). */
  reopen(): void;
  flush(): Promise<void>;
  close(): Promise<void>;
  readonly enabled: boolean;
}

export interface AuditOptions {
  enabled: boolean;
  file: string;
  /** fraction of `api_access` events written (security events are never sampled) */
  accessSampleRate: number;
  metrics: Metrics;
  /** called with every line written (the decision log, tests); never with secrets */
  tap?: (line: Record<string, unknown>) => void;
  /** where write errors are reported (defaults to stderr) */
  onError?: (err: Error) => void;
}

/** Fails at start (clear error) when the directory cannot be created or the file cannot be opened. */
export function createAuditLog(opts: AuditOptions): AuditLog {
  const { metrics } = opts;
  if (!opts.enabled) {
    // No file, but alerts and the decision log still see the events.
    const tap = opts.tap;
    return {
      enabled: false,
      request(event, ctx, fields) {
        tap?.({
          event,
          request_id: ctx.id,
          client_ip: ctx.clientIp,
          method: ctx.method,
          path: redactTarget(ctx.target),
          ...fields,
        });
      },
      system(event, fields) {
        tap?.({ event, ...fields });
      },
      reopen() {},
      flush: async () => {},
      close: async () => {},
    };
  }
  const file = path.resolve(opts.file);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  // Fail at start, with a clear message, when the file cannot be written.
  fs.closeSync(fs.openSync(file, 'a'));
  const dest = pino.destination({ dest: file, sync: false, mkdir: true, minLength: 4096 });
  let lastErrorReport = 0;
  dest.on('error', (err: Error) => {
    metrics.auditWriteErrors.inc();
    const now = Date.now();
    if (now - lastErrorReport > 10_000) {
      lastErrorReport = now;
      (opts.onError ?? ((e: Error) => process.stderr.write(`audit log write failed: ${e.message}\n`)))(err);
    }
  });
  const logger = pino(
    {
      base: undefined,
      messageKey: 'message',
      timestamp: false,
      // pino needs one leading field; name the stream so shipped lines are recognisable
      formatters: { level: () => ({ log: 'security_audit' }) },
      redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    },
    dest,
  );
  const sample = opts.accessSampleRate;

  // One ISO timestamp per millisecond, not one Date per line.
  let lastMs = 0;
  let lastIso = '';
  const write = (fields: Record<string, unknown>) => {
    const ms = Date.now();
    if (ms !== lastMs) {
      lastMs = ms;
      lastIso = new Date(ms).toISOString();
    }
    const line: Record<string, unknown> = { time: lastIso, ...fields };
    try {
      logger.info(line);
    } catch {
      metrics.auditWriteErrors.inc();
      return;
    }
    metrics.auditEvents.inc({ event: line.event as string });
    opts.tap?.(line);
  };

  return {
    enabled: true,
    request(event, ctx, fields) {
      if (event === 'api_access' && sample < 1 && Math.random() >= sample) return;
      write({
        event,
        request_id: ctx.id,
        client_ip: ctx.clientIp,
        method: ctx.method,
        path: redactTarget(ctx.target),
        route: ctx.routeName,
        subject: fields.subject ?? ctx.identity?.subject,
        ...fields,
      });
    },
    system(event, fields) {
      write({ event, ...fields });
    },
    reopen() {
      try {
        dest.reopen();
      } catch (err) {
        metrics.auditWriteErrors.inc();
        process.stderr.write(`audit log reopen failed: ${(err as Error).message}\n`);
      }
    },
    flush: () =>
      new Promise<void>((resolve) => {
        try {
          dest.flush((err) => {
            if (err) metrics.auditWriteErrors.inc();
            resolve();
          });
        } catch {
          resolve();
        }
      }),
    close: () =>
      new Promise<void>((resolve) => {
        try {
          dest.flushSync();
        } catch {
          // the destination may not be ready yet or the disk is full; nothing more to do
        }
        dest.end();
        resolve();
      }),
  };
}
