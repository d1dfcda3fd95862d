import os from 'node:os';
import type { Gateway, RestartBound } from '../server.js';
import type { Generation } from '../config/compile.js';
import { restartBoundOf } from '../config/restart-bound.js';
import { createAlerts, type Alerts, type AlertKind } from './alerts.js';
import { createDecisionLog, type DecisionLog } from './decisions.js';
import { createDashboardRoutes, configSummary } from '../admin/routes.js';
import type { DashboardPart } from '../admin/dashboard-api.js';
import { securityScore, weakestSecret, type ScoreInput } from './score.js';
import { parseDuration } from '../config/units.js';
import { isLoopbackHost } from './score.js';
import { authReadiness } from '../../policies/auth/index.js';
import type { TlsSettings } from '../tls.js';
import type { RequestContext } from '../context.js';

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});

/** Every effective block of a policy key: the global one and each route's merged override. */
function blocks(gen: Generation, key: string): Obj[] {
  const global = obj(gen.config.policies[key]);
  const out = [global];
  for (const r of gen.config.routes) {
    const o = r.policies?.[key];
    if (o !== undefined) out.push({ ...global, ...obj(o) });
  }
  return out;
}

const on = (b: Obj) => b.enabled !== false;

/**
 * Describe the running configuration for the security score. Whether the main listener
 * speaks TLS is fixed at start (`running`); `served` is what a TLS listener serves now
 * (certificates, minimum version: they follow reloads and certificate rotation, the
 * gateway passes its TlsManager's current settings).
 */
export function scoreInput(
  gen: Generation,
  env: Readonly<Record<string, string | undefined>>,
  running: RestartBound = restartBoundOf(gen),
  served: TlsSettings | undefined = gen.listen.tls,
): ScoreInput {
  const cfg = gen.config;
  const storeUrl = running.storeUrl;
  const auth = blocks(gen, 'auth').filter(on);
  const jwt = jwtFacts(auth);
  const headers = obj(gen.config.policies.security_headers);
  const headerMap = { ...obj(headers.headers), ...obj(headers.extra) } as Record<string, unknown>;
  const hasHeader = (name: string) =>
    on(headers) &&
    Object.entries(headerMap).some(([k, v]) => k.toLowerCase() === name && typeof v === 'string' && v !== '');
  // HSTS that counts: `max-age=0` (or none) tells browsers to forget it, as good as not sending it
  const hsts =
    on(headers) &&
    Object.entries(headerMap).some(
      ([k, v]) =>
        k.toLowerCase() === 'strict-transport-security' && typeof v === 'string' && hstsMaxAge(v) > 0,
    );
  const corsBlocks = blocks(gen, 'cors').filter(on);
  const corsWildcard = corsBlocks.some((b) => {
    const origins = Array.isArray(b.origins) ? b.origins : String(b.origins ?? '').split(',');
    return origins.map((o) => String(o).trim()).includes('*') && b.allow_credentials === true;
  });
  const monitor = new Set(gen.allPolicies.filter((p) => p.mode === 'monitor').map((p) => p.name));
  // parts of an enforcing policy that only monitor: rule packs, the upload gate's active-content check
  for (const b of blocks(gen, 'pattern_block').filter(on))
    for (const [pack, mode] of Object.entries(obj(b.packs)))
      if (mode === 'monitor') monitor.add(`pattern-block (pack ${pack})`);
  for (const b of blocks(gen, 'upload_gate').filter(on))
    if (b.active_content === 'monitor') monitor.add('upload-gate (active_content)');
  const keys = auth.flatMap((b) =>
    Array.isArray(obj(b.api_keys).keys) ? (obj(b.api_keys).keys as Obj[]) : [],
  );
  // API_KEY (`api_keys.env_key`) where an enabled auth block accepts API keys
  const envKeys = auth
    .filter((b) => !Array.isArray(b.require) || b.require.includes('api_key'))
    .map((b) => obj(b.api_keys).env_key)
    .filter((k): k is string => typeof k === 'string' && k !== '');
  const uploadRoutes = cfg.routes.filter((r) => /upload/.test(r.path));
  const uploadOn = uploadRoutes.every((r) =>
    on({ ...obj(cfg.policies.upload_gate), ...obj(r.policies?.upload_gate) }),
  );
  const proxiesCatchAll = cfg.listen.trusted_proxies.some((c) => c === '0.0.0.0/0' || c === '::/0');
  const failOpen = ['rate_limit', 'login_lockout', 'ip_ban']
    .filter((k) =>
      blocks(gen, k).some(
        (b) =>
          on(b) &&
          (b.failure === 'open' ||
            b.fail === 'open' ||
            (k === 'rate_limit' &&
              (b.default_fail === 'open' ||
                (Array.isArray(b.rules) && (b.rules as Obj[]).some((r) => r.fail === 'open'))))),
      ),
    )
    .map((k) => k);
  const secret = weakestSecret(jwt.secrets);
  return {
    ...(secret !== undefined ? { jwtSecret: secret } : {}),
    ...(jwt.jwksUrl !== undefined ? { jwksUrl: jwt.jwksUrl } : {}),
    ...(jwt.publicKeys ? { jwtPublicKeys: true } : {}),
    jwtHasIssuer: jwt.issuer,
    jwtHasAudience: jwt.audience,
    hsts,
    csp: hasHeader('content-security-policy'),
    corsWildcardWithCredentials: corsWildcard,
    monitorPolicies: [...monitor],
    storeKind: storeUrl.startsWith('memory:') ? 'memory' : 'redis',
    workers: running.workers,
    replicas: cfg.monitoring.replicas,
    auditEnabled: running.audit.enabled,
    adminHost: running.admin.host,
    ...(envKeys.length > 0 ? { envApiKeyLength: Math.min(...envKeys.map((k) => k.length)) } : {}),
    apiKeysWithoutRoles: keys.filter((k) => !Array.isArray(k.roles) || k.roles.length === 0).length,
    uploadGatingOn: uploadRoutes.length === 0 || uploadOn,
    patternBlockingOn: blocks(gen, 'pattern_block').some(on),
    rateLimitOn: blocks(gen, 'rate_limit').some(on),
    debugLogging: /^(debug|trace)$/i.test(env.LOG_LEVEL ?? ''),
    monitoringOn: cfg.monitoring.enabled,
    alertWebhookConfigured: cfg.monitoring.webhook_url !== '',
    loginProtectionOn: blocks(gen, 'login_lockout').some(on),
    autoBanOn: blocks(gen, 'ip_ban').some(on),
    trustedProxiesCatchAll: proxiesCatchAll,
    defaultDeny: true,
    failOpenPolicies: failOpen,
    storeConnectionProtected:
      storeUrl.startsWith('rediss:') || storeUrl.startsWith('memory:') || isLoopbackHost(hostOf(storeUrl)),
    accessSampleRate: running.audit.accessSampleRate,
    ...tlsFacts(gen, running, running.listen.tls ? served : undefined, hsts),
  };
}

