import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { NODE_FLAGS } from '../gateway/node-flags.js';

/** Benchmark helpers: child processes, free ports, autocannon runs, RSS sampling. */

export const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(DIST, path.basename(DIST) === 'dist' ? '..' : '.');

export interface LoadResult {
  readonly name: string;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly non2xx: number;
  readonly errors: number;
  readonly statuses: Record<string, number>;
}

interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number; average: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodeStats?: Record<string, { count: number }>;
  duration: number;
}

interface AutocannonRequest {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

type Autocannon = (
  opts: {
    url: string;
    connections: number;
    duration: number;
    pipelining?: number;
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    requests?: AutocannonRequest[];
    timeout?: number;
  },
  cb: (err: Error | null, res: AutocannonResult) => void,
) => unknown;

const require = createRequire(import.meta.url);
const autocannon = require('autocannon') as Autocannon;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface Child {
  readonly proc: ChildProcess;
  stop(): Promise<void>;
}

/** Start a node script as a child and wait until `readyUrl` answers. */
export async function startChild(
  script: string,
  args: string[],
  env: Record<string, string>,
  readyUrl: string,
  nodeArgs: readonly string[] = [],
): Promise<Child> {
  const proc = spawn(process.execPath, [...nodeArgs, script, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  for (let i = 0; i < 150; i++) {
    if (proc.exitCode !== null) throw new Error(`${path.basename(script)} exited: ${stderr}`);
    try {
      const r = await fetch(readyUrl);
      await r.arrayBuffer();
      if (r.status < 500) break;
    } catch {
      // not up yet
    }
    await sleep(100);
    if (i === 149) throw new Error(`${path.basename(script)} did not start: ${stderr}`);
  }
  return {
    proc,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
        setTimeout(() => proc.kill('SIGKILL'), 5000).unref();
      }),
  };
}

/**
 * Start the gateway (`dist/gateway/cli.js start --config FILE`) with its launch flags
 * (gateway/node-flags.ts) on free ports; `env` adds to the gateway's environment
 * (JWT_SECRET_KEY, UPSTREAM_URL, AUDIT_LOG_FILE …; LOG_LEVEL defaults to warn).
 */
export async function startGatewayChild(
  configFile: string,
  env: Record<string, string>,
): Promise<{ child: Child; port: number; adminPort: number }> {
  const port = await freePort();
  const adminPort = await freePort();
  const child = await startChild(
    path.join(DIST, 'gateway', 'cli.js'),
    ['start', '--config', configFile],
    { GATEWAY_PORT: String(port), GATEWAY_ADMIN_PORT: String(adminPort), LOG_LEVEL: 'warn', ...env },
    `http://127.0.0.1:${adminPort}/healthz`,
    NODE_FLAGS,
  );
  return { child, port, adminPort };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function load(
  name: string,
  url: string,
  opts: {
    connections?: number;
    duration?: number;
    headers?: Record<string, string>;
    method?: string;
    body?: string | Buffer;
    requests?: AutocannonRequest[];
  } = {},
): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url,
        connections: opts.connections ?? 50,
        duration: opts.duration ?? 8,
        timeout: 10,
        ...(opts.method ? { method: opts.method } : {}),
        ...(opts.headers ? { headers: opts.headers } : {}),
        ...(opts.body !== undefined ? { body: opts.body } : {}),
        ...(opts.requests ? { requests: opts.requests } : {}),
      },
      (err, res) => {
        if (err) return reject(err);
        const statuses: Record<string, number> = {};
        for (const [k, v] of Object.entries(res.statusCodeStats ?? {})) statuses[k] = v.count;
        resolve({
          name,
          rps: res.requests.average,
          p50: res.latency.p50,
          p99: res.latency.p99,
          non2xx: res.non2xx,
          errors: res.errors + res.timeouts,
          statuses,
        });
      },
    );
  });
}

