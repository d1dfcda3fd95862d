// `npm run soak`: a bounded mixed-load soak on loopback, with faults, that checks nothing
// is lost. It starts Redis (when redis-server exists), the mock and the gateway, drives
// authenticated reads, writes, uploads, logins (some failing), attacks and CORS
// preflights, and meanwhile: reloads the config, restarts Redis, makes the upstream slow
// (SIGSTOP) and then unreachable (killed, restarted later), and opens slowloris clients.
// It reports requests sent/answered/by status, unanswered requests, unexpected 5xx, audit
// lines missing for answered requests, and RSS / open handles at the start and the end.
//   SOAK_SECONDS=120 (default)  SOAK_CONCURRENCY=16
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import YAML from 'yaml';
import { SignJWT } from 'jose';
import { Agent, request } from 'undici';
import {
  DIST,
  REPO,
  freePort,
  startChild,
  startGatewayChild,
  rssMb,
  fmt,
  startRedis,
  type Child,
} from './lib.js';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 120);
const CONCURRENCY = Number(process.env.SOAK_CONCURRENCY ?? 16);
const SECRET = 'soak-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-soak-'));
const stops: (() => Promise<void>)[] = [];

interface Phase {
  name: string;
  from: number;
  to: number;
}
const phases: Phase[] = [];
const t0 = Date.now();
const now = () => (Date.now() - t0) / 1000;
function mark(name: string, from: number, to: number) {
  phases.push({ name, from, to });
  process.stdout.write(`  t=${fmt(from, 1)}s ${name}\n`);
}

function pdf(n: number): Buffer {
  return Buffer.from(
    `%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n% receipt ${n}\n${'0'.repeat(2000)}\ntrailer << /Root 1 0 R >>\n%%EOF\n`,
  );
}

function multipart(file: Buffer, name: string): { body: Buffer; type: string } {
  const boundary = `----soak${randomUUID()}`;
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: application/pdf\r\n\r\n`;
  return {
    body: Buffer.concat([Buffer.from(head), file, Buffer.from(`\r\n--${boundary}--\r\n`)]),
    type: `multipart/form-data; boundary=${boundary}`,
  };
}

async function metric(adminUrl: string, name: string): Promise<number> {
  try {
    const text = await (await fetch(`${adminUrl}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line ? Number(line.split(' ').pop()) : NaN;
  } catch {
    return NaN;
  }
}

