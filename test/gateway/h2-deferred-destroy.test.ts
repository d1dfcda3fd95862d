import t, { type Test } from 'tap';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import type tls from 'node:tls';
import { deferDestroy, TlsConnections } from '../../gateway/tls.js';

// Node destroys a server session from inside native callbacks (a protocol error, a read error);
// deferDestroy moves the teardown to the next turn of the event loop (see gateway/tls.ts).
/** A session destroyed from its first stream's handler: whether it was destroyed inside the call, and its error. */
async function destroyFromStream(t: Test, wrap: (server: http2.Http2Server) => void): Promise<void> {
  const server = http2.createServer();
  wrap(server);
  const seen: { destroyed: boolean }[] = [];
  const closed = new Promise<Error | undefined>((resolve) => {
    server.on('session', (session) => {
      let err: Error | undefined;
      session.on('error', (e) => (err = e));
      session.on('close', () => resolve(err));
      session.on('stream', (stream) => {
        stream.on('error', () => {});
        session.destroy(new Error('boom'));
        session.destroy(); // idempotent while scheduled
        seen.push({ destroyed: session.destroyed });
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  client.on('error', () => {});
  const req = client.request({ ':path': '/' });
  req.on('error', () => {});
  req.end();
  const err = await closed;
  t.same(seen, [{ destroyed: false }], 'not destroyed inside the call');
  t.equal(err?.message, 'boom', 'the first error is the one emitted');
  client.destroy();
  await new Promise<void>((r) => server.close(() => r()));
}

t.test('a wrapped session is destroyed on the next turn, once, with its error', (t) =>
  destroyFromStream(t, (server) => server.on('session', (session) => deferDestroy(session))),
);

t.test("the TLS listener's connection tracking wraps every HTTP/2 session", (t) =>
  destroyFromStream(t, (server) => new TlsConnections(server as unknown as tls.Server)),
);
