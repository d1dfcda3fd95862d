import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import YAML from 'yaml';
import {
  startHarness,
  deepMerge,
  metricsText,
  metricValue,
  REPO,
  TEST_SECRET,
  type Harness,
} from '../helpers/harness.js';
import { makeServices } from '../helpers/context.js';
import { compileGeneration, closeGeneration } from '../../gateway/config/compile.js';
import { TestPki, type CertFiles } from '../helpers/certs.js';
import type { TlsManager } from '../../gateway/tls.js';
import { ConfigLoadError, parseConfig } from '../../gateway/config/load.js';

const run = promisify(execFile);

interface Resp {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  socket?: tls.TLSSocket;
}

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const certDir = path.join(pki.dir, 'live');
const leafA = pki.leaf('a');
const sniLeaf = pki.leaf('sni', {
  sans: ['DNS:api.example.test', 'DNS:*.tenants.example.test'],
  cn: 'api.example.test',
});
pki.install(leafA, certDir);

const ORIGIN_OK = 'http://localhost:10000';
const ROUTES = (YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as { routes: unknown[] })
  .routes;

const config = (extra: Record<string, unknown> = {}) =>
  YAML.stringify({
    listen: {
      tls: {
        cert_file: path.join(certDir, 'tls.crt'),
        key_file: path.join(certDir, 'tls.key'),
        max_concurrent_streams: 5,
        certificates: [
          {
            cert_file: sniLeaf.certFile,
            key_file: sniLeaf.keyFile,
            servernames: ['api.example.test', '*.tenants.example.test'],
          },
        ],
      },
      redirect: { port: 0, https_port: 8443 },
    },
    routes: [{ name: 'ws', methods: ['GET'], path: '/api/ws/echo', websocket: true }, ...ROUTES],
    ...extra,
  });

function h1(
  h: Harness,
  p: string,
  opts: {
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    agent?: https.Agent;
    servername?: string;
  } = {},
): Promise<Resp> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      h.url + p,
      {
        method: opts.method ?? 'GET',
        headers: { 'user-agent': 'tls-test/1.0', ...opts.headers },
        ca: pki.ca.cert,
        ...(opts.agent ? { agent: opts.agent } : { agent: false }),
        ...(opts.servername ? { servername: opts.servername } : {}),
      },
      (res) => {
        const socket = res.socket as tls.TLSSocket;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, socket }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

function h2(
  session: http2.ClientHttp2Session,
  p: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Resp> {
  return new Promise((resolve, reject) => {
    const st = session.request({
      ':path': p,
      ':method': opts.method ?? 'GET',
      'user-agent': 'tls-test/1.0',
      ...opts.headers,
    });
    let status = 0;
    let headers: Record<string, string | string[] | undefined> = {};
    let body = '';
    st.setEncoding('utf8');
    st.on('response', (hd) => {
      status = Number(hd[':status']);
      headers = hd as Record<string, string | string[] | undefined>;
    });
    st.on('data', (d: string) => (body += d));
    st.on('end', () => resolve({ status, headers, body }));
    st.on('error', reject);
    if (opts.body !== undefined) st.end(opts.body);
    else st.end();
  });
}

function connectH2(h: Harness, servername?: string): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(h.url, { ca: pki.ca.cert, ...(servername ? { servername } : {}) });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** The peer certificate's serial of a fresh TLS connection. */
function peerSerial(h: Harness, servername = 'localhost'): Promise<string> {
  const u = new URL(h.url);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: u.hostname, port: Number(u.port), servername, ca: pki.ca.cert }, () => {
      const serial = s.getPeerCertificate().serialNumber.toUpperCase();
      s.end();
      resolve(serial);
    });
    s.once('error', reject);
  });
}

async function metric(h: Harness, name: string, labels = ''): Promise<number | undefined> {
  const text = await (await fetch(`${h.adminUrl}/metrics`)).text();
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`${name}${labels} `) || (labels === '' && l.startsWith(`${name} `)));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

function nextReload(m: TlsManager): Promise<'success' | 'error' | 'unchanged'> {
  return new Promise((resolve) => {
    m.onReload = (r) => {
      if (r === 'unchanged') return;
      m.onReload = undefined;
      resolve(r);
    };
  });
}

const closed = (s: net.Socket) =>
  new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));
const serial = (c: CertFiles) => TestPki.serialOf(c.cert);

