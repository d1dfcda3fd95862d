import t from 'tap';
import fs from 'node:fs';
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

/** Send raw (a `#` in the target is kept), return the request id the gateway answered with. */
async function rawGet(target: string, headers: string[] = []): Promise<{ status: number; id: string }> {
  const x = await rawExchange(
    h.url,
    head(`GET ${target} HTTP/1.1`, ['Host: a', ...headers, 'Connection: close']),
  );
  return { status: x.responses[0]!.status, id: x.responses[0]!.headers['x-request-id']! };
}

/** The decision log's entry for `id` as served (JSON text); a 404 here fails the check that uses it. */
async function decisionText(id: string): Promise<string> {
  const r = await fetch(`${h.adminUrl}/api/decisions/${encodeURIComponent(id)}`);
  return r.status === 200 ? r.text() : `status ${r.status}`;
}

t.test('audit path: a secret parameter after a `#` or `;` in the query is redacted too', async (t) => {
  const token = await h.login('alice');
  const auth = `Authorization: Bearer ${token}`;
  const cases: [string, number, string][] = [
    ['/api/receipts?a=1#password=fragsecret1', 400, '/api/receipts?a=1#password=[REDACTED]'],
    ['/api/receipts?x=1;password=semisecret1', 200, '/api/receipts?x=1;password=[REDACTED]'],
    [
      '/api/receipts?x=1;y=2#access_token=fragsecret2&b=3',
      400,
      '/api/receipts?x=1;y=2#access_token=[REDACTED]&b=3',
    ],
  ];
  for (const [target, status, logged] of cases) {
    const r = await rawGet(target, [auth]);
    t.equal(r.status, status, `${target}: ${status}`);
    const lines = (await h.audit()).filter((l) => l.request_id === r.id);
    t.ok(lines.length > 0, `${target}: audited`);
    for (const l of lines) t.equal(l.path, logged, `${target}: ${String(l.event)} path`);
    const decision = await decisionText(r.id);
    t.match(decision, /"request_id"/, `${target}: decision kept`);
    t.notMatch(decision, /fragsecret|semisecret/, `${target}: not in the decision`);
  }
  t.notMatch(await fsText(h.auditFile), /fragsecret|semisecret/, 'no secret in the audit file');
});

t.test('audit path: a secret name that does not decode as a whole is still judged by its %XX', async (t) => {
  for (const [target, status, logged] of [
    ['/api/receipts?tok%65n%=badsecret1&y=2', 403, '/api/receipts?tok%65n%=[REDACTED]&y=2'],
    // not UTF-8: routed, and refused for the missing credentials
    ['/api/receipts?%70assword%E0=badsecret2', 401, '/api/receipts?%70assword%E0=[REDACTED]'],
  ] as const) {
    const r = await rawGet(target);
    t.equal(r.status, status, `${target}: ${status}`);
    const lines = (await h.audit()).filter((l) => l.request_id === r.id);
    t.ok(lines.length > 0, `${target}: audited`);
    for (const l of lines) t.equal(l.path, logged, `${target}: ${String(l.event)} path`);
    t.notMatch(await decisionText(r.id), /badsecret/, `${target}: not in the decision`);
  }
  t.notMatch(await fsText(h.auditFile), /badsecret/, 'no secret in the audit file');
});

t.test(
  'a blocked value of a parameter redacted from the path is not written in detail.matches',
  async (t) => {
    const token = await h.login('alice');
    const auth = `Authorization: Bearer ${token}`;
    const ids: string[] = [];
    for (const name of ['pwd', 'key', 'code', 'sig', 'private_key']) {
      const r = await rawGet(`/api/receipts?${name}=%3Cscript%3Ealert(1)%3C/script%3Eqsecret-${name}`, [
        auth,
      ]);
      t.equal(r.status, 403, `${name}: 403`);
      ids.push(r.id);
      const line = (await h.audit()).find((l) => l.request_id === r.id && l.event === 'request_blocked');
      t.equal(line?.path, `/api/receipts?${name}=[REDACTED]`, `${name}: path redacted`);
      const matches = (line?.detail as { matches: { excerpt: string }[] }).matches;
      t.ok(matches.length > 0, `${name}: matches listed`);
      for (const m of matches) t.equal(m.excerpt, '[redacted]', `${name}: excerpt redacted`);
    }
    for (const field of ['pwd', 'passcode', 'signature']) {
      const r = await fetch(`${h.url}/api/receipts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ [field]: `x' OR '1'='1' -- bsecret-${field}` }),
      });
      await r.arrayBuffer();
      t.equal(r.status, 403, `${field}: 403`);
      ids.push(r.headers.get('x-request-id')!);
    }
    const text = await fsText(h.auditFile);
    t.notMatch(text, /qsecret|bsecret/, 'no secret in the audit file');
    for (const id of ids) {
      const decision = await decisionText(id);
      t.match(decision, /"request_id"/, `decision ${id} kept`);
      t.notMatch(decision, /qsecret|bsecret/, `decision ${id}: no secret`);
    }
  },
);

async function fsText(file: string): Promise<string> {
  await h.gateway.audit.flush();
  return fs.readFileSync(file, 'utf8');
}

t.test(
  'api_violations alert: 401s on an API route count also when the target spells /api/ otherwise',
  async (t) => {
    const hh = await startHarness({
      config: 'monitoring: { thresholds: { api_violations: { count: 3, window: 1h } } }',
    });
    t.teardown(() => hh.close());
    for (const target of ['//api/receipts', '/./api/receipts', '/%61pi/receipts']) {
      const x = await rawExchange(hh.url, head(`GET ${target} HTTP/1.1`, ['Host: a', 'Connection: close']));
      t.equal(x.responses[0]?.status, 401, `${target}: 401 on the api route`);
    }
    const lines = await hh.audit();
    t.same(
      lines.filter((l) => l.event === 'auth_failure').map((l) => l.route),
      ['api', 'api', 'api'],
      'three auth_failure lines on the api route',
    );
    // settle the counting (the store work in flight) before reading what was raised
    await hh.observability.alerts!.close(0);
    t.equal(hh.observability.alerts!.stats().raised, 1, 'one api_violations alert raised');
    const alert = (await hh.audit()).filter((l) => l.event === 'security_alert');
    t.equal(alert.length, 1, 'one security_alert line');
    t.equal(alert[0]?.kind, 'api_violations');
    t.equal(alert[0]?.count, 3);
  },
);
