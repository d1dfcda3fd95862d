import t from 'tap';
import { startHarness } from '../../helpers/harness.js';

/** Over real TCP: static lists and auto-ban with the real pipeline and mock. */

t.test('deny list and auto-ban over TCP', async (t) => {
  const h = await startHarness({
    abuseControls: true,
    config: `
policies:
  rate_limit:
    enabled: false
  ip_ban:
    enabled: true
    threshold: \${SUSPICIOUS_ACTIVITY_THRESHOLD:-10}
    ban_duration: 1h
`,
    env: { SUSPICIOUS_ACTIVITY_THRESHOLD: '3' },
  });
  t.teardown(() => h.close());
  await h.clearMock();
  const get = async (ua = 'curl/8') => {
    const r = await fetch(`${h.url}/api/health`, { headers: { 'user-agent': ua } });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };
  t.equal((await get()).status, 200);
  for (let i = 0; i < 3; i++) t.equal((await get('sqlmap/1.7')).status, 403);
  let r = await get();
  for (let i = 0; i < 100 && r.status === 200; i++) {
    await new Promise((res) => setTimeout(res, 20));
    r = await get();
  }
  t.equal(r.status, 403, 'banned after 3 scanner requests');
  t.equal(r.body.error, 'ip_blocked');
  t.equal(r.body.message, 'Requests from this address are blocked.');
  t.equal((await h.mockRequests()).length, 1, 'only the first request reached the upstream');
  const audit = await h.audit();
  const banned = audit.filter((l) => l.event === 'ip_banned');
  t.equal(banned.length, 1);
  t.match(banned[0], {
    client_ip: '127.0.0.1',
    decision: 'deny',
    reason: 'auto_ban',
    detail: { count: 3, ban_ms: 3_600_000 },
  });
  const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
  t.match(metrics, /gateway_ip_bans_total 1/);
  t.match(metrics, /gateway_blocked_requests_total\{reason="ip_banned"\} [1-9]/);

  await h.reload(`
policies:
  ip_ban:
    enabled: true
    threshold: 5
    allow: [127.0.0.0/8]
`);
  t.equal((await get()).status, 200, 'an allowlisted network skips the ban');
  await h.reload(`
policies:
  ip_ban:
    enabled: true
    deny: ["127.0.0.1/32"]
    auto_ban: false
`);
  r = await get();
  t.equal(r.status, 403);
  t.equal(r.body.error, 'ip_blocked');
});

t.test('a ban holds on a route that keys IPv6 clients by another prefix', async (t) => {
  // Bans are stored under the key of the route whose denial set them (a /64 by default);
  // a route with its own ipv6_prefix looked only under its own key, so the banned client
  // went on reaching the upstream there, with the very address that was banned.
  const h = await startHarness({
    abuseControls: true,
    config: `
listen: { trusted_proxies: [127.0.0.1/32] }
policies:
  rate_limit: { enabled: false }
  ip_ban: { threshold: 2 }
routes:
  - name: health
    methods: [GET]
    path: /api/health
    policies:
      auth: { require: [none] }
      ip_ban: { ipv6_prefix: 128 }
  - name: jwks
    methods: [GET]
    path: /.well-known/jwks.json
    policies:
      auth: { require: [none] }
      ip_ban: { ipv6_prefix: 48 }
`,
  });
  t.teardown(() => h.close());
  const get = (path: string, xff: string, ua = 'curl/8') =>
    fetch(`${h.url}${path}`, { headers: { 'x-forwarded-for': xff, 'user-agent': ua } });
  // banned on the /128 route: the address
  for (let i = 0; i < 2; i++)
    t.equal((await get('/api/health', '2001:db8:1:2::1', 'sqlmap/1.7')).status, 403);
  // banned on the /48 route: the whole 2001:db8:7::/48
  for (let i = 0; i < 2; i++)
    t.equal((await get('/.well-known/jwks.json', '2001:db8:7:1::1', 'sqlmap/1.7')).status, 403);
  const banned = async () =>
    (await h.audit()).filter((l) => l.event === 'ip_banned').map((l) => (l.detail as { key: string }).key);
  for (let i = 0; i < 100 && (await banned()).length < 2; i++) await new Promise((r) => setTimeout(r, 20));
  t.same((await banned()).sort(), ['2001:db8:1:2::1', '2001:db8:7::/48']);
  await h.clearMock();
  for (const [path, xff] of [
    ['/.well-known/jwks.json', '2001:db8:1:2::1'],
    ['/api/health', '2001:db8:7:1::1'],
    ['/api/health', '2001:db8:7:ffff::9'],
  ] as const) {
    const r = await get(path, xff);
    t.equal(r.status, 403, `${xff} on ${path}`);
    t.equal(((await r.json()) as Record<string, unknown>).error, 'ip_blocked');
  }
  t.same(await h.mockRequests(), [], 'the banned clients reached no route of the upstream');
  t.equal((await get('/api/health', '2001:db8:1:2::2')).status, 200, 'the /128 ban is of one address');
  t.equal((await get('/api/health', '2001:db8:8::1')).status, 200, 'the /48 ban is of one network');
});
