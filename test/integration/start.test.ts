import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { REPO } from '../helpers/harness.js';

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

t.test('npm run build produces the bin the Dockerfile runs', async (t) => {
  const r = spawnSync('npm', ['run', 'build', '--silent'], { cwd: REPO, encoding: 'utf8', timeout: 300_000 });
  t.equal(r.status, 0, `build succeeds: ${r.stderr}`);
  const bin = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).bin[
    'receipt-gateway'
  ] as string;
  t.ok(fs.existsSync(path.join(REPO, bin)), `${bin} exists`);
  const dockerfile = fs.readFileSync(path.join(REPO, 'Dockerfile'), 'utf8');
  // (the launch flags are checked against gateway/node-flags.ts by test/gateway/node-flags.test.ts)
  t.match(dockerfile, /ENTRYPOINT \["node", (?:"--[a-z-]+=\d+", )*"dist\/gateway\/cli\.js"\]/);
  t.match(dockerfile, /USER node/);
  t.match(dockerfile, /HEALTHCHECK/);
  t.match(dockerfile, /npm ci --omit=dev/);
  // the compiled bin runs with plain node (no TypeScript loader)
  const help = spawnSync(process.execPath, [path.join(REPO, bin), 'help'], { encoding: 'utf8' });
  t.equal(help.status, 0);
  t.match(help.stdout, /receipt-gateway start/);
  // rule packs and the dashboard page are next to the compiled code
  t.ok(
    fs
      .readdirSync(path.join(REPO, 'dist', 'policies', 'pattern-block', 'rules'))
      .some((f) => f.endsWith('.yaml')),
  );
  t.ok(fs.existsSync(path.join(REPO, 'dist', 'gateway', 'admin', 'dashboard.html')));
});

t.test(
  'npm start: mock and gateway come up, the printed curl example works, Ctrl-C stops both',
  async (t) => {
    const [gatewayPort, adminPort, mockPort] = [await freePort(), await freePort(), await freePort()];
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      GATEWAY_PORT: String(gatewayPort),
      GATEWAY_ADMIN_PORT: String(adminPort),
      MOCK_PORT: String(mockPort),
      AUDIT_LOG_FILE: path.join(fs.mkdtempSync('/tmp/rgw-start-'), 'audit.log'),
    };
    delete env.JWT_SECRET_KEY;
    delete env.UPSTREAM_URL;
    const child = spawn(process.execPath, [path.join(REPO, 'scripts', 'start.mjs')], {
      cwd: REPO,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    t.teardown(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    for (let i = 0; i < 900 && !out.includes('Ctrl-C stops both'); i++)
      await new Promise((r) => setTimeout(r, 100));
    t.match(out, /generated/, 'says the demo secret was generated');
    t.match(out, new RegExp(`gateway\\s+http://127\\.0\\.0\\.1:${gatewayPort}`));
    t.match(out, new RegExp(`mock upstream http://127\\.0\\.0\\.1:${mockPort}`));
    // Run the printed example exactly as printed (the login, then the receipts call).
    const lines = out.split('\n');
    const start = lines.findIndex((l) => l.trim().startsWith('TOKEN=$(curl'));
    t.ok(start >= 0, 'the curl example is printed');
    const script = `${lines[start]}\n${lines[start + 1]}\n${lines[start + 2]}\n`;
    const r = spawnSync('bash', ['-c', script], { encoding: 'utf8', timeout: 30_000 });
    t.equal(r.status, 0);
    const body = JSON.parse(r.stdout) as { receipts: unknown[] };
    t.ok(Array.isArray(body.receipts) && body.receipts.length > 0, 'receipts listed through the gateway');
    const blockedLine = lines.find((l) => l.includes('refused: 403'))!;
    const blocked = spawnSync('bash', ['-c', `${blockedLine.split('#')[0]} -o /dev/null -w '%{http_code}'`], {
      encoding: 'utf8',
    });
    t.equal(blocked.stdout.trim(), '403', 'the attack example is refused');
    child.kill('SIGINT');
    t.equal(await exited, 0, 'Ctrl-C stops both with exit 0');
  },
);

t.test('receipt-gateway start: SIGUSR2 and SIGHUP both reopen a rotated audit log', async (t) => {
  const [gatewayPort, adminPort] = [await freePort(), await freePort()];
  const dir = fs.mkdtempSync('/tmp/rgw-rotate-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const audit = path.join(dir, 'audit.log');
  const child = spawn(
    process.execPath,
    [path.join(REPO, 'dist', 'gateway', 'cli.js'), 'start', '--config', path.join(REPO, 'gateway.yaml')],
    {
      cwd: REPO,
      env: {
        ...process.env,
        GATEWAY_PORT: String(gatewayPort),
        GATEWAY_ADMIN_PORT: String(adminPort),
        AUDIT_LOG_FILE: audit,
        JWT_SECRET_KEY: 'rotate-test-secret-0123456789-abcdefghijkl',
        UPSTREAM_URL: 'http://127.0.0.1:9',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  for (let i = 0; i < 300 && !out.includes('listening on'); i++) await new Promise((r) => setTimeout(r, 100));
  t.match(out, /listening on/);
  // a request the gateway refuses and audits (no token), marked by its path
  const refuse = async (mark: string) => {
    const r = await fetch(`http://127.0.0.1:${gatewayPort}/api/receipts?mark=${mark}`);
    t.equal(r.status, 401);
    await r.arrayBuffer();
  };
  const holds = async (file: string, mark: string) => {
    for (let i = 0; i < 50; i++) {
      if (fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes(`mark=${mark}`)) return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    return false;
  };
  await refuse('before');
  t.ok(await holds(audit, 'before'), 'written to the audit log');
  for (const [i, signal] of (['SIGUSR2', 'SIGHUP'] as const).entries()) {
    const rotated = `${audit}.${i + 1}`;
    fs.renameSync(audit, rotated);
    child.kill(signal);
    await new Promise((r) => setTimeout(r, 300));
    await refuse(signal);
    t.ok(await holds(audit, signal), `${signal}: a new file holds the next line`);
    t.notOk(fs.readFileSync(rotated, 'utf8').includes(`mark=${signal}`), `${signal}: not the rotated one`);
  }
  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('exit', resolve));
});
