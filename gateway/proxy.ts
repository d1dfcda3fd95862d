import { Readable, Transform } from 'node:stream';
import { Pool, errors as undiciErrors } from 'undici';
import type { IncomingHttpHeaders } from 'node:http';
import type { RequestContext } from './context.js';
import type { UpstreamSettings } from './config/compile.js';

/**
 * Forwarding over an undici keep-alive Pool (measured about 1.7x http-proxy's
 * requests/s on this machine). Hop-by-hop headers are dropped per RFC 9110 §7.6.1,
 * client-sent identity headers are always stripped, X-Forwarded-* are set.
 */

/** RFC 9110 §7.6.1 connection-specific fields, plus legacy ones. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

/**
 * A client-sent identity header: `x-auth-*` (names arrive lowercased), also spelled with
 * underscores (`x_auth_roles`, `x-auth_subject`, …). CGI, WSGI and Rack servers turn `-`
 * and `_` into the same variable (HTTP_X_AUTH_ROLES), so an upstream behind such a server
 * would read an underscore spelling as the identity the gateway sets (or as a second value
 * of it).
 */
export function isIdentityHeader(name: string): boolean {
  if (name.length < 7 || name.charCodeAt(0) !== 120 /* x */) return false;
  const a = name.charCodeAt(1);
  const b = name.charCodeAt(6);
  return (a === 45 || a === 95) && (b === 45 || b === 95) && name.startsWith('auth', 2);
}

/**
 * Request headers whose client-sent copies never reach the upstream, besides the identity
 * headers: those the gateway sets itself from what it verified (the client's address and
 * scheme, `X-Real-IP` included, which upstreams written for NGINX read), the other headers
 * that name a client address (`True-Client-IP`, `CF-Connecting-IP` …: an upstream or library
 * reading one would take the client's word for its address), and those with which
 * a client would have the upstream act on another path or method than the one the gateway's
 * routes and policies judged (`X-Original-URL` and `X-Rewrite-URL`, read by IIS, Symfony and
 * Zend; the method overrides of Express, Rails, Laravel …).
 */
const GATEWAY_OWNED = new Set([
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  // other claims about the scheme and port the client used, which the gateway's
  // X-Forwarded-Proto must not be outvoted by: Rack takes `X-Forwarded-Ssl: on` before
  // X-Forwarded-Proto, and X-Forwarded-Scheme / -Port; IIS and OWA read Front-End-Https
  'x-forwarded-ssl',
  'x-forwarded-scheme',
  'x-forwarded-port',
  'front-end-https',
  'x-url-scheme',
  'forwarded',
  'x-real-ip',
  // other names for the client's address, read by IP-lookup libraries and frameworks
  // (request-ip, Rails' Client-IP check, CDN conventions); the gateway's is X-Real-IP
  'client-ip',
  'x-client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  'x-cluster-client-ip',
  'x-forwarded',
  'forwarded-for',
  'x-original-url',
  'x-rewrite-url',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
]);

/**
 * Whether a client-sent request header must not be forwarded: an identity header, one of
 * {@link GATEWAY_OWNED} or the request-id header, each also spelled with underscores (CGI,
 * WSGI and Rack servers read `X_Real_IP` as `X-Real-IP`; NGINX drops such names by default).
 */
export function isGatewayOwned(name: string, requestIdHeader: string): boolean {
  if (isIdentityHeader(name) || GATEWAY_OWNED.has(name)) return true;
  if (name.indexOf('_') < 0) return false;
  const dashed = name.replace(/_/g, '-');
  return GATEWAY_OWNED.has(dashed) || dashed === requestIdHeader;
}

export interface UpstreamResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Readable;
}

export type UpstreamFailure = { readonly kind: 'connect' | 'timeout' | 'reset' | 'aborted' | 'too_large' };

/** A pool per upstream origin and settings; shared across generations while unchanged. */
export class UpstreamPools {
  private readonly pools = new Map<string, Pool>();

