/**
 * Edges of the upload gate found by an adversarial pass over real TCP: the real gateway
 * in front of the real mock, each refusal checked for its status, error code, audit line
 * and that the mock never received the file; each acceptance at a limit checked for what
 * the mock stored.
 *
 * - a name cut to max_filename_length must not end on a dangerous inner extension that the
 *   check never saw (`AAAA….html.png`);
 * - the markup scan must know every byte that ends an HTML tag name (`<svg/onload=…>`,
 *   `<script\f>`);
 * - a file, a text field or a part count exactly at its limit passes, one more is refused.
 */
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { startHarness, type Harness } from '../../helpers/harness.js';
import { png } from '../../fixtures/uploads/generate.js';
import { multipart, contentType, type PartSpec } from './multipart.js';

interface Res {
  status: number;
  json: Record<string, unknown>;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function upload(h: Harness, token: string, parts: PartSpec[]): Promise<Res> {
  const r = await fetch(`${h.url}/api/receipts/upload`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': contentType() },
    body: multipart(parts),
  });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

async function expectRefused(
  t: Test,
  h: Harness,
  r: Res,
  want: { status: number; code: string; check: string; reason: string; detail?: Record<string, unknown> },
): Promise<void> {
  t.equal(r.status, want.status, 'status');
  t.equal(r.json.error, want.code, 'error code');
  t.match(r.json.message as string, /^Upload rejected \(/);
  t.same(await h.mockRequests(), [], 'the upstream never received it');
  const lines = (await h.audit()).filter((l) => l.request_id === r.json.request_id);
  t.match(
    lines.find((l) => l.event === 'upload_rejected'),
    {
      event: 'upload_rejected',
      decision: 'deny',
      status: want.status,
      detail: { check: want.check, reason: want.reason, ...want.detail },
    },
    'audited as upload_rejected',
  );
  t.notOk(
    lines.some((l) => l.event === 'upload_accepted'),
    'no upload_accepted line for it',
  );
}

t.test('the shipped upload route', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const token = await h.login('alice');

  await t.test('a long name whose cut ends on a dangerous inner extension is refused', async (t) => {
    // max_filename_length 128: the stem is cut to 124 characters, which end in ".html"
    // (".php" likewise); the forwarded name would have been "AAAA….html.png"
    for (const inner of ['html', 'php']) {
      await h.clearMock();
      const stem = `${'A'.repeat(124 - inner.length - 1)}.${inner}${'B'.repeat(50)}`;
      const r = await upload(h, token, [
        { name: 'file', filename: `${stem}.png`, type: 'image/png', data: png() },
      ]);
      await expectRefused(t, h, r, {
        status: 400,
        code: 'upload_rejected',
        check: 'extension',
        reason: 'double_extension',
        detail: { inner: [inner] },
      });
    }
  });

  await t.test('markup openers ended by "/" or a form feed are found', async (t) => {
    for (const text of ['<svg/onload=alert(1)>', '<body/onload=alert(1)>', '<script\f>alert(1)</script>']) {
      await h.clearMock();
      const r = await upload(h, token, [
        { name: 'file', filename: 'r.png', type: 'image/png', data: png(4, 3, { text }) },
      ]);
      await expectRefused(t, h, r, {
        status: 400,
        code: 'upload_rejected',
        check: 'content',
        reason: 'embedded_markup',
      });
    }
  });

  await t.test('a file of exactly 16 MB passes; one byte more is 413', async (t) => {
    const limit = 16 * 1024 * 1024;
    const head = png();
    const exact = Buffer.concat([head, Buffer.alloc(limit - head.length)]);
    await h.clearMock();
    const ok = await upload(h, token, [{ name: 'file', filename: 'r.png', type: 'image/png', data: exact }]);
    t.equal(ok.status, 201, 'accepted');
    t.match(ok.json.files, [{ filename: 'r.png', size: limit, sha256: sha(exact) }], 'stored whole');
    t.match((await h.mockRequests())[0]?.parts, [{ filename: 'r.png', size: limit }]);
    const accepted = (await h.audit()).filter((l) => l.event === 'upload_accepted');
    t.match(accepted[accepted.length - 1], { filename: 'r.png', size: limit });

    await h.clearMock();
    const over = Buffer.concat([exact, Buffer.alloc(1)]);
    const r = await upload(h, token, [{ name: 'file', filename: 'r.png', type: 'image/png', data: over }]);
    await expectRefused(t, h, r, {
      status: 413,
      code: 'payload_too_large',
      check: 'size',
      reason: 'file_too_large',
      detail: { limit },
    });
  });
});

t.test('configured field size and part count', async (t) => {
  const h = await startHarness({
    config: `
policies:
  upload_gate:
    max_field_size: 1KB
    max_files: 2
    max_parts: 3
`,
  });
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const file = (n: number): PartSpec => ({
    name: 'file',
    filename: `r${n}.png`,
    type: 'image/png',
    data: png(),
  });

  await t.test('a text field of exactly max_field_size passes; one byte more is 413', async (t) => {
    await h.clearMock();
    const ok = await upload(h, token, [{ name: 'note', data: 'x'.repeat(1024) }, file(1)]);
    t.equal(ok.status, 201, 'accepted');
    t.equal((await h.mockRequests()).length, 1, 'forwarded');
    await h.clearMock();
    const r = await upload(h, token, [{ name: 'note', data: 'x'.repeat(1025) }, file(1)]);
    await expectRefused(t, h, r, {
      status: 413,
      code: 'payload_too_large',
      check: 'size',
      reason: 'field_too_large',
      detail: { limit: 1024 },
    });
  });

  await t.test('exactly max_parts parts pass; one more is refused', async (t) => {
    await h.clearMock();
    const ok = await upload(h, token, [file(1), file(2), { name: 'note', data: 'lunch' }]);
    t.equal(ok.status, 201, 'accepted');
    t.match((await h.mockRequests())[0]?.parts, [{ filename: 'r1.png' }, { filename: 'r2.png' }]);
    await h.clearMock();
    const r = await upload(h, token, [
      file(1),
      file(2),
      { name: 'note', data: 'lunch' },
      { name: 'more', data: 'x' },
    ]);
    await expectRefused(t, h, r, {
      status: 400,
      code: 'upload_rejected',
      check: 'count',
      reason: 'too_many_parts',
      detail: { limit: 3 },
    });
  });
});
