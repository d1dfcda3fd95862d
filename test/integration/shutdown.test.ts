import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import http from 'node:http';
import path from 'node:path';
import { startCli } from '../helpers/cli-process.js';
import YAML from 'yaml';
import { startHarness, deepMerge, REPO, TEST_SECRET } from '../helpers/harness.js';
import { startMock } from '../../upstream-mock/server.js';
import { eventually } from '../helpers/wait.js';

/** Graceful shutdown: in-flight requests finish, new connections are refused; SIGTERM exits 0. */

function connectRefused(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect(Number(u.port), u.hostname);
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

t.test('close(): an in-flight request finishes, new connections are refused', async (t) => {
  const h = await startHarness({ config: 'listen: { shutdown_timeout: 30s }' });
  t.teardown(() => h.close());
  const token = await h.login();
  await h.clearMock();
  const slow = fetch(`${h.url}/api/slow?ms=1500`, { headers: { authorization: `Bearer ${token}` } });
  await eventually('the slow request reached the mock', async () =>
    (await h.mockRequests()).some((r) => r.path.startsWith('/api/slow')),
  );
  const closing = h.gateway.close();
  // a second close (a signal handler and a test teardown both calling it) waits for the same end
  let again = false;
  void h.gateway.close().then(() => (again = true));
  t.ok(await connectRefused(h.url), 'the listener no longer accepts connections');
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(again, 'a second close() has not resolved while a request is in flight');
  const r = await slow;
  t.equal(r.status, 200, 'the in-flight request completed');
  t.same(await r.json(), { slept_ms: 1500 });
  await closing;
  await new Promise((r) => setImmediate(r));
  t.ok(again, 'the second close() resolved with the first');
  const audit = await h.audit();
  t.ok(
    audit.some(
      (l) =>
        l.event === 'api_access' &&
        typeof l.path === 'string' &&
        l.path.startsWith('/api/slow') &&
        l.status === 200,
    ),
    'its audit line was written and flushed',
  );
});

t.test(
  'close(): a request slower than shutdown_timeout is cut off at the deadline, close() still resolves',
  async (t) => {
    const h = await startHarness({ config: 'listen: { shutdown_timeout: 500ms }' });
    t.teardown(() => h.close());
    const token = await h.login();
    await h.clearMock();
    const slow = fetch(`${h.url}/api/slow?ms=30000`, { headers: { authorization: `Bearer ${token}` } }).then(
      async (r) => ({ status: r.status, body: await r.text() }),
      (err: Error) => ({ error: err.message }),
    );
    await eventually('the slow request reached the mock', async () =>
      (await h.mockRequests()).some((r) => r.path.startsWith('/api/slow')),
    );
    await h.gateway.close();
    const outcome = await slow;
    t.ok('error' in outcome, `the client connection was closed (${JSON.stringify(outcome)})`);
  },
);

t.test('close() ends even when clients stopped reading endless upstream answers', async (t) => {
  // an upstream that streams without end
  const upstream = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const chunk = Buffer.alloc(64 * 1024, 120);
    const timer = setInterval(() => res.write(chunk), 5);
    res.on('close', () => clearInterval(timer));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    upstream.closeAllConnections();
    upstream.close();
  });
  const h = await startHarness({
    upstreamUrl: `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`,
    config: 'listen: { shutdown_timeout: 300ms }',
  });
  t.teardown(() => h.close());
  // clients that read the head, then nothing more
  const stalled = await Promise.all(
    Array.from(
      { length: 6 },
      () =>
        new Promise<http.IncomingMessage>((resolve, reject) => {
          const req = http.get(`${h.url}/api/health`, { agent: false }, (res) => {
            res.pause();
            resolve(res);
          });
          req.on('error', reject);
        }),
    ),
  );
  for (const r of stalled) r.on('error', () => {});
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  await h.gateway.close();
  t.ok(Date.now() - t0 < 10_000, 'closed after the deadline and the pools’ grace, not never');
  for (const r of stalled) r.destroy();
});

