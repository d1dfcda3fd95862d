/**
 * security_headers with override_upstream: false keeps the upstream's own headers. An
 * upstream X-Frame-Options that browsers ignore (two conflicting values, ALLOW-FROM, a typo)
 * was kept as well, so the page could be framed by any site although the gateway's
 * SAMEORIGIN was configured; now the configured value replaces it, or DENY when the upstream's
 * ignored values asked for DENY (the stricter of the two). Two CSP headers are kept
 * (browsers enforce both: stricter), as is a valid X-Frame-Options.
 */
import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startHarness } from '../../helpers/harness.js';
import { rawExchange, head } from '../../helpers/raw-http.js';

const XFO: Record<string, string | string[]> = {
  '/two': ['DENY', 'SAMEORIGIN'],
  '/list': 'DENY, SAMEORIGIN',
  '/allow-from': 'ALLOW-FROM https://evil.example',
  '/allowall': 'ALLOWALL',
  '/empty': '',
  '/deny': 'DENY',
  '/deny-twice': ['DENY', 'deny'],
};
const seen: string[] = [];
const upstream = http.createServer((req, res) => {
  seen.push(req.url!);
  const xfo = XFO[req.url!];
  if (xfo !== undefined) res.setHeader('X-Frame-Options', xfo);
  res.setHeader('Content-Security-Policy', ["default-src 'none'", "frame-ancestors 'self'"]);
  res.end('ok');
});
await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
t.teardown(() => new Promise<void>((r) => upstream.close(() => r())));

const h = await startHarness({
  upstreamUrl: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
  config: `
routes:
  - name: app
    path: /**
    policies:
      auth: { require: [none] }
      security_headers: { override_upstream: false }
`,
});
t.teardown(() => h.close());
const host = new URL(h.url).host;

async function get(path: string) {
  const x = await rawExchange(h.url, head(`GET ${path} HTTP/1.1`, [`Host: ${host}`, 'User-Agent: probe/1']), {
    responses: 1,
  });
  const lines = x.raw
    .split('\r\n\r\n')[0]!
    .split('\r\n')
    .filter((l) => /^x-frame-options:/i.test(l));
  return { r: x.responses[0]!, xfo: lines };
}

t.test('an X-Frame-Options browsers ignore is replaced by the configured one', async (t) => {
  for (const path of ['/allow-from', '/allowall', '/empty']) {
    const { r, xfo } = await get(path);
    t.equal(r.status, 200, path);
    t.same(xfo, ['x-frame-options: SAMEORIGIN'], `${path}: one SAMEORIGIN line`);
  }
});

t.test(
  'conflicting values that include DENY become DENY, not the looser configured SAMEORIGIN',
  async (t) => {
    for (const path of ['/two', '/list']) {
      const { r, xfo } = await get(path);
      t.equal(r.status, 200, path);
      t.same(xfo, ['x-frame-options: DENY'], `${path}: one DENY line`);
    }
  },
);

t.test('a valid upstream X-Frame-Options and the upstream’s CSP headers are kept', async (t) => {
  let { r, xfo } = await get('/deny');
  t.same(xfo, ['x-frame-options: DENY']);
  t.equal(r.headers['content-security-policy'], "default-src 'none', frame-ancestors 'self'");
  ({ xfo } = await get('/deny-twice'));
  t.same(xfo, ['x-frame-options: DENY', 'x-frame-options: deny'], 'one distinct value: honoured');
  ({ r, xfo } = await get('/none'));
  t.same(xfo, ['x-frame-options: SAMEORIGIN'], 'none from the upstream: the configured one');
  t.equal(r.headers['x-content-type-options'], 'nosniff');
  t.same(seen, ['/allow-from', '/allowall', '/empty', '/two', '/list', '/deny', '/deny-twice', '/none']);
});
