import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import type { CryptoKey } from 'jose';
import type { PolicyFactory, Policy, Verdict, CompileContext } from '../../gateway/policy.js';
import type { RequestContext, Identity } from '../../gateway/context.js';
import { ConfigError } from '../../gateway/errors.js';
import { checkLimits } from '../../gateway/store/bucket-math.js';
import type { AuditFields } from '../../gateway/observability/audit.js';
import { policyBlock, Duration, Size, Limits } from '../../gateway/config/policy-schema.js';
import { parseDuration, parseSize, parseLimits, type Limit } from '../../gateway/config/units.js';
import {
  AuthFailure,
  unauthorized,
  forbidden,
  type AuthFailureReason,
  type AuthMethodLabel,
} from './reasons.js';
import { JwksClient } from './jwks-client.js';
import { TokenCache } from './token-cache.js';
import {
  JwtVerifier,
  JWT_ALGORITHMS,
  isHmac,
  importHmacKeys,
  buildStaticKeySet,
  type StaticKeySpec,
} from './jwt-verifier.js';
import {
  API_KEY_HASH_PATTERN,
  MAX_API_KEY_LENGTH,
  MIN_RECOMMENDED_KEY_LENGTH,
  digestOf,
  hashApiKey,
  matchApiKey,
  unusableApiKey,
  type ApiKeyEntry,
} from './api-keys.js';
import { acquire, release } from './shared.js';

export { authReadiness } from './readiness.js';
export { AUTH_FAILURE_REASONS } from './reasons.js';
export { hashApiKey } from './api-keys.js';

/** Shortest HS256 secret accepted (characters), unless `allow_weak_secret` is set. */
export const MIN_SECRET_LENGTH = 32;

/**
 * A header or cookie name (an HTTP token, RFC 9110 §5.6.2; RFC 6265 §4.1.1): a name with a
 * space, `:`, `=` or `;` in it (`"X-API-Key "`, `"session id"`) can never arrive, so every
 * API key or cookie token would be refused as missing.
 */
const TCHARS = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";

const Algorithm = Type.Union(
  JWT_ALGORITHMS.map((a) => Type.Literal(a)),
  { description: 'a JWS algorithm (none is never accepted)' },
);

const StringOrList = (description: string) =>
  Type.Union([Type.String(), Type.Array(Type.String(), { minItems: 1 })], { default: '', description });

const PublicKey = Type.Object(
  {
    kid: Type.Optional(
      Type.String({ minLength: 1, description: 'key id matched against the token header `kid`' }),
    ),
    alg: Type.Optional(Algorithm),
    pem: Type.Optional(Type.String({ description: 'inline PEM public key (SPKI) or X.509 certificate' })),
    pem_file: Type.Optional(Type.String({ description: 'path of a PEM file, relative to gateway.yaml' })),
    jwk: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), { description: 'a public JWK (RSA, EC or OKP)' }),
    ),
  },
  { additionalProperties: false, description: 'one static public key: exactly one of pem, pem_file, jwk' },
);

