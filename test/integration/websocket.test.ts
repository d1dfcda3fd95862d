import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { IncomingMessage } from 'node:http';
import YAML from 'yaml';
import { WebSocket } from 'ws';
import { startHarness, REPO, type Harness, type MockRecordLike } from '../helpers/harness.js';

const ORIGIN_OK = 'http://localhost:10000';
const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const ROUTES = (YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as { routes: unknown[] })
  .routes;

const CONFIG = YAML.stringify({
  // every auth_success line is read below (the shipped config samples them)
  policies: { auth: { audit_success_sample_rate: 1 } },
  routes: [
    { name: 'ws', methods: ['GET'], path: '/api/ws/echo', websocket: true },
    {
      name: 'ws-limited',
      methods: ['GET'],
      path: '/limited/api/ws/echo',
      strip_prefix: '/limited',
      websocket: true,
      policies: {
        rate_limit: {
          enabled: true,
          default: 'off',
          route_rules: [{ name: 'ws', limits: '3 per minute', key: 'ip' }],
        },
      },
    },
    ...ROUTES,
  ],
});

type MockRecord = MockRecordLike & { websocket?: boolean; status?: number };

interface Refusal {
  status: number;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown>;
}

/** Open a WebSocket; resolves with the socket and the 101 response, or with the refusal. */
function open(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ ws: WebSocket; res: IncomingMessage } | Refusal> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { 'user-agent': 'ws-test/1.0', ...headers } });
    let upgradeRes: IncomingMessage | undefined;
    ws.once('upgrade', (res) => (upgradeRes = res));
    ws.once('open', () => resolve({ ws, res: upgradeRes! }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        ws.terminate();
        resolve({
          status: res.statusCode!,
          headers: res.headers,
          body: JSON.parse(body) as Record<string, unknown>,
        });
      });
    });
    ws.once('error', (err) => {
      if (!/Unexpected server response/.test(err.message)) reject(err);
    });
  });
}

function isRefusal(r: { ws: WebSocket; res: IncomingMessage } | Refusal): r is Refusal {
  return (r as Refusal).status !== undefined;
}

/** Send raw bytes, collect the whole answer until the gateway closes the connection. */
function raw(h: Harness, text: string): Promise<string> {
  const u = new URL(h.url);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(u.port), u.hostname, () => s.write(text));
    let out = '';
    s.on('data', (d) => (out += d.toString('latin1')));
    s.on('close', () => resolve(out));
    s.on('error', reject);
  });
}

const upgradeHead = (p: string, extra: string) =>
  `GET ${p} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: raw/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: ${ORIGIN_OK}\r\n${extra}\r\n`;

