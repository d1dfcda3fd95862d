/**
 * Admin answers that need every cluster worker (`workers: N > 1`). The workers share the
 * admin port, so `GET /metrics`, `GET /api/decisions/{id}` and `GET /api/dashboard` reach one
 * of them; that worker asks the primary, the primary asks every worker over IPC and answers
 * with the whole gateway's figures:
 *
 *   worker ──ask──▶ primary ──collect──▶ every worker ──collected──▶ primary ──answer──▶ worker
 *
 * Metrics are merged by prom-client's `AggregatorRegistry.aggregate`: counters and
 * histograms summed, each gauge by its `aggregator` (metrics.ts), Node's default metrics as
 * prom-client defines them, except `process_start_time_seconds` (see AGGREGATOR_OVERRIDES).
 * A decision is the first worker's that has it. The dashboard's figures (metric values,
 * recent denials, KPI series) are merged by `mergeDashboardParts` (dashboard-api.ts): sums,
 * denials newest first.
 *
 * Waits are bounded. The primary waits {@link PRIMARY_WAIT_MS} for the workers; when one
 * does not answer in time the question fails, naming it, rather than answering with
 * a partial sum (a sum without one worker's counters would look to Prometheus like a
 * counter reset, and rate() would count the whole of it again when the worker is back). A
 * worker that exits meanwhile is left out: its counters are gone anyway. The asking worker
 * waits {@link WORKER_WAIT_MS}, in case the primary itself does not answer.
 *
 * Only workers that said they are ready (they answer `collect` from then on) are asked; one
 * still starting has served nothing.
 */
import cluster, { type Worker } from 'node:cluster';
import process from 'node:process';
import { AggregatorRegistry, type Aggregator } from 'prom-client';
import { isDashboardPart, mergeDashboardParts, type DashboardPart } from './admin/dashboard-api.js';

/** worker → primary: a question for every worker ({ id, what, arg }) */
const ASK = 'receipt-gateway:ask';
/** primary → the asking worker: { id, value } or { id, error } */
const ANSWER = 'receipt-gateway:answer';
/** primary → each worker: { id, what, arg } */
const COLLECT = 'receipt-gateway:collect';
/** each worker → primary: { id, value } or { id, error } */
const COLLECTED = 'receipt-gateway:collected';
/** worker → primary, once: it answers `collect` from now on */
const READY = 'receipt-gateway:peer-ready';

/** How long the primary waits for every worker's part. */
export const PRIMARY_WAIT_MS = 2000;
/** How long a worker waits for the primary's answer (longer, so the primary's error comes first). */
export const WORKER_WAIT_MS = 3000;

/**
 * Default metrics merged otherwise than prom-client does. `process_start_time_seconds` is
 * omitted by prom-client; the latest worker start tells when a worker was replaced, which
 * is when the summed counters drop.
 */
const AGGREGATOR_OVERRIDES: Readonly<Record<string, Aggregator>> = { process_start_time_seconds: 'max' };

type Question = 'metrics' | 'decision' | 'dashboard';
const QUESTIONS: readonly unknown[] = ['metrics', 'decision', 'dashboard'] satisfies Question[];

interface Message {
  type: string;
  id: number;
  what?: unknown;
  arg?: unknown;
  value?: unknown;
  error?: unknown;
}

function isMessage(m: unknown): m is Message {
  return (
    typeof m === 'object' &&
    m !== null &&
    typeof (m as { type?: unknown }).type === 'string' &&
    (m as { type: string }).type.startsWith('receipt-gateway:') &&
    (typeof (m as { id?: unknown }).id === 'number' || (m as { type: string }).type === READY)
  );
}

/** prom-client's JSON of one worker's registry, as it came over IPC. */
type MetricsJson = Array<{ name: string; aggregator?: string }>;

/** Merge the workers' metrics (each `registry.getMetricsAsJSON()`) into one exposition. */
export async function aggregateMetrics(parts: readonly MetricsJson[]): Promise<string> {
  const patched = parts.map((metrics) =>
    metrics.map((m) => {
      const aggregator = AGGREGATOR_OVERRIDES[m.name];
      return aggregator === undefined ? m : { ...m, aggregator };
    }),
  );
  return AggregatorRegistry.aggregate(patched).metrics();
}

/**
 * In the primary: answer the workers' questions. Call once, before forking. Never throws
 * from an IPC event: a failure becomes the asking worker's error answer.
 */