const JwtBlock = Type.Object(
  {
    secret: Type.String({
      default: '',
      description:
        'HS256 shared secret (`${JWT_SECRET_KEY}`); at least 32 characters; used only when an HS* algorithm is pinned',
    }),
    allow_weak_secret: Type.Boolean({
      default: false,
      description: 'demo only: accept a secret shorter than 32 characters (a warning is logged)',
    }),
    public_keys: Type.Array(PublicKey, {
      default: [],
      description: 'static public keys (PEM or JWK) for RS/PS/ES/EdDSA',
    }),
    jwks_url: Type.String({ default: '', description: 'JWKS endpoint (`${JWKS_URL:-}`); empty = none' }),
    jwks: Type.Object(
      {
        cache_max_age: Duration('10m', 'fetched keys are refreshed after this age (in the background)'),
        cooldown: Duration(
          '30s',
          'an unknown kid, or a signature the cached key of its kid does not verify (a kid given to a new key), triggers a refetch at most once per cooldown',
        ),
        timeout: Duration('5s', 'abort a JWKS fetch after this long'),
        stale_if_error: Duration(
          '1h',
          'keep using cached keys this long past cache_max_age while refreshes fail',
        ),
        failure_backoff: Duration('2s', 'after a failed fetch, wait this long before the next one'),
        max_bytes: Size('256KB', 'largest JWKS response accepted'),
      },
      { additionalProperties: false, default: {}, description: 'JWKS client settings' },
    ),
    algorithms: Type.Array(Algorithm, {
      default: [],
      description:
        'pinned algorithms; empty = [HS256] with a secret only, [RS256, ES256, EdDSA] with keys or a JWKS',
    }),
    issuer: StringOrList('required `iss` (one or a list); empty = not checked'),
    audience: StringOrList('required `aud` (one or a list, any-of); empty = not checked'),
    clock_tolerance: Duration('30s', 'leeway for exp, nbf and iat'),
    required_claims: Type.Array(Type.String({ minLength: 1 }), {
      default: ['exp'],
      description: 'claims that must be present',
    }),
    subject_claim: Type.String({
      default: 'sub',
      minLength: 1,
      description: 'claim holding the subject (X-Auth-Subject)',
    }),
    roles_claim: Type.String({
      default: 'role',
      minLength: 1,
      description: 'dotted path of the roles claim: role, roles, realm_access.roles, scope (space-separated)',
    }),
    max_token_bytes: Size('8KB', 'longer tokens are refused before any decoding'),
    cookie: Type.String({
      default: '',
      pattern: `^(?:${TCHARS})?$`,
      description:
        "cookie carrying the token for browser sessions; empty = none; a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
    }),
    cache: Type.Object(
      {
        max_entries: Type.Integer({
          default: 10000,
          minimum: 0,
          description: 'verified tokens kept (0 = no cache)',
        }),
        max_bytes: Size('16MB', 'total size of the verified-token cache'),
        max_ttl: Duration('5m', 'a verification is reused at most this long (never past exp)'),
      },
      {
        additionalProperties: false,
        default: {},
        description: 'verified-token cache (LRU keyed by the token)',
      },
    ),
  },
  { additionalProperties: false, default: {}, description: 'JWT verification' },
);

/**
 * A role name, in the configuration as in a token (`rolesFromClaims` drops any other):
 * `X-Auth-Roles` joins the roles with commas, so a configured `user,admin` would reach the
 * upstream as two roles (admin among them) while the gateway's role checks saw one, and
 * `admin ` (with a space) would match no caller's role.
 */
const ROLE_PATTERN = '^[A-Za-z0-9_.:/-]{1,64}$';
const Role = Type.String({ pattern: ROLE_PATTERN, description: 'a role name: [A-Za-z0-9_.:/-]{1,64}' });

const ApiKey = Type.Object(
  {
    id: Type.String({
      pattern: '^[A-Za-z0-9_.-]{1,64}$',
      description: 'name of the key in logs, metrics and X-Auth-Key-Id',
    }),
    hash: Type.String({
      pattern: API_KEY_HASH_PATTERN,
      description: '`sha256:<hex>` printed by `receipt-gateway hash-key`',
    }),
    roles: Type.Array(Role, {
      default: ['user'],
      description: 'roles of callers using this key',
    }),
    rate_limit: Type.Optional(Limits(undefined, 'rate-limit override for this key')),
  },
  { additionalProperties: false },
);

const ApiKeysBlock = Type.Object(
  {
    header: Type.String({
      default: 'x-api-key',
      pattern: `^${TCHARS}$`,
      description: "request header carrying the key: a header name (letters, digits and !#$%&'*+-.^_`|~)",
    }),
    keys: Type.Array(ApiKey, { default: [], description: 'accepted keys, as hashes only' }),
    env_key: Type.String({
      default: '',
      description:
        'one plain key from the environment (`${API_KEY:-}`), id `env`, roles [user]; empty = none',
    }),
  },
  { additionalProperties: false, default: {}, description: 'API keys' },
);

