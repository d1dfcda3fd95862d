import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import {
  startFileHarness,
  startHarness,
  mark,
  mockSaw,
  auditOf,
  metricsText,
  metricValue,
  REPO,
  type MockRecordLike,
} from '../helpers/harness.js';
import { rawExchange, head } from '../helpers/raw-http.js';
import { isGatewayError, hasSecurityHeaders } from '../helpers/gateway-errors.js';

/**
 * Framing and connection handling at the proxy, found by an adversarial audit: requests the
 * HTTP server treats specially (an unknown Expect, an upgrade that carries a body, an
 * HTTP/1.0 chunked body) are judged like any request, and what the upstream receives is
 * checked, not only the client's status.
 */

const ROUTES = (YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as { routes: unknown[] })
  .routes;

const { h, token } = await startFileHarness(t, {
  config: YAML.stringify({
    listen: { max_requests_per_socket: 3 },
    routes: [
      ...ROUTES,
      // after the shipped /api/** (which takes /api/…): /apix/… comes here, and must keep its path
      {
        name: 'rest',
        path: '/**',
        strip_prefix: '/api',
        websocket: true,
        policies: { auth: { require: ['none'] } },
      },
    ],
  }),
});

const receipt = (marker: string) => `{"merchant":"Cafe ${marker}","total":12.5,"date":"2024-01-01"}`;

t.test('an Expect other than 100-continue is ignored: the request is judged and forwarded', async (t) => {
  await h.clearMock();
  const m = mark();
  const body = receipt(m);
  const x = await rawExchange(
    h.url,
    head(`POST /api/receipts?p=${m} HTTP/1.1`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Content-Type', 'application/json'],
      ['Content-Length', String(body.length)],
      ['Expect', 'x-custom'],
      ['Connection', 'close'],
    ]) + body,
  );
  t.same(
    x.responses.map((r) => r.status),
    [201],
    'the receipt was created (no bare 417 from the HTTP server)',
  );
  hasSecurityHeaders(t, x.responses[0]!);
  const recs = (await h.mockRequests()).filter((r) => r.path.includes(m));
  t.equal(recs.length, 1, 'forwarded once');
  t.equal(recs[0]?.body_size, body.length, 'with its whole body');
  t.equal(recs[0]?.headers.expect, undefined, 'without the Expect header');

  // unauthenticated: the SPEC's 401, audited, never forwarded
  const m2 = mark();
  const y = await rawExchange(
    h.url,
    head(`POST /api/receipts?p=${m2} HTTP/1.1`, [
      ['Host', 'x'],
      ['Content-Type', 'application/json'],
      ['Content-Length', String(body.length)],
      ['Expect', 'x-custom'],
      ['Connection', 'close'],
    ]) + body,
  );
  t.equal(y.responses.length, 1);
  isGatewayError(t, y.responses[0], 401, 'unauthorized');
  const lines = await auditOf(h, y.responses[0]?.headers['x-request-id']);
  t.same(
    lines.map((l) => l.event),
    ['auth_failure'],
    'audited',
  );
  t.notOk(await mockSaw(h, m2), 'never forwarded');
});

