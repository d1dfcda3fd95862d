/**
 * The security health score of the running configuration (`/api/health/security`,
 * `gateway_security_score`). A pure function over a plain description of the
 * config: weighted checks, each with pass/fail and a recommendation when it fails.
 *
 * The score is `round(100 × weight of passing checks / weight of applicable checks)`.
 * Optional input fields that are `undefined` make their check "not applicable": it is
 * left out of the list and of the score, so a field the caller cannot describe never
 * costs points.
 */

import { MIN_RECOMMENDED_KEY_LENGTH } from '../../policies/auth/api-keys.js';

/** What the score needs to know about the running configuration (never the secrets themselves, except the JWT secret whose strength is measured here and never returned). */
export interface ScoreInput {
  /** HS* shared secret, when JWT authentication uses one (measured, never echoed); the weakest when several routes use their own */
  jwtSecret?: string;
  /** JWT verification checks `iss` */
  jwtHasIssuer: boolean;
  /** JWT verification checks `aud` */
  jwtHasAudience: boolean;
  /** JWKS endpoint, when JWTs are verified with public keys */
  jwksUrl?: string;
  /** JWTs are verified with public keys (a JWKS or static `public_keys`) */
  jwtPublicKeys?: boolean;
  /** Strict-Transport-Security is sent */
  hsts: boolean;
  /** Content-Security-Policy is sent */
  csp: boolean;
  /** CORS allows `*` (or reflects any origin) together with credentials */
  corsWildcardWithCredentials: boolean;
  /** names of policies running in `monitor` mode (anywhere: global or on a route) */
  monitorPolicies: string[];
  /** state store backend */
  storeKind: 'memory' | 'redis';
  /** worker processes of this gateway */
  workers: number;
  /** gateway replicas declared by the operator (deployment), when known */
  replicas?: number;
  /** the audit log is written */
  auditEnabled: boolean;
  /** address the admin listener binds to */
  adminHost: string;
  /** API keys configured without any role */
  apiKeysWithoutRoles: number;
  /** length of the plain API key from API_KEY (`api_keys.env_key`), when one is configured (measured, never echoed) */
  envApiKeyLength?: number;
  /** upload gating is on for every upload route */
  uploadGatingOn: boolean;
  /** request pattern blocking (SQLi, XSS, traversal…) is on */
  patternBlockingOn: boolean;
  /** rate limiting is on */
  rateLimitOn: boolean;
  /** TLS as seen by clients, when the gateway terminates TLS or knows who does */
  tls?: {
    /** clients reach the service over TLS (here or at a trusted proxy in front) */
    enabled: boolean;
    /** lowest protocol version accepted, e.g. `TLSv1.2` */
    minVersion?: string;
  };
  /** days until the earliest-expiring certificate served by the gateway's TLS listener expires (negative once expired); absent when the gateway does not terminate TLS */
  tlsCertificateDaysLeft?: number;
  /** Strict-Transport-Security is sent while clients reach a public listener over plain HTTP with no TLS proxy declared (browsers ignore HSTS there, RFC 6797 §8.1); absent when unknown */
  hstsWithoutTls?: boolean;
  /** log level is debug or trace (request details and timing in the logs) */
  debugLogging: boolean;
  /** alerts and score are on (`SECURITY_MONITORING_ENABLED`) */
  monitoringOn?: boolean;
  /** an alert webhook is configured (`ALERT_WEBHOOK_URL`) */
  alertWebhookConfigured?: boolean;
  /** login protection (lockout after failed logins) is on for the login route */
  loginProtectionOn?: boolean;
  /** automatic IP bans after repeated blocked requests are on */
  autoBanOn?: boolean;
  /** `trusted_proxies` contains a catch-all range (0.0.0.0/0, ::/0): any client can forge X-Forwarded-For */
  trustedProxiesCatchAll?: boolean;
  /** requests matching no route are refused (404) rather than forwarded */
  defaultDeny?: boolean;
  /** state-store-backed policies that fail open while the store is down */
  failOpenPolicies?: string[];
  /** the redis store connection uses TLS (`rediss://`) or is on loopback */
  storeConnectionProtected?: boolean;
  /** the audit log writes every `api_access` event (sample rate 1) */
  accessSampleRate?: number;
}

export interface ScoreCheck {
  /** stable id, e.g. `jwt_secret_length` */
  id: string;
  title: string;
  pass: boolean;
  /** how much the check counts (the score is weighted by it) */
  weight: number;
  /** what to do; present on every check, the list of recommendations holds only failing ones */
  recommendation: string;
  /** facts behind the verdict (never a secret) */
  detail?: string;
}

