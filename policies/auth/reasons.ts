import type { Deny } from '../../gateway/policy.js';

/**
 * The fixed set of authentication failure reasons. Each one is the `reason` label of
 * `gateway_auth_failures_total{method,reason}` and `detail.reason` of the 401, so
 * operators can tell an expired session from a forged token without any unbounded value.
 */
export const AUTH_FAILURE_REASONS = [
  /** no credentials of an accepted kind */
  'missing',
  /**
   * not a JWT / API key shape, non-canonical base64url segments, duplicate Authorization
   * headers, undecodable segments
   */
  'malformed',
  /** longer than `max_token_bytes` */
  'oversized',
  /** `alg` not in the pinned list (`none`, HS/RS confusion, anything unlisted) */
  'algorithm',
  /** the signature does not verify against the selected key */
  'signature',
  /** no configured or published key matches the token's `kid`/`alg` */
  'unknown_key',
  /** the JWKS could not be fetched and no usable keys are cached (fail closed) */
  'key_unavailable',
  /** `exp` passed (beyond the clock tolerance) */
  'expired',
  /** `nbf` in the future (beyond the clock tolerance) */
  'not_yet_valid',
  /** `iat` in the future (beyond the clock tolerance): mis-minted, or the issuer's clock is wrong */
  'issued_in_future',
  /** `iss`, `aud`, a required claim or the subject claim is wrong or absent */
  'claims',
  /** an API key that matches no configured hash */
  'invalid_key',
] as const;
export type AuthFailureReason = (typeof AUTH_FAILURE_REASONS)[number];

/** The method label of `gateway_auth_failures_total`. */
export type AuthMethodLabel = 'jwt' | 'api_key' | 'none';

/** What the client is told: the kind of failure, nothing more. */
const MESSAGES: Record<AuthFailureReason, string> = {
  missing: 'Authentication is required: credentials are missing.',
  malformed: 'Authentication failed: the credentials are malformed.',
  oversized: 'Authentication failed: the credentials are malformed.',
  algorithm: 'Authentication failed: the token signature is not valid.',
  signature: 'Authentication failed: the token signature is not valid.',
  unknown_key: 'Authentication failed: the token signature is not valid.',
  key_unavailable: 'Authentication failed: the token signature could not be checked.',
  expired: 'Authentication failed: the token has expired.',
  not_yet_valid: 'Authentication failed: the token claims are not valid.',
  issued_in_future: 'Authentication failed: the token claims are not valid.',
  claims: 'Authentication failed: the token claims are not valid.',
  invalid_key: 'Authentication failed: the API key is not valid.',
};

export const REALM = 'receipt-gateway';
/** RFC 6750 §3: no `error` parameter when the request carried no credentials. */
export const CHALLENGE_MISSING = `Bearer realm="${REALM}"`;
export const CHALLENGE_INVALID = `Bearer realm="${REALM}", error="invalid_token"`;
export const CHALLENGE_SCOPE = `Bearer realm="${REALM}", error="insufficient_scope"`;

/** Build the 401 for a failure reason. */
export function unauthorized(reason: AuthFailureReason, method: AuthMethodLabel): Deny {
  return {
    code: 'unauthorized',
    message: MESSAGES[reason],
    headers: { 'www-authenticate': reason === 'missing' ? CHALLENGE_MISSING : CHALLENGE_INVALID },
    detail: { reason, method },
  };
}

/** Build the 403 for an authenticated caller without an allowed role. */
export function forbidden(method: 'jwt' | 'api_key'): Deny {
  return {
    code: 'forbidden',
    message: 'You are not allowed to do this: a required role is missing.',
    headers: { 'www-authenticate': CHALLENGE_SCOPE },
    detail: { reason: 'insufficient_role', method },
  };
}

/** A verification failure carrying its reason; never carries the token. */
export class AuthFailure extends Error {
  readonly reason: AuthFailureReason;
  constructor(reason: AuthFailureReason, message?: string) {
    super(message ?? reason);
    this.name = 'AuthFailure';
    this.reason = reason;
  }
}
