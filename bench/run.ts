// `npm run bench`: starts its own upstream (the mock), a bare undici proxy and the
// gateway in separate processes, drives them with autocannon on loopback, and prints
// every figure with its ratios from the same run. Options (env):
//   BENCH_DURATION=8   seconds per load scenario
//   BENCH_ONLY=core,body,uploads,growth,micro   sections to run (default all)
//   BENCH_FIXED_RATE=500   offered req/s of the fixed-rate latency comparison of (b) and (c)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { SignJWT } from 'jose';
import {
  DIST,
  REPO,
  freePort,
  startChild,
  startGatewayChild,
  load,
  fixedRate,
  loadWrk,
  wrkAvailable,
  table,
  fmt,
  peakRss,
  startRedis,
  withCpu,
  type Child,
  type LoadResult,
} from './lib.js';
import { FACTORIES } from '../policies/registry.js';
import { modsecAvailable, startModsec } from './modsec.js';

const DURATION = Number(process.env.BENCH_DURATION ?? 8);
/** Simple GET scenarios use wrk where installed (as the reference figures did), else autocannon. */
const USE_WRK = process.env.BENCH_LOADER !== 'autocannon' && wrkAvailable();
const get = (
  name: string,
  url: string,
  o: { headers?: Record<string, string>; duration?: number; connections?: number },
) => (USE_WRK ? loadWrk(name, url, o) : load(name, url, o));
const ONLY = new Set((process.env.BENCH_ONLY ?? 'core,body,uploads,growth,workers,tls,micro').split(','));
const SECRET = 'bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-bench-'));
const children: Child[] = [];

type Obj = Record<string, unknown>;

function writeConfig(name: string, mutate: (cfg: Obj) => void): string {
  const cfg = YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as Obj;
  mutate(cfg);
  const file = path.join(tmp, `${name}.yaml`);
  fs.writeFileSync(file, YAML.stringify(cfg));
  return file;
}

function policiesOff(cfg: Obj): void {
  const pol: Obj = (cfg.policies as Obj) ?? {};
  for (const f of FACTORIES) pol[f.key] = { ...((pol[f.key] as Obj) ?? {}), enabled: false };
  cfg.policies = pol;
  cfg.audit = { ...(cfg.audit as Obj), enabled: false };
}

async function startGateway(
  name: string,
  configFile: string,
  upstream: string,
  extraEnv: Record<string, string> = {},
): Promise<{ url: string; child: Child; admin: string }> {
  const { child, port, adminPort } = await startGatewayChild(configFile, {
    JWT_SECRET_KEY: SECRET,
    UPSTREAM_URL: upstream,
    AUDIT_LOG_FILE: path.join(tmp, `${name}-audit.log`),
    RATELIMIT_DEFAULT: '100000000 per minute',
    ...extraEnv,
  });
  children.push(child);
  return { url: `http://127.0.0.1:${port}`, child, admin: `http://127.0.0.1:${adminPort}` };
}

function ratio(a: LoadResult | undefined, b: LoadResult | undefined): string {
  if (!a || !b || b.rps === 0) return '-';
  return fmt(a.rps / b.rps, 2);
}

function runScript(rel: string, args: string[] = [], env: Record<string, string> = {}): string {
  const file = path.join(DIST, rel);
  if (!fs.existsSync(file)) return `(${rel} not built)\n`;
  const r = spawnSync(process.execPath, [file, ...args], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 300_000,
  });
  return (r.stdout ?? '') + (r.status !== 0 ? `(exit ${r.status}) ${r.stderr ?? ''}` : '');
}