export function servePeers(opts: { waitMs?: number } = {}): void {
  const waitMs = opts.waitMs ?? PRIMARY_WAIT_MS;
  const ready = new Set<Worker>();
  /** open collections, by collect id: what to do with a worker's part, or with its going away */
  const open = new Map<number, { part(from: Worker, m: Message): void; gone(w: Worker): void }>();
  let nextId = 0;

  const send = (w: Worker, m: Message) => {
    // a worker on its way out has no channel: the send fails quietly, and 'exit' follows
    if (w.isConnected()) w.send(m, () => {});
  };

  const ask = (from: Worker, q: Message) => {
    const reply = (answer: { value: unknown } | { error: string }) =>
      send(from, { type: ANSWER, id: q.id, ...answer });
    if (!QUESTIONS.includes(q.what)) {
      reply({ error: `unknown question ${JSON.stringify(q.what)}` });
      return;
    }
    const what = q.what as Question;
    const id = nextId++;
    const waiting = new Map<number, Worker>();
    const parts: unknown[] = [];
    let settled = false;
    const finish = (answer: { value: unknown } | { error: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      open.delete(id);
      reply(answer);
    };
    const complete = () => {
      if (waiting.size > 0 || settled) return;
      if (what === 'decision') {
        finish({ value: null });
        return;
      }
      if (what === 'dashboard') {
        try {
          finish({ value: mergeDashboardParts(parts as DashboardPart[]) });
        } catch (err) {
          finish({ error: `cannot merge the workers' dashboard figures: ${(err as Error).message}` });
        }
        return;
      }
      aggregateMetrics(parts as MetricsJson[]).then(
        (value) => finish({ value }),
        (err: Error) => finish({ error: `cannot merge the workers' metrics: ${err.message}` }),
      );
    };
    const timer = setTimeout(() => {
      const late = [...waiting.values()].map((w) => w.process.pid).join(', ');
      finish({
        error: `worker${waiting.size > 1 ? 's' : ''} ${late} did not answer within ${waitMs / 1000} s`,
      });
    }, waitMs);
    open.set(id, {
      part(w, m) {
        if (!waiting.delete(w.id)) return;
        if (typeof m.error === 'string') {
          finish({ error: `worker ${w.process.pid}: ${m.error}` });
          return;
        }
        if (what === 'decision') {
          if (m.value !== null && m.value !== undefined) finish({ value: m.value });
        } else if (what === 'dashboard' ? isDashboardPart(m.value) : Array.isArray(m.value))
          parts.push(m.value);
        else {
          finish({
            error: `worker ${w.process.pid} sent no ${what === 'dashboard' ? 'dashboard figures' : 'metrics'}`,
          });
          return;
        }
        complete();
      },
      gone(w) {
        if (waiting.delete(w.id)) complete();
      },
    });
    for (const w of ready)
      if (w.isConnected()) {
        waiting.set(w.id, w);
        send(w, { type: COLLECT, id, what, arg: q.arg });
      }
    complete();
  };

  cluster.on('message', (from: Worker, m: unknown) => {
    if (!isMessage(m)) return;
    if (m.type === READY) ready.add(from);
    else if (m.type === COLLECTED) open.get(m.id)?.part(from, m);
    else if (m.type === ASK) ask(from, m);
  });
  const gone = (w: Worker) => {
    ready.delete(w);
    for (const c of [...open.values()]) c.gone(w);
  };
  cluster.on('disconnect', gone);
  cluster.on('exit', gone);
}

/** What a worker answers about itself. */
export interface LocalAnswers {
  /** this worker's `registry.getMetricsAsJSON()` */
  metrics(): Promise<unknown[]>;
  /** this worker's decision for a request id; undefined when it has none */
  decision(requestId: string): unknown;
  /** this worker's dashboard figures (`DashboardRoutes.part()`) */
  dashboard(): Promise<DashboardPart>;
}

/** In a worker: answer the primary's collections, and ask questions of the whole gateway. */
export class ClusterPeer {
  private nextId = 0;
  private readonly pending = new Map<
    number,
    { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }
  >();

  constructor(
    private readonly local: LocalAnswers,
    private readonly waitMs = WORKER_WAIT_MS,
  ) {
    process.on('message', (m: unknown) => {
      if (!isMessage(m)) return;
      if (m.type === COLLECT) this.collect(m);
      else if (m.type === ANSWER) this.answered(m);
    });
    process.send?.({ type: READY }, undefined, undefined, () => {});
  }

  /** The whole gateway's metrics, in the Prometheus text format. Rejects with the reason. */
  async metrics(): Promise<string> {
    const v = await this.ask('metrics');
    if (typeof v !== 'string') throw new Error('the cluster primary sent no metrics');
    return v;
  }

  /** The decision for a request id from whichever worker has it; undefined when none has. */
  async decision(requestId: string): Promise<unknown> {
    return (await this.ask('decision', requestId)) ?? undefined;
  }

  /** The whole gateway's dashboard figures (every worker's, merged). Rejects with the reason. */
  async dashboard(): Promise<DashboardPart> {
    const v = await this.ask('dashboard');
    if (!isDashboardPart(v)) throw new Error('the cluster primary sent no dashboard figures');
    return v;
  }

  private ask(what: Question, arg?: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      const fail = (message: string) => {
        const p = this.pending.get(id);
        if (p === undefined) return;
        clearTimeout(p.timer);
        this.pending.delete(id);
        reject(new Error(message));
      };
      const timer = setTimeout(
        () => fail(`the cluster primary did not answer within ${this.waitMs / 1000} s`),
        this.waitMs,
      );
      this.pending.set(id, { resolve, reject, timer });
      if (process.send === undefined || !process.connected) {
        fail('no channel to the cluster primary');
        return;
      }
      process.send({ type: ASK, id, what, arg }, undefined, undefined, (err: Error | null) => {
        if (err) fail(`cannot reach the cluster primary (${err.message})`);
      });
    });
  }

  private answered(m: Message): void {
    const p = this.pending.get(m.id);
    if (p === undefined) return; // given up on already
    clearTimeout(p.timer);
    this.pending.delete(m.id);
    if (typeof m.error === 'string') p.reject(new Error(m.error));
    else p.resolve(m.value);
  }

  private collect(m: Message): void {
    const reply = (r: { value: unknown } | { error: string }) => {
      if (process.connected)
        process.send?.({ type: COLLECTED, id: m.id, ...r }, undefined, undefined, () => {});
    };
    Promise.resolve()
      .then(() =>
        m.what === 'metrics'
          ? this.local.metrics()
          : m.what === 'dashboard'
            ? this.local.dashboard()
            : (this.local.decision(String(m.arg)) ?? null),
      )
      .then(
        (value) => reply({ value }),
        (err: Error) => reply({ error: err.message }),
      );
  }
}