async function metric(h: Harness, name: string): Promise<number> {
  const text = await (await fetch(`${h.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? NaN : Number(line.split(' ').pop());
}

async function until(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200 && !(await check()); i++) await new Promise((r) => setTimeout(r, 10));
}

const wsRecords = async (h: Harness) =>
  ((await h.mockRequests()) as MockRecord[]).filter((r) => r.websocket === true);

t.test('WebSocket upgrades under the route policies', async (t) => {
  const h = await startHarness({ config: CONFIG });
  t.teardown(() => h.close());
  const token = await h.login();
  const wsUrl = `${h.url.replace('http', 'ws')}/api/ws/echo`;
  const good = { authorization: `Bearer ${token}`, origin: ORIGIN_OK };

  t.test('allowed: authenticated, allowed origin → tunnel, echo, audited, counted', async (t) => {
    await h.clearMock();
    const r = await open(`${wsUrl}?room=1`, { ...good, 'x-request-id': 'ws-allowed-1' });
    if (isRefusal(r)) throw new Error(`refused: ${JSON.stringify(r)}`);
    t.equal(r.res.statusCode, 101);
    t.equal(r.res.headers['x-request-id'], 'ws-allowed-1');
    t.equal(r.res.headers['x-content-type-options'], 'nosniff', 'the response phase ran on the 101');
    t.equal(r.res.headers.server, undefined);
    t.equal(await metric(h, 'gateway_websocket_tunnels'), 1);
    const text = new Promise<string>((resolve) => r.ws.once('message', (d: Buffer) => resolve(d.toString())));
    r.ws.send('hello through the gateway');
    t.equal(await text, 'hello through the gateway');
    const big = Buffer.alloc(300_000, 7);
    const bin = new Promise<Buffer>((resolve) => r.ws.once('message', (d: Buffer) => resolve(d)));
    r.ws.send(big);
    t.ok((await bin).equals(big), 'a 300 KB binary message round-trips');
    const closed = new Promise<number>((resolve) => r.ws.once('close', (code: number) => resolve(code)));
    r.ws.close(1000, 'bye');
    t.equal(await closed, 1000);
    await until(async () => (await metric(h, 'gateway_websocket_tunnels')) === 0);
    t.equal(await metric(h, 'gateway_websocket_tunnels'), 0);

    const recs = await wsRecords(h);
    t.equal(recs.length, 1);
    const rec = recs[0]!;
    t.equal(rec.path, '/api/ws/echo?room=1');
    t.equal(rec.status, 101);
    t.equal(rec.headers['x-auth-subject'], 'alice');
    t.equal(rec.headers['x-request-id'], 'ws-allowed-1');
    t.equal(rec.headers['x-forwarded-proto'], 'http');
    t.equal(rec.headers['x-forwarded-for'], '127.0.0.1');
    t.equal(rec.headers.upgrade, 'websocket');
    t.equal(rec.headers.authorization, `Bearer ${token}`);
    const audit = (await h.audit()).filter((l) => l.request_id === 'ws-allowed-1');
    t.same(
      audit.map((l) => [l.event, l.status]),
      [
        ['api_access', 101],
        ['auth_success', 101],
      ],
    );
  });

  t.test('unauthenticated: 401 JSON, nothing reaches the upstream', async (t) => {
    await h.clearMock();
    const r = await open(wsUrl, { origin: ORIGIN_OK, 'x-request-id': 'ws-anon-1' });
    if (!isRefusal(r)) throw new Error('opened');
    t.equal(r.status, 401);
    t.same(r.body, { error: 'unauthorized', message: r.body.message, request_id: 'ws-anon-1' });
    t.match(r.headers['www-authenticate'], /^Bearer/);
    t.equal(r.headers['x-content-type-options'], 'nosniff');
    t.equal(r.headers.connection, 'close');
    const bad = await open(wsUrl, { origin: ORIGIN_OK, authorization: 'Bearer not.a.jwt' });
    t.equal(isRefusal(bad) && bad.status, 401);
    t.same(await wsRecords(h), []);
    const audit = (await h.audit()).filter((l) => l.request_id === 'ws-anon-1');
    t.same(
      audit.map((l) => [l.event, l.status]),
      [['auth_failure', 401]],
    );
  });

  t.test('foreign origin: 403 cors_origin_denied', async (t) => {
    await h.clearMock();
    const r = await open(wsUrl, { authorization: `Bearer ${token}`, origin: 'https://evil.example' });
    if (!isRefusal(r)) throw new Error('opened');
    t.equal(r.status, 403);
    t.equal(r.body.error, 'cors_origin_denied');
    t.same(await wsRecords(h), []);
  });

  t.test('an attack pattern in the upgrade URL: 403 request_blocked', async (t) => {
    await h.clearMock();
    const r = await open(`${wsUrl}?room=%3Cscript%3Ealert(1)%3C/script%3E`, good);
    if (!isRefusal(r)) throw new Error('opened');
    t.equal(r.status, 403);
    t.equal(r.body.error, 'request_blocked');
    t.same(await wsRecords(h), []);
  });

  t.test('rate limited: the 4th upgrade within the minute gets 429', async (t) => {
    await h.clearMock();
    const limited = `${h.url.replace('http', 'ws')}/limited/api/ws/echo`;
    for (let i = 0; i < 3; i++) {
      const r = await open(limited, good);
      if (isRefusal(r)) throw new Error(`refused early: ${JSON.stringify(r)}`);
      r.ws.close();
    }
    const r = await open(limited, good);
    if (!isRefusal(r)) throw new Error('opened');
    t.equal(r.status, 429);
    t.equal(r.body.error, 'rate_limited');
    t.match(r.headers['retry-after'], /^\d+$/);
    const recs = await wsRecords(h);
    t.equal(recs.length, 3, 'three tunnels reached the upstream, the refused one did not');
    t.ok(
      recs.every((x) => x.path === '/api/ws/echo'),
      'strip_prefix applies to upgrades',
    );
  });

  t.test('bad upgrade requests: 400 JSON, connection closed, nothing forwarded', async (t) => {
    await h.clearMock();
    const auth = `Authorization: Bearer ${token}\r\n`;
    const cases: [string, string, RegExp][] = [
      [
        'malformed key',
        `${auth}Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n`,
        /Sec-WebSocket-Key/,
      ],
      ['missing key', `${auth}Sec-WebSocket-Version: 13\r\n`, /Sec-WebSocket-Key/],
      [
        'key of 15 bytes',
        `${auth}Sec-WebSocket-Key: ${Buffer.alloc(15, 1).toString('base64')}=\r\nSec-WebSocket-Version: 13\r\n`,
        /Sec-WebSocket-Key/,
      ],
      [
        'version 8',
        `${auth}Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 8\r\n`,
        /Sec-WebSocket-Version/,
      ],
      [
        'a body',
        `${auth}Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\nContent-Length: 5\r\n`,
        /no body/,
      ],
    ];
    for (const [name, extra, message] of cases) {
      const out = await raw(h, upgradeHead('/api/ws/echo', extra) + (name === 'a body' ? 'hello' : ''));
      t.match(out, /^HTTP\/1\.1 400 Bad Request\r\n/, name);
      t.match(out, /\r\nconnection: close\r\n/i, `${name}: connection closed`);
      const body = JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4)) as Record<string, string>;
      t.equal(body.error, 'bad_request', name);
      t.match(body.message, message, name);
      if (name === 'version 8')
        t.match(out, /\r\nsec-websocket-version: 13\r\n/i, 'advertises the supported version');
    }
    const post = await raw(
      h,
      `POST /api/ws/echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n`,
    );
    t.match(post, /^HTTP\/1\.1 400 /, 'POST upgrade');
    t.same(await wsRecords(h), []);
  });

  t.test('routes without websocket: true refuse upgrades; unknown paths get 404', async (t) => {
    await h.clearMock();
    const r = await open(`${h.url.replace('http', 'ws')}/api/receipts`, good);
    if (!isRefusal(r)) throw new Error('opened');
    t.equal(r.status, 400);
    t.equal(r.body.error, 'bad_request');
    t.match(r.body.message as string, /not accepted on this route/);
    const n = await open(`${h.url.replace('http', 'ws')}/nope`, good);
    t.equal(isRefusal(n) && n.status, 404);
    t.equal(isRefusal(n) && n.body.error, 'not_found');
    t.same(await h.mockRequests(), []);
  });

  t.test('another upgrade protocol (h2c) is answered as the plain request it also is', async (t) => {
    await h.clearMock();
    const out = await raw(
      h,
      'GET /api/health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n',
    );
    t.match(out, /^HTTP\/1\.1 200 OK\r\n/);
    t.match(out, /\r\nconnection: close\r\n/i);
    t.match(out, /\{"status":"ok"\}$/);
    const [rec] = await h.mockRequests();
    t.equal(rec!.headers.upgrade, undefined, 'the Upgrade header is hop-by-hop and not forwarded');
    t.equal(rec!.headers['http2-settings'], undefined);
  });
});

t.test('shutdown closes open tunnels with 1001 going away', async (t) => {
  const h = await startHarness({ config: CONFIG });
  const token = await h.login();
  const url = `${h.url.replace('http', 'ws')}/api/ws/echo`;
  const opened = await Promise.all([
    open(url, { authorization: `Bearer ${token}`, origin: ORIGIN_OK }),
    open(url, { authorization: `Bearer ${token}`, origin: ORIGIN_OK }),
  ]);
  const sockets = opened.map((r) => {
    if (isRefusal(r)) throw new Error('refused');
    return r.ws;
  });
  t.equal(h.gateway.tunnels.size, 2);
  const closes = sockets.map(
    (ws) =>
      new Promise<[number, string]>((resolve) =>
        ws.once('close', (code: number, reason: Buffer) => resolve([code, reason.toString()])),
      ),
  );
  // one tunnel is in the middle of a large message when the shutdown starts
  sockets[0]!.send(Buffer.alloc(2_000_000, 1));
  await h.close();
  t.same(await Promise.all(closes), [
    [1001, 'gateway shutting down'],
    [1001, 'gateway shutting down'],
  ]);
  t.equal(h.gateway.tunnels.size, 0);
  t.equal(await h.gateway.metrics.websocketTunnels.get().then((m) => m.values[0]?.value), 0);
});
