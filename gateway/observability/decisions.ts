/**
 * "Why was request X refused?": a bounded in-memory record of recent decisions,
 * served by the admin listener at `GET /api/decisions/{request_id}` and printed by
 * `receipt-gateway explain`.
 *
 * Two rings: refused (and monitor-flagged) requests are kept in the larger one, plain
 * allows in a smaller one, so a flood of ordinary traffic never pushes the interesting
 * decisions out. Memory is bounded by the ring sizes and by the per-entry caps below
 * (steps, detail size, path length); recording is O(1) and never allocates beyond the
 * entry itself.
 */
import type { RequestContext, TraceStep } from '../context.js';
import { redactTarget } from './audit.js';
import { isoFormatter } from './iso-time.js';
import { ownString } from '../own-string.js';

/** One policy's verdict inside a decision. */
export interface DecisionStep {
  policy: string;
  verdict: 'pass' | 'deny' | 'monitor' | 'error';
  code?: string;
  reason?: string;
  rule_ids?: string[];
  /** matched targets (names and redacted excerpts) and other facts the policy reported */
  detail?: Record<string, unknown>;
  /** microseconds spent in the policy */
  micros: number;
}

export interface DecisionEntry {
  request_id: string;
  /** ISO 8601 time of arrival */
  time: string;
  method: string;
  /** the request target with secret query values redacted */
  path: string;
  route: string;
  client_ip: string;
  status: number;
  decision: 'allow' | 'deny' | 'monitor';
  /** the error code of a refusal made by the gateway */
  code?: string;
  steps: DecisionStep[];
  /** anomaly score, when a scoring policy computed one */
  score?: number;
  total_ms: number;
}

/** Sizes of the decision rings (gateway.yaml `observability.decisions`). */
export interface DecisionLogOptions {
  /**
   * Refused and monitor-flagged requests kept. Default 1000.
   * @example decisions: { size: 2000 }
   */
  size?: number;
  /** Allowed requests kept. Default a quarter of `size` (at least 1). */
  allowSize?: number;
}

/** Longest request id accepted (SPEC §4: printable, ≤ 128 characters). */
export const MAX_REQUEST_ID_LENGTH = 128;
/** printable ASCII without spaces, 1–128 characters, and not `.` or `..` */
const REQUEST_ID_RE = /^(?!\.\.?$)[\x21-\x7e]{1,128}$/;

/**
 * Whether a string is a well-formed request id: printable ASCII without spaces, 1–128
 * characters. `.` and `..` are not: as the last segment of `/api/decisions/{id}` every URL
 * parser resolves them away (`%2e%2e` too), so such a request could not be explained.
 */
export function isWellFormedRequestId(id: string): boolean {
  return REQUEST_ID_RE.test(id);
}

/** Per-entry caps that keep the rings' memory bounded whatever the policies report. */
export const ENTRY_LIMITS = {
  maxSteps: 64,
  maxPathLength: 2048,
  maxRuleIds: 32,
  /** JSON size of one step's detail; larger details are replaced by a truncated excerpt */
  maxDetailBytes: 2048,
} as const;

class Ring {
  private readonly slots: (DecisionEntry | undefined)[];
  private next = 0;
  private filled = 0;
  constructor(readonly capacity: number) {
    this.slots = new Array<DecisionEntry | undefined>(capacity);
  }
  /** Adds an entry, returns the one it overwrote. */
  push(e: DecisionEntry): DecisionEntry | undefined {
    const old = this.slots[this.next];
    this.slots[this.next] = e;
    this.next = (this.next + 1) % this.capacity;
    if (this.filled < this.capacity) this.filled++;
    return old;
  }
  /** Newest first. */
  *newest(): Generator<DecisionEntry> {
    for (let i = 1; i <= this.filled; i++) {
      const e = this.slots[(this.next - i + this.capacity) % this.capacity];
      if (e) yield e;
    }
  }
  get length(): number {
    return this.filled;
  }
}

export interface RecentQuery {
  /** only refused and monitor-flagged requests */
  deniedOnly?: boolean;
  /** at most this many, newest first (default 50) */
  limit?: number;
}

/** The bounded record of recent decisions. */
export class DecisionLog {
  private readonly denied: Ring;
  private readonly allowed: Ring;
  /**
   * The latest entry of each ring by request id. A client may send the id of another request
   * (X-Request-Id is kept when well-formed): a refused or flagged decision is then still the
   * one `get` answers, not hidden by a later allowed request that reused its id.
   */
  private readonly deniedById = new Map<string, DecisionEntry>();
  private readonly allowedById = new Map<string, DecisionEntry>();

