import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { NODE_FLAGS } from '../../gateway/node-flags.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

t.test('node accepts every launch flag', (t) => {
  const r = spawnSync(process.execPath, [...NODE_FLAGS, '-e', 'process.stdout.write("ok")'], {
    encoding: 'utf8',
  });
  t.equal(r.stderr, '', 'no complaint about an unknown or malformed flag');
  t.equal(r.status, 0);
  t.equal(r.stdout, 'ok');
  t.end();
});

t.test('the bin shebang launches node with the same flags', (t) => {
  const first = fs.readFileSync(path.join(root, 'gateway', 'cli.ts'), 'utf8').split('\n')[0];
  t.equal(first, `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`);
  t.end();
});

t.test('the Docker image launches node with the same flags', (t) => {
  const line = fs
    .readFileSync(path.join(root, 'Dockerfile'), 'utf8')
    .split('\n')
    .find((l) => l.startsWith('ENTRYPOINT '));
  t.ok(line, 'an ENTRYPOINT');
  t.same(JSON.parse(line!.slice('ENTRYPOINT '.length)), ['node', ...NODE_FLAGS, 'dist/gateway/cli.js']);
  t.end();
});

t.test('npm start and the benchmarks pass NODE_FLAGS to the gateway', (t) => {
  const start = fs.readFileSync(path.join(root, 'scripts', 'start.mjs'), 'utf8');
  t.match(start, /run\('gateway', \[\s*\.\.\.NODE_FLAGS,\s*'dist\/gateway\/cli\.js'/);
  // the benchmarks start the gateway only through bench/lib.ts startGatewayChild, which passes the flags
  const lib = fs.readFileSync(path.join(root, 'bench', 'lib.ts'), 'utf8');
  const helper = lib.slice(lib.indexOf('export async function startGatewayChild('));
  t.match(
    helper.slice(0, helper.indexOf('\n}\n')),
    /path\.join\(DIST, 'gateway', 'cli\.js'\)[\s\S]*NODE_FLAGS,/,
  );
  for (const f of fs
    .readdirSync(path.join(root, 'bench'))
    .filter((x) => x.endsWith('.ts') && x !== 'lib.ts')) {
    const src = fs.readFileSync(path.join(root, 'bench', f), 'utf8');
    t.notMatch(src, /'gateway', 'cli\.js'/, `${f} does not start the gateway by itself`);
  }
  t.end();
});
