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