/** The `max-age` of a Strict-Transport-Security value (RFC 6797 §6.1.1), 0 when it has none. */
function hstsMaxAge(value: string): number {
  const m = /(?:^|;)\s*max-age\s*=\s*"?(\d+)"?\s*(?:;|$)/i.exec(value);
  return m === null ? 0 : Number(m[1]);
}

const nonEmpty = (v: unknown): boolean =>
  (typeof v === 'string' && v.trim() !== '') ||
  (Array.isArray(v) && v.some((x) => typeof x === 'string' && x.trim() !== ''));

/**
 * JWT verification as every enabled auth block that accepts JWTs does it (the global block
 * and each route's; a route's `jwt` replaces the global one): the shared secrets in use (an
 * HS* algorithm pinned, or no public keys), whether public keys verify tokens anywhere, and
 * whether every block checks `iss` and `aud`.
 */
function jwtFacts(auth: Obj[]): {
  secrets: string[];
  jwksUrl: string | undefined;
  publicKeys: boolean;
  issuer: boolean;
  audience: boolean;
} {
  const out = { secrets: [] as string[], jwksUrl: undefined as string | undefined, publicKeys: false };
  let issuer = true;
  let audience = true;
  for (const b of auth) {
    const require = Array.isArray(b.require) ? b.require : ['jwt', 'api_key'];
    if (!require.includes('jwt')) continue;
    const jwt = obj(b.jwt);
    const jwksUrl = typeof jwt.jwks_url === 'string' ? jwt.jwks_url.trim() : '';
    const hasKeys = jwksUrl !== '' || (Array.isArray(jwt.public_keys) && jwt.public_keys.length > 0);
    const algorithms =
      Array.isArray(jwt.algorithms) && jwt.algorithms.length > 0 ? jwt.algorithms.map(String) : [];
    // as the auth policy picks them: pinned, else HS256 without keys and asymmetric with keys
    const hmac = algorithms.length > 0 ? algorithms.some((a) => a.startsWith('HS')) : !hasKeys;
    const asymmetric = algorithms.length > 0 ? algorithms.some((a) => !a.startsWith('HS')) : hasKeys;
    if (hmac && typeof jwt.secret === 'string' && jwt.secret !== '') out.secrets.push(jwt.secret);
    if (asymmetric && hasKeys) {
      out.publicKeys = true;
      if (jwksUrl !== '') out.jwksUrl ??= jwksUrl;
    }
    issuer &&= nonEmpty(jwt.issuer);
    audience &&= nonEmpty(jwt.audience);
  }
  const any = out.secrets.length > 0 || out.publicKeys;
  return { ...out, issuer: any && issuer, audience: any && audience };
}

