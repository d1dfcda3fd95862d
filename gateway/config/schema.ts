import { Type, type TObject, type TSchema, type Static } from '@sinclair/typebox';
import { FACTORIES } from '../../policies/registry.js';
import { Duration, Size } from './policy-schema.js';

/**
 * The schema of gateway.yaml: the core sections declared here, plus one block per
 * policy taken from the registry (`policies.<key>` and `routes[].policies.<key>`).
 */

const Strict = { additionalProperties: false } as const;

/** Mozilla "intermediate" suites: TLS 1.3 AEADs, then ECDHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2 (forward secrecy, no CBC, no RSA key exchange). */
export const DEFAULT_TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** Host names a certificate is chosen for by SNI: `api.example.com` or `*.example.com`. */
const SERVERNAME_PATTERN =
  '^(\\*\\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$';

/**
 * An address a listener can bind: a host name or IPv4 address (`localhost`, `0.0.0.0`), or an
 * IPv6 address without brackets (`::`, `::1`). Anything else would only fail when the gateway
 * starts to listen (getaddrinfo ENOTFOUND), after `validate` said the file was fine.
 */
const LISTEN_HOST = (description: string, dflt: string) =>
  Type.String({
    default: dflt,
    pattern:
      '^(?:[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9_.-]+)?)$',
    description: `${description}: a host name, an IPv4 address or an IPv6 address without brackets (fe80::1%eth0 with a zone)`,
  });

/**
 * One extra certificate, chosen when the client's SNI names one of `servernames`.
 * ```yaml
 * certificates:
 *   - { cert_file: /etc/tls/api/tls.crt, key_file: /etc/tls/api/tls.key, servernames: [api.example.com, "*.api.example.com"] }
 * ```
 */
export const TlsCertificateSchema = Type.Object(
  {
    cert_file: Type.String({
      minLength: 1,
      description:
        'PEM certificate chain (leaf first, then intermediates); relative paths are relative to the config file',
    }),
    key_file: Type.String({ minLength: 1, description: 'PEM private key of the leaf certificate' }),
    servernames: Type.Array(
      Type.String({ pattern: SERVERNAME_PATTERN, description: 'a host name or *.wildcard' }),
      {
        minItems: 1,
        description: 'SNI names this certificate answers for (exact, or `*.example.com` for one label)',
      },
    ),
  },
  { ...Strict },
);

/**
 * `listen.tls`: terminate TLS on the main listener (edge deployment). Files are watched and
 * reloaded without a restart; a bad new certificate keeps the old one serving.
 * ```yaml
 * listen:
 *   port: 443
 *   tls:
 *     cert_file: /etc/tls/tls.crt
 *     key_file: /etc/tls/tls.key
 * ```
 */
export const TlsSchema = Type.Object(
  {
    cert_file: Type.String({
      minLength: 1,
      description:
        'PEM certificate chain of the default certificate (leaf first, then intermediates); relative paths are relative to the config file',
    }),
    key_file: Type.String({ minLength: 1, description: 'PEM private key of the default certificate' }),
    certificates: Type.Array(TlsCertificateSchema, {
      default: [],
      description:
        'more certificates chosen by SNI; clients naming none of their servernames get the default certificate',
    }),
    min_version: Type.Union(
      [Type.Literal('TLSv1.3'), Type.Literal('TLSv1.2'), Type.Literal('TLSv1.1'), Type.Literal('TLSv1')],
      {
        default: 'TLSv1.2',
        description: 'lowest protocol version accepted (below TLSv1.2 the security score fails)',
      },
    ),
    ciphers: Type.String({
      minLength: 1,
      default: DEFAULT_TLS_CIPHERS,
      description:
        'OpenSSL cipher list (TLS 1.3 suites and TLS 1.2 ciphers); the default is Mozilla intermediate: AEAD with forward secrecy only',
    }),
    session_timeout: Duration('5m', 'lifetime of TLS session tickets and cached sessions (resumption)'),
    handshake_timeout: Duration('10s', 'time a client has to complete the TLS handshake'),
    http2: Type.Boolean({
      default: true,
      description: 'offer HTTP/2 by ALPN (h2, then http/1.1); false: HTTP/1.1 only',
    }),
    max_concurrent_streams: Type.Integer({
      minimum: 1,
      maximum: 10000,
      default: 100,
      description:
        'HTTP/2 streams a client may have open at once on one connection; streams beyond are refused (REFUSED_STREAM)',
    }),
    idle_timeout: Duration('2m', 'HTTP/2: an idle connection is closed (GOAWAY) after this'),
  },
  {
    ...Strict,
    description: 'terminate TLS on the main listener (edge mode); absent = plain HTTP (sidecar mode)',
  },
);

/**
 * `listen.redirect`: a plain-HTTP listener answering every request with 308 to the https URL.
 * ```yaml
 * listen:
 *   redirect: { port: 80 }
 * ```
 */
