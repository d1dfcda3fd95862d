// The edge-mode benchmark: the gateway with its default policies and a valid JWT over
// plain HTTP/1.1, HTTPS/1.1 and HTTP/2 (TLS, ALPN h2), with the ratios to plain HTTP.
// autocannon does not speak HTTP/2, so every protocol is also driven by the same small
// Node client (a bounded loop of concurrent requests on keep-alive connections / h2
// sessions) to compare like with like. `npm run bench` calls runTlsBench(); run alone:
//   npm run build && node dist/bench/tls.js            (BENCH_DURATION=8 seconds per scenario)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { SignJWT } from 'jose';
import {
  DIST,
  REPO,
  freePort,
  startChild,
  startGatewayChild,
  load,
  table,
  fmt,
  type Child,
  type LoadResult,
} from './lib.js';

const SECRET = 'bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
const TARGET = '/api/receipts/1?merchant=Whole%20Foods';
const CONCURRENCY = 50;

interface Loop {
  /** one request; resolves to the status */
  one(): Promise<number>;
  close(): void;
}

/** Run `concurrency` workers issuing requests back to back for `seconds`. */
async function drive(name: string, loop: Loop, seconds: number, concurrency: number): Promise<LoadResult> {
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  let errors = 0;
  const end = Date.now() + seconds * 1000;
  const worker = async () => {
    while (Date.now() < end) {
      const t0 = process.hrtime.bigint();
      try {
        const status = await loop.one();
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        statuses[status] = (statuses[status] ?? 0) + 1;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  loop.close();
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  const non2xx = Object.entries(statuses).reduce((n, [k, v]) => (k.startsWith('2') ? n : n + v), 0);
  return { name, rps: latencies.length / seconds, p50: q(0.5), p99: q(0.99), non2xx, errors, statuses };
}

/** HTTP/1.1 (plain or TLS) on `concurrency` keep-alive connections. */
function h1Loop(
  base: string,
  headers: Record<string, string>,
  ca: Buffer | undefined,
  concurrency: number,
): Loop {
  const secure = base.startsWith('https:');
  const agent = secure
    ? new https.Agent({ keepAlive: true, maxSockets: concurrency, ca })
    : new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const mod = secure ? https : http;
  return {
    one: () =>
      new Promise((resolve, reject) => {
        const req = mod.request(
          `${base}${TARGET}`,
          { agent, headers, servername: secure ? 'localhost' : undefined },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end();
      }),
    close: () => agent.destroy(),
  };
}

/** HTTP/2 over TLS: `sessions` connections, requests spread over them as concurrent streams. */
async function h2Loop(
  base: string,
  headers: Record<string, string>,
  ca: Buffer,
  sessions: number,
): Promise<Loop> {
  const list = await Promise.all(
    Array.from(
      { length: sessions },
      () =>
        new Promise<http2.ClientHttp2Session>((resolve, reject) => {
          const s = http2.connect(base, { ca, servername: 'localhost' });
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        }),
    ),
  );
  let next = 0;
  return {
    one: () =>
      new Promise((resolve, reject) => {
        const s = list[next++ % list.length]!;
        const st = s.request({ ':path': TARGET, ...headers });
        let status = 0;
        st.on('response', (h) => (status = Number(h[':status'])));
        st.on('data', () => {});
        st.on('end', () => resolve(status));
        st.on('error', reject);
        st.end();
      }),
    close: () => {
      for (const s of list) s.close();
    },
  };
}

function makeCert(dir: string): { certFile: string; keyFile: string; ca: Buffer } {
  const run = (args: string[]) =>
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  run([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=bench CA',
  ]);
  run([
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    'tls.key',
    '-out',
    'tls.csr',
    '-subj',
    '/CN=localhost',
  ]);
  fs.writeFileSync(path.join(dir, 'ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  run([
    'x509',
    '-req',
    '-in',
    'tls.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-set_serial',
    '1',
    '-out',
    'tls.crt',
    '-days',
    '2',
    '-extfile',
    'ext',
  ]);
  return {
    certFile: path.join(dir, 'tls.crt'),
    keyFile: path.join(dir, 'tls.key'),
    ca: fs.readFileSync(path.join(dir, 'ca.pem')),
  };
}

/**
 * Start a mock and two gateways (plain, TLS with h2) with the default policies, drive each
 * protocol, and return the report text (req/s, p50/p99, ratios to plain HTTP/1.1).
 */
export async function runTlsBench(opts: { duration: number }): Promise<string> {
  const duration = opts.duration;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-bench-tls-'));
  const children: Child[] = [];
  try {
    const cert = makeCert(tmp);
    const mockPort = await freePort();
    const upstream = `http://127.0.0.1:${mockPort}`;
    children.push(
      await startChild(
        path.join(DIST, 'upstream-mock', 'main.js'),
        [],
        { MOCK_PORT: String(mockPort), JWT_SECRET_KEY: SECRET },
        `${upstream}/api/health`,
      ),
    );
    const base = YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as Record<
      string,
      Record<string, unknown>
    >;
    const start = async (name: string, tls: boolean): Promise<string> => {
      const cfg = {
        ...base,
        listen: {
          ...base.listen,
          ...(tls ? { tls: { cert_file: cert.certFile, key_file: cert.keyFile } } : {}),
        },
      };
      const file = path.join(tmp, `${name}.yaml`);
      fs.writeFileSync(file, YAML.stringify(cfg));
      const { child, port } = await startGatewayChild(file, {
        JWT_SECRET_KEY: SECRET,
        UPSTREAM_URL: upstream,
        AUDIT_LOG_FILE: path.join(tmp, `${name}-audit.log`),
        RATELIMIT_DEFAULT: '100000000 per minute',
      });
      children.push(child);
      return `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
    };
    const plain = await start('plain', false);
    const secure = await start('tls', true);
    const token = await new SignJWT({ role: 'user' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setIssuedAt()
      .setExpirationTime('2h')
      .sign(new TextEncoder().encode(SECRET));
    const headers = {
      authorization: `Bearer ${token}`,
      'user-agent': 'bench/1.0',
      accept: 'application/json',
    };

    const ac = {
      plain: await load('HTTP/1.1 plain (autocannon)', plain + TARGET, { headers, duration }),
      tls: await load('HTTPS/1.1 (autocannon)', secure + TARGET, { headers, duration }),
    };
    const node = {
      plain: await drive(
        'HTTP/1.1 plain (node client)',
        h1Loop(plain, headers, undefined, CONCURRENCY),
        duration,
        CONCURRENCY,
      ),
      tls: await drive(
        'HTTPS/1.1 (node client)',
        h1Loop(secure, headers, cert.ca, CONCURRENCY),
        duration,
        CONCURRENCY,
      ),
      h2: await drive(
        'HTTP/2 over TLS, 4 sessions (node client)',
        await h2Loop(secure, headers, cert.ca, 4),
        duration,
        CONCURRENCY,
      ),
    };
    const r = (a: LoadResult, b: LoadResult) => (b.rps > 0 ? fmt(a.rps / b.rps, 2) : '-');
    return (
      `edge mode (TLS 1.3, ECDSA P-256, default policies + valid JWT, ${CONCURRENCY} concurrent, ${duration}s each)\n` +
      `${table([ac.plain, ac.tls, node.plain, node.tls, node.h2])}\n` +
      `ratios to plain HTTP/1.1: https/1.1 = ${r(ac.tls, ac.plain)} (autocannon), ${r(node.tls, node.plain)} (node client); ` +
      `h2 = ${r(node.h2, node.plain)} (node client)\n`
    );
  } finally {
    await Promise.allSettled(children.map((c) => c.stop()));
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runTlsBench({ duration: Number(process.env.BENCH_DURATION ?? 8) })
    .then((text) => process.stdout.write(text))
    .catch((err: Error) => {
      process.stderr.write(`tls bench failed: ${err.stack ?? err.message}\n`);
      process.exitCode = 1;
    });
}
