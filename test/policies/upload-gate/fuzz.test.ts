/**
 * Property tests: whatever the client sends, the gate answers (a refusal or a clean
 * pass), never throws, never leaves a spool file, and what it forwards parses back to
 * exactly the parts it accepted.
 */
import t from 'tap';
import fs from 'node:fs';
import fc from 'fast-check';
import { uploadGate, liveSpoolCount } from '../../../policies/upload-gate/index.js';
import { compilePolicy } from '../../helpers/context.js';
import { genuine } from '../../fixtures/uploads/generate.js';
import {
  multipart,
  runGate,
  readForward,
  parseMultipart,
  tempSpoolDir,
  leftovers,
  spoolsGone,
} from './multipart.js';
import type { Deny } from '../../../gateway/policy.js';
import { sanitizeFilename } from '../../../policies/upload-gate/filename.js';

const dir = tempSpoolDir();
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const files = genuine();
const kinds = Object.keys(files);

t.test('mutated bodies: always a verdict, never a leftover', async (t) => {
  const policy = await compilePolicy(uploadGate, {
    enabled: true,
    spool_dir: dir,
    memory_buffer: '1KB',
    idle_timeout: '2s',
  });
  const base = multipart([
    { name: 'note', data: 'hello' },
    { name: 'file', filename: 'r.png', type: 'image/png', data: files.png!.data },
    { name: 'file', filename: 'r.pdf', type: 'application/pdf', data: files.pdf!.data },
  ]);
  const mutation = fc.oneof(
    fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
    fc.record({
      kind: fc.constant('insert' as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ maxLength: 40 }),
    }),
    fc.record({ kind: fc.constant('dup' as const), at: fc.nat(), len: fc.nat({ max: 300 }) }),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.array(mutation, { minLength: 1, maxLength: 4 }),
      fc.integer({ min: 1, max: 400 }),
      async (muts, chunkSize) => {
        let body = Buffer.from(base);
        for (const m of muts) {
          const at = m.at % (body.length + 1);
          if (m.kind === 'cut') body = body.subarray(0, at);
          else if (m.kind === 'flip' && at < body.length) body[at] = m.byte;
          else if (m.kind === 'insert')
            body = Buffer.concat([body.subarray(0, at), Buffer.from(m.bytes), body.subarray(at)]);
          else if (m.kind === 'dup')
            body = Buffer.concat([body.subarray(0, at), body.subarray(at, at + m.len), body.subarray(at)]);
        }
        const { verdict, ctx } = await runGate(policy, body, { chunkSize });
        if (verdict === undefined) {
          const fwd = await readForward(ctx);
          if (fwd.length !== ctx.forwardBody!.length) return false;
          await parseMultipart(fwd, ctx.forwardBody!.contentType);
        } else {
          const d = verdict as Deny;
          if (d.code !== 'upload_rejected' && d.code !== 'payload_too_large') return false;
        }
        await spoolsGone();
        return leftovers(dir).length === 0 && liveSpoolCount() === 0;
      },
    ),
    { numRuns: 150 },
  );
  t.pass('150 mutated bodies');
});

t.test('accepted uploads round-trip: the upstream sees exactly the accepted parts', async (t) => {
  const policy = await compilePolicy(uploadGate, {
    enabled: true,
    spool_dir: dir,
    memory_buffer: '2KB',
    max_files: 20,
    max_parts: 40,
  });
  const part = fc.oneof(
    fc.record({
      name: fc.stringMatching(/^[a-z][a-z0-9_]{0,10}$/),
      value: fc.string({ maxLength: 50 }).filter((s) => !s.includes('\r') && !s.includes('\n')),
    }),
    fc.record({
      name: fc.constant('file'),
      kind: fc.constantFrom(...kinds),
      stem: fc.stringMatching(/^[A-Za-z0-9 _-]{1,20}$/).filter((s) => s.trim() !== ''),
    }),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.array(part, { minLength: 1, maxLength: 6 }),
      fc.integer({ min: 1, max: 5000 }),
      async (parts, chunkSize) => {
        const specs = parts.map((p) =>
          'value' in p
            ? { name: p.name, data: p.value }
            : {
                name: 'file',
                filename: `${p.stem}.${p.kind}`,
                type: files[p.kind]!.type,
                data: files[p.kind]!.data,
              },
        );
        const { verdict, ctx } = await runGate(policy, multipart(specs), { chunkSize });
        if (verdict !== undefined) return false;
        const back = await parseMultipart(await readForward(ctx), ctx.forwardBody!.contentType);
        await spoolsGone();
        if (back.length !== specs.length) return false;
        return specs.every((s, i) => {
          const b = back[i]!;
          if (b.name !== s.name) return false;
          if ('filename' in s) {
            const want = sanitizeFilename(s.filename!, { normalization: 'NFKC', maxLength: 128 }).name;
            return b.filename === want && b.data.equals(s.data as Buffer);
          }
          return b.data.toString() === s.data;
        });
      },
    ),
    { numRuns: 60 },
  );
  t.same(leftovers(dir), []);
});
