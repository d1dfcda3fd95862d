import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import type { RequestContext } from '../context.js';
import type { AuditEvent } from '../errors.js';
import type { Metrics } from './metrics.js';
import { serializeFlatLine } from './audit-json.js';
import { isoFormatter } from './iso-time.js';
import { SECRET_NAME } from './secret-names.js';

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

/** How pino frames and redacts an audit line (the flat serialiser is byte-equal to it; tested). */
export const AUDIT_PINO_OPTIONS: pino.LoggerOptions = {
  base: undefined,
  messageKey: 'message',
  timestamp: false,
  // pino needs one leading field; name the stream so shipped lines are recognisable
  formatters: { level: () => ({ log: 'security_audit' }) },
  redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
};

/**
 * Fields pino does not write as they are: the first segment of each redaction path (pino
 * redacts or re-serialises the whole field) and `err` (pino's error serializer).
 */
const PINO_HANDLED: ReadonlySet<string> = new Set([...REDACT_PATHS.map((p) => p.split(/[.[]/)[0]!), 'err']);

// The audit line and the decision log redact the same target of a request: remember the last one.
let lastTarget = '';
let lastRedacted = '';

/**
 * A query parameter name as the service reads it (`%74oken` is `token`); in a name that does
 * not decode as a whole (`tok%65n%`, a stray `%` or a broken UTF-8 sequence), each `%XX` is
 * decoded on its own, as lenient parsers do, so the secret name inside is still seen.
 */
function paramName(raw: string): string {
  if (raw.indexOf('%') < 0 && raw.indexOf('+') < 0) return raw;
  const spaced = raw.replace(/\+/g, ' ');
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  }
}

/**
 * Where the redacted value of a query part starts (just after the `=` of the first parameter
 * with a secret name: at its start, or after a `#` or `;`), or -1.
 */
function secretValueStart(part: string): number {
  let start = 0;
  for (;;) {
    const eq = part.indexOf('=', start);
    if (eq < 0) return -1;
    let sep = -1;
    for (let j = start; j < eq; j++) {
      const c = part.charCodeAt(j);
      if (c === 0x23 || c === 0x3b) sep = j; // '#', ';': the name starts after it
    }
    if (sep >= 0) start = sep + 1;
    if (SECRET_NAME.test(paramName(part.slice(start, eq)))) return eq + 1;
    // the next name starts after the next `#` or `;` past this `=`
    let next = -1;
    for (let j = eq + 1; j < part.length; j++) {
      const c = part.charCodeAt(j);
      if (c === 0x23 || c === 0x3b) {
        next = j;
        break;
      }
    }
    if (next < 0) return -1;
    start = next + 1;
  }
}

