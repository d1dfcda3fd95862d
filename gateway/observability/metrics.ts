import client from 'prom-client';

const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Every metric of SPEC section 7, on one registry per process. Labels carry only
 * bounded values: route names from the config, fixed reason sets, status codes.
 * With `workers: N` the registries are merged for /metrics (gateway/cluster.ts): counters
 * and histograms summed, each gauge by its `aggregator`.
 */
export class Metrics {
  readonly registry: client.Registry;
  readonly requests: client.Counter<'route' | 'method' | 'code' | 'decision'>;
  readonly requestDuration: client.Histogram<'route'>;
  readonly upstreamDuration: client.Histogram<'route'>;
  readonly blocked: client.Counter<'reason'>;
  readonly rateLimited: client.Counter<'rule'>;
  readonly authFailures: client.Counter<'method' | 'reason'>;
  readonly loginFailures: client.Counter;
  readonly accountLockouts: client.Counter;
  readonly ipBans: client.Counter;
  readonly uploadRejections: client.Counter<'reason'>;
  readonly auditEvents: client.Counter<'event'>;
  readonly securityAlerts: client.Counter<'kind'>;
  readonly securityScore: client.Gauge;
  readonly configReloads: client.Counter<'result'>;
  readonly storeErrors: client.Counter<'store'>;
  readonly auditWriteErrors: client.Counter;
  readonly upstreamErrors: client.Counter<'route' | 'kind'>;
  readonly policyErrors: client.Counter<'policy'>;
  readonly openConnections: client.Gauge;
  readonly tlsReloads: client.Counter<'result'>;
  readonly tlsCertificateExpiry: client.Gauge<'certificate'>;
  readonly websocketTunnels: client.Gauge;
  readonly http2Refusals: client.Counter<'action'>;
  /** set by the TLS manager: seconds until each certificate expires, read at every scrape */
  tlsExpirySource: (() => Iterable<[string, number]>) | undefined;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [(this.registry = new client.Registry())];
    if (opts.defaultMetrics !== false) client.collectDefaultMetrics({ register: this.registry });
    const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
      new client.Counter<L>({ name, help, labelNames, registers });
    this.requests = counter(
      'gateway_requests_total',
      'Requests handled, by route, method, status and decision',
      ['route', 'method', 'code', 'decision'],
    );
    this.requestDuration = new client.Histogram({
      name: 'gateway_request_duration_seconds',
      help: 'Time from request arrival to the end of the response, by route',
      labelNames: ['route'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.upstreamDuration = new client.Histogram({
      name: 'gateway_upstream_duration_seconds',
      help: 'Time the upstream took to answer (response head), by route',
      labelNames: ['route'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.blocked = counter('gateway_blocked_requests_total', 'Requests refused by the gateway, by reason', [
      'reason',
    ]);
    this.rateLimited = counter('gateway_rate_limited_total', 'Requests refused by a rate-limit rule', [
      'rule',
    ]);
    this.authFailures = counter(
      'gateway_auth_failures_total',
      'Authentication failures, by method and reason',
      ['method', 'reason'],
    );
    this.loginFailures = counter('gateway_login_failures_total', 'Failed logins seen on the login route');
    this.accountLockouts = counter(
      'gateway_account_lockouts_total',
      'Accounts (or IPs) locked after failed logins',
    );
    this.ipBans = counter('gateway_ip_bans_total', 'Client IPs banned automatically');
    this.uploadRejections = counter('gateway_upload_rejections_total', 'Uploads rejected, by failed check', [
      'reason',
    ]);
    this.auditEvents = counter('gateway_audit_events_total', 'Audit events written, by event', ['event']);
    this.http2Refusals = counter(
      'gateway_http2_refusals_total',
      'HTTP/2 streams refused beyond max_concurrent_streams (refused_stream) and sessions torn down for them (goaway: rapid reset)',
      ['action'],
    );
    this.securityAlerts = counter('gateway_security_alerts_total', 'Security alerts raised, by kind', [
      'kind',
    ]);
    this.securityScore = new client.Gauge({
      name: 'gateway_security_score',
      help: 'Security health score of the running configuration (0-100)',
      // workers: the lowest (a worker whose reload failed runs an older configuration)
      aggregator: 'min',
      registers,
    });
    this.configReloads = counter('gateway_config_reloads_total', 'Configuration reloads, by result', [
      'result',
    ]);
    this.storeErrors = counter('gateway_store_errors_total', 'State store operations that failed, by store', [
      'store',
    ]);
    this.auditWriteErrors = counter(
      'gateway_audit_write_errors_total',
      'Audit lines that could not be written',
    );
    this.upstreamErrors = counter('gateway_upstream_errors_total', 'Upstream failures, by route and kind', [
      'route',
      'kind',
    ]);
    this.policyErrors = counter('gateway_policy_errors_total', 'Policy hooks that threw, by policy', [
      'policy',
    ]);
    this.openConnections = new client.Gauge({
      name: 'gateway_open_connections',
      help: 'Client connections currently open on the main listener',
      aggregator: 'sum',
      registers,
    });
    this.tlsReloads = counter(
      'gateway_tls_reloads_total',
      'TLS certificate reloads after a file change, by result (error: the old certificate keeps serving)',
      ['result'],
    );
    const source = () => this.tlsExpirySource;
    this.tlsCertificateExpiry = new client.Gauge({
      name: 'gateway_tls_certificate_expiry_seconds',
      help: 'Seconds until each served TLS certificate expires (default, or the first SNI name)',
      labelNames: ['certificate'],
      // workers: the soonest (a worker whose certificate reload failed serves the older one)
      aggregator: 'min',
      registers,
      collect() {
        const read = source();
        this.reset();
        if (read === undefined) return;
        for (const [certificate, seconds] of read()) this.set({ certificate }, seconds);
      },
    });
    this.websocketTunnels = new client.Gauge({
      name: 'gateway_websocket_tunnels',
      help: 'WebSocket tunnels currently open between clients and the upstream',
      aggregator: 'sum',
      registers,
    });
  }
}