async function main(): Promise<void> {
  const started = Date.now();
  process.stdout.write(
    `receipt-gateway bench — ${new Date().toISOString()}, ${os.cpus().length} cores, node ${process.version}, ${DURATION}s per scenario, 50 connections\n\n`,
  );
  const mockPort = await freePort();
  const upstream = `http://127.0.0.1:${mockPort}`;
  const mock = await startChild(
    path.join(DIST, 'upstream-mock', 'main.js'),
    [],
    { MOCK_PORT: String(mockPort), JWT_SECRET_KEY: SECRET },
    `${upstream}/api/health`,
  );
  children.push(mock);
  const token = await new SignJWT({ role: 'user' })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('alice')
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(new TextEncoder().encode(SECRET));
  const auth = { authorization: `Bearer ${token}`, 'user-agent': 'bench/1.0', accept: 'application/json' };
  const target = '/api/receipts/1?merchant=Whole%20Foods';

  const results: Record<string, LoadResult> = {};
  if (ONLY.has('core')) {
    const bareHealthPort = await freePort();
    const bare = await startChild(
      path.join(DIST, 'bench', 'bare-proxy.js'),
      [],
      { UPSTREAM_URL: upstream, PORT: String(bareHealthPort) },
      `http://127.0.0.1:${bareHealthPort}/api/health`,
    );
    children.push(bare);
    const off = await startGateway('off', writeConfig('off', policiesOff), upstream);
    const dflt = await startGateway(
      'default',
      writeConfig('default', () => {}),
      upstream,
    );

    results.a = await get('(a) upstream directly', upstream + target, { headers: auth, duration: DURATION });
    results.bare = await withCpu(bare.proc.pid!, () =>
      get('(r) bare undici proxy', `http://127.0.0.1:${bareHealthPort}${target}`, {
        headers: auth,
        duration: DURATION,
      }),
    );
    results.b = await withCpu(off.child.proc.pid!, () =>
      get('(b) gateway, every policy off', off.url + target, {
        headers: auth,
        duration: DURATION,
      }),
    );
    results.c = await withCpu(dflt.child.proc.pid!, () =>
      get('(c) gateway, default policies + valid JWT', dflt.url + target, {
        headers: auth,
        duration: DURATION,
      }),
    );
    if (modsecAvailable()) {
      const modsec = await startModsec(mockPort);
      children.push({ proc: undefined as never, stop: modsec.stop });
      const mLoad = () =>
        get('(m) nginx + ModSecurity + CRS PL1, 1 worker', modsec.url + target, {
          headers: auth,
          duration: DURATION,
        });
      results.m = modsec.workerPid === undefined ? await mLoad() : await withCpu(modsec.workerPid, mLoad);
      await modsec.stop();
    }
    process.stdout.write(`${table(Object.values(results))}\n\n`);
    process.stdout.write(
      `ratios: c/b = ${ratio(results.c, results.b)} (goal >= 0.80), c/a = ${ratio(results.c, results.a)}, b/r = ${ratio(results.b, results.bare)} (goal >= 0.90)\n`,
    );
    process.stdout.write(
      `p99 at full load: c - b = ${fmt(results.c!.p99 - results.b!.p99, 2)} ms (closed loop: at saturation the latency is the queue, 50 connections / throughput)\n`,
    );
    // Latency added per request, measured below saturation: the same fixed offered rate
    // through both gateways, so the difference is processing time, not queueing.
    const rate = Number(process.env.BENCH_FIXED_RATE ?? 500);
    const fixedB = await fixedRate(`(b) at a fixed ${rate} req/s`, off.url + target, {
      headers: auth,
      seconds: DURATION,
      rate,
    });
    const fixedC = await fixedRate(`(c) at a fixed ${rate} req/s`, dflt.url + target, {
      headers: auth,
      seconds: DURATION,
      rate,
    });
    process.stdout.write(
      `${table([fixedB, fixedC], 2)}\n  p99 at a fixed ${rate} req/s: c - b = ${fmt(fixedC.p99 - fixedB.p99, 2)} ms (goal <= 1 ms), p50 c - b = ${fmt(fixedC.p50 - fixedB.p50, 2)} ms\n`,
    );
    // CPU per request of the process under test: independent of how the two cores are shared
    const cpu = (r: LoadResult | undefined) =>
      (r as { cpuUsPerRequest?: number } | undefined)?.cpuUsPerRequest ?? NaN;
    process.stdout.write(
      `CPU per request: r ${fmt(cpu(results.bare))} µs, b ${fmt(cpu(results.b))} µs, c ${fmt(cpu(results.c))} µs; ` +
        `cost ratios r/b = ${fmt(cpu(results.bare) / cpu(results.b), 2)} (core overhead), b/c = ${fmt(cpu(results.b) / cpu(results.c), 2)} (policy overhead)\n`,
    );
    process.stdout.write(
      results.m
        ? `against nginx + ModSecurity + CRS PL1 (one worker each): c/m = ${ratio(results.c, results.m)}x in req/s (goal >= 10x); ` +
            `per CPU: m ${fmt(cpu(results.m))} µs per request against c ${fmt(cpu(results.c))} µs, ${fmt(cpu(results.m) / cpu(results.c), 2)}x\n\n`
        : 'nginx + ModSecurity + CRS not installed: apt-get install nginx libnginx-mod-http-modsecurity modsecurity-crs\n\n',
    );
    // Memory with 1,000 concurrent keep-alive clients.
    const many = await peakRss(dflt.child.proc.pid!, () =>
      get('(c) with 1,000 keep-alive connections', dflt.url + target, {
        headers: auth,
        duration: Math.max(4, DURATION / 2),
        connections: 1000,
      }),
    );
    process.stdout.write(
      `${table([many.result])}\n  gateway peak RSS at 1,000 connections: ${fmt(many.peakMb, 1)} MB (goal < 150 MB)\n\n`,
    );

    const receipt = JSON.stringify({
      merchant: "Trader Joe's",
      total: 23.5,
      date: '2024-03-01',
      notes: 'weekly groceries & snacks',
    });
    const mixedGw = await startGateway(
      'mixed',
      writeConfig('mixed', (cfg) => {
        // one client IP sends the attacks here: an auto-ban would turn the rest into 403s
        (cfg.policies as Obj).ip_ban = { ...((cfg.policies as Obj).ip_ban as Obj), auto_ban: false };
      }),
      upstream,
    );
    const mixed = await load('(d) mixed: reads, writes, attacks, logins (auto-ban off)', mixedGw.url, {
      duration: DURATION,
      requests: [
        { method: 'GET', path: target, headers: auth },
        {
          method: 'POST',
          path: '/api/receipts',
          headers: { ...auth, 'content-type': 'application/json' },
          body: receipt,
        },
        { method: 'GET', path: "/api/receipts?merchant=1'%20OR%20'1'='1", headers: auth },
        {
          method: 'POST',
          path: '/api/auth/login',
          headers: { 'content-type': 'application/json', 'user-agent': 'bench/1.0' },
          body: JSON.stringify({ username: 'alice', password: 'alice-secret-pw' }),
        },
        { method: 'GET', path: '/api/receipts?q=%3Cscript%3Ealert(1)%3C/script%3E', headers: auth },
        { method: 'GET', path: '/api/receipts', headers: auth },
      ],
    });
    await mixedGw.child.stop();
    process.stdout.write(`${table([mixed])}\n\n`);

    if (ONLY.has('body')) {
      // ~1 MB receipt: 500 items (the service's maximum) and long free-text notes.
      const words =
        'Weekly groceries for the family: organic apples, pears, oat milk and two loaves of sourdough bread. ';
      const bigBody = JSON.stringify({
        merchant: 'Costco Wholesale',
        total: 1234.5,
        date: '2024-03-01',
        items: Array.from({ length: 500 }, (_, i) => ({
          name: `Organic apples ${i}`,
          quantity: 1 + (i % 3),
          price: 3.49,
        })),
        notes: words.repeat(Math.floor(960_000 / words.length)),
      });
      const bodyHeaders = { ...auth, 'content-type': 'application/json' };
      const rows = [
        await load('1 MB JSON POST, bare undici proxy', `http://127.0.0.1:${bareHealthPort}/api/receipts`, {
          connections: 10,
          duration: DURATION,
          method: 'POST',
          headers: bodyHeaders,
          body: bigBody,
        }),
        await load('1 MB JSON POST, gateway (JSON inspected)', `${dflt.url}/api/receipts`, {
          connections: 10,
          duration: DURATION,
          method: 'POST',
          headers: bodyHeaders,
          body: bigBody,
        }),
        await load('1 MB JSON POST, gateway policies off', `${off.url}/api/receipts`, {
          connections: 10,
          duration: DURATION,
          method: 'POST',
          headers: bodyHeaders,
          body: bigBody,
        }),
      ];
      process.stdout.write(
        `${table(rows)}\n  goal: inspected >= 50/s (ModSecurity+CRS PL1: 1.7/s); uninspected >= bare proxy\n\n`,
      );
    }
    const rss = (await import('./lib.js')).rssMb(dflt.child.proc.pid!);
    process.stdout.write(`gateway (default policies) RSS after load: ${fmt(rss, 1)} MB\n\n`);
    await off.child.stop();
    await dflt.child.stop();
    await bare.stop();
  }

  if (ONLY.has('uploads')) {
    const uploadsModule = path.join(DIST, 'bench', 'uploads.js');
    if (fs.existsSync(uploadsModule)) {
      const gw = await startGateway(
        'uploads',
        writeConfig('uploads', () => {}),
        upstream,
      );
      const { runUploads } = (await import(uploadsModule)) as {
        runUploads: (
          url: string,
          o: { concurrency: number; sizeBytes: number; token: string },
        ) => Promise<{ seconds: number; mbPerSec: number; statuses: Record<string, number> }>;
      };
      const { peakMb, result } = await peakRss(gw.child.proc.pid!, () =>
        runUploads(gw.url, { concurrency: 50, sizeBytes: 16 * 1024 * 1024 - 4096, token }),
      );
      process.stdout.write(
        `uploads: 50 concurrent ~16 MB PDFs: ${fmt(result.seconds, 1)} s, ${fmt(result.mbPerSec, 1)} MB/s, statuses ${JSON.stringify(result.statuses)}, gateway peak RSS ${fmt(peakMb, 1)} MB (goal <= 200 MB)\n\n`,
      );
      await gw.child.stop();
    }
  }

  if (ONLY.has('growth')) {
    // Cost growth: body size (JSON inspected) and number of routes.
    const gw = await startGateway(
      'growth',
      writeConfig('growth', () => {}),
      upstream,
    );
    const bodyHeaders = { ...auth, 'content-type': 'application/json' };
    const rows: LoadResult[] = [];
    for (const kb of [1, 10, 100, 1000]) {
      const body = JSON.stringify({
        merchant: 'Costco',
        total: 9.99,
        notes: 'organic apples and pears '.repeat(Math.ceil((kb * 1000) / 25)).slice(0, kb * 1000 - 40),
      });
      rows.push(
        await load(`POST ${kb} KB JSON (inspected)`, `${gw.url}/api/receipts`, {
          connections: 10,
          duration: Math.max(3, DURATION / 2),
          method: 'POST',
          headers: bodyHeaders,
          body,
        }),
      );
    }
    await gw.child.stop();
    process.stdout.write(`${table(rows)}
`);
    process.stdout.write(
      `  per-request cost (1/req/s, ms): ${rows.map((r) => fmt(1000 / r.rps, 2)).join(' → ')}; per KB at 1 MB: ${fmt(1000 / rows[3]!.rps / 1000, 4)} ms\n\n`,
    );
    const routeRows: LoadResult[] = [];
    for (const count of [10, 100, 1000]) {
      const file = writeConfig(`routes-${count}`, (cfg) => {
        const routes = cfg.routes as Obj[];
        const extra = Array.from({ length: count }, (_, i) => ({
          name: `svc-${i}`,
          path: `/api/svc${i}/items/:id`,
          methods: ['GET'],
        }));
        const at = routes.findIndex((r) => r.name === 'api');
        routes.splice(at, 0, ...extra);
      });
      const g = await startGateway(`routes-${count}`, file, upstream);
      routeRows.push(
        await get(`GET with ${count} extra routes`, g.url + target, {
          headers: auth,
          duration: Math.max(3, DURATION / 2),
        }),
      );
      await g.child.stop();
    }
    process.stdout.write(
      `${table(routeRows)}\n  1000 vs 10 routes: ${ratio(routeRows[2], routeRows[0])} (goal: close to 1)\n\n`,
    );
  }

  const redis = ONLY.has('workers') ? await startRedis() : undefined;
  if (redis) {
    children.push({ proc: undefined as never, stop: redis.stop });
    const rows: LoadResult[] = [];
    for (const workers of [1, 2]) {
      const file = writeConfig(`workers-${workers}`, (cfg) => {
        cfg.workers = workers;
      });
      const g = await startGateway(`workers-${workers}`, file, upstream, { REDIS_URL: redis.url });
      rows.push(
        await get(`default policies, redis, workers: ${workers}`, g.url + target, {
          headers: auth,
          duration: DURATION,
        }),
      );
      await g.child.stop();
    }
    process.stdout.write(`${table(rows)}\n  scaling 1 → 2 workers: ${ratio(rows[1], rows[0])}x\n\n`);
  }

  if (ONLY.has('tls')) {
    const tls = (await import('./tls.js')) as { runTlsBench: (o: { duration: number }) => Promise<string> };
    process.stdout.write(
      `https (h1 and h2) against plain HTTP:\n${await tls.runTlsBench({ duration: DURATION })}\n`,
    );
  }

  if (ONLY.has('micro')) {
    process.stdout.write('pattern engine:\n' + runScript('bench/pattern-engine.js') + '\n');
    process.stdout.write('JWT verification:\n' + runScript('bench/jwt.js') + '\n');
    process.stdout.write('rate limiter:\n' + runScript('bench/limiter.js') + '\n');
  }
  process.stdout.write(`bench finished in ${fmt((Date.now() - started) / 1000, 0)} s\n`);
}

main()
  .catch((err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await Promise.allSettled(children.map((c) => c.stop()));
    fs.rmSync(tmp, { recursive: true, force: true });
  });
