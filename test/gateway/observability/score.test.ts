import t from 'tap';
import {
  securityScore,
  shannonEntropy,
  isLoopbackHost,
  SCORE_CHECK_IDS,
  type ScoreInput,
} from '../../../gateway/observability/score.js';

const STRONG = 'q8Zr3vN1xW6yT0bK2mC5hJ9pL4sD7fGa'; // 32 distinct characters

/** A configuration every check passes. */
const good = (): ScoreInput => ({
  jwtSecret: STRONG,
  jwtHasIssuer: true,
  jwtHasAudience: true,
  hsts: true,
  csp: true,
  corsWildcardWithCredentials: false,
  monitorPolicies: [],
  storeKind: 'redis',
  workers: 4,
  replicas: 3,
  auditEnabled: true,
  adminHost: '127.0.0.1',
  apiKeysWithoutRoles: 0,
  envApiKeyLength: 44,
  uploadGatingOn: true,
  patternBlockingOn: true,
  rateLimitOn: true,
  debugLogging: false,
  tls: { enabled: true, minVersion: 'TLSv1.2' },
  tlsCertificateDaysLeft: 60,
  hstsWithoutTls: false,
  monitoringOn: true,
  alertWebhookConfigured: true,
  loginProtectionOn: true,
  autoBanOn: true,
  trustedProxiesCatchAll: false,
  defaultDeny: true,
  failOpenPolicies: ['rate_limit'],
  storeConnectionProtected: true,
  accessSampleRate: 1,
});

const check = (input: ScoreInput, id: string) => securityScore(input).checks.find((c) => c.id === id);

t.test('a hardened configuration scores 100 with no recommendations', async (t) => {
  const r = securityScore(good());
  t.equal(r.score, 100);
  t.same(r.recommendations, []);
  t.same(
    r.checks.map((c) => c.id),
    SCORE_CHECK_IDS,
    'every check applies when every field is described',
  );
  for (const c of r.checks) {
    t.ok(c.weight > 0, `${c.id} weight`);
    t.ok(c.recommendation.length > 10, `${c.id} recommendation`);
    t.equal(c.pass, true, `${c.id} passes`);
  }
  t.notOk(JSON.stringify(r).includes(STRONG), 'the secret is never echoed');
});

t.test('the score is the weighted share of passing checks', async (t) => {
  const input = good();
  input.hsts = false;
  const r = securityScore(input);
  const total = r.checks.reduce((a, c) => a + c.weight, 0);
  const hsts = r.checks.find((c) => c.id === 'hsts')!;
  t.equal(hsts.pass, false);
  t.equal(r.score, Math.round((100 * (total - hsts.weight)) / total));
  t.same(r.recommendations, [hsts.recommendation]);
});

t.test('recommendations are ordered by weight', async (t) => {
  const input = good();
  input.debugLogging = true; // weight 3
  input.jwtSecret = 'short'; // length 10, entropy 8
  input.corsWildcardWithCredentials = true; // 8
  const r = securityScore(input);
  const failing = r.checks.filter((c) => !c.pass).sort((a, b) => b.weight - a.weight);
  t.same(
    r.recommendations,
    failing.map((c) => c.recommendation),
  );
  t.equal(failing[0]!.id, 'jwt_secret_length');
  t.equal(failing.at(-1)!.id, 'debug_logging');
});

