import net from 'node:net';
import tls from 'node:tls';

/**
 * Raw-socket HTTP/1.1 for the bad-input tests: send exact bytes (smuggling attempts,
 * malformed heads) and parse whatever responses come back, until the server closes the
 * connection, the expected number of responses arrived, or the wait ends.
 */

export interface RawResponse {
  readonly status: number;
  readonly reason: string;
  /** lowercase names; repeated headers joined with ", " */
  readonly headers: Record<string, string>;
  readonly body: Buffer;
  /** the body parsed as JSON, when it is JSON */
  readonly json: Record<string, unknown> | undefined;
}

export interface RawExchange {
  readonly responses: RawResponse[];
  /** the server closed (or reset) the connection */
  readonly closed: boolean;
  /** every byte received, latin1 */
  readonly raw: string;
  /** over TLS: the protocol ALPN settled on (false: none) */
  readonly alpnProtocol?: string | false;
}

export interface RawOptions {
  /** resolve once this many complete responses arrived (default: wait for close) */
  readonly responses?: number;
  /** give up waiting after this long (default 10 s); the exchange then has closed=false */
  readonly waitMs?: number;
  /** write these pieces one after the other, pausing `pauseMs` between them */
  readonly pauseMs?: number;
  /** keep the socket open after the last piece (default true: no half-close) */
  readonly keepOpen?: boolean;
  /** the requests are HEAD: responses carry no body whatever their Content-Length */
  readonly head?: boolean;
  /** connect with TLS (these options; host and port come from the URL), write once it is set up */
  readonly tls?: tls.ConnectionOptions;
}

function parseHead(
  text: string,
): { status: number; reason: string; headers: Record<string, string> } | undefined {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
  if (!m) return undefined;
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { status: Number(m[1]), reason: m[2] ?? '', headers };
}

/** Parse as many complete responses as `buf` holds; returns them and the bytes consumed. */
export function parseResponses(
  buf: Buffer,
  final: boolean,
  headRequest = false,
): { responses: RawResponse[]; used: number } {
  const responses: RawResponse[] = [];
  let at = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', at, 'latin1');
    if (end === -1) break;
    const head = parseHead(buf.subarray(at, end).toString('latin1'));
    if (!head) break;
    let pos = end + 4;
    let body: Buffer;
    const te = head.headers['transfer-encoding'];
    const cl = head.headers['content-length'];
    if (headRequest || head.status === 204 || head.status === 304 || head.status < 200) {
      // no content whatever the framing headers say (RFC 9110 §6.4.1); a 304 may carry the
      // Content-Length of the representation
      body = Buffer.alloc(0);
    } else if (te !== undefined && /chunked/i.test(te)) {
      const parts: Buffer[] = [];
      let complete = false;
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', pos, 'latin1');
        if (lineEnd === -1) break;
        const size = Number.parseInt(buf.subarray(pos, lineEnd).toString('latin1'), 16);
        if (!Number.isFinite(size)) break;
        if (size === 0) {
          const trailerEnd = buf.indexOf('\r\n\r\n', lineEnd, 'latin1');
          if (trailerEnd === -1) break;
          pos = trailerEnd + 4;
          complete = true;
          break;
        }
        if (buf.length < lineEnd + 2 + size + 2) break;
        parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
        pos = lineEnd + 2 + size + 2;
      }
      if (!complete) break;
      body = Buffer.concat(parts);
    } else if (cl !== undefined) {
      const n = Number(cl);
      if (buf.length < pos + n) break;
      body = buf.subarray(pos, pos + n);
      pos += n;
    } else {
      // delimited by close
      if (!final) break;
      body = buf.subarray(pos);
      pos = buf.length;
    }
    let json: Record<string, unknown> | undefined;
    if (/json/i.test(head.headers['content-type'] ?? '')) {
      try {
        json = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
      } catch {
        json = undefined;
      }
    }
    responses.push({ ...head, body, json });
    at = pos;
  }
  return { responses, used: at };
}

/**
 * Connect to `url`'s host:port (with TLS when `opts.tls` is given), write `payload` (pieces
 * with pauses), collect the responses.
 */
export function rawExchange(
  url: string,
  payload: string | Buffer | readonly (string | Buffer)[],
  opts: RawOptions = {},
): Promise<RawExchange> {
  const u = new URL(url);
  const pieces = Array.isArray(payload) ? (payload as (string | Buffer)[]) : [payload as string | Buffer];
  return new Promise((resolve) => {
    const socket: net.Socket =
      opts.tls === undefined
        ? net.connect(Number(u.port), u.hostname)
        : tls.connect({ ...opts.tls, host: u.hostname, port: Number(u.port) });
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const { responses } = parseResponses(all, closed, opts.head === true);
      socket.destroy();
      const alpnProtocol = socket instanceof tls.TLSSocket ? socket.alpnProtocol : undefined;
      resolve({
        responses,
        closed,
        raw: all.toString('latin1'),
        ...(alpnProtocol === undefined || alpnProtocol === null ? {} : { alpnProtocol }),
      });
    };
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      if (opts.responses !== undefined) {
        const { responses } = parseResponses(Buffer.concat(chunks), false, opts.head === true);
        if (responses.length >= opts.responses) finish(false);
      }
    });
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
    const timer = setTimeout(() => finish(false), opts.waitMs ?? 10_000);
    socket.once(opts.tls === undefined ? 'connect' : 'secureConnect', async () => {
      for (let i = 0; i < pieces.length; i++) {
        if (settled || socket.destroyed) return;
        socket.write(
          typeof pieces[i] === 'string' ? Buffer.from(pieces[i] as string, 'latin1') : (pieces[i] as Buffer),
        );
        if (i < pieces.length - 1 && opts.pauseMs) await new Promise((r) => setTimeout(r, opts.pauseMs));
      }
      if (opts.keepOpen === false) socket.end();
    });
  });
}

/** A request head from its parts (CRLF line ends, blank line included). */
export function head(
  requestLine: string,
  headers: readonly (readonly [string, string])[] | readonly string[],
): string {
  const lines = headers.map((h) => (typeof h === 'string' ? h : `${h[0]}: ${h[1]}`));
  return `${requestLine}\r\n${lines.join('\r\n')}${lines.length > 0 ? '\r\n' : ''}\r\n`;
}

/** A raw TCP upstream that answers each request head with the bytes a test chooses. */
export interface RawUpstream {
  readonly url: string;
  /** stops listening and destroys its connections */
  close(): Promise<void>;
}

/**
 * Start a raw upstream on 127.0.0.1. `answer` gets each request head it reads (method and
 * path) and writes what it likes on the socket; returning `'stop-reading'` leaves the rest of
 * that connection's bytes unread (an upstream that answers before it read a body).
 */
export async function startRawUpstream(
  answer: (socket: net.Socket, method: string, path: string) => 'stop-reading' | undefined | void,
): Promise<RawUpstream> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = '';
    let reading = true;
    s.on('data', (d: Buffer) => {
      if (!reading) return;
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); reading && end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const [method = '', path = ''] = buf.slice(0, end).split(' ');
        buf = buf.slice(end + 4);
        if (answer(s, method, path) === 'stop-reading') reading = false;
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
