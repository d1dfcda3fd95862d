import t, { type Test } from 'tap';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import YAML from 'yaml';
import { startHarness, type Harness } from '../helpers/harness.js';
import { TestPki } from '../helpers/certs.js';
import { parseResponses } from '../helpers/raw-http.js';

/**
 * Requests pipelined on a connection, their answers still pending upstream, then bytes that do
 * not parse, arriving in several pieces (TLS records, TCP segments). Node's parser reports its
 * error again for every piece read after the bad bytes (a 'clientError' each time), and the
 * connection stays open until the answers are written: arranging "close after the last answer"
 * once per report added a 'finish' listener to that answer per piece, and each of those called
 * socket.destroySoon(), one more 'finish' listener on the socket each (a
 * MaxListenersExceededWarning for both past ten). Once is enough; the answers still go out in
 * order and the connection still closes after the last one.
 */

const PIECES = 15;
const JUNK = '\x01garbage\r\n';

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const leaf = pki.leaf('edge');

/** An upstream that holds every request until released, then answers each with its path. */
async function heldUpstream() {
  const held: { path: string; res: http.ServerResponse }[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    held.push({ path: req.url ?? '', res });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    held,
    release() {
      for (const { path, res } of held.splice(0)) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(path);
      }
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

async function junkAfterPendingAnswers(t: Test, secure: boolean): Promise<void> {
  const up = await heldUpstream();
  const config = secure
    ? YAML.stringify({ listen: { tls: { cert_file: leaf.certFile, key_file: leaf.keyFile } } })
    : undefined;
  const h: Harness = await startHarness({ upstreamUrl: up.url, config });
  t.teardown(async () => {
    await h.close();
    await up.close();
  });

  const warnings: Error[] = [];
  const onWarning = (w: Error) => {
    if (w.name === 'MaxListenersExceededWarning') warnings.push(w);
  };
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));

  // Watch the gateway's own HTTP server: its answers, their connection, its parse errors.
  const server = (h.gateway as unknown as { server: http.Server }).server;
  const answers: http.ServerResponse[] = [];
  let socketFinishMax = 0;
  let destroySoonCalls = 0;
  const watched = new WeakSet<net.Socket>();
  const onRequest = (_req: http.IncomingMessage, res: http.ServerResponse) => {
    answers.push(res);
    const socket = res.socket;
    if (socket === null || watched.has(socket)) return;
    watched.add(socket);
    const destroySoon = socket.destroySoon.bind(socket);
    socket.destroySoon = () => {
      destroySoonCalls++;
      destroySoon();
      socketFinishMax = Math.max(socketFinishMax, socket.listenerCount('finish'));
    };
  };
  let clientErrors = 0;
  let answerFinishMax = 0;
  const onClientError = () => {
    clientErrors++;
    for (const res of answers) answerFinishMax = Math.max(answerFinishMax, res.listenerCount('finish'));
  };
  server.on('request', onRequest);
  server.on('clientError', onClientError);
  t.teardown(() => {
    server.off('request', onRequest);
    server.off('clientError', onClientError);
  });
  const waitFor = async (what: string, check: () => boolean) => {
    const end = Date.now() + 10_000;
    while (!check()) {
      if (Date.now() > end) throw new Error(`gave up waiting: ${what}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  };

  const u = new URL(h.url);
  const port = Number(u.port);
  const client: net.Socket = secure
    ? tls.connect({
        host: u.hostname,
        port,
        servername: 'localhost',
        ca: pki.ca.cert,
        ALPNProtocols: ['http/1.1'],
      })
    : net.connect(port, u.hostname);
  client.on('error', () => {});
  const received: Buffer[] = [];
  client.on('data', (d: Buffer) => received.push(d));
  const closed = new Promise<void>((r) => client.once('close', () => r()));
  await new Promise((r) => client.once(secure ? 'secureConnect' : 'connect', r));

  const get = (n: number) => `GET /api/health?n=${n} HTTP/1.1\r\nHost: x\r\n\r\n`;
  client.write(get(1) + get(2));
  await waitFor('both requests reached the gateway', () => answers.length === 2);
  const answerFinishBefore = Math.max(...answers.map((res) => res.listenerCount('finish')));
  const socketFinishBefore = answers[0]!.socket!.listenerCount('finish');
  // the bad bytes, one piece at a time: each read separately (its own TLS record or segment)
  for (let i = 1; i <= PIECES; i++) {
    client.write(JUNK);
    await waitFor(`parse error ${i}`, () => clientErrors >= i);
  }
  t.equal(clientErrors, PIECES, 'Node reported the parse error once per piece');
  await waitFor('the upstream holds the forwarded requests', () => up.held.length === 2);
  up.release();

  let timer: NodeJS.Timeout | undefined;
  const closedInTime = await Promise.race([
    closed.then(() => true),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 10_000))),
  ]);
  clearTimeout(timer);
  t.ok(closedInTime, 'the gateway closed the connection after the last answer');
  const { responses } = parseResponses(Buffer.concat(received), true);
  t.same(
    responses.map((r) => [r.status, r.body.toString()]),
    [
      [200, '/api/health?n=1'],
      [200, '/api/health?n=2'],
    ],
    'both pending answers went out, in order',
  );
  t.equal(responses[1]?.headers.connection, 'close', 'the last one announces the close');

  t.ok(
    answerFinishMax <= answerFinishBefore + 1,
    `one 'finish' listener more on the last answer at most (${answerFinishBefore} before, ${answerFinishMax} after)`,
  );
  // Node itself calls destroySoon() after an answer without keep-alive; the gateway once more
  t.ok(destroySoonCalls <= 2, `destroySoon() called ${destroySoonCalls} times, not once per piece`);
  t.ok(
    socketFinishMax <= socketFinishBefore + 2,
    `'finish' listeners on the socket stay few (${socketFinishBefore} before, at most ${socketFinishMax})`,
  );
  // warnings are emitted on the next tick
  await new Promise((r) => setImmediate(r));
  t.same(
    warnings.map((w) => w.message),
    [],
    'no MaxListenersExceededWarning',
  );
}

t.test('over TLS: parse errors in many records after pending answers', (t) =>
  junkAfterPendingAnswers(t, true),
);
t.test('over TCP: parse errors in many segments after pending answers', (t) =>
  junkAfterPendingAnswers(t, false),
);
