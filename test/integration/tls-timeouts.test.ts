import t, { type Test } from 'tap';
import http2 from 'node:http2';
import YAML from 'yaml';
import { startHarness, mark, type Harness } from '../helpers/harness.js';
import { rawExchange, head, type RawExchange, type RawOptions } from '../helpers/raw-http.js';
import { TestPki } from '../helpers/certs.js';
import { SEED_HEADER_NAMES } from '../helpers/gateway-errors.js';

/**
 * The HTTP/1.1 deadlines of the TLS listener, over real TLS, with HTTP/2 offered by ALPN
 * (`http2: true`: Node's Http2SecureServer with allowHTTP1, whose HTTP/1.1 connections are
 * served by Node's HTTP/1 code) and without (`http2: false`: https.Server). A slowloris client
 * on the HTTP/1.1 fallback must not hold a connection past the limits of the plain listener:
 * a head that stalls is cut by `listen.header_timeout` without an answer, a body that stalls
 * gets 408 request_timeout after `listen.request_timeout` (then the close), an idle keep-alive
 * connection is closed after `listen.keep_alive_timeout`. HTTP/2 sessions are left alone
 * (they have `listen.tls.idle_timeout`). Every wait has a generous upper bound (15 s); the
 * deadlines are 1-2 s.
 */

const pki = new TestPki();
t.teardown(() => pki.cleanup());
const leaf = pki.leaf('timeouts');

const config = (http2On: boolean) =>
  YAML.stringify({
    listen: {
      header_timeout: '1s',
      request_timeout: '2s',
      keep_alive_timeout: '1s',
      tls: { cert_file: leaf.certFile, key_file: leaf.keyFile, http2: http2On },
    },
  });

/** 10 of the 100 bytes a stalled request announces. */
const TEN_BYTES = '{"total":1';

interface Mode {
  readonly name: string;
  readonly http2: boolean;
  /** what the client offers by ALPN (none: no ALPN extension) */
  readonly alpn: readonly string[] | undefined;
  /** what the server must have settled on: HTTP/1.1 either way */
  readonly negotiated: string | false;
}

const MODES: readonly Mode[] = [
  { name: 'http2: true, ALPN http/1.1', http2: true, alpn: ['http/1.1'], negotiated: 'http/1.1' },
  { name: 'http2: true, no ALPN', http2: true, alpn: undefined, negotiated: false },
  { name: 'http2: false (https), ALPN http/1.1', http2: false, alpn: ['http/1.1'], negotiated: 'http/1.1' },
];

function exchange(h: Harness, mode: Mode, payload: string, opts: RawOptions = {}): Promise<RawExchange> {
  return rawExchange(h.url, payload, {
    waitMs: 15_000,
    ...opts,
    tls: {
      servername: 'localhost',
      ca: pki.ca.cert,
      ...(mode.alpn === undefined ? {} : { ALPNProtocols: [...mode.alpn] }),
    },
  });
}

async function stillServes(t: Test, h: Harness, mode: Mode): Promise<void> {
  const x = await exchange(h, mode, head('GET /api/health HTTP/1.1', [['Host', 'localhost']]), {
    responses: 1,
  });
  t.equal(x.responses[0]?.status, 200, 'the listener still serves');
}