t.test('secret strength: length and entropy', async (t) => {
  const s = (jwtSecret: string) => ({ ...good(), jwtSecret });
  t.equal(check(s('a'.repeat(31)), 'jwt_secret_length')!.pass, false);
  t.equal(check(s('x'.repeat(31)), 'jwt_secret_length')!.detail, '31 characters');
  t.equal(check(s('a'.repeat(64)), 'jwt_secret_length')!.pass, true, 'long enough…');
  t.equal(check(s('a'.repeat(64)), 'jwt_secret_entropy')!.pass, false, '…but no entropy');
  t.equal(check(s('ab'.repeat(32)), 'jwt_secret_entropy')!.pass, false, 'alternating: 1 bit/char');
  t.equal(check(s('ab'.repeat(32)), 'jwt_secret_entropy')!.detail, '1.00 bits/char, about 64 bits in all');
  t.equal(
    check(s('my-super-secret-jwt-key-for-prod-2024'), 'jwt_secret_entropy')!.pass,
    false,
    'placeholder word',
  );
  t.match(check(s('my-super-secret-jwt-key-for-prod-2024'), 'jwt_secret_entropy')!.detail, /placeholder/);
  t.equal(check(s(STRONG), 'jwt_secret_entropy')!.pass, true);
  t.equal(
    check(s('0f3a9c1e7b2d4f6a8c0e1b3d5f7a9c2e'), 'jwt_secret_entropy')!.pass,
    true,
    'random hex passes',
  );
  const jwks = { ...good(), jwtSecret: undefined, jwksUrl: 'https://idp.example/jwks.json' };
  t.equal(check(jwks, 'jwt_secret_length')!.pass, true, 'JWKS: no shared secret to judge');
  const noJwt = { ...good(), jwtSecret: undefined };
  t.equal(check(noJwt, 'jwt_secret_length'), undefined, 'no JWT auth: not applicable');
  t.equal(check(noJwt, 'jwt_audience'), undefined);
});

t.test('shannonEntropy', async (t) => {
  t.equal(shannonEntropy(''), 0);
  t.equal(shannonEntropy('aaaa'), 0);
  t.equal(shannonEntropy('abab'), 1);
  t.equal(shannonEntropy('abcd'), 2);
  t.equal(shannonEntropy('0123456789abcdef'), 4);
});

t.test('shared store: memory with several workers or replicas fails', async (t) => {
  const base = { ...good(), storeKind: 'memory' as const };
  t.equal(check({ ...base, workers: 1, replicas: 1 }, 'shared_store')!.pass, true);
  t.equal(check({ ...base, workers: 1, replicas: undefined }, 'shared_store')!.pass, true);
  t.equal(check({ ...base, workers: 2, replicas: 1 }, 'shared_store')!.pass, false);
  t.equal(check({ ...base, workers: 1, replicas: 3 }, 'shared_store')!.pass, false);
  t.equal(
    check({ ...base, workers: 1, replicas: 3 }, 'shared_store')!.detail,
    'memory store, 1 worker(s), 3 replica(s)',
  );
  t.equal(check({ ...base, storeKind: 'redis', workers: 8 }, 'shared_store')!.pass, true);
  t.equal(check(base, 'store_connection'), undefined, 'redis connection check only with redis');
});

t.test('admin listener address', async (t) => {
  for (const h of ['127.0.0.1', '127.0.0.53', 'localhost', '::1', '[::1]'])
    t.equal(isLoopbackHost(h), true, h);
  for (const h of ['0.0.0.0', '::', '10.0.0.5', 'admin.example.com', '128.0.0.1'])
    t.equal(isLoopbackHost(h), false, h);
  const c = check({ ...good(), adminHost: '0.0.0.0' }, 'admin_loopback')!;
  t.equal(c.pass, false);
  t.equal(c.detail, 'bound to 0.0.0.0');
});

