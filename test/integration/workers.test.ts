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
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
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
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM stops the workers and the primary with exit 0');
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
