import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import YAML from 'yaml';
import type { Test } from 'tap';
import { startRedis, freePort } from './redis.js';
import { startMock } from '../../upstream-mock/server.js';
import { REPO, TEST_SECRET } from './harness.js';

export interface ClusterOptions {
  /** names the temporary folder (rgw-NAME-…) */
  readonly name: string;
  /** RATELIMIT_DEFAULT of the shipped config */
  readonly rateLimit: string;
  /** environment of the mock besides JWT_SECRET_KEY */
  readonly mockEnv?: Record<string, string>;
  /** the main listener's port (default: a free one) */
  readonly port?: number;
}

export interface Cluster {
  /** the main listener */
  readonly port: number;
  readonly adminPort: number;
  /** the temporary folder: the config file and the audit log are in it */
  readonly dir: string;
  /** the config file the CLI was started with (the shipped one, `workers: 2`) */
  readonly file: string;
  readonly child: ChildProcessByStdio<null, Readable, Readable>;
  /** the exit code of the CLI, once it exited */
  readonly exited: Promise<number | null>;
  /** everything the CLI printed so far, stdout and stderr */
  output(): string;
}

/**
 * The real CLI (`receipt-gateway start`) with the shipped config and `workers: 2`, in front of
 * a real mock, on a real redis-server, all stopped when `t` ends (the CLI with SIGTERM). It is
 * not waited for: the test waits for the workers to listen as it needs.
 */
export async function startCluster(t: Test, opts: ClusterOptions): Promise<Cluster> {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const mock = await startMock({ port: 0, env: { ...opts.mockEnv, JWT_SECRET_KEY: TEST_SECRET } });
  t.teardown(() => mock.close());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `rgw-${opts.name}-`));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cfg = YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as Record<
    string,
    Record<string, unknown>
  >;
  cfg.workers = 2 as never;
  cfg.listen = { ...cfg.listen, host: '127.0.0.1' };
  const file = path.join(dir, 'gateway.yaml');
  fs.writeFileSync(file, YAML.stringify(cfg));
  const port = opts.port ?? (await freePort());
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
        RATELIMIT_DEFAULT: opts.rateLimit,
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
  return { port, adminPort, dir, file, child, exited, output: () => out };
}
