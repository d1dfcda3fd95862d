import http from 'node:http';
import { Http2ServerResponse } from 'node:http2';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { createHash, randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { hasBody, type RequestContext } from './context.js';
import {
  compileGeneration,
  closeGeneration,
  type CompiledRoute,
  type Generation,
  type ListenerSettings,
} from './config/compile.js';
import { loadConfigFile, readConfigBytes, ConfigLoadError } from './config/load.js';
import {
  pendingRestart,
  restartBoundOf,
  restartBoundSettings,
  type RestartBound,
} from './config/restart-bound.js';
import { CODES } from './errors.js';
import type { Deny, OpsLogger, Outcome, ResponseHead, Services } from './policy.js';
import {
  runRequestPhase,
  runResponsePhase,
  runDone,
  recordDeny,
  framingDeny,
  serverWideOptions,
  targetFragmentDeny,
  ambiguousPathDeny,
} from './pipeline.js';
import { ConnectionState, type Turn } from './connection-state.js';
import { renderDeny, renderAnswer, renderJson, rawErrorResponse, type Rendered } from './reply.js';
import {
  UpstreamPools,
  upstreamHeaders,
  upstreamPath,
  cleanResponseHeaders,
  forward,
  classifyBodyError,
  isFailure,
  BodyLimit,
  type UpstreamFailure,
} from './proxy.js';
import { Metrics } from './observability/metrics.js';
import { createAuditLog, type AuditLog } from './observability/audit.js';
import { isWellFormedRequestId } from './observability/decisions.js';
import { createStore } from './store/index.js';
import { cleanupAll as cleanupUploadSpool } from '../policies/upload-gate/index.js';
import type { Store } from './store/types.js';
import { createOpsLogger } from './observability/ops-log.js';
import { AdminServer, type Observers } from './admin.js';
import { clientAddress, forwardedFor, isTrustedHttps } from './client-ip.js';
import { normalizePath } from './router.js';
import { createContext } from './context-factory.js';
import { parseDuration } from './config/units.js';
import type { Server as TlsServer } from 'node:tls';
import {
  TlsManager,
  TlsConnections,
  createTlsServer,
  h2RequestView,
  h2RequestProblem,
  SESSION_CLOSE_GRACE_MS,
  isH2Request,
  type H2View,
} from './tls.js';
import { RedirectServer } from './redirect.js';
import { WebSocketTunnels, handleUpgrade, serveOnSocket, type UpgradeHost } from './websocket.js';

/** The digest of a config file's text: the file watch reloads when it changes. */
function configDigest(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * A generation replaced by a reload is retired once the last request that started on it ended,
 * or at the latest this long after the swap (a client that stopped reading an endless answer
 * must not keep every old generation alive).
 */
const RETIRE_AT_LATEST_MS = 60 * 60 * 1000;

/** After the shutdown deadline, upstream requests still running get this long before they are cut. */
const POOL_CLOSE_GRACE_MS = 1000;

/** A config file event is acted on once events have settled this long … */
const WATCH_SETTLE_MS = 150;
/** … or this long after the first of them, whichever comes first. */
const WATCH_MAX_WAIT_MS = 1000;

export type { RestartBound } from './config/restart-bound.js';

export interface GatewayOptions {
  readonly configFile: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** override the configured listeners (tests use port 0) */
  readonly port?: number;
  readonly host?: string;
  readonly adminPort?: number;
  /** override listen.redirect.port (tests use 0) */
  readonly redirectPort?: number;
  /** watch the config file for changes (default true) */
  readonly watch?: boolean;
  readonly log?: OpsLogger;
  readonly now?: () => number;
  /** collect Node's default process metrics (default true) */
  readonly defaultMetrics?: boolean;
}

export interface ReloadRecord {
  readonly time: string;
  readonly result: 'success' | 'error';
  readonly generation?: number;
  readonly errors?: readonly string[];
  readonly trigger: string;
  /** settings the new file changes that apply only after a restart (key paths) */
  readonly restart_required?: readonly string[];
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
/** Bodies of refused requests up to this size are read and discarded to keep the connection. */
const DISCARD_BODY_MAX = 64 * 1024;

/** An HTTP/1.1 request being handled, as onClientError needs it when its body breaks its framing. */
interface Exchange {
  readonly gen: Generation;
  readonly ctx: RequestContext;
  readonly ac: AbortController;
}

/**
 * The running gateway: main listener, admin listener, the current generation, and the
 * services that outlive reloads (store, metrics, audit log, upstream pools).
 */
export class Gateway {
  generation: Generation;
  readonly services: Services;
  readonly metrics: Metrics;
  readonly audit: AuditLog;
  readonly store: Store;
  readonly reloads: ReloadRecord[] = [];
  readonly observers: Observers;
  private readonly pools = new UpstreamPools();
  private readonly server: http.Server;
  private admin: AdminServer | undefined;
  private watcher: fs.FSWatcher | undefined;
  /** the directory of the file a symlinked config resolves to, and its watcher */
  private targetDir: string | undefined;
  private targetWatcher: fs.FSWatcher | undefined;
  private reloadTimer: NodeJS.Timeout | undefined;
  /** digest of the config file's text at the last reload attempt (or the one the process started with) */
  private configDigest: string | undefined;
  /** Requests in flight: the controller that cancels each, and its response. */
  private readonly inflight = new Map<AbortController, http.ServerResponse>();
  /** Per client connection: the order of its requests and the ones in flight (see ConnectionState). */
  private readonly connections = new WeakMap<Socket, ConnectionState>();
  /** Each request's place on its connection. */
  private readonly turns = new WeakMap<http.IncomingMessage, Turn>();
  /** Answers after which onClientError already arranged for their connection to close. */
  private readonly closeAfter = new WeakSet<http.ServerResponse>();
  /** Each HTTP/1.1 request by its response (see answerBrokenBody). */
  private readonly exchanges = new WeakMap<http.ServerResponse, Exchange>();
  /**
   * Who writes a request's gateway-made answer: its handler, once it chose one, or
   * answerBrokenBody, once the body broke its framing first (the handler then writes and
   * accounts for nothing).
   */
  private readonly answeredBy = new WeakMap<RequestContext, 'handler' | 'broken-body'>();
  /** Requests already accounted for (metrics, access audit, onDone, decision log). */
  private readonly accounted = new WeakSet<RequestContext>();
  private readonly sockets = new Set<Socket>();
  /** Requests (and WebSocket handshakes) in flight per generation, while any are (see hold). */
  private readonly users = new Map<Generation, number>();
  /** Generations a reload replaced that are not closed yet, with their latest retirement. */
  private readonly retired = new Map<Generation, NodeJS.Timeout>();
  private closing = false;
  private readonly metricChildren = new Map<string, { inc(): void }>();
  private readonly durationChildren = new Map<string, { observe(v: number): void }>();
  private readonly upstreamDurationChildren = new Map<string, { observe(v: number): void }>();
  private readonly env: Readonly<Record<string, string | undefined>>;
  /** TLS termination (listen.tls): certificates, SNI, rotation */
  readonly tls: TlsManager | undefined;
  private redirect: RedirectServer | undefined;
  readonly tunnels: WebSocketTunnels;
  /** connections of the HTTP/2 listener (it cannot close idle ones itself) */
  private readonly tlsConnections: TlsConnections | undefined;

  /**
   * The settings a reload cannot change, as this process started with them: the score and
   * the dashboard describe these, and a reload that asks for others says they wait for a
   * restart.
   */
  readonly running: RestartBound;
  /** the restart-bound settings this process runs with, by key path (see pendingRestart) */
  private readonly runningSettings: Readonly<Record<string, string | undefined>>;

  private constructor(
    private readonly opts: GatewayOptions,
    generation: Generation,
    services: Services,
    metrics: Metrics,
    audit: AuditLog,
    store: Store,
    observers: Observers,
  ) {
    this.generation = generation;
    this.services = services;
    this.metrics = metrics;
    this.audit = audit;
    this.store = store;
    this.observers = observers;
    this.env = opts.env ?? process.env;
    this.running = restartBoundOf(generation);
    this.runningSettings = restartBoundSettings(generation);
    const l = generation.listen;
    // Node checks header/request timeouts only every connectionsCheckingInterval (30 s by
    // default); check often enough that header_timeout is enforced near its value.
    const checkingInterval = Math.max(
      100,
      Math.min(30_000, Math.floor(Math.min(l.headerTimeoutMs || 30_000, l.requestTimeoutMs || 30_000) / 4)),
    );
    this.tunnels = new WebSocketTunnels(metrics);
    if (l.tls !== undefined) {
      // Edge mode: TLS with HTTP/2 and HTTP/1.1 by ALPN (or HTTPS/1.1 only).
      this.tls = new TlsManager(l.tls, { metrics, audit, log: services.log, now: services.now });
      this.server = createTlsServer(
        l.tls,
        {
          maxHeaderSize: l.maxHeaderSize,
          maxHeaders: l.maxHeaders,
          headerTimeoutMs: l.headerTimeoutMs,
          requestTimeoutMs: l.requestTimeoutMs,
          keepAliveTimeoutMs: l.keepAliveTimeoutMs,
          connectionsCheckingIntervalMs: checkingInterval,
        },
        this.tls.serverOptions(),
      ) as unknown as http.Server;
      this.tlsConnections = l.tls.http2
        ? new TlsConnections(
            this.server as unknown as TlsServer,
            SESSION_CLOSE_GRACE_MS,
            l.tls.maxConcurrentStreams,
            (action, session) => {
              this.metrics.http2Refusals.inc({ action });
              if (action === 'goaway')
                this.services.log.warn(
                  { client: clientAddress(session.socket?.remoteAddress) },
                  'HTTP/2 session torn down (GOAWAY ENHANCE_YOUR_CALM): streams reset faster than they are handled (rapid reset)',
                );
            },
          )
        : undefined;
    } else {
      this.tls = undefined;
      this.tlsConnections = undefined;
      this.server = http.createServer({
        maxHeaderSize: l.maxHeaderSize,
        requestTimeout: l.requestTimeoutMs,
        headersTimeout: l.headerTimeoutMs,
        keepAliveTimeout: l.keepAliveTimeoutMs,
        connectionsCheckingInterval: checkingInterval,
        requireHostHeader: false,
        joinDuplicateHeaders: false,
        insecureHTTPParser: false,
      });
    }
    this.server.maxHeadersCount = l.maxHeaders + 1;
    this.server.maxConnections = l.maxConnections;
    this.server.maxRequestsPerSocket = l.maxRequestsPerSocket;
    this.server.on('request', (req, res) => this.onRequest(req, res));
    // Expect: 100-continue. Node would answer 100 at once, inviting the body of a request the
    // gateway refuses from its head alone (413 from Content-Length, 401, 429 …). The 100 is
    // sent once the gateway starts reading the body (RFC 9110 §10.1.1, as NGINX does); a
    // refusal before that is the final answer, and Node closes the connection after it, since
    // the client may still send the body. A request without a body gets its 100 at once.
    this.server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
      const te = req.headers['transfer-encoding'];
      const cl = req.headers['content-length'];
      if (te === undefined && (cl === undefined || cl === '0')) res.writeContinue();
      else
        req.once('resume', () => {
          if (!res.headersSent && !res.writableEnded && !res.destroyed) res.writeContinue();
        });
      this.onRequest(req, res);
    });
    // An Expect other than 100-continue: without a listener Node answers a bare 417 itself
    // (no JSON body, request id, security headers or audit line). The gateway ignores the
    // expectation, as NGINX does (RFC 9110 §10.1.1 makes the 417 a MAY), and serves the
    // request like any other; Expect is never forwarded (proxy.ts).
    this.server.on('checkExpectation', (req: http.IncomingMessage, res: http.ServerResponse) =>
      this.onRequest(req, res),
    );
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) =>
      this.onClientError(err, socket),
    );
    const upgradeHost: UpgradeHost = {
      services,
      tunnels: this.tunnels,
      generation: () => this.generation,
      hold: (gen) => this.hold(gen),
      closing: () => this.closing,
      makeContext: (gen, req, signal) => this.makeContext(gen, req, signal),
      finish: (route, ctx, outcome, seconds) => this.finish(route, ctx, outcome, seconds),
      forwardedFor: (ctx) => ctx.forwardedFor,
      serveAsRequest: (req, res) => this.onRequest(req, res),
    };
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) =>
      this.handOver(socket, () => handleUpgrade(upgradeHost, req, socket, head)),
    );
    // CONNECT (a forward-proxy tunnel request) is answered like any request whose target is
    // not a path (400), with its audit line, instead of Node's silent close. Over HTTP/2 it
    // is a stream like any other, handed over with its response.
    this.server.on('connect', (req: http.IncomingMessage, socketOrRes: Socket | Http2ServerResponse) => {
      if (socketOrRes instanceof Http2ServerResponse) {
        this.onRequest(req, socketOrRes as unknown as http.ServerResponse);
        return;
      }
      this.handOver(socketOrRes, () => serveOnSocket(req, socketOrRes, (r, res) => this.onRequest(r, res)));
    });
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      metrics.openConnections.inc();
      socket.once('close', () => {
        this.sockets.delete(socket);
        metrics.openConnections.dec();
      });
    });
  }

  /** Load, validate and compile the config, open the audit log and store, and listen. */
  static async start(opts: GatewayOptions): Promise<Gateway> {
    const env = opts.env ?? process.env;
    const loaded = await loadConfigFile(opts.configFile, env);
    const cfg = loaded.config;
    const log = opts.log ?? createOpsLogger();
    const now = opts.now ?? Date.now;
    const metrics = new Metrics({ defaultMetrics: opts.defaultMetrics ?? true });
    const observers: Observers = {};
    const audit = createAuditLog({
      enabled: cfg.audit.enabled,
      file: cfg.audit.file,
      accessSampleRate: cfg.audit.access_sample_rate,
      metrics,
      tap: (line, ctx) => observers.onAudit?.(line, ctx),
    });
    let store: Store;
    try {
      store = createStore({
        url: cfg.store.url,
        maxKeys: cfg.store.max_keys,
        timeoutMs: parseDuration(cfg.store.timeout),
        prefix: cfg.store.prefix,
        metrics,
        audit,
        log,
        now,
      });
    } catch (err) {
      await audit.close();
      throw err;
    }
    const services: Services = { store, metrics, audit, log, now, persistent: new Map(), env };
    let generation: Generation;
    try {
      generation = await compileGeneration(loaded, services);
    } catch (err) {
      await store.close().catch(() => {});
      await audit.close();
      throw err;
    }
    const gw = new Gateway(opts, generation, services, metrics, audit, store, observers);
    // the text this generation was compiled from: the file watch compares what it reads with it
    gw.configDigest = configDigest(loaded.text);
    try {
      await gw.listen();
    } catch (err) {
      // (e.g. the admin port is taken: the main listener, already open, must not go on
      // serving in a process that reported it could not start)
      await gw.close();
      throw err;
    }
    return gw;
  }

  private async listen(): Promise<void> {
    const l = this.generation.listen;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port ?? l.port, this.opts.host ?? l.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.tls?.attach(this.server as unknown as { setSecureContext(o: object): void });
    const rd = l.redirect;
    if (rd !== undefined) {
      this.redirect = new RedirectServer(
        () => this.generation.listen.redirect,
        () => this.port,
        this.metrics,
        {
          headersTimeout: l.headerTimeoutMs,
          requestTimeout: l.requestTimeoutMs,
          keepAliveTimeout: l.keepAliveTimeoutMs,
          maxHeaderSize: l.maxHeaderSize,
        },
      );
      await this.redirect.listen(rd.host, this.opts.redirectPort ?? rd.port);
    }
    const a = this.generation.config.admin;
    if (a.enabled) {
      this.admin = new AdminServer(this);
      await this.admin.listen(a.host, this.opts.adminPort ?? a.port);
    }
    if (this.opts.watch !== false) this.watch();
    this.observers.onGeneration?.(this.generation);
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }
  get url(): string {
    const addr = this.server.address() as { address: string; port: number };
    const host = addr.address === '0.0.0.0' || addr.address === '::' ? '127.0.0.1' : addr.address;
    return `${this.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${addr.port}`;
  }
  /** the HTTP→HTTPS redirect listener, when configured */
  get redirectUrl(): string | undefined {
    return this.redirect?.url;
  }
  get adminUrl(): string | undefined {
    return this.admin?.url;
  }

  /** The digest of the config file's text as it is now (through symlinks), or undefined when unreadable. */
  private async readConfigDigest(): Promise<string | undefined> {
    try {
      return configDigest((await readConfigBytes(this.opts.configFile)).toString('utf8'));
    } catch {
      return undefined;
    }
  }

  private watch(): void {
    const file = path.resolve(this.opts.configFile);
    try {
      // Watch the directory: editors replace the file rather than write it, and a
      // Kubernetes ConfigMap swaps a `..data` symlink next to it, so any event there is a
      // reason to look; the file is loaded again only when its bytes changed.
      // Events are gathered for 150 ms after the last one (a tool writing in steps is seen
      // once), but for at most a second: a log written next to the config all the time
      // would otherwise put the look off for ever.
      let firstEvent = 0;
      const look = () => {
        const now = Date.now();
        if (this.reloadTimer !== undefined && now - firstEvent >= WATCH_MAX_WAIT_MS) return;
        if (this.reloadTimer === undefined) firstEvent = now;
        clearTimeout(this.reloadTimer);
        this.reloadTimer = setTimeout(() => {
          this.reloadTimer = undefined;
          // the link may point elsewhere now: watch there before the reload is applied, so an
          // edit made once the new file is served is seen
          void this.followTarget(file, look)
            .then(() => this.readConfigDigest())
            .then((d) => {
              if (d !== this.configDigest && !this.closing) void this.reload('watch');
            });
        }, WATCH_SETTLE_MS);
      };
      this.watcher = fs.watch(path.dirname(file), look);
      this.watcher.on('error', () => {});
      // at start, before the gateway serves: an edit made once it answers is seen
      let dir: string | undefined;
      try {
        dir = path.dirname(fs.realpathSync(file));
      } catch {
        // (gone or unreadable: the watch next to the link and SIGHUP remain)
      }
      if (dir !== undefined) this.watchTargetDir(file, dir, look);
    } catch (err) {
      this.services.log.warn(
        { err: (err as Error).message },
        'cannot watch the config file; reload with SIGHUP',
      );
    }
  }

  /**
   * A config that is a symlink to a file in another directory changes when that file is
   * edited, with no event next to the link: that directory is watched too (and followed when
   * the link is pointed elsewhere, as a Kubernetes ConfigMap update does).
   */
  private async followTarget(file: string, look: () => void): Promise<void> {
    let dir: string;
    try {
      dir = path.dirname(await fsp.realpath(file));
    } catch {
      return;
    }
    this.watchTargetDir(file, dir, look);
  }

  /** Watch `dir`, where the config `file` resolves to, when it is not the file's own directory. */
  private watchTargetDir(file: string, dir: string, look: () => void): void {
    if (dir === this.targetDir || this.closing) return;
    this.targetWatcher?.close();
    this.targetWatcher = undefined;
    this.targetDir = dir;
    if (dir === path.dirname(file)) return;
    try {
      this.targetWatcher = fs.watch(dir, look);
      this.targetWatcher.on('error', () => {});
    } catch {
      // (gone or unreadable: the watch next to the link and SIGHUP remain)
    }
  }

  /**
   * Set by the process that runs several gateways (cluster workers): told of a reload asked
   * of this one alone (the admin listener's `POST /api/reload`), so that the others reload
   * too. A signal or the file watch reaches every worker by itself.
   */
  onReloadRequested: ((trigger: string) => void) | undefined;

  /** A reload asked of this gateway through its admin listener: it and its peers reload. */
  async reloadRequested(trigger: string): Promise<ReloadRecord> {
    const record = await this.reload(trigger);
    if (!this.closing) this.onReloadRequested?.(trigger);
    return record;
  }

  /** The reload running or last run: reloads take turns (see reload()). */
  private reloading: Promise<unknown> = Promise.resolve();

  /**
   * Load, validate and compile the file again, then swap atomically. On any error the
   * running generation stays. Requests in flight finish on the generation they started with.
   * Reloads asked for while one runs (SIGHUP and the file watch together, rapid signals)
   * run one after the other, so the last one asked for reads the file last and its
   * generation is the one that stays.
   */
  reload(trigger = 'api'): Promise<ReloadRecord> {
    const run = this.reloading.then(() => this.reloadNow(trigger));
    this.reloading = run.catch(() => {});
    return run;
  }

  /** Whether close() began: the gateway drains and then stops. */
  get shuttingDown(): boolean {
    return this.closing;
  }

  /**
   * A reload asked for once the gateway is shutting down (SIGHUP or `POST /api/reload` during
   * the drain, or one that was waiting for its turn): nothing is loaded or built, since the
   * pools, the store and the audit log are about to close. Said on the ops log, not counted
   * as a reload and not kept in the history.
   */
  private refuseReload(trigger: string, started: number): ReloadRecord {
    this.services.log.warn({ trigger }, 'reload refused: the gateway is shutting down');
    return {
      time: new Date(started).toISOString(),
      result: 'error',
      errors: ['the gateway is shutting down; the configuration was not reloaded'],
      trigger,
    };
  }

  private async reloadNow(trigger: string): Promise<ReloadRecord> {
    const started = this.services.now();
    if (this.closing) return this.refuseReload(trigger, started);
    let record: ReloadRecord;
    // what this attempt judges (a watch event for the same bytes does not try them again)
    this.configDigest = await this.readConfigDigest();
    try {
      const loaded = await loadConfigFile(this.opts.configFile, this.env);
      const next = await compileGeneration(loaded, this.services);
      if (this.closing) {
        // the shutdown began while the file was loaded: what it built is given back unused
        await closeGeneration(next);
        return this.refuseReload(trigger, started);
      }
      const old = this.generation;
      this.generation = next;
      await this.pools.retainOnly(next.upstream);
      this.applyListenSettings(next.listen);
      // Reported on every reload while the file differs from what the process runs with.
      const pending = pendingRestart(this.runningSettings, restartBoundSettings(next));
      if (pending.length > 0)
        this.services.log.warn(
          { settings: pending },
          'these settings apply only after a restart; the running values stay in force',
        );
      // New certificate paths, versions or ciphers apply to new handshakes at once.
      if (next.listen.tls !== undefined) this.tls?.update(next.listen.tls);
      // Retire the old generation once the requests that started on it are done.
      this.retire(old);
      const restart = pending.length > 0 ? { restart_required: pending } : {};
      record = {
        time: new Date(started).toISOString(),
        result: 'success',
        generation: next.id,
        trigger,
        ...restart,
      };
      this.metrics.configReloads.inc({ result: 'success' });
      this.audit.system('config_reload', {
        result: 'success',
        generation: next.id,
        trigger,
        file: this.opts.configFile,
        ...restart,
      });
      this.observers.onGeneration?.(next);
    } catch (err) {
      // (the audit log may be closed by now: a failed reload during the shutdown is only refused)
      if (this.closing) return this.refuseReload(trigger, started);
      const errors =
        err instanceof ConfigLoadError
          ? err.problems.map(
              (p) => `${p.file}:${p.line}:${p.column}: ${p.keyPath ? `${p.keyPath}: ` : ''}${p.message}`,
            )
          : [(err as Error).message];
      record = { time: new Date(started).toISOString(), result: 'error', errors, trigger };
      this.metrics.configReloads.inc({ result: 'error' });
      this.audit.system('config_reload', { result: 'error', errors, trigger, file: this.opts.configFile });
      this.services.log.error({ errors }, 'config reload rejected; the previous configuration stays active');
    }
    this.reloads.push(record);
    if (this.reloads.length > 50) this.reloads.shift();
    return record;
  }

  /**
   * The listener limits Node lets change on a running server follow a reload; the address
   * and the head size limit need a restart (see restartBoundSettings).
   */
  private applyListenSettings(next: ListenerSettings): void {
    const s = this.server;
    s.headersTimeout = next.headerTimeoutMs;
    s.requestTimeout = next.requestTimeoutMs;
    s.keepAliveTimeout = next.keepAliveTimeoutMs;
    s.maxHeadersCount = next.maxHeaders + 1;
    s.maxConnections = next.maxConnections;
    s.maxRequestsPerSocket = next.maxRequestsPerSocket;
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    // TLS failures (handshake timeout, protocol version, garbage): no HTTP to answer with.
    if (
      typeof err.code === 'string' &&
      (err.code.startsWith('ERR_SSL_') || err.code.startsWith('ERR_TLS_'))
    ) {
      socket.destroy();
      return;
    }
    const open = this.connections.get(socket)?.responses.filter((r) => !r.writableFinished) ?? [];
    const pending = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (open.length > 0 || pending) {
      const last = open[open.length - 1];
      // llhttp refuses a Transfer-Encoding other than chunked only after it emitted the
      // request (the last one read); the handler refuses that request too (framingDeny) and
      // closes the connection after its 400, so let the requests before it and it be answered.
      if (err.code === 'HPE_INVALID_TRANSFER_ENCODING' && last !== undefined && !last.headersSent) {
        last.shouldKeepAlive = false;
        return;
      }
      // The body of the last request read broke its framing (a chunk size that is not hex,
      // chunk data longer than its size, …), ended early, or stalled until
      // listen.request_timeout (Node reports ERR_HTTP_REQUEST_TIMEOUT; its head was complete,
      // or no request would exist): unless its answer started, it is answered 400 (408 for the
      // timeout) after the requests before it, and the connection closes (see
      // answerBrokenBody). The parser reports every byte that follows again: answered once.
      const x = last !== undefined && !last.req.complete ? this.exchanges.get(last) : undefined;
      if (x !== undefined && last !== undefined) {
        if (this.answeredBy.get(x.ctx) === 'broken-body') return;
        const timedOut = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
        if (!last.headersSent && (timedOut || err.code?.startsWith('HPE_') === true)) {
          last.shouldKeepAlive = false;
          // (a refusal its handler already chose is its answer: the connection closes after it)
          if (this.answeredBy.get(x.ctx) !== 'handler') {
            const deny: Deny = timedOut
              ? {
                  code: 'request_timeout',
                  message: 'The request body was not received in time.',
                  ruleIds: ['request-timeout'],
                  detail: { timeout_ms: this.server.requestTimeout },
                }
              : {
                  code: 'bad_request',
                  message:
                    err.code === 'HPE_INVALID_EOF_STATE'
                      ? 'The request body was not received completely.'
                      : 'The request body is malformed.',
                  ruleIds: [`parser:${err.code}`],
                };
            void this.answerBrokenBody(x, last, deny, timedOut ? 'listener' : 'parser');
          }
          return;
        }
      }
      // The requests read completely before the bytes that failed (pipelined, or followed by
      // junk) were accepted, maybe already forwarded: they get their answers, in order, and
      // the connection closes after the last of them. A request whose body failed after its
      // answer started gets no more of it (its handler is cancelled when the connection closes).
      const answered = last !== undefined && !last.req.complete ? open[open.length - 2] : last;
      if (answered !== undefined) {
        answered.shouldKeepAlive = false;
        // Node reports the parser's error again for every chunk read after it (each TLS
        // record): arrange the close once, not once per chunk.
        if (!this.closeAfter.has(answered)) {
          this.closeAfter.add(answered);
          answered.once('finish', () => socket.destroySoon());
        }
        return;
      }
      socket.destroy();
      return;
    }
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const id = randomUUID();
    let code: 'bad_request' | 'headers_too_large' = 'bad_request';
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      code = 'headers_too_large';
    } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const status = CODES[code].status;
    this.metrics.requests.inc({
      route: 'unmatched',
      method: 'OTHER',
      code: String(status),
      decision: 'deny',
    });
    void this.rawRefuse(socket, status, code, CODES[code].message, id, err.code);
  }

  /**
   * The body of a request being handled broke HTTP/1.1 framing, ended early, or stalled past
   * listen.request_timeout, before any answer to it started: answer `deny` here (400
   * bad_request, 408 request_timeout), and close the connection after it (Node writes the
   * answers to the requests read before it first, in order). The request's handler stands
   * down: its upstream request, if it started, is aborted (never completed as if the body
   * were whole), and it writes and accounts for nothing more. Audited and counted like any
   * refusal; `by` is who refused it in the decision log. Never throws.
   */
  private async answerBrokenBody(
    x: Exchange,
    res: http.ServerResponse,
    deny: Deny,
    by: 'parser' | 'listener',
  ): Promise<void> {
    const { gen, ctx } = x;
    this.answeredBy.set(ctx, 'broken-body');
    try {
      this.markClosing(res.req);
      this.decided(res.req);
      x.ac.abort();
      const route = routeNamed(gen, ctx.routeName);
      const r = renderDeny(ctx, deny, gen.requestIdHeader);
      recordDeny(ctx, deny, 'deny', r.head.status, this.services);
      await runResponsePhase(route, ctx, r.head, this.services);
      if (!res.headersSent && !res.destroyed) {
        res.writeHead(r.head.status, r.head.headers as http.OutgoingHttpHeaders);
        res.end(r.body);
      }
      this.account(route, ctx, { status: r.head.status, decision: 'deny', deny, deniedBy: by }, undefined);
    } catch (err) {
      this.services.log.error(
        { request_id: ctx.id, err: (err as Error).message },
        'cannot answer a request whose body broke its framing',
      );
      res.destroy();
    }
  }

  /**
   * Answer on a socket whose request the parser refused: the SPEC JSON error with the
   * security headers of the response phase (a gateway-made error like any other), then close.
   */
  private async rawRefuse(
    socket: Socket,
    status: number,
    code: 'bad_request' | 'headers_too_large',
    message: string,
    id: string,
    parserError: string | undefined,
  ): Promise<void> {
    const extra: Record<string, string | string[] | undefined> = {};
    try {
      const gen = this.generation;
      // No request exists: method and target are unknown ("-"); the audit line still
      // records the refusal, its client IP and the parser's error code.
      const ctx = createContext({
        id,
        method: '-',
        target: '-',
        headers: {},
        rawHeaders: [],
        clientIp: clientAddress(socket.remoteAddress),
        secure: this.tls !== undefined,
        httpVersion: '1.1',
        bodySource: socket,
        signal: new AbortController().signal,
      });
      recordDeny(ctx, { code, ruleIds: [`parser:${parserError ?? 'error'}`] }, 'deny', status, this.services);
      const head: ResponseHead = { status, headers: extra, fromGateway: true };
      await runResponsePhase(gen.unmatched, ctx, head, this.services);
    } catch {
      // the bare response below is still correct
    }
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    socket.end(rawErrorResponse(status, code, message, id, extra));
    socket.destroySoon();
  }

  /**
   * A connection the HTTP server handed over for an upgrade or a CONNECT: `serve` it, unless
   * requests read before it on the connection are still being answered (pipelined): those
   * get their answers, in order, then the connection closes, and the handed-over request
   * gets none (as for bytes that do not parse after complete requests). Never throws.
   */
  private handOver(socket: Socket, serve: () => void): void {
    try {
      // the HTTP server no longer listens for the socket's errors (a reset while earlier
      // answers are still being written would end the process)
      socket.on('error', () => socket.destroy());
      this.tlsConnections?.forget(socket);
      const pending = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
      const open = this.connections.get(socket)?.responses.filter((r) => !r.writableFinished) ?? [];
      if (pending || open.length > 0) {
        const last = open[open.length - 1] ?? pending!;
        last.shouldKeepAlive = false;
        last.once('finish', () => socket.destroySoon());
        return;
      }
      serve();
    } catch (err) {
      this.services.log.error({ err: (err as Error).message }, 'cannot serve a handed-over connection');
      socket.destroy();
    }
  }

  /** The state of a client connection; on HTTP/1.1 (`tracked`), its close cancels the requests in flight. */
  private connectionOf(socket: Socket, tracked: boolean): ConnectionState {
    let conn = this.connections.get(socket);
    if (conn === undefined) {
      const state = (conn = new ConnectionState());
      this.connections.set(socket, state);
      if (tracked)
        socket.once('close', () => {
          for (const a of state.inflight) {
            a.abort();
            this.inflight.delete(a);
          }
          state.inflight.clear();
        });
    }
    return conn;
  }

  /** The answer to `req` closes its connection: no request read after it is processed. */
  private markClosing(req: http.IncomingMessage): void {
    const turn = this.turns.get(req);
    if (turn !== undefined) this.connections.get(req.socket)?.markClosing(turn.index);
  }

  /** Whether `req` was read after a request whose answer closes the connection. */
  private behindClosing(req: http.IncomingMessage): boolean {
    const turn = this.turns.get(req);
    return turn !== undefined && this.connections.get(req.socket)?.behindClosing(turn.index) === true;
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const h2 = isH2Request(req);
    // HTTP/2: at most max_concurrent_streams requests of a session handled at a time, streams
    // reset by the client included (rapid reset); a stream beyond that is refused unseen. A
    // request stops counting once its whole answer was written (the client may then open the
    // next stream at once) or, for a stream reset before that, once its handling ended.
    let releaseStream: (() => void) | undefined;
    if (h2 && this.tlsConnections !== undefined) {
      releaseStream = this.tlsConnections.admit(req.stream);
      if (releaseStream === undefined) return;
      res.once('finish', () => {
        // (the compat response also emits 'finish' when its stream was reset unanswered)
        if (res.writableEnded) releaseStream!();
      });
    }
    const conn = this.connectionOf(req.socket, !h2);
    // HTTP/2 streams are independent: no order to keep among them
    const turn = conn.read(!h2);
    this.turns.set(req, turn);
    if (conn.behindClosing(turn.index)) {
      res.shouldKeepAlive = false;
      req.resume();
      turn.decide();
      releaseStream?.();
      return;
    }
    const max = this.server.maxRequestsPerSocket;
    if (!h2 && max !== null && max > 0 && turn.index + 1 >= max) {
      // The last request listen.max_requests_per_socket allows: Node answers it with
      // Connection: close but keeps the connection open, and answers the requests pipelined
      // after it with bare 503s of its own (no JSON, no security headers, no request id).
      // The connection closes after this answer; those are never read (RFC 9112 §9.6).
      res.shouldKeepAlive = false;
      conn.markClosing(turn.index);
    }
    // read while the gateway drains: its answer closes the connection (nothing after it is read)
    if (!h2 && this.closing) {
      res.shouldKeepAlive = false;
      conn.markClosing(turn.index);
    }
    const gen = this.generation;
    // in use until both the handler is done and the response closed (a relayed answer's
    // accounting runs on its close)
    const releaseGen = this.hold(gen);
    let using = 2;
    const done = () => {
      if (--using === 0) releaseGen();
    };
    const ac = new AbortController();
    this.inflight.set(ac, res);
    if (!h2) {
      this.tlsConnections?.track(req.socket, res);
      conn.track(res, ac);
    }
    const ctx = this.makeContext(gen, req, ac.signal, h2 ? h2RequestView(req) : undefined);
    if (!h2) this.exchanges.set(res, { gen, ctx, ac });
    // Any client disconnect before the response finished cancels the upstream request.
    res.once('close', () => {
      if (!res.writableFinished) ac.abort();
      this.inflight.delete(ac);
      done();
    });
    this.handle(gen, ctx, req, res)
      .catch((err: Error) => this.failed(gen, ctx, ac, res, err))
      .finally(() => {
        turn.decide();
        done();
        releaseStream?.();
      });
  }

  /**
   * `gen` is in use (a request or a WebSocket handshake started on it) until the returned
   * function is called, once: a generation a reload replaced keeps its policies (the JWKS
   * clients and token caches its auth policy holds …) until its last request ended.
   */
  private hold(gen: Generation): () => void {
    this.users.set(gen, (this.users.get(gen) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const left = (this.users.get(gen) ?? 1) - 1;
      if (left > 0) {
        this.users.set(gen, left);
        return;
      }
      this.users.delete(gen);
      // (after what still runs in this turn: a relayed answer is accounted for on its close)
      if (this.retired.has(gen)) setImmediate(() => void this.closeRetired(gen));
    };
  }

  /** A reload replaced `gen`: close it once nothing uses it, at the latest after RETIRE_AT_LATEST_MS. */
  private retire(gen: Generation): void {
    const latest = setTimeout(() => {
      const left = this.users.get(gen) ?? 0;
      if (left > 0)
        this.services.log.warn(
          { generation: gen.id, requests: left },
          'retiring a replaced configuration generation while requests that started on it still run',
        );
      void this.closeRetired(gen);
    }, RETIRE_AT_LATEST_MS);
    latest.unref();
    this.retired.set(gen, latest);
    if (!this.users.has(gen)) setImmediate(() => void this.closeRetired(gen));
  }

  private async closeRetired(gen: Generation): Promise<void> {
    const latest = this.retired.get(gen);
    if (latest === undefined) return;
    clearTimeout(latest);
    this.retired.delete(gen);
    await closeGeneration(gen);
  }

  /**
   * The last resort, when handling a request failed unexpectedly: the SPEC's 500
   * internal_error (through the response phase, for the security headers, when that still
   * works), what the request holds given back (its upstream request, a login lease …), and the
   * request counted once, as the 500 it got (onDone hooks included). Never throws.
   */
  private async failed(
    gen: Generation,
    ctx: RequestContext,
    ac: AbortController,
    res: http.ServerResponse,
    err: Error,
  ): Promise<void> {
    this.services.log.error(
      { request_id: ctx.id, err: err.message },
      'unexpected error while handling a request',
    );
    if (this.answeredBy.get(ctx) === 'broken-body') return;
    const route = routeNamed(gen, ctx.routeName);
    try {
      if (!res.headersSent) {
        const r = renderDeny(ctx, { code: 'internal_error' }, gen.requestIdHeader);
        await runResponsePhase(route, ctx, r.head, this.services).catch(() => {});
        if (!res.headersSent && !res.destroyed) {
          res.writeHead(r.head.status, r.head.headers as http.OutgoingHttpHeaders);
          res.end(r.body);
        }
      } else res.destroy();
    } catch {
      res.destroy();
    }
    ac.abort();
    try {
      this.finish(
        route,
        ctx,
        { status: 500, decision: 'deny', deny: { code: 'internal_error' }, deniedBy: 'gateway' },
        undefined,
      );
    } catch (e) {
      this.services.log.error(
        { request_id: ctx.id, err: (e as Error).message },
        'cannot account for a request that failed',
      );
    }
  }

  /** The request has decided whether its answer closes the connection (see ConnectionState). */
  private decided(req: http.IncomingMessage): void {
    this.turns.get(req)?.decide();
  }

  /** `h2`: the HTTP/1.1 view of an HTTP/2 stream (Host from :authority, no pseudo-headers). */
  private makeContext(
    gen: Generation,
    req: http.IncomingMessage,
    signal: AbortSignal,
    h2?: H2View,
  ): RequestContext {
    const peer = clientAddress(req.socket.remoteAddress);
    const trusted =
      gen.trustedProxies !== undefined &&
      gen.trustedProxies.check(peer, peer.includes(':') ? 'ipv6' : 'ipv4');
    const xff = req.headers['x-forwarded-for'];
    const clientIp = trusted ? forwardedFor(xff, gen.trustedProxies!, peer) : peer;
    const incomingId = gen.trustRequestId ? req.headers[gen.requestIdHeader] : undefined;
    return createContext({
      id: typeof incomingId === 'string' && isWellFormedRequestId(incomingId) ? incomingId : undefined,
      method: req.method ?? 'GET',
      target: h2 !== undefined ? h2.target : (req.url ?? '/'),
      headers: h2 !== undefined ? h2.headers : req.headers,
      rawHeaders: h2 !== undefined ? h2.rawHeaders : req.rawHeaders,
      clientIp,
      // From trusted proxies keep the chain and append the peer; otherwise the client's claims are dropped.
      forwardedFor: trusted && xff !== undefined && xff !== '' ? `${xff}, ${peer}` : clientIp,
      secure:
        (req.socket as Socket & { encrypted?: boolean }).encrypted === true ||
        (trusted && isTrustedHttps(req.headers)),
      httpVersion: req.httpVersion,
      bodySource: req,
      signal,
    });
  }

  private async handle(
    gen: Generation,
    ctx: RequestContext,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<void> {
    const services = this.services;
    // The version check is about an HTTP/1 request line; HTTP/2 was negotiated by ALPN.
    const framing = isH2Request(req)
      ? (h2RequestProblem(req, gen.listen.maxHeaderSize) ??
        framingDeny({ ...ctx, httpVersion: '1.1' }, gen.listen.maxHeaders))
      : framingDeny(ctx, gen.listen.maxHeaders);
    if (framing !== undefined) {
      res.shouldKeepAlive = false;
      this.markClosing(req);
      await this.refuse(gen, gen.unmatched, ctx, res, framing, 'gateway');
      return;
    }
    if ((req as { upgrade?: boolean }).upgrade === true && hasBody(ctx)) {
      // An upgrade to another protocol than WebSocket (`Upgrade: h2c`) is served as the plain
      // request it also is, but Node handed its connection over at the end of the head: the
      // body was never read (it was judged, and forwarded, as empty). Refused rather than
      // handled without it; the connection closes after the answer (see serveOnSocket).
      await this.refuse(
        gen,
        gen.unmatched,
        ctx,
        res,
        {
          code: 'bad_request',
          message: 'A request asking to switch protocols (Upgrade) cannot carry a body.',
          ruleIds: ['upgrade-body'],
        },
        'gateway',
      );
      return;
    }
    const normalized = normalizePath(ctx.rawPath);
    (ctx as { path: string }).path = normalized ?? ctx.rawPath;

    // A CORS preflight is routed by the method it asks for.
    const acrm = ctx.method === 'OPTIONS' ? ctx.headers['access-control-request-method'] : undefined;
    const routeMethod =
      acrm !== undefined && ctx.headers.origin !== undefined ? acrm.toUpperCase() : ctx.method;
    const m = gen.router.match(routeMethod, ctx.path);
    const route = m.kind === 'match' ? m.route.value : gen.unmatched;
    ctx.routeName = route.name;

    const phase = await runRequestPhase(route, ctx, services);
    if (phase.deny !== undefined) {
      await this.refuse(gen, route, ctx, res, phase.deny, phase.by);
      return;
    }
    const fragment = targetFragmentDeny(ctx);
    if (fragment !== undefined) {
      await this.refuse(gen, route, ctx, res, fragment, 'gateway');
      return;
    }
    const ambiguous = ambiguousPathDeny(gen.router.ambiguous(routeMethod, ctx.path, m));
    if (ambiguous !== undefined) {
      await this.refuse(gen, route, ctx, res, ambiguous, 'router');
      return;
    }
    const serverWide = serverWideOptions(ctx);
    if (serverWide !== undefined) {
      drain(req);
      const r = renderAnswer(ctx, serverWide.status, serverWide.headers, gen.requestIdHeader);
      await this.send(route, ctx, res, r, this.allowOutcome(ctx, r.head.status));
      return;
    }
    if (m.kind !== 'match') {
      const deny: Deny =
        m.kind === 'method'
          ? { code: 'method_not_allowed', headers: { Allow: m.allow.join(', ') } }
          : { code: 'not_found' };
      await this.refuse(gen, route, ctx, res, deny, 'router');
      return;
    }
    if (phase.answer !== undefined) {
      const r = renderAnswer(ctx, phase.answer.status, phase.answer.headers, gen.requestIdHeader);
      await this.send(route, ctx, res, r, this.allowOutcome(ctx, r.head.status));
      return;
    }
    if (route.adminApi) {
      // as on the admin listener: 503 while security monitoring is off
      const report = this.observers.securityHealth?.();
      const status = report === undefined ? 503 : 200;
      drain(req);
      const r = renderJson(
        ctx,
        status,
        report ?? { error: 'unavailable', message: 'Security monitoring is disabled.' },
        gen.requestIdHeader,
      );
      await this.send(route, ctx, res, r, this.allowOutcome(ctx, status));
      return;
    }
    await this.proxy(gen, route, ctx, req, res);
  }

  private allowOutcome(ctx: RequestContext, status: number): Outcome {
    return {
      status,
      decision: ctx.monitored.length > 0 ? 'monitor' : 'allow',
      deny: undefined,
      deniedBy: undefined,
    };
  }

  private async refuse(
    gen: Generation,
    route: CompiledRoute,
    ctx: RequestContext,
    res: http.ServerResponse,
    deny: Deny,
    by: string | undefined,
  ): Promise<void> {
    if (this.answeredBy.get(ctx) === 'broken-body') {
      ctx.forwardBody?.dispose?.();
      return;
    }
    this.answeredBy.set(ctx, 'handler');
    const r = renderDeny(ctx, deny, gen.requestIdHeader);
    recordDeny(ctx, deny, 'deny', r.head.status, this.services);
    // A body spooled for forwarding (uploads) is not needed any more.
    ctx.forwardBody?.dispose?.();
    // The body may still be arriving. A small one is read and discarded so the connection
    // stays usable (as NGINX does); a large or unknown-length one closes the connection.
    if (!(ctx.bodySource as Readable).readableEnded && hasBody(ctx)) {
      const cl = Number(ctx.headers['content-length'] ?? NaN);
      if (Number.isFinite(cl) && cl <= DISCARD_BODY_MAX && !ctx.bodySource.destroyed) ctx.bodySource.resume();
      else {
        res.shouldKeepAlive = false;
        this.markClosing(res.req);
      }
    }
    this.decided(res.req);
    await this.send(route, ctx, res, r, { status: r.head.status, decision: 'deny', deny, deniedBy: by });
  }

  /** Write a gateway-made response through the response phase, then account for it. */
  private async send(
    route: CompiledRoute,
    ctx: RequestContext,
    res: http.ServerResponse,
    r: Rendered,
    outcome: Outcome,
  ): Promise<void> {
    if (this.answeredBy.get(ctx) === 'broken-body') return;
    this.answeredBy.set(ctx, 'handler');
    await runResponsePhase(route, ctx, r.head, this.services);
    if (!res.headersSent && !res.destroyed) {
      res.writeHead(r.head.status, r.head.headers as http.OutgoingHttpHeaders);
      res.end(r.body);
    }
    if (!res.shouldKeepAlive) res.once('finish', () => ctx.bodySource.destroy());
    this.finish(route, ctx, outcome, undefined);
  }

  private async proxy(
    gen: Generation,
    route: CompiledRoute,
    ctx: RequestContext,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<void> {
    const services = this.services;
    const u = gen.upstream;
    const path = upstreamPath(route, ctx, u.basePath);
    const headers = upstreamHeaders(ctx, ctx.forwardedFor, gen.requestIdHeader);
    let body: Readable | Buffer | null = null;
    let limiter: BodyLimit | undefined;
    /** the request body streams to the upstream as it arrives from the client */
    let streamed = false;
    const fb = ctx.forwardBody;
    if (fb !== undefined) {
      body = fb.stream;
      headers['content-length'] = String(fb.length);
      headers['content-type'] = fb.contentType;
    } else if (ctx.body !== undefined) {
      body = ctx.body.raw;
      headers['content-length'] = String(ctx.body.raw.length);
    } else if (hasBody(ctx)) {
      streamed = true;
      const cl = ctx.headers['content-length'];
      if (cl !== undefined) headers['content-length'] = cl;
      if (Number.isFinite(route.bodyLimit)) {
        limiter = new BodyLimit(route.bodyLimit);
        body = req.pipe(limiter);
      } else body = req;
    }
    // the requests read before this one have decided whether they close the connection
    const turn = this.turns.get(req);
    if (turn !== undefined) await turn.before;
    this.decided(req);
    if (this.behindClosing(req)) {
      // pipelined behind a request whose answer closes the connection: never forwarded
      res.shouldKeepAlive = false;
      fb?.dispose?.();
      return;
    }
    ctx.forwarded = true;
    const t0 = process.hrtime.bigint();
    const result = await forward({
      pool: this.pools.get(u),
      method: ctx.method,
      path,
      headers,
      body,
      signal: ctx.signal,
      responseTimeoutMs: u.responseTimeoutMs,
      bodyTimeoutMs: u.bodyTimeoutMs,
    });
    if (isFailure(result)) {
      fb?.dispose?.();
      if (result.kind === 'aborted' || res.destroyed || this.answeredBy.get(ctx) === 'broken-body') {
        this.finish(
          route,
          ctx,
          { status: 499, decision: 'allow', deny: undefined, deniedBy: undefined },
          undefined,
        );
        return;
      }
      if (result.kind === 'too_large' || limiter?.exceeded) {
        await this.refuse(
          gen,
          route,
          ctx,
          res,
          { code: 'payload_too_large', detail: { limit: route.bodyLimit } },
          'size-limit',
        );
        return;
      }
      this.metrics.upstreamErrors.inc({ route: route.name, kind: result.kind });
      const r = renderDeny(ctx, upstreamFailure(result.kind), gen.requestIdHeader);
      await this.send(route, ctx, res, r, this.allowOutcome(ctx, r.head.status));
      return;
    }
    const upstreamSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const h = result.headers;
    cleanResponseHeaders(h);
    h[gen.requestIdHeader] = ctx.id;
    for (const k in ctx.responseHeaders) h[k] = ctx.responseHeaders[k];
    const head: ResponseHead = { status: result.status, headers: h, fromGateway: false };
    await runResponsePhase(route, ctx, head, services);
    if (res.destroyed || this.answeredBy.get(ctx) === 'broken-body') {
      // (undici's body reports its destruction as an error: nobody is left to hear it)
      result.body.on('error', ignore);
      result.body.destroy();
      fb?.dispose?.();
      this.finish(
        route,
        ctx,
        { status: 499, decision: 'allow', deny: undefined, deniedBy: undefined },
        upstreamSeconds,
      );
      return;
    }
    // The upstream answered before the whole request body arrived (an early 413 or 401).
    // undici stops sending the body once the response is complete, so the rest of it would
    // stay unread: the connection hung, its next request never read, until request_timeout.
    // As for a refusal (see refuse): a small rest is read and discarded after the answer, a
    // large or unknown one closes the connection after it.
    let drainAfter = false;
    if (streamed && !req.complete && !isH2Request(req)) {
      const cl = Number(ctx.headers['content-length'] ?? NaN);
      if (Number.isFinite(cl) && cl <= DISCARD_BODY_MAX) drainAfter = true;
      else {
        res.shouldKeepAlive = false;
        this.markClosing(req);
      }
    }
    relay(
      result.body,
      res,
      head.status,
      head.headers as http.OutgoingHttpHeaders,
      (failedBeforeHead, failedAfterHead) => {
        if (drainAfter && !req.complete && !req.destroyed) {
          req.unpipe();
          req.resume();
        }
        fb?.dispose?.();
        if (failedBeforeHead !== undefined && !res.headersSent && !res.destroyed) {
          // The body failed before its first byte (an invalid first chunk, a close or a stall
          // right after the head): nothing of the response was sent, so the client gets a clean
          // 502/504 instead of a connection closed without an answer (audited as the upstream's
          // status). The upstream connection is not reused (undici closed it).
          const kind = classifyBodyError(failedBeforeHead);
          this.metrics.upstreamErrors.inc({ route: route.name, kind });
          const r = renderDeny(ctx, upstreamFailure(kind), gen.requestIdHeader);
          this.send(route, ctx, res, r, this.allowOutcome(ctx, r.head.status)).catch((err: Error) => {
            this.services.log.error(
              { request_id: ctx.id, err: err.message },
              'cannot answer a broken upstream body',
            );
            res.destroy();
          });
          return;
        }
        if (failedAfterHead !== undefined) {
          // The body failed after part of it was relayed: the client connection was closed
          // (the declared length or the missing last chunk shows the cut). Counted like any
          // upstream failure, and the access line says so beside the upstream's status.
          const kind = classifyBodyError(failedAfterHead);
          this.metrics.upstreamErrors.inc({ route: route.name, kind });
          ctx.audit.upstream_error = kind;
          ctx.audit.response_cut = true;
        }
        this.finish(route, ctx, this.allowOutcome(ctx, head.status), upstreamSeconds);
      },
    );
  }

  /** Account for a finished request, unless answerBrokenBody answered it and did. */
  private finish(
    route: CompiledRoute,
    ctx: RequestContext,
    outcome: Outcome,
    upstreamSeconds: number | undefined,
  ): void {
    if (this.answeredBy.get(ctx) !== 'broken-body') this.account(route, ctx, outcome, upstreamSeconds);
  }

  /** Account for a finished request: monitor records, metrics, access audit, onDone, decision log. */
  private account(
    route: CompiledRoute,
    ctx: RequestContext,
    outcome: Outcome,
    upstreamSeconds: number | undefined,
  ): void {
    // once per request, whichever path gets here first (an unexpected error after the answer)
    if (this.accounted.has(ctx)) return;
    this.accounted.add(ctx);
    const services = this.services;
    for (const d of ctx.monitored) recordDeny(ctx, d, 'monitor', outcome.status, services);
    const method = KNOWN_METHODS.has(ctx.method) ? ctx.method : 'OTHER';
    const key = `${route.name}|${method}|${outcome.status}|${outcome.decision}`;
    let c = this.metricChildren.get(key);
    if (c === undefined) {
      c = this.metrics.requests.labels(route.name, method, String(outcome.status), outcome.decision);
      if (this.metricChildren.size < 10_000) this.metricChildren.set(key, c);
    }
    c.inc();
    const seconds = Number(process.hrtime.bigint() - ctx.start) / 1e9;
    let d = this.durationChildren.get(route.name);
    if (d === undefined) {
      d = this.metrics.requestDuration.labels(route.name);
      this.durationChildren.set(route.name, d);
    }
    d.observe(seconds);
    if (upstreamSeconds !== undefined) {
      let ud = this.upstreamDurationChildren.get(route.name);
      if (ud === undefined) {
        ud = this.metrics.upstreamDuration.labels(route.name);
        this.upstreamDurationChildren.set(route.name, ud);
      }
      ud.observe(upstreamSeconds);
    }
    if (outcome.decision !== 'deny' && route !== this.generation.unmatched) {
      services.audit.request('api_access', ctx, {
        decision: outcome.decision,
        status: outcome.status,
        ...ctx.audit,
      });
    }
    runDone(route, ctx, outcome, services);
    this.observers.onDecision?.(ctx, outcome, seconds);
  }

  /**
   * At shutdown, each HTTP/1.1 connection with a request in flight closes once its last
   * request is answered: an answer not started yet says `Connection: close` (and no request
   * read after it is processed), one already streaming ends the connection when it is done.
   * Without this a drained keep-alive connection stayed open, idle, until its keep-alive
   * timeout or the shutdown deadline, and held the shutdown that long.
   */
  private closeAfterInflight(): void {
    const last = new Map<Socket, http.ServerResponse>();
    for (const res of this.inflight.values()) {
      // (HTTP/2 streams end with their session's GOAWAY)
      if (res instanceof http.ServerResponse && res.socket !== null) last.set(res.socket, res);
    }
    for (const res of last.values()) {
      if (!res.headersSent) {
        res.shouldKeepAlive = false;
        this.markClosing(res.req);
      } else if (!res.writableFinished) {
        const socket = res.socket;
        res.once('finish', () => socket?.destroySoon());
      }
    }
  }

  /** the shutdown, once close() was called */
  private closed: Promise<void> | undefined;

  /**
   * Graceful shutdown: stop accepting, let in-flight requests finish up to the deadline.
   * Every call returns the same promise (a second one resolves when the shutdown is over).
   */
  close(): Promise<void> {
    return (this.closed ??= this.shutDown());
  }

  private async shutDown(): Promise<void> {
    this.closing = true;
    clearTimeout(this.reloadTimer);
    this.watcher?.close();
    this.targetWatcher?.close();
    const deadline = this.generation.listen.shutdownTimeoutMs;
    this.tls?.close();
    // WebSocket tunnels get a close frame (1001) at a frame boundary, then end.
    const tunnelsClosed = this.tunnels.closeAll(Math.min(deadline, 2000));
    const redirectClosed = this.redirect?.close();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // (the HTTP/2 listener has no closeIdleConnections: tlsConnections ends idle HTTP/1.1
    // connections and sends GOAWAY to each HTTP/2 session)
    if (typeof this.server.closeIdleConnections === 'function') this.server.closeIdleConnections();
    this.tlsConnections?.closeIdle();
    // A connection that has not sent a byte (a browser's or a load balancer's preconnect) has
    // nothing in flight, but Node counts it as busy until its first request is parsed: it
    // would hold the shutdown until header_timeout or the deadline.
    for (const s of this.sockets) if (s.bytesRead === 0 && !this.connections.has(s)) s.destroy();
    this.closeAfterInflight();
    const timer = setTimeout(() => {
      for (const ac of this.inflight.keys()) ac.abort();
      if (typeof this.server.closeAllConnections === 'function') this.server.closeAllConnections();
      for (const s of this.sockets) s.destroy();
    }, deadline);
    timer.unref();
    await Promise.all([closed, tunnelsClosed, redirectClosed]);
    clearTimeout(timer);
    await this.admin?.close();
    await Promise.all([...this.retired.keys()].map((gen) => this.closeRetired(gen)));
    await closeGeneration(this.generation);
    await this.observers.close?.();
    await this.pools.close(POOL_CLOSE_GRACE_MS);
    await cleanupUploadSpool();
    await this.store.close().catch(() => {});
    await this.audit.close();
  }
}

/**
 * Stream the upstream body to the client, its head (`status`, `headers`) written with the
 * first byte of the body or at its end. Hand-written rather than stream.pipeline, which
 * allocates an AbortController (and a DOMException when it aborts it) per call: measurable
 * on a path that runs for every request. On a client disconnect the upstream body is
 * destroyed (which cancels the upstream request). When the upstream body fails before its
 * first byte, nothing was sent yet (Node writes a head with the first byte of the body, so
 * the client gets the same bytes as with an eager head): `done` gets the error and the request
 * can still be answered with a 502/504. When it fails later, the client connection is
 * destroyed, since part of the response was sent. When another answer was written meanwhile
 * (a broken client body's 400) the upstream body is dropped.
 */
function relay(
  src: Readable,
  res: http.ServerResponse,
  status: number,
  headers: http.OutgoingHttpHeaders,
  done: (failedBeforeHead: unknown, failedAfterHead?: unknown) => void,
): void {
  // once settled, a late error of the source (undici's body reports its destruction on the
  // next tick) has nobody to tell: it must not become an unhandled 'error' event
  src.on('error', ignore);
  let settled = false;
  let started = false;
  const settle = (failedBeforeHead: unknown, failedAfterHead?: unknown) => {
    if (settled) return;
    settled = true;
    src.off('data', onData);
    src.off('end', onEnd);
    src.off('error', onError);
    res.off('close', onClose);
    res.off('finish', onFinish);
    res.off('drain', onDrain);
    done(failedBeforeHead, failedAfterHead);
  };
  /** write the head; false when another answer was written instead (the body is dropped) */
  const start = (): boolean => {
    if (started) return true;
    if (res.headersSent || res.writableEnded) {
      src.destroy();
      settle(undefined);
      return false;
    }
    started = true;
    res.writeHead(status, headers);
    return true;
  };
  const onData = (chunk: Buffer) => {
    if (start() && !res.write(chunk)) src.pause();
  };
  const onDrain = () => src.resume();
  const onEnd = () => {
    if (start()) res.end();
  };
  const onError = (err: unknown) => {
    if (!started) {
      settle(err ?? new Error('upstream body failed'));
      return;
    }
    res.destroy();
    settle(undefined, err ?? new Error('upstream body failed'));
  };
  const onClose = () => {
    if (!res.writableFinished) src.destroy();
    settle(undefined);
  };
  const onFinish = () => settle(undefined);
  src.on('data', onData);
  src.on('end', onEnd);
  src.on('error', onError);
  res.on('drain', onDrain);
  res.on('close', onClose);
  res.on('finish', onFinish);
}

/**
 * The route a request was matched to, from its name (the unmatched route when none): for the
 * paths that answer a request outside its handler (a broken body, an unexpected error).
 */
function routeNamed(gen: Generation, name: string): CompiledRoute {
  return gen.routes.find((r) => r.name === name) ?? gen.unmatched;
}

/**
 * The answer to an upstream failure: 504 for a timeout, else 502, whose message tells a
 * connection that could not be made from an answer that broke off or could not be read.
 */
function upstreamFailure(kind: UpstreamFailure['kind']): Deny {
  if (kind === 'timeout') return { code: 'gateway_timeout' };
  if (kind === 'reset')
    return { code: 'bad_gateway', message: 'The upstream service broke off or sent an invalid answer.' };
  return { code: 'bad_gateway' };
}

function ignore(): void {}

function drain(req: http.IncomingMessage): void {
  if (!req.readableEnded) req.resume();
}
