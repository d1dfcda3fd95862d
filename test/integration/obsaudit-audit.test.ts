import t from 'tap';
import { startHarness, type Harness } from '../helpers/harness.js';
import { rawExchange, head } from '../helpers/raw-http.js';

/**
 * Adversarial checks of the admin listener, the audit log and the metrics (obsaudit):
 * what an attacker's web page or crafted requests can make of them.
 */

let h: Harness;
t.before(async () => {
  h = await startHarness();
});
t.teardown(() => h.close());

const adminPort = () => new URL(h.adminUrl).port;

t.test('admin listener on loopback: a rebound DNS name in Host is refused (DNS rebinding)', async (t) => {
  for (const path of ['/api/dashboard', '/metrics', '/api/decisions/x', '/']) {
    const x = await rawExchange(
      h.adminUrl,
      head(`GET ${path} HTTP/1.1`, [`Host: attacker.example:${adminPort()}`, 'Connection: close']),
    );
    t.equal(x.responses[0]?.status, 403, `${path}: 403`);
    t.equal(x.responses[0]?.json?.error, 'forbidden', `${path}: forbidden`);
    t.notMatch(x.raw, /gateway_requests_total|"denials"/, `${path}: nothing of the page or figures`);
  }
  for (const host of [
    `127.0.0.1:${adminPort()}`,
    `localhost:${adminPort()}`,
    `[::1]:${adminPort()}`,
    '127.0.0.1',
  ]) {
    const x = await rawExchange(
      h.adminUrl,
      head('GET /healthz HTTP/1.1', [`Host: ${host}`, 'Connection: close']),
    );
    t.equal(x.responses[0]?.status, 200, `${host}: 200`);
  }
});

t.test('admin listener: a cross-site POST /api/reload is refused and reloads nothing (CSRF)', async (t) => {
  const before = h.gateway.reloads.length;
  const crossSite: Record<string, string>[] = [
    { origin: 'https://attacker.example' },
    { origin: 'null' },
    { 'sec-fetch-site': 'cross-site' },
    { 'sec-fetch-site': 'same-site' },
  ];
  for (const headers of crossSite) {
    const r = await fetch(`${h.adminUrl}/api/reload`, { method: 'POST', headers });
    t.equal(r.status, 403, `${JSON.stringify(headers)}: 403`);
    t.equal(((await r.json()) as { error: string }).error, 'forbidden');
  }
  t.equal(h.gateway.reloads.length, before, 'no reload ran');
  // the CLI, curl, and a same-origin page still can
  const ok = await fetch(`${h.adminUrl}/api/reload`, { method: 'POST', headers: { origin: h.adminUrl } });
  t.equal(ok.status, 200);
  const plain = await fetch(`${h.adminUrl}/api/reload`, { method: 'POST' });
  t.equal(plain.status, 200);
  t.equal(h.gateway.reloads.length, before + 2, 'two reloads ran');
});
