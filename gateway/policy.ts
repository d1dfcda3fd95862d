import type { TObject, Static } from '@sinclair/typebox';
import type { RequestContext } from './context.js';
import type { ErrorCode, BlockReason, AuditEvent } from './errors.js';
import type { Store } from './store/types.js';
import type { Metrics } from './observability/metrics.js';
import type { AuditLog } from './observability/audit.js';

/** A refusal. The pipeline renders it (reply.ts), audits it and counts it. */
export interface Deny {
  readonly code: ErrorCode;
  /** client-facing message; defaults to the code table's. Never echo secrets or payloads. */
  readonly message?: string;
  /** metric reason override from the bounded set (e.g. the pattern family) */
  readonly reason?: BlockReason;
  /** audit event override (defaults to the code table's) */
  readonly event?: AuditEvent;
  readonly ruleIds?: readonly string[];
  /** extra response headers (Retry-After, WWW-Authenticate, Allow …) */
  readonly headers?: Readonly<Record<string, string>>;
  /** extra audit / explain fields; never raw secrets */
  readonly detail?: Readonly<Record<string, unknown>>;
  /** override the status (e.g. 400 for an absent User-Agent); must be the code's family */
  readonly status?: number;
}

/** The gateway answers the request itself without it being a refusal (a CORS preflight). */
export interface Answer {
  readonly answer: { readonly status: number; readonly headers: Readonly<Record<string, string>> };
}

/** undefined = go on. */
export type Verdict = Deny | Answer | undefined;

export function isAnswer(v: Deny | Answer): v is Answer {
  return (v as Answer).answer !== undefined;
}

export type Mode = 'enforce' | 'monitor';

/** The response head, mutable by response-phase policies before it is written to the client. */
export interface ResponseHead {
  status: number;
  /** lowercase names */
  readonly headers: Record<string, string | string[] | undefined>;
  /** true when the gateway made this response (an error), false for upstream responses */
  readonly fromGateway: boolean;
}

/** What happened to a request, for accounting policies (lockout, auto-ban, alerts). */
export interface Outcome {
  readonly status: number;
  readonly decision: 'allow' | 'deny' | 'monitor';
  /** the denial, when the gateway refused the request */
  readonly deny: Deny | undefined;
  /** which policy denied */
  readonly deniedBy: string | undefined;
}

/**
 * A compiled policy: everything expensive was done by its factory's compile().
 * Hooks run in registry order within each stage:
 *   onRequest   → headers only, before authentication
 *   onIdentified→ after the authentication policies (ctx.identity set when authenticated)
 *   readBody    → at most one policy per route may own body reading (uploads)
 *   onBody      → the body is in ctx.body (only when some policy declared needsBody)
 *   onResponse  → upstream or gateway response head, before it is sent
 *   onDone      → after the response was sent (accounting; must not throw)
 */
export interface Policy {
  readonly name: string;
  readonly mode: Mode;
  /** what the pipeline does when a hook throws or rejects (store down, parse error) */
  readonly failure: 'open' | 'closed';
  /** ask the pipeline to buffer and parse the body (up to the route's body limit) */
  readonly needsBody?: boolean;
  /** the route's body size limit in bytes (the size-limit policy sets it; the pipeline enforces it while streaming) */
  readonly bodyLimit?: number;
  onRequest?(ctx: RequestContext): Verdict | Promise<Verdict>;
  onIdentified?(ctx: RequestContext): Verdict | Promise<Verdict>;
  /**
   * Take over reading the body. Return 'skip' when this request is not for you (the
   * pipeline then buffers as usual), undefined when you filled ctx.body/ctx.forwardBody,
   * or a Deny.
   */
  readBody?(ctx: RequestContext): Promise<Verdict | 'skip'>;
  onBody?(ctx: RequestContext): Verdict | Promise<Verdict>;
  onResponse?(ctx: RequestContext, head: ResponseHead): void | Promise<void>;
  onDone?(ctx: RequestContext, outcome: Outcome): void;
  /** release timers or clients when the generation is retired */
  close?(): void | Promise<void>;
}

/** A little structured logger for operational messages (stderr, not the audit log). */
export interface OpsLogger {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
}

/** Services every policy may use; created once per process (they survive reloads). */
export interface Services {
  readonly store: Store;
  readonly metrics: Metrics;
  readonly audit: AuditLog;
  readonly log: OpsLogger;
  /** ms since epoch; tests pass a fake clock */
  readonly now: () => number;
  /** process-lifetime cache for things that must survive reloads (JWKS clients, …) */
  readonly persistent: Map<string, unknown>;
  /** environment the config was interpolated from */
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** Given to compile(): the services plus where this policy sits. */
export interface CompileContext {
  readonly services: Services;
  /** key path of the effective policy block, for ConfigError */
  readonly path: readonly (string | number)[];
  /** the whole validated config (read-only), for cross-policy settings */
  readonly config: Readonly<Record<string, unknown>>;
  /** directory of gateway.yaml, to resolve relative file paths */
  readonly configDir: string;
}

/**
 * A policy factory: its block of gateway.yaml (schema with defaults) and compile().
 * `compile` runs once per distinct effective block per config generation and throws
 * ConfigError on semantic errors (bad CIDR, short secret, …).
 * The schema must contain `enabled` (boolean) and `mode` ('enforce' | 'monitor').
 */
export interface PolicyFactory<S extends TObject = TObject> {
  readonly name: string;
  /** the YAML key under `policies:` and `routes[].policies:` */
  readonly key: string;
  readonly schema: S;
  /** belongs to the `waf` group of `replay --only` */
  readonly waf?: boolean;
  compile(config: Static<S>, ctx: CompileContext): Policy | Promise<Policy>;
}