  get(u: UpstreamSettings): Pool {
    const key = `${u.origin}|${u.connections}|${u.connectTimeoutMs}|${u.keepAliveTimeoutMs}`;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new Pool(u.origin, {
        connections: u.connections,
        pipelining: 1,
        connect: { timeout: u.connectTimeoutMs },
        keepAliveTimeout: u.keepAliveTimeoutMs,
        keepAliveMaxTimeout: Math.max(u.keepAliveTimeoutMs, 60_000),
      });
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** Close pools not used by the current settings (after a reload changed them). */
  async retainOnly(u: UpstreamSettings): Promise<void> {
    const keep = this.get(u);
    for (const [k, p] of this.pools) {
      if (p !== keep) {
        this.pools.delete(k);
        // (the requests it still runs, started before the reload, may take their time)
        void closePool(p, undefined);
      }
    }
  }

  /**
   * Close every pool: requests still running get `graceMs` to finish, then are cut. (A
   * relay whose client stopped reading can hold an upstream response open for ever; a
   * shutdown must not wait for it.)
   */
  async close(graceMs: number): Promise<void> {
    await Promise.allSettled([...this.pools.values()].map((p) => closePool(p, graceMs)));
    this.pools.clear();
  }
}

/**
 * Close `pool` once its running requests are done, and destroy it when closing fails or,
 * with `graceMs`, takes longer than that. Never rejects.
 */
async function closePool(pool: Pool, graceMs: number | undefined): Promise<void> {
  const cut =
    graceMs === undefined ? undefined : setTimeout(() => void pool.destroy().catch(() => {}), graceMs);
  try {
    await pool.close();
  } catch {
    await pool.destroy().catch(() => {});
  } finally {
    clearTimeout(cut);
  }
}

/**
 * The upstream request target of a request on `route`: its normalized path with the route's
 * strip_prefix removed, under the upstream's base path, with the query. The prefix is
 * removed on a segment boundary only: strip_prefix /api leaves /apix/y alone (it used to
 * become "x/y", a target without its leading slash). Plain requests and WebSocket upgrades
 * alike.
 */
export function upstreamPath(
  route: { readonly stripPrefix: string | undefined },
  ctx: Pick<RequestContext, 'path' | 'query'>,
  basePath: string,
): string {
  let path = ctx.path;
  const sp = route.stripPrefix;
  if (sp !== undefined && (path === sp || path.startsWith(sp.endsWith('/') ? sp : `${sp}/`))) {
    path = path.slice(sp.length);
    if (path.charCodeAt(0) !== 47) path = `/${path}`;
  }
  return basePath + path + (ctx.query !== '' ? `?${ctx.query}` : '');
}

/** Build the upstream request headers from the client's. */
export function upstreamHeaders(
  ctx: RequestContext,
  forwardedFor: string,
  requestIdHeader: string,
): Record<string, string> {
  const src: IncomingHttpHeaders = ctx.headers;
  const out: Record<string, string> = {};
  let connectionTokens: Set<string> | undefined;
  const conn = src.connection;
  if (conn !== undefined && conn !== 'keep-alive' && conn !== 'close') {
    connectionTokens = new Set(conn.split(',').map((t) => t.trim().toLowerCase()));
  }
  const drop = ctx.dropUpstreamHeaders;
  for (const name in src) {
    if (HOP_BY_HOP.has(name)) continue;
    if (isGatewayOwned(name, requestIdHeader)) continue;
    if (name === 'content-length') continue;
    // Expect: 100-continue is answered to the client by the gateway (as NGINX does); undici
    // refuses the header, so forwarding it turned every curl upload over 1 KB into a 502.
    if (name === 'expect') continue;
    if (connectionTokens?.has(name)) continue;
    // (also spelled with underscores: CGI, WSGI and Rack servers read X_API_Key as X-API-Key)
    if (drop.size > 0 && (drop.has(name) || (name.indexOf('_') >= 0 && drop.has(name.replace(/_/g, '-')))))
      continue;
    const v = src[name];
    if (v === undefined) continue;
    out[name] = Array.isArray(v) ? v.join(name === 'cookie' ? '; ' : ', ') : v;
  }
  out['x-forwarded-for'] = forwardedFor;
  out['x-real-ip'] = ctx.clientIp;
  out['x-forwarded-proto'] = ctx.secure ? 'https' : 'http';
  if (src.host !== undefined) out['x-forwarded-host'] = src.host;
  out[requestIdHeader] = ctx.id;
  const extra = ctx.upstreamHeaders;
  for (const k in extra) out[k] = extra[k]!;
  return out;
}

/** Strip hop-by-hop headers from an upstream response head (in place). */
export function cleanResponseHeaders(h: Record<string, string | string[] | undefined>): void {
  const conn = h.connection;
  if (conn !== undefined) {
    // (a repeated Connection field arrives as an array: each line names fields too)
    for (const line of typeof conn === 'string' ? [conn] : conn) {
      if (line === 'keep-alive' || line === 'close') continue;
      for (const t of line.split(',')) delete h[t.trim().toLowerCase()];
    }
  }
  // Walk the (few) present names rather than deleting each hop-by-hop name blindly.
  for (const name in h) if (HOP_BY_HOP.has(name)) delete h[name];
}

/** Counts a streamed request body and fails it past the limit. */
export class BodyLimit extends Transform {
  private seen = 0;
  exceeded = false;
  constructor(private readonly limit: number) {
    super();
  }
  override _transform(
    chunk: Buffer,
    _enc: BufferEncoding,
    cb: (err?: Error | null, data?: Buffer) => void,
  ): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) {
      this.exceeded = true;
      cb(new Error('request body over the limit'));
      return;
    }
    cb(null, chunk);
  }
}

