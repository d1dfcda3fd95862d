import t from 'tap';
import net from 'node:net';
import { startHarness, type Harness } from '../helpers/harness.js';
import { rawExchange, head } from '../helpers/raw-http.js';
import { Gateway } from '../../gateway/server.js';
import { silentLogger } from '../../gateway/observability/ops-log.js';

/** The admin listener: health, readiness, metrics, the security health report (and its main-listener route). */

function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== '{' && rest[0] !== ' ') continue;
    const got: Record<string, string> = {};
    if (rest[0] === '{')
      for (const m of rest.slice(1, rest.indexOf('}')).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
        got[m[1]!] = m[2]!;
    if (Object.entries(labels).every(([k, v]) => got[k] === v))
      return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

let h: Harness;
t.before(async () => {
  h = await startHarness();
});
t.teardown(() => h.close());

t.test('the admin listener is on loopback', async (t) => {
  t.match(h.adminUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
});

t.test('/healthz: 200 while the process serves', async (t) => {
  const r = await fetch(`${h.adminUrl}/healthz`);
  t.equal(r.status, 200);
  t.same(await r.json(), { status: 'ok' });
  t.equal(r.headers.get('cache-control'), 'no-store');
});

t.test('/readyz: 200 with the config generation when the upstream answers', async (t) => {
  const r = await fetch(`${h.adminUrl}/readyz`);
  t.equal(r.status, 200);
  const body = (await r.json()) as { status: string; generation: number; reasons: string[] };
  t.equal(body.status, 'ready');
  t.equal(body.generation, h.gateway.generation.id);
  t.same(body.reasons, []);
});

t.test('/readyz: 503 with the reason when the upstream is down', async (t) => {
  const hh = await startHarness({ upstreamUrl: `http://127.0.0.1:${await deadPort()}` });
  t.teardown(() => hh.close());
  const r = await fetch(`${hh.adminUrl}/readyz`);
  t.equal(r.status, 503);
  const body = (await r.json()) as { status: string; reasons: string[] };
  t.equal(body.status, 'not_ready');
  t.same(body.reasons, ['upstream unreachable (ECONNREFUSED)']);
  const live = await fetch(`${hh.adminUrl}/healthz`);
  t.equal(live.status, 200, 'still alive, only not ready');
});

t.test('/metrics: request, blocked, duration metrics with bounded labels after traffic', async (t) => {
  const token = await h.login();
  for (let i = 0; i < 3; i++) await (await fetch(`${h.url}/api/health`)).arrayBuffer();
  await (
    await fetch(`${h.url}/api/receipts`, { headers: { authorization: `Bearer ${token}` } })
  ).arrayBuffer();
  await (await fetch(`${h.url}/nope/${Math.random()}`)).arrayBuffer();
  await (await fetch(`${h.url}/api/receipts`)).arrayBuffer();
  await (await fetch(`${h.url}/api/health`, { headers: { 'user-agent': 'sqlmap/1.7' } })).arrayBuffer();
  const r = await fetch(`${h.adminUrl}/metrics`);
  t.equal(r.status, 200);
  t.match(r.headers.get('content-type'), /^text\/plain/);
  t.equal(r.headers.get('x-content-type-options'), 'nosniff', 'a browser does not sniff it as HTML');
  const m = await r.text();
  t.equal(
    metricValue(m, 'gateway_requests_total', {
      route: 'health',
      method: 'GET',
      code: '200',
      decision: 'allow',
    }),
    3,
  );
  t.equal(
    metricValue(m, 'gateway_requests_total', { route: 'api', method: 'GET', code: '200', decision: 'allow' }),
    1,
  );
  t.equal(
    metricValue(m, 'gateway_requests_total', {
      route: 'unmatched',
      method: 'GET',
      code: '404',
      decision: 'deny',
    }),
    1,
  );
  t.equal(
    metricValue(m, 'gateway_requests_total', { route: 'api', method: 'GET', code: '401', decision: 'deny' }),
    1,
  );
  t.equal(
    metricValue(m, 'gateway_requests_total', {
      route: 'health',
      method: 'GET',
      code: '403',
      decision: 'deny',
    }),
    1,
  );
  t.equal(metricValue(m, 'gateway_blocked_requests_total', { reason: 'not_found' }), 1);
  t.equal(metricValue(m, 'gateway_blocked_requests_total', { reason: 'auth' }), 1);
  t.equal(metricValue(m, 'gateway_blocked_requests_total', { reason: 'scanner' }), 1);
  t.equal(metricValue(m, 'gateway_request_duration_seconds_count', { route: 'health' }), 4);
  t.equal(metricValue(m, 'gateway_request_duration_seconds_bucket', { route: 'health', le: '+Inf' }), 4);
  t.equal(
    metricValue(m, 'gateway_upstream_duration_seconds_count', { route: 'health' }),
    3,
    'only forwarded requests',
  );
  t.equal(metricValue(m, 'gateway_upstream_duration_seconds_count', { route: 'api' }), 1);
  t.ok(metricValue(m, 'gateway_audit_events_total', { event: 'access_denied' })! >= 1);
  for (const name of [
    'gateway_rate_limited_total',
    'gateway_auth_failures_total',
    'gateway_login_failures_total',
    'gateway_account_lockouts_total',
    'gateway_ip_bans_total',
    'gateway_upload_rejections_total',
    'gateway_security_alerts_total',
    'gateway_security_score',
    'gateway_config_reloads_total',
    'gateway_store_errors_total',
  ]) {
    t.match(m, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is exported`);
  }
  t.notMatch(m, /route="\/|path=|127\.0\.0\.1|sqlmap/, 'no raw paths, IPs or user agents in labels');
  t.notMatch(
    m,
    /^process_cpu_user_seconds_total/m,
    'no default metrics when the gateway was started without them',
  );
});

t.test("/metrics: Node's default process metrics when defaultMetrics is on", async (t) => {
  const gw = await Gateway.start({
    configFile: h.configFile,
    env: h.env,
    port: 0,
    adminPort: 0,
    watch: false,
    log: silentLogger,
    defaultMetrics: true,
  });
  t.teardown(() => gw.close());
  const m = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  for (const name of [
    'process_cpu_user_seconds_total',
    'process_resident_memory_bytes',
    'nodejs_heap_size_used_bytes',
    'nodejs_eventloop_lag_seconds',
  ]) {
    t.match(m, new RegExp(`^${name}`, 'm'), name);
  }
  t.match(m, /^# TYPE gateway_requests_total counter/m);
});

t.test('/api/health/security on the admin listener: the score report', async (t) => {
  const r = await fetch(`${h.adminUrl}/api/health/security`);
  t.equal(r.status, 200);
  const body = (await r.json()) as {
    score: number;
    checks: { id: string; pass: boolean; weight: number }[];
    recommendations: string[];
  };
  t.ok(Number.isInteger(body.score) && body.score >= 0 && body.score <= 100, `score ${body.score}`);
  t.ok(body.checks.length >= 5);
  for (const c of body.checks) {
    t.type(c.id, 'string');
    t.type(c.pass, 'boolean');
    t.ok(c.weight > 0);
  }
  t.ok(Array.isArray(body.recommendations));
  t.equal(
    body.recommendations.length,
    body.checks.filter((c) => !c.pass).length,
    'one recommendation per failed check',
  );
  const m = await (await fetch(`${h.adminUrl}/metrics`)).text();
  t.equal(metricValue(m, 'gateway_security_score'), body.score, 'the gauge shows the same score');
});

t.test('/api/health/security on the main listener: admins only', async (t) => {
  await h.clearMock();
  const anon = await fetch(`${h.url}/api/health/security`);
  t.equal(anon.status, 401);
  t.match(anon.headers.get('www-authenticate'), /^Bearer/);
  t.equal(((await anon.json()) as { error: string }).error, 'unauthorized');
  const user = await fetch(`${h.url}/api/health/security`, {
    headers: { authorization: `Bearer ${await h.login('alice')}` },
  });
  t.equal(user.status, 403);
  t.equal(((await user.json()) as { error: string }).error, 'forbidden');
  const admin = await fetch(`${h.url}/api/health/security`, {
    headers: { authorization: `Bearer ${await h.login('admin')}` },
  });
  t.equal(admin.status, 200);
  t.equal(
    admin.headers.get('x-content-type-options'),
    'nosniff',
    'security headers on the gateway-made report',
  );
  const body = (await admin.json()) as { score: number };
  const direct = (await (await fetch(`${h.adminUrl}/api/health/security`)).json()) as { score: number };
  t.equal(body.score, direct.score, 'the same report as the admin listener');
  const seen = (await h.mockRequests()).filter((r) => r.path.startsWith('/api/health/security'));
  t.same(seen, [], 'answered by the gateway, never forwarded');
});

t.test('/api/health/security with monitoring off: 503 on both listeners', async (t) => {
  const hh = await startHarness({ config: 'monitoring: { enabled: false }' });
  t.teardown(() => hh.close());
  const direct = await fetch(`${hh.adminUrl}/api/health/security`);
  t.equal(direct.status, 503);
  const expected = { error: 'unavailable', message: 'Security monitoring is disabled.' };
  t.same(await direct.json(), expected);
  const main = await fetch(`${hh.url}/api/health/security`, {
    headers: { authorization: `Bearer ${await hh.login('admin')}` },
  });
  t.equal(main.status, 503, 'the main listener answers as the admin listener does');
  t.same(await main.json(), expected);
  t.equal(main.headers.get('x-content-type-options'), 'nosniff');
  const line = (await hh.audit()).find((l) => l.event === 'api_access' && l.path === '/api/health/security');
  t.equal(line?.status, 503, 'accounted with the status the client got');
  t.same(
    (await hh.mockRequests()).filter((r) => r.path.startsWith('/api/health/security')),
    [],
    'never forwarded',
  );
});

t.test('admin: other methods and paths', async (t) => {
  const post = await fetch(`${h.adminUrl}/healthz`, { method: 'POST' });
  t.equal(post.status, 405);
  t.equal(post.headers.get('allow'), 'GET, HEAD');
  const nf = await fetch(`${h.adminUrl}/nope`);
  t.equal(nf.status, 404);
  // /api/reload exists, for POST only: any other method gets a 405 that says so, reloading nothing
  const generation = h.gateway.generation.id;
  for (const method of ['GET', 'HEAD', 'PUT', 'OPTIONS', 'DELETE']) {
    const r = await fetch(`${h.adminUrl}/api/reload`, { method });
    t.equal(r.status, 405, method);
    t.equal(r.headers.get('allow'), 'POST', `${method}: Allow names the method served`);
    t.same(
      method === 'HEAD' ? null : await r.json(),
      method === 'HEAD' ? null : { error: 'method_not_allowed', message: 'Only POST is served here.' },
      method,
    );
  }
  t.equal(h.gateway.generation.id, generation, 'no reload');
  const opts = await fetch(`${h.adminUrl}/metrics`, { method: 'OPTIONS' });
  t.equal(opts.status, 405);
  t.equal(opts.headers.get('allow'), 'GET, HEAD');
  const reload = await fetch(`${h.adminUrl}/api/reload`, { method: 'POST' });
  t.equal(reload.status, 200);
  const rec = (await reload.json()) as { result: string; trigger: string };
  t.equal(rec.result, 'success');
  t.equal(rec.trigger, 'admin');
});

t.test('admin: a target starting with // is a path, not a host; what does not parse gets 400', async (t) => {
  for (const target of ['//', '///', '//%', '//[', '//x:y', '//:99999', '/\\', '//metrics', '//healthz']) {
    const x = await rawExchange(
      h.adminUrl,
      head(`GET ${target} HTTP/1.1`, ['Host: 127.0.0.1', 'Connection: close']),
    );
    t.equal(x.responses[0]?.status, 404, `${target}: 404, not a 500 or another page`);
    t.equal(x.responses[0]?.json?.error, 'not_found', target);
  }
  // what the parser refuses gets a plain 400, like on the main listener
  for (const line of ['GET metrics HTTP/1.1', 'GET /\xff HTTP/1.1', 'GARBAGE']) {
    const x = await rawExchange(h.adminUrl, head(line, ['Host: admin']));
    t.equal(x.responses[0]?.status, 400, `${JSON.stringify(line)}: 400`);
    t.equal(x.responses[0]?.json?.error, 'bad_request');
    t.ok(x.closed);
  }
  // CONNECT is not a path either: 400, then the connection closes
  const connect = await rawExchange(
    h.adminUrl,
    head('CONNECT admin:443 HTTP/1.1', ['Host: admin:443']) + 'GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n',
  );
  t.equal(connect.responses.length, 1, 'CONNECT: one answer, the bytes after it are not read');
  t.equal(connect.responses[0]?.status, 400, 'CONNECT: 400');
  t.equal(connect.responses[0]?.json?.error, 'bad_request');
  t.ok(connect.closed);
  const ok = await rawExchange(
    h.adminUrl,
    head('GET /healthz HTTP/1.1', ['Host: 127.0.0.1', 'Connection: close']),
  );
  t.equal(ok.responses[0]?.status, 200);
});
