import t from 'tap';
import { startHarness, type Harness } from '../../helpers/harness.js';
import { eventually } from '../../helpers/wait.js';
import type { MemoryStore } from '../../../gateway/store/memory.js';

/**
 * Over real TCP, memory store at its smallest bound (store.max_keys: 1000): an IP ban and an
 * account lock hold while 400 distinct clients (IPv6 /64s of one /48, behind a trusted
 * proxy) make rate-limit buckets past the bound (three per client: the shipped default
 * limits per minute, hour and day). Before, buckets
 * and blocks shared one LRU and the flood evicted both: the banned client and the guesser of
 * the locked account reached the upstream again.
 */

const CONFIG = `
listen:
  trusted_proxies: [127.0.0.1/32]
store:
  max_keys: 1000
policies:
  ip_ban:
    enabled: true
    threshold: 2
    ban_duration: 1h
routes:
  - name: login
    methods: [POST]
    path: /api/auth/login
    policies:
      auth: { require: [none] }
      login_lockout: { enabled: true, max_attempts: 3, lockout: 15m }
  - name: health
    methods: [GET]
    path: /api/health
    policies:
      auth: { require: [none] }
`;

async function get(h: Harness, ip: string, ua = 'curl/8') {
  const r = await fetch(`${h.url}/api/health`, { headers: { 'user-agent': ua, 'x-forwarded-for': ip } });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

async function login(h: Harness, ip: string, password: string) {
  const r = await fetch(`${h.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': ip },
    body: JSON.stringify({ username: 'admin', password }),
  });
  return {
    status: r.status,
    retryAfter: r.headers.get('retry-after'),
    body: (await r.json()) as Record<string, unknown>,
  };
}

t.test('a flood of distinct clients past store.max_keys evicts neither a ban nor a lock', async (t) => {
  const h = await startHarness({ abuseControls: true, config: CONFIG });
  t.teardown(() => h.close());
  const backend = (h.gateway.services.store as unknown as { backend: MemoryStore }).backend;
  t.equal(backend.kind, 'memory');

  // a scanner is banned: two suspicious denials
  t.equal((await get(h, '203.0.113.66', 'sqlmap/1.7')).status, 403);
  t.equal((await get(h, '203.0.113.66', 'sqlmap/1.7')).status, 403);
  await eventually('the scanner is banned', async () => (await get(h, '203.0.113.66')).status === 403);
  // admin is locked: three wrong passwords, from three addresses
  for (let i = 1; i <= 3; i++) t.equal((await login(h, `198.51.100.${i}`, `wrong-${i}`)).status, 401);
  t.equal((await login(h, '198.51.100.4', 'wrong-4')).status, 429);

  // 400 clients, one request each, 20 at a time: 1 200 buckets
  let next = 0;
  let ok = 0;
  await Promise.all(
    Array.from({ length: 20 }, async () => {
      while (next < 400) {
        const i = next++;
        if ((await get(h, `2001:db8:1:${i.toString(16)}::1`)).status === 200) ok++;
      }
    }),
  );
  t.equal(ok, 400, 'every client was served');
  t.same(
    { buckets: backend.sizes.buckets, blocks: backend.sizes.blocks },
    { buckets: 1000, blocks: 2 },
    'the bucket LRU is full; the ban and the lock are held apart',
  );

  await h.clearMock();
  const banned = await get(h, '203.0.113.66');
  t.equal(banned.status, 403, 'the ban holds');
  t.same(banned.body.error, 'ip_blocked');
  const locked = await login(h, '198.51.100.50', 'admin-secret-pw');
  t.equal(locked.status, 429, 'the lock holds, even for the right password');
  t.equal(locked.body.error, 'account_locked');
  t.ok(
    Number(locked.retryAfter) > 800 && Number(locked.retryAfter) <= 900,
    `Retry-After ${locked.retryAfter}`,
  );
  t.same(await h.mockRequests(), [], 'neither reached the upstream');

  const audit = await h.audit();
  const denied = audit.filter((l) => l.event === 'access_denied' || l.event === 'request_blocked');
  t.match(denied.at(-2), { client_ip: '203.0.113.66', status: 403, rule_ids: ['auto-ban'] });
  t.match(denied.at(-1), {
    client_ip: '198.51.100.50',
    status: 429,
    reason: 'lockout',
    rule_ids: ['login-lockout-username'],
  });
});
