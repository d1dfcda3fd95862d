/**
 * Cross-site WebSocket hijacking over real TCP: a browser sends the session cookie with a
 * WebSocket handshake from any site (no CORS preflight, no same-origin policy on the
 * socket). A cookie-authenticated upgrade from a foreign Origin must be refused by `csrf`
 * even where `cors` is off or allows any origin; the upstream never sees it.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { WebSocket } from 'ws';
import { startHarness, REPO, type MockRecordLike } from '../helpers/harness.js';

const ROUTES = (YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as { routes: unknown[] })
  .routes;
const ws = (name: string, prefix: string, policies: Record<string, unknown>) => ({
  name,
  methods: ['GET'],
  path: `${prefix}/api/ws/echo`,
  strip_prefix: prefix,
  websocket: true,
  policies,
});

const h = await startHarness({
  config: YAML.stringify({
    policies: {
      auth: { jwt: { cookie: 'session' }, audit_success_sample_rate: 0 },
      csrf: { allowed_origins: ['http://localhost:10000'] },
    },
    routes: [
      ws('ws-nocors', '/nocors', { cors: { enabled: false } }),
      ws('ws-anyorigin', '/any', { cors: { origins: '*', allow_credentials: false } }),
      ws('ws-open', '/open', { cors: { enabled: false }, csrf: { enabled: false } }),
      ...ROUTES,
    ],
  }),
});
t.teardown(() => h.close());
const token = await h.login('alice');
const base = h.url.replace('http', 'ws');
const own = `http://${new URL(h.url).host}`;

/** The handshake's status: 101 (then closed at once), or the refusal's status and error code. */
function handshake(prefix: string, headers: Record<string, string>): Promise<[number, string?]> {
  return new Promise((resolve, reject) => {
    const s = new WebSocket(`${base}${prefix}/api/ws/echo`, {
      headers: { 'user-agent': 'Mozilla/5.0 (ws test)', ...headers },
    });
    s.once('open', () => {
      s.close();
      resolve([101]);
    });
    s.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        s.terminate();
        resolve([res.statusCode!, (JSON.parse(body) as { error: string }).error]);
      });
    });
    s.once('error', (err) => {
      if (!/Unexpected server response/.test(err.message)) reject(err);
    });
  });
}

const wsRecords = async () =>
  ((await h.mockRequests()) as (MockRecordLike & { websocket?: boolean })[]).filter((r) => r.websocket);

t.test('a cookie-authenticated upgrade from a foreign site is refused without cors', async (t) => {
  const cookie = `session=${token}`;
  for (const prefix of ['/nocors', '/any']) {
    await h.clearMock();
    t.same(
      await handshake(prefix, {
        cookie,
        origin: 'https://evil.example',
        'x-request-id': `cswsh${prefix.slice(1)}`,
      }),
      [403, 'csrf_rejected'],
      `${prefix}: foreign origin with the session cookie`,
    );
    t.same(
      await handshake(prefix, { cookie, origin: 'null' }),
      [403, 'csrf_rejected'],
      `${prefix}: origin null`,
    );
    t.same(await wsRecords(), [], `${prefix}: no refused handshake reached the upstream`);
    const denied = (await h.audit()).filter((l) => l.request_id === `cswsh${prefix.slice(1)}`);
    t.same(
      denied.map((l) => [l.event, l.status, l.code, l.subject, l.detail]),
      [['access_denied', 403, 'csrf_rejected', 'alice', { check: 'origin' }]],
    );

    t.same(await handshake(prefix, { cookie, origin: own }), [101], `${prefix}: own origin`);
    t.same(
      await handshake(prefix, { cookie, origin: 'http://localhost:10000' }),
      [101],
      `${prefix}: allowed origin`,
    );
    t.same(await handshake(prefix, { cookie }), [101], `${prefix}: no Origin (not a browser)`);
    t.same(
      await handshake(prefix, { authorization: `Bearer ${token}`, origin: 'https://evil.example' }),
      [101],
      `${prefix}: a bearer token is no ambient credential`,
    );
    t.equal((await wsRecords()).length, 4, `${prefix}: the four allowed handshakes were tunnelled`);
  }
});

t.test('with cors on, its allowlist refuses first; with both off, nothing does', async (t) => {
  await h.clearMock();
  t.same(await handshake('', { cookie: `session=${token}`, origin: 'https://evil.example' }), [
    403,
    'cors_origin_denied',
  ]);
  t.same(await wsRecords(), []);
  t.same(await handshake('/open', { cookie: `session=${token}`, origin: 'https://evil.example' }), [101]);
});