const Method = Type.Union([Type.Literal('jwt'), Type.Literal('api_key'), Type.Literal('none')]);

/**
 * `policies.auth` / `routes[].policies.auth`: who may call a route.
 *
 * @example
 * ```yaml
 * policies:
 *   auth:
 *     require: [jwt, api_key]
 *     jwt: { secret: ${JWT_SECRET_KEY}, jwks_url: ${JWKS_URL:-}, cookie: session }
 *     api_keys: { env_key: ${API_KEY:-} }
 * routes:
 *   - name: health
 *     match: { path: /api/health }
 *     policies: { auth: { require: [none] } }
 *   - name: admin
 *     match: { path: /api/admin/** }
 *     policies: { auth: { roles: [admin] } }
 * ```
 */
export const authSchema = policyBlock(
  {
    require: Type.Array(Method, {
      default: ['jwt', 'api_key'],
      minItems: 1,
      description: 'accepted credentials, any-of: jwt, api_key; or [none] for a public route',
    }),
    roles: Type.Array(Role, {
      default: [],
      description: 'the caller needs one of these roles (any-of); empty = any authenticated caller',
    }),
    forward_authorization: Type.Boolean({
      default: true,
      description: 'forward the Authorization and API key headers upstream (false strips them)',
    }),
    audit_success_sample_rate: Type.Number({
      default: 1,
      minimum: 0,
      maximum: 1,
      description: 'fraction of successful authentications written as auth_success audit events',
    }),
    jwt: JwtBlock,
    api_keys: ApiKeysBlock,
  },
  { description: 'authentication (JWT, API keys) and role checks' },
);

export type AuthConfig = Static<typeof authSchema>;

/** What the auth policy leaves in `ctx.locals.get('auth')` for later policies (rate limits). */
export interface AuthLocals {
  readonly keyId?: string;
  /** the API key's own rate-limit override, parsed */
  readonly rateLimit?: readonly Limit[];
}

/** ctx.locals key of the `auth_success` fields onDone writes (set when the success is sampled) */
const SUCCESS_LOCAL = 'auth.success';

const SAFE_ROLE = new RegExp(ROLE_PATTERN);
/**
 * The subject prefix of an API-key identity (`api_key:<id>`). A JWT subject spelt so is
 * encoded (`api_key%3Aops`): it must not reach the upstream, nor key a per-user rate limit,
 * as the key's identity.
 */
const API_KEY_SUBJECT = 'api_key:';
/**
 * Subjects forwarded as they are: printable ASCII without `%`, without a space at either
 * end, and not spelt as an API-key identity. HTTP parsers strip a header value's leading and
 * trailing whitespace (` admin ` would arrive as `admin`), and a `%` would make `j%C3%B6rg`
 * indistinguishable from an encoded `jörg`.
 */
const ASCII_WITHOUT_PERCENT = /^[\x20-\x24\x26-\x7e]+$/;
const verbatimSubject = (sub: string): boolean =>
  ASCII_WITHOUT_PERCENT.test(sub) &&
  !sub.startsWith(' ') &&
  !sub.endsWith(' ') &&
  !sub.startsWith(API_KEY_SUBJECT);
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
const MAX_SUBJECT = 256;

/** Roles from the claim at a dotted path: a string (space-separated, as `scope`) or a list. */
export function rolesFromClaims(
  claims: Readonly<Record<string, unknown>>,
  pathParts: readonly string[],
): string[] {
  let v: unknown = claims;
  for (const part of pathParts) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return [];
    v = (v as Record<string, unknown>)[part];
  }
  const raw = typeof v === 'string' ? v.split(/\s+/) : Array.isArray(v) ? v : [];
  const out: string[] = [];
  for (const r of raw) if (typeof r === 'string' && SAFE_ROLE.test(r) && !out.includes(r)) out.push(r);
  return out;
}

