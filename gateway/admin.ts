import http from 'node:http';
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { rawErrorResponse } from './reply.js';
import type { RequestContext } from './context.js';
import type { Generation } from './config/compile.js';
import type { Outcome } from './policy.js';
import type { Gateway } from './server.js';
import { isLoopbackHost } from './observability/score.js';

/** Hooks the observability layer attaches to the running gateway. */
export interface Observers {
  /** every audit line written (after redaction), with the request's context for a request event */
  onAudit?(line: Record<string, unknown>, ctx?: RequestContext): void;
  /** a generation became active (start, reload) */
  onGeneration?(gen: Generation): void;
  /** a request finished */
  onDecision?(ctx: RequestContext, outcome: Outcome, seconds: number): void;
  /** the security health report (score, checks, recommendations) */
  securityHealth?(): unknown;
  /** extra readiness checks: reasons when not ready */
  readiness?(): Promise<string[]>;
  /**
   * the body of `GET /metrics` when this process's registry is not the whole gateway (cluster
   * workers: every worker's, merged); rejects with the reason, answered as a 503
   */
  metrics?(): Promise<string>;
  /** admin routes served by the observability layer; return false when not handled */
  adminRoute?(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<boolean>;
  close?(): Promise<void>;
}

/** Probe a TCP connection to the upstream (readiness); resolves to an error text or undefined. */
function probe(origin: string, timeoutMs: number): Promise<string | undefined> {
  const u = new URL(origin);
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  return new Promise((resolve) => {
    const socket = net.connect({ host: u.hostname.replace(/^\[|\]$/g, ''), port });
    const done = (err?: string) => {
      socket.destroy();
      resolve(err);
    };
    socket.setTimeout(timeoutMs, () => done('upstream connect timed out'));
    socket.once('connect', () => done());
    socket.once('error', (e: NodeJS.ErrnoException) => done(`upstream unreachable (${e.code ?? 'error'})`));
  });
}

/**
 * Whether a `Host` header names the admin listener without a DNS name that could be rebound:
 * an IP literal (`127.0.0.1:9901`, `[::1]:9901`) or `localhost`. A page on another site whose
 * name an attacker re-points at 127.0.0.1 (DNS rebinding) is the browser's same origin for
 * the listener, but sends its own name here.
 */
export function isLocalAdminHost(host: string | undefined): boolean {
  if (host === undefined) return true; // HTTP/1.0 without Host: not a browser
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]*))(?::\d{1,5})?$/.exec(host.trim());
  if (!m) return false;
  if (m[1] !== undefined) return net.isIP(m[1]) === 6;
  const name = m[2]!.toLowerCase().replace(/\.$/, '');
  return name === 'localhost' || name.endsWith('.localhost') || net.isIP(name) === 4;
}

/**
 * Whether a browser says this request comes from another site's page (CSRF on the admin
 * listener: a form or `fetch` on any site the operator visits can POST to 127.0.0.1).
 * Clients that are not browsers (curl, the CLI, Prometheus) send neither header.
 */
function isCrossSite(req: http.IncomingMessage): boolean {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return true;
  const origin = req.headers.origin;
  if (origin === undefined) return false;
  try {
    return new URL(origin).host !== (req.headers.host ?? '').toLowerCase();
  } catch {
    return true; // `null` (sandboxed frames, file: pages) or garbage
  }
}

function json(res: http.ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
}

/** the one path of the admin listener that is not read with GET */
const RELOAD_PATH = '/api/reload';

/** 405 with the methods the path does serve (`Allow`, RFC 9110 §15.5.6). */
function methodNotAllowed(res: http.ServerResponse, allow: 'GET, HEAD' | 'POST'): void {
  res.setHeader('allow', allow);
  json(res, 405, {
    error: 'method_not_allowed',
    message: allow === 'POST' ? 'Only POST is served here.' : 'Only GET is served here.',
  });
}

/**
 * The admin listener (127.0.0.1 by default): /healthz, /readyz, /metrics,
 * /api/health/security, and what the observability layer adds (dashboard, decisions).
 */
export class AdminServer {
  private readonly server: http.Server;
  /** bound to loopback: only local Host names are answered (no DNS rebinding) */
  private loopbackOnly = false;

