import { hasBody, type RequestContext, type TraceStep } from './context.js';
import type { CompiledRoute } from './config/compile.js';
import { CODES } from './errors.js';
import {
  isAnswer,
  type Answer,
  type Deny,
  type Outcome,
  type Policy,
  type ResponseHead,
  type Services,
  type Verdict,
} from './policy.js';
import { METHODS } from 'node:http';
import { parseBody } from './body.js';
import { METHOD_NAMES } from './config/schema.js';

/**
 * Runs a route's compiled policy arrays by index. Owns monitor mode, fail-open/closed,
 * the per-policy trace, body buffering, and the accounting after the response.
 */

export interface PhaseResult {
  readonly deny?: Deny;
  readonly answer?: Answer['answer'];
  /** the policy that decided */
  readonly by?: string;
}

export interface PhaseOptions {
  /** evaluate only these policy names (replay --only) */
  readonly only?: ReadonlySet<string>;
  /** stop before reading the body (never used by the server) */
  readonly skipBody?: boolean;
}

type Hook = 'onRequest' | 'onIdentified' | 'onBody';

function elapsedMicros(t0: bigint): number {
  return microsBetween(t0, process.hrtime.bigint());
}

/** Whole microseconds between two hrtime.bigint() readings (no BigInt division). */
function microsBetween(t0: bigint, t1: bigint): number {
  return Math.floor(Number(t1 - t0) / 1000);
}

/** A hook's result when it may be asynchronous: a thenable is awaited, anything else is the verdict. */
function isThenable(v: unknown): v is PromiseLike<Verdict> {
  return v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function';
}

/** A failing policy hook is logged at most once per this interval (every failure is counted). */
export const POLICY_FAILURE_LOG_INTERVAL_MS = 10_000;

/** Per gateway (its metrics), per policy and hook: when a failure was last logged, and the failures left out since. */
const failureLogs = new WeakMap<object, Map<string, { at: number; suppressed: number }>>();

/**
 * Count a policy hook's failure, and log it unless the same hook of the same policy was
 * logged within {@link POLICY_FAILURE_LOG_INTERVAL_MS}: with its store down, a policy fails
 * on every request, and one line per request would bury the log. The next line says how
 * many failures it stands for.
 */
export function reportPolicyFailure(
  policy: string,
  hook: string,
  ctx: RequestContext,
  services: Services,
  err: unknown,
): void {
  services.metrics.policyErrors.inc({ policy });
  let failureLog = failureLogs.get(services.metrics);
  if (failureLog === undefined) failureLogs.set(services.metrics, (failureLog = new Map()));
  const key = `${policy}\u0000${hook}`;
  const now = services.now();
  const last = failureLog.get(key);
  if (last !== undefined && now - last.at < POLICY_FAILURE_LOG_INTERVAL_MS && now >= last.at) {
    last.suppressed++;
    return;
  }
  const suppressed = last?.suppressed ?? 0;
  if (failureLog.size >= 1000) failureLog.clear();
  failureLog.set(key, { at: now, suppressed: 0 });
  services.log.error(
    {
      policy,
      hook,
      request_id: ctx.id,
      err: (err as Error).message,
      ...(suppressed > 0 ? { failures_not_logged: suppressed } : {}),
    },
    'policy failed',
  );
}

function hookFailed(
  policy: Policy,
  hook: Hook,
  ctx: RequestContext,
  services: Services,
  err: unknown,
): 'error' {
  reportPolicyFailure(policy.name, hook, ctx, services, err);
  return 'error';
}

/**
 * Call a hook. A synchronous verdict is returned as is (no promise, no microtask: most
 * hooks of the default policies answer synchronously); a thenable is returned for the
 * caller to await. A throw becomes 'error'.
 */
function callHook(
  policy: Policy,
  hook: Hook,
  ctx: RequestContext,
  services: Services,
): Verdict | 'error' | PromiseLike<Verdict> {
  try {
    return policy[hook]!(ctx);
  } catch (err) {
    return hookFailed(policy, hook, ctx, services, err);
  }
}