/**
 * The subject as it may go into a header, or undefined when the token's subject is not
 * acceptable (absent, not a string, empty, too long, control characters, a lone UTF-16
 * surrogate, which is not text). One header value per subject: {@link verbatimSubject} ones as
 * is, any other subject percent-encoded as a whole (`encodeURIComponent`). An encoded value
 * always contains `%` and a verbatim one never does, so two subjects never share a value,
 * and `decodeURIComponent` restores the subject whenever the value contains `%`.
 */
function headerSafeSubject(sub: unknown): string | undefined {
  if (typeof sub !== 'string' || sub === '' || sub.length > MAX_SUBJECT) return undefined;
  if (verbatimSubject(sub)) return sub;
  if (CONTROL.test(sub)) return undefined;
  try {
    return encodeURIComponent(sub);
  } catch {
    return undefined; // URIError: a lone surrogate
  }
}

function nonEmpty(v: string | string[]): string | string[] | undefined {
  if (Array.isArray(v)) return v;
  return v === '' ? undefined : v;
}

function settingsHash(obj: unknown): string {
  return createHash('sha256').update(JSON.stringify(obj)).digest('hex').slice(0, 32);
}

/** Count occurrences of a header in the raw header list (Node keeps only the first Authorization). */
function headerCount(raw: readonly string[], lowerName: string): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (sameTokenIgnoringCase(raw[i]!, lowerName)) n += 1;
  return n;
}

/**
 * `name.toLowerCase() === lower` for a header name (an HTTP token: ASCII only, as the
 * parsers guarantee), without allocating the lowercase copy.
 */