t.test('edge listener', async (t) => {
  const h = await startHarness({ config: config() });
  t.teardown(() => h.close());
  const token = await h.login();
  const auth = { authorization: `Bearer ${token}` };

  t.test('ALPN offers h2 and http/1.1', async (t) => {
    const s = await connectH2(h);
    t.equal((s.socket as tls.TLSSocket).alpnProtocol, 'h2');
    s.close();
    const u = new URL(h.url);
    const alpn = (protocols: string[]) =>
      new Promise<{ alpn: string | false | null; version: string | null }>((resolve, reject) => {
        const c = tls.connect(
          {
            host: u.hostname,
            port: Number(u.port),
            servername: 'localhost',
            ca: pki.ca.cert,
            ALPNProtocols: protocols,
          },
          () => {
            resolve({ alpn: c.alpnProtocol, version: c.getProtocol() });
            c.end();
          },
        );
        c.once('error', reject);
      });
    t.same(await alpn(['h2', 'http/1.1']), { alpn: 'h2', version: 'TLSv1.3' });
    t.same(await alpn(['http/1.1']), { alpn: 'http/1.1', version: 'TLSv1.3' });
    const r = await h1(h, '/api/health');
    t.equal(r.status, 200, 'a client without ALPN gets HTTP/1.1');
  });

  for (const proto of ['h1', 'h2'] as const) {
    t.test(`key policies over ${proto}`, async (t) => {
      const session = proto === 'h2' ? await connectH2(h) : undefined;
      t.teardown(() => session?.close());
      const req = (
        p: string,
        o: { method?: string; headers?: Record<string, string>; body?: string } = {},
      ) => (session ? h2(session, p, o) : h1(h, p, o));
      await h.clearMock();

      const ok = await req('/api/health');
      t.equal(ok.status, 200);
      t.equal(
        ok.headers['strict-transport-security'],
        'max-age=31536000; includeSubDomains',
        'HSTS over TLS',
      );
      t.equal(ok.headers['x-content-type-options'], 'nosniff');
      t.equal(ok.headers['x-frame-options'], 'SAMEORIGIN');
      t.equal(ok.headers.server, undefined, 'upstream Server header removed');
      t.match(ok.headers['x-request-id'], /^[0-9a-f-]{36}$/);

      const anon = await req('/api/receipts');
      t.equal(anon.status, 401);
      t.equal(JSON.parse(anon.body).error, 'unauthorized');
      t.match(anon.headers['www-authenticate'], /^Bearer/);
      t.equal(
        anon.headers['strict-transport-security'],
        'max-age=31536000; includeSubDomains',
        'gateway errors carry the headers too',
      );

      const attack = await req("/api/receipts?merchant=1'%20OR%20'1'='1", { headers: auth });
      t.equal(attack.status, 403);
      t.equal(JSON.parse(attack.body).error, 'request_blocked');

      const foreign = await req('/api/receipts', { headers: { ...auth, origin: 'https://evil.example' } });
      t.equal(foreign.status, 403);
      t.equal(JSON.parse(foreign.body).error, 'cors_origin_denied');

      const allowedOrigin = await req('/api/receipts', { headers: { ...auth, origin: ORIGIN_OK } });
      t.equal(allowedOrigin.status, 200);
      t.equal(allowedOrigin.headers['access-control-allow-origin'], ORIGIN_OK);

      const unreadBody = await req('/api/receipts', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ notes: 'x'.repeat(200_000) }),
      });
      t.equal(unreadBody.status, 401, 'a refused request with a large unread body gets its answer');
      t.equal(JSON.parse(unreadBody.body).error, 'unauthorized');

      const missing = await req('/nope');
      t.equal(missing.status, 404);
      t.equal(JSON.parse(missing.body).error, 'not_found');

      const receipt = JSON.stringify({ merchant: `TLS ${proto}`, total: 12.5, date: '2024-03-01' });
      const created = await req('/api/receipts', {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: receipt,
      });
      t.equal(created.status, 201, 'a body without Content-Length over h2 is forwarded whole');

      const seen = await h.mockRequests();
      t.same(
        seen.map((r) => `${r.method} ${r.path}`),
        ['GET /api/health', 'GET /api/receipts', 'POST /api/receipts'],
        'refused requests never reached the upstream',
      );
      for (const r of seen) {
        t.equal(r.headers['x-forwarded-proto'], 'https');
        t.equal(r.headers.host !== undefined, true);
        t.equal(
          Object.keys(r.headers).some((k) => k.startsWith(':')),
          false,
          'no pseudo-headers upstream',
        );
      }
      t.equal(seen[1]!.headers['x-auth-subject'], 'alice');
      t.equal(seen[2]!.body_size, Buffer.byteLength(receipt));
      t.equal(seen[0]!.headers['x-forwarded-host'], new URL(h.url).host, ':authority becomes Host');
    });
  }

  t.test('h2: a CONNECT stream gets 400 bad_request, nothing forwarded, the gateway serves on', async (t) => {
    await h.clearMock();
    const session = await connectH2(h);
    const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const st = session.request({ ':method': 'CONNECT', ':authority': 'example.com:443' });
      let status = 0;
      let body = '';
      st.setEncoding('utf8');
      st.on('response', (hd) => (status = Number(hd[':status'])));
      st.on('data', (d: string) => (body += d));
      st.on('end', () => resolve({ status, body }));
      st.on('error', reject);
      st.end();
    });
    t.equal(r.status, 400);
    t.equal((JSON.parse(r.body) as { error: string }).error, 'bad_request');
    t.equal((await h2(session, '/api/health')).status, 200, 'the same session serves on');
    session.close();
    t.equal((await h1(h, '/api/health')).status, 200);
    t.same(
      (await h.mockRequests()).map((m) => m.path),
      ['/api/health', '/api/health'],
      'only the health checks reached the upstream',
    );
  });

  t.test(
    'h2: streams cancelled right after their HEADERS, and a session dropped with streams open',
    async (t) => {
      for (const n of [50, 1, 50]) {
        const session = await connectH2(h);
        session.on('error', () => {});
        for (let i = 0; i < n; i++) {
          const st = session.request({ ':path': `/api/health?cancel=${i}` });
          st.on('error', () => {});
          st.close(http2.constants.NGHTTP2_CANCEL);
        }
        await new Promise((r) => setTimeout(r, 200));
        session.destroy();
      }
      const dropped = await connectH2(h);
      dropped.on('error', () => {});
      for (let i = 0; i < 50; i++) dropped.request({ ':path': '/api/health?dropped' }).on('error', () => {});
      await new Promise((r) => setTimeout(r, 20));
      dropped.destroy();
      await new Promise((r) => setTimeout(r, 500));
      t.equal((await h1(h, '/api/health')).status, 200, 'the gateway serves on');
    },
  );

  t.test('h2: a Host naming another authority than :authority is malformed (RFC 9113 §8.3.1)', async (t) => {
    await h.clearMock();
    // (Node's client turns `host` into :authority, so the frames are written by hand)
    const other = await rawH2(h, 1, (send) =>
      send(headersFrame(1, '/api/health?authority', [literal(38, 'other.example')])),
    );
    t.same(other.statuses, [400]);
    const same = await rawH2(h, 1, (send) =>
      send(headersFrame(1, '/api/health?authority', [literal(38, 'LOCALHOST')])),
    );
    t.same(same.statuses, [200], 'the same authority in both is fine');
    t.equal((await h.mockRequests()).length, 1);
  });

  t.test('oversized heads: 431 over HTTP/1.1, 431 over HTTP/2, nothing forwarded', async (t) => {
    await h.clearMock();
    const big = 'x'.repeat(20_000);
    const u = new URL(h.url);
    const raw = await new Promise<string>((resolve, reject) => {
      const s = tls.connect(
        {
          host: u.hostname,
          port: Number(u.port),
          servername: 'localhost',
          ca: pki.ca.cert,
          ALPNProtocols: ['http/1.1'],
        },
        () =>
          s.write(`GET /api/health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t/1\r\nX-Big: ${big}\r\n\r\n`),
      );
      let out = '';
      s.on('data', (d) => (out += d.toString()));
      s.on('close', () => resolve(out));
      s.on('error', reject);
    });
    t.match(raw, /^HTTP\/1\.1 431 /);
    t.match(raw, /"error":"headers_too_large"/);
    t.match(
      raw,
      /strict-transport-security: max-age=31536000/i,
      'parser-level refusals carry the security headers over TLS too',
    );
    const session = await connectH2(h);
    t.teardown(() => session.close());
    const r = await h2(session, '/api/health', { headers: { 'x-big': big } });
    t.equal(r.status, 431);
    t.equal(JSON.parse(r.body).error, 'headers_too_large');
    t.equal((await h2(session, '/api/health')).status, 200, 'the session stays usable');
    const seen = await h.mockRequests();
    t.equal(seen.length, 1);
    t.equal(seen[0]!.headers['x-big'], undefined, 'only the normal request was forwarded');
    t.equal((await h1(h, '/api/health')).status, 200);
  });

  t.test('curl --http2 over real TLS', async (t) => {
    const version = execFileSync('curl', ['--version']).toString();
    if (!/\bHTTP2\b/.test(version)) {
      t.fail(
        `this curl has no HTTP/2 support (install a curl built with nghttp2): ${version.split('\n')[0]}`,
      );
      return;
    }
    const curl = async (...args: string[]) =>
      (
        await run('curl', [
          '-sS',
          '--cacert',
          pki.ca.certFile,
          '-o',
          '/dev/null',
          '-w',
          '%{http_version} %{http_code}',
          ...args,
        ])
      ).stdout;
    t.equal(await curl('--http2', `${h.url}/api/health`), '2 200');
    t.equal(await curl('--http2', `${h.url}/api/receipts`), '2 401');
    t.equal(await curl('--http2', '-H', `Authorization: Bearer ${token}`, `${h.url}/api/receipts`), '2 200');
    t.equal(
      await curl(
        '--http2',
        '-H',
        `Authorization: Bearer ${token}`,
        `${h.url}/api/receipts?q=%3Cscript%3Ealert(1)%3C/script%3E`,
      ),
      '2 403',
    );
    t.equal(await curl('--http1.1', `${h.url}/api/receipts`), '1.1 401');
    const head = (
      await run('curl', [
        '-sS',
        '--http2',
        '--cacert',
        pki.ca.certFile,
        '-D',
        '-',
        '-o',
        '/dev/null',
        `${h.url}/api/health`,
      ])
    ).stdout;
    t.match(head, /^HTTP\/2 200/);
    t.match(head, /strict-transport-security: max-age=31536000; includeSubDomains/i);
  });

  t.test('SNI picks the certificate; hostname verification refuses a wrong host', async (t) => {
    t.equal(await peerSerial(h, 'localhost'), serial(leafA));
    t.equal(await peerSerial(h, 'api.example.test'), serial(sniLeaf));
    t.equal(await peerSerial(h, 'a.tenants.example.test'), serial(sniLeaf), 'wildcard servername');
    t.equal(await peerSerial(h, 'API.EXAMPLE.TEST'), serial(sniLeaf), 'case-insensitive');
    await t.rejects(
      peerSerial(h, 'wrong.example.test'),
      { code: 'ERR_TLS_CERT_ALTNAME_INVALID' },
      'the default certificate does not cover another host',
    );
    const r = await h1(h, '/api/health', { servername: 'api.example.test' });
    t.equal(r.status, 200);
  });

  t.test('a client-started renegotiation is refused (TLS 1.2, both protocols)', async (t) => {
    const u = new URL(h.url);
    for (const protocol of ['http/1.1', 'h2']) {
      const outcome = await new Promise<string>((resolve, reject) => {
        const c = tls.connect(
          {
            host: u.hostname,
            port: Number(u.port),
            servername: 'localhost',
            ca: pki.ca.cert,
            maxVersion: 'TLSv1.2',
            ALPNProtocols: [protocol],
          },
          () => {
            t.equal(c.alpnProtocol, protocol);
            c.renegotiate({ rejectUnauthorized: false }, (err) => {
              if (!err) resolve('renegotiated');
            });
          },
        );
        c.on('data', () => {});
        c.on('error', (e: NodeJS.ErrnoException) => {
          resolve(e.code ?? e.message);
          c.destroy();
        });
        c.once('close', () => resolve('closed'));
        setTimeout(() => reject(new Error('no outcome')), 5000).unref();
      });
      t.equal(outcome, 'ERR_SSL_NO_RENEGOTIATION', protocol);
    }
    t.equal((await h1(h, '/api/health')).status, 200, 'the listener serves on');
  });

  t.test('session resumption', async (t) => {
    const u = new URL(h.url);
    const first = await new Promise<Buffer>((resolve, reject) => {
      const s = tls.connect({
        host: u.hostname,
        port: Number(u.port),
        servername: 'localhost',
        ca: pki.ca.cert,
        ALPNProtocols: ['http/1.1'],
      });
      s.once('session', (session: Buffer) => {
        resolve(session);
        s.end();
      });
      s.once('secureConnect', () =>
        s.write('GET /api/health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t/1\r\n\r\n'),
      );
      s.on('data', () => {});
      s.once('error', reject);
    });
    const reused = await new Promise<boolean>((resolve, reject) => {
      const s = tls.connect(
        { host: u.hostname, port: Number(u.port), servername: 'localhost', ca: pki.ca.cert, session: first },
        () => {
          resolve(s.isSessionReused());
          s.end();
        },
      );
      s.once('error', reject);
    });
    t.equal(reused, true);
  });

  t.test('TLS 1.0 and 1.1 handshakes are refused; the gateway keeps serving', async (t) => {
    const u = new URL(h.url);
    for (const v of ['TLSv1', 'TLSv1.1'] as const) {
      const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
        const s = tls.connect({
          host: u.hostname,
          port: Number(u.port),
          minVersion: v,
          maxVersion: v,
          ciphers: 'DEFAULT@SECLEVEL=0',
          rejectUnauthorized: false,
        });
        s.once('secureConnect', () => {
          s.destroy();
          resolve(Object.assign(new Error('handshake succeeded'), { code: 'CONNECTED' }));
        });
        s.once('error', resolve);
      });
      t.equal(
        err.code,
        'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
        `${v}: protocol_version alert from the gateway`,
      );
    }
    t.equal((await h1(h, '/api/health')).status, 200);
  });

  t.test('an h2 flood of streams beyond max_concurrent_streams is refused, never forwarded', async (t) => {
    const flood = (send: (b: Buffer) => void) => {
      const frames: Buffer[] = [];
      for (let i = 0; i < 40; i++) frames.push(headersFrame(1 + 2 * i, `/api/health?flood=${i}`));
      send(Buffer.concat(frames));
    };
    const flooded = async () =>
      (await h.mockRequests()).filter((m) => m.path.startsWith('/api/health?flood=')).length;
    // Before the client acknowledged the server's SETTINGS: excess streams are refused one by one.
    await h.clearMock();
    const r = await rawH2(h, 40, flood, false);
    t.equal(r.responses, 5, 'only max_concurrent_streams (5) were served');
    t.equal(r.refused, 35, 'the rest got RST_STREAM REFUSED_STREAM');
    t.equal(await flooded(), 5, 'refused streams never reached the upstream');
    // After acknowledging them, going over the cap is a protocol violation: the connection is torn down.
    await h.clearMock();
    const v = await rawH2(h, 0, flood, true);
    t.equal(v.responses, 0, 'nothing answered on the violating connection');
    t.ok((await flooded()) <= 5, 'at most the capped streams were started');
    t.equal((await h1(h, '/api/health')).status, 200, 'the gateway keeps serving');
  });

  t.test(
    'h2 rapid reset (CVE-2023-44487): reset streams count until handled, never flood the upstream',
    async (t) => {
      await h.clearMock();
      const refusals = async (action: string) =>
        metricValue(await metricsText(h), 'gateway_http2_refusals_total', { action });
      const before = { refused: await refusals('refused_stream'), goaway: await refusals('goaway') };
      // 200 streams each reset (CANCEL) right after its HEADERS, in one write: for nghttp2 no
      // more than one is open at a time, so max_concurrent_streams (5) alone never applies
      const r = await rawH2(h, 0, (send) => {
        const frames: Buffer[] = [];
        for (let i = 0; i < 200; i++) {
          frames.push(headersFrame(1 + 2 * i, `/api/health?rapid=${i}`));
          frames.push(frame(0x3, 0, 1 + 2 * i, Buffer.from([0, 0, 0, http2.constants.NGHTTP2_CANCEL])));
        }
        send(Buffer.concat(frames));
      });
      t.equal(r.goaway, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 'the session is torn down');
      t.ok(r.refused >= 1, 'streams beyond the cap were refused (REFUSED_STREAM)');
      // (the streams nghttp2 itself refuses, beyond max_concurrent_streams open at once, are
      // not seen by the gateway; these are the ones refused while too many were being handled)
      const refused = (await refusals('refused_stream')) - before.refused;
      t.ok(refused > 5 && refused <= 200, `the refused streams are counted (${refused})`);
      t.equal((await refusals('goaway')) - before.goaway, 1, 'the teardown is counted');
      const rapid = (await h.mockRequests()).filter((m) => m.path.startsWith('/api/health?rapid=')).length;
      t.ok(rapid <= 5, `at most max_concurrent_streams (5) reached the upstream (${rapid})`);
      // a client that keeps to the setting (Node's queues its streams) is never refused
      const session = await connectH2(h);
      t.teardown(() => session.close());
      // (before the server's SETTINGS arrive the client does not know the limit)
      if (session.remoteSettings.maxConcurrentStreams !== 5)
        await new Promise((resolve) => session.once('remoteSettings', resolve));
      const all = await Promise.all(
        Array.from({ length: 30 }, (_, i) => h2(session, `/api/health?queued=${i}`)),
      );
      t.same(new Set(all.map((x) => x.status)), new Set([200]), '30 requests over one session, 5 at a time');
      t.equal((await h1(h, '/api/health')).status, 200, 'the gateway keeps serving');
    },
  );

  t.test('h2: cookies split into several fields are one Cookie header (RFC 9113 §8.2.3)', async (t) => {
    await h.clearMock();
    // a browser sends each cookie as a field of its own: 100 of them with User-Agent and Host
    // are 102 fields, over listen.max_headers (100), but one Cookie line over HTTP/1.1
    const crumbs = Array.from({ length: 100 }, (_, i) => literal(32, `c${i}=${i}`));
    const r = await rawH2(h, 1, (send) => send(headersFrame(1, '/api/health?crumbs', crumbs)));
    t.same(r.statuses, [200]);
    const seen = (await h.mockRequests()).filter((m) => m.path === '/api/health?crumbs');
    t.equal(seen.length, 1);
    t.equal(
      seen[0]?.headers.cookie,
      Array.from({ length: 100 }, (_, i) => `c${i}=${i}`).join('; '),
      'forwarded joined with "; "',
    );
    // the joined value is what pattern_block judges: an attack split over two fields is seen whole
    const attack = await rawH2(h, 1, (send) =>
      send(
        headersFrame(1, '/api/health?split-attack', [
          literal(32, 'a=<script'),
          literal(32, 'b=>alert(1)</script>'),
        ]),
      ),
    );
    t.same(attack.statuses, [0], 'refused (403 is not in the static table)');
    t.equal((await h.mockRequests()).filter((m) => m.path === '/api/health?split-attack').length, 0);
  });

  t.test('malformed HTTP/2 frames: GOAWAY PROTOCOL_ERROR, nothing forwarded', async (t) => {
    await h.clearMock();
    // DATA on stream 0 (RFC 9113 §6.1)
    const a = await rawH2(h, 0, (send) => send(frame(0, 0x1, 0, Buffer.from('x'))));
    t.equal(a.goaway, http2.constants.NGHTTP2_PROTOCOL_ERROR);
    // HEADERS on an even (server-initiated) stream id
    const b = await rawH2(h, 0, (send) => send(headersFrame(2, '/api/health?even')));
    t.ok(
      b.goaway !== undefined && b.goaway !== http2.constants.NGHTTP2_NO_ERROR,
      `GOAWAY with an error (${b.goaway})`,
    );
    t.equal(b.responses, 0);
    // a frame larger than SETTINGS_MAX_FRAME_SIZE (16384)
    const c = await rawH2(h, 0, (send) => send(frame(0x0, 0, 1, Buffer.alloc(20_000))));
    t.equal(c.goaway, http2.constants.NGHTTP2_FRAME_SIZE_ERROR);
    t.same(await h.mockRequests(), []);
    t.equal((await h1(h, '/api/health')).status, 200);
  });

  t.test('WebSocket over TLS (wss)', async (t) => {
    const { WebSocket } = await import('ws');
    const ws = new WebSocket(`${h.url.replace('https', 'wss')}/api/ws/echo`, {
      ca: pki.ca.cert,
      headers: { ...auth, origin: ORIGIN_OK },
    });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const echo = new Promise<string>((resolve) => ws.once('message', (d: Buffer) => resolve(d.toString())));
    ws.send('over tls');
    t.equal(await echo, 'over tls');
    ws.close();
    const rec = (await h.mockRequests()).filter((r) => r.path === '/api/ws/echo').pop() as unknown as {
      headers: Record<string, string>;
      websocket?: boolean;
    };
    t.equal(rec.websocket, true);
    t.equal(rec.headers['x-forwarded-proto'], 'https');
  });

  t.test('redirect listener: 308 to https, health paths exempt, no HSTS', async (t) => {
    const plain = (p: string, method: string, host: string) =>
      new Promise<{ status: number; headers: Record<string, string | string[] | undefined> }>(
        (resolve, reject) => {
          const req = http.request(
            `${h.gateway.redirectUrl}${p}`,
            { method, headers: { host }, agent: false },
            (res) => {
              res.resume();
              res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }));
            },
          );
          req.on('error', reject);
          req.end(method === 'POST' ? '{}' : undefined);
        },
      );
    const r = await plain('/api/receipts?merchant=a&b=c', 'GET', 'shop.example.test');
    t.equal(r.status, 308);
    t.equal(r.headers.location, 'https://shop.example.test:8443/api/receipts?merchant=a&b=c');
    t.equal(r.headers['strict-transport-security'], undefined, 'no HSTS over plain HTTP');
    const post = await plain('/api/auth/login', 'POST', 'shop.example.test:80');
    t.equal(post.status, 308, '308 keeps the method and body');
    t.equal(post.headers.location, 'https://shop.example.test:8443/api/auth/login');
    t.equal(
      (await plain('//evil.example/x', 'GET', 'shop.example.test')).headers.location,
      'https://shop.example.test:8443/evil.example/x',
      'never scheme-relative',
    );
    for (const p of ['/healthz', '/api/health']) {
      const hc = await fetch(`${h.gateway.redirectUrl}${p}`, { redirect: 'manual' });
      t.equal(hc.status, 200, `${p} exempt`);
      t.same(await hc.json(), { status: 'ok' });
    }
    const u = new URL(h.gateway.redirectUrl!);
    const bad = await new Promise<string>((resolve) => {
      const s = net.connect(Number(u.port), u.hostname, () =>
        s.write('GET /x HTTP/1.1\r\nHost: bad host!\r\n\r\n'),
      );
      let d = '';
      s.on('data', (c) => (d += c.toString()));
      s.on('close', () => resolve(d));
    });
    t.match(bad, /^HTTP\/1\.1 400 /);
    t.equal(
      (await h.mockRequests()).filter((m) => m.path.startsWith('/api/receipts?merchant=a')).length,
      0,
      'nothing proxied',
    );
  });

  t.test('HSTS is sent only over TLS when TLS is configured', async (t) => {
    t.equal(
      (h.gateway.generation.config.policies.security_headers as Record<string, unknown>).hsts_only_over_tls,
      true,
    );
  });

  t.test('security score and expiry metric know the TLS listener', async (t) => {
    const report = h.gateway.observers.securityHealth!() as {
      checks: { id: string; pass: boolean; detail?: string }[];
    };
    const tlsCheck = report.checks.find((c) => c.id === 'tls')!;
    t.same([tlsCheck.pass, tlsCheck.detail], [true, 'minimum TLSv1.2']);
    const expiry = report.checks.find((c) => c.id === 'tls_certificate_expiry')!;
    t.equal(expiry.pass, false, 'the test certificates are valid for 10 days: under 14');
    t.match(expiry.detail, /^expires in (9|10) day\(s\)$/);
    t.equal(report.checks.find((c) => c.id === 'hsts_without_tls')!.pass, true);
    const seconds = await metric(h, 'gateway_tls_certificate_expiry_seconds', '{certificate="default"}');
    t.ok(seconds! > 9 * 86400 && seconds! <= 10 * 86400, `default certificate: ${seconds} s left`);
    t.ok(
      (await metric(h, 'gateway_tls_certificate_expiry_seconds', '{certificate="api.example.test"}'))! >
        9 * 86400,
    );
  });

  t.test('rotation: a new certificate is served without dropping open connections', async (t) => {
    const m = h.gateway.tls!;
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const before = await h1(h, '/api/health', { agent });
    t.equal(before.status, 200);
    const session = await connectH2(h);
    t.equal((await h2(session, '/api/health')).status, 200);
    t.equal(await peerSerial(h), serial(leafA));

    const leafB = pki.leaf('b', { days: 20 });
    const reloaded = nextReload(m);
    pki.install(leafB, certDir);
    t.equal(await reloaded, 'success');
    t.equal(await peerSerial(h), serial(leafB), 'new handshakes get the new certificate');

    const after = await h1(h, '/api/health', { agent });
    t.equal(after.status, 200);
    t.equal(after.socket, before.socket, 'the keep-alive connection survived the rotation');
    t.equal(
      after.socket!.getPeerCertificate().serialNumber.toUpperCase(),
      serial(leafA),
      'and keeps its certificate',
    );
    t.equal((await h2(session, '/api/health')).status, 200, 'the open HTTP/2 session too');
    t.equal(await metric(h, 'gateway_tls_reloads_total', '{result="success"}'), 1);
    const seconds = await metric(h, 'gateway_tls_certificate_expiry_seconds', '{certificate="default"}');
    t.ok(seconds! > 19 * 86400, 'the expiry gauge follows the new certificate');
    const audit = (await h.audit()).filter((l) => l.event === 'config_reload' && l.trigger === 'tls-watch');
    t.same(
      audit.map((l) => [l.result, l.certificate]),
      [['success', 'default']],
    );
    session.close();
    agent.destroy();
    current = leafB;
  });

  let current: CertFiles = leafA;
  t.test('a bad new certificate keeps the old one serving', async (t) => {
    const m = h.gateway.tls!;
    const leafB = current;
    const leafC = pki.leaf('c');
    const leafD = pki.leaf('d');
    // a cert with somebody else's key
    let r = nextReload(m);
    fs.copyFileSync(leafD.keyFile, path.join(certDir, 'tls.key'));
    fs.copyFileSync(leafC.certFile, path.join(certDir, 'tls.crt'));
    t.equal(await r, 'error');
    t.equal(await peerSerial(h), serial(leafB));
    // garbage
    r = nextReload(m);
    fs.writeFileSync(path.join(certDir, 'tls.crt'), 'not a certificate\n');
    t.equal(await r, 'error');
    t.equal(await peerSerial(h), serial(leafB));
    // other files changing next to the same bad ones (a log written there): judged once only
    for (let i = 0; i < 3; i++) {
      const again = new Promise<string>((resolve) => {
        m.onReload = (x) => {
          m.onReload = undefined;
          resolve(x);
        };
      });
      fs.writeFileSync(path.join(certDir, 'neighbour.log'), `line ${i}\n`);
      t.equal(await again, 'unchanged', `event ${i} next to the rejected files: not judged again`);
    }
    t.equal(
      await metric(h, 'gateway_tls_reloads_total', '{result="error"}'),
      2,
      'each bad file counted once',
    );
    // an expired certificate with its own key
    const expired = pki.leaf('expired', { days: -1 });
    r = nextReload(m);
    pki.install(expired, certDir);
    t.equal(await r, 'error');
    t.equal(await peerSerial(h), serial(leafB), 'still the last good certificate');
    t.equal(await metric(h, 'gateway_tls_reloads_total', '{result="error"}'), 3);
    t.equal(await metric(h, 'gateway_tls_reloads_total', '{result="success"}'), 1);
    t.equal((await h1(h, '/api/health')).status, 200);
    // and a good one after the bad ones is taken
    r = nextReload(m);
    pki.install(leafC, certDir);
    t.equal(await r, 'success');
    t.equal(await peerSerial(h), serial(leafC));
  });
});

