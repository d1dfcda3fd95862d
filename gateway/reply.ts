import type { RequestContext } from './context.js';
import { CODES } from './errors.js';
import type { Deny, ResponseHead } from './policy.js';

/**
 * The only place that shapes gateway-made responses: every refusal is
 * `{"error": CODE, "message": TEXT, "request_id": ID}` with no stack, path or upstream detail.
 */
export interface Rendered {
  readonly head: ResponseHead;
  readonly body: Buffer;
}

export function renderDeny(ctx: RequestContext, deny: Deny, requestIdHeader: string): Rendered {
  const spec = CODES[deny.code];
  const status = deny.status ?? spec.status;
  const body = Buffer.from(
    JSON.stringify({ error: deny.code, message: deny.message ?? spec.message, request_id: ctx.id }),
    'utf8',
  );
  const headers: Record<string, string | string[] | undefined> = {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': String(body.length),
  };
  headers[requestIdHeader] = ctx.id;
  for (const k in ctx.responseHeaders) headers[k] = ctx.responseHeaders[k];
  if (deny.headers) for (const k in deny.headers) headers[k.toLowerCase()] = deny.headers[k];
  // a 503 says when to come back (RFC 9110 §10.2.3): a check's store that is down, a spool
  // that cannot be written and a shutdown are all short outages
  if (status === 503 && headers['retry-after'] === undefined)
    headers['retry-after'] = UNAVAILABLE_RETRY_AFTER;
  return { head: { status, headers, fromGateway: true }, body };
}

/** `Retry-After` (seconds) of the gateway's own 503 answers. */
export const UNAVAILABLE_RETRY_AFTER = '5';

export function renderAnswer(
  ctx: RequestContext,
  status: number,
  answerHeaders: Readonly<Record<string, string>>,
  requestIdHeader: string,
): Rendered {
  // a 204 carries no Content-Length (RFC 9110 §8.6)
  const headers: Record<string, string | string[] | undefined> =
    status === 204 ? {} : { 'content-length': '0' };
  headers[requestIdHeader] = ctx.id;
  for (const k in answerHeaders) headers[k.toLowerCase()] = answerHeaders[k];
  return { head: { status, headers, fromGateway: true }, body: Buffer.alloc(0) };
}

/** A JSON document the gateway serves itself (the security health endpoint on the main listener). */
export function renderJson(
  ctx: RequestContext,
  status: number,
  value: unknown,
  requestIdHeader: string,
): Rendered {
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  const headers: Record<string, string | string[] | undefined> = {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': String(body.length),
  };
  headers[requestIdHeader] = ctx.id;
  for (const k in ctx.responseHeaders) headers[k] = ctx.responseHeaders[k];
  return { head: { status, headers, fromGateway: true }, body };
}

/**
 * For connections the HTTP parser refused before a request existed (no context).
 * `extra`: headers added by the response phase (the security headers), lowercase names.
 */
export function rawErrorResponse(
  status: number,
  code: string,
  message: string,
  requestId: string,
  extra: Readonly<Record<string, string | string[] | undefined>> = {},
): string {
  const body = JSON.stringify({ error: code, message, request_id: requestId });
  let lines = '';
  for (const name in extra) {
    if (
      name === 'content-type' ||
      name === 'content-length' ||
      name === 'connection' ||
      name === 'x-request-id' ||
      name === 'x-content-type-options'
    ) {
      continue;
    }
    const v = extra[name];
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) if (!/[\r\n]/.test(one)) lines += `${name}: ${one}\r\n`;
  }
  return (
    `HTTP/1.1 ${status} ${statusText(status)}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    'Cache-Control: no-store\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n' +
    'X-Content-Type-Options: nosniff\r\n' +
    `X-Request-Id: ${requestId}\r\n` +
    lines +
    '\r\n' +
    body
  );
}

function statusText(status: number): string {
  switch (status) {
    case 400:
      return 'Bad Request';
    case 408:
      return 'Request Timeout';
    case 413:
      return 'Payload Too Large';
    case 414:
      return 'URI Too Long';
    case 431:
      return 'Request Header Fields Too Large';
    default:
      return 'Error';
  }
}
