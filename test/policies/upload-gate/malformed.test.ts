import t, { type Test } from 'tap';
import fs from 'node:fs';
import { uploadGate } from '../../../policies/upload-gate/index.js';
import { compilePolicy, makeServices } from '../../helpers/context.js';
import { png } from '../../fixtures/uploads/generate.js';
import {
  BOUNDARY,
  contentType,
  multipart,
  runGate,
  tempSpoolDir,
  leftovers,
  bodyStream,
} from './multipart.js';
import { spoolsGone } from './multipart.js';
import type { Deny } from '../../../gateway/policy.js';
import { makeContext } from '../../helpers/context.js';

const dir = tempSpoolDir();
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const base = { enabled: true, spool_dir: dir, memory_buffer: '0' };
const ok = (name = 'r.png', data: Buffer | string = png()) => ({
  name: 'file',
  filename: name,
  type: 'image/png',
  data,
});

async function expectDeny(
  t: Test,
  body: Buffer,
  want: { code: string; check: string; reason: string },
  config: Record<string, unknown> = {},
  opts: Parameters<typeof runGate>[2] = {},
) {
  const services = makeServices();
  const policy = await compilePolicy(uploadGate, { ...base, ...config }, services);
  const { verdict, ctx } = await runGate(policy, body, opts);
  const d = verdict as Deny;
  t.equal(d?.code, want.code, 'code');
  t.equal(d?.detail?.check, want.check, 'check');
  t.equal(d?.detail?.reason, want.reason, 'reason');
  t.equal(ctx.forwardBody, undefined, 'nothing forwarded');
  t.same(leftovers(dir), [], 'no temp file remains');
  const m = await services.metrics.uploadRejections.get();
  t.same(
    m.values.map((v) => [v.labels.reason, v.value]),
    [[want.check, 1]],
  );
  return { d, ctx };
}

// --- size ------------------------------------------------------------------------------

t.test('Content-Length over max_request_size: 413 at once, body not read', async (t) => {
  const policy = await compilePolicy(uploadGate, {
    ...base,
    max_file_size: '1KB',
    max_request_size: '2KB',
    max_total_size: '2KB',
  });
  const body = multipart([ok('r.png', Buffer.alloc(10))]);
  const headers = { 'content-type': contentType(), 'content-length': String(50 * 1024 * 1024) };
  const src = bodyStream(body);
  const ctx = { ...makeContext({ method: 'POST', headers }), bodySource: src };
  const v = (await policy.readBody!(ctx)) as Deny;
  t.equal(v.code, 'payload_too_large');
  t.match(v.detail, { check: 'size', reason: 'request_too_large', content_length: 50 * 1024 * 1024 });
  t.equal(src.readableFlowing, null, 'the body stream was never touched');
});

t.test('a file over max_file_size: 413', async (t) => {
  const big = Buffer.concat([png(), Buffer.alloc(5000)]);
  const { d } = await expectDeny(
    t,
    multipart([ok('r.png', big)]),
    { code: 'payload_too_large', check: 'size', reason: 'file_too_large' },
    {
      max_file_size: '4KB',
    },
  );
  t.ok(d.message?.startsWith('Upload rejected (size check): '));
});

t.test('files together over max_total_size: 413', async (t) => {
  const f = Buffer.concat([png(), Buffer.alloc(3000)]);
  await expectDeny(
    t,
    multipart([ok('a.png', f), ok('b.png', f), ok('c.png', f)]),
    { code: 'payload_too_large', check: 'size', reason: 'total_too_large' },
    {
      max_file_size: '4KB',
      max_total_size: '8KB',
    },
  );
});

t.test('chunked upload without Content-Length over max_request_size: 413 while streaming', async (t) => {
  const f = Buffer.concat([png(), Buffer.alloc(6000)]);
  await expectDeny(
    t,
    multipart([ok('a.png', f), ok('b.png', f)]),
    { code: 'payload_too_large', check: 'size', reason: 'request_too_large' },
    { max_file_size: '8KB', max_total_size: '16KB', max_request_size: '10KB' },
    { contentLength: false, chunkSize: 1024 },
  );
});