async function awaitHook(
  policy: Policy,
  hook: Hook,
  ctx: RequestContext,
  services: Services,
  pending: PromiseLike<Verdict>,
): Promise<Verdict | 'error'> {
  try {
    return await pending;
  } catch (err) {
    return hookFailed(policy, hook, ctx, services, err);
  }
}

/** Apply a verdict; returns a final result, or undefined to go on. */
function settle(
  policy: Policy,
  v: Verdict | 'error',
  ctx: RequestContext,
  micros: number,
): PhaseResult | undefined {
  if (v === undefined) {
    ctx.trace.push({ policy: policy.name, verdict: 'pass', micros });
    return undefined;
  }
  if (v === 'error') {
    ctx.trace.push({ policy: policy.name, verdict: 'error', detail: { failure: policy.failure }, micros });
    if (policy.failure === 'closed') {
      return {
        deny: { code: 'service_unavailable', detail: { policy: policy.name, failure: 'closed' } },
        by: policy.name,
      };
    }
    return undefined;
  }
  if (isAnswer(v)) {
    ctx.trace.push({ policy: policy.name, verdict: 'pass', detail: { answered: v.answer.status }, micros });
    return { answer: v.answer, by: policy.name };
  }
  const step: TraceStep = {
    policy: policy.name,
    verdict: policy.mode === 'monitor' ? 'monitor' : 'deny',
    code: v.code,
    micros,
    ...(v.reason !== undefined || CODES[v.code].reason !== undefined
      ? { reason: v.reason ?? CODES[v.code].reason }
      : {}),
    ...(v.ruleIds ? { ruleIds: v.ruleIds } : {}),
    ...(v.detail ? { detail: v.detail } : {}),
  };
  ctx.trace.push(step);
  if (policy.mode === 'monitor') {
    ctx.monitored.push(v);
    return undefined;
  }
  return { deny: v, by: policy.name };
}

type StageResult = PhaseResult | undefined;

/**
 * Run one stage's hooks in order. Synchronous while the hooks answer synchronously;
 * from the first hook that returns a promise on, the rest runs in an async continuation.
 */
function runStage(
  list: readonly Policy[],
  hook: Hook,
  ctx: RequestContext,
  services: Services,
  only: ReadonlySet<string> | undefined,
): StageResult | Promise<StageResult> {
  if (list.length === 0) return undefined;
  // one clock reading per hook: a hook's end is the next one's start
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < list.length; i++) {
    const p = list[i]!;
    if (only !== undefined && !only.has(p.name)) continue;
    const v = callHook(p, hook, ctx, services);
    if (isThenable(v)) return continueStage(list, i, hook, ctx, services, only, v, t0);
    const t1 = process.hrtime.bigint();
    const r = settle(p, v, ctx, microsBetween(t0, t1));
    if (r !== undefined) return r;
    t0 = t1;
  }
  return undefined;
}

async function continueStage(
  list: readonly Policy[],
  at: number,
  hook: Hook,
  ctx: RequestContext,
  services: Services,
  only: ReadonlySet<string> | undefined,
  pending: PromiseLike<Verdict>,
  t0: bigint,
): Promise<StageResult> {
  const p = list[at]!;
  const v = await awaitHook(p, hook, ctx, services, pending);
  const r = settle(p, v, ctx, elapsedMicros(t0));
  if (r !== undefined) return r;
  for (let i = at + 1; i < list.length; i++) {
    const q = list[i]!;
    if (only !== undefined && !only.has(q.name)) continue;
    const t1 = process.hrtime.bigint();
    let w = callHook(q, hook, ctx, services);
    if (isThenable(w)) w = await awaitHook(q, hook, ctx, services, w);
    const s = settle(q, w, ctx, elapsedMicros(t1));
    if (s !== undefined) return s;
  }
  return undefined;
}

