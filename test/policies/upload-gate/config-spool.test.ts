import t from 'tap';
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import path from 'node:path';
import {
  uploadGate,
  cleanupAll,
  liveSpoolCount,
  spooledMemoryBytes,
} from '../../../policies/upload-gate/index.js';
import { Spool, SpoolPart, sweepStaleSpools, SPOOL_PREFIX } from '../../../policies/upload-gate/spool.js';
import { ConfigError } from '../../../gateway/errors.js';
import { compilePolicy, makeServices } from '../../helpers/context.js';
import { png } from '../../fixtures/uploads/generate.js';
import {
  multipart,
  runGate,
  readForward,
  tempSpoolDir,
  leftovers,
  spoolsGone,
  bodyStream,
  contentType,
} from './multipart.js';
import { makeContext } from '../../helpers/context.js';

const dir = tempSpoolDir();
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

t.test('config: markup, scripts and executables can never be allowed', async (t) => {
  for (const ext of ['svg', 'html', 'php', 'exe', '.js']) {
    await t.rejects(
      compilePolicy(uploadGate, { enabled: true, allowed_extensions: ['png', ext] }),
      ConfigError,
      ext,
    );
  }
  const err = await compilePolicy(uploadGate, { allowed_extensions: ['png', 'svg'] }).catch(
    (e: ConfigError) => e,
  );
  t.same((err as ConfigError).path, ['policies', 'upload_gate', 'allowed_extensions', 1]);
});

t.test('config: only kinds the gate can verify', async (t) => {
  await t.rejects(compilePolicy(uploadGate, { allowed_extensions: ['docx'] }), {
    name: 'ConfigError',
    message: /not a kind the upload gate can verify/,
  });
  const p = await compilePolicy(uploadGate, { allowed_extensions: ['PNG', '.tif'] });
  t.equal(p.name, 'upload-gate');
});

t.test('config: inconsistent limits', async (t) => {
  t.same(
    (
      (await compilePolicy(uploadGate, { max_file_size: '16MB', max_total_size: '1MB' }).catch(
        (e: unknown) => e,
      )) as ConfigError
    ).path,
    ['policies', 'upload_gate', 'max_total_size'],
  );
  t.same(
    (
      (await compilePolicy(uploadGate, { max_file_size: '16MB', max_request_size: '1MB' }).catch(
        (e: unknown) => e,
      )) as ConfigError
    ).path,
    ['policies', 'upload_gate', 'max_request_size'],
  );
  t.same(
    (
      (await compilePolicy(uploadGate, { max_files: 10, max_parts: 5 }).catch(
        (e: unknown) => e,
      )) as ConfigError
    ).path,
    ['policies', 'upload_gate', 'max_parts'],
  );
});

t.test('config: the spool directory must be writable', async (t) => {
  const file = path.join(dir, 'not-a-dir');
  fs.writeFileSync(file, '');
  await t.rejects(compilePolicy(uploadGate, { spool_dir: path.join(file, 'sub') }), {
    name: 'ConfigError',
    path: ['policies', 'upload_gate', 'spool_dir'],
  });
  fs.rmSync(file);
});

t.test('config: a relative spool_dir is resolved against the config directory', async (t) => {
  const policy = await compilePolicy(
    uploadGate,
    { enabled: true, spool_dir: 'spool', memory_buffer: '0' },
    makeServices(),
    { configDir: dir },
  );
  const { verdict, ctx } = await runGate(
    policy,
    multipart([{ name: 'file', filename: 'r.png', type: 'image/png', data: png() }]),
  );
  t.equal(verdict, undefined);
  t.equal(fs.readdirSync(path.join(dir, 'spool')).length, 1);
  ctx.forwardBody!.dispose!();
  await spoolsGone();
  t.same(fs.readdirSync(path.join(dir, 'spool')), []);
  fs.rmSync(path.join(dir, 'spool'), { recursive: true });
});

t.test('compile removes spool directories of dead gateway processes, keeps live ones', async (t) => {
  const sweepDir = tempSpoolDir();
  t.teardown(() => fs.rmSync(sweepDir, { recursive: true, force: true }));
  const dead = path.join(sweepDir, `${SPOOL_PREFIX}999999999-abc`);
  const mine = path.join(sweepDir, `${SPOOL_PREFIX}${process.pid}-abc`);
  const other = path.join(sweepDir, 'unrelated');
  for (const d of [dead, mine, other]) fs.mkdirSync(d);
  fs.writeFileSync(path.join(dead, 'part-0'), 'x');
  const services = makeServices();
  await compilePolicy(uploadGate, { spool_dir: sweepDir }, services);
  t.same(fs.readdirSync(sweepDir).sort(), [path.basename(mine), 'unrelated'].sort());
  t.match(services.logged, [{ level: 'info', obj: { removed: 1 } }]);
  t.equal(sweepStaleSpools(sweepDir), 0);
});

t.test('memory budget: small parts stay in memory, larger ones go to disk', async (t) => {
  const policy = await compilePolicy(uploadGate, { enabled: true, spool_dir: dir, memory_buffer: '4KB' });
  const small = png(4, 4);
  const large = Buffer.concat([png(8, 8), Buffer.alloc(8000, 1)]);
  const { verdict, ctx } = await runGate(
    policy,
    multipart([
      { name: 'file', filename: 's.png', type: 'image/png', data: small },
      { name: 'file', filename: 'l.png', type: 'image/png', data: large },
    ]),
  );
  t.equal(verdict, undefined);
  t.equal(leftovers(dir).length, 2, 'one directory with the large part only');
  t.ok(spooledMemoryBytes() > 0 && spooledMemoryBytes() <= 4096);
  const fwd = await readForward(ctx);
  t.equal(fwd.length, ctx.forwardBody!.length);
  t.ok(fwd.includes(large));
  await spoolsGone();
  t.equal(spooledMemoryBytes(), 0, 'memory released');
  t.same(leftovers(dir), []);
});