t.test('a chunked upload without Content-Length within the limits passes', async (t) => {
  const policy = await compilePolicy(uploadGate, base);
  const { verdict, ctx } = await runGate(policy, multipart([ok()]), { contentLength: false, chunkSize: 10 });
  t.equal(verdict, undefined);
  ctx.forwardBody!.dispose!();
  await spoolsGone();
});

t.test('a text field over max_field_size: 413', async (t) => {
  await expectDeny(
    t,
    multipart([{ name: 'note', data: 'x'.repeat(2000) }, ok()]),
    { code: 'payload_too_large', check: 'size', reason: 'field_too_large' },
    {
      max_field_size: '1KB',
    },
  );
});

// --- count -----------------------------------------------------------------------------

t.test('too many files', async (t) => {
  await expectDeny(
    t,
    multipart([ok('a.png'), ok('b.png'), ok('c.png')]),
    { code: 'upload_rejected', check: 'count', reason: 'too_many_files' },
    { max_files: 2 },
  );
});

t.test('too many text fields', async (t) => {
  const fields = Array.from({ length: 5 }, (_, i) => ({ name: `f${i}`, data: 'x' }));
  await expectDeny(
    t,
    multipart([...fields, ok()]),
    { code: 'upload_rejected', check: 'count', reason: 'too_many_fields' },
    { max_fields: 3 },
  );
});

t.test('thousands of tiny parts', async (t) => {
  const parts = Array.from({ length: 5000 }, () => ({ disposition: 'attachment', data: 'x' }));
  await expectDeny(t, multipart([ok(), ...parts]), {
    code: 'upload_rejected',
    check: 'count',
    reason: 'too_many_parts',
  });
});

// --- malformed -------------------------------------------------------------------------

t.test('truncated body', async (t) => {
  const body = multipart([ok('r.png', Buffer.concat([png(), Buffer.alloc(3000)]))]);
  await expectDeny(t, body.subarray(0, body.length - 1500), {
    code: 'upload_rejected',
    check: 'malformed',
    reason: 'truncated',
  });
});

t.test('body cut right after the last part, without the closing boundary', async (t) => {
  const body = multipart([ok()]);
  await expectDeny(t, body.subarray(0, body.length - `--${BOUNDARY}--\r\n`.length), {
    code: 'upload_rejected',
    check: 'malformed',
    reason: 'truncated',
  });
});

t.test('missing boundary parameter', async (t) => {
  await expectDeny(
    t,
    multipart([ok()]),
    { code: 'upload_rejected', check: 'malformed', reason: 'bad_content_type' },
    {},
    { contentType: 'multipart/form-data' },
  );
});

t.test('wrong boundary', async (t) => {
  await expectDeny(
    t,
    multipart([ok()]),
    { code: 'upload_rejected', check: 'malformed', reason: 'truncated' },
    {},
    { contentType: contentType('SomethingElse') },
  );
});

t.test('a boundary inside the data cuts the part short', async (t) => {
  // the file data carries the delimiter, so the "rest" of the file is read as a part header
  const data = Buffer.concat([
    png(),
    Buffer.from(`\r\n--${BOUNDARY}\r\nnot a header line at all\r\n\r\n`),
    Buffer.alloc(100, 1),
  ]);
  const policy = await compilePolicy(uploadGate, base);
  const { verdict } = await runGate(policy, multipart([ok('r.png', data)]));
  t.match(verdict, { code: 'upload_rejected', detail: { check: 'malformed' } });
  t.same(leftovers(dir), []);
});

t.test('a part without a name', async (t) => {
  await expectDeny(t, multipart([{ filename: 'r.png', type: 'image/png', data: png() }]), {
    code: 'upload_rejected',
    check: 'malformed',
    reason: 'part_without_name',
  });
});

t.test('a text field without a name', async (t) => {
  await expectDeny(t, multipart([{ data: 'hello' }, ok()]), {
    code: 'upload_rejected',
    check: 'malformed',
    reason: 'part_without_name',
  });
});

t.test('a huge part header', async (t) => {
  const header = `X-Padding: ${'a'.repeat(20_000)}`;
  await expectDeny(t, multipart([{ ...ok(), headers: [header] }]), {
    code: 'upload_rejected',
    check: 'malformed',
    reason: 'bad_part_header',
  });
});

