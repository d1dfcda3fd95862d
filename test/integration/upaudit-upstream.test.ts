import t from 'tap';
import net from 'node:net';
import { startHarness, type Harness } from '../helpers/harness.js';
import { rawExchange, head } from '../helpers/raw-http.js';

/**
 * A misbehaving upstream, played by a raw TCP server: an upstream that answers before it read
 * the request body (the client's connection must not hang with the rest of the body unread).
 */

/** Each request head the upstream read ("METHOD path"), in order. */
const seen: string[] = [];

let h: Harness;
let upstream: net.Server;
const sockets = new Set<net.Socket>();

t.before(async () => {
  upstream = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = '';
    let early = false;
    s.on('data', (d: Buffer) => {
      if (early) return; // the rest of a body it never reads
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const [method, path = ''] = buf.slice(0, end).split(' ');
        seen.push(`${method} ${path}`);
        buf = buf.slice(end + 4);
        if (path.startsWith('/u/early')) {
          // answers from the head alone, keeps the connection, never reads the body
          early = true;
          s.write(
            'HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\ntoo big',
          );
        } else {
          s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`);
        }
      }
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  h = await startHarness({
    upstreamUrl: `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`,
    config: `
routes:
  - name: up
    methods: [GET, POST]
    path: /u/**
    policies: { auth: { require: [none] }, csrf: { enabled: false }, pattern_block: { enabled: false } }
`,
  });
});

t.teardown(async () => {
  await h.close();
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => upstream.close(() => r()));
});

const get = (path: string) => head(`GET ${path} HTTP/1.1`, [['Host', 'gw.example']]);

async function audited(requestId: string | undefined): Promise<Record<string, unknown>[]> {
  return (await h.audit()).filter((l) => l.request_id === requestId);
}

t.test(
  'an upstream that answers before it read a large body: its answer, then the connection closes',
  async (t) => {
    const body = 'x'.repeat(600_000);
    const t0 = Date.now();
    const x = await rawExchange(
      h.url,
      [
        head('POST /u/early HTTP/1.1', [
          ['Host', 'gw.example'],
          ['Content-Type', 'application/octet-stream'],
          ['Content-Length', String(body.length)],
        ]),
        body.slice(0, 1000),
        // the rest of the body, then a request the gateway must not serve on this connection
        body.slice(1000) + get('/u/behind-early'),
      ],
      { pauseMs: 200, waitMs: 5000 },
    );
    t.equal(x.responses.length, 1, 'one answer');
    const r = x.responses[0];
    t.equal(r?.status, 413, "the upstream's answer");
    t.equal(r?.body.toString(), 'too big');
    t.equal(r?.headers['x-request-id'] !== undefined, true);
    t.equal(r?.headers.connection, 'close', 'Connection: close: the rest of the body is not read');
    t.equal(x.closed, true, 'the gateway closes the connection');
    // (it hung until listen.request_timeout, 60 s, with the rest of the body unread)
    t.ok(Date.now() - t0 < 4000, 'promptly');
    t.notOk(seen.includes('GET /u/behind-early'), 'the request behind the body never reached the upstream');
    const lines = await audited(r?.headers['x-request-id']);
    t.equal(lines.length, 1);
    t.equal(lines[0]?.status, 413, 'audited with the status the client got');
  },
);
