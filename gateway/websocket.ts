import http from 'node:http';
import https from 'node:https';
import { createHash, randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Metrics } from './observability/metrics.js';
import { isWebSocketUpgrade, type RequestContext } from './context.js';
import type { CompiledRoute, Generation } from './config/compile.js';
import type { Deny, Outcome, ResponseHead, Services } from './policy.js';
import {
  runRequestPhase,
  runResponsePhase,
  recordDeny,
  framingDeny,
  targetFragmentDeny,
  ambiguousPathDeny,
} from './pipeline.js';
import { renderDeny, renderAnswer } from './reply.js';
import { upstreamHeaders, upstreamPath, cleanResponseHeaders } from './proxy.js';
import { normalizePath } from './router.js';

/**
 * WebSocket upgrades (RFC 6455): checks of the upgrade request, the upstream handshake,
 * and the byte tunnel between client and upstream. The request phase (authentication,
 * CORS, rate limits, audit) runs in the server before anything here opens a tunnel.
 */

/** The client asks for a WebSocket (an `Upgrade` header naming `websocket`). */
export { isWebSocketUpgrade };

const KEY_RE = /^[A-Za-z0-9+/]{22}==$/;

export interface UpgradeProblem {
  readonly message: string;
  readonly ruleId: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * What is wrong with a WebSocket upgrade request (RFC 6455 §4.1–4.2.1), or undefined:
 * GET over HTTP/1.1, `Connection: Upgrade`, a `Sec-WebSocket-Key` of 16 base64 bytes,
 * `Sec-WebSocket-Version: 13`, and no body.
 */
export function upgradeProblem(
  method: string,
  httpVersion: string,
  headers: http.IncomingHttpHeaders,
): UpgradeProblem | undefined {
  if (method !== 'GET') return { message: 'A WebSocket upgrade must use GET.', ruleId: 'websocket-method' };
  if (httpVersion !== '1.1')
    return { message: 'A WebSocket upgrade needs HTTP/1.1.', ruleId: 'websocket-version' };
  const te = headers['transfer-encoding'];
  const cl = headers['content-length'];
  if (te !== undefined || (cl !== undefined && cl !== '0'))
    return { message: 'A WebSocket upgrade request carries no body.', ruleId: 'websocket-body' };
  const conn = headers.connection;
  if (typeof conn !== 'string' || !conn.split(',').some((t) => t.trim().toLowerCase() === 'upgrade')) {
    return { message: 'A WebSocket upgrade needs Connection: Upgrade.', ruleId: 'websocket-connection' };
  }
  const key = headers['sec-websocket-key'];
  if (
    typeof key !== 'string' ||
    !KEY_RE.test(key.trim()) ||
    Buffer.from(key.trim(), 'base64').length !== 16
  ) {
    return { message: 'Missing or malformed Sec-WebSocket-Key.', ruleId: 'websocket-key' };
  }
  if (headers['sec-websocket-version'] !== '13') {
    return {
      message: 'Unsupported Sec-WebSocket-Version (13 is supported).',
      ruleId: 'websocket-version',
      headers: { 'Sec-WebSocket-Version': '13' },
    };
  }
  return undefined;
}

/**
 * Whether an upstream's 101 completes the WebSocket handshake the gateway sent (RFC 6455
 * §4.2.2): `Upgrade: websocket` and the `Sec-WebSocket-Accept` of the key sent. A 101
 * without them may come from a handler that only set the status while its server goes on
 * reading HTTP on the connection: a tunnel to it would carry the client's next bytes as
 * requests the gateway never judged.
 */
export function completesHandshake(key: string | undefined, res: http.IncomingMessage): boolean {
  if (key === undefined || !isWebSocketUpgrade(res.headers)) return false;
  const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  return res.headers['sec-websocket-accept'] === accept;
}

/** An HTTP/1.1 response head as bytes (header values with CR/LF are dropped). */
export function serializeHead(
  status: number,
  headers: Readonly<Record<string, string | readonly string[] | undefined>>,
): string {
  let out = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Unknown'}\r\n`;
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    for (const one of typeof v === 'string' ? [v] : v) if (!/[\r\n]/.test(one)) out += `${name}: ${one}\r\n`;
  }
  return `${out}\r\n`;
}