t.test('the process-wide memory budget sends parts to disk too', async (t) => {
  const policy = await compilePolicy(uploadGate, {
    enabled: true,
    spool_dir: dir,
    memory_buffer: '1MB',
    memory_buffer_total: '1KB',
  });
  const { verdict, ctx } = await runGate(
    policy,
    multipart([
      {
        name: 'file',
        filename: 'r.png',
        type: 'image/png',
        data: Buffer.concat([png(), Buffer.alloc(3000)]),
      },
    ]),
  );
  t.equal(verdict, undefined);
  t.equal(leftovers(dir).length, 2);
  ctx.forwardBody!.dispose!();
  await spoolsGone();
});

t.test('cleanupAll removes the spools of uploads in flight and of accepted ones', async (t) => {
  const policy = await compilePolicy(uploadGate, { enabled: true, spool_dir: dir, memory_buffer: '0' });
  const accepted = await runGate(
    policy,
    multipart([{ name: 'file', filename: 'r.png', type: 'image/png', data: png() }]),
  );
  t.equal(accepted.verdict, undefined);
  const body = multipart([
    {
      name: 'file',
      filename: 'r.png',
      type: 'image/png',
      data: Buffer.concat([png(), Buffer.alloc(20_000)]),
    },
  ]);
  const ctx = {
    ...makeContext({ method: 'POST', headers: { 'content-type': contentType() } }),
    bodySource: bodyStream(body, { stallAfter: 8000, chunkSize: 2000 }),
  };
  const pending = policy.readBody!(ctx);
  await new Promise((r) => setTimeout(r, 30));
  t.equal(liveSpoolCount(), 2);
  t.equal(fs.readdirSync(dir).length, 2);
  await cleanupAll();
  t.same(leftovers(dir), []);
  t.equal(liveSpoolCount(), 0);
  // the stalled request notices (its next write fails or its timer fires); end it
  (ctx.bodySource as Readable).destroy();
  const v = await pending;
  t.match(v, { code: 'upload_rejected' });
  t.same(leftovers(dir), []);
});

t.test('SpoolPart reads at offsets from memory and from disk', async (t) => {
  for (const memory of [1 << 20, 0]) {
    const spool = new Spool({ dir, memoryPerRequest: memory, memoryPerProcess: 1 << 30 });
    const part = new SpoolPart(spool);
    const data = Buffer.from(Array.from({ length: 5000 }, (_, i) => i & 255));
    for (let i = 0; i < data.length; i += 777) await part.write(data.subarray(i, i + 777));
    await part.finish();
    t.equal(part.onDisk, memory === 0);
    t.ok((await part.read(0, 10)).equals(data.subarray(0, 10)));
    t.ok((await part.read(770, 20)).equals(data.subarray(770, 790)), 'across chunks');
    t.ok((await part.read(4990, 100)).equals(data.subarray(4990)), 'short at the end');
    t.equal((await part.read(6000, 10)).length, 0);
    await spool.dispose();
    await t.rejects(part.write(Buffer.from('x')), /disposed/);
  }
  t.same(leftovers(dir), []);
});

t.test('the windowed reader serves header walks from few file reads, same bytes', async (t) => {
  const spool = new Spool({ dir, memoryPerRequest: 0, memoryPerProcess: 0 });
  const part = new SpoolPart(spool);
  const data = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 7) & 255));
  await part.write(data);
  await part.finish();
  const read = part.windowedReader();
  for (const [o, l] of [
    [0, 10],
    [5, 100],
    [65_530, 20],
    [70_000, 4],
    [199_990, 50],
    [100, 100_000],
  ] as const) {
    t.ok((await read(o, l)).equals(data.subarray(o, o + l)), `${o}+${l}`);
  }
  await spool.dispose();
});

t.test(
  "a spool that cannot be written (removed at shutdown, disk full) is a 503, not the client's fault",
  async (t) => {
    const services = makeServices();
    const policy = await compilePolicy(
      uploadGate,
      { enabled: true, spool_dir: dir, memory_buffer: '0' },
      services,
    );
    const body = multipart([
      {
        name: 'file',
        filename: 'r.png',
        type: 'image/png',
        data: Buffer.concat([png(), Buffer.alloc(20_000)]),
      },
    ]);
    let go!: () => void;
    const resume = new Promise<void>((r) => (go = r));
    const ctx = {
      ...makeContext({ method: 'POST', headers: { 'content-type': contentType() } }),
      bodySource: bodyStream(body, { pauseAt: 8000, resume, chunkSize: 2000 }),
    };
    const pending = policy.readBody!(ctx);
    for (let i = 0; i < 200 && leftovers(dir).length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    await cleanupAll();
    go();
    const v = await pending;
    t.match(v, { code: 'service_unavailable', event: 'upload_rejected', detail: { check: 'spool' } });
    t.same(leftovers(dir), []);
    t.match(services.logged, [{ level: 'error', msg: 'upload spool failed' }]);
    const m = await services.metrics.uploadRejections.get();
    t.same(
      m.values.map((x) => [x.labels.reason, x.value]),
      [['spool', 1]],
    );
  },
);
