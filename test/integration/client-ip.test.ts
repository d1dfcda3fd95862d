import t from 'tap';
import { startHarness } from '../helpers/harness.js';
import { eventually } from '../helpers/wait.js';

/**
 * The client IP over real TCP: behind a trusted proxy, every spelling of one address in
 * X-Forwarded-For is one client (audit line, X-Real-IP upstream, ban), malformed entries
 * are not read as addresses, and from an untrusted peer no client claim counts.
 */

t.test('behind a trusted proxy the client address is canonical everywhere', async (t) => {
  const h = await startHarness({ config: 'listen: { trusted_proxies: [127.0.0.1/32, 10.0.0.0/8] }' });
  t.teardown(() => h.close());
  // [X-Forwarded-For from the trusted peer, the client IP the gateway must determine]
  const cases: [string, string][] = [
    ['::FFFF:192.0.2.1', '192.0.2.1'],
    ['0:0:0:0:0:ffff:192.0.2.1', '192.0.2.1'],
    ['0:0:0:0:0:FFFF:C000:201', '192.0.2.1'],
    ['[::ffff:192.0.2.1]:4711', '192.0.2.1'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0::0001, 10.0.0.7', '2001:db8::1'],
    ['[2001:DB8::1]:443', '2001:db8::1'],
    ['fe80::1%eth0', 'fe80::1'],
    ['192.0.2.1:80', '192.0.2.1'],
    // malformed: not an address, the walk stops at the last trusted hop (here the peer)
    ['[2001:db8::1', '127.0.0.1'],
    ['[2001:db8::1]x', '127.0.0.1'],
    ['[192.0.2.1]', '127.0.0.1'],
    ['198.51.100.1, [2001:db8::1, 10.0.0.7', '10.0.0.7'],
  ];
  for (const [xff, client] of cases) {
    await h.clearMock();
    const r = await fetch(`${h.url}/api/health`, { headers: { 'x-forwarded-for': xff } });
    t.equal(r.status, 200, xff);
    const seen = await h.mockRequests();
    t.equal(seen.length, 1);
    t.equal(seen[0]?.headers['x-real-ip'], client, `X-Real-IP upstream for "${xff}"`);
    t.equal(seen[0]?.headers['x-forwarded-for'], `${xff}, 127.0.0.1`, 'the chain is forwarded as received');
    const line = (await h.audit()).find((l) => l.request_id === r.headers.get('x-request-id'));
    t.equal(line?.client_ip, client, `audit client_ip for "${xff}"`);
  }
});

t.test('a banned client stays banned whatever spelling of its address the proxy passes', async (t) => {
  const h = await startHarness({
    abuseControls: true,
    config: `
listen: { trusted_proxies: [127.0.0.1/32] }
policies:
  rate_limit: { enabled: false }
  ip_ban: { threshold: 2 }
`,
  });
  t.teardown(() => h.close());
  const get = (xff: string, ua = 'curl/8') =>
    fetch(`${h.url}/api/health`, { headers: { 'x-forwarded-for': xff, 'user-agent': ua } });
  for (const xff of ['192.0.2.1', '2001:db8:1:2::1']) {
    t.equal((await get(xff, 'sqlmap/1.7')).status, 403);
    t.equal((await get(xff, 'sqlmap/1.7')).status, 403);
  }
  await eventually('192.0.2.1 banned', async () => (await get('192.0.2.1')).status === 403);
  await eventually('its /64 banned', async () => (await get('2001:db8:1:2::1')).status === 403);
  await h.clearMock();
  const spellings = [
    '::ffff:192.0.2.1',
    '::FFFF:C000:0201',
    '0:0:0:0:0:ffff:192.0.2.1',
    '192.0.2.1:1234',
    '[::ffff:192.0.2.1]:1234',
    '2001:DB8:1:2::1',
    '2001:0db8:0001:0002:0000:0000:0000:0001',
    '[2001:db8:1:2::1]:80',
    '2001:db8:1:2:ffff:ffff:ffff:ffff',
  ];
  for (const xff of spellings) {
    const r = await get(xff);
    t.equal(r.status, 403, xff);
    t.equal(((await r.json()) as Record<string, unknown>).error, 'ip_blocked');
  }
  t.same(await h.mockRequests(), [], 'no spelling reached the upstream');
  t.equal((await get('2001:db8:1:3::1')).status, 200, 'the next /64 is another client');
  const audit = await h.audit();
  t.same(
    audit
      .filter((l) => l.event === 'ip_banned')
      .map((l) => (l.detail as Record<string, unknown>).key)
      .sort(),
    ['192.0.2.1', '2001:db8:1:2::/64'],
  );
});

t.test('from an untrusted peer no client claim chooses the client IP', async (t) => {
  const h = await startHarness({
    abuseControls: true,
    config: `
policies:
  rate_limit: { enabled: false }
  ip_ban: { deny: [127.0.0.1/32], allow: [192.0.2.1] }
`,
  });
  t.teardown(() => h.close());
  await h.clearMock();
  const claims = {
    'x-forwarded-for': '192.0.2.1',
    'x-real-ip': '192.0.2.1',
    forwarded: 'for=192.0.2.1',
  };
  for (const [name, value] of Object.entries(claims)) {
    const r = await fetch(`${h.url}/api/health`, { headers: { [name]: value } });
    t.equal(r.status, 403, `${name} does not reach the allow list`);
    const line = (await h.audit()).find((l) => l.request_id === r.headers.get('x-request-id'));
    t.equal(line?.client_ip, '127.0.0.1');
  }
  t.same(await h.mockRequests(), [], 'the denied peer reached nothing');
});
