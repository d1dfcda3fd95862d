import t from 'tap';
import net from 'node:net';
import http from 'node:http';
import { startHarness } from '../helpers/harness.js';
import { parseResponses } from '../helpers/raw-http.js';
import { eventually } from '../helpers/wait.js';

/**
 * Graceful shutdown and keep-alive: a connection whose request is in flight when the
 * gateway starts draining closes once that request is answered, instead of staying open
 * (idle) until keep_alive_timeout or shutdown_timeout and holding the shutdown that long.
 */

/** A raw client connection: what it received, and whether the server closed it. */
function client(url: string) {
  const u = new URL(url);
  const socket = net.connect(Number(u.port), u.hostname);
  const state = { data: Buffer.alloc(0), closedByServer: false };
  socket.on('data', (d: Buffer) => (state.data = Buffer.concat([state.data, d])));
  socket.on('error', () => {});
  const ended = new Promise<void>((resolve) =>
    socket.once('end', () => {
      state.closedByServer = true;
      resolve();
    }),
  );
  return { socket, state, ended };
}

/** Resolves with `p`'s value, or 'pending' when it has not settled within `ms` (a bound, not a measure). */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'pending'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<'pending'>((r) => (timer = setTimeout(() => r('pending'), ms))),
  ]).finally(() => clearTimeout(timer));
}

t.test('an answer still to come when draining starts closes its keep-alive connection', async (t) => {
  const h = await startHarness({ config: 'listen: { shutdown_timeout: 60s, keep_alive_timeout: 60s }' });
  t.teardown(() => h.close());
  const token = await h.login();
  await h.clearMock();
  const c = client(h.url);
  t.teardown(() => c.socket.destroy());
  c.socket.write(
    `GET /api/slow?ms=600 HTTP/1.1\r\nHost: receipts.example\r\nAuthorization: Bearer ${token}\r\nX-Request-Id: drain-ka\r\n\r\n`,
  );
  await eventually('the slow request reached the mock', async () =>
    (await h.mockRequests()).some((r) => r.path.startsWith('/api/slow')),
  );
  const closing = h.gateway.close();
  await eventually('the answer arrived', () => parseResponses(c.state.data, false).responses.length === 1);
  const [res] = parseResponses(c.state.data, false).responses;
  t.equal(res!.status, 200);
  t.same(res!.json, { slept_ms: 600 });
  t.equal(res!.headers.connection, 'close', 'the answer announces the close');
  t.equal(res!.headers['keep-alive'], undefined, 'and no keep-alive');
  t.not(await within(c.ended, 10_000), 'pending', 'the gateway closed the connection after the answer');
  t.ok(c.state.closedByServer);
  t.not(await within(closing, 10_000), 'pending', 'shutdown finished without waiting for the deadline');
  const audit = await h.audit();
  t.same(
    // (auth_success lines are sampled: only the access line is certain)
    audit
      .filter((l) => l.request_id === 'drain-ka' && l.event !== 'auth_success')
      .map((l) => [l.event, l.status]),
    [['api_access', 200]],
    'the drained request was audited',
  );
});

t.test('an answer already streaming when draining starts ends its connection when done', async (t) => {
  let finish: (() => void) | undefined;
  const upstream = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first,');
    finish = () => res.end('last');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    upstream.closeAllConnections();
    upstream.close();
  });
  const h = await startHarness({
    upstreamUrl: `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`,
    config: 'listen: { shutdown_timeout: 60s, keep_alive_timeout: 60s }',
  });
  t.teardown(() => h.close());
  const c = client(h.url);
  t.teardown(() => c.socket.destroy());
  c.socket.write('GET /api/health HTTP/1.1\r\nHost: receipts.example\r\n\r\n');
  await eventually('the head and the first chunk arrived', () => c.state.data.includes('first,'));
  t.match(c.state.data.toString('latin1'), /\r\nConnection: keep-alive\r\n/i, 'announced as keep-alive');
  const closing = h.gateway.close();
  // let the gateway see the shutdown before the upstream finishes
  await new Promise((r) => setImmediate(r));
  finish!();
  t.not(await within(c.ended, 10_000), 'pending', 'the gateway closed the connection after the answer');
  const [res] = parseResponses(c.state.data, true).responses;
  t.equal(res!.status, 200);
  t.equal(res!.body.toString(), 'first,last', 'the whole answer was delivered first');
  t.not(await within(closing, 10_000), 'pending', 'shutdown finished without waiting for the deadline');
});

t.test('a connection that never sent a byte does not hold the shutdown', async (t) => {
  const h = await startHarness({
    config:
      'listen: { shutdown_timeout: 60s, header_timeout: 60s, request_timeout: 120s, keep_alive_timeout: 60s }',
  });
  t.teardown(() => h.close());
  // a preconnect: connected, nothing sent
  const silent = client(h.url);
  t.teardown(() => silent.socket.destroy());
  await new Promise((r) => silent.socket.once('connect', r));
  // a keep-alive connection, idle after its answer
  const idle = client(h.url);
  t.teardown(() => idle.socket.destroy());
  idle.socket.write('GET /api/health HTTP/1.1\r\nHost: receipts.example\r\n\r\n');
  await eventually('the answer arrived', () => parseResponses(idle.state.data, false).responses.length === 1);
  await eventually('the gateway counts both connections', async () =>
    /^gateway_open_connections 2$/m.test(await (await fetch(`${h.adminUrl}/metrics`)).text()),
  );
  const closing = h.gateway.close();
  t.not(await within(closing, 10_000), 'pending', 'shutdown finished without waiting for the deadline');
  const gone = (s: net.Socket) => new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r())));
  t.not(await within(gone(silent.socket), 10_000), 'pending', 'the silent connection was closed');
  t.not(await within(idle.ended, 10_000), 'pending', 'the idle keep-alive connection was closed');
});