t.test('a client that connects and sends nothing is cut off', async (t) => {
  const h = await startHarness({
    config: config()
      .replace(
        'max_concurrent_streams: 5',
        'max_concurrent_streams: 5\n    handshake_timeout: 1s\n    idle_timeout: 1s',
      )
      .replace('listen:', 'listen:\n  header_timeout: 1s'),
  });
  t.teardown(() => h.close());
  const u = new URL(h.url);
  // no ClientHello at all: handshake_timeout
  const raw = net.connect(Number(u.port), u.hostname);
  let rawBytes = 0;
  raw.on('data', (d) => (rawBytes += d.length));
  raw.on('error', () => {});
  // TLS done, no request: header_timeout
  const quiet = tls.connect({
    host: u.hostname,
    port: Number(u.port),
    servername: 'localhost',
    ca: pki.ca.cert,
    ALPNProtocols: ['http/1.1'],
  });
  quiet.on('error', () => {});
  // HTTP/2 session, no stream: idle_timeout (GOAWAY)
  const idle = await connectH2(h);
  const goaway = new Promise<number>((resolve) => idle.once('goaway', (code: number) => resolve(code)));
  t.equal((await h1(h, '/api/health')).status, 200, 'served meanwhile');
  await closed(raw);
  t.equal(rawBytes, 0, 'nothing written to a client that never said hello');
  await closed(quiet);
  t.equal(await goaway, http2.constants.NGHTTP2_NO_ERROR);
  await new Promise<void>((resolve) => (idle.closed ? resolve() : idle.once('close', () => resolve())));
  t.equal((await h1(h, '/api/health')).status, 200, 'still serving');
});