  constructor(opts: DecisionLogOptions = {}) {
    const size = Math.max(1, Math.floor(opts.size ?? 1000));
    const allowSize = Math.max(1, Math.floor(opts.allowSize ?? Math.ceil(size / 4)));
    this.denied = new Ring(size);
    this.allowed = new Ring(allowSize);
  }

  /** Keep a decision. The entry is capped (steps, path, details) and must not be mutated afterwards. */
  record(entry: DecisionEntry): void {
    this.#keep(capEntry(entry));
  }

  /**
   * Keep the decision of a finished request: the same entry as
   * `record(decisionFromContext(ctx, outcome))`, built capped in one pass (no copy of
   * each step made to be copied again). The gateway calls this for every request.
   */
  recordContext(ctx: RequestContext, outcome: DecisionOutcome): void {
    this.#keep(cappedEntryFromContext(ctx, outcome));
  }

  #keep(e: DecisionEntry): void {
    const allowed = e.decision === 'allow';
    const ring = allowed ? this.allowed : this.denied;
    const byId = allowed ? this.allowedById : this.deniedById;
    const evicted = ring.push(e);
    if (evicted && byId.get(evicted.request_id) === evicted) byId.delete(evicted.request_id);
    byId.set(e.request_id, e);
  }

  /**
   * The decision for a request id, if still kept: the latest refused or flagged one, else
   * the latest allowed one.
   */
  get(requestId: string): DecisionEntry | undefined {
    return this.deniedById.get(requestId) ?? this.allowedById.get(requestId);
  }

  /** Recent decisions, newest first. */
  recent(q: RecentQuery = {}): DecisionEntry[] {
    const limit = Math.max(0, Math.floor(q.limit ?? 50));
    if (limit === 0) return [];
    if (q.deniedOnly) return take(this.denied.newest(), limit);
    // merge both rings by time, newest first
    const a = take(this.denied.newest(), limit);
    const b = take(this.allowed.newest(), limit);
    const out: DecisionEntry[] = [];
    let i = 0;
    let j = 0;
    while (out.length < limit && (i < a.length || j < b.length)) {
      if (j >= b.length || (i < a.length && a[i]!.time >= b[j]!.time)) out.push(a[i++]!);
      else out.push(b[j++]!);
    }
    return out;
  }

  /** How many entries each ring holds and can hold. */
  stats(): { denied: number; deniedCapacity: number; allowed: number; allowedCapacity: number } {
    return {
      denied: this.denied.length,
      deniedCapacity: this.denied.capacity,
      allowed: this.allowed.length,
      allowedCapacity: this.allowed.capacity,
    };
  }
}

/** Create the decision log (see {@link DecisionLogOptions}). */
export function createDecisionLog(opts: DecisionLogOptions = {}): DecisionLog {
  return new DecisionLog(opts);
}

function take<T>(it: Iterable<T>, n: number): T[] {
  const out: T[] = [];
  for (const x of it) {
    if (out.length >= n) break;
    out.push(x);
  }
  return out;
}

function capDetail(detail: Record<string, unknown>): Record<string, unknown> {
  let json: string;
  try {
    json = JSON.stringify(detail);
  } catch {
    return { truncated: true, excerpt: '[unserialisable detail]' };
  }
  if (json === undefined) return {};
  // a plain-JSON copy: what is kept is exactly what is measured (no Map, Buffer or class instance survives)
  if (Buffer.byteLength(json) <= ENTRY_LIMITS.maxDetailBytes)
    return JSON.parse(json) as Record<string, unknown>;
  return { truncated: true, excerpt: json.slice(0, ENTRY_LIMITS.maxDetailBytes / 2) + '…' };
}

function capStep(s: DecisionStep): DecisionStep {
  const out: DecisionStep = { policy: s.policy, verdict: s.verdict, micros: s.micros };
  if (s.code !== undefined) out.code = s.code;
  if (s.reason !== undefined) out.reason = s.reason;
  if (s.rule_ids?.length) out.rule_ids = s.rule_ids.slice(0, ENTRY_LIMITS.maxRuleIds).map(String);
  if (s.detail !== undefined) out.detail = capDetail(s.detail);
  return out;
}

/**
 * The path as kept: at most {@link ENTRY_LIMITS.maxPathLength} characters. The cut is a
 * copy, not a slice: a slice would keep the whole target (up to the max header size) alive
 * for as long as the entry is kept.
 */
function cappedPath(path: string): string {
  return path.length > ENTRY_LIMITS.maxPathLength
    ? ownString(path.slice(0, ENTRY_LIMITS.maxPathLength)) + '…'
    : path;
}

