import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { TEST_SECRET } from '../helpers/harness.js';
import { startCluster } from '../helpers/cli-cluster.js';
import { eventually } from '../helpers/wait.js';

t.test('workers: 2 on a redis store serve one port and enforce one limit together', async (t) => {
  const cluster = await startCluster(t, {
    name: 'workers',
    rateLimit: '6 per minute',
    mockEnv: { MOCK_RECORD: '1' },
  });
  const { port, adminPort, dir, file, child } = cluster;
  const out = cluster.output;
  const auditFile = path.join(dir, 'audit.log');
  const reloadsBy = (trigger: string) =>
    fs.existsSync(auditFile)
      ? fs
          .readFileSync(auditFile, 'utf8')
          .split('\n')
          .filter((l) => l.includes('"event":"config_reload"') && l.includes(`"trigger":"${trigger}"`)).length
      : 0;
  // SIGHUP while the workers are still starting (a reload sent right after a deploy): the
  // primary holds it for each worker until it is ready, instead of ending them with it
  await eventually('the primary forked its workers', () => /starting 2 workers/.test(out()));
  child.kill('SIGHUP');
  for (let i = 0; i < 600 && (out().match(/listening on/g) ?? []).length < 2; i++)
    await new Promise((r) => setTimeout(r, 100));
  t.equal((out().match(/listening on/g) ?? []).length, 2, 'both workers listen');
  t.notMatch(out(), /exited/, 'no worker was ended by the SIGHUP');
  await eventually('each worker reloaded once it was ready', () => reloadsBy('SIGHUP') >= 2, 10_000).catch(
    () => {},
  );
  t.equal(reloadsBy('SIGHUP'), 2, 'a config_reload (trigger SIGHUP) from each worker');

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
  const adminReloads = () => reloadsBy('admin');
  const r = await fetch(`http://127.0.0.1:${adminPort}/api/reload`, { method: 'POST' });
  t.equal(r.status, 200);
  await eventually('both workers reloaded', () => adminReloads() === 2);
  t.pass('one admin reload, a config_reload line from each worker');

  // a worker that dies while the file is invalid is started again once it is fixed
  const good = fs.readFileSync(file, 'utf8');
  fs.writeFileSync(file, `${good}\nnot_a_key: true\n`);
  const pid = Number(/\[worker (\d+)\]/.exec(out())?.[1]);
  t.ok(pid > 0, 'a worker pid');
  process.kill(pid, 'SIGKILL');
  await eventually('the replacement failed on the invalid file', () => /unknown key "not_a_key"/.test(out()));
  fs.writeFileSync(file, good);
  await eventually('a worker listens again', () => (out().match(/listening on/g) ?? []).length >= 3, 60_000);
  t.match(out(), /starting another in \d+ s/, 'restarted after a pause');

  // every worker dead and their replacements waiting for their pause: SIGTERM still ends at once
  fs.writeFileSync(file, `${good}\nnot_a_key: true\n`);
  const exited = new Set([...out().matchAll(/worker (\d+) exited/g)].map((m) => m[1]));
  const alive = [...new Set([...out().matchAll(/\[worker (\d+)\]/g)].map((m) => m[1]!))].filter(
    (p) => !exited.has(p),
  );
  t.equal(alive.length, 2, 'two workers alive');
  for (const p of alive) process.kill(Number(p), 'SIGKILL');
  await eventually('both deaths seen', () => (out().match(/exited \(/g) ?? []).length >= 3);
  await eventually('a replacement failed too', () => (out().match(/exited \(1\)/g) ?? []).length >= 1);
  const t0 = Date.now();
  child.kill('SIGTERM');
  t.equal(await cluster.exited, 0, 'exit 0');
  // (the pending pause has doubled to several seconds by now)
  t.ok(Date.now() - t0 < 2000, 'without waiting for the pending restarts');
});

t.test('workers: 2 whose port is taken: start exits 1 and says why, as one process does', async (t) => {
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => taken.close(() => resolve())));
  const port = (taken.address() as net.AddressInfo).port;
  const cluster = await startCluster(t, { name: 'workers-taken', rateLimit: '6 per minute', port });
  // (before, a worker that failed after opening its audit log never exited, and the primary
  // would have retried failed workers for ever: a supervisor saw a running gateway)
  const code = await Promise.race([
    cluster.exited,
    new Promise<string>((resolve) => setTimeout(() => resolve('still running after 30 s'), 30_000).unref()),
  ]);
  t.equal(code, 1, 'exit 1');
  t.match(cluster.output(), /receipt-gateway: cannot start: bind EADDRINUSE 127\.0\.0\.1:\d+/);
  t.match(
    cluster.output(),
    /receipt-gateway: cannot start: worker \d+ exited \(1\) before any worker was ready/,
  );
  t.notMatch(cluster.output(), /unhandled|\n\s+at /, 'no unhandled error, no stack trace');
  t.notMatch(cluster.output(), /listening on/);
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