function sameTokenIgnoringCase(name: string, lower: string): boolean {
  if (name.length !== lower.length) return false;
  for (let i = 0; i < name.length; i++) {
    let c = name.charCodeAt(i);
    if (c >= 65 && c <= 90) c += 32;
    else if (c > 127) return name.toLowerCase() === lower;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/** The value of one cookie (the first occurrence), without parsing the others. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  let i = 0;
  while (i < header.length) {
    let end = header.indexOf(';', i);
    if (end === -1) end = header.length;
    const eq = header.indexOf('=', i);
    if (eq !== -1 && eq < end && header.slice(i, eq).trim() === name) {
      let value = header.slice(eq + 1, end).trim();
      if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
      return value;
    }
    i = end + 1;
  }
  return undefined;
}

interface JwtSetup {
  readonly verifier: JwtVerifier;
  readonly cookie: string;
  readonly subjectClaim: string;
  readonly rolesPath: readonly string[];
}

async function compileJwt(jwt: AuthConfig['jwt'], ctx: CompileContext, held: string[]): Promise<JwtSetup> {
  const { services } = ctx;
  const at = (...p: (string | number)[]) => [...ctx.path, 'jwt', ...p];
  const fail = (msg: string, p: (string | number)[]) => {
    throw new ConfigError(msg, at(...p));
  };

  const specs: StaticKeySpec[] = jwt.public_keys.map((k, i) => {
    const given = [k.pem, k.pem_file, k.jwk].filter((x) => x !== undefined).length;
    if (given !== 1) fail('give exactly one of pem, pem_file, jwk', ['public_keys', i]);
    let pem = k.pem;
    if (k.pem_file !== undefined) {
      const file = path.resolve(ctx.configDir, k.pem_file);
      try {
        pem = fs.readFileSync(file, 'utf8');
      } catch (err) {
        fail(`cannot read ${file}: ${(err as Error).message}`, ['public_keys', i, 'pem_file']);
      }
    }
    return { kid: k.kid, alg: k.alg, pem, jwk: k.jwk };
  });
  let staticKeys;
  try {
    staticKeys = buildStaticKeySet(specs);
  } catch (err) {
    fail((err as Error).message, ['public_keys']);
  }

  const jwksUrl = jwt.jwks_url.trim();
  if (jwksUrl !== '') {
    let u: URL | undefined;
    try {
      u = new URL(jwksUrl);
    } catch {
      fail(`jwks_url is not a URL`, ['jwks_url']);
    }
    if (u !== undefined && u.protocol !== 'https:' && u.protocol !== 'http:')
      fail('jwks_url must be http(s)', ['jwks_url']);
    // fetch() refuses such a URL, and its error (naming the whole URL) would put the
    // password in /readyz and the logs; a JWKS is public (RFC 8414 jwks_uri)
    if (u !== undefined && (u.username !== '' || u.password !== ''))
      fail(
        'jwks_url must not contain a user name or password (user:password@): a JWKS is fetched without credentials',
        ['jwks_url'],
      );
  }
  const hasKeys = staticKeys !== undefined || jwksUrl !== '';
  const algorithms =
    jwt.algorithms.length > 0
      ? [...new Set(jwt.algorithms)]
      : hasKeys
        ? (['RS256', 'ES256', 'EdDSA'] as const)
        : (['HS256'] as const);
  const hmacAlgs = algorithms.filter(isHmac);
  if (hmacAlgs.length > 0) {
    if (jwt.secret === '') {
      fail('JWT_SECRET_KEY is missing: an HS* algorithm is pinned but jwt.secret is empty', ['secret']);
    }
    if (jwt.secret.length < MIN_SECRET_LENGTH) {
      if (!jwt.allow_weak_secret) {
        fail(
          `JWT_SECRET_KEY is too short (${jwt.secret.length} characters; at least ${MIN_SECRET_LENGTH} required)`,
          ['secret'],
        );
      }
      services.log.warn(
        { length: jwt.secret.length, minimum: MIN_SECRET_LENGTH },
        'JWT secret shorter than 32 characters accepted because allow_weak_secret is set (demo only)',
      );
    }
  }
  if (algorithms.some((a) => !isHmac(a)) && !hasKeys) {
    fail('an asymmetric algorithm is pinned but neither public_keys nor jwks_url is configured', [
      'algorithms',
    ]);
  }

  const toMs = (v: string, p: string[]) => {
    try {
      return parseDuration(v);
    } catch (err) {
      return fail((err as Error).message, p) as never;
    }
  };
  const toBytes = (v: string, p: string[]) => {
    try {
      return parseSize(v);
    } catch (err) {
      return fail((err as Error).message, p) as never;
    }
  };

  let jwks: JwksClient | undefined;
  let jwksKey: string | undefined;
  if (jwksUrl !== '' && algorithms.some((a) => !isHmac(a))) {
    const o = {
      url: jwksUrl,
      timeoutMs: Math.max(1, Math.round(toMs(jwt.jwks.timeout, ['jwks', 'timeout']))),
      cooldownMs: toMs(jwt.jwks.cooldown, ['jwks', 'cooldown']),
      cacheMaxAgeMs: toMs(jwt.jwks.cache_max_age, ['jwks', 'cache_max_age']),
      staleIfErrorMs: toMs(jwt.jwks.stale_if_error, ['jwks', 'stale_if_error']),
      failureBackoffMs: toMs(jwt.jwks.failure_backoff, ['jwks', 'failure_backoff']),
      maxBytes: toBytes(jwt.jwks.max_bytes, ['jwks', 'max_bytes']),
    };
    jwksKey = `auth:jwks:${o.url}|${o.timeoutMs}|${o.cooldownMs}|${o.cacheMaxAgeMs}|${o.staleIfErrorMs}|${o.failureBackoffMs}|${o.maxBytes}`;
    jwks = acquire(services, jwksKey, () => new JwksClient({ ...o, now: services.now, log: services.log }));
    held.push(jwksKey);
    jwks.warmUp();
  }

  let hmacKeys = new Map<string, CryptoKey>();
  if (hmacAlgs.length > 0) hmacKeys = await importHmacKeys(jwt.secret, hmacAlgs);

  const clockToleranceSec = toMs(jwt.clock_tolerance, ['clock_tolerance']) / 1000;
  const maxTokenBytes = toBytes(jwt.max_token_bytes, ['max_token_bytes']);
  const issuer = nonEmpty(jwt.issuer);
  const audience = nonEmpty(jwt.audience);

  let cache: TokenCache | undefined;
  if (jwt.cache.max_entries > 0) {
    const cacheOpts = {
      maxEntries: jwt.cache.max_entries,
      maxBytes: toBytes(jwt.cache.max_bytes, ['cache', 'max_bytes']),
      maxTtlMs: toMs(jwt.cache.max_ttl, ['cache', 'max_ttl']),
    };
    // Everything that decides whether a token verifies is part of the cache's identity,
    // so routes with different settings never share verifications. Secrets are hashed.
    const identity = settingsHash({
      secret: hmacAlgs.length > 0 ? createHash('sha256').update(jwt.secret).digest('hex') : '',
      keys: specs,
      jwks: jwksKey ?? '',
      algorithms,
      issuer: issuer ?? null,
      audience: audience ?? null,
      clockToleranceSec,
      required: jwt.required_claims,
      maxTokenBytes,
      cacheOpts,
    });
    const cacheKey = `auth:tokens:${identity}`;
    cache = acquire(services, cacheKey, () => new TokenCache({ ...cacheOpts, now: services.now }));
    held.push(cacheKey);
  }

  const verifier = new JwtVerifier({
    algorithms,
    hmacKeys,
    staticKeys,
    jwks,
    issuer,
    audience,
    clockToleranceSec,
    requiredClaims: jwt.required_claims,
    maxTokenBytes,
    cache,
    now: services.now,
  });
  return {
    verifier,
    cookie: jwt.cookie,
    subjectClaim: jwt.subject_claim,
    rolesPath: jwt.roles_claim.split('.'),
  };
}

function compileApiKeys(block: AuthConfig['api_keys'], ctx: CompileContext): ApiKeyEntry[] {
  const at = (...p: (string | number)[]) => [...ctx.path, 'api_keys', ...p];
  const entries: ApiKeyEntry[] = [];
  const ids = new Set<string>();
  const hashes = new Set<string>();
  block.keys.forEach((k, i) => {
    if (ids.has(k.id)) throw new ConfigError(`duplicate API key id "${k.id}"`, at('keys', i, 'id'));
    if (hashes.has(k.hash)) throw new ConfigError(`the same hash is configured twice`, at('keys', i, 'hash'));
    ids.add(k.id);
    hashes.add(k.hash);
    let rateLimit;
    if (k.rate_limit !== undefined) {
      try {
        rateLimit = parseLimits(k.rate_limit);
        // as the rate-limit rules' limits: an override the limiter cannot use would be
        // ignored there, leaving the key on the rule's limits
        checkLimits(rateLimit);
      } catch (err) {
        throw new ConfigError((err as Error).message, at('keys', i, 'rate_limit'));
      }
    }
    entries.push({ id: k.id, roles: [...k.roles], rateLimit, digest: digestOf(k.hash) });
  });
  if (block.env_key !== '') {
    if (ids.has('env')) throw new ConfigError('the id "env" is reserved for env_key (API_KEY)', at('keys'));
    const unusable = unusableApiKey(block.env_key);
    if (unusable !== undefined)
      throw new ConfigError(`API_KEY cannot be sent in an X-API-Key header: ${unusable}`, at('env_key'));
    if (block.env_key.length < MIN_RECOMMENDED_KEY_LENGTH) {
      ctx.services.log.warn(
        { length: block.env_key.length, minimum: MIN_RECOMMENDED_KEY_LENGTH },
        `API_KEY is shorter than ${MIN_RECOMMENDED_KEY_LENGTH} characters; use a long random key (e.g. openssl rand -base64 32)`,
      );
    }
    const hash = hashApiKey(block.env_key);
    if (hashes.has(hash)) throw new ConfigError('API_KEY is also configured in keys', at('env_key'));
    entries.push({ id: 'env', roles: ['user'], rateLimit: undefined, digest: digestOf(hash) });
  }
  return entries;
}

type Credential =
  | { readonly kind: 'jwt'; readonly token: string; readonly via: 'header' | 'cookie' }
  | { readonly kind: 'api_key'; readonly key: string }
  | { readonly kind: 'malformed'; readonly method: 'jwt' | 'api_key' };

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;

/**
 * The auth policy: authenticates with a JWT (Authorization: Bearer or a session cookie)
 * or an API key, as the route's `require` allows (any-of), checks `roles` (any-of), sets
 * `ctx.identity` and the X-Auth-* upstream headers. 401 `unauthorized` / 403 `forbidden`
 * with RFC 6750 challenges; failure reasons from a fixed set.
 */
export const auth: PolicyFactory<typeof authSchema> = {
  name: 'auth',
  key: 'auth',
  schema: authSchema,
  async compile(config, ctx): Promise<Policy> {
    const { services } = ctx;
    const req = [...new Set(config.require)];
    if (req.includes('none') && req.length > 1) {
      throw new ConfigError('`none` cannot be combined with other methods', [...ctx.path, 'require']);
    }
    const isPublic = req.includes('none');
    if (isPublic && config.roles.length > 0) {
      throw new ConfigError('roles need an authenticated caller; remove them or require jwt/api_key', [
        ...ctx.path,
        'roles',
      ]);
    }
    const base: Policy = { name: 'auth', mode: config.mode, failure: 'closed' };
    if (isPublic) return base;

    const held: string[] = [];
    const allowJwt = req.includes('jwt');
    const allowKey = req.includes('api_key');
    const keys = allowKey ? compileApiKeys(config.api_keys, ctx) : [];
    if (allowKey && !allowJwt && keys.length === 0) {
      throw new ConfigError(
        'require is [api_key] but no API keys are configured (api_keys.keys or API_KEY)',
        [...ctx.path, 'api_keys', 'keys'],
      );
    }
    let jwt: JwtSetup | undefined;
    try {
      if (allowJwt) jwt = await compileJwt(config.jwt, ctx, held);
    } catch (err) {
      for (const k of held) release(services, k);
      throw err;
    }
    const keyHeader = config.api_keys.header.toLowerCase();
    const roles = new Set(config.roles);
    const forward = config.forward_authorization;
    const sampleRate = config.audit_success_sample_rate;
    const order = req as ('jwt' | 'api_key')[];
    const { metrics, audit } = services;

    const fail = (reason: AuthFailureReason, method: AuthMethodLabel): Verdict => {
      metrics.authFailures.inc({ method, reason });
      return unauthorized(reason, method);
    };

    /** The first credential the route accepts that the request carries, in `require` order. */
    const credential = (c: RequestContext): Credential | undefined => {
      for (const kind of order) {
        if (kind === 'jwt') {
          const authz = c.headers.authorization;
          if (authz !== undefined) {
            if (headerCount(c.rawHeaders, 'authorization') > 1) return { kind: 'malformed', method: 'jwt' };
            if (/^bearer(?:[ \t]|$)/i.test(authz)) {
              const m = BEARER.exec(authz);
              if (m === null) return { kind: 'malformed', method: 'jwt' };
              return { kind: 'jwt', token: m[1]!, via: 'header' };
            }
          }
          if (jwt!.cookie !== '') {
            const value = readCookie(c.headers.cookie, jwt!.cookie);
            if (value !== undefined && value !== '') return { kind: 'jwt', token: value, via: 'cookie' };
          }
        } else {
          const v = c.headers[keyHeader];
          if (v !== undefined) {
            if (Array.isArray(v) || headerCount(c.rawHeaders, keyHeader) > 1)
              return { kind: 'malformed', method: 'api_key' };
            const key = v.trim();
            if (key === '' || key.length > MAX_API_KEY_LENGTH)
              return { kind: 'malformed', method: 'api_key' };
            return { kind: 'api_key', key };
          }
        }
      }
      return undefined;
    };

    const accept = (c: RequestContext, identity: Identity): Verdict => {
      c.identity = identity;
      const h = c.upstreamHeaders;
      h['x-auth-subject'] = identity.subject;
      h['x-auth-roles'] = identity.roles.join(',');
      h['x-auth-method'] = identity.method;
      if (identity.keyId !== undefined) h['x-auth-key-id'] = identity.keyId;
      if (!forward) {
        c.dropUpstreamHeaders.add('authorization');
        c.dropUpstreamHeaders.add(keyHeader);
      }
      // written by onDone, when the response is over, with the status the client got
      if (sampleRate >= 1 || (sampleRate > 0 && Math.random() < sampleRate)) {
        c.locals.set(SUCCESS_LOCAL, {
          decision: 'allow',
          subject: identity.subject,
          auth_method: identity.method,
          ...(identity.keyId !== undefined ? { key_id: identity.keyId } : {}),
          ...(identity.via === 'cookie' ? { via: 'cookie' } : {}),
        } satisfies AuditFields);
      }
      if (roles.size > 0 && !identity.roles.some((r) => roles.has(r))) return forbidden(identity.method);
      return undefined;
    };

    const fromClaims = (
      c: RequestContext,
      claims: Readonly<Record<string, unknown>>,
      via: 'header' | 'cookie',
    ): Verdict => {
      const subject = headerSafeSubject(claims[jwt!.subjectClaim]);
      if (subject === undefined) return fail('claims', 'jwt');
      return accept(c, {
        subject,
        roles: rolesFromClaims(claims, jwt!.rolesPath),
        method: 'jwt',
        claims,
        via,
      });
    };

    const policy: Policy = {
      ...base,
      onRequest(c) {
        const cred = credential(c);
        if (cred === undefined) return fail('missing', 'none');
        if (cred.kind === 'malformed') return fail('malformed', cred.method);
        if (cred.kind === 'api_key') {
          const entry = matchApiKey(keys, cred.key);
          if (entry === undefined) return fail('invalid_key', 'api_key');
          const locals: AuthLocals =
            entry.rateLimit !== undefined
              ? { keyId: entry.id, rateLimit: entry.rateLimit }
              : { keyId: entry.id };
          c.locals.set('auth', locals);
          return accept(c, {
            subject: `${API_KEY_SUBJECT}${entry.id}`,
            roles: entry.roles,
            method: 'api_key',
            keyId: entry.id,
            via: 'header',
          });
        }
        let result;
        try {
          result = jwt!.verifier.verify(cred.token);
        } catch (err) {
          return fail(err instanceof AuthFailure ? err.reason : 'malformed', 'jwt');
        }
        if (!(result instanceof Promise)) return fromClaims(c, result, cred.via);
        return result.then(
          (claims) => fromClaims(c, claims, cred.via),
          (err: unknown) => fail(err instanceof AuthFailure ? err.reason : 'malformed', 'jwt'),
        );
      },
      onDone(c, outcome) {
        const fields = c.locals.get(SUCCESS_LOCAL) as AuditFields | undefined;
        if (fields !== undefined) audit.request('auth_success', c, { ...fields, status: outcome.status });
      },
      close() {
        for (const k of held.splice(0)) release(services, k);
      },
    };
    return policy;
  },
};