export interface UpstreamUpgradeArgs {
  readonly origin: string;
  readonly path: string;
  /** request headers for the upstream (already built: X-Forwarded-*, identity, request id) */
  readonly headers: Record<string, string>;
  readonly connectTimeoutMs: number;
  readonly responseTimeoutMs: number;
}

export type UpstreamUpgrade =
  | {
      readonly kind: 'upgraded';
      readonly res: http.IncomingMessage;
      readonly socket: Socket;
      readonly head: Buffer;
    }
  | { readonly kind: 'response'; readonly res: http.IncomingMessage }
  | { readonly kind: 'failure'; readonly failure: 'connect' | 'timeout' | 'reset' };

/** Send the upgrade request to the upstream and wait for its 101 (or another answer). */
export function upgradeUpstream(args: UpstreamUpgradeArgs): Promise<UpstreamUpgrade> {
  const u = new URL(args.origin);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: UpstreamUpgrade) => {
      if (done) return;
      done = true;
      clearTimeout(connectTimer);
      resolve(r);
    };
    const req = mod.request({
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port: u.port || (u.protocol === 'https:' ? 443 : 80),
      method: 'GET',
      path: args.path,
      headers: { ...args.headers, connection: 'Upgrade', upgrade: 'websocket' },
      agent: false,
    });
    const connectTimer = setTimeout(() => {
      finish({ kind: 'failure', failure: 'connect' });
      req.destroy();
    }, args.connectTimeoutMs);
    req.once('socket', (s: Socket) => s.once('connect', () => clearTimeout(connectTimer)));
    req.setTimeout(args.responseTimeoutMs, () => {
      finish({ kind: 'failure', failure: 'timeout' });
      req.destroy();
    });
    req.once('upgrade', (res, socket: Socket, head: Buffer) => {
      socket.setTimeout(0);
      if (done) {
        socket.destroy();
        return;
      }
      finish({ kind: 'upgraded', res, socket, head });
    });
    req.once('response', (res) => finish({ kind: 'response', res }));
    req.once('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      finish({
        kind: 'failure',
        failure: /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN/.test(code) ? 'connect' : 'reset',
      });
    });
    req.end();
  });
}

/**
 * Tracks frame boundaries of one direction of a WebSocket stream without buffering
 * payloads, so a close frame can be inserted between two frames at shutdown.
 */
export class FrameBoundary {
  private header: number[] = [];
  private need = 2;
  private payloadLeft = 0;

  get atBoundary(): boolean {
    return this.header.length === 0 && this.payloadLeft === 0;
  }

  /**
   * Consume bytes of `chunk` from `offset`; with `stop`, stop at the first frame boundary
   * (possibly `offset` itself). Returns the index reached.
   */
  advance(chunk: Buffer, offset = 0, stop = false): number {
    let i = offset;
    while (i < chunk.length) {
      if (stop && this.atBoundary) return i;
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, chunk.length - i);
        this.payloadLeft -= n;
        i += n;
        continue;
      }
      this.header.push(chunk[i++]!);
      const h = this.header;
      if (h.length === 2) {
        const len7 = h[1]! & 0x7f;
        this.need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (h[1]! & 0x80 ? 4 : 0);
      }
      if (h.length >= 2 && h.length === this.need) {
        const len7 = h[1]! & 0x7f;
        let len = len7;
        if (len7 === 126) len = (h[2]! << 8) | h[3]!;
        else if (len7 === 127) {
          len = 0;
          for (let k = 2; k < 10; k++) len = len * 256 + h[k]!;
        }
        this.payloadLeft = len;
        this.header = [];
        this.need = 2;
      }
    }
    return i;
  }
}

