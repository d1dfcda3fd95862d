/** The CLI's commands: loaded by cli.ts once SIGHUP and SIGUSR2 are held (see early-signals.ts). */
import cluster, { type Worker } from 'node:cluster';
import process from 'node:process';
import { Gateway } from './server.js';
import { ConfigLoadError, formatProblem } from './config/load.js';
import { validateConfigFile } from './commands/validate.js';
import { runReplay } from './commands/replay.js';
import { runHashKey } from './commands/hash-key.js';
import { runExplain } from './commands/explain.js';
import { parseOptions } from './commands/args.js';
import { attachObservability, type ObservabilityHandle } from './observability/wire.js';
import { ClusterPeer, servePeers } from './cluster.js';
import { releaseSignals } from './early-signals.js';

const USAGE = `receipt-gateway: a security gateway in front of the receipt service

usage:
  receipt-gateway start    [--config FILE]          run the gateway (default ./gateway.yaml or $GATEWAY_CONFIG)
  receipt-gateway validate [--config FILE]          check a config; exit 0 with a summary or 1 with every error
  receipt-gateway hash-key                          read an API key on stdin, print its hash for gateway.yaml
  receipt-gateway replay   --config FILE --requests FILE.jsonl [--only P1,P2|waf] [--format text|jsonl]
  receipt-gateway explain  REQUEST_ID [--admin URL] why a recent request was allowed or refused
`;

/** The `--config` of a command's options, else GATEWAY_CONFIG, else ./gateway.yaml. */
function configPath(values: Readonly<Record<string, string | undefined>>): string {
  return values.config ?? process.env.GATEWAY_CONFIG ?? 'gateway.yaml';
}

/** A usage error: what is wrong, the usage, exit 2 (as replay and explain do). */
function usageError(cmd: string, error: string): number {
  process.stderr.write(`${cmd}: ${error}\n${USAGE}`);
  return 2;
}

