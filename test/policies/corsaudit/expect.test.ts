/**
 * An `Expect` other than `100-continue` (RFC 9110 §10.1.1): Node answers such a request with
 * a bare 417 of its own unless the server listens for it, so the response had no security
 * headers, no request id, no JSON body and no audit line. The gateway ignores the
 * expectation (as NGINX does) and serves the request like any other; `Expect` is never
 * forwarded.
 */
import t from 'tap';
import fs from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';
import { startFileHarness, startHarness } from '../../helpers/harness.js';
import { TestPki } from '../../helpers/certs.js';
import { SEED_HEADERS } from '../../../policies/security-headers/index.js';
import { rawExchange, head } from '../../helpers/raw-http.js';
import { hasSecurityHeaders, isGatewayError } from '../../helpers/gateway-errors.js';

const { h, token } = await startFileHarness(t);
const host = new URL(h.url).host;

const get = (path: string, extra: string[]) =>
  rawExchange(h.url, head(`GET ${path} HTTP/1.1`, [`Host: ${host}`, 'User-Agent: probe/1', ...extra]), {
    responses: 1,
  });

t.test('an allowed request with Expect: foo is served, with the security headers', async (t) => {
  await h.clearMock();
  const x = await get('/api/receipts/1', ['Expect: foo', `Authorization: Bearer ${token}`]);
  const r = x.responses[0]!;
  t.equal(r.status, 200);
  t.equal(r.json?.id, 1);
  t.match(r.headers['x-request-id'], /^[0-9a-f-]{36}$/);
  hasSecurityHeaders(t, r);
  const seen = await h.mockRequests();
  t.equal(seen.length, 1, 'the request reached the service once');
  t.equal(seen[0]?.headers.expect, undefined, 'without the Expect header');
  t.equal(seen[0]?.headers['x-request-id'], r.headers['x-request-id']);
});

t.test('a refused request with Expect: foo gets the gateway’s JSON refusal and audit line', async (t) => {
  await h.clearMock();
  const x = await get('/api/receipts', ['Expect: 417-please']);
  const r = x.responses[0];
  isGatewayError(t, r, 401, 'unauthorized');
  t.equal(r?.headers['www-authenticate'], 'Bearer realm="receipt-gateway"');
  t.same(await h.mockRequests(), [], 'never forwarded');
  const line = (await h.audit()).find((l) => l.request_id === r?.headers['x-request-id']);
  t.match(line, { event: 'auth_failure', status: 401, method: 'GET', path: '/api/receipts' });
});

t.test('over HTTP/2 (TLS listener) too', async (t) => {
  const pki = new TestPki();
  t.teardown(() => fs.rmSync(pki.dir, { recursive: true, force: true }));
  const dir = path.join(pki.dir, 'listener');
  pki.install(pki.leaf('gw'), dir);
  const tlsH = await startHarness({
    config: `
listen:
  tls: { cert_file: ${path.join(dir, 'tls.crt')}, key_file: ${path.join(dir, 'tls.key')} }
`,
  });
  t.teardown(() => tlsH.close());
  const session = http2.connect(tlsH.url, { ca: pki.ca.cert });
  t.teardown(() => session.close());
  const get = (p: string) =>
    new Promise<{ head: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const s = session.request({ ':path': p, expect: 'foo', 'user-agent': 'probe/1' });
      let head: http2.IncomingHttpHeaders = {};
      let body = '';
      s.on('response', (h) => (head = h));
      s.on('data', (d: Buffer) => (body += d.toString()));
      s.on('end', () => resolve({ head, body }));
      s.on('error', reject);
      s.end();
    });
  const ok = await get('/api/health');
  t.equal(ok.head[':status'], 200);
  t.same(JSON.parse(ok.body), { status: 'ok' });
  t.equal(ok.head['x-frame-options'], 'SAMEORIGIN');
  const refused = await get('/api/receipts');
  t.equal(refused.head[':status'], 401);
  t.equal(JSON.parse(refused.body).error, 'unauthorized');
  t.equal(refused.head['content-security-policy'], SEED_HEADERS['Content-Security-Policy']);
});