/** A close frame (RFC 6455 §5.5.1); `mask` for frames sent as a client (to the upstream). */
export function closeFrame(code: number, reason: string, mask: boolean): Buffer {
  const payload = Buffer.concat([
    Buffer.from([code >> 8, code & 0xff]),
    Buffer.from(reason, 'utf8').subarray(0, 123),
  ]);
  const head = Buffer.from([0x88, (mask ? 0x80 : 0) | payload.length]);
  if (!mask) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  const masked = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) masked[i] = payload[i]! ^ key[i & 3]!;
  return Buffer.concat([head, key, masked]);
}

/** One direction of a tunnel: forwards bytes with backpressure, knows frame boundaries. */
class Pipe {
  readonly frames = new FrameBoundary();
  stopped = false;
  private onClosed: (() => void) | undefined;

  constructor(
    private readonly src: Duplex,
    private readonly dst: Duplex,
    private readonly closeBytes: () => Buffer,
  ) {
    src.on('data', (chunk: Buffer) => this.data(chunk));
  }

  private data(chunk: Buffer): void {
    if (this.stopped) return;
    if (this.onClosed !== undefined) {
      // closing: forward up to the next frame boundary, then the close frame
      const at = this.frames.advance(chunk, 0, true);
      if (at > 0) this.dst.write(chunk.subarray(0, at));
      if (this.frames.atBoundary) this.sendClose();
      return;
    }
    this.frames.advance(chunk);
    if (!this.dst.write(chunk)) {
      this.src.pause();
      this.dst.once('drain', () => this.src.resume());
    }
  }

  /** Insert a close frame at the next boundary, then stop forwarding this direction. */
  close(onClosed: () => void): void {
    if (this.stopped) {
      onClosed();
      return;
    }
    this.onClosed = onClosed;
    this.src.resume();
    if (this.frames.atBoundary) this.sendClose();
  }

  private sendClose(): void {
    this.stopped = true;
    if (this.dst.writable) this.dst.write(this.closeBytes());
    const cb = this.onClosed;
    this.onClosed = undefined;
    cb?.();
  }
}

/** An open tunnel between a client and the upstream. */
class Tunnel {
  private readonly up: Pipe;
  private readonly down: Pipe;
  private closed = false;
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  constructor(
    readonly client: Duplex,
    readonly upstream: Socket,
    onEnd: () => void,
  ) {
    this.done = new Promise((r) => (this.resolveDone = r));
    this.up = new Pipe(client, upstream, () => closeFrame(1001, 'gateway shutting down', true));
    this.down = new Pipe(upstream, client, () => closeFrame(1001, 'gateway shutting down', false));
    const end = () => {
      if (this.closed) return;
      this.closed = true;
      client.destroy();
      upstream.destroy();
      onEnd();
      this.resolveDone();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
      s.on('end', () => {
        // half-close passes through (a clean WebSocket close ends both ways)
        const other = s === client ? upstream : client;
        if (other.writable) other.end();
      });
    }
  }

  /** Bytes read with the upgrade heads belong to the first frames of each direction. */
  prime(clientHead: Buffer, upstreamHead: Buffer): void {
    if (upstreamHead.length > 0) {
      this.down.frames.advance(upstreamHead);
      this.client.write(upstreamHead);
    }
    if (clientHead.length > 0) {
      this.up.frames.advance(clientHead);
      this.upstream.write(clientHead);
    }
  }

  /**
   * Graceful close: a close frame (1001 going away) to both ends, each between two frames,
   * then both sockets end; destroyed after `graceMs` whatever happens.
   */
  shutdown(graceMs: number): Promise<void> {
    if (this.closed) return this.done;
    let pending = 2;
    const oneDone = () => {
      if (--pending > 0) return;
      this.client.end();
      this.upstream.end();
    };
    this.down.close(oneDone);
    this.up.close(oneDone);
    const t = setTimeout(() => {
      this.client.destroy();
      this.upstream.destroy();
    }, graceMs);
    t.unref();
    return this.done.finally(() => clearTimeout(t));
  }
}

