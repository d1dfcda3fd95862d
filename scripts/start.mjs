// `npm start`: build if needed, then run the bundled mock receipt service on
// 127.0.0.1:9000 and the gateway on 0.0.0.0:8080 with ./gateway.yaml. Ctrl-C stops both.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
process.chdir(root);

function newestMtime(dir) {
  let newest = 0;
  if (!fs.existsSync(dir)) return newest;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

const stamp = path.join(root, 'dist', '.build-stamp');
const sourcesChanged =
  !fs.existsSync(stamp) ||
  Math.max(...['gateway', 'policies', 'upstream-mock'].map((d) => newestMtime(path.join(root, d)))) >
    fs.statSync(stamp).mtimeMs;
if (sourcesChanged) {
  process.stdout.write('building (npm run build)…\n');
  const r = spawnSync('npm', ['run', 'build', '--silent'], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const env = { ...process.env };
if (!env.JWT_SECRET_KEY) {
  env.JWT_SECRET_KEY = randomBytes(36).toString('base64url');
  process.stdout.write(
    'demo: JWT_SECRET_KEY is not set, so a random one was generated for this run (the mock signs and the gateway verifies with it).\n' +
      '      In production set JWT_SECRET_KEY (at least 32 characters) to the secret your receipt service uses.\n',
  );
}
const mockPort = env.MOCK_PORT ?? '9000';
env.UPSTREAM_URL ??= `http://127.0.0.1:${mockPort}`;
const gatewayPort = env.GATEWAY_PORT ?? '8080';
const adminPort = env.GATEWAY_ADMIN_PORT ?? '9901';

const children = [];
function run(name, args) {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout.on('data', (d) => process.stdout.write(`[${name}] ${d}`));
  child.on('exit', (code, signal) => {
    if (!stopping) {
      process.stderr.write(`${name} exited (${signal ?? code}); stopping\n`);
      stop(code ?? 1);
    }
  });
  children.push(child);
  return child;
}

let stopping = false;
function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  let left = children.filter((c) => c.exitCode === null && c.signalCode === null).length;
  if (left === 0) process.exit(code);
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    c.once('exit', () => {
      if (--left === 0) process.exit(code);
    });
    c.kill('SIGTERM');
  }
  setTimeout(() => process.exit(code), 15_000).unref();
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));

run('mock', ['dist/upstream-mock/main.js']);
// the gateway runs with its bounded-heap V8 flags (gateway/node-flags.ts), as the bin and the image do
const { NODE_FLAGS } = await import(new URL('../dist/gateway/node-flags.js', import.meta.url).href);
run('gateway', [
  ...NODE_FLAGS,
  'dist/gateway/cli.js',
  'start',
  '--config',
  env.GATEWAY_CONFIG ?? 'gateway.yaml',
]);

async function waitFor(url) {
  for (let i = 0; i < 100 && !stopping; i++) {
    try {
      const r = await fetch(url);
      if (r.status < 500) return true;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

const base = `http://127.0.0.1:${gatewayPort}`;
if ((await waitFor(`http://127.0.0.1:${mockPort}/api/health`)) && (await waitFor(`${base}/api/health`))) {
  process.stdout.write(`
receipt-gateway is up.
  gateway       ${base}   (listening on 0.0.0.0:${gatewayPort})
  admin         http://127.0.0.1:${adminPort}   (dashboard, /metrics, /readyz)
  mock upstream http://127.0.0.1:${mockPort}   (the receipt service stand-in)

Try it (log in as the fixture user alice, then list receipts through the gateway):

  TOKEN=$(curl -s -X POST ${base}/api/auth/login -H 'Content-Type: application/json' \\
    -d '{"username":"alice","password":"alice-secret-pw"}' | sed -E 's/.*"token":"([^"]+)".*/\\1/')
  curl -s -H "Authorization: Bearer $TOKEN" ${base}/api/receipts

  curl -s "${base}/api/receipts?merchant=1'%20OR%20'1'='1"    # refused: 403 request_blocked

Ctrl-C stops both.
`);
}
