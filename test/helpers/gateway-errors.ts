import type { Test } from 'tap';
import type { RawResponse } from './raw-http.js';

/** The security headers the shipped config adds to every response, the gateway's own included. */
export const SEED_HEADER_NAMES = [
  'x-content-type-options',
  'x-frame-options',
  'x-xss-protection',
  'strict-transport-security',
  'content-security-policy',
  'referrer-policy',
  'permissions-policy',
];

/** Every security header of the shipped config is there, and no Server header. */
export function hasSecurityHeaders(t: Test, r: RawResponse): void {
  for (const name of SEED_HEADER_NAMES) t.ok(r.headers[name], `security header ${name}`);
  t.notOk(r.headers.server, 'no Server header');
}

/** A SPEC JSON error from the gateway itself (error, message, request_id), with the security headers. */
export function isGatewayError(t: Test, r: RawResponse | undefined, status: number, code: string): void {
  t.ok(r, 'a response came back');
  if (!r) return;
  t.equal(r.status, status, 'status');
  t.equal(r.json?.error, code, 'error code');
  t.type(r.json?.message, 'string');
  t.equal(r.json?.request_id, r.headers['x-request-id'], 'the request id of the body is the header');
  t.same(Object.keys(r.json ?? {}).sort(), ['error', 'message', 'request_id'], 'nothing else in the body');
  hasSecurityHeaders(t, r);
}
