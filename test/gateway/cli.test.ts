import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { REPO, TEST_SECRET } from '../helpers/harness.js';
import { runCli } from '../helpers/cli-process.js';

/** `receipt-gateway validate` and `start` with bad files, as subprocesses. */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-cli-test-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const BAD = `listen:
  prot: 8080
  trusted_proxies: [10.0.0.0/99]
upstream:
  url: \${RGW_CLI_TEST_UNSET}
routes:
  - name: api
    path: /api/**
    policies:
      cors: { orgins: [x] }
  - name: api
    path: /b
`;
const BAD_ERRORS = [
  'listen.prot: unknown key "prot"',
  'listen.trusted_proxies[0]: invalid CIDR "10.0.0.0/99"',
  'upstream.url: environment variable RGW_CLI_TEST_UNSET is not set and has no default',
  'routes[0].policies.cors.orgins: unknown key "orgins"',
  'routes[1].name: duplicate route name "api"',
];
const BAD_POSITIONS = ['2:3', '3:21', '5:8', '10:15', '11:11'];

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
const shipped = path.join(REPO, 'gateway.yaml');
const small = path.join(dir, 'small.yaml');
fs.writeFileSync(
  small,
  'policies:\n  auth:\n    jwt:\n      secret: ${JWT_SECRET_KEY}\nroutes:\n  - name: health\n    path: /api/health\n',
);
const bad = path.join(dir, 'bad.yaml');
fs.writeFileSync(bad, BAD);

// Each run pays for tsx's start-up; run them side by side.
const runs = {
  shipped: runCli(['validate', '--config', shipped]),
  env: runCli(['validate'], { GATEWAY_CONFIG: small }),
  bad: runCli(['validate', `--config=${bad}`]),
  start: runCli(['start', '--config', bad]),
};

t.test('validate: the shipped gateway.yaml, exit 0 and a one-line summary', async (t) => {
  const r = await runs.shipped;
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '');
  const lines = r.stdout.trimEnd().split('\n');
  t.equal(lines.length, 1, 'one line');
  t.match(
    lines[0],
    new RegExp(
      `^${esc(shipped)}: ok: \\d+ routes, \\d+ policies.*upstream http://127\\.0\\.0\\.1:9000, store memory, workers 1$`,
    ),
  );
});

t.test('validate: GATEWAY_CONFIG names the file when --config is absent', async (t) => {
  const b = await runs.env;
  t.equal(b.code, 0, b.stderr);
  t.match(b.stdout, new RegExp(`^${esc(small)}: ok: 1 routes,`));
});

t.test(
  'validate (--config=FILE): a bad file, exit 1 and every error with file:line:column and key path',
  async (t) => {
    const r = await runs.bad;
    t.equal(r.code, 1);
    t.equal(r.stdout, '');
    const lines = r.stderr.trimEnd().split('\n');
    t.equal(lines.length, BAD_ERRORS.length + 1, 'every error, then a count');
    BAD_ERRORS.forEach((e, i) => {
      t.ok(lines[i]?.startsWith(`${bad}:${BAD_POSITIONS[i]}: ${e}`), `line ${i + 1}: ${lines[i]}`);
    });
    t.equal(lines[lines.length - 1], `${bad}: ${BAD_ERRORS.length} errors`);
  },
);

t.test('start with a bad file exits 1 with every error and never listens', async (t) => {
  const r = await runs.start;
  t.equal(r.code, 1);
  t.notMatch(r.stdout, /listening/);
  for (const e of BAD_ERRORS) t.match(r.stderr, e);
});

t.test('replay into a reader that stops early (| head): exit 0, no stack trace', async (t) => {
  const corpus = path.resolve(REPO, '..', 'shared', 'corpus', 'waf-dev.jsonl');
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(REPO, 'gateway', 'cli.ts'),
      'replay',
      '--config',
      path.join(REPO, 'gateway.yaml'),
      '--requests',
      corpus,
      '--format',
      'jsonl',
    ],
    {
      cwd: REPO,
      env: { PATH: process.env.PATH ?? '', JWT_SECRET_KEY: TEST_SECRET },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // read the first line, then close the pipe as `head -1` does
  const first = await new Promise<string>((resolve) =>
    child.stdout.once('data', (d: Buffer) => resolve(d.toString())),
  );
  child.stdout.destroy();
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  t.match(first, /^\{"id":/);
  t.equal(code, 0);
  t.notMatch(stderr, /EPIPE|Error|at /, 'no error or stack trace');
});