/**
 * Ceiling of a body buffered for inspection when no size_limit applies to the route
 * (size_limit disabled): larger bodies get 413 instead of filling the memory.
 */
export const MAX_BUFFERED_BODY = 64 * 1024 * 1024;

/** Read the body into memory up to `limit` bytes; undefined when over the limit. */
export function bufferBody(ctx: RequestContext, limit: number): Promise<Buffer | undefined | 'aborted'> {
  return new Promise((resolve) => {
    const src = ctx.bodySource;
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (v: Buffer | undefined | 'aborted') => {
      if (done) return;
      done = true;
      src.off('data', onData);
      src.off('end', onEnd);
      src.off('error', onError);
      src.off('aborted', onError);
      resolve(v);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        finish(undefined);
        return;
      }
      chunks.push(chunk);
    };
    // An HTTP/2 stream reset by the client (RST_STREAM) may end its request body quietly, with
    // 'end' after part of it (when the reset came with the data, or its 'aborted' event before
    // this read began): the request's `aborted` flag is what tells a cut body from a whole one.
    const cut = () => (src as { aborted?: boolean }).aborted === true;
    const onEnd = () =>
      finish(cut() ? 'aborted' : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    const onError = () => finish('aborted');
    // A request whose connection closed before an asynchronous check let its body be read
    // (or whose handling was cancelled) emits nothing more: without this the wait never ends.
    if (ctx.signal.aborted || cut() || (src.destroyed && !src.readableEnded)) {
      finish('aborted');
      return;
    }
    src.on('data', onData);
    src.on('end', onEnd);
    src.on('error', onError);
    src.on('aborted', onError);
    if (src.readableEnded) onEnd();
  });
}

function mediaTypeOf(ctx: RequestContext): string {
  const ct = ctx.headers['content-type'];
  if (ct === undefined) return '';
  const semi = ct.indexOf(';');
  return (semi === -1 ? ct : ct.slice(0, semi)).trim().toLowerCase();
}

/**
 * The request phase: onRequest → onIdentified → body → onBody. `route` is the matched
 * route or the generation's `unmatched` route.
 */
export async function runRequestPhase(
  route: CompiledRoute,
  ctx: RequestContext,
  services: Services,
  opts: PhaseOptions = {},
): Promise<PhaseResult> {
  const only = opts.only;
  let r = runStage(route.onRequest, 'onRequest', ctx, services, only);
  if (r instanceof Promise) r = await r;
  if (r !== undefined) return r;
  r = runStage(route.onIdentified, 'onIdentified', ctx, services, only);
  if (r instanceof Promise) r = await r;
  if (r !== undefined) return r;
  if (opts.skipBody) return {};

  const wantsBody = route.needsBody || route.readBody.length > 0;
  if (wantsBody && hasBody(ctx)) {
    let handled = false;
    for (const p of route.readBody) {
      if (only !== undefined && !only.has(p.name)) continue;
      const t0 = process.hrtime.bigint();
      let v: Verdict | 'skip' | 'error';
      try {
        v = await p.readBody!(ctx);
      } catch (err) {
        reportPolicyFailure(p.name, 'readBody', ctx, services, err);
        v = 'error';
      }
      if (v === 'skip') continue;
      handled = true;
      // A body reader that failed cannot fall back: the stream is consumed. Refuse.
      if (v === 'error') {
        ctx.trace.push({ policy: p.name, verdict: 'error', micros: elapsedMicros(t0) });
        return {
          deny: { code: 'bad_request', message: 'The request body could not be processed.' },
          by: p.name,
        };
      }
      const res = settle(p, v, ctx, elapsedMicros(t0));
      if (res !== undefined) return res;
      break;
    }
    if (!handled && route.needsBody) {
      // Without a size_limit policy the body would be buffered without bound (memory DoS).
      const limit = Math.min(route.bodyLimit, MAX_BUFFERED_BODY);
      const raw = await bufferBody(ctx, limit);
      if (raw === 'aborted')
        return { deny: { code: 'bad_request', message: 'The request body was not received completely.' } };
      if (raw === undefined) {
        return { deny: { code: 'payload_too_large', detail: { limit } }, by: 'size-limit' };
      }
      ctx.body = parseBody(mediaTypeOf(ctx), raw, ctx.headers['content-type']);
    }
  }
  if (ctx.body !== undefined || !route.needsBody || !hasBody(ctx)) {
    r = runStage(route.onBody, 'onBody', ctx, services, only);
    if (r instanceof Promise) r = await r;
    if (r !== undefined) return r;
  }
  return {};
}

