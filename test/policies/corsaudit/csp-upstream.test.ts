/**
 * security_headers (default override_upstream: true) replaced the service's own
 * Content-Security-Policy with the configured one, so a stricter policy of the service
 * (`default-src 'none'; frame-ancestors 'none'`) became the seed's, which allows inline
 * scripts and framing by the same origin. Browsers enforce every CSP a response carries
 * (CSP 3 §4.1), so the configured policy is now added beside the service's.
 */
import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startHarness } from '../../helpers/harness.js';
import { rawExchange, head } from '../../helpers/raw-http.js';
import { SEED_HEADERS } from '../../../policies/security-headers/index.js';

const SEED = SEED_HEADERS['Content-Security-Policy']!;
const STRICT = "default-src 'none'; frame-ancestors 'none'";
const CSP: Record<string, string | string[]> = {
  '/strict': STRICT,
  '/two': [STRICT, "script-src 'self'"],
  '/same': SEED,
};
const seen: string[] = [];
const upstream = http.createServer((req, res) => {
  const p = req.url!.replace(/^\/(dropped|api-auth)/, '');
  seen.push(req.url!);
  const csp = CSP[p];
  if (csp !== undefined) res.setHeader('Content-Security-Policy', csp);
  res.end('ok');
});
await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
t.teardown(() => new Promise<void>((r) => upstream.close(() => r())));

const h = await startHarness({
  upstreamUrl: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
  config: `
routes:
  - name: dropped
    path: /dropped/**
    policies:
      auth: { require: [none] }
      security_headers: { remove: [Server, X-Powered-By, Content-Security-Policy] }
  - name: authed
    path: /api-auth/**
  - name: app
    path: /**
    policies:
      auth: { require: [none] }
`,
});
t.teardown(() => h.close());
const host = new URL(h.url).host;

async function csp(path: string): Promise<{ status: number; lines: string[] }> {
  const x = await rawExchange(h.url, head(`GET ${path} HTTP/1.1`, [`Host: ${host}`, 'User-Agent: probe/1']), {
    responses: 1,
  });
  const lines = x.raw
    .split('\r\n\r\n')[0]!
    .split('\r\n')
    .filter((l) => /^content-security-policy:/i.test(l))
    .map((l) => l.slice(l.indexOf(':') + 1).trim());
  return { status: x.responses[0]!.status, lines };
}

t.test('the service’s CSP is kept and the configured one added beside it', async (t) => {
  t.same(await csp('/strict'), { status: 200, lines: [STRICT, SEED] });
  t.same(await csp('/two'), { status: 200, lines: [STRICT, "script-src 'self'", SEED] });
  t.same(await csp('/same'), { status: 200, lines: [SEED] }, 'the same policy is not repeated');
  t.same(await csp('/none'), { status: 200, lines: [SEED] }, 'none from the service: the configured one');
});

t.test('listing the header in remove drops the service’s; gateway answers carry one', async (t) => {
  t.same(await csp('/dropped/strict'), { status: 200, lines: [SEED] });
  t.same(await csp('/api-auth/strict'), { status: 401, lines: [SEED] }, 'a gateway refusal');
  t.same(seen, ['/strict', '/two', '/same', '/none', '/dropped/strict']);
});
