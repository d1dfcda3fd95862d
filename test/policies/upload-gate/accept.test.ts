import t from 'tap';
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { uploadGate, liveSpoolCount } from '../../../policies/upload-gate/index.js';
import { compilePolicy, makeServices } from '../../helpers/context.js';
import { genuine, png, pdf } from '../../fixtures/uploads/generate.js';
import { multipart, runGate, readForward, parseMultipart, tempSpoolDir, leftovers } from './multipart.js';
import { spoolsGone } from './multipart.js';
import type { Deny } from '../../../gateway/policy.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

for (const memory of ['512KB', '0'] as const) {
  t.test(`every genuine kind is accepted and forwarded intact (memory_buffer ${memory})`, async (t) => {
    const dir = tempSpoolDir();
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const services = makeServices();
    const policy = await compilePolicy(
      uploadGate,
      { enabled: true, spool_dir: dir, memory_buffer: memory },
      services,
    );
    const files = genuine();
    const parts = [
      { name: 'merchant', data: 'Café Ünïcode' },
      ...Object.entries(files).map(([ext, f]) => ({
        name: 'file',
        filename: `receipt.${ext}`,
        type: f.type,
        data: f.data,
      })),
    ];
    const body = multipart(parts);
    const { verdict, ctx } = await runGate(policy, body, { chunkSize: 50 });
    t.equal(verdict, undefined, 'passes');
    const fb = ctx.forwardBody!;
    t.ok(fb, 'forward body set');
    t.match(fb.contentType, /^multipart\/form-data; boundary=----receipt-gateway-[0-9a-f]{32}$/);
    if (memory === '0')
      t.equal(
        leftovers(dir).length,
        2 + Object.keys(files).length - 1,
        'spooled to disk: one dir, one file per part',
      );
    else t.same(leftovers(dir), [], 'held in memory');
    const forwarded = await readForward(ctx);
    t.equal(forwarded.length, fb.length, 'Content-Length is exact');
    const back = await parseMultipart(forwarded, fb.contentType);
    t.same(back[0], { name: 'merchant', data: Buffer.from('Café Ünïcode') });
    for (const [i, [ext, f]] of Object.entries(files).entries()) {
      const p = back[i + 1]!;
      t.equal(p.filename, `receipt.${ext}`);
      t.ok(p.data.equals(f.data), `${ext} bytes intact`);
      t.equal(
        p.type,
        ext === 'jpg' || ext === 'jpeg' ? 'image/jpeg' : ext === 'tiff' ? 'image/tiff' : f.type,
      );
    }
    t.same(ctx.body?.fields, [['merchant', 'Café Ünïcode']]);
    t.same(
      ctx.body?.files?.map((f) => f.filename),
      Object.keys(files).map((e) => `receipt.${e}`),
    );
    t.equal(ctx.body?.mediaType, 'multipart/form-data');
    t.equal(ctx.body?.raw.toString(), 'merchant=Café Ünïcode');
    t.same(services.audited, [], 'upload_accepted waits until the request was forwarded');
    ctx.forwarded = true;
    policy.onDone!(ctx, { status: 201, decision: 'allow', deny: undefined, deniedBy: undefined });
    const accepted = services.audited.filter((a) => a.event === 'upload_accepted');
    t.equal(accepted.length, Object.keys(files).length);
    t.match(accepted[0]!.fields, {
      decision: 'allow',
      status: 201,
      filename: 'receipt.png',
      size: files.png!.data.length,
      type: 'image/png',
      sha256: sha(files.png!.data),
    });
    fb.dispose!();
    fb.dispose!();
    await spoolsGone();
    t.same(leftovers(dir), [], 'no temp file remains after dispose');
  });
}

t.test('the spool is removed once the forwarded stream closed, without dispose', async (t) => {
  const dir = tempSpoolDir();
  const policy = await compilePolicy(uploadGate, { enabled: true, spool_dir: dir, memory_buffer: '0' });
  const body = multipart([{ name: 'file', filename: 'r.png', type: 'image/png', data: png(40, 40) }]);
  const { verdict, ctx } = await runGate(policy, body);
  t.equal(verdict, undefined);
  t.equal(leftovers(dir).length, 2);
  await readForward(ctx);
  await spoolsGone();
  t.same(leftovers(dir), []);
});

t.test('upstream error: a forwarded stream destroyed half-way still frees the spool', async (t) => {
  const dir = tempSpoolDir();
  const policy = await compilePolicy(uploadGate, { enabled: true, spool_dir: dir, memory_buffer: '0' });
  const big = png(600, 600);
  const { ctx } = await runGate(
    policy,
    multipart([{ name: 'file', filename: 'r.png', type: 'image/png', data: big }]),
  );
  const s = ctx.forwardBody!.stream as Readable;
  await new Promise<void>((resolve) => s.once('readable', () => resolve()));
  s.read(10);
  s.on('error', () => {});
  s.destroy(new Error('upstream reset'));
  ctx.forwardBody!.dispose!();
  await spoolsGone();
  t.same(leftovers(dir), []);
});