export interface ScoreResult {
  /** 0..100 */
  score: number;
  checks: ScoreCheck[];
  /** recommendations of failing checks, heaviest first */
  recommendations: string[];
}

/** Minimum length of an HS256 secret (the seed's rule; RFC 7518 §3.2 asks for ≥ 256 bits). */
export const MIN_SECRET_LENGTH = 32;
/**
 * Minimum Shannon entropy per character of a secret. Random hex of 32 characters
 * averages ≈ 3.6 and stays above 2.9 in 20 000 draws; `abab…` scores 1.
 */
export const MIN_SECRET_ENTROPY_BITS_PER_CHAR = 2.5;
/** Minimum estimated total entropy (bits per char × length); 32 random hex characters estimate ≈ 115 (never below 94 in 20 000 draws). */
export const MIN_SECRET_ENTROPY_BITS = 80;

const PLACEHOLDER_SECRET =
  /secret|password|changeme|change[-_]?me|example|default|test|dev[-_]?key|your[-_]/i;

/** Shannon entropy of a string, in bits per character (0 for the empty string). */
export function shannonEntropy(s: string): number {
  if (s.length === 0) return 0;
  const counts = new Map<string, number>();
  for (const ch of s) counts.set(ch, (counts.get(ch) ?? 0) + 1);
  const n = [...s].length;
  let h = 0;
  for (const c of counts.values()) {
    const p = c / n;
    h -= p * Math.log2(p);
  }
  return h;
}

/** How random a secret looks: Shannon entropy per character and in all, placeholder words. */
function secretEntropy(s: string): { perChar: number; total: number; placeholder: boolean; pass: boolean } {
  const perChar = shannonEntropy(s);
  const total = perChar * [...s].length;
  const placeholder = PLACEHOLDER_SECRET.test(s);
  const pass =
    !placeholder && perChar >= MIN_SECRET_ENTROPY_BITS_PER_CHAR && total >= MIN_SECRET_ENTROPY_BITS;
  return { perChar, total, placeholder, pass };
}

/**
 * The weakest of several secrets (routes may verify JWTs with their own), the one the score
 * judges: one too short first, then one that does not look random, then the fewest bits.
 */
export function weakestSecret(secrets: readonly string[]): string | undefined {
  const rank = (s: string) => {
    const e = secretEntropy(s);
    return [[...s].length >= MIN_SECRET_LENGTH ? 1 : 0, e.pass ? 1 : 0, e.total] as const;
  };
  let weakest: string | undefined;
  let weakestRank: readonly [number, number, number] | undefined;
  for (const s of secrets) {
    const r = rank(s);
    if (
      weakestRank === undefined ||
      r[0] < weakestRank[0] ||
      (r[0] === weakestRank[0] &&
        (r[1] < weakestRank[1] || (r[1] === weakestRank[1] && r[2] < weakestRank[2])))
    ) {
      weakest = s;
      weakestRank = r;
    }
  }
  return weakest;
}