t.test('a start that fails (the admin port is taken) leaves nothing listening', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.teardown(() => blocker.close());
  const adminPort = (blocker.address() as net.AddressInfo).port;
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-failed-start-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { Gateway } = await import('../../gateway/server.js');
  await t.rejects(
    Gateway.start({
      configFile: path.join(REPO, 'gateway.yaml'),
      env: { JWT_SECRET_KEY: TEST_SECRET, AUDIT_LOG_FILE: path.join(dir, 'audit.log') },
      host: '127.0.0.1',
      port,
      adminPort,
      watch: false,
      defaultMetrics: false,
    }),
    /EADDRINUSE/,
  );
  t.ok(await connectRefused(`http://127.0.0.1:${port}`), 'the main listener was closed again');
});

t.test('SIGTERM: the CLI drains in-flight requests and exits 0', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-sigterm-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const mock = await startMock({ port: 0, env: { MOCK_RECORD: '1', JWT_SECRET_KEY: TEST_SECRET } });
  t.teardown(() => mock.close());
  const auditFile = path.join(dir, 'audit.log');
  const config = deepMerge(YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')), {
    listen: { host: '127.0.0.1', port: 0, shutdown_timeout: '20s' },
    admin: { port: 0 },
    upstream: { url: mock.url },
    audit: { enabled: true, file: auditFile },
    policies: { rate_limit: { enabled: false }, ip_ban: { enabled: false } },
  });
  const file = path.join(dir, 'gateway.yaml');
  fs.writeFileSync(file, YAML.stringify(config));

  const cli = startCli(t, ['start', '--config', file]);
  const { child, exited } = cli;

  await eventually(
    'the CLI printed its address',
    () => /listening on http:\/\/[^\s]+/.test(cli.stdout()) || child.exitCode !== null,
    60_000,
  );
  const url = /listening on (http:\/\/[^\s,]+)/.exec(cli.stdout())?.[1];
  t.ok(url, `printed the listening URL (${cli.stdout().trim()}${cli.stderr()})`);
  if (!url) return;
  const adminUrl = /\(admin (http:\/\/127\.0\.0\.1:\d+)\)/.exec(cli.stdout())?.[1];
  t.ok(adminUrl, 'and the admin address');
  const ok = await fetch(`${url}/api/health`);
  t.equal(ok.status, 200);
  await ok.arrayBuffer();

  // SIGHUP reloads the (unchanged) file: a new generation, no restart
  const generation = async () =>
    ((await (await fetch(`${adminUrl}/readyz`)).json()) as { generation: number }).generation;
  const g0 = await generation();
  child.kill('SIGHUP');
  await eventually('SIGHUP produced a new generation', async () => (await generation()) > g0);
  t.pass('SIGHUP reloaded the configuration');
  t.equal(child.exitCode, null, 'and the process kept running');

  const token = await mock.sign({ sub: 'alice', role: 'user' });
  const slow = fetch(`${url}/api/slow?ms=1500`, {
    headers: { authorization: `Bearer ${token}`, 'x-request-id': 'sigterm-slow' },
  });
  await eventually('the slow request reached the mock', () =>
    mock.records().some((r) => r.path.startsWith('/api/slow')),
  );
  child.kill('SIGTERM');
  const r = await slow;
  t.equal(r.status, 200, 'the in-flight request completed after SIGTERM');
  t.same(await r.json(), { slept_ms: 1500 });
  const { code, signal } = await exited;
  t.equal(signal, null, 'not killed by the signal');
  t.equal(code, 0, `exit code 0 (${cli.stderr()})`);
  t.ok(await connectRefused(url), 'nothing listens any more');
  const lines = fs
    .readFileSync(auditFile, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  t.ok(
    lines.some((l) => l.request_id === 'sigterm-slow' && l.status === 200),
    'the audit log was flushed on shutdown, with the drained request',
  );
});