async function start(args: string[]): Promise<number> {
  const opts = parseOptions(args, ['config']);
  if (!opts.ok) return usageError('start', opts.error);
  const file = configPath(opts.values);
  // Validate in the primary first, so a bad config exits 1 with every error.
  const summary = await validateConfigFile(file, process.env);
  if (!summary.ok) {
    for (const line of summary.errors) process.stderr.write(`${line}\n`);
    return 1;
  }
  const workers = summary.workers;
  if (workers > 1 && cluster.isPrimary) {
    process.stdout.write(`receipt-gateway: starting ${workers} workers\n`);
    // an error on a worker's channel (a message to one on its way out) is reported, never
    // left unhandled to end the primary
    cluster.on('fork', (w) =>
      w.on('error', (err: Error) => process.stderr.write(`worker ${w.process.pid}: ${err.message}\n`)),
    );
    // /metrics, /api/decisions/{id} and /api/dashboard asked of one worker are answered for all of them
    servePeers();
    for (let i = 0; i < workers; i++) cluster.fork();
    let stopping = false;
    // (a worker that exited can stay in cluster.workers until its channel closes)
    const living = () => Object.values(cluster.workers ?? {}).filter((w) => w !== undefined && !w.isDead());
    const stop = (sig: NodeJS.Signals) => {
      stopping = true;
      const alive = living();
      // (replacements waiting for their pause are not started any more)
      if (alive.length === 0) process.exit(process.exitCode ?? 0);
      for (const w of alive) w?.process.kill(sig);
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGTERM'));
    // A worker handles SIGHUP and SIGUSR2 only once it has started (it says so with a ready
    // message); before, either signal would end it (their default action), and a reload
    // message would find nobody listening. What is meant for a worker still starting waits
    // for its ready message: it may have read the file before the change.
    const ready = new Set<number>();
    let everReady = false;
    const waiting = new Map<number, (() => void)[]>();
    const toWorkers = (deliver: (w: Worker) => void, except?: Worker) => {
      for (const w of Object.values(cluster.workers ?? {})) {
        if (w === undefined || w === except || w.isDead()) continue;
        if (ready.has(w.id)) deliver(w);
        else waiting.set(w.id, [...(waiting.get(w.id) ?? []), () => deliver(w)]);
      }
    };
    // (held before the workers were forked: they read the file and open the log after it)
    releaseSignals();
    process.on('SIGHUP', () => toWorkers((w) => w.process.kill('SIGHUP')));
    process.on('SIGUSR2', () => toWorkers((w) => w.process.kill('SIGUSR2')));
    cluster.on('message', (from, msg: unknown) => {
      if (isReadyMessage(msg)) {
        ready.add(from.id);
        everReady = true;
        const pending = waiting.get(from.id) ?? [];
        waiting.delete(from.id);
        for (const deliver of pending) deliver();
        return;
      }
      // a reload asked of one worker (admin POST /api/reload) is passed on to the others
      if (!isReloadMessage(msg)) return;
      toWorkers((w) => {
        // a worker on its way out has no channel any more: skip it, and never let a failed
        // send become an 'error' event that would end the primary
        if (w.isConnected()) w.send(msg, () => {});
      }, from);
    });
    // A worker that dies soon after it started (a config made invalid since, a port taken)
    // is started again after a pause that doubles each time, up to 30 s: no fork storm.
    const born = new Map<number, number>();
    let pause = 0;
    const fork = () => born.set(cluster.fork().id, Date.now());
    for (const w of Object.values(cluster.workers ?? {})) if (w !== undefined) born.set(w.id, Date.now());
    cluster.on('exit', (w, code, signal) => {
      const lived = Date.now() - (born.get(w.id) ?? 0);
      born.delete(w.id);
      ready.delete(w.id);
      waiting.delete(w.id);
      if (!stopping && !everReady) {
        // The first workers cannot start (the port is taken …; the worker said why): the
        // gateway cannot start, as a single process would exit 1, rather than retry for ever.
        process.stderr.write(
          `receipt-gateway: cannot start: worker ${w.process.pid} exited (${code ?? signal}) before any worker was ready\n`,
        );
        process.exitCode = 1;
        stop('SIGTERM');
        return;
      }
      if (!stopping) {
        pause = lived < WORKER_MIN_LIFE_MS ? Math.min(Math.max(pause * 2, 1000), 30_000) : 0;
        process.stderr.write(
          `worker ${w.process.pid} exited (${code ?? signal}); starting another${pause > 0 ? ` in ${pause / 1000} s` : ''}\n`,
        );
        setTimeout(() => {
          if (!stopping) fork();
        }, pause);
      } else if (living().length === 0) process.exit(process.exitCode ?? 0);
    });
    return new Promise<number>(() => {});
  }
  let gw: Gateway;
  try {
    gw = await Gateway.start({ configFile: file });
  } catch (err) {
    if (err instanceof ConfigLoadError)
      for (const p of err.problems) process.stderr.write(`${formatProblem(p)}\n`);
    else process.stderr.write(`receipt-gateway: cannot start: ${(err as Error).message}\n`);
    releaseSignals();
    return 1;
  }
  if (cluster.isWorker) {
    gw.onReloadRequested = (trigger) => process.send?.({ type: RELOAD_MESSAGE, trigger });
    process.on('message', (msg: unknown) => {
      if (isReloadMessage(msg)) void gw.reload(msg.trigger);
    });
    // the admin answers that need every worker go through the primary (cluster.ts)
    const local: { obs?: ObservabilityHandle } = {};
    const peer = new ClusterPeer({
      metrics: () => gw.metrics.registry.getMetricsAsJSON(),
      decision: (id) => local.obs?.decisions.get(id),
      // (asked before the dashboard is attached: the counters so far, no denial or series yet)
      dashboard: async () =>
        local.obs?.dashboardPart() ?? {
          metrics: await gw.metrics.registry.getMetricsAsJSON(),
          denials: [],
          series: { interval_s: 10, points: [] },
        },
    });
    gw.observers.metrics = () => peer.metrics();
    local.obs = await attachObservability(gw, {
      peerDecision: (id) => peer.decision(id),
      peerDashboard: () => peer.dashboard(),
    });
  } else await attachObservability(gw);
  process.stdout.write(
    `receipt-gateway listening on ${gw.url}${gw.adminUrl ? ` (admin ${gw.adminUrl})` : ''}, upstream ${gw.generation.upstream.origin}${cluster.isWorker ? ` [worker ${process.pid}]` : ''}\n`,
  );
  let stopping = false;
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    gw.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  // SIGHUP reloads the config and, as SIGUSR2 does, reopens the audit log (SPEC §6: a
  // logrotate setup may send either); reopened first, so the reload's line is in the new file
  const hangup = () => {
    gw.audit.reopen();
    void gw.reload('SIGHUP');
  };
  // what came while the gateway started is acted on now (once, however many came)
  const held = releaseSignals();
  process.on('SIGHUP', hangup);
  process.on('SIGUSR2', () => gw.audit.reopen());
  if (held.reload) hangup();
  else if (held.reopen) gw.audit.reopen();
  // (the primary holds SIGHUP, SIGUSR2 and reloads for a worker until it is ready for them)
  if (cluster.isWorker) process.send?.({ type: READY_MESSAGE });
  return new Promise<number>(() => {});
}

/** The message a worker sends the primary, and the primary the other workers, for a reload asked of one. */
const RELOAD_MESSAGE = 'receipt-gateway:reload';

/** The message a worker sends the primary once it handles signals and reload messages. */
const READY_MESSAGE = 'receipt-gateway:ready';

function isReadyMessage(m: unknown): boolean {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === READY_MESSAGE;
}

function isReloadMessage(m: unknown): m is { type: string; trigger: string } {
  return (
    typeof m === 'object' &&
    m !== null &&
    (m as { type?: unknown }).type === RELOAD_MESSAGE &&
    typeof (m as { trigger?: unknown }).trigger === 'string'
  );
}

/** A worker that exits sooner than this after it started is restarted after a pause. */
const WORKER_MIN_LIFE_MS = 10_000;

/**
 * A reader that stops early (`replay … | head`) closes the pipe: stop quietly with 0, as
 * Unix tools do, instead of an unhandled EPIPE and its stack trace.
 */
function stopWhenStdoutCloses(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE')
      process.stderr.write(`receipt-gateway: cannot write the output: ${err.message}\n`);
    process.exit(err.code === 'EPIPE' ? 0 : 1);
  });
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...args] = argv;
  switch (cmd) {
    case 'start':
      return start(args);
    case 'validate': {
      const opts = parseOptions(args, ['config']);
      if (!opts.ok) return usageError('validate', opts.error);
      const file = configPath(opts.values);
      const summary = await validateConfigFile(file, process.env);
      if (summary.ok) {
        process.stdout.write(`${summary.summary}\n`);
        return 0;
      }
      for (const line of summary.errors) process.stderr.write(`${line}\n`);
      process.stderr.write(
        `${file}: ${summary.errors.length} error${summary.errors.length === 1 ? '' : 's'}\n`,
      );
      return 1;
    }
    case 'hash-key':
      // (its own argument check: `hash-key KEY` is refused before stdin is read, exit 1)
      return runHashKey(process.stdin, process.stdout, process.stderr, args);
    case 'replay':
      stopWhenStdoutCloses();
      return runReplay(args, process.stdout, process.stderr);
    case 'explain':
      stopWhenStdoutCloses();
      return runExplain(args);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return cmd === undefined ? 1 : 0;
    default:
      process.stderr.write(`unknown command "${cmd}"\n${USAGE}`);
      return 1;
  }
}

process.on('unhandledRejection', (err) => {
  process.stderr.write(`receipt-gateway: unhandled rejection: ${(err as Error)?.message ?? String(err)}\n`);
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // a worker that could not start would be kept alive, serving nothing, by its channel to
    // the primary: exit, so that the primary starts another (after a pause)
    if (code !== 0 && cluster.isWorker) process.exit(code);
  },
  (err: Error) => {
    process.stderr.write(`receipt-gateway: ${err.message}\n`);
    process.exitCode = 1;
  },
);