function capEntry(e: DecisionEntry): DecisionEntry {
  const out: DecisionEntry = {
    ...e,
    path: cappedPath(e.path),
    steps: e.steps.slice(0, ENTRY_LIMITS.maxSteps).map(capStep),
  };
  if (e.steps.length > ENTRY_LIMITS.maxSteps) {
    out.steps.push({
      policy: '…',
      verdict: 'pass',
      detail: { omitted_steps: e.steps.length - ENTRY_LIMITS.maxSteps },
      micros: 0,
    });
  }
  return out;
}

/** Convert the pipeline's trace step (camelCase) to the decision step (snake_case). */
export function stepFromTrace(t: TraceStep): DecisionStep {
  const s: DecisionStep = { policy: t.policy, verdict: t.verdict, micros: Math.round(t.micros) };
  if (t.code !== undefined) s.code = t.code;
  if (t.reason !== undefined) s.reason = t.reason;
  if (t.ruleIds?.length) s.rule_ids = [...t.ruleIds];
  if (t.detail !== undefined) s.detail = { ...t.detail };
  return s;
}

/** What the pipeline knows of a finished request besides its context. */
export interface DecisionOutcome {
  status: number;
  decision: 'allow' | 'deny' | 'monitor';
  code?: string;
  score?: number;
  totalMs?: number;
}

// ISO times of arrival without a Date per request
const isoAt = isoFormatter();

/**
 * Build a decision entry from a finished request: what the pipeline calls at the end of
 * every request (`decisions.record(decisionFromContext(ctx, {...}))`).
 */
export function decisionFromContext(ctx: RequestContext, outcome: DecisionOutcome): DecisionEntry {
  const totalMs = outcome.totalMs ?? Number(process.hrtime.bigint() - ctx.start) / 1e6;
  const e: DecisionEntry = {
    request_id: ctx.id,
    time: isoAt(ctx.receivedAt),
    method: ctx.method,
    path: redactTarget(ctx.target),
    route: ctx.routeName,
    client_ip: ctx.clientIp,
    status: outcome.status,
    decision: outcome.decision,
    steps: ctx.trace.map(stepFromTrace),
    total_ms: Math.round(totalMs * 1000) / 1000,
  };
  if (outcome.code !== undefined) e.code = outcome.code;
  if (outcome.score !== undefined) e.score = outcome.score;
  return e;
}

/** capEntry(decisionFromContext(ctx, outcome)), in one pass. */
function cappedEntryFromContext(ctx: RequestContext, outcome: DecisionOutcome): DecisionEntry {
  const totalMs = outcome.totalMs ?? Number(process.hrtime.bigint() - ctx.start) / 1e6;
  const path = redactTarget(ctx.target);
  const trace = ctx.trace;
  const kept = Math.min(trace.length, ENTRY_LIMITS.maxSteps);
  const steps: DecisionStep[] = new Array<DecisionStep>(kept);
  for (let i = 0; i < kept; i++) {
    const t = trace[i]!;
    if (
      t.verdict === 'pass' &&
      t.code === undefined &&
      t.reason === undefined &&
      t.ruleIds === undefined &&
      t.detail === undefined &&
      Number.isInteger(t.micros)
    ) {
      // the pipeline's plain pass step ({ policy, verdict, micros }) already is its
      // capped decision step: keep it rather than a copy (traces are not changed after
      // the request)
      steps[i] = t as DecisionStep;
      continue;
    }
    const s: DecisionStep = { policy: t.policy, verdict: t.verdict, micros: Math.round(t.micros) };
    if (t.code !== undefined) s.code = t.code;
    if (t.reason !== undefined) s.reason = t.reason;
    if (t.ruleIds?.length) s.rule_ids = t.ruleIds.slice(0, ENTRY_LIMITS.maxRuleIds).map(String);
    if (t.detail !== undefined) s.detail = capDetail({ ...t.detail });
    steps[i] = s;
  }
  if (trace.length > ENTRY_LIMITS.maxSteps) {
    steps.push({
      policy: '…',
      verdict: 'pass',
      detail: { omitted_steps: trace.length - ENTRY_LIMITS.maxSteps },
      micros: 0,
    });
  }
  const e: DecisionEntry = {
    request_id: ctx.id,
    time: isoAt(ctx.receivedAt),
    method: ctx.method,
    path: cappedPath(path),
    route: ctx.routeName,
    client_ip: ctx.clientIp,
    status: outcome.status,
    decision: outcome.decision,
    steps,
    total_ms: Math.round(totalMs * 1000) / 1000,
  };
  if (outcome.code !== undefined) e.code = outcome.code;
  if (outcome.score !== undefined) e.score = outcome.score;
  return e;
}
