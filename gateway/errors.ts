/**
 * The code table: every response the gateway makes itself has one of these codes.
 * Each code fixes its HTTP status, the audit event written for it, the
 * `gateway_blocked_requests_total{reason}` label (undefined = not a block), and the
 * default client message. A contract test checks this table against SPEC section 4.
 */
export const AUDIT_EVENTS = [
  'auth_success',
  'auth_failure',
  'api_access',
  'access_denied',
  'rate_limited',
  'request_blocked',
  'cors_violation',
  'upload_rejected',
  'upload_accepted',
  'login_failure',
  'account_locked',
  'ip_banned',
  'security_alert',
  'config_reload',
  'store_unavailable',
] as const;
export type AuditEvent = (typeof AUDIT_EVENTS)[number];

/** The request-inspection families (pattern_block rule packs), a subset of the reasons below. */
export const INSPECTION_REASONS = [
  'sqli',
  'xss',
  'path_traversal',
  'cmd_injection',
  'rfi',
  'php',
  'nodejs',
  'protocol',
  'scanner',
] as const;

/** The bounded set of `reason` label values of `gateway_blocked_requests_total`. */
export const BLOCK_REASONS = [
  ...INSPECTION_REASONS,
  'cors',
  'ip_banned',
  'upload',
  'size',
  'auth',
  'forbidden',
  'rate_limit',
  'lockout',
  'csrf',
  'password',
  'not_found',
  'method',
  'store',
  'timeout',
] as const;
export type BlockReason = (typeof BLOCK_REASONS)[number];

export interface CodeSpec {
  readonly status: number;
  readonly event: AuditEvent | undefined;
  readonly reason: BlockReason | undefined;
  readonly message: string;
}

export const CODES = {
  request_blocked: {
    status: 403,
    event: 'request_blocked',
    reason: 'protocol',
    message: 'The request was blocked by a security rule.',
  },
  ip_blocked: {
    status: 403,
    event: 'access_denied',
    reason: 'ip_banned',
    message: 'Requests from this address are blocked.',
  },
  user_agent_rejected: {
    status: 403,
    event: 'request_blocked',
    reason: 'scanner',
    message: 'The User-Agent was rejected.',
  },
  cors_origin_denied: {
    status: 403,
    event: 'cors_violation',
    reason: 'cors',
    message: 'The request Origin is not allowed.',
  },
  unauthorized: {
    status: 401,
    event: 'auth_failure',
    reason: 'auth',
    message: 'Authentication is required.',
  },
  forbidden: {
    status: 403,
    event: 'access_denied',
    reason: 'forbidden',
    message: 'You are not allowed to do this.',
  },
  rate_limited: {
    status: 429,
    event: 'rate_limited',
    reason: 'rate_limit',
    message: 'Too many requests; retry later.',
  },
  account_locked: {
    status: 429,
    event: 'access_denied',
    reason: 'lockout',
    message: 'This account is temporarily locked; retry later.',
  },
  weak_password: {
    status: 400,
    event: 'access_denied',
    reason: 'password',
    message: 'The new password does not meet the requirements.',
  },
  csrf_rejected: {
    status: 403,
    event: 'access_denied',
    reason: 'csrf',
    message: 'Cross-site request refused.',
  },
  upload_rejected: {
    status: 400,
    event: 'upload_rejected',
    reason: 'upload',
    message: 'The upload was rejected.',
  },
  payload_too_large: {
    status: 413,
    event: 'request_blocked',
    reason: 'size',
    message: 'The request body is too large.',
  },
  uri_too_long: {
    status: 414,
    event: 'request_blocked',
    reason: 'size',
    message: 'The request URI is too long.',
  },
  headers_too_large: {
    status: 431,
    event: 'request_blocked',
    reason: 'size',
    message: 'The request headers are too large.',
  },
  bad_request: {
    status: 400,
    event: 'request_blocked',
    reason: 'protocol',
    message: 'The request is malformed.',
  },
  request_timeout: {
    status: 408,
    event: 'request_blocked',
    reason: 'timeout',
    message: 'The request was not received in time.',
  },
  not_found: {
    status: 404,
    event: 'access_denied',
    reason: 'not_found',
    message: 'No route matches this path.',
  },
  method_not_allowed: {
    status: 405,
    event: 'access_denied',
    reason: 'method',
    message: 'This method is not allowed here.',
  },
  bad_gateway: {
    status: 502,
    event: undefined,
    reason: undefined,
    message: 'The upstream service is unreachable.',
  },
  gateway_timeout: {
    status: 504,
    event: undefined,
    reason: undefined,
    message: 'The upstream service did not answer in time.',
  },
  service_unavailable: {
    status: 503,
    event: 'access_denied',
    reason: 'store',
    message: 'A security check is unavailable; retry later.',
  },
  internal_error: { status: 500, event: undefined, reason: undefined, message: 'Internal gateway error.' },
} as const satisfies Record<string, CodeSpec>;

export type ErrorCode = keyof typeof CODES;

export function codeSpec(code: ErrorCode): CodeSpec {
  return CODES[code];
}

/** Thrown only while loading configuration; never reaches a client. */
export class ConfigError extends Error {
  /** key path inside gateway.yaml, e.g. ['routes', 2, 'match', 'path'] */
  readonly path: readonly (string | number)[];
  constructor(message: string, path: readonly (string | number)[] = []) {
    super(message);
    this.name = 'ConfigError';
    this.path = path;
  }
}
