import t from 'tap';
import { startHarness } from '../../helpers/harness.js';

/** Over real TCP: the shipped pipeline, the real mock, the memory store. */

const CONFIG = `
policies:
  rate_limit:
    enabled: true
    default: 3/minute
`;

async function health(url: string, headers: Record<string, string> = {}) {
  const r = await fetch(`${url}/api/health`, { headers });
  return { status: r.status, headers: r.headers, body: (await r.json()) as Record<string, unknown> };
}

t.test(
  'the default per-IP rule over TCP: headers, 429, upstream not called, spoofed X-Forwarded-For ignored',
  async (t) => {
    const h = await startHarness({ config: CONFIG, abuseControls: true });
    t.teardown(() => h.close());
    await h.clearMock();

    for (let i = 0; i < 3; i++) {
      const r = await health(h.url, { 'x-forwarded-for': `203.0.113.${i}` });
      t.equal(r.status, 200);
      t.equal(r.headers.get('ratelimit-policy'), '"default-60s";q=3;w=60');
      // real clock: t is 20 s per token taken, less the (sub-second) time elapsed, rounded up
      t.match(
        r.headers.get('ratelimit'),
        new RegExp(`^"default-60s";r=${2 - i};t=(${20 * (i + 1) - 1}|${20 * (i + 1)})$`),
      );
    }
    const r = await health(h.url, { 'x-forwarded-for': '198.51.100.99' });
    t.equal(r.status, 429, 'a forged X-Forwarded-For from an untrusted peer does not change the key');
    t.equal(r.body.error, 'rate_limited');
    t.type(r.body.request_id, 'string');
    const retry = Number(r.headers.get('retry-after'));
    t.ok(retry >= 19 && retry <= 20, `Retry-After ${retry}: about 20 s until one token is back`);
    t.match(r.headers.get('ratelimit'), /^"default-60s";r=0;t=(59|60)$/);
    t.equal(r.headers.get('ratelimit-policy'), '"default-60s";q=3;w=60');
    t.equal((await h.mockRequests()).length, 3, 'the refused request never reached the upstream');

    const audit = await h.audit();
    const limited = audit.filter((l) => l.event === 'rate_limited');
    t.equal(limited.length, 1);
    t.match(limited[0], { decision: 'deny', status: 429, client_ip: '127.0.0.1', rule_ids: ['default'] });

    const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
    t.match(metrics, /gateway_rate_limited_total\{rule="default"\} 1/);
  },
);

t.test('behind a trusted proxy the forwarded client is the key', async (t) => {
  const h = await startHarness({
    config: `${CONFIG}\nlisten:\n  trusted_proxies: [127.0.0.1/32]\n`,
    abuseControls: true,
  });
  t.teardown(() => h.close());
  for (let i = 0; i < 3; i++) t.equal((await health(h.url, { 'x-forwarded-for': '192.0.2.1' })).status, 200);
  t.equal((await health(h.url, { 'x-forwarded-for': '192.0.2.1' })).status, 429);
  t.equal(
    (await health(h.url, { 'x-forwarded-for': '192.0.2.2' })).status,
    200,
    'another client behind the proxy',
  );
  t.equal(
    (await health(h.url, { 'x-forwarded-for': '[::ffff:192.0.2.1]' })).status,
    429,
    'the IPv4-mapped form is the same client',
  );
  t.equal((await health(h.url, { 'x-forwarded-for': '2001:db8:1:2::1' })).status, 200);
  t.equal((await health(h.url, { 'x-forwarded-for': '2001:db8:1:2::2' })).status, 200);
  t.equal((await health(h.url, { 'x-forwarded-for': '2001:DB8:1:2:0:0:0:3' })).status, 200);
  t.equal(
    (await health(h.url, { 'x-forwarded-for': '2001:db8:1:2:ffff::4' })).status,
    429,
    'one /64, however written',
  );
  t.equal(
    (await health(h.url, { 'x-forwarded-for': '192.0.2.1, 192.0.2.77' })).status,
    200,
    "left-of-client entries are the client's own claims; the right-most untrusted entry is the key",
  );
});

t.test('a reload keeps the buckets of unchanged rules', async (t) => {
  const h = await startHarness({ config: CONFIG, abuseControls: true });
  t.teardown(() => h.close());
  for (let i = 0; i < 3; i++) t.equal((await health(h.url)).status, 200);
  await h.reload(`${CONFIG}    headers: false\n`);
  const r = await health(h.url);
  t.equal(r.status, 429, 'the same rule after the reload: still empty');
  await h.reload(CONFIG.replace('3/minute', '5/minute'));
  t.equal((await health(h.url)).status, 200, 'a changed rule starts full');
});
