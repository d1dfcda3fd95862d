import { createContext } from '../../gateway/context-factory.js';
/**
 * Hand-built RequestContext / Services for unit tests of policies: call a factory's
 * compile() with `makeCompileContext()` and its hooks with `makeContext({...})`, no
 * server needed. Everything is real except the audit log (recorded in memory), the ops
 * logger (recorded) and the clock (a fake you advance). The store is the caller's
 * (`makeServices({ store })`); without one, every store call rejects, so a policy that
 * unexpectedly touches the store fails its test loudly.
 */
import { Readable } from 'node:stream';
import { Value } from '@sinclair/typebox/value';
import type { TObject, Static } from '@sinclair/typebox';
import type { RequestContext, RequestBody, Identity } from '../../gateway/context.js';
import type {
  Services,
  CompileContext,
  OpsLogger,
  PolicyFactory,
  Policy,
  ResponseHead,
} from '../../gateway/policy.js';
import type { Store } from '../../gateway/store/types.js';
import type { AuditLog, AuditFields } from '../../gateway/observability/audit.js';
import type { AuditEvent } from '../../gateway/errors.js';
import { Metrics } from '../../gateway/observability/metrics.js';

/** One audit call recorded by the fake audit log. */
export interface AuditRecord {
  readonly event: AuditEvent;
  readonly fields: AuditFields;
  /** request id, for request events */
  readonly requestId?: string;
}

/** One ops-log call recorded by the fake logger. */
export interface LogRecord {
  readonly level: 'info' | 'warn' | 'error';
  readonly obj: Record<string, unknown>;
  readonly msg: string;
}

/** A clock tests move by hand. */
export interface FakeClock {
  now(): number;
  advance(ms: number): void;
  set(ms: number): void;
}

/** 2023-11-14T22:13:20Z: a fixed, round starting time. */
export const CLOCK_START = 1_700_000_000_000;

export function makeClock(start = CLOCK_START): FakeClock {
  let t = start;
  return {
    now: () => t,
    advance(ms) {
      t += ms;
    },
    set(ms) {
      t = ms;
    },
  };
}

export interface TestServices extends Services {
  /** every audit event written, in order */
  readonly audited: AuditRecord[];
  /** every ops-log line, in order */
  readonly logged: LogRecord[];
  /** the fake clock behind `now` (when the caller did not pass its own `now`) */
  readonly clock: FakeClock;
}

/** A store whose every operation rejects: pass a real one when the policy needs it. */
export function noStore(): Store {
  const no = () => Promise.reject(new Error('no store in this test: pass makeServices({ store })'));
  return {
    kind: 'memory',
    consume: no,
    increment: no,
    count: no,
    block: no,
    acquire: no,
    release: no,
    blockedFor: no,
    reset: no,
    listBlocks: no,
    ping: no,
    healthy: () => true,
    close: () => Promise.resolve(),
  };
}

