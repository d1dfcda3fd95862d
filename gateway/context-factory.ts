import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { RequestContext } from './context.js';
import { ownString } from './own-string.js';

export interface ContextInit {
  readonly id?: string | undefined;
  readonly method: string;
  readonly target: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly clientIp: string;
  /** X-Forwarded-For to send upstream; default the client IP */
  readonly forwardedFor?: string | undefined;
  readonly secure: boolean;
  readonly httpVersion: string;
  readonly bodySource: Readable;
  readonly signal: AbortSignal;
}

/** The one constructor of RequestContext (server, replay, tests). */
export function createContext(init: ContextInit): RequestContext {
  let target = init.target;
  // absolute-form (RFC 9112 §3.2.2): route on its path. A copy, not a slice: the target
  // outlives the request in the decision log, and a slice would keep the whole request
  // line (an authority of up to the max header size) alive with it.
  if (target.charCodeAt(0) !== 47 && /^https?:\/\//i.test(target)) {
    const i = target.indexOf('/', target.indexOf('//') + 2);
    target = i === -1 ? '/' : ownString(target.slice(i));
  }
  // A fragment (`#…`) is no part of a request-target (RFC 9112 §3.2); the request is refused
  // after its checks (targetFragmentDeny), judged and routed meanwhile on what precedes it, as
  // the service's URL parser would read it.
  const hash = target.indexOf('#');
  const end = hash === -1 ? target.length : hash;
  let q = target.indexOf('?');
  if (q > end) q = -1;
  const rawPath = q === -1 ? (hash === -1 ? target : target.slice(0, end)) : target.slice(0, q);
  return {
    id: init.id ?? randomUUID(),
    start: process.hrtime.bigint(),
    receivedAt: Date.now(),
    method: init.method,
    target,
    rawPath,
    path: rawPath,
    query: q === -1 ? '' : target.slice(q + 1, end),
    headers: init.headers,
    rawHeaders: init.rawHeaders,
    clientIp: init.clientIp,
    forwardedFor: init.forwardedFor ?? init.clientIp,
    secure: init.secure,
    httpVersion: init.httpVersion,
    bodySource: init.bodySource,
    routeName: 'unmatched',
    identity: undefined,
    body: undefined,
    forwardBody: undefined,
    forwarded: false,
    upstreamHeaders: {},
    dropUpstreamHeaders: new Set(),
    responseHeaders: {},
    trace: [],
    monitored: [],
    audit: {},
    locals: new Map(),
    signal: init.signal,
  };
}