export const RedirectSchema = Type.Object(
  {
    host: LISTEN_HOST('address of the redirect listener', '0.0.0.0'),
    port: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: 80,
      description: 'port of the redirect listener',
    }),
    https_port: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 65535,
        description:
          "port written in the Location (absent = the main listener's port; 443 is left out of the URL)",
      }),
    ),
    exempt_paths: Type.Array(Type.String({ pattern: '^/' }), {
      default: ['/healthz', '/api/health'],
      description: 'paths answered 200 {"status":"ok"} instead of redirected (load balancer health checks)',
    }),
  },
  { ...Strict, description: 'plain-HTTP listener that redirects to https (308); needs listen.tls' },
);

export const ListenSchema = Type.Object(
  {
    host: LISTEN_HOST('address of the main listener', '0.0.0.0'),
    port: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: 8080,
      description: 'port of the main listener (GATEWAY_PORT)',
    }),
    trusted_proxies: Type.Array(Type.String(), {
      default: [],
      description:
        'CIDRs of proxies in front of the gateway; for those peers the client IP is the right-most untrusted X-Forwarded-For entry',
    }),
    max_connections: Type.Integer({
      minimum: 1,
      default: 10000,
      description: 'most simultaneous client connections',
    }),
    max_header_size: Size('16KB', 'largest request head; 431 headers_too_large beyond'),
    max_headers: Type.Integer({
      minimum: 8,
      default: 100,
      description: 'most request header lines; 431 beyond',
    }),
    header_timeout: Duration('10s', 'time a client has to send the request head'),
    request_timeout: Duration('60s', 'time a client has to send the whole request (body included)'),
    keep_alive_timeout: Duration('5s', 'idle time before a keep-alive connection is closed'),
    max_requests_per_socket: Type.Integer({
      minimum: 0,
      default: 1000,
      description: 'requests per keep-alive connection (0 = unlimited)',
    }),
    shutdown_timeout: Duration('10s', 'how long in-flight requests may finish after SIGTERM'),
    tls: Type.Optional(TlsSchema),
    redirect: Type.Optional(RedirectSchema),
  },
  { ...Strict, default: {}, description: 'the main listener' },
);

export const AdminSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'serve the admin listener' }),
    host: LISTEN_HOST('address of the admin listener; keep it on loopback', '127.0.0.1'),
    port: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: 9901,
      description: 'port of the admin listener (GATEWAY_ADMIN_PORT)',
    }),
  },
  {
    ...Strict,
    default: {},
    description: 'the admin listener: /healthz, /readyz, /metrics, dashboard, decisions',
  },
);

export const UpstreamSchema = Type.Object(
  {
    url: Type.String({ default: 'http://127.0.0.1:9000', description: 'the receipt service (UPSTREAM_URL)' }),
    connections: Type.Integer({
      minimum: 1,
      default: 128,
      description: 'keep-alive connections in the pool',
    }),
    connect_timeout: Duration('2s', 'time to open a connection; 502 bad_gateway beyond'),
    response_timeout: Duration('30s', 'time until the upstream response head; 504 gateway_timeout beyond'),
    body_timeout: Duration('30s', 'idle time while the upstream response body streams'),
    keep_alive_timeout: Duration('4s', 'idle pooled connections are closed after this'),
  },
  { ...Strict, default: {}, description: 'where requests are forwarded' },
);

export const StoreSchema = Type.Object(
  {
    url: Type.String({ default: 'memory://', description: 'memory:// or redis://host:port/db (REDIS_URL)' }),
    max_keys: Type.Integer({
      minimum: 1000,
      default: 100000,
      description:
        'memory store: most entries kept of each kind, bounded apart: buckets and counters (least recently used evicted), blocks and leases (the one ending soonest evicted)',
    }),
    timeout: Duration(
      '250ms',
      'redis: longest wait for one operation before the policy fails open or closed',
    ),
    prefix: Type.String({ default: 'rgw:', description: 'redis: key prefix (namespace per deployment)' }),
  },
  { ...Strict, default: {}, description: 'state for rate limits, lockouts, bans and alert counters' },
);

export const AuditSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'write the audit log (AUDIT_LOG_ENABLED)' }),
    file: Type.String({
      default: 'logs/security_audit.log',
      description: 'audit log path, relative to the working directory (AUDIT_LOG_FILE)',
    }),
    access_sample_rate: Type.Number({
      minimum: 0,
      maximum: 1,
      default: 1,
      description: 'fraction of allowed requests written as api_access (security events are never sampled)',
    }),
  },
  { ...Strict, default: {}, description: 'the JSON-lines security audit log' },
);

const AlertThreshold = (count: number, window: string, what: string) =>
  Type.Object(
    {
      count: Type.Integer({
        minimum: 1,
        maximum: 1000,
        default: count,
        description: `${what} within the window that raise an alert`,
      }),
      window: Duration(window, 'the sliding window'),
    },
    { ...Strict, default: {} },
  );

