import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { RedirectSettings } from './config/compile.js';
import type { Metrics } from './observability/metrics.js';

/**
 * The HTTP→HTTPS redirect listener (`listen.redirect`): every request gets
 * `308 Permanent Redirect` to the same host, path and query on https, except the
 * health-check paths, which get `200 {"status":"ok"}`. Nothing else: no policies, no
 * proxying, no HSTS (RFC 6797 §7.2 forbids it over plain HTTP).
 */

const HOST_RE =
  /^(?:([A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)|(\[[0-9A-Fa-f:.]{2,45}\]))(?::\d{1,5})?$/;

const BASE_HEADERS = { 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' } as const;

function json(
  res: http.ServerResponse,
  status: number,
  value: unknown,
  extra: Record<string, string> = {},
): void {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    ...BASE_HEADERS,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    ...extra,
  });
  res.end(body);
}

function hasControlOrSpace(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** The https URL for a plain-HTTP request, or undefined when Host or the target is unusable. */
export function redirectLocation(
  target: string,
  host: string | undefined,
  httpsPort: number,
): string | undefined {
  if (host === undefined) return undefined;
  const m = HOST_RE.exec(host.trim());
  if (m === null) return undefined;
  let t = target;
  if (/^https?:\/\//i.test(t)) {
    const i = t.indexOf('/', t.indexOf('//') + 2);
    t = i === -1 ? '/' : t.slice(i);
  }
  if (t.charCodeAt(0) !== 47 || hasControlOrSpace(t)) return undefined;
  if (t.startsWith('//')) t = `/${t.replace(/^\/+/, '')}`; // never a scheme-relative Location
  const name = (m[1] ?? m[2]!).toLowerCase();
  return `https://${name}${httpsPort === 443 ? '' : `:${httpsPort}`}${t}`;
}

export class RedirectServer {
  private readonly server: http.Server;
  private readonly sockets = new Set<Socket>();

  /**
   * `settings()` returns the current generation's redirect settings (exempt paths follow
   * reloads); `mainPort()` the main listener's port, used when `https_port` is not set.
   */
  constructor(
    private readonly settings: () => RedirectSettings | undefined,
    private readonly mainPort: () => number,
    private readonly metrics: Metrics,
    timeouts: {
      headersTimeout: number;
      requestTimeout: number;
      keepAliveTimeout: number;
      maxHeaderSize: number;
    },
  ) {
    this.server = http.createServer(
      {
        headersTimeout: timeouts.headersTimeout,
        requestTimeout: timeouts.requestTimeout,
        keepAliveTimeout: timeouts.keepAliveTimeout,
        maxHeaderSize: timeouts.maxHeaderSize,
        connectionsCheckingInterval: Math.max(
          100,
          Math.min(30_000, Math.floor(timeouts.headersTimeout / 4) || 30_000),
        ),
      },
      (req, res) => this.handle(req, res),
    );
    this.server.on('clientError', (_err, socket: Socket) => {
      if (socket.writable)
        socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      socket.destroySoon();
    });
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const s = this.settings();
    const target = req.url ?? '/';
    const q = target.indexOf('?');
    const path = q === -1 ? target : target.slice(0, q);
    const method = req.method ?? 'GET';
    const count = (code: number) =>
      this.metrics.requests.inc({
        route: 'redirect',
        method: /^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$/.test(method) ? method : 'OTHER',
        code: String(code),
        decision: 'allow',
      });
    if (s !== undefined && s.exemptPaths.has(path) && (method === 'GET' || method === 'HEAD')) {
      count(200);
      json(res, 200, { status: 'ok' });
      return;
    }
    const location = redirectLocation(target, req.headers.host, s?.httpsPort ?? this.mainPort());
    if (location === undefined) {
      count(400);
      json(
        res,
        400,
        {
          error: 'bad_request',
          message: 'A valid Host header and request target are needed to redirect to https.',
        },
        { connection: 'close' },
      );
      return;
    }
    count(308);
    res.writeHead(308, { ...BASE_HEADERS, location, 'content-length': 0 });
    res.end();
  }

  async listen(host: string, port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    const host = a.address === '0.0.0.0' || a.address === '::' ? '127.0.0.1' : a.address;
    return `http://${host.includes(':') ? `[${host}]` : host}:${a.port}`;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    for (const s of this.sockets) s.destroySoon();
    await closed;
  }
}