/** Services with a recording audit log and logger, a fake clock and fresh metrics. */
export function makeServices(partial: Partial<Services> & { clock?: FakeClock } = {}): TestServices {
  const audited: AuditRecord[] = [];
  const logged: LogRecord[] = [];
  const clock = partial.clock ?? makeClock();
  const audit: AuditLog = {
    enabled: true,
    request(event, ctx, fields) {
      audited.push({ event, fields, requestId: ctx.id });
    },
    system(event, fields) {
      audited.push({ event, fields });
    },
    reopen() {},
    flush: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
  const log: OpsLogger = {
    info: (obj, msg) => logged.push({ level: 'info', obj, msg }),
    warn: (obj, msg) => logged.push({ level: 'warn', obj, msg }),
    error: (obj, msg) => logged.push({ level: 'error', obj, msg }),
  };
  return {
    store: partial.store ?? noStore(),
    metrics: partial.metrics ?? new Metrics({ defaultMetrics: false }),
    audit: partial.audit ?? audit,
    log: partial.log ?? log,
    now: partial.now ?? (() => clock.now()),
    persistent: partial.persistent ?? new Map(),
    env: partial.env ?? {},
    audited,
    logged,
    clock,
  };
}

/** What a test may say about a request; everything else gets a sensible default. */
export interface ContextInit {
  id?: string;
  method?: string;
  /** path and query as sent; default '/' */
  target?: string;
  /** normalised path; default: target without the query */
  path?: string;
  /** any case; arrays for repeated headers */
  headers?: Record<string, string | string[]>;
  /** the raw list; default: built from `headers` (one entry per array element) */
  rawHeaders?: string[];
  clientIp?: string;
  secure?: boolean;
  httpVersion?: string;
  routeName?: string;
  identity?: Identity;
  /** a buffered body (as the pipeline leaves it for onBody) */
  body?: RequestBody;
  /** the raw body stream content; default empty */
  bodyBytes?: Buffer | string;
  receivedAt?: number;
  signal?: AbortSignal;
}

let counter = 0;

/** A complete RequestContext for calling policy hooks directly. */
export function makeContext(init: ContextInit = {}): RequestContext {
  const target = init.target ?? '/';
  const headers: Record<string, string | string[]> = {};
  const raw: string[] = [];
  for (const [name, value] of Object.entries(init.headers ?? {})) {
    const lower = name.toLowerCase();
    for (const v of Array.isArray(value) ? value : [value]) raw.push(name, v);
    // Node keeps repeated set-cookie as an array, joins cookie with '; ', others with ', '
    if (Array.isArray(value)) {
      headers[lower] = lower === 'set-cookie' ? value : value.join(lower === 'cookie' ? '; ' : ', ');
    } else {
      headers[lower] = value;
    }
  }
  counter += 1;
  // The one constructor of RequestContext, so tests see exactly what the gateway builds.
  const ctx = createContext({
    id: init.id ?? `test-${counter}`,
    method: (init.method ?? 'GET').toUpperCase(),
    target,
    headers: headers as RequestContext['headers'],
    rawHeaders: init.rawHeaders ?? raw,
    clientIp: init.clientIp ?? '127.0.0.1',
    secure: init.secure ?? false,
    httpVersion: init.httpVersion ?? '1.1',
    bodySource: Readable.from(init.bodyBytes === undefined ? [] : [Buffer.from(init.bodyBytes)]),
    signal: init.signal ?? new AbortController().signal,
  });
  const fixed = ctx as { -readonly [K in 'receivedAt' | 'path']: RequestContext[K] };
  fixed.receivedAt = init.receivedAt ?? CLOCK_START;
  if (init.path !== undefined) fixed.path = init.path;
  ctx.routeName = init.routeName ?? 'test';
  ctx.identity = init.identity;
  ctx.body = init.body;
  return ctx;
}

/** A JSON request body as the pipeline would buffer and parse it. */
export function jsonBody(value: unknown): RequestBody {
  const raw = Buffer.from(JSON.stringify(value));
  return { raw, mediaType: 'application/json', json: value };
}

/** A response head for onResponse tests. */
export function makeHead(
  status = 200,
  headers: Record<string, string | string[]> = {},
  fromGateway = false,
): ResponseHead {
  const lower: Record<string, string | string[] | undefined> = {};
  for (const [k, v] of Object.entries(headers)) lower[k.toLowerCase()] = v;
  return { status, headers: lower, fromGateway };
}

/**
 * A policy block as the config loader would hand it to compile(): the schema's defaults
 * filled in, then checked (throws with the first schema error).
 */
export function makeConfig<S extends TObject>(schema: S, partial: Record<string, unknown> = {}): Static<S> {
  const value = Value.Default(schema, Value.Clone(partial)) as Static<S>;
  if (!Value.Check(schema, value)) {
    const first = [...Value.Errors(schema, value)][0];
    throw new Error(`invalid test config at ${first?.path ?? '?'}: ${first?.message ?? 'unknown'}`);
  }
  return value;
}

/** A CompileContext around the given services. */
export function makeCompileContext(
  services: Services = makeServices(),
  over: Partial<Omit<CompileContext, 'services'>> = {},
): CompileContext {
  return {
    services,
    path: over.path ?? ['policies'],
    config: over.config ?? {},
    configDir: over.configDir ?? process.cwd(),
  };
}

/** Fill defaults, validate and compile a factory's block in one call. */
export async function compilePolicy<S extends TObject>(
  factory: PolicyFactory<S>,
  partial: Record<string, unknown> = {},
  services: Services = makeServices(),
  over: Partial<Omit<CompileContext, 'services'>> = {},
): Promise<Policy> {
  return factory.compile(
    makeConfig(factory.schema, partial),
    makeCompileContext(services, { path: ['policies', factory.key], ...over }),
  );
}