t.test('a config reload applies new TLS versions and certificate paths to new handshakes', async (t) => {
  const dir = path.join(pki.dir, 'reload');
  const first = pki.leaf('reload-1');
  const second = pki.leaf('reload-2');
  pki.install(first, dir);
  const yaml = (extra: Record<string, unknown>) =>
    YAML.stringify({
      listen: {
        tls: { cert_file: path.join(dir, 'tls.crt'), key_file: path.join(dir, 'tls.key'), ...extra },
      },
    });
  const h = await startHarness({ config: yaml({}) });
  t.teardown(() => h.close());
  const u = new URL(h.url);
  const tls12 = () =>
    new Promise<string>((resolve) => {
      const s = tls.connect(
        {
          host: u.hostname,
          port: Number(u.port),
          servername: 'localhost',
          ca: pki.ca.cert,
          maxVersion: 'TLSv1.2',
        },
        () => {
          resolve(s.getProtocol() ?? '');
          s.end();
        },
      );
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    });
  t.equal(await tls12(), 'TLSv1.2');
  await h.reload(yaml({ min_version: 'TLSv1.3' }));
  t.equal(await tls12(), 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'TLS 1.2 refused after the reload');
  await h.reload(yaml({ min_version: 'TLSv1.3', cert_file: second.certFile, key_file: second.keyFile }));
  t.equal(await peerSerial(h), serial(second), 'the new certificate path is served');
  t.equal((await h1(h, '/api/health')).status, 200);
  // a reload naming a bad certificate is rejected as a whole; the running one stays
  await t.rejects(h.reload(yaml({ cert_file: second.certFile, key_file: first.keyFile })), /does not match/);
  t.equal(await peerSerial(h), serial(second));
});