t.test('a raw NUL in a part header', async (t) => {
  await expectDeny(t, multipart([ok('receipt.php\u0000.png')]), {
    code: 'upload_rejected',
    check: 'malformed',
    reason: 'bad_part_header',
  });
});

t.test('base64 Content-Transfer-Encoding is refused', async (t) => {
  await expectDeny(
    t,
    multipart([{ ...ok('r.png', png().toString('base64')), headers: ['Content-Transfer-Encoding: base64'] }]),
    { code: 'upload_rejected', check: 'malformed', reason: 'transfer_encoding' },
  );
});

t.test('a typed part without filename (a file in disguise)', async (t) => {
  await expectDeny(t, multipart([{ name: 'file', type: 'image/png', data: png() }]), {
    code: 'upload_rejected',
    check: 'filename',
    reason: 'missing_filename',
  });
});

t.test('an octet-stream part without filename', async (t) => {
  await expectDeny(t, multipart([{ name: 'file', type: 'application/octet-stream', data: png() }]), {
    code: 'upload_rejected',
    check: 'filename',
    reason: 'missing_filename',
  });
});

// --- clients that stop or go away -----------------------------------------------------

t.test('a client that stalls mid-upload: 400 upload timed out, spool removed', async (t) => {
  const body = multipart([ok('r.png', Buffer.concat([png(), Buffer.alloc(20_000)]))]);
  const { d } = await expectDeny(
    t,
    body,
    { code: 'upload_rejected', check: 'malformed', reason: 'timeout' },
    { idle_timeout: '50ms' },
    { stallAfter: 10_000, chunkSize: 2000 },
  );
  t.equal(d.message, 'Upload rejected (malformed body check): upload timed out.');
  t.match(d.detail, { timeout: 'idle', limit_ms: 50 });
});

t.test('a client that trickles but never finishes hits body_timeout', async (t) => {
  const body = multipart([ok('r.png', Buffer.concat([png(), Buffer.alloc(20_000)]))]);
  const services = makeServices();
  const policy = await compilePolicy(
    uploadGate,
    { ...base, body_timeout: '80ms', idle_timeout: '10s' },
    services,
  );
  const src = bodyStream(body, { stallAfter: 5000, chunkSize: 1000 });
  // keep sending a byte-sized trickle of nothing: a stream that never ends but stays alive
  const ctx = {
    ...makeContext({ method: 'POST', headers: { 'content-type': contentType() } }),
    bodySource: src,
  };
  const v = (await policy.readBody!(ctx)) as Deny;
  t.match(v.detail, { check: 'malformed', reason: 'timeout', timeout: 'body' });
  t.same(leftovers(dir), []);
});

t.test('the request is aborted mid-upload (ctx.signal)', async (t) => {
  const ac = new AbortController();
  const body = multipart([ok('r.png', Buffer.concat([png(), Buffer.alloc(30_000)]))]);
  const services = makeServices();
  const policy = await compilePolicy(uploadGate, base, services);
  const src = bodyStream(body, { stallAfter: 12_000, chunkSize: 4000 });
  const ctx = {
    ...makeContext({ method: 'POST', headers: { 'content-type': contentType() }, signal: ac.signal }),
    bodySource: src,
  };
  const p = policy.readBody!(ctx);
  await new Promise((r) => setTimeout(r, 30));
  t.ok(leftovers(dir).length > 0, 'spooling to disk before the abort');
  ac.abort();
  const v = (await p) as Deny;
  t.match(v.detail, { check: 'malformed', reason: 'aborted' });
  t.same(leftovers(dir), []);
});

t.test('the client connection breaks mid-upload (stream error)', async (t) => {
  const body = multipart([ok('r.png', Buffer.concat([png(), Buffer.alloc(30_000)]))]);
  await expectDeny(
    t,
    body,
    { code: 'upload_rejected', check: 'malformed', reason: 'aborted' },
    {},
    { failAfter: 12_000, chunkSize: 4000 },
  );
});

t.test('the gate keeps working after every kind of failure', async (t) => {
  const policy = await compilePolicy(uploadGate, base);
  const { verdict, ctx } = await runGate(policy, multipart([ok()]));
  t.equal(verdict, undefined);
  ctx.forwardBody!.dispose!();
  await spoolsGone();
});