/** Every open tunnel, counted in `gateway_websocket_tunnels`. */
export class WebSocketTunnels {
  private readonly open = new Set<Tunnel>();

  constructor(private readonly metrics: Metrics) {}

  get size(): number {
    return this.open.size;
  }

  /** Join the client socket and the upgraded upstream socket; `head`s are bytes already read. */
  add(client: Duplex, clientHead: Buffer, upstream: Socket, upstreamHead: Buffer): void {
    if ('setTimeout' in client && typeof client.setTimeout === 'function') (client as Socket).setTimeout(0);
    if ('setNoDelay' in client && typeof client.setNoDelay === 'function')
      (client as Socket).setNoDelay(true);
    upstream.setNoDelay(true);
    const tunnel = new Tunnel(client, upstream, () => {
      if (this.open.delete(tunnel)) this.metrics.websocketTunnels.dec();
    });
    this.open.add(tunnel);
    this.metrics.websocketTunnels.inc();
    tunnel.prime(clientHead, upstreamHead);
  }

  /** Close every tunnel gracefully (close frames), forcing after `graceMs`. */
  async closeAll(graceMs: number): Promise<void> {
    await Promise.all([...this.open].map((t) => t.shutdown(graceMs)));
  }
}

/** What the upgrade handler needs from the running gateway (its private parts, bound). */
export interface UpgradeHost {
  readonly services: Services;
  readonly tunnels: WebSocketTunnels;
  generation(): Generation;
  /** `gen` is in use until the returned function is called (see Gateway.hold) */
  hold(gen: Generation): () => void;
  closing(): boolean;
  makeContext(gen: Generation, req: http.IncomingMessage, signal: AbortSignal): RequestContext;
  finish(
    route: CompiledRoute,
    ctx: RequestContext,
    outcome: Outcome,
    upstreamSeconds: number | undefined,
  ): void;
  forwardedFor(ctx: RequestContext, req: http.IncomingMessage, gen: Generation): string;
  /** serve a non-WebSocket upgrade request (e.g. `Upgrade: h2c`) as the plain request it also is */
  serveAsRequest(req: http.IncomingMessage, res: http.ServerResponse): void;
}

/**
 * Answer `req`, a request the HTTP server handed over with its socket (an upgrade or a
 * `CONNECT`), as the plain request it also is: `serve` writes the answer through a response
 * bound to the socket, which then closes (the bytes after the head are never read). The
 * caller listens for the socket's errors (Gateway.handOver, for every handed-over socket).
 */
export function serveOnSocket(
  req: http.IncomingMessage,
  socket: Duplex,
  serve: (req: http.IncomingMessage, res: http.ServerResponse) => void,
): void {
  const res = new http.ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket as Socket);
  res.once('finish', () => {
    res.detachSocket(socket as Socket);
    (socket as Socket).destroySoon();
  });
  serve(req, res);
}

/**
 * The server's `upgrade` event. A WebSocket upgrade goes through the same request phase
 * as any request on its route; a refusal is the normal JSON error (then the connection
 * closes) and no tunnel opens; an allowed one is handed to the upstream and, on its 101,
 * tunnelled. Other upgrade protocols are answered as plain requests (the upgrade ignored).
 * The caller listens for the socket's errors, as for {@link serveOnSocket}.
 */
export function handleUpgrade(
  host: UpgradeHost,
  req: http.IncomingMessage,
  socket: Duplex,
  head: Buffer,
): void {
  if (!isWebSocketUpgrade(req.headers)) {
    serveOnSocket(req, socket, host.serveAsRequest);
    return;
  }
  // the handshake runs on the generation it started on, which stays usable until it is done
  // (the tunnel after it uses none)
  const gen = host.generation();
  const release = host.hold(gen);
  void upgrade(host, gen, req, socket, head)
    .catch((err: Error) => {
      host.services.log.error({ err: err.message }, 'unexpected error while handling a WebSocket upgrade');
      socket.destroy();
    })
    .finally(release);
}