t.test('client abort after acceptance (before forwarding) frees the spool', async (t) => {
  const dir = tempSpoolDir();
  const policy = await compilePolicy(uploadGate, { enabled: true, spool_dir: dir, memory_buffer: '0' });
  const ac = new AbortController();
  const { verdict } = await runGate(
    policy,
    multipart([{ name: 'file', filename: 'r.pdf', type: 'application/pdf', data: pdf() }]),
    { signal: ac.signal },
  );
  t.equal(verdict, undefined);
  t.equal(leftovers(dir).length, 2);
  ac.abort();
  await spoolsGone();
  t.same(leftovers(dir), []);
  t.equal(liveSpoolCount(), 0);
});

t.test('active content in monitor mode is forwarded and recorded as monitored', async (t) => {
  const services = makeServices();
  const policy = await compilePolicy(uploadGate, { enabled: true, active_content: 'monitor' }, services);
  const { verdict, ctx } = await runGate(
    policy,
    multipart([
      {
        name: 'file',
        filename: 'bomb.png',
        type: 'image/png',
        data: png(2, 2, { declare: [100000, 100000] }),
      },
    ]),
  );
  t.equal(verdict, undefined);
  t.ok(ctx.forwardBody);
  t.equal(ctx.monitored.length, 1);
  t.match((ctx.monitored[0] as Deny).detail, {
    check: 'active_content',
    reason: 'image_dimensions',
    width: 100000,
    height: 100000,
  });
  ctx.forwarded = true;
  policy.onDone!(ctx, { status: 201, decision: 'monitor', deny: undefined, deniedBy: undefined });
  t.equal(services.audited.filter((a) => a.event === 'upload_accepted').length, 0);
  await spoolsGone();
});

t.test('policy monitor mode: content failures are forwarded, limits are still enforced', async (t) => {
  const policy = await compilePolicy(uploadGate, { enabled: true, mode: 'monitor', max_files: 1 });
  t.equal(policy.mode, 'enforce', 'the pipeline never forwards a half-read body');
  const exe = Buffer.concat([Buffer.from('MZ'), Buffer.alloc(300)]);
  const a = await runGate(
    policy,
    multipart([{ name: 'file', filename: 'x.png', type: 'image/png', data: exe }]),
  );
  t.equal(a.verdict, undefined);
  t.match(
    a.ctx.monitored.map((d) => (d as Deny).detail?.check),
    ['content'],
  );
  const fwd = await parseMultipart(await readForward(a.ctx), a.ctx.forwardBody!.contentType);
  t.ok(fwd[0]!.data.equals(exe));
  const b = await runGate(
    policy,
    multipart([
      { name: 'file', filename: 'a.png', type: 'image/png', data: png() },
      { name: 'file', filename: 'b.png', type: 'image/png', data: png() },
    ]),
  );
  t.match(b.verdict, { code: 'upload_rejected', detail: { check: 'count' } });
  t.equal(b.ctx.forwardBody, undefined);
});

t.test('a non-multipart body is left to the pipeline unless require_multipart', async (t) => {
  const open = await compilePolicy(uploadGate, { enabled: true });
  const r1 = await runGate(open, Buffer.from('{"a":1}'), { contentType: 'application/json' });
  t.equal(r1.verdict, 'skip');
  const strict = await compilePolicy(uploadGate, { enabled: true, require_multipart: true });
  const r2 = await runGate(strict, Buffer.from('\x89PNG'), { contentType: 'image/png' });
  t.match(r2.verdict, { code: 'upload_rejected', detail: { check: 'type', reason: 'not_multipart' } });
});

t.test(
  'onDone frees the spool of a request refused after the gate (e.g. by the pattern engine), reports no file accepted',
  async (t) => {
    const dir = tempSpoolDir();
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const services = makeServices();
    const policy = await compilePolicy(
      uploadGate,
      { enabled: true, spool_dir: dir, memory_buffer: '0' },
      services,
    );
    const { verdict, ctx } = await runGate(
      policy,
      multipart([{ name: 'file', filename: 'r.png', type: 'image/png', data: png() }]),
    );
    t.equal(verdict, undefined);
    t.equal(leftovers(dir).length, 2);
    policy.onDone!(ctx, {
      status: 403,
      decision: 'deny',
      deny: { code: 'request_blocked' },
      deniedBy: 'pattern-block',
    });
    await spoolsGone();
    t.same(leftovers(dir), []);
    t.same(services.audited, [], 'never forwarded: no upload_accepted');
  },
);
