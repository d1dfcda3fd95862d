import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { startCli } from '../helpers/cli-process.js';
import YAML from 'yaml';
import { deepMerge, REPO, TEST_SECRET } from '../helpers/harness.js';
import { startMock } from '../../upstream-mock/server.js';
import { freePort, startRedis } from '../helpers/redis.js';
import { eventually } from '../helpers/wait.js';

/**
 * SIGHUP and SIGUSR2 that reach `receipt-gateway start` while it starts (modules loading, config
 * loaded, store connecting, listeners not open yet) are held, not the end of the process (their
 * default action): once the gateway is up, the held SIGHUP reloads the file, once however many
 * came.
 */

/**
 * Whether `pid` catches SIGHUP now (Linux: the SigCgt mask of /proc/PID/status, bit 0), once
 * it runs the CLI (right after the fork it is still a copy of this process, and its handlers).
 */
function catchesHangup(pid: number): boolean {
  try {
    if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('cli.ts')) return false;
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m !== null && (BigInt(`0x${m[1]}`) & 1n) === 1n;
  } catch {
    return false;
  }
}

/** Whether nothing listens on 127.0.0.1:`port`. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

t.test('SIGHUP and SIGUSR2 during the start: held, then one reload once up', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-lifeaudit-signals-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const mock = await startMock({ port: 0, env: { JWT_SECRET_KEY: TEST_SECRET } });
  t.teardown(() => mock.close());
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const port = await freePort();
  const auditFile = path.join(dir, 'audit.log');
  const config = deepMerge(YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')), {
    listen: { host: '127.0.0.1', port },
    admin: { port: await freePort() },
    upstream: { url: mock.url },
    store: { url: redis.url },
    audit: { enabled: true, file: auditFile },
  });
  const file = path.join(dir, 'gateway.yaml');
  fs.writeFileSync(file, YAML.stringify(config));
  const cli = startCli(t, ['start', '--config', file], { withoutNodeOptions: true });
  const { child, exited, running } = cli;

  // As soon as the process catches SIGHUP: at its very start when it holds the signals, only
  // once it listens when it does not.
  await eventually('the CLI catches SIGHUP', () => catchesHangup(child.pid!) || !running(), 60_000);
  t.ok(await refused(port), 'SIGHUP is caught before the gateway listens: it is still starting');
  child.kill('SIGUSR2');
  child.kill('SIGHUP');
  child.kill('SIGHUP');
  await eventually(
    'the CLI listens or exited',
    () => /listening on http:\/\/[^\s]+/.test(cli.stdout()) || !running(),
    60_000,
  );
  t.equal(child.signalCode, null, `not ended by the signals (${child.signalCode}${cli.stderr().trim()})`);
  const adminUrl = /\(admin (http:\/\/127\.0\.0\.1:\d+)\)/.exec(cli.stdout())?.[1];
  t.ok(adminUrl, 'it started, with its admin listener');
  if (adminUrl === undefined) return;

  const reloads = () =>
    fs
      .readFileSync(auditFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"config_reload"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  await eventually('the held SIGHUP reloaded the file', () => reloads().length > 0);
  const ready = (await (await fetch(`${adminUrl}/readyz`)).json()) as { generation: number };
  const reload = reloads()[0];
  t.match(reload, { result: 'success', trigger: 'SIGHUP' }, 'the reload a held SIGHUP asked for');
  t.equal(ready.generation, reload?.generation, 'its generation serves');
  child.kill('SIGTERM');
  const { code, signal } = await exited;
  t.same({ code, signal }, { code: 0, signal: null }, 'SIGTERM still stops it cleanly');
  t.equal(reloads().length, 1, 'two SIGHUPs held make one reload');
  t.notMatch(cli.stderr(), /unhandled|\n\s+at /, 'no unhandled error, no stack trace');
});