/** Loopback, RFC 1918, CGNAT, unique-local and link-local addresses (not reachable from the internet). */
function isPrivateAddress(host: string): boolean {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, '');
  if (isLoopbackHost(h)) return true;
  const v4 = /^(\d{1,3})\.(\d{1,3})\.\d{1,3}\.\d{1,3}$/.exec(h);
  if (v4 !== null) {
    const a = Number(v4[1]);
    const b = Number(v4[2]);
    return (
      a === 10 ||
      (a === 172 && b >= 16 && b <= 31) ||
      (a === 192 && b === 168) ||
      (a === 100 && b >= 64 && b <= 127) ||
      (a === 169 && b === 254)
    );
  }
  return /^f[cd][0-9a-f]{2}:/.test(h) || /^fe[89ab][0-9a-f]:/.test(h);
}

/**
 * What the score knows about TLS: terminated here (minimum version, days left on the
 * earliest-expiring certificate), or plain HTTP on a public address with no TLS proxy
 * declared in front (fails the tls check; HSTS sent there is ignored by browsers). A
 * plain listener on a private or loopback address (the sidecar) is not judged.
 */
function tlsFacts(
  gen: Generation,
  running: RestartBound,
  t: TlsSettings | undefined,
  hsts: boolean,
): Pick<ScoreInput, 'tls' | 'tlsCertificateDaysLeft' | 'hstsWithoutTls'> {
  if (t !== undefined) {
    const earliest = Math.min(...t.certificates.map((c) => c.notAfter));
    return {
      tls: { enabled: true, minVersion: t.minVersion },
      tlsCertificateDaysLeft: (earliest - Date.now()) / 86_400_000,
      hstsWithoutTls: false,
    };
  }
  // the address is the one listened on; trusted_proxies follows reloads
  const publicPlain =
    !isPrivateAddress(running.listen.host) && gen.config.listen.trusted_proxies.length === 0;
  if (!publicPlain) return {};
  return { tls: { enabled: false }, hstsWithoutTls: hsts };
}

function hostOf(url: string): string {
  try {
    return new URL(url).hostname;
  } catch {
    return '';
  }
}

/**
 * Audit events that feed each alert kind. API violations are judged on the path the request
 * was routed by (`//api/x`, `/./api/x` and `/%61pi/x` reach the same routes as `/api/x`), not
 * on the target as received.
 */
function alertKind(line: Record<string, unknown>, ctx?: RequestContext): AlertKind | undefined {
  const event = line.event;
  if (event === 'login_failure') return 'failed_logins';
  if (event === 'request_blocked' || event === 'upload_rejected')
    return line.decision === 'deny' ? 'suspicious_requests' : undefined;
  if ((event === 'auth_failure' || event === 'access_denied') && line.decision === 'deny') {
    const status = line.status;
    const path = ctx?.path ?? String(line.path ?? '');
    if ((status === 401 || status === 403) && path.startsWith('/api/')) return 'api_violations';
  }
  return undefined;
}

export interface ObservabilityHandle {
  readonly decisions: DecisionLog;
  /** this process's dashboard figures (what a cluster worker sends for `/api/dashboard`) */
  dashboardPart(): Promise<DashboardPart>;
  /** the alert engine of the running settings (a reload that changes them replaces it); undefined while monitoring is off */
  readonly alerts: Alerts | undefined;
}

/**
 * Attach the observability layer to a running gateway: decision log, alerts from audit
 * events, security score (recomputed on every reload), admin routes. `peerDecision` is asked
 * for a decision this process does not have (cluster workers: the other workers);
 * `peerDashboard` for the dashboard's figures (cluster workers: every worker's, merged).
 */