export const MonitoringSchema = Type.Object(
  {
    enabled: Type.Boolean({
      default: true,
      description: 'alerts and the security score (SECURITY_MONITORING_ENABLED)',
    }),
    webhook_url: Type.String({
      default: '',
      description: 'POST alerts here (ALERT_WEBHOOK_URL); empty = off',
    }),
    webhook_timeout: Duration('5s', 'per webhook attempt'),
    webhook_retries: Type.Integer({
      minimum: 0,
      maximum: 10,
      default: 3,
      description: 'retries with backoff',
    }),
    webhook_queue: Type.Integer({
      minimum: 1,
      default: 100,
      description: 'alerts waiting to be sent; the oldest is dropped beyond',
    }),
    cooldown: Duration('5m', 'the same kind of alert is not raised again within this time'),
    thresholds: Type.Object(
      {
        failed_logins: AlertThreshold(10, '1h', 'failed logins'),
        suspicious_requests: AlertThreshold(5, '1h', 'blocked (suspicious) requests'),
        api_violations: AlertThreshold(3, '1h', '401/403 answers on API routes'),
      },
      { ...Strict, default: {} },
    ),
    decisions_kept: Type.Integer({
      minimum: 10,
      default: 2000,
      description: 'recent decisions kept for /api/decisions/{id}',
    }),
    replicas: Type.Integer({
      minimum: 1,
      default: 1,
      description: 'gateway replicas you run (the score warns about memory:// with more than one)',
    }),
  },
  { ...Strict, default: {}, description: 'alerts, security score, decision log' },
);

export const RequestIdSchema = Type.Object(
  {
    header: Type.String({ default: 'x-request-id', description: 'header carrying the request id' }),
    trust_incoming: Type.Boolean({
      default: true,
      description: 'keep a well-formed incoming id (printable, ≤ 128 chars)',
    }),
  },
  { ...Strict, default: {} },
);

/**
 * A route's override of a policy block: every key optional and without its default, so
 * that only what the route writes is merged over the global block.
 */
function overrideSchema(schema: TObject): TObject {
  const props: Record<string, TSchema> = {};
  for (const [k, v] of Object.entries(schema.properties)) {
    const { default: _unused, ...rest } = v as TSchema & { default?: unknown };
    props[k] = Type.Optional(rest as TSchema);
  }
  return Type.Object(props, { additionalProperties: false, description: schema.description });
}

/** `policies:`: one block per registered policy. */
export function policiesSchema(partial: boolean): TObject {
  const props: Record<string, TSchema> = {};
  for (const f of FACTORIES) {
    props[f.key] = partial ? Type.Optional(overrideSchema(f.schema)) : Type.Optional(f.schema);
  }
  return Type.Object(props, {
    ...Strict,
    default: {},
    description: 'policy defaults; routes override them key by key',
  });
}

export const METHOD_NAMES = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

export const RouteSchema = Type.Object(
  {
    name: Type.String({
      pattern: '^[a-z0-9][a-z0-9_.-]{0,63}$',
      description: 'unique route name; the `route` label of metrics',
    }),
    methods: Type.Optional(
      Type.Array(Type.Union(METHOD_NAMES.map((m) => Type.Literal(m))), {
        minItems: 1,
        description: 'methods this route accepts (absent = any); other methods get 405 with Allow',
      }),
    ),
    path: Type.String({
      pattern: '^/',
      description: 'path pattern: literal segments, `:name` or `*` for one segment, `**` (last) for any rest',
    }),
    listener: Type.Optional(
      Type.Union([Type.Literal('main'), Type.Literal('admin-api')], {
        description:
          'admin-api: answered by the gateway itself (the security health endpoint) after the route policies pass',
      }),
    ),
    strip_prefix: Type.Optional(
      Type.String({ pattern: '^/', description: 'remove this path prefix before forwarding' }),
    ),
    websocket: Type.Optional(
      Type.Boolean({
        description:
          'accept WebSocket upgrades (GET with Upgrade: websocket) on this route: they pass the request phase (auth, CORS, CSRF, rate limits, audit) and are then tunnelled to the upstream; absent/false: upgrades are refused (400)',
      }),
    ),
    policies: Type.Optional(policiesSchema(true)),
  },
  { ...Strict },
);

export function buildConfigSchema() {
  return Type.Object(
    {
      $schema: Type.Optional(Type.String()),
      listen: ListenSchema,
      admin: AdminSchema,
      upstream: UpstreamSchema,
      workers: Type.Integer({
        minimum: 1,
        maximum: 64,
        default: 1,
        description: 'worker processes (node:cluster); > 1 needs a redis store',
      }),
      store: StoreSchema,
      audit: AuditSchema,
      monitoring: MonitoringSchema,
      request_id: RequestIdSchema,
      policies: policiesSchema(false),
      routes: Type.Array(RouteSchema, {
        default: [],
        description: 'routes, first match wins; a request no route matches gets 404 not_found',
      }),
    },
    {
      ...Strict,
      $id: 'https://receipt-gateway.dev/schema/gateway.schema.json',
      title: 'receipt-gateway configuration (gateway.yaml)',
    },
  );
}

export const ConfigSchema = buildConfigSchema();
export type GatewayConfig = Static<typeof ConfigSchema> & {
  policies: Record<string, Record<string, unknown>>;
  routes: (Static<typeof RouteSchema> & { policies?: Record<string, Record<string, unknown>> })[];
};