/** A path parameter (`;jsessionid=…`, what Java servlet containers put in URLs): its name and value. */
const PATH_PARAM = /;([^;/=?#]*)=([^;/?#]*)/g;

/** `path` with the values of its path parameters with secret-looking names redacted (or `path` itself). */
function redactPathParams(path: string): string {
  if (path.indexOf(';') < 0) return path;
  return path.replace(PATH_PARAM, (m, name: string) =>
    SECRET_NAME.test(paramName(name)) ? `;${name}=[REDACTED]` : m,
  );
}

/**
 * Replace the values of query parameters and path parameters (`;jsessionid=…`) with
 * secret-looking names (judged once decoded) by `[REDACTED]`, keep the rest of the target.
 *
 * The result is `target` itself when nothing is redacted, and otherwise one join of the
 * parts, a flat string of its own: the decision log keeps it, and a concatenation would
 * keep a slice of the target and two string objects per parameter alive with it (a 1.9 KB
 * target of 280 parameters held 26 KB).
 */
export function redactTarget(target: string): string {
  const q = target.indexOf('?');
  if (q < 0 && target.indexOf(';') < 0) return target;
  if (target === lastTarget) return lastRedacted;
  const path = q < 0 ? target : target.slice(0, q);
  const redactedPath = redactPathParams(path);
  let changed = redactedPath !== path;
  let redacted = changed ? redactedPath : target;
  if (q >= 0) {
    // Inside a `&`-separated part, a `#` (a fragment the client sent) or a `;` (a separator to
    // some query parsers) may start another parameter: `a=1#password=x` is redacted from the
    // `password`; a secret's value is redacted whole, also what runs on past a `#` or `;`.
    const parts = target.slice(q + 1).split('&');
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      const cut = secretValueStart(part);
      if (cut >= 0) {
        parts[i] = `${part.slice(0, cut)}[REDACTED]`;
        changed = true;
      }
    }
    if (changed) {
      parts[0] = `${redactedPath}?${parts[0]!}`;
      redacted = parts.join('&');
    }
  }
  lastTarget = target;
  lastRedacted = redacted;
  return redacted;
}

/** Lines are handed to the file in chunks of about this many characters (and on flush). */
const CHUNK = 4096;
/** Mode of an audit log file the gateway creates: owner read and write, group read (as ops/logrotate.conf creates it). */
export const AUDIT_FILE_MODE = 0o640;
/**
 * A line waits at most this long before it is written: at low traffic a ban or a lockout
 * would otherwise sit in memory until a chunk filled (out of reach of log shippers, and lost
 * on a crash).
 */
export const AUDIT_FLUSH_MS = 250;

/** close() waits at most this long for the file to be closed. */
const AUDIT_CLOSE_WAIT_MS = 2000;

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
  /**
   * called with every line written (the decision log, alerts, tests), and the request's
   * context for a request event; never with secrets
   */
  tap?: (line: Record<string, unknown>, ctx?: RequestContext) => void;
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
        tap?.(
          {
            event,
            request_id: ctx.id,
            client_ip: ctx.clientIp,
            method: ctx.method,
            path: redactTarget(ctx.target),
            ...fields,
          },
          ctx,
        );
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
  // Fail at start, with a clear message, when the file cannot be written. A file the gateway
  // creates (at start, or on reopen after a rotation) is not world-readable: it names clients,
  // users and paths. An existing file keeps its mode.
  fs.closeSync(fs.openSync(file, 'a', AUDIT_FILE_MODE));
  // minLength > 0: sonic-boom's flush() then waits for the data to reach the file
  const dest = pino.destination({
    dest: file,
    sync: false,
    mkdir: true,
    minLength: CHUNK,
    mode: AUDIT_FILE_MODE,
  });
  // (the file is opened asynchronously: 'ready' once it is, or 'error' when it cannot be)
  let opening: 'pending' | 'open' | 'failed' = 'pending';
  dest.once('ready', () => (opening = 'open'));
  dest.once('error', () => {
    if (opening === 'pending') opening = 'failed';
  });
  let lastErrorReport = 0;
  dest.on('error', (err: Error) => {
    metrics.auditWriteErrors.inc();
    const now = Date.now();
    if (now - lastErrorReport > 10_000) {
      lastErrorReport = now;
      (opts.onError ?? ((e: Error) => process.stderr.write(`audit log write failed: ${e.message}\n`)))(err);
    }
  });
  // pino serialises the lines the flat serialiser leaves to it (nested values, redacted
  // fields) into `captured`; every line then goes through the same buffer, in order.
  let captured = '';
  const capture = {
    write(s: string) {
      captured = s;
    },
  };
  const logger = pino(AUDIT_PINO_OPTIONS, capture);
  // pino's framing of a line (`{"log":"security_audit"` … `}\n`), taken from pino itself
  logger.info({});
  const END = '}\n';
  const framed = captured.endsWith(END);
  const PREFIX = framed ? captured.slice(0, -END.length) : '';
  const sample = opts.accessSampleRate;

  // Lines collect here (a string per chunk, not one write per line: sonic-boom's write
  // measures its whole pending buffer on every call, a cost that grows with the buffer).
  let pending = '';
  let flushTimer: NodeJS.Timeout | undefined;
  const handOver = (): void => {
    if (flushTimer !== undefined) {
      clearTimeout(flushTimer);
      flushTimer = undefined;
    }
    if (pending === '') return;
    const chunk = pending;
    pending = '';
    try {
      dest.write(chunk);
    } catch {
      metrics.auditWriteErrors.inc();
    }
  };

  const eventCounters = new Map<string, ReturnType<Metrics['auditEvents']['labels']>>();
  const countEvent = (event: string): void => {
    let c = eventCounters.get(event);
    if (c === undefined) {
      c = metrics.auditEvents.labels(event);
      if (eventCounters.size < 1000) eventCounters.set(event, c);
    }
    c.inc();
  };

  // ISO timestamps without a Date per line
  const iso = isoFormatter();
  const isoNow = (): string => iso(Date.now());
  /** `line` starts with `time` (isoNow()); `ctx` is the request of a request event. */
  const write = (line: Record<string, unknown>, ctx?: RequestContext) => {
    let s = framed ? serializeFlatLine(PREFIX, END, line, PINO_HANDLED) : undefined;
    if (s === undefined) {
      try {
        logger.info(line);
      } catch {
        metrics.auditWriteErrors.inc();
        return;
      }
      s = captured;
      captured = '';
    }
    pending += s;
    if (pending.length >= CHUNK) handOver();
    else if (flushTimer === undefined) {
      flushTimer = setTimeout(() => {
        handOver();
        try {
          // sonic-boom holds writes below minLength: push them to the file
          dest.flush((err) => {
            if (err) metrics.auditWriteErrors.inc();
          });
        } catch {
          // not open yet (the next write or flush takes the data) or the disk is full
        }
      }, AUDIT_FLUSH_MS);
      flushTimer.unref();
    }
    countEvent(line.event as string);
    opts.tap?.(line, ctx);
  };

  return {
    enabled: true,
    request(event, ctx, fields) {
      if (event === 'api_access' && sample < 1 && Math.random() >= sample) return;
      write(
        {
          time: isoNow(),
          event,
          request_id: ctx.id,
          client_ip: ctx.clientIp,
          method: ctx.method,
          path: redactTarget(ctx.target),
          route: ctx.routeName,
          subject: fields.subject ?? ctx.identity?.subject,
          ...fields,
        },
        ctx,
      );
    },
    system(event, fields) {
      write({ time: isoNow(), event, ...fields });
    },
    reopen() {
      try {
        dest.reopen();
      } catch (err) {
        metrics.auditWriteErrors.inc();
        process.stderr.write(`audit log reopen failed: ${(err as Error).message}\n`);
      }
    },
    // sonic-boom's flush, asked while an earlier chunk is being written, calls back when that
    // write ends, with what was handed over after it still held below minLength: a second
    // flush, once nothing is being written, writes that and calls back when it is in the file.
    flush: () =>
      new Promise<void>((resolve) => {
        const flushOnce = (then: () => void) =>
          dest.flush((err) => {
            if (err) metrics.auditWriteErrors.inc();
            then();
          });
        try {
          handOver();
          flushOnce(() => {
            try {
              flushOnce(resolve);
            } catch {
              resolve();
            }
          });
        } catch {
          resolve();
        }
      }),
    // Resolves once the file is closed (or after AUDIT_CLOSE_WAIT_MS). Until then pino's exit
    // hook still holds the destination and flushes it synchronously in process.exit, which
    // throws while the file is not open yet: a gateway that failed right after start (its port
    // taken) could not exit, and a cluster worker stayed alive serving nothing.
    close: () =>
      new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(guard);
          resolve();
        };
        const guard = setTimeout(done, AUDIT_CLOSE_WAIT_MS);
        guard.unref();
        dest.once('close', done);
        dest.once('error', done);
        const end = (): void => {
          try {
            handOver();
            dest.flushSync();
          } catch {
            // the disk is full; nothing more to do
          }
          try {
            dest.end();
          } catch {
            done(); // already closed
          }
        };
        if (opening === 'open') end();
        else if (opening === 'pending') dest.once('ready', end);
        else done();
      }),
  };
}
