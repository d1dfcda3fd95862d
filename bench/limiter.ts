/**
 * Micro-benchmark: the per-request cost of the rate limiter (the `rate_limit` policy's
 * onRequest with the seed's default rule, 3 windows, over 10 000 client IPs) on the
 * memory store and on a real Redis. Prints one line per store: sequential latency
 * (µs per request, one request in flight) and throughput with 64 requests in flight.
 *
 *   node dist/bench/limiter.js            (npm run bench runs it)
 *   REDIS_URL=redis://host:6379/0 node dist/bench/limiter.js   (use an existing Redis)
 *
 * Without REDIS_URL it starts `redis-server` on a free port when the binary exists.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { Readable } from 'node:stream';
import { Value } from '@sinclair/typebox/value';
import { rateLimit } from '../policies/rate-limit/index.js';
import { createStore } from '../gateway/store/index.js';
import { Metrics } from '../gateway/observability/metrics.js';
import type { Store } from '../gateway/store/types.js';
import type { Policy, Services } from '../gateway/policy.js';
import type { AuditLog } from '../gateway/observability/audit.js';
import type { RequestContext } from '../gateway/context.js';
import { createContext } from '../gateway/context-factory.js';

const IPS = 10_000;
const SEQUENTIAL = Number(process.env.LIMITER_BENCH_N ?? 50_000);
const CONCURRENT = 64;

const silent = { info() {}, warn() {}, error() {} };
const noAudit: AuditLog = {
  enabled: false,
  request() {},
  system() {},
  reopen() {},
  flush: async () => {},
  close: async () => {},
};

// shared by every request of the benchmark: only the limiter's own work is measured
const EMPTY_BODY = Readable.from([]);
const SIGNAL = new AbortController().signal;

function context(ip: string): RequestContext {
  const ctx = createContext({
    id: 'bench',
    method: 'GET',
    target: '/api/receipts',
    headers: {},
    rawHeaders: [],
    clientIp: ip,
    secure: false,
    httpVersion: '1.1',
    bodySource: EMPTY_BODY,
    signal: SIGNAL,
  });
  ctx.routeName = 'api';
  return ctx;
}

async function compile(store: Store): Promise<Policy> {
  const services: Services = {
    store,
    metrics: new Metrics({ defaultMetrics: false }),
    audit: noAudit,
    log: silent,
    now: Date.now,
    persistent: new Map(),
    env: {},
  };
  // generous limits, so every request takes the full path (three buckets updated)
  const block = Value.Default(rateLimit.schema, {
    default: '100000000 per day;10000000 per hour;1000000 per minute',
  });
  return rateLimit.compile(block as never, {
    services,
    path: ['policies', 'rate_limit'],
    config: {},
    configDir: '.',
  });
}

const ips = Array.from({ length: IPS }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);

async function measure(name: string, store: Store): Promise<string> {
  const policy = await compile(store);
  const hook = policy.onRequest!;
  for (let i = 0; i < 2000; i++) await hook(context(ips[i % IPS]!)); // warm-up
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < SEQUENTIAL; i++) {
    const v = await hook(context(ips[i % IPS]!));
    if (v !== undefined) throw new Error(`unexpected refusal ${JSON.stringify(v)}`);
  }
  const seqNs = Number(process.hrtime.bigint() - t0) / SEQUENTIAL;
  let next = 0;
  t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONCURRENT }, async () => {
      while (next < SEQUENTIAL) {
        const i = next++;
        await hook(context(ips[i % IPS]!));
      }
    }),
  );
  const rate = SEQUENTIAL / (Number(process.hrtime.bigint() - t0) / 1e9);
  return `  ${name.padEnd(8)} ${(seqNs / 1000).toFixed(1).padStart(7)} µs/request sequential   ${Math.round(rate).toLocaleString('en-US').padStart(9)} requests/s with ${CONCURRENT} in flight   (${SEQUENTIAL.toLocaleString('en-US')} requests, ${IPS.toLocaleString('en-US')} IPs, 3 windows)`;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function startRedisServer(): Promise<{ url: string; proc: ChildProcess } | undefined> {
  if (spawnSync('redis-server', ['--version']).status !== 0) return undefined;
  const port = await freePort();
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  const url = `redis://127.0.0.1:${port}/0`;
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return { url, proc };
    await new Promise((r) => setTimeout(r, 25));
  }
  proc.kill('SIGKILL');
  return undefined;
}

async function main(): Promise<void> {
  const metrics = new Metrics({ defaultMetrics: false });
  const memory = createStore({ url: 'memory://', maxKeys: 100_000, metrics, log: silent });
  process.stdout.write(`${await measure('memory', memory)}\n`);
  await memory.close();

  let started: { url: string; proc: ChildProcess } | undefined;
  const url = process.env.REDIS_URL?.startsWith('redis')
    ? process.env.REDIS_URL
    : (started = await startRedisServer())?.url;
  if (url === undefined) {
    process.stdout.write('  redis    skipped: no REDIS_URL and no redis-server binary\n');
    return;
  }
  const redis = createStore({ url, prefix: `bench${process.pid}:`, timeoutMs: 2000, metrics, log: silent });
  try {
    await redis.ping();
    process.stdout.write(`${await measure('redis', redis)}\n`);
  } finally {
    await redis.close();
    started?.proc.kill('SIGTERM');
  }
}

main().catch((err: Error) => {
  process.stderr.write(`limiter bench failed: ${err.stack ?? err.message}\n`);
  process.exitCode = 1;
});