async function main(): Promise<void> {
  process.stdout.write(
    `receipt-gateway soak: ${SECONDS}s, ${CONCURRENCY} concurrent clients, loopback only\n`,
  );
  const redis = await startRedis();
  if (redis) stops.push(redis.stop);
  process.stdout.write(`  store: ${redis ? redis.url : 'memory:// (redis-server not installed)'}\n`);

  const mockPort = await freePort();
  const upstream = `http://127.0.0.1:${mockPort}`;
  let mock: Child | undefined;
  const startMockProc = async () => {
    mock = await startChild(
      path.join(DIST, 'upstream-mock', 'main.js'),
      [],
      { MOCK_PORT: String(mockPort), JWT_SECRET_KEY: SECRET },
      `${upstream}/api/health`,
    );
  };
  await startMockProc();
  stops.push(() => mock?.stop() ?? Promise.resolve());

  const auditFile = path.join(tmp, 'audit.log');
  const configFile = path.join(tmp, 'gateway.yaml');
  const cfg = YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as Record<
    string,
    Record<string, unknown>
  >;
  cfg.upstream = { ...cfg.upstream, response_timeout: '2s', connect_timeout: '1s' };
  cfg.listen = { ...cfg.listen, header_timeout: '5s', request_timeout: '20s' };
  // Every client here is 127.0.0.1: an auto-ban would turn the rest of the soak into 403s.
  cfg.policies = {
    ...(cfg.policies as Record<string, unknown>),
    ip_ban: { ...((cfg.policies as Record<string, Record<string, unknown>>).ip_ban ?? {}), auto_ban: false },
  };
  fs.writeFileSync(configFile, YAML.stringify(cfg));
  const {
    child: gw,
    port,
    adminPort,
  } = await startGatewayChild(configFile, {
    JWT_SECRET_KEY: SECRET,
    UPSTREAM_URL: upstream,
    AUDIT_LOG_FILE: auditFile,
    RATELIMIT_DEFAULT: '1000000 per minute',
    REDIS_URL: redis?.url ?? 'memory://',
    LOG_LEVEL: 'error',
  });
  stops.push(() => gw.stop());
  const base = `http://127.0.0.1:${port}`;
  const admin = `http://127.0.0.1:${adminPort}`;
  const token = await new SignJWT({ role: 'user' })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('soak')
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(new TextEncoder().encode(SECRET));
  const auth = { authorization: `Bearer ${token}`, 'user-agent': 'soak/1.0' };
  const agent = new Agent({ connections: CONCURRENCY * 2, headersTimeout: 30_000, bodyTimeout: 30_000 });

  await sleep(500);
  const startRss = rssMb(gw.proc.pid!);
  const startHandles = await metric(admin, 'nodejs_active_handles_total');

  const statuses = new Map<number, number>();
  const errors = new Map<string, number>();
  const fiveXX: { t: number; status: number }[] = [];
  const answeredIds = new Set<string>();
  let sent = 0;
  let n = 0;
  const kinds = [
    () => ({ method: 'GET', path: '/api/receipts?merchant=Whole%20Foods', headers: auth }),
    () => ({ method: 'GET', path: `/api/receipts/${(n % 20) + 1}`, headers: auth }),
    () => ({
      method: 'POST',
      path: '/api/receipts',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ merchant: "Trader Joe's", total: 12.5, notes: 'soak & test' }),
    }),
    () => {
      const m = multipart(pdf(n), `receipt-${n}.pdf`);
      return {
        method: 'POST',
        path: '/api/receipts/upload',
        headers: { ...auth, 'content-type': m.type },
        body: m.body,
      };
    },
    () => ({
      method: 'POST',
      path: '/api/auth/login',
      headers: { 'content-type': 'application/json', 'user-agent': 'soak/1.0' },
      body: JSON.stringify({
        username: n % 3 === 0 ? 'alice' : `user${n % 50}`,
        password: n % 3 === 0 ? 'alice-secret-pw' : 'wrong-password!',
      }),
    }),
    () => ({
      method: 'GET',
      path: "/api/receipts?merchant=1'%20UNION%20SELECT%20password%20FROM%20users--",
      headers: auth,
    }),
    () => ({ method: 'GET', path: '/api/receipts?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E', headers: auth }),
    () => ({
      method: 'OPTIONS',
      path: '/api/receipts',
      headers: {
        origin: 'http://localhost:10000',
        'access-control-request-method': 'POST',
        'user-agent': 'soak/1.0',
      },
    }),
  ];

  const deadline = t0 + SECONDS * 1000;
  const worker = async () => {
    while (Date.now() < deadline) {
      const req = kinds[n++ % kinds.length]!();
      const id = randomUUID();
      sent++;
      try {
        const r = await request(`${base}${req.path}`, {
          method: req.method as 'GET',
          headers: { ...req.headers, 'x-request-id': id },
          ...('body' in req ? { body: req.body } : {}),
          dispatcher: agent,
        });
        await r.body.dump();
        statuses.set(r.statusCode, (statuses.get(r.statusCode) ?? 0) + 1);
        answeredIds.add(id);
        if (r.statusCode >= 500) fiveXX.push({ t: now(), status: r.statusCode });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).name;
        errors.set(code, (errors.get(code) ?? 0) + 1);
      }
    }
  };

  const slowloris: net.Socket[] = [];
  const faults = async () => {
    const at = (frac: number) => sleep(Math.max(0, t0 + SECONDS * 1000 * frac - Date.now()));
    await at(0.15);
    const a = now();
    cfg.policies = { ...(cfg.policies as Record<string, unknown>), user_agent: { max_length: 600 } };
    fs.writeFileSync(configFile, YAML.stringify(cfg));
    gw.proc.kill('SIGHUP');
    mark('config reload (SIGHUP)', a, a);
    if (redis) {
      await at(0.3);
      const b = now();
      await redis.restart();
      mark('redis restarted (down ~3 s)', b, now());
    }
    await at(0.45);
    const c = now();
    mock?.proc.kill('SIGSTOP');
    await sleep(Math.min(8000, SECONDS * 100));
    mock?.proc.kill('SIGCONT');
    mark('upstream slow (SIGSTOP)', c, now() + 2);
    await at(0.6);
    const d = now();
    await mock?.stop();
    await sleep(Math.min(8000, SECONDS * 100));
    await startMockProc();
    mark('upstream unreachable (killed, restarted)', d, now() + 2);
    await at(0.7);
    const e = now();
    for (let i = 0; i < 50; i++) {
      const s = net.connect(port, '127.0.0.1', () => s.write('GET /api/health HTTP/1.1\r\nHost: x\r\n'));
      s.on('error', () => {});
      slowloris.push(s);
    }
    mark('50 slowloris clients', e, e);
  };

  await Promise.all([...Array.from({ length: CONCURRENCY }, worker), faults()]);
  await sleep(6000);
  const slowlorisClosed = slowloris.filter((s) => s.destroyed || s.readableEnded).length;
  for (const s of slowloris) s.destroy();
  await agent.close();
  await sleep(1000);
  const endRss = rssMb(gw.proc.pid!);
  const endHandles = await metric(admin, 'nodejs_active_handles_total');

  // Flush the audit log (graceful stop), then check every answered request is in it.
  await gw.stop();
  const audited = new Set<string>();
  for (const line of fs.readFileSync(auditFile, 'utf8').split('\n')) {
    if (line === '') continue;
    try {
      const id = (JSON.parse(line) as { request_id?: string }).request_id;
      if (id) audited.add(id);
    } catch {
      // a torn line would show up as missing ids
    }
  }
  const missing = [...answeredIds].filter((id) => !audited.has(id)).length;
  const inFault = (t: number) =>
    phases.some((p) => p.name.startsWith('upstream') && t >= p.from - 1 && t <= p.to + 3);
  const unexpected5xx = fiveXX.filter((f) => !((f.status === 502 || f.status === 504) && inFault(f.t)));
  const answered = [...statuses.values()].reduce((a, b) => a + b, 0);

  process.stdout.write(
    `\nrequests sent ${sent}, answered ${answered}, client errors ${[...errors].map(([k, v]) => `${k}:${v}`).join(' ') || 'none'}\n`,
  );
  process.stdout.write(
    `by status: ${[...statuses]
      .sort((a, b) => a[0] - b[0])
      .map(([k, v]) => `${k}:${v}`)
      .join(' ')}\n`,
  );
  process.stdout.write(
    `5xx: ${fiveXX.length} (502/504 during upstream faults), unexpected 5xx: ${unexpected5xx.length}\n`,
  );
  process.stdout.write(
    `audit: ${answeredIds.size} answered request ids, ${missing} missing from the audit log\n`,
  );
  process.stdout.write(
    `slowloris: ${slowlorisClosed}/${slowloris.length} closed by the gateway's header timeout\n`,
  );
  process.stdout.write(
    `gateway RSS: ${fmt(startRss, 1)} MB at start, ${fmt(endRss, 1)} MB at the end; active handles ${startHandles} → ${endHandles}\n`,
  );
  const ok = sent === answered && unexpected5xx.length === 0 && missing === 0;
  process.stdout.write(ok ? 'soak: PASS\n' : 'soak: FAIL\n');
  if (!ok) process.exitCode = 1;
}

main()
  .catch((err: Error) => {
    process.stderr.write(`soak failed: ${err.stack ?? err.message}\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const s of stops.reverse()) await s().catch(() => {});
    fs.rmSync(tmp, { recursive: true, force: true });
  });