export async function attachObservability(
  gw: Gateway,
  opts: {
    peerDecision?: (requestId: string) => Promise<unknown>;
    peerDashboard?: () => Promise<DashboardPart>;
  } = {},
): Promise<ObservabilityHandle> {
  const cfg = gw.generation.config;
  const env = gw.services.env;
  const decisions = createDecisionLog({ size: cfg.monitoring.decisions_kept });
  let alerts: Alerts | undefined;
  /** the settings `alerts` was made with; '' while monitoring is off */
  let alertSettings = '';
  /** engines replaced by a reload, still delivering what they hold */
  const retiring = new Set<Promise<void>>();
  /** A reload that changes the alert settings (or turns monitoring on or off) applies them. */
  const applyAlerts = (m: Generation['config']['monitoring']) => {
    const settings = m.enabled
      ? JSON.stringify([
          m.webhook_url,
          m.webhook_timeout,
          m.webhook_retries,
          m.webhook_queue,
          m.cooldown,
          m.thresholds,
        ])
      : '';
    if (settings === alertSettings) return;
    const next =
      settings === ''
        ? undefined
        : createAlerts({
            store: gw.store,
            audit: gw.audit,
            metrics: gw.metrics,
            log: gw.services.log,
            now: gw.services.now,
            ...(m.webhook_url !== '' ? { webhookUrl: m.webhook_url } : {}),
            thresholds: m.thresholds,
            cooldown: parseDuration(m.cooldown),
            webhook: {
              timeout: parseDuration(m.webhook_timeout),
              retries: m.webhook_retries,
              queueSize: m.webhook_queue,
            },
            instance: os.hostname(),
          });
    const old = alerts;
    alerts = next;
    alertSettings = settings;
    // The counts and cooldowns live in the store and carry over; the old engine delivers
    // the alerts it still holds (within one webhook timeout) to the webhook it was made for.
    if (old !== undefined) {
      const closing = old.close().finally(() => retiring.delete(closing));
      retiring.add(closing);
    }
  };
  let report: ReturnType<typeof securityScore> | undefined;
  const o = gw.observers;
  // TLS as the listener serves it (certificates, version) with the rest of the generation
  const rescore = (gen: Generation) => {
    report = securityScore(scoreInput(gen, env, gw.running, gw.tls?.current));
    gw.metrics.securityScore.set(report.score);
  };
  o.onGeneration = (gen) => {
    applyAlerts(gen.config.monitoring);
    rescore(gen);
  };
  // a rotated certificate file changes the days left without a new generation
  if (gw.tls !== undefined) gw.tls.onRotated = () => rescore(gw.generation);
  o.onGeneration(gw.generation);
  o.readiness = async () => authReadiness(gw.services).reasons;
  o.securityHealth = () => (gw.generation.config.monitoring.enabled ? report : undefined);
  o.onAudit = (line, ctx) => {
    if (alerts === undefined) return;
    const kind = alertKind(line, ctx);
    if (kind !== undefined) alerts.record(kind, String(line.client_ip ?? 'unknown'));
  };
  o.onDecision = (ctx, outcome, seconds) => {
    const scoreDetail = ctx.trace.find((t) => t.detail && typeof t.detail.score === 'number')?.detail
      ?.score as number | undefined;
    decisions.recordContext(ctx, {
      status: outcome.status,
      decision: outcome.decision,
      ...(outcome.deny ? { code: outcome.deny.code } : {}),
      ...(scoreDetail !== undefined ? { score: scoreDetail } : {}),
      totalMs: seconds * 1000,
    });
  };
  const routes = createDashboardRoutes({
    metrics: gw.metrics,
    store: gw.store,
    decisions,
    ...(opts.peerDecision !== undefined ? { peerDecision: opts.peerDecision } : {}),
    ...(opts.peerDashboard !== undefined ? { peerDashboard: opts.peerDashboard } : {}),
    score: () => (gw.generation.config.monitoring.enabled ? report : undefined),
    config: () => configSummary(gw.generation, gw.running),
    reloads: () => gw.reloads,
  });
  // GET /, /api/dashboard and /api/decisions/{id} on the admin listener
  o.adminRoute = routes.handle;
  const previousClose = o.close;
  o.close = async () => {
    routes.close();
    await alerts?.close();
    await Promise.allSettled([...retiring]);
    await previousClose?.();
  };
  return {
    decisions,
    dashboardPart: routes.part,
    get alerts() {
      return alerts;
    },
  };
}
