import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { Deny } from './policy.js';

/** Who the caller is, once an authentication policy accepted its credentials. */
export interface Identity {
  readonly subject: string;
  readonly roles: readonly string[];
  readonly method: 'jwt' | 'api_key';
  /** the configured `id` of the API key (never the key itself) */
  readonly keyId?: string;
  /** verified JWT claims, when method is jwt */
  readonly claims?: Readonly<Record<string, unknown>>;
  /**
   * where the credentials came from: a request header (Authorization, X-API-Key) or a
   * session cookie (browser). The CSRF policy only judges cookie-authenticated requests.
   */
  readonly via?: 'header' | 'cookie';
  /**
   * per-credential rate limits (`1000/hour;50/minute`), e.g. an API key configured with
   * its own `rate_limit`; replaces the limits of rate-limit rules keyed by api_key
   */
  readonly limits?: string;
}

/** A request body held in memory because a policy on the route asked for it. */
export interface RequestBody {
  /** the bytes as they will be forwarded */
  raw: Buffer;
  /** media type, lowercased, without parameters ('' when absent) */
  readonly mediaType: string;
  /** parsed JSON when the media type is JSON (`application/json`, `*+json`) and it parsed */
  json?: unknown;
  /**
   * a body of another declared type that is valid JSON (an object, array or string), parsed:
   * services that parse bodies as JSON whatever their Content-Type (Express's `type: '*\/*'`,
   * Flask's `get_json(force=True)`, the mock's receipt handler) read it so. Only the pattern
   * engine uses it; `json` stays the body of a JSON media type.
   */
  jsonSniffed?: unknown;
  /** decoded pairs of an `application/x-www-form-urlencoded` body */
  form?: [string, string][];
  /** multipart text fields, filled by the upload gate */
  fields?: [string, string][];
  /**
   * multipart text parts declared as JSON (`Content-Type: application/json` or `+json`),
   * parsed: services that bind such a part to an object (Spring's `@RequestPart`, JAX-RS
   * `@FormDataParam`) read its escapes decoded. Their raw text is in `fields` too.
   */
  jsonParts?: { readonly field: string; readonly json: unknown }[];
  /** multipart file parts (names only), filled by the upload gate */
  files?: { readonly field: string; readonly filename: string }[];
  /** set when the declared type could not be parsed (invalid JSON, bad UTF-8) */
  parseError?: string;
}

/** The body that is forwarded instead of the client's stream (uploads re-encoded from the spool). */
export interface ForwardBody {
  readonly stream: Readable | Buffer;
  readonly length: number;
  readonly contentType: string;
  /** called once the upstream exchange is over, whatever happened (spool cleanup) */
  readonly dispose?: () => void;
}

/** One policy's verdict, kept for `/api/decisions/{id}` and the audit log. */
export interface TraceStep {
  readonly policy: string;
  readonly verdict: 'pass' | 'deny' | 'monitor' | 'error';
  readonly code?: string;
  readonly reason?: string;
  readonly ruleIds?: readonly string[];
  readonly detail?: Readonly<Record<string, unknown>>;
  /** microseconds spent in the policy */
  readonly micros: number;
}

/**
 * One shape for every request. Created by the server (or by `replay`) and passed to
 * every policy. Fields marked readonly are fixed when the request arrives.
 */
export interface RequestContext {
  readonly id: string;
  /** process.hrtime.bigint() at arrival */
  readonly start: bigint;
  /** Date.now() at arrival */
  readonly receivedAt: number;
  readonly method: string;
  /** the request target exactly as received (path and query) */
  readonly target: string;
  /** the path as received, without the query string or a fragment (not decoded) */
  readonly rawPath: string;
  /** the normalised path used for routing and forwarding (dot segments removed, slashes collapsed) */
  readonly path: string;
  /** the raw query string, without '?' or a fragment, '' when absent */
  readonly query: string;
  /** request headers, lowercased names (Node's representation) */
  readonly headers: IncomingHttpHeaders;
  /** the raw header list [name, value, name, value, …] as received (duplicates kept) */
  readonly rawHeaders: readonly string[];
  readonly clientIp: string;
  /** the X-Forwarded-For value sent upstream (the trusted chain plus the peer, or the client IP) */
  readonly forwardedFor: string;
  /** true when the client reached the gateway over TLS (directly or via a trusted proxy) */
  readonly secure: boolean;
  readonly httpVersion: string;
  /** the body as a stream (request socket, or a buffer for replay) */
  readonly bodySource: Readable;
  /** the matched route's name ('unmatched' when none) */
  routeName: string;
  /** set by authentication policies */
  identity: Identity | undefined;
  /** set when a policy buffered the body */
  body: RequestBody | undefined;
  /** set when a policy replaces the forwarded body (uploads) */
  forwardBody: ForwardBody | undefined;
  /**
   * set by the server when it sends the request to the upstream, whatever comes of it (an
   * answer, a 502/504, a client that left): onDone hooks tell a forwarded request from one
   * the gateway answered itself
   */
  forwarded: boolean;
  /** headers to set on the upstream request (lowercase names) */
  readonly upstreamHeaders: Record<string, string>;
  /** request headers to remove before forwarding (lowercase names; their spellings with `_` for `-` go too) */
  readonly dropUpstreamHeaders: Set<string>;
  /** headers to add to the client response, whoever made it */
  readonly responseHeaders: Record<string, string | string[]>;
  /** each policy's verdict in order */
  readonly trace: TraceStep[];
  /** denials a policy in monitor mode would have made */
  readonly monitored: Deny[];
  /** extra audit fields set by policies (never secrets) */
  readonly audit: Record<string, unknown>;
  /** per-request scratch space for policies, keyed by policy name */
  readonly locals: Map<string, unknown>;
  /** aborted by the client or by shutdown */
  readonly signal: AbortSignal;
}

/** Whether the request carries a body (Content-Length > 0 or chunked). */
export function hasBody(ctx: RequestContext): boolean {
  const te = ctx.headers['transfer-encoding'];
  if (te !== undefined) return true;
  const cl = ctx.headers['content-length'];
  return cl !== undefined && cl !== '0';
}

/**
 * The request asks for a WebSocket (an `Upgrade` header naming `websocket`). Such a handshake
 * is a GET the browser sends with its cookies from any site, and opens a two-way channel:
 * gateway/websocket.ts serves it, and the `csrf` policy judges it like a state-changing request.
 */
export function isWebSocketUpgrade(headers: IncomingHttpHeaders): boolean {
  const u = headers.upgrade;
  return typeof u === 'string' && u.split(',').some((t) => t.trim().toLowerCase() === 'websocket');
}