/** Resident set size of a process in MB (Linux /proc). */
export function rssMb(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Sample a process's RSS every 50 ms while `work` runs; returns the peak in MB. */
export async function peakRss<T>(
  pid: number,
  work: () => Promise<T>,
): Promise<{ peakMb: number; result: T }> {
  let peak = rssMb(pid);
  const timer = setInterval(() => {
    const v = rssMb(pid);
    if (v > peak) peak = v;
  }, 50);
  try {
    const result = await work();
    return { peakMb: peak, result };
  } finally {
    clearInterval(timer);
  }
}

export function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

export function table(rows: LoadResult[], digits = 1): string {
  const lines = [
    `${'scenario'.padEnd(44)} ${'req/s'.padStart(9)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)}  statuses`,
  ];
  for (const r of rows) {
    const st = Object.entries(r.statuses)
      .map(([k, v]) => `${k}:${v}`)
      .join(' ');
    lines.push(
      `${r.name.padEnd(44)} ${fmt(r.rps).padStart(9)} ${fmt(r.p50, digits).padStart(7)} ${fmt(r.p99, digits).padStart(7)}  ${st}${r.errors ? ` errors:${r.errors}` : ''}`,
    );
  }
  return lines.join('\n');
}

/** A throwaway redis-server on a free port, when the binary exists. */
export async function startRedis(): Promise<
  { url: string; restart(): Promise<void>; stop(): Promise<void> } | undefined
> {
  const bin = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
  if (bin === '') return undefined;
  const port = await freePort();
  let proc: ChildProcess | undefined;
  const start = async () => {
    proc = spawn(bin, ['--port', String(port), '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1'], {
      stdio: 'ignore',
    });
    for (let i = 0; i < 50; i++) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
      if (ok) return;
      await sleep(100);
    }
    throw new Error('redis-server did not start');
  };
  const stop = async () => {
    if (!proc || proc.exitCode !== null) return;
    const p = proc;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGKILL');
    });
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}/0`,
    restart: async () => {
      await stop();
      await sleep(3000);
      await start();
    },
    stop,
  };
}

/** wrk (C, one thread) when installed: a load generator that costs far less CPU than autocannon. */
export function wrkAvailable(): boolean {
  return spawnSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' }).stdout.trim() !== '';
}

function wrkMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

/** A GET load with wrk: req/s, p50, p99; statuses split into 2xx/3xx and the rest. */
export function loadWrk(
  name: string,
  url: string,
  opts: { connections?: number; duration?: number; headers?: Record<string, string> } = {},
): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const args = [
      '-t1',
      `-c${opts.connections ?? 50}`,
      `-d${opts.duration ?? 8}s`,
      '--latency',
      '--timeout',
      '10s',
    ];
    for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`);
    args.push(url);
    const p = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('exit', () => {
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
      const total = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
      const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
      const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      resolve({
        name,
        rps,
        p50: wrkMs(/\s50%\s+(\S+)/.exec(out)?.[1] ?? ''),
        p99: wrkMs(/\s99%\s+(\S+)/.exec(out)?.[1] ?? ''),
        non2xx,
        errors: errors ? errors.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
        statuses: { '2xx/3xx': total - non2xx, other: non2xx },
      });
    });
  });
}

/** CPU time (user + system) a process has used, in ms (Linux /proc; clock ticks of 10 ms). */
export function cpuMs(pid: number): number {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // after "pid (comm) ": state is field 3; utime and stime are fields 14 and 15
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return NaN;
  }
}

/** Run a load and report the CPU the process under test spent per request, in µs. */
export async function withCpu(
  pid: number,
  run: () => Promise<LoadResult>,
): Promise<LoadResult & { cpuUsPerRequest: number }> {
  const before = cpuMs(pid);
  const r = await run();
  const total = Object.values(r.statuses).reduce((a, b) => a + b, 0);
  return { ...r, cpuUsPerRequest: ((cpuMs(pid) - before) * 1000) / Math.max(1, total) };
}

/**
 * Open-loop load at a fixed rate: one request is started every 1/rate seconds whatever the
 * previous ones are doing (no coordinated omission), over a keep-alive pool, and each
 * latency is timed with the high-resolution clock from its scheduled start. Below saturation
 * the percentiles then show the time the server spends on a request, not the queue a
 * closed-loop load (wrk, autocannon without a rate) builds at saturation.
 */
export async function fixedRate(
  name: string,
  url: string,
  opts: {
    rate: number;
    seconds: number;
    headers?: Record<string, string>;
    connections?: number;
    /** seconds at the same rate before measuring (JIT, pool connections); default 1 */
    warmup?: number;
  },
): Promise<LoadResult> {
  if ((opts.warmup ?? 1) > 0) await fixedRate(name, url, { ...opts, seconds: opts.warmup ?? 1, warmup: 0 });
  const { Pool } = await import('undici');
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: opts.connections ?? 50, pipelining: 1 });
  const target = u.pathname + u.search;
  const total = Math.round(opts.rate * opts.seconds);
  const latencies = new Float64Array(total);
  const statuses: Record<string, number> = {};
  let errors = 0;
  const t0 = process.hrtime.bigint();
  const interval = 1e9 / opts.rate;
  const pending: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = t0 + BigInt(Math.round(i * interval));
    const wait = Number(due - process.hrtime.bigint()) / 1e6;
    if (wait > 1) await sleep(wait);
    pending.push(
      pool
        .request({ method: 'GET', path: target, headers: opts.headers ?? {} })
        .then(async (r) => {
          await r.body.dump();
          latencies[i] = Number(process.hrtime.bigint() - due) / 1e6;
          statuses[r.statusCode] = (statuses[r.statusCode] ?? 0) + 1;
        })
        .catch(() => {
          latencies[i] = Number(process.hrtime.bigint() - due) / 1e6;
          errors++;
        }),
    );
  }
  await Promise.all(pending);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  await pool.close();
  const sorted = Array.from(latencies).sort((a, b) => a - b);
  const pct = (p: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
  return { name, rps: total / seconds, p50: pct(50), p99: pct(99), non2xx: 0, errors, statuses };
}