  constructor(private readonly gw: Gateway) {
    this.server = http.createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
      this.handle(req, res).catch(() => {
        if (!res.headersSent) json(res, 500, { error: 'internal_error', message: 'Internal error.' });
        else res.destroy();
      });
    });
    // A request the parser refuses gets a plain 400 when nothing else is in flight on the
    // connection (as on the main listener), then the connection closes.
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
      const busy = (socket as net.Socket & { _httpMessage?: unknown })._httpMessage;
      if (socket.writable && !busy && err.code !== 'ECONNRESET' && err.code !== 'ERR_HTTP_REQUEST_TIMEOUT') {
        socket.end(rawErrorResponse(400, 'bad_request', 'The request could not be parsed.', randomUUID()));
        socket.destroySoon();
      } else socket.destroy();
    });
    // CONNECT: a 400 as on the main listener, instead of Node's silent close
    this.server.on('connect', (_req: http.IncomingMessage, socket: net.Socket) => {
      socket.on('error', () => socket.destroy());
      socket.end(rawErrorResponse(400, 'bad_request', 'The request target must be a path.', randomUUID()));
      socket.destroySoon();
    });
  }

  async listen(host: string, port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const bound = this.server.address();
        this.loopbackOnly = bound !== null && typeof bound === 'object' && isLoopbackHost(bound.address);
        resolve();
      });
    });
  }

  get url(): string {
    const a = this.server.address() as net.AddressInfo;
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  async readiness(): Promise<{ ready: boolean; reasons: string[] }> {
    const reasons: string[] = [];
    const gen = this.gw.generation;
    const upstream = await probe(gen.upstream.origin, 1000);
    if (upstream !== undefined) reasons.push(upstream);
    if (this.gw.store.kind !== 'memory') {
      try {
        await this.gw.store.ping();
      } catch (err) {
        reasons.push(`store unavailable (${(err as Error).message})`);
      }
    }
    const extra = (await this.gw.observers.readiness?.()) ?? [];
    reasons.push(...extra);
    return { ready: reasons.length === 0, reasons };
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // the request target as a path: `//x` must not become a host (new URL('//x', base) does)
    const target = req.url ?? '/';
    let url: URL;
    try {
      url = new URL(`http://admin${target.startsWith('/') ? '' : '/'}${target}`);
    } catch {
      json(res, 400, { error: 'bad_request', message: 'The request target is not a valid path.' });
      return;
    }
    if (this.loopbackOnly && !isLocalAdminHost(req.headers.host)) {
      json(res, 403, {
        error: 'forbidden',
        message: 'The admin listener answers only to a local Host (localhost or an IP address).',
      });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      if (isCrossSite(req)) {
        json(res, 403, {
          error: 'forbidden',
          message: 'Cross-site requests to the admin listener are refused.',
        });
        return;
      }
      if (url.pathname === RELOAD_PATH) {
        if (req.method === 'POST') {
          const r = await this.gw.reloadRequested('admin');
          // (refused while the gateway shuts down: not the file's fault)
          json(res, r.result === 'success' ? 200 : this.gw.shuttingDown ? 503 : 422, r);
        } else methodNotAllowed(res, 'POST');
        return;
      }
      methodNotAllowed(res, 'GET, HEAD');
      return;
    }
    switch (url.pathname) {
      case RELOAD_PATH:
        // GET (a link, a typo for POST) reloads nothing; the answer names the method that does
        methodNotAllowed(res, 'POST');
        return;
      case '/healthz':
        json(res, 200, { status: 'ok' });
        return;
      case '/readyz': {
        const r = await this.readiness();
        json(res, r.ready ? 200 : 503, {
          status: r.ready ? 'ready' : 'not_ready',
          generation: this.gw.generation.id,
          reasons: r.reasons,
        });
        return;
      }
      case '/metrics': {
        let body: string;
        try {
          body = await (this.gw.observers.metrics?.() ?? this.gw.metrics.registry.metrics());
        } catch (err) {
          const text = `metrics unavailable: ${(err as Error).message}\n`;
          res.writeHead(503, {
            'content-type': 'text/plain; charset=utf-8',
            'cache-control': 'no-store',
            'content-length': Buffer.byteLength(text),
            'x-content-type-options': 'nosniff',
          });
          res.end(text);
          return;
        }
        // (label values carry request data such as route names: never sniffed as HTML)
        res.writeHead(200, {
          'content-type': this.gw.metrics.registry.contentType,
          'cache-control': 'no-store',
          'x-content-type-options': 'nosniff',
        });
        res.end(body);
        return;
      }
      case '/api/health/security': {
        const report = this.gw.observers.securityHealth?.();
        if (report === undefined)
          json(res, 503, { error: 'unavailable', message: 'Security monitoring is disabled.' });
        else json(res, 200, report);
        return;
      }
      default:
        if (this.gw.observers.adminRoute && (await this.gw.observers.adminRoute(req, res, url))) return;
        json(res, 404, { error: 'not_found', message: 'No such admin endpoint.' });
    }
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
  }
}