/** Run the response-phase hooks over a head (upstream or gateway-made). Never throws. */
export async function runResponsePhase(
  route: CompiledRoute,
  ctx: RequestContext,
  head: ResponseHead,
  services: Services,
): Promise<void> {
  const list = route.onResponse;
  for (let i = 0; i < list.length; i++) {
    const p = list[i]!;
    try {
      const r = p.onResponse!(ctx, head);
      if (r !== undefined) await r;
    } catch (err) {
      reportPolicyFailure(p.name, 'onResponse', ctx, services, err);
    }
  }
}

/** Run the accounting hooks after the response. Never throws. */
export function runDone(
  route: CompiledRoute,
  ctx: RequestContext,
  outcome: Outcome,
  services: Services,
): void {
  const list = route.onDone;
  for (let i = 0; i < list.length; i++) {
    const p = list[i]!;
    try {
      p.onDone!(ctx, outcome);
    } catch (err) {
      reportPolicyFailure(p.name, 'onDone', ctx, services, err);
    }
  }
}

/** Audit and count a refusal or a monitored would-be refusal. */
export function recordDeny(
  ctx: RequestContext,
  deny: Deny,
  decision: 'deny' | 'monitor',
  status: number,
  services: Services,
): void {
  const spec = CODES[deny.code];
  const reason = deny.reason ?? spec.reason;
  const event = deny.event ?? spec.event;
  if (decision === 'deny' && reason !== undefined) services.metrics.blocked.inc({ reason });
  if (event !== undefined) {
    services.audit.request(event, ctx, {
      decision,
      reason: reason ?? deny.code,
      code: deny.code,
      status,
      ...(deny.ruleIds && deny.ruleIds.length > 0 ? { rule_ids: deny.ruleIds } : {}),
      ...(deny.detail ? { detail: deny.detail } : {}),
    });
  }
}

/** Framing problems refused before routing (RFC 9112 §6.1, §6.3, §3.2). */
export function framingDeny(ctx: RequestContext, maxHeaders: number): Deny | undefined {
  const te = ctx.headers['transfer-encoding'];
  if (te !== undefined) {
    if (ctx.headers['content-length'] !== undefined) {
      return {
        code: 'bad_request',
        message: 'Conflicting Content-Length and Transfer-Encoding.',
        ruleIds: ['framing-cl-te'],
      };
    }
    if (te.trim().toLowerCase() !== 'chunked') {
      return { code: 'bad_request', message: 'Unsupported Transfer-Encoding.', ruleIds: ['framing-te'] };
    }
    // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing (an
    // HTTP/1.0 hop in front would delimit the body otherwise, so the bytes after the chunked
    // body could be a request of their own). Refused, as NGINX does, never forwarded.
    if (ctx.httpVersion === '1.0') {
      return {
        code: 'bad_request',
        message: 'Transfer-Encoding is not allowed in an HTTP/1.0 request.',
        ruleIds: ['framing-te-http10'],
      };
    }
  }
  if (ctx.rawHeaders.length / 2 > maxHeaders) {
    return { code: 'headers_too_large', message: 'Too many request headers.' };
  }
  // RFC 9112 §3.2: more than one Host field line is a 400 (Node keeps the first silently).
  let hosts = 0;
  const raw = ctx.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host' && ++hosts > 1) {
      return { code: 'bad_request', message: 'More than one Host header.', ruleIds: ['framing-host'] };
    }
  }
  // the asterisk-form is an OPTIONS request about the server as a whole (RFC 9112 §3.2.4),
  // answered by the gateway itself (serverWideOptions)
  if (ctx.target === '*' ? ctx.method !== 'OPTIONS' : ctx.target.charCodeAt(0) !== 47) {
    return {
      code: 'bad_request',
      message: 'The request target must be a path.',
      ruleIds: ['request-target'],
    };
  }
  if (!PARSER_METHODS.has(ctx.method)) {
    // the listener's HTTP parser refuses these before a request exists; replay says the same
    return { code: 'bad_request', message: 'Unknown request method.', ruleIds: ['method-token'] };
  }
  if (!ROUTABLE_METHODS.has(ctx.method)) {
    // TRACE (cross-site tracing), WebDAV and other methods no route can name: a route
    // without `methods` means any of the methods a route could list, not these.
    return { code: 'method_not_allowed', headers: { Allow: ROUTABLE_ALLOW }, ruleIds: ['method'] };
  }
  if (ctx.httpVersion !== '1.1' && ctx.httpVersion !== '1.0') {
    return { code: 'bad_request', message: 'Unsupported HTTP version.', ruleIds: ['http-version'] };
  }
  // Invalid percent-encoding or UTF-8 in the target is judged by the request-inspection
  // policies (pattern_block's protocol pack answers 403 request_blocked, as a WAF does);
  // with inspection off it is forwarded, as NGINX forwards it.
  return undefined;
}