async function upgrade(
  host: UpgradeHost,
  gen: Generation,
  req: http.IncomingMessage,
  socket: Duplex,
  head: Buffer,
): Promise<void> {
  const services = host.services;
  const ac = new AbortController();
  const ctx = host.makeContext(gen, req, ac.signal);
  socket.once('close', () => ac.abort());

  const refuse = async (
    route: CompiledRoute,
    deny: Deny,
    by: string | undefined,
    decision: 'deny' | 'allow' = 'deny',
  ) => {
    const r = renderDeny(ctx, deny, gen.requestIdHeader);
    if (decision === 'deny') recordDeny(ctx, deny, 'deny', r.head.status, services);
    await runResponsePhase(route, ctx, r.head, services);
    writeAndClose(socket, r.head.status, r.head.headers, r.body);
    host.finish(
      route,
      ctx,
      {
        status: r.head.status,
        decision,
        deny: decision === 'deny' ? deny : undefined,
        deniedBy: decision === 'deny' ? by : undefined,
      },
      undefined,
    );
  };

  if (host.closing()) {
    await refuse(
      gen.unmatched,
      { code: 'service_unavailable', message: 'The gateway is shutting down.' },
      'gateway',
      'allow',
    );
    return;
  }
  const framing = framingDeny(ctx, gen.listen.maxHeaders);
  if (framing !== undefined) {
    await refuse(gen.unmatched, framing, 'gateway');
    return;
  }
  const problem = upgradeProblem(ctx.method, ctx.httpVersion, ctx.headers);
  if (problem !== undefined) {
    await refuse(
      gen.unmatched,
      {
        code: 'bad_request',
        message: problem.message,
        ruleIds: [problem.ruleId],
        ...(problem.headers ? { headers: problem.headers } : {}),
      },
      'websocket',
    );
    return;
  }
  (ctx as { path: string }).path = normalizePath(ctx.rawPath) ?? ctx.rawPath;
  const m = gen.router.match(ctx.method, ctx.path);
  const route = m.kind === 'match' ? m.route.value : gen.unmatched;
  ctx.routeName = route.name;
  const phase = await runRequestPhase(route, ctx, services);
  if (phase.deny !== undefined) {
    await refuse(route, phase.deny, phase.by);
    return;
  }
  const fragment = targetFragmentDeny(ctx);
  if (fragment !== undefined) {
    await refuse(route, fragment, 'gateway');
    return;
  }
  const ambiguous = ambiguousPathDeny(gen.router.ambiguous(ctx.method, ctx.path, m));
  if (ambiguous !== undefined) {
    await refuse(route, ambiguous, 'router');
    return;
  }
  if (m.kind !== 'match') {
    await refuse(
      route,
      m.kind === 'method'
        ? { code: 'method_not_allowed', headers: { Allow: m.allow.join(', ') } }
        : { code: 'not_found' },
      'router',
    );
    return;
  }
  if (!route.websocket || route.adminApi) {
    await refuse(
      route,
      {
        code: 'bad_request',
        message: 'WebSocket upgrades are not accepted on this route.',
        ruleIds: ['websocket-route'],
      },
      'router',
    );
    return;
  }
  if (phase.answer !== undefined) {
    const r = renderAnswer(ctx, phase.answer.status, phase.answer.headers, gen.requestIdHeader);
    await runResponsePhase(route, ctx, r.head, services);
    writeAndClose(socket, r.head.status, r.head.headers, r.body);
    host.finish(
      route,
      ctx,
      { status: r.head.status, decision: 'allow', deny: undefined, deniedBy: undefined },
      undefined,
    );
    return;
  }

  const u = gen.upstream;
  const path = upstreamPath(route, ctx, u.basePath);
  const headers = upstreamHeaders(ctx, host.forwardedFor(ctx, req, gen), gen.requestIdHeader);
  ctx.forwarded = true;
  const t0 = process.hrtime.bigint();
  const result = await upgradeUpstream({
    origin: u.origin,
    path,
    headers,
    connectTimeoutMs: u.connectTimeoutMs,
    responseTimeoutMs: u.responseTimeoutMs,
  });
  const upstreamSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const outcome = (status: number): Outcome => ({
    status,
    decision: ctx.monitored.length > 0 ? 'monitor' : 'allow',
    deny: undefined,
    deniedBy: undefined,
  });
  if (result.kind === 'failure') {
    services.metrics.upstreamErrors.inc({ route: route.name, kind: result.failure });
    await refuse(
      route,
      { code: result.failure === 'timeout' ? 'gateway_timeout' : 'bad_gateway' },
      undefined,
      'allow',
    );
    return;
  }
  if (socket.destroyed) {
    if (result.kind === 'upgraded') result.socket.destroy();
    else result.res.destroy();
    host.finish(route, ctx, outcome(499), upstreamSeconds);
    return;
  }
  if (result.kind === 'response') {
    // The upstream declined the upgrade: relay its answer like any response, then close.
    const te = result.res.headers['transfer-encoding'];
    if (te !== undefined && te.trim().toLowerCase() !== 'chunked') {
      // as forward() does: the bytes would reach the client still coded (`gzip`), and
      // Transfer-Encoding is hop-by-hop, so the client would take them for the content
      result.res.destroy();
      services.metrics.upstreamErrors.inc({ route: route.name, kind: 'reset' });
      await refuse(route, { code: 'bad_gateway' }, undefined, 'allow');
      return;
    }
    const h = result.res.headers as Record<string, string | string[] | undefined>;
    cleanResponseHeaders(h);
    h[gen.requestIdHeader] = ctx.id;
    for (const k in ctx.responseHeaders) h[k] = ctx.responseHeaders[k];
    const responseHead: ResponseHead = {
      status: result.res.statusCode ?? 502,
      headers: h,
      fromGateway: false,
    };
    await runResponsePhase(route, ctx, responseHead, services);
    socket.write(serializeHead(responseHead.status, { ...responseHead.headers, connection: 'close' }));
    result.res.pipe(socket);
    result.res.once('error', () => socket.destroy());
    host.finish(route, ctx, outcome(responseHead.status), upstreamSeconds);
    return;
  }
  if (!completesHandshake(headers['sec-websocket-key'], result.res)) {
    // a 101 that is no WebSocket handshake: no tunnel (see completesHandshake)
    result.socket.destroy();
    services.metrics.upstreamErrors.inc({ route: route.name, kind: 'reset' });
    await refuse(route, { code: 'bad_gateway' }, undefined, 'allow');
    return;
  }
  // 101: pass the upstream's handshake answer (Sec-WebSocket-Accept, -Protocol, -Extensions).
  const h = result.res.headers as Record<string, string | string[] | undefined>;
  cleanResponseHeaders(h);
  h[gen.requestIdHeader] = ctx.id;
  for (const k in ctx.responseHeaders) h[k] = ctx.responseHeaders[k];
  const responseHead: ResponseHead = { status: 101, headers: h, fromGateway: false };
  await runResponsePhase(route, ctx, responseHead, services);
  if (socket.destroyed || host.closing()) {
    result.socket.destroy();
    socket.destroy();
    host.finish(route, ctx, outcome(499), upstreamSeconds);
    return;
  }
  socket.write(serializeHead(101, { upgrade: 'websocket', connection: 'Upgrade', ...responseHead.headers }));
  host.tunnels.add(socket, head, result.socket, result.head);
  host.finish(route, ctx, outcome(101), upstreamSeconds);
}

function writeAndClose(
  socket: Duplex,
  status: number,
  headers: Record<string, string | string[] | undefined>,
  body: Buffer,
): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.write(
    serializeHead(status, { ...headers, 'content-length': String(body.length), connection: 'close' }),
  );
  socket.end(body);
  const s = socket as Socket;
  if (typeof s.destroySoon === 'function') s.destroySoon();
}
