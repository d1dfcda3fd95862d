import t from 'tap';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { hashKey, runHashKey } from '../../../gateway/commands/hash-key.js';
import { auth } from '../../../policies/auth/index.js';
import { compilePolicy, makeContext } from '../../helpers/context.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const KEY = 'rk_3b1f0d9e8c7a6b5f4e3d2c1b0a9f8e7d';

function sink(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

async function run(input: string | Buffer[]) {
  const out = sink();
  const err = sink();
  const code = await runHashKey(
    Readable.from(typeof input === 'string' ? [Buffer.from(input)] : input),
    out.stream,
    err.stream,
  );
  return { code, out: out.text(), err: err.text() };
}

t.test('hashKey is sha256:<hex> of the UTF-8 key', async (t) => {
  t.equal(hashKey(KEY), `sha256:${createHash('sha256').update(KEY).digest('hex')}`);
  t.match(hashKey('ключ'), /^sha256:[0-9a-f]{64}$/);
});

t.test('runHashKey reads stdin, strips one trailing newline, prints the hash', async (t) => {
  for (const input of [
    KEY,
    `${KEY}\n`,
    `${KEY}\r\n`,
    [Buffer.from(KEY.slice(0, 10)), Buffer.from(KEY.slice(10))],
  ]) {
    const r = await run(input);
    t.equal(r.code, 0);
    t.equal(r.out, `${hashKey(KEY)}\n`);
    t.equal(r.err, '');
  }
  const twice = await run(`${KEY}\n\n`);
  t.equal(twice.code, 1, 'only one newline is stripped: the other would be part of the key');
  t.equal(twice.out, '');
});

t.test('empty, blank or over-long input: exit 1 and a message; short keys: a warning', async (t) => {
  for (const input of ['', '\n', '   \n']) {
    const r = await run(input);
    t.equal(r.code, 1);
    t.equal(r.out, '');
    t.match(r.err, /no key on stdin/);
  }
  const long = await run('k'.repeat(5000));
  t.equal(long.code, 1);
  t.match(long.err, /longer than 1024 bytes/);
  const short = await run('abc123');
  t.equal(short.code, 0);
  t.match(short.err, /warning: the key has 6 characters/);
});

t.test('a printed hash configures a key the auth policy accepts', async (t) => {
  const { out } = await run(`${KEY}\n`);
  const p = await compilePolicy(auth, {
    require: ['api_key'],
    api_keys: { keys: [{ id: 'cli', hash: out.trim() }] },
  });
  const ctx = makeContext({ headers: { 'x-api-key': KEY } });
  t.equal(await p.onRequest!(ctx), undefined);
  t.equal(ctx.identity?.keyId, 'cli');
});

t.test('receipt-gateway hash-key through the CLI', async (t) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'gateway/cli.ts', 'hash-key'], {
    cwd: REPO,
    input: `${KEY}\n`,
    encoding: 'utf8',
  });
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, `${hashKey(KEY)}\n`);
});
