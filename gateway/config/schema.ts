import { Type, type TObject, type TSchema, type Static } from '@sinclair/typebox';
import { FACTORIES } from '../../policies/registry.js';
import { Duration, Size } from './policy-schema.js';

/**
 * The schema of gateway.yaml: the core sections declared here, plus one block per
 * policy taken from the registry (`policies.<key>` and `routes[].policies.<key>`).
 */

const Strict = { additionalProperties: false } as const;

export const ListenSchema = Type.Object(
  {
    host: Type.String({ default: '0.0.0.0', description: 'address of the main listener' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080, description: 'port of the main listener (GATEWAY_PORT)' }),
    trusted_proxies: Type.Array(Type.String(), {
      default: [],
      description:
        'CIDRs of proxies in front of the gateway; for those peers the client IP is the right-most untrusted X-Forwarded-For entry',
    }),
    max_connections: Type.Integer({ minimum: 1, default: 10000, description: 'most simultaneous client connections' }),
    max_header_size: Size('16KB', 'largest request head; 431 headers_too_large beyond'),
    max_headers: Type.Integer({ minimum: 8, default: 100, description: 'most request header lines; 431 beyond' }),
    header_timeout: Duration('10s', 'time a client has to send the request head'),
    request_timeout: Duration('60s', 'time a client has to send the whole request (body included)'),
    keep_alive_timeout: Duration('5s', 'idle time before a keep-alive connection is closed'),
    max_requests_per_socket: Type.Integer({ minimum: 0, default: 1000, description: 'requests per keep-alive connection (0 = unlimited)' }),
    shutdown_timeout: Duration('10s', 'how long in-flight requests may finish after SIGTERM'),
  },
  { ...Strict, default: {}, description: 'the main listener' },
);

export const AdminSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'serve the admin listener' }),
    host: Type.String({ default: '127.0.0.1', description: 'address of the admin listener; keep it on loopback' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 9901, description: 'port of the admin listener (GATEWAY_ADMIN_PORT)' }),
  },
  { ...Strict, default: {}, description: 'the admin listener: /healthz, /readyz, /metrics, dashboard, decisions' },
);

export const UpstreamSchema = Type.Object(
  {
    url: Type.String({ default: 'http://127.0.0.1:9000', description: 'the receipt service (UPSTREAM_URL)' }),
    connections: Type.Integer({ minimum: 1, default: 128, description: 'keep-alive connections in the pool' }),
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
    max_keys: Type.Integer({ minimum: 1000, default: 100000, description: 'memory store: most keys kept (least recent evicted)' }),
    timeout: Duration('250ms', 'redis: longest wait for one operation before the policy fails open or closed'),
    prefix: Type.String({ default: 'rgw:', description: 'redis: key prefix (namespace per deployment)' }),
  },
  { ...Strict, default: {}, description: 'state for rate limits, lockouts, bans and alert counters' },
);

export const AuditSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'write the audit log (AUDIT_LOG_ENABLED)' }),
    file: Type.String({ default: 'logs/security_audit.log', description: 'audit log path, relative to the working directory (AUDIT_LOG_FILE)' }),
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
      count: Type.Integer({ minimum: 1, default: count, description: `${what} within the window that raise an alert` }),
      window: Duration(window, 'the sliding window'),
    },
    { ...Strict, default: {} },
  );

export const MonitoringSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: true, description: 'alerts and the security score (SECURITY_MONITORING_ENABLED)' }),
    webhook_url: Type.String({ default: '', description: 'POST alerts here (ALERT_WEBHOOK_URL); empty = off' }),
    webhook_timeout: Duration('5s', 'per webhook attempt'),
    webhook_retries: Type.Integer({ minimum: 0, maximum: 10, default: 3, description: 'retries with backoff' }),
    webhook_queue: Type.Integer({ minimum: 1, default: 100, description: 'alerts waiting to be sent; the oldest is dropped beyond' }),
    cooldown: Duration('5m', 'the same kind of alert is not raised again within this time'),
    thresholds: Type.Object(
      {
        failed_logins: AlertThreshold(10, '1h', 'failed logins'),
        suspicious_requests: AlertThreshold(5, '1h', 'blocked (suspicious) requests'),
        api_violations: AlertThreshold(3, '1h', '401/403 answers on API routes'),
      },
      { ...Strict, default: {} },
    ),
    decisions_kept: Type.Integer({ minimum: 10, default: 2000, description: 'recent decisions kept for /api/decisions/{id}' }),
    replicas: Type.Integer({ minimum: 1, default: 1, description: 'gateway replicas you run (the score warns about memory:// with more than one)' }),
  },
  { ...Strict, default: {}, description: 'alerts, security score, decision log' },
);

export const RequestIdSchema = Type.Object(
  {
    header: Type.String({ default: 'x-request-id', description: 'header carrying the request id' }),
    trust_incoming: Type.Boolean({ default: true, description: 'keep a well-formed incoming id (printable, ≤ 128 chars)' }),
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
  return Type.Object(props, { ...Strict, default: {}, description: 'policy defaults; routes override them key by key' });
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
        description: 'admin-api: answered by the gateway itself (the security health endpoint) after the route policies pass',
      }),
    ),
    strip_prefix: Type.Optional(Type.String({ pattern: '^/', description: 'remove this path prefix before forwarding' })),
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
      workers: Type.Integer({ minimum: 1, maximum: 64, default: 1, description: 'worker processes (node:cluster); > 1 needs a redis store' }),
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