/** Whether an address only accepts connections from the same host. */
export function isLoopbackHost(host: string): boolean {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^(?:::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

const TLS_VERSIONS = ['SSLv3', 'TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'];
/** A served certificate closer than this to its expiry fails the score. */
export const TLS_EXPIRY_WARNING_DAYS = 14;

/** JWTs are verified at all (with a shared secret or public keys). */
function jwtInUse(i: ScoreInput): boolean {
  return i.jwtSecret !== undefined || Boolean(i.jwksUrl) || i.jwtPublicKeys === true;
}

/** The secret checks without a shared secret: passed when JWTs are verified with public keys only. */
function publicKeysOnly(i: ScoreInput): { pass: boolean; detail: string } | undefined {
  if (i.jwksUrl) return { pass: true, detail: 'JWTs are verified with JWKS public keys; no shared secret' };
  if (i.jwtPublicKeys === true)
    return { pass: true, detail: 'JWTs are verified with public keys; no shared secret' };
  return undefined;
}

interface CheckDef {
  id: string;
  title: string;
  weight: number;
  recommendation: string;
  /** undefined = not applicable */
  run(input: ScoreInput): { pass: boolean; detail?: string } | undefined;
}

const CHECKS: CheckDef[] = [
  {
    id: 'jwt_secret_length',
    title: `JWT secret is at least ${MIN_SECRET_LENGTH} characters`,
    weight: 10,
    recommendation: `Use a JWT_SECRET_KEY of at least ${MIN_SECRET_LENGTH} random characters (e.g. \`openssl rand -base64 48\`), or verify tokens with JWKS_URL.`,
    run: (i) => {
      if (i.jwtSecret === undefined) return publicKeysOnly(i);
      const len = [...i.jwtSecret].length;
      return { pass: len >= MIN_SECRET_LENGTH, detail: `${len} characters` };
    },
  },
  {
    id: 'jwt_secret_entropy',
    title: 'JWT secret looks random (Shannon entropy)',
    weight: 8,
    recommendation:
      'Replace JWT_SECRET_KEY by a random value (e.g. `openssl rand -base64 48`); repeated characters, words or placeholders are guessable.',
    run: (i) => {
      if (i.jwtSecret === undefined) return publicKeysOnly(i);
      const { perChar, total, placeholder, pass } = secretEntropy(i.jwtSecret);
      const detail =
        `${perChar.toFixed(2)} bits/char, about ${Math.round(total)} bits in all` +
        (placeholder ? '; contains a placeholder word' : '');
      return { pass, detail };
    },
  },
  {
    id: 'jwt_audience',
    title: 'JWT audience (aud) is checked',
    weight: 4,
    recommendation:
      'Set the expected `audience` of JWT authentication so tokens minted for another service are refused.',
    run: (i) => (jwtInUse(i) ? { pass: i.jwtHasAudience } : undefined),
  },
  {
    id: 'jwt_issuer',
    title: 'JWT issuer (iss) is checked',
    weight: 3,
    recommendation:
      'Set the expected `issuer` of JWT authentication so only your identity provider is trusted.',
    run: (i) => (jwtInUse(i) ? { pass: i.jwtHasIssuer } : undefined),
  },
  {
    id: 'hsts',
    title: 'Strict-Transport-Security is sent',
    weight: 6,
    recommendation:
      'Enable the Strict-Transport-Security header (max-age ≥ 1 year, includeSubDomains) in security_headers.',
    run: (i) => ({ pass: i.hsts }),
  },
  {
    id: 'csp',
    title: 'Content-Security-Policy is sent',
    weight: 5,
    recommendation: "Enable a Content-Security-Policy in security_headers (at least `default-src 'self'`).",
    run: (i) => ({ pass: i.csp }),
  },
  {
    id: 'cors_wildcard_credentials',
    title: 'CORS does not allow any origin with credentials',
    weight: 8,
    recommendation:
      'List the allowed origins explicitly (CORS_ORIGINS) when credentials are allowed; `*` with credentials lets any site act as the user.',
    run: (i) => ({ pass: !i.corsWildcardWithCredentials }),
  },
  {
    id: 'monitor_mode',
    title: 'No policy runs in monitor-only mode',
    weight: 6,
    recommendation:
      'Switch policies from `mode: monitor` to `mode: enforce` once their logs show no false positives.',
    run: (i) => ({
      pass: i.monitorPolicies.length === 0,
      detail: i.monitorPolicies.length
        ? `monitor mode: ${[...new Set(i.monitorPolicies)].sort().join(', ')}`
        : undefined,
    }),
  },
  {
    id: 'shared_store',
    title: 'State is shared by every gateway process',
    weight: 7,
    recommendation:
      'Use REDIS_URL=redis://… when running several workers or replicas; with the memory store each process enforces its own limits, lockouts and bans.',
    run: (i) => {
      const processes = Math.max(1, i.workers) * Math.max(1, i.replicas ?? 1);
      return {
        pass: i.storeKind === 'redis' || processes <= 1,
        detail: `${i.storeKind} store, ${i.workers} worker(s)${i.replicas !== undefined ? `, ${i.replicas} replica(s)` : ''}`,
      };
    },
  },
  {
    id: 'store_connection',
    title: 'State store connection is protected',
    weight: 3,
    recommendation: 'Reach Redis over TLS (rediss://) or on a private/loopback address with AUTH enabled.',
    run: (i) =>
      i.storeKind !== 'redis' || i.storeConnectionProtected === undefined
        ? undefined
        : { pass: i.storeConnectionProtected },
  },
  {
    id: 'audit_log',
    title: 'Audit log is enabled',
    weight: 7,
    recommendation:
      'Set AUDIT_LOG_ENABLED=true; without it refused requests, lockouts and alerts leave no trace.',
    run: (i) => ({ pass: i.auditEnabled }),
  },
  {
    id: 'audit_access_sampling',
    title: 'Access events are not sampled too aggressively',
    weight: 1,
    recommendation:
      'Keep the api_access sample rate at 0.1 or above so normal traffic stays reconstructible.',
    run: (i) =>
      !i.auditEnabled || i.accessSampleRate === undefined
        ? undefined
        : { pass: i.accessSampleRate >= 0.1, detail: `sample rate ${i.accessSampleRate}` },
  },
  {
    id: 'admin_loopback',
    title: 'Admin listener is bound to loopback',
    weight: 8,
    recommendation:
      'Bind the admin listener to 127.0.0.1 (the default); if it must be reachable (e.g. Prometheus in Kubernetes), restrict it with a NetworkPolicy or firewall.',
    run: (i) => ({ pass: isLoopbackHost(i.adminHost), detail: `bound to ${i.adminHost}` }),
  },
  {
    id: 'api_key_roles',
    title: 'Every API key has at least one role',
    weight: 4,
    recommendation:
      'Give each API key the roles it needs; keys without roles pass every route that only requires authentication.',
    run: (i) => ({
      pass: i.apiKeysWithoutRoles === 0,
      detail: `${i.apiKeysWithoutRoles} key(s) without roles`,
    }),
  },
  {
    id: 'api_key_length',
    title: `API_KEY is at least ${MIN_RECOMMENDED_KEY_LENGTH} characters`,
    weight: 5,
    recommendation: `Use an API_KEY of at least ${MIN_RECOMMENDED_KEY_LENGTH} random characters (e.g. \`openssl rand -base64 32\`); a short key can be guessed.`,
    run: (i) =>
      i.envApiKeyLength === undefined
        ? undefined
        : {
            pass: i.envApiKeyLength >= MIN_RECOMMENDED_KEY_LENGTH,
            detail: `${i.envApiKeyLength} characters`,
          },
  },
  {
    id: 'upload_gating',
    title: 'Upload gating is on',
    weight: 5,
    recommendation:
      'Enable upload_gate on upload routes (extension, MIME and magic-byte checks, size and file-count limits).',
    run: (i) => ({ pass: i.uploadGatingOn }),
  },
  {
    id: 'pattern_blocking',
    title: 'Attack pattern blocking is on',
    weight: 7,
    recommendation: 'Enable pattern_block (SQL injection, XSS, path traversal, command injection rules).',
    run: (i) => ({ pass: i.patternBlockingOn }),
  },
  {
    id: 'rate_limit',
    title: 'Rate limiting is on',
    weight: 6,
    recommendation:
      'Enable rate_limit with per-IP limits (the seed: 200 per day; 50 per hour; 10 per minute).',
    run: (i) => ({ pass: i.rateLimitOn }),
  },
  {
    id: 'login_protection',
    title: 'Login protection (lockout) is on',
    weight: 5,
    recommendation: 'Enable login_lockout on the login route (MAX_LOGIN_ATTEMPTS, LOGIN_LOCKOUT_DURATION).',
    run: (i) => (i.loginProtectionOn === undefined ? undefined : { pass: i.loginProtectionOn }),
  },
  {
    id: 'auto_ban',
    title: 'Automatic IP bans are on',
    weight: 3,
    recommendation:
      'Enable ip_ban so clients that keep triggering blocking rules are banned (SUSPICIOUS_ACTIVITY_THRESHOLD).',
    run: (i) => (i.autoBanOn === undefined ? undefined : { pass: i.autoBanOn }),
  },
  {
    id: 'default_deny',
    title: 'Unknown paths are refused (deny by default)',
    weight: 4,
    recommendation:
      'Remove catch-all routes that forward every path; list the routes the service really exposes.',
    run: (i) => (i.defaultDeny === undefined ? undefined : { pass: i.defaultDeny }),
  },
  {
    id: 'trusted_proxies',
    title: 'X-Forwarded-For is trusted only from known proxies',
    weight: 5,
    recommendation:
      'List only your load balancers in trusted_proxies; a catch-all range lets any client choose its IP and evade bans and rate limits.',
    run: (i) => (i.trustedProxiesCatchAll === undefined ? undefined : { pass: !i.trustedProxiesCatchAll }),
  },
  {
    id: 'fail_open',
    title: 'Security checks fail closed when the store is down',
    weight: 2,
    recommendation:
      'Consider `fail: closed` for login_lockout and ip_ban: while the store is down, fail-open policies let every locked account and banned IP through (rate limits may stay open).',
    run: (i) =>
      i.failOpenPolicies === undefined
        ? undefined
        : {
            pass: i.failOpenPolicies.filter((p) => !/rate/.test(p)).length === 0,
            detail: i.failOpenPolicies.length
              ? `fail open: ${[...new Set(i.failOpenPolicies)].sort().join(', ')}`
              : undefined,
          },
  },
  {
    id: 'tls',
    title: 'Clients connect over TLS 1.2 or later',
    weight: 5,
    recommendation: 'Serve clients over TLS (here or at the load balancer) with minVersion TLSv1.2 or later.',
    run: (i) => {
      if (!i.tls) return undefined;
      if (!i.tls.enabled) return { pass: false, detail: 'plain HTTP' };
      const v = i.tls.minVersion;
      if (v === undefined) return { pass: true, detail: 'TLS, default minimum version' };
      const idx = TLS_VERSIONS.indexOf(v);
      return { pass: idx >= TLS_VERSIONS.indexOf('TLSv1.2'), detail: `minimum ${v}` };
    },
  },
  {
    id: 'tls_certificate_expiry',
    title: `TLS certificate is valid for at least ${TLS_EXPIRY_WARNING_DAYS} more days`,
    weight: 5,
    recommendation:
      'Renew the certificate (certbot renew, cert-manager); the gateway reloads the files without a restart. Alert on gateway_tls_certificate_expiry_seconds.',
    run: (i) => {
      const d = i.tlsCertificateDaysLeft;
      if (d === undefined) return undefined;
      return {
        pass: d >= TLS_EXPIRY_WARNING_DAYS,
        detail: d < 0 ? 'expired' : `expires in ${Math.floor(d)} day(s)`,
      };
    },
  },
  {
    id: 'hsts_without_tls',
    title: 'HSTS is backed by TLS',
    weight: 3,
    recommendation:
      'Browsers ignore Strict-Transport-Security over plain HTTP: terminate TLS here (listen.tls, with listen.redirect for port 80), or list the TLS-terminating proxy in trusted_proxies.',
    run: (i) => (i.hstsWithoutTls === undefined ? undefined : { pass: !i.hstsWithoutTls }),
  },
  {
    id: 'monitoring',
    title: 'Security monitoring (alerts) is on',
    weight: 4,
    recommendation: 'Set SECURITY_MONITORING_ENABLED=true so brute force and attack bursts raise alerts.',
    run: (i) => (i.monitoringOn === undefined ? undefined : { pass: i.monitoringOn }),
  },
  {
    id: 'alert_webhook',
    title: 'Alerts are delivered to a webhook',
    weight: 2,
    recommendation: 'Set ALERT_WEBHOOK_URL so alerts reach a person (chat, paging), not only the audit log.',
    run: (i) =>
      i.alertWebhookConfigured === undefined || i.monitoringOn === false
        ? undefined
        : { pass: i.alertWebhookConfigured },
  },
  {
    id: 'debug_logging',
    title: 'Debug logging is off',
    weight: 3,
    recommendation: 'Use log level info or above in production; debug logs carry request details.',
    run: (i) => ({ pass: !i.debugLogging }),
  },
];

/** The ids of every check, in the order they are reported. */
export const SCORE_CHECK_IDS: readonly string[] = CHECKS.map((c) => c.id);

/** Score the running configuration. Pure; cheap enough to call on every reload and request. */
export function securityScore(input: ScoreInput): ScoreResult {
  const checks: ScoreCheck[] = [];
  for (const def of CHECKS) {
    const r = def.run(input);
    if (!r) continue;
    const check: ScoreCheck = {
      id: def.id,
      title: def.title,
      pass: r.pass,
      weight: def.weight,
      recommendation: def.recommendation,
    };
    if (r.detail !== undefined) check.detail = r.detail;
    checks.push(check);
  }
  const total = checks.reduce((a, c) => a + c.weight, 0);
  const passed = checks.reduce((a, c) => a + (c.pass ? c.weight : 0), 0);
  const score = total === 0 ? 100 : Math.round((100 * passed) / total);
  const recommendations = checks
    .filter((c) => !c.pass)
    .sort((a, b) => b.weight - a.weight)
    .map((c) => c.recommendation);
  return { score, checks, recommendations };
}