/** The methods Node's HTTP parser accepts (any other method is answered with 400 before a request exists). */
const PARSER_METHODS: ReadonlySet<string> = new Set(METHODS);
const ROUTABLE_METHODS: ReadonlySet<string> = new Set(METHOD_NAMES);
const ROUTABLE_ALLOW = METHOD_NAMES.join(', ');

/**
 * A request target with a fragment (`/api/auth/login#x`): RFC 9112 §3.2 has no fragment in a
 * request-target (a client strips it before sending) and Envoy refuses it; Node's parser
 * accepts it. Refused with 400 after the request checks, so an attack that carries one is
 * still judged (and counted, and banned) as the attack it is; meanwhile the request was
 * routed and inspected without the fragment (see createContext). Never forwarded. `%23` is
 * an ordinary path or query character and passes.
 */
export function targetFragmentDeny(ctx: RequestContext): Deny | undefined {
  return ctx.target.includes('#')
    ? {
        code: 'bad_request',
        message: 'The request target must not contain a fragment (#).',
        ruleIds: ['request-target-fragment'],
      }
    : undefined;
}

/**
 * A path whose route depends on how the service reads it: `/api/ADMIN/users`,
 * `/api/admin%2Fusers`, `/api/x/..;/admin/users` or `POST /api/receipts/upload/` match a
 * route here (`/api/**`) while a case-insensitive, slash-decoding, `;`-stripping or
 * trailing-slash-lenient service acts on a path another route guards (see
 * `Router.ambiguous`). Refused with 400 after the request checks, as a fragment is;
 * never forwarded. `ambiguous` is the router's verdict for the request.
 */
export function ambiguousPathDeny(ambiguous: boolean): Deny | undefined {
  return ambiguous
    ? {
        code: 'bad_request',
        message:
          'The request path is ambiguous (letter case, an encoded slash or backslash, a ";" parameter or a trailing slash would route it elsewhere).',
        ruleIds: ['path-ambiguous'],
      }
    : undefined;
}

/**
 * `OPTIONS *` asks what the server as a whole supports (RFC 9110 §9.3.7). It names no
 * resource, so no route and no upstream is concerned: once the request phase let it through,
 * the gateway answers 204 with the methods a route can allow.
 */
export function serverWideOptions(
  ctx: RequestContext,
): { status: number; headers: Record<string, string> } | undefined {
  return ctx.target === '*' ? { status: 204, headers: { Allow: ROUTABLE_ALLOW } } : undefined;
}