function suite(mode: Mode, harness: () => Harness, token: () => string): (t: Test) => Promise<void> {
  return async (t) => {
    t.test('a head that stalls is cut by header_timeout, without an answer', async (t) => {
      const h = harness();
      const m = mark();
      const before = (await h.audit()).length;
      const x = await exchange(
        h,
        mode,
        `POST /api/receipts?p=${m} HTTP/1.1\r\nHost: localhost\r\nContent-Le`,
      );
      t.equal(x.alpnProtocol, mode.negotiated, 'an HTTP/1.1 connection');
      t.ok(x.closed, 'the gateway closed the connection');
      t.equal(x.raw, '', 'nothing was written');
      t.notOk(
        (await h.audit()).slice(before).some((l) => String(l.path ?? '').includes(m)),
        'no audit line names it',
      );
      await stillServes(t, h, mode);
    });

    t.test('a body that stalls gets 408 request_timeout after request_timeout, then the close', async (t) => {
      const h = harness();
      const m = mark();
      const x = await exchange(
        h,
        mode,
        head(`POST /api/receipts?p=${m} HTTP/1.1`, [
          ['Host', 'localhost'],
          ['Authorization', `Bearer ${token()}`],
          ['Content-Type', 'application/json'],
          ['Content-Length', '100'],
        ]) + TEN_BYTES,
      );
      t.equal(x.alpnProtocol, mode.negotiated, 'an HTTP/1.1 connection');
      t.equal(x.responses.length, 1, 'one answer');
      const r = x.responses[0];
      t.equal(r?.status, 408, 'status');
      t.equal(r?.reason, 'Request Timeout', 'reason phrase');
      t.same(
        r?.json,
        {
          error: 'request_timeout',
          message: 'The request body was not received in time.',
          request_id: r?.headers['x-request-id'],
        },
        'the SPEC error shape, nothing else',
      );
      t.equal(r?.headers['content-type'], 'application/json; charset=utf-8');
      t.equal(r?.headers['cache-control'], 'no-store');
      for (const name of SEED_HEADER_NAMES) t.ok(r?.headers[name], `security header ${name}`);
      t.equal(r?.headers.connection, 'close', 'Connection: close');
      t.ok(x.closed, 'the connection is closed');
      const lines = (await h.audit()).filter(
        (l) => l.request_id === r?.headers['x-request-id'] && l.event !== 'auth_success',
      );
      t.equal(lines.length, 1, 'one audit line for the request');
      t.match(lines[0], {
        event: 'request_blocked',
        decision: 'deny',
        status: 408,
        code: 'request_timeout',
        reason: 'timeout',
        method: 'POST',
      });
      t.same(lines[0]?.rule_ids, ['request-timeout']);
      t.same(lines[0]?.detail, { timeout_ms: 2000 }, 'the timeout that expired');
      t.notOk(
        (await h.mockRequests()).some((q) => q.path.includes(m)),
        'the upstream never saw the request',
      );
      await stillServes(t, h, mode);
    });

    t.test('an idle keep-alive connection is closed after keep_alive_timeout', async (t) => {
      const h = harness();
      const x = await exchange(h, mode, head('GET /api/health HTTP/1.1', [['Host', 'localhost']]));
      t.equal(x.alpnProtocol, mode.negotiated, 'an HTTP/1.1 connection');
      t.same(
        x.responses.map((r) => r.status),
        [200],
        'the request was answered',
      );
      t.equal(x.responses[0]?.headers.connection, 'keep-alive', 'and the connection kept open');
      t.equal(
        x.responses[0]?.headers['keep-alive'],
        'timeout=1, max=1000',
        'announcing keep_alive_timeout (and max_requests_per_socket)',
      );
      t.ok(x.closed, 'then the gateway closed it');
      t.ok(x.raw.endsWith(x.responses[0]?.body.toString('latin1') ?? '\0'), 'nothing after the answer');
    });
  };
}

t.test('http2: true', async (t) => {
  const h = await startHarness({ config: config(true) });
  t.teardown(() => h.close());
  const token = await h.login();
  for (const mode of MODES.filter((m) => m.http2))
    await t.test(
      mode.name,
      suite(
        mode,
        () => h,
        () => token,
      ),
    );

  t.test('an HTTP/2 session is not held to the HTTP/1.1 deadlines', async (t) => {
    const session = await new Promise<http2.ClientHttp2Session>((resolve, reject) => {
      const s = http2.connect(h.url, { ca: pki.ca.cert });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    t.teardown(() => session.close());
    const get = () =>
      new Promise<number>((resolve, reject) => {
        const st = session.request({ ':path': '/api/health' });
        let status = 0;
        st.on('response', (hd) => (status = Number(hd[':status'])));
        st.on('data', () => {});
        st.on('end', () => resolve(status));
        st.on('error', reject);
        st.end();
      });
    t.equal(await get(), 200);
    // past header_timeout (1 s), request_timeout (2 s) and keep_alive_timeout (1 s, +1 s Node adds)
    await new Promise((r) => setTimeout(r, 3500));
    t.notOk(session.closed || session.destroyed, 'the idle session is still open');
    t.equal(await get(), 200, 'and serves on');
  });
});

t.test('http2: false', async (t) => {
  const h = await startHarness({ config: config(false) });
  t.teardown(() => h.close());
  const token = await h.login();
  for (const mode of MODES.filter((m) => !m.http2))
    await t.test(
      mode.name,
      suite(
        mode,
        () => h,
        () => token,
      ),
    );
});
