import t from 'tap';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import type tls from 'node:tls';
import { TlsConnections } from '../../gateway/tls.js';

// A session closed (GOAWAY) and then destroyed has its socket ended by Node, which waits for the
// peer to close it (and only then emits the session's 'close'); a peer that never does must not
// keep the socket, its file descriptor and the open-connections gauge up for good.
function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

t.test(
  'a destroyed session whose peer never closes has its socket closed after the grace period',
  async (t) => {
    const server = http2.createServer();
    new TlsConnections(server as unknown as tls.Server, 200);
    let socketClosed = false;
    server.on('connection', (s: net.Socket) => s.once('close', () => (socketClosed = true)));
    const sessionClosed = new Promise<void>((resolve) => {
      server.on('session', (session) => {
        session.on('error', () => {});
        session.on('close', () => resolve());
        session.on('stream', (stream) => {
          stream.on('error', () => {});
          stream.respond({ ':status': 200 });
          // GOAWAY, then destroyed: Node ends the socket and waits for the peer to close it
          session.close();
          setTimeout(() => session.destroy(), 50);
        });
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = net.connect({
      port: (server.address() as AddressInfo).port,
      host: '127.0.0.1',
      allowHalfOpen: true,
    });
    client.on('error', () => {});
    await new Promise((r) => client.once('connect', r));
    const settings = Buffer.alloc(6);
    settings.writeUInt16BE(4, 0); // SETTINGS_INITIAL_WINDOW_SIZE
    settings.writeUInt32BE(0x7fffffff, 2);
    const windowUpdate = Buffer.alloc(4);
    windowUpdate.writeUInt32BE(0x7fffffff - 65535, 0);
    // :method GET, :scheme http, :path /, :authority a
    const headers = Buffer.from([0x82, 0x86, 0x84, 0x41, 0x01, 0x61]);
    client.write(
      Buffer.concat([
        Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
        frame(4, 0, 0, settings),
        frame(8, 0, 0, windowUpdate),
        frame(1, 0x05, 1, headers),
      ]),
    );
    client.resume(); // reads, never ends
    let timer: NodeJS.Timeout | undefined;
    const closedInTime = await Promise.race([
      sessionClosed.then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 3000))),
    ]);
    clearTimeout(timer);
    t.ok(closedInTime, 'the session closed');
    await new Promise((r) => setTimeout(r, 50));
    t.ok(socketClosed, 'its socket closed');
    client.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  },
);
