import t, { type Test } from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startHarness, type Harness } from '../../helpers/harness.js';
import { eventually } from '../../helpers/wait.js';

/**
 * Over real TCP: the alert settings under `monitoring` follow a reload (README: a reload
 * applies everything but listen, admin, store.url and workers), and a webhook URL that
 * cannot work is refused by the reload, not accepted half-way.
 */

interface Hook {
  readonly url: string;
  /** `path body` of each POST received */
  readonly hits: string[];
}

async function webhook(t: Test): Promise<Hook> {
  const hits: string[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      hits.push(`${req.url} ${body}`);
      res.statusCode = 204;
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits };
}

/** A 401 on an API route: one api_violations event. */
async function unauthorized(h: Harness): Promise<void> {
  const r = await fetch(`${h.url}/api/receipts`);
  await r.text();
  if (r.status !== 401) throw new Error(`expected 401, got ${r.status}`);
}

/** A request refused by pattern blocking: one suspicious_requests event. */
async function blocked(h: Harness): Promise<void> {
  const r = await fetch(`${h.url}/api/receipts?q=${encodeURIComponent("1' OR '1'='1")}`);
  await r.text();
  if (r.status !== 403) throw new Error(`expected 403, got ${r.status}`);
}

const alertLines = async (h: Harness) => (await h.audit()).filter((l) => l.event === 'security_alert');

/** Every audit event the alerts count is written and counted before this resolves. */
async function settled(h: Harness, events: number): Promise<void> {
  await eventually(`${events} counted events in the audit log`, async () => {
    const lines = await h.audit();
    return lines.filter((l) => l.event === 'auth_failure' || l.event === 'request_blocked').length === events;
  });
  // the alert engine counts in the store in the background (memory store: next ticks)
  await new Promise((r) => setTimeout(r, 100));
}

t.test('a reload applies a changed threshold and webhook URL', async (t) => {
  const a = await webhook(t);
  const b = await webhook(t);
  const h = await startHarness({
    config: `monitoring: { webhook_url: "${a.url}/a", thresholds: { api_violations: { count: 5, window: 1h } } }`,
  });
  t.teardown(() => h.close());
  for (let i = 0; i < 3; i++) await unauthorized(h);
  await settled(h, 3);
  t.equal((await alertLines(h)).length, 0, '3 of 5: no alert yet');

  await h.reload(
    `monitoring: { webhook_url: "${b.url}/b", thresholds: { api_violations: { count: 4, window: 1h } } }`,
  );
  await unauthorized(h);
  await settled(h, 4);
  const lines = await alertLines(h);
  t.equal(lines.length, 1, 'the 4th violation reaches the new threshold of 4');
  t.match(lines[0], { kind: 'api_violations', count: 4, threshold: 4, window: '1h' });
  await eventually('delivery to the new webhook', () => b.hits.length === 1);
  t.match(b.hits[0], /^\/b \{"event":"security_alert","kind":"api_violations","count":4,"threshold":4,/);
  t.equal(a.hits.length, 0, 'the old webhook gets nothing');
});

t.test('a reload turns alerts off and on again', async (t) => {
  const h = await startHarness({
    config: `monitoring: { thresholds: { suspicious_requests: { count: 2, window: 1h } } }`,
  });
  t.teardown(() => h.close());
  t.not(h.observability.alerts, undefined);

  await h.reload(
    `monitoring: { enabled: false, thresholds: { suspicious_requests: { count: 2, window: 1h } } }`,
  );
  t.equal(h.observability.alerts, undefined, 'monitoring off: no alert engine');
  for (let i = 0; i < 3; i++) await blocked(h);
  await settled(h, 3);
  t.equal((await alertLines(h)).length, 0, 'monitoring off: blocked requests raise no alert');

  await h.reload(
    `monitoring: { enabled: true, thresholds: { suspicious_requests: { count: 2, window: 1h } } }`,
  );
  await blocked(h);
  await settled(h, 4);
  t.equal((await alertLines(h)).length, 0, 'requests made while off were not counted');
  await blocked(h);
  await settled(h, 5);
  t.match(await alertLines(h), [{ kind: 'suspicious_requests', count: 2, threshold: 2 }]);
});

t.test('a reload with a webhook URL that is not http(s) is refused; the old settings stay', async (t) => {
  const a = await webhook(t);
  const h = await startHarness({
    config: `monitoring: { webhook_url: "${a.url}/a", thresholds: { api_violations: { count: 1, window: 1h } } }`,
  });
  t.teardown(() => h.close());
  const before = h.observability.alerts;
  for (const bad of ['ftp://alerts.example/token-s3cr3t', 'not a url token-s3cr3t']) {
    const text = `monitoring: { webhook_url: "${bad}", thresholds: { api_violations: { count: 1, window: 1h } } }`;
    await t.rejects(h.reload(text), /monitoring\.webhook_url: invalid alert webhook URL/, bad);
    await t.rejects(h.reload(text), { message: /^(?![\s\S]*s3cr3t)/ }, 'the URL is not repeated');
  }
  t.equal(h.observability.alerts, before, 'the running alert engine is kept');
  await unauthorized(h);
  await eventually('delivery to the webhook of the running settings', () => a.hits.length === 1);
  t.match(a.hits[0], /^\/a \{"event":"security_alert","kind":"api_violations","count":1,"threshold":1,/);
});