t.test('an upgrade to another protocol (h2c) with a body: 400, closed, never forwarded', async (t) => {
  for (const [name, framing, bytes] of [
    ['Content-Length', ['Content-Length', 'LEN'], 'BODY'],
    ['chunked', ['Transfer-Encoding', 'chunked'], 'CHUNKED'],
  ] as const) {
    await t.test(name, async (t) => {
      const m = mark();
      const body = receipt(m);
      const chunked = `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
      const x = await rawExchange(
        h.url,
        head(`POST /api/receipts?p=${m} HTTP/1.1`, [
          ['Host', 'x'],
          ['Authorization', `Bearer ${token}`],
          ['Content-Type', 'application/json'],
          ['Connection', 'Upgrade, HTTP2-Settings'],
          ['Upgrade', 'h2c'],
          ['HTTP2-Settings', 'AAMAAABkAAQCAAAAAAIAAAAA'],
          [framing[0], framing[1] === 'LEN' ? String(body.length) : framing[1]],
        ]) + (bytes === 'BODY' ? body : chunked),
      );
      t.equal(x.responses.length, 1);
      isGatewayError(t, x.responses[0], 400, 'bad_request');
      t.ok(x.closed, 'the connection is closed');
      const [line] = await auditOf(h, x.responses[0]?.headers['x-request-id']);
      t.same(line?.rule_ids, ['upgrade-body'], 'audited with its rule id');
      // (before: forwarded as a POST with an empty body, and answered 201)
      t.notOk(await mockSaw(h, m), 'never forwarded');
    });
  }
  // control: without a body the upgrade is ignored and the request served (websocket.test.ts)
  const m = mark();
  const x = await rawExchange(
    h.url,
    head(`GET /api/health?p=${m} HTTP/1.1`, [
      ['Host', 'x'],
      ['Connection', 'Upgrade'],
      ['Upgrade', 'h2c'],
      ['Content-Length', '0'],
    ]),
  );
  t.same(
    x.responses.map((r) => r.status),
    [200],
  );
  t.ok(await mockSaw(h, m));
});

t.test('Transfer-Encoding in an HTTP/1.0 request: 400, closed, nothing forwarded', async (t) => {
  const m = mark();
  const body = receipt(m);
  const smuggled = head(`GET /api/health?p=${m}-smuggled HTTP/1.1`, [['Host', 'x']]);
  const x = await rawExchange(
    h.url,
    head(`POST /api/receipts?p=${m} HTTP/1.0`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Content-Type', 'application/json'],
      ['Connection', 'keep-alive'],
      ['Transfer-Encoding', 'chunked'],
    ]) + `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n${smuggled}`,
  );
  t.equal(x.responses.length, 1, 'one answer: the bytes after the body are not read as a request');
  isGatewayError(t, x.responses[0], 400, 'bad_request');
  t.ok(x.closed, 'the connection is closed');
  const [line] = await auditOf(h, x.responses[0]?.headers['x-request-id']);
  t.same(line?.rule_ids, ['framing-te-http10']);
  t.notOk(await mockSaw(h, m), 'neither request was forwarded');
});

t.test('a WebSocket upgrade keeps its path when strip_prefix does not end on a segment', async (t) => {
  await h.clearMock();
  const upgrade = (p: string) =>
    head(`GET ${p} HTTP/1.1`, [
      ['Host', 'x'],
      ['Origin', 'http://localhost:10000'],
      ['Connection', 'Upgrade'],
      ['Upgrade', 'websocket'],
      ['Sec-WebSocket-Version', '13'],
      ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
    ]);
  const x = await rawExchange(h.url, upgrade('/apix/ws/echo'));
  t.equal(x.responses[0]?.status, 404, "the upstream's answer (it has no such path)");
  t.ok(x.closed);
  const recs = (await h.mockRequests()) as (MockRecordLike & { websocket?: boolean })[];
  t.same(
    recs.map((r) => [r.path, r.websocket]),
    [['/apix/ws/echo', true]],
    'the upstream was asked for /apix/ws/echo, the path the gateway judged (not x/ws/echo)',
  );
});

t.test('requests pipelined past max_requests_per_socket are never read: the connection closes', async (t) => {
  const m = mark();
  const get = (i: number) => head(`GET /api/health?p=${m}-${i} HTTP/1.1`, [['Host', 'x']]);
  const x = await rawExchange(h.url, [0, 1, 2, 3, 4].map(get).join(''));
  t.same(
    x.responses.map((r) => r.status),
    [200, 200, 200],
    'the three allowed are answered (no bare 503s from the HTTP server for the others)',
  );
  t.equal(x.responses[2]?.headers.connection, 'close');
  t.ok(x.closed, 'the connection closes after the last allowed answer');
  t.same(
    (await h.mockRequests()).filter((r) => r.path.includes(m)).map((r) => r.path),
    [0, 1, 2].map((i) => `/api/health?p=${m}-${i}`),
    'only the allowed ones were forwarded',
  );
});

t.test('WebSocket upgrades to an upstream that answers oddly', async (t) => {
  // an upstream answering each connection's first request by its target, recording every byte
  let received = '';
  const answers: Record<string, string> = {
    // a handler that answers 101 but whose server goes on reading HTTP on the connection: a
    // tunnel to it would carry the client's next bytes to it as requests the gateway never judged
    '/ws': 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    // a refusal in a transfer coding the gateway does not decode
    '/ws-gzip': 'HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\ncoded-bytes',
  };
  const upstream = net.createServer((s) => {
    s.on('error', () => {});
    let first = true;
    s.on('data', (d: Buffer) => {
      received += d.toString('latin1');
      if (!first) return;
      first = false;
      const target = /^GET (\S+) /.exec(d.toString('latin1'))?.[1] ?? '';
      if (target === '/ws') s.write(answers[target]!);
      else s.end(answers[target] ?? 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t.teardown(() => upstream.close());
  const hh = await startHarness({
    upstreamUrl: `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`,
    config: YAML.stringify({
      routes: ['/ws', '/ws-gzip'].map((p, i) => ({
        name: `ws${i}`,
        path: p,
        websocket: true,
        policies: { auth: { require: ['none'] } },
      })),
    }),
  });
  t.teardown(() => hh.close());
  const upgrade = (p: string) =>
    head(`GET ${p} HTTP/1.1`, [
      ['Host', 'x'],
      ['Connection', 'Upgrade'],
      ['Upgrade', 'websocket'],
      ['Sec-WebSocket-Version', '13'],
      ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
    ]);

  await t.test('a 101 that is no WebSocket handshake opens no tunnel: 502', async (t) => {
    received = '';
    const m = mark();
    const x = await rawExchange(
      hh.url,
      upgrade('/ws') + head(`GET /api/admin/${m} HTTP/1.1`, [['Host', 'x']]),
      {
        responses: 1,
      },
    );
    isGatewayError(t, x.responses[0], 502, 'bad_gateway');
    t.match(received, /^GET \/ws HTTP\/1\.1\r\n/, 'the upgrade request was sent');
    t.notOk(received.includes(m), 'the bytes after the upgrade request never reached the upstream');
    t.equal(hh.gateway.tunnels.size, 0, 'no tunnel is open');
  });

  await t.test('a refusal in a transfer coding other than chunked: 502, none of its bytes', async (t) => {
    const x = await rawExchange(hh.url, upgrade('/ws-gzip'));
    isGatewayError(t, x.responses[0], 502, 'bad_gateway');
    t.notOk(x.raw.includes('coded-bytes'), 'none of the coded bytes');
    t.ok(x.closed);
  });

  const metrics = await metricsText(hh);
  for (const route of ['ws0', 'ws1'])
    t.equal(metricValue(metrics, 'gateway_upstream_errors_total', { route, kind: 'reset' }), 1, route);
});