t.test('each boolean check fails on the insecure value', async (t) => {
  const cases: [string, Partial<ScoreInput>][] = [
    ['jwt_issuer', { jwtHasIssuer: false }],
    ['jwt_audience', { jwtHasAudience: false }],
    ['hsts', { hsts: false }],
    ['csp', { csp: false }],
    ['cors_wildcard_credentials', { corsWildcardWithCredentials: true }],
    ['monitor_mode', { monitorPolicies: ['pattern_block', 'cors', 'pattern_block'] }],
    ['audit_log', { auditEnabled: false }],
    ['api_key_roles', { apiKeysWithoutRoles: 2 }],
    ['api_key_length', { envApiKeyLength: 31 }],
    ['upload_gating', { uploadGatingOn: false }],
    ['pattern_blocking', { patternBlockingOn: false }],
    ['rate_limit', { rateLimitOn: false }],
    ['login_protection', { loginProtectionOn: false }],
    ['auto_ban', { autoBanOn: false }],
    ['default_deny', { defaultDeny: false }],
    ['trusted_proxies', { trustedProxiesCatchAll: true }],
    ['fail_open', { failOpenPolicies: ['rate_limit', 'login_lockout'] }],
    ['store_connection', { storeConnectionProtected: false }],
    ['audit_access_sampling', { accessSampleRate: 0.01 }],
    ['tls', { tls: { enabled: false } }],
    ['tls', { tls: { enabled: true, minVersion: 'TLSv1.1' } }],
    ['tls_certificate_expiry', { tlsCertificateDaysLeft: 13.5 }],
    ['tls_certificate_expiry', { tlsCertificateDaysLeft: -1 }],
    ['hsts_without_tls', { hstsWithoutTls: true }],
    ['monitoring', { monitoringOn: false }],
    ['alert_webhook', { alertWebhookConfigured: false }],
    ['debug_logging', { debugLogging: true }],
  ];
  for (const [id, patch] of cases) {
    const r = securityScore({ ...good(), ...patch });
    const c = r.checks.find((x) => x.id === id)!;
    t.equal(c.pass, false, `${id} fails with ${JSON.stringify(patch)}`);
    t.ok(r.score < 100, `${id} lowers the score`);
    t.ok(r.recommendations.includes(c.recommendation), `${id} recommends`);
  }
  t.equal(
    check({ ...good(), monitorPolicies: ['pattern_block', 'cors', 'pattern_block'] }, 'monitor_mode')!.detail,
    'monitor mode: cors, pattern_block',
  );
  t.equal(check({ ...good(), tls: { enabled: true, minVersion: 'TLSv1.3' } }, 'tls')!.pass, true);
  t.equal(
    check({ ...good(), tlsCertificateDaysLeft: 20.7 }, 'tls_certificate_expiry')!.detail,
    'expires in 20 day(s)',
  );
  t.equal(check({ ...good(), tlsCertificateDaysLeft: -0.5 }, 'tls_certificate_expiry')!.detail, 'expired');
  t.equal(
    check({ ...good(), monitoringOn: false }, 'alert_webhook'),
    undefined,
    'no webhook check without monitoring',
  );
});

t.test('optional fields left out are not applicable and cost nothing', async (t) => {
  const minimal: ScoreInput = {
    jwtHasIssuer: false,
    jwtHasAudience: false,
    hsts: true,
    csp: true,
    corsWildcardWithCredentials: false,
    monitorPolicies: [],
    storeKind: 'memory',
    workers: 1,
    auditEnabled: true,
    adminHost: '127.0.0.1',
    apiKeysWithoutRoles: 0,
    uploadGatingOn: true,
    patternBlockingOn: true,
    rateLimitOn: true,
    debugLogging: false,
  };
  const r = securityScore(minimal);
  t.equal(r.score, 100);
  t.same(
    r.checks.map((c) => c.id),
    [
      'hsts',
      'csp',
      'cors_wildcard_credentials',
      'monitor_mode',
      'shared_store',
      'audit_log',
      'admin_loopback',
      'api_key_roles',
      'upload_gating',
      'pattern_blocking',
      'rate_limit',
      'debug_logging',
    ],
  );
});

t.test('the seed-like demo config: short secret, memory store with 2 workers, monitor policy', async (t) => {
  const r = securityScore({
    ...good(),
    jwtSecret: 'dev-secret',
    storeKind: 'memory',
    workers: 2,
    replicas: undefined,
    monitorPolicies: ['user_agent'],
    jwtHasAudience: false,
  });
  t.same(
    r.checks.filter((c) => !c.pass).map((c) => c.id),
    ['jwt_secret_length', 'jwt_secret_entropy', 'jwt_audience', 'monitor_mode', 'shared_store'],
  );
  const total = r.checks.reduce((a, c) => a + c.weight, 0);
  t.equal(r.score, Math.round((100 * (total - 10 - 8 - 4 - 6 - 7)) / total));
});