t.test('HTTP/1.1-only TLS listener (http2: false)', async (t) => {
  const h = await startHarness({
    config: config({}).replace('max_concurrent_streams: 5', 'max_concurrent_streams: 5\n    http2: false'),
  });
  t.teardown(() => h.close());
  const r = await h1(h, '/api/receipts');
  t.equal(r.status, 401);
  t.equal(r.socket!.alpnProtocol, false);
  await t.rejects(connectH2(h), 'no h2 by ALPN');
  const v = (
    await run('curl', [
      '-sS',
      '--http2',
      '--cacert',
      pki.ca.certFile,
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      `${h.url}/api/health`,
    ])
  ).stdout;
  t.equal(v, '1.1 200', 'curl falls back to HTTP/1.1');
});

t.test('configuration errors name the key path', async (t) => {
  const expired = pki.leaf('cfg-expired', { days: -1 });
  const other = pki.leaf('cfg-other');
  const wrongHost = pki.leaf('cfg-wrong', { sans: ['DNS:wrong.example.test'] });
  const base = YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as Record<
    string,
    unknown
  >;
  const attempt = async (listen: Record<string, unknown>) => {
    const text = YAML.stringify(deepMerge(base, { listen }));
    try {
      const gen = await compileGeneration(
        parseConfig(text, path.join(pki.dir, 'gateway.yaml'), { JWT_SECRET_KEY: TEST_SECRET }),
        makeServices({ now: Date.now }),
      );
      await closeGeneration(gen);
      return [];
    } catch (err) {
      if (!(err instanceof ConfigLoadError)) throw err;
      return err.problems.map((p) => `${p.keyPath}: ${p.message}`);
    }
  };
  const tlsOf = (c: CertFiles, extra: Record<string, unknown> = {}) => ({
    tls: { cert_file: c.certFile, key_file: c.keyFile, ...extra },
  });
  t.match(await attempt(tlsOf(expired)), [/^listen\.tls\.cert_file: the certificate in ".*" expired on /]);
  t.match(await attempt({ tls: { cert_file: leafA.certFile, key_file: other.keyFile } }), [
    /^listen\.tls\.key_file: the key in ".*" does not match the certificate/,
  ]);
  t.match(await attempt({ tls: { cert_file: '/nonexistent/tls.crt', key_file: leafA.keyFile } }), [
    /^listen\.tls\.cert_file: cannot read the certificate file "\/nonexistent\/tls\.crt" \(not found\)/,
  ]);
  t.match(await attempt({ tls: { cert_file: leafA.keyFile, key_file: leafA.keyFile } }), [
    /^listen\.tls\.cert_file: .* holds no PEM certificate/,
  ]);
  t.match(
    await attempt(
      tlsOf(leafA, {
        certificates: [
          { cert_file: wrongHost.certFile, key_file: wrongHost.keyFile, servernames: ['ok.example.test'] },
        ],
      }),
    ),
    [
      /^listen\.tls\.certificates\[0\]\.servernames\[0\]: the certificate in ".*" does not cover "ok\.example\.test"/,
    ],
  );
  t.match(await attempt(tlsOf(leafA, { ciphers: 'NO-SUCH-CIPHER' })), [
    /^listen\.tls\.ciphers: OpenSSL refuses the cipher list/,
  ]);
  t.match(await attempt(tlsOf(leafA, { min_version: 'SSLv3' })), [/^listen\.tls\.min_version: /]);
  const rsaSni = pki.leaf('cfg-rsa', { rsa: true, sans: ['DNS:rsa.example.test'] });
  t.match(
    await attempt(
      tlsOf(leafA, {
        certificates: [
          { cert_file: rsaSni.certFile, key_file: rsaSni.keyFile, servernames: ['rsa.example.test'] },
        ],
      }),
    ),
    [/^listen\.tls\.certificates\[0\]\.key_file: the key of ".*" is rsa but the default certificate's is ec/],
  );
  t.match(await attempt({ redirect: { port: 0 } }), [
    /^listen\.redirect: the redirect listener needs listen\.tls/,
  ]);
});

// ---------------------------------------------------------------- raw HTTP/2 frames

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

function literal(nameIndex: number, value: string): Buffer {
  // literal header field without indexing, indexed name (RFC 7541 §6.2.2)
  const name = nameIndex < 15 ? Buffer.from([nameIndex]) : Buffer.from([0x0f, nameIndex - 15]);
  return Buffer.concat([name, Buffer.from([value.length]), Buffer.from(value, 'latin1')]);
}

function headersFrame(stream: number, p: string, extra: Buffer[] = []): Buffer {
  const block = Buffer.concat([
    Buffer.from([0x82, 0x87]), // :method GET, :scheme https
    literal(4, p), // :path
    literal(1, 'localhost'), // :authority
    literal(58, 'raw-h2/1.0'), // user-agent
    ...extra,
  ]);
  return frame(0x1, 0x5, stream, block); // END_STREAM | END_HEADERS
}

/** Speak raw HTTP/2 over TLS: preface, settings (acknowledged), then `act`; collect the answers until the server closes or goes quiet. */
function rawH2(
  h: Harness,
  streams: number,
  act: (send: (b: Buffer) => void) => void,
  ack = true,
): Promise<{ responses: number; refused: number; goaway: number | undefined; statuses: number[] }> {
  const u = new URL(h.url);
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: u.hostname,
      port: Number(u.port),
      servername: 'localhost',
      ca: pki.ca.cert,
      ALPNProtocols: ['h2'],
    });
    let buf = Buffer.alloc(0);
    let responses = 0;
    let refused = 0;
    let goaway: number | undefined;
    const statuses: number[] = [];
    let started = false;
    let quiet: NodeJS.Timeout | undefined;
    const done = () => {
      clearTimeout(quiet);
      s.destroy();
      resolve({ responses, refused, goaway, statuses });
    };
    s.once('secureConnect', () =>
      s.write(
        Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(0x4, 0, 0, Buffer.alloc(0))]),
      ),
    );
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === 0x4 && (flags & 1) === 0 && !started) {
          started = true;
          if (ack) s.write(frame(0x4, 0x1, 0, Buffer.alloc(0)));
          act((b) => s.write(b));
        } else if (type === 0x1) {
          responses++;
          // :status is sent as an indexed static-table entry (RFC 7541 Appendix A)
          statuses.push(
            (
              { 0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500 } as Record<
                number,
                number
              >
            )[payload[0]!] ?? 0,
          );
        } else if (type === 0x3 && payload.readUInt32BE(0) === http2.constants.NGHTTP2_REFUSED_STREAM)
          refused++;
        else if (type === 0x7) goaway = payload.readUInt32BE(4);
      }
      if (streams > 0 && responses + refused >= streams) {
        done();
        return;
      }
      clearTimeout(quiet);
      quiet = setTimeout(done, 1500);
    });
    s.on('close', done);
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? done() : reject(err)));
  });
}
