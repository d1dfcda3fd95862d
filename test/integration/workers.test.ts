import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawn } from 'node:child_process';
import YAML from 'yaml';
import { startRedis } from '../helpers/redis.js';
import { startMock } from '../../upstream-mock/server.js';
import { REPO, TEST_SECRET } from '../helpers/harness.js';
import { eventually } from '../helpers/wait.js';

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

t.test('workers: 2 on a redis store serve one port and enforce one limit together', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const mock = await startMock({ port: 0, env: { MOCK_RECORD: '1', JWT_SECRET_KEY: TEST_SECRET } });
  t.teardown(() => mock.close());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-workers-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cfg = YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as Record<
    string,
    Record<string, unknown>
  >;
  cfg.workers = 2 as never;
  cfg.listen = { ...cfg.listen, host: '127.0.0.1' };
  const file = path.join(dir, 'gateway.yaml');
  fs.writeFileSync(file, YAML.stringify(cfg));
  const port = await freePort();
  const adminPort = await freePort();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(REPO, 'gateway', 'cli.ts'), 'start', '--config', file],
    {
      cwd: REPO,
      env: {
        ...process.env,
        JWT_SECRET_KEY: TEST_SECRET,
        UPSTREAM_URL: mock.url,
        GATEWAY_PORT: String(port),
        GATEWAY_ADMIN_PORT: String(adminPort),
        REDIS_URL: redis.url,
        RATELIMIT_DEFAULT: '6 per minute',
        AUDIT_LOG_FILE: path.join(dir, 'audit.log'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited0 = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited0;
  });
  for (let i = 0; i < 600 && (out.match(/listening on/g) ?? []).length < 2; i++)
    await new Promise((r) => setTimeout(r, 100));
  t.match(out, /starting 2 workers/);
  t.equal((out.match(/listening on/g) ?? []).length, 2, 'both workers listen');

  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) {
    // a new connection each time, so the cluster spreads the requests over both workers
    const r = await fetch(`http://127.0.0.1:${port}/api/health`, { headers: { connection: 'close' } });
    await r.arrayBuffer();
    statuses.push(r.status);
  }
  t.same(
    statuses.filter((s) => s === 200).length,
    6,
    `one limit of 6 across both workers (statuses ${statuses.join(',')})`,
  );
  t.same(statuses.filter((s) => s === 429).length, 6);

  // POST /api/reload on the admin listener reaches one worker; it passes the reload on
  const auditFile = path.join(dir, 'audit.log');
  const adminReloads = () =>
    fs.existsSync(auditFile)
      ? fs
          .readFileSync(auditFile, 'utf8')
          .split('\n')
          .filter((l) => l.includes('"event":"config_reload"') && l.includes('"trigger":"admin"')).length
      : 0;
  const r = await fetch(`http://127.0.0.1:${adminPort}/api/reload`, { method: 'POST' });
  t.equal(r.status, 200);
  await eventually('both workers reloaded', () => adminReloads() === 2);
  t.pass('one admin reload, a config_reload line from each worker');

  // a worker that dies while the file is invalid is started again once it is fixed
  const good = fs.readFileSync(file, 'utf8');
  fs.writeFileSync(file, `${good}\nnot_a_key: true\n`);
  const pid = Number(/\[worker (\d+)\]/.exec(out)?.[1]);
  t.ok(pid > 0, 'a worker pid');
  process.kill(pid, 'SIGKILL');
  await eventually('the replacement failed on the invalid file', () => /unknown key "not_a_key"/.test(out));
  fs.writeFileSync(file, good);
  await eventually('a worker listens again', () => (out.match(/listening on/g) ?? []).length >= 3, 60_000);
  t.match(out, /starting another in \d+ s/, 'restarted after a pause');

  // every worker dead and their replacements waiting for their pause: SIGTERM still ends at once
  fs.writeFileSync(file, `${good}\nnot_a_key: true\n`);
  const exited = new Set([...out.matchAll(/worker (\d+) exited/g)].map((m) => m[1]));
  const alive = [...new Set([...out.matchAll(/\[worker (\d+)\]/g)].map((m) => m[1]!))].filter(
    (p) => !exited.has(p),
  );
  t.equal(alive.length, 2, 'two workers alive');
  for (const p of alive) process.kill(Number(p), 'SIGKILL');
  await eventually('both deaths seen', () => (out.match(/exited \(/g) ?? []).length >= 3);
  await eventually('a replacement failed too', () => (out.match(/exited \(1\)/g) ?? []).length >= 1);
  const t0 = Date.now();
  child.kill('SIGTERM');
  t.equal(await exited0, 0, 'exit 0');
  // (the pending pause has doubled to several seconds by now)
  t.ok(Date.now() - t0 < 2000, 'without waiting for the pending restarts');
});

t.test('validate refuses workers > 1 with the memory store', async (t) => {
  const { parseConfig } = await import('../../gateway/config/load.js');
  const { compileGeneration } = await import('../../gateway/config/compile.js');
  const { offlineServices } = await import('../../gateway/commands/validate.js');
  let message = '';
  try {
    const loaded = parseConfig('workers: 2\nstore: { url: "memory://" }\n', 'w.yaml', {
      JWT_SECRET_KEY: TEST_SECRET,
    });
    await compileGeneration(loaded, offlineServices({}));
  } catch (err) {
    message = (err as Error).message;
  }
  t.match(
    message,
    /workers: 2 with the memory:\/\/ store would enforce rate limits, lockouts and bans per worker/,
  );
});