export interface ForwardArgs {
  readonly pool: Pool;
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Readable | Buffer | null;
  readonly signal: AbortSignal;
  readonly responseTimeoutMs: number;
  readonly bodyTimeoutMs: number;
}

export async function forward(args: ForwardArgs): Promise<UpstreamResponse | UpstreamFailure> {
  try {
    const res = await args.pool.request({
      method: args.method as 'GET',
      path: args.path,
      headers: args.headers,
      body: args.body,
      signal: args.signal,
      headersTimeout: args.responseTimeoutMs,
      bodyTimeout: args.bodyTimeoutMs,
      blocking: false,
    });
    const status = res.statusCode;
    const headers = res.headers as Record<string, string | string[] | undefined>;
    const te = headers['transfer-encoding'];
    if (te !== undefined && (typeof te !== 'string' || te.trim().toLowerCase() !== 'chunked')) {
      // A transfer coding other than chunked (`gzip`, `gzip, chunked`): the bytes undici
      // delivers are still coded, and Transfer-Encoding is hop-by-hop, so the client would
      // take them for the content. Refused with 502, as NGINX does ("unknown
      // Transfer-Encoding"); the connection is not reused.
      discard(res.body, true);
      return { kind: 'reset' };
    }
    if (status === 204 || status === 304) {
      // No content, whatever the framing headers say (RFC 9110 §6.4.1). A 304 may state the
      // Content-Length of the representation it stands for (§8.6), which undici reports, once
      // the head is in, as a body cut short: the client got nothing, its connection closed.
      // The response is complete at its head; a 204 sends no Content-Length (§8.6).
      if (status === 204) delete headers['content-length'];
      discard(res.body, false);
      return { status, headers, body: Readable.from([]) };
    }
    return { status, headers, body: res.body };
  } catch (err) {
    return { kind: classify(err) };
  }
}

/**
 * Let go of an upstream body the client will not get: `destroy` cancels the request (its
 * connection is closed), otherwise it is read to its end so the connection can be reused.
 * Either way its error (the destruction, a short body) has nobody to tell.
 */
function discard(body: Readable, destroy: boolean): void {
  body.on('error', () => {});
  if (destroy) body.destroy();
  else body.resume();
}

/**
 * The kind of failure of an upstream response body (undici's body stream error): 'timeout'
 * for a body that stalled past upstream.body_timeout, else 'reset' (cut short, invalid
 * chunk, connection reset).
 */
export function classifyBodyError(err: unknown): 'timeout' | 'reset' {
  return err instanceof undiciErrors.BodyTimeoutError ? 'timeout' : 'reset';
}

function classify(err: unknown): UpstreamFailure['kind'] {
  if (err instanceof undiciErrors.HeadersTimeoutError) return 'timeout';
  if (err instanceof undiciErrors.ConnectTimeoutError) return 'connect';
  if (err instanceof undiciErrors.RequestAbortedError) return 'aborted';
  const e = err as NodeJS.ErrnoException & { name?: string };
  if (e?.name === 'AbortError') return 'aborted';
  if (e?.message === 'request body over the limit') return 'too_large';
  const code = e?.code ?? (e as { cause?: NodeJS.ErrnoException })?.cause?.code;
  if (
    code === 'ECONNREFUSED' ||
    code === 'ENOTFOUND' ||
    code === 'EHOSTUNREACH' ||
    code === 'ENETUNREACH' ||
    code === 'EAI_AGAIN'
  ) {
    return 'connect';
  }
  return 'reset';
}

export function isFailure(r: UpstreamResponse | UpstreamFailure): r is UpstreamFailure {
  return (r as UpstreamFailure).kind !== undefined;
}
