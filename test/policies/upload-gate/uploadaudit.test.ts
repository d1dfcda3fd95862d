/**
 * Upload gate, adversarial pass (filenames, field names, magic bytes) over real TCP: the
 * real gateway with the shipped gateway.yaml in front of the real mock, which parses what
 * it receives with busboy and records every file part (field, filename, size, type), so a
 * test sees the part structure the service read, byte for byte as forwarded.
 *
 * - a field name with a backslash was forwarded inside a quoted string unescaped
 *   (`name="file\"`): busboy reads `\"` as an escaped quote, so the service read another
 *   part structure than the gate judged (the file vanished, or the body did not parse);
 * - Windows device names followed by more than one extension (`CON.tar.png`, `nul.x.png`)
 *   and the superscript-digit ports (`COM¹` under NFC) were forwarded as is;
 * - any "GIF" prefix passed as a GIF: the signature is GIF87a or GIF89a;
 * - with `Expect: 100-continue` the gateway answered 100 at once, so a client whose upload
 *   is refused from its head (413 from Content-Length, 401) was invited to send it all.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { startHarness, metricsText, metricValue, type Harness } from '../../helpers/harness.js';
import { rawExchange, head } from '../../helpers/raw-http.js';
import { gif, png } from '../../fixtures/uploads/generate.js';
import { sanitizeFilename } from '../../../policies/upload-gate/filename.js';
import { uploadGate } from '../../../policies/upload-gate/index.js';
import { compilePolicy } from '../../helpers/context.js';
import { tempSpoolDir, leftovers, multipart, runGate, spoolsGone } from './multipart.js';
import path from 'node:path';

const spool = tempSpoolDir();
let h: Harness;
let token: string;

t.before(async () => {
  h = await startHarness({
    config: `\npolicies:\n  upload_gate:\n    spool_dir: ${JSON.stringify(spool)}\n`,
  });
  token = await h.login('alice');
});
t.teardown(async () => {
  await h.close();
  fs.rmSync(spool, { recursive: true, force: true });
});

const PNG = png();

interface Sent {
  readonly status: number;
  readonly json: Record<string, unknown> | undefined;
  readonly requestId: string | undefined;
  readonly marker: string;
}

/** One part, its Content-Disposition written verbatim (latin1 bytes). */
const part = (disposition: string, data: Buffer, type?: string): Buffer =>
  Buffer.concat([
    Buffer.from(
      `--XB\r\nContent-Disposition: ${disposition}\r\n${type === undefined ? '' : `Content-Type: ${type}\r\n`}\r\n`,
      'latin1',
    ),
    data,
    Buffer.from('\r\n', 'latin1'),
  ]);
const END = Buffer.from('--XB--\r\n', 'latin1');

/** POST a multipart body to the upload route over a raw socket. */
async function upload(...parts: Buffer[]): Promise<Sent> {
  const marker = `probe-${randomUUID()}`;
  const body = Buffer.concat([...parts, END]);
  const x = await rawExchange(
    h.url,
    head(`POST /api/receipts/upload?m=${marker} HTTP/1.1`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Content-Type', 'multipart/form-data; boundary=XB'],
      ['Content-Length', String(body.length)],
    ]) + body.toString('latin1'),
    { responses: 1 },
  );
  const r = x.responses[0];
  return { status: r?.status ?? 0, json: r?.json, requestId: r?.headers['x-request-id'], marker };
}

/** The file parts the service read from the forwarded body: [field, filename, size, type]. */
async function seenParts(marker: string): Promise<unknown> {
  const seen = (await h.mockRequests()).find((s) => s.path.includes(marker));
  return seen?.parts?.map((p) => [p.field, p.filename, p.size, p.content_type]);
}

/** The spool is removed in the background once the exchange is over. */
async function spoolEmpty(): Promise<string[]> {
  for (let i = 0; i < 300 && leftovers(spool).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
  return leftovers(spool);
}

async function refused(t: Test, r: Sent, check: string, reason: string, why?: string): Promise<void> {
  t.equal(r.status, 400, 'status');
  t.equal(r.json?.error, 'upload_rejected', 'error code');
  t.equal(
    r.json?.message,
    'Upload rejected (content check): the image header is invalid.',
    'names the check, echoes nothing',
  );
  const line = (await h.audit()).find((a) => a.request_id === r.requestId);
  t.match(
    line,
    {
      event: 'upload_rejected',
      decision: 'deny',
      status: 400,
      detail: { check, reason, ...(why ? { why } : {}) },
    },
    'audited',
  );
  t.notOk(
    (await h.mockRequests()).some((s) => s.path.includes(r.marker)),
    'the upstream never saw it',
  );
  t.same(await spoolEmpty(), [], 'no spool file remains');
}

t.test('a backslash in a field name cannot change the part structure the service reads', async (t) => {
  // the client escapes the backslash (`name="file\\"`): the gate reads the name `file\`
  const fileWithBackslash = part('form-data; name="file\\\\"; filename="r.png"', PNG, 'image/png');
  await t.test('on the file part itself', async (t) => {
    const r = await upload(fileWithBackslash);
    t.equal(r.status, 201, 'stored');
    t.same(
      await seenParts(r.marker),
      [['file%5C', 'r.png', PNG.length, 'image/png']],
      'the service read the one file the gate judged',
    );
    t.match(r.json, { files: [{ filename: 'r.png', size: PNG.length }] }, "the service's answer");
  });
  await t.test('on a text field before the file', async (t) => {
    const r = await upload(
      part('form-data; name="note\\\\"', Buffer.from('lunch')),
      part('form-data; name="file"; filename="r.png"', PNG, 'image/png'),
    );
    t.equal(r.status, 201, 'stored');
    t.same(
      await seenParts(r.marker),
      [['file', 'r.png', PNG.length, 'image/png']],
      'the file after it is still read as a file',
    );
  });
  await t.test('a backslash and a quote together', async (t) => {
    // `a\"; filename="x.php` decoded: the forwarded name must stay one quoted string
    const r = await upload(
      part('form-data; name="a\\\\\\"; filename=\\"x.php"; filename="r.png"', PNG, 'image/png'),
    );
    t.equal(r.status, 201, 'stored');
    t.same(await seenParts(r.marker), [['a%5C%22; filename=%22x.php', 'r.png', PNG.length, 'image/png']]);
  });
  t.same(await spoolEmpty(), [], 'no spool file remains');
});

t.test('Windows device names are defused whatever follows the first dot', async (t) => {
  const cases: [string, string][] = [
    ['CON.png', '_CON.png'],
    ['CON.tar.png', '_CON.tar.png'],
    ['nul.x.png', '_nul.x.png'],
    ['aux .2024.png', '_aux .2024.png'],
    ['LPT1.scan.01.png', '_LPT1.scan.01.png'],
    ['console.png', 'console.png'],
    ['CONIN.png', 'CONIN.png'],
  ];
  for (const [sent, forwarded] of cases) {
    const r = await upload(part(`form-data; name="file"; filename="${sent}"`, PNG, 'image/png'));
    t.equal(r.status, 201, `${sent}: stored`);
    t.same(
      await seenParts(r.marker),
      [['file', forwarded, PNG.length, 'image/png']],
      `${sent} → ${forwarded}`,
    );
  }
  const nfc = { normalization: 'NFC' as const, maxLength: 64 };
  // NFC keeps superscript digits; Windows reads COM¹–COM³ and LPT¹–LPT³ as ports too
  t.equal(sanitizeFilename('COM\u00b9.png', nfc).name, '_COM\u00b9.png');
  t.equal(sanitizeFilename('lpt\u00b3.x.png', nfc).name, '_lpt\u00b3.x.png');
  t.equal(sanitizeFilename('COM\u00b9.png', { ...nfc, normalization: 'NFKC' }).name, '_COM1.png');
});

t.test('GIF magic bytes: the GIF87a or GIF89a signature, nothing else', async (t) => {
  const before = metricValue(await metricsText(h), 'gateway_upload_rejections_total', { reason: 'content' });
  for (const sig of ['GIFzz;', 'GIF8;\n', 'GIF90a']) {
    const data = gif();
    data.write(sig, 0, 'latin1');
    const r = await upload(part('form-data; name="file"; filename="r.gif"', data, 'image/gif'));
    await t.test(JSON.stringify(sig), (t) =>
      refused(t, r, 'content', 'invalid_image_header', 'GIF with an unknown version'),
    );
  }
  t.equal(
    metricValue(await metricsText(h), 'gateway_upload_rejections_total', { reason: 'content' }),
    before + 3,
    'counted under reason="content"',
  );
  for (const sig of ['GIF87a', 'GIF89a']) {
    const data = gif();
    data.write(sig, 0, 'latin1');
    const r = await upload(part('form-data; name="file"; filename="r.gif"', data, 'image/gif'));
    t.equal(r.status, 201, `${sig}: stored`);
    t.same(await seenParts(r.marker), [['file', 'r.gif', data.length, 'image/gif']]);
  }
});

/** Write a request head with Expect: 100-continue; send `body` only once the 100 arrives. */
function expectContinue(
  headers: [string, string][],
  body: Buffer,
): Promise<{ raw: string; closed: boolean }> {
  const u = new URL(h.url);
  return new Promise((resolve) => {
    const s = net.connect(Number(u.port), u.hostname);
    let raw = '';
    let sent = false;
    const done = (closed: boolean) => {
      s.destroy();
      resolve({ raw, closed });
    };
    s.on('data', (d: Buffer) => {
      raw += d.toString('latin1');
      if (!sent && raw.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) {
        sent = true;
        s.write(body);
      }
      // a final response, whole (these are JSON bodies with a Content-Length)
      const final = /(?:^|\r\n\r\n)(HTTP\/1\.1 [2-5]\d\d [^]*?\r\n\r\n)/.exec(raw);
      const len = final ? /content-length: (\d+)/i.exec(final[1]!) : null;
      if (final && len && raw.length >= final.index + final[0].length + Number(len[1])) done(false);
    });
    s.on('close', () => done(true));
    s.on('error', () => done(true));
    s.on('connect', () =>
      s.write(
        head('POST /api/receipts/upload HTTP/1.1', [['Host', 'x'], ...headers, ['Expect', '100-continue']]),
      ),
    );
  });
}

t.test('Expect: 100-continue: no 100 for an upload refused from its head', async (t) => {
  const ct: [string, string] = ['Content-Type', 'multipart/form-data; boundary=XB'];
  const auth: [string, string] = ['Authorization', `Bearer ${token}`];
  await t.test('Content-Length over max_request_size: 413 at once, nothing invited', async (t) => {
    await h.clearMock();
    const r = await expectContinue([auth, ct, ['Content-Length', String(70 * 1024 * 1024)]], Buffer.alloc(0));
    t.match(r.raw, /^HTTP\/1\.1 413 /, 'the final answer comes first');
    t.notOk(r.raw.includes('100 Continue'), 'no 100 Continue');
    const id = /x-request-id: (\S+)/i.exec(r.raw)?.[1];
    const line = (await h.audit()).find((a) => a.request_id === id);
    t.match(line, {
      event: 'upload_rejected',
      status: 413,
      detail: { check: 'size', reason: 'request_too_large' },
    });
    t.same(await h.mockRequests(), [], 'the upstream never saw it');
  });
  await t.test('no credentials: 401 at once, nothing invited', async (t) => {
    const r = await expectContinue([ct, ['Content-Length', '5000']], Buffer.alloc(0));
    t.match(r.raw, /^HTTP\/1\.1 401 /, 'the final answer comes first');
    t.notOk(r.raw.includes('100 Continue'), 'no 100 Continue');
  });
  await t.test('a good upload: 100 once the gate reads, then the service stores it', async (t) => {
    await h.clearMock();
    const body = Buffer.concat([part('form-data; name="file"; filename="r.png"', PNG, 'image/png'), END]);
    const r = await expectContinue([auth, ct, ['Content-Length', String(body.length)]], body);
    t.match(r.raw, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 201 /, '100, then 201');
    const seen = await h.mockRequests();
    t.same(
      seen[0]?.parts?.map((p) => [p.field, p.filename, p.size]),
      [['file', 'r.png', PNG.length]],
    );
    t.equal(seen[0]?.headers.expect, undefined, 'Expect is not forwarded');
  });
  t.same(await spoolEmpty(), [], 'no spool file remains');
});

t.test('max_files (10 shipped): exactly 10 files reach the service, 11 are refused', async (t) => {
  const files = (n: number) =>
    Array.from({ length: n }, (_, i) =>
      part(`form-data; name="file"; filename="r${i}.png"`, PNG, 'image/png'),
    );
  const ok = await upload(...files(10));
  t.equal(ok.status, 201, '10 files: stored');
  t.equal(((await seenParts(ok.marker)) as unknown[]).length, 10, 'the service read 10 files');
  const r = await upload(...files(11));
  t.equal(r.status, 400);
  t.equal(r.json?.error, 'upload_rejected');
  t.equal(r.json?.message, 'Upload rejected (count check): more than 10 files.');
  const line = (await h.audit()).find((a) => a.request_id === r.requestId);
  t.match(line, {
    event: 'upload_rejected',
    detail: { check: 'count', reason: 'too_many_files', limit: 10 },
  });
  t.notOk(
    (await h.mockRequests()).some((s) => s.path.includes(r.marker)),
    'the upstream never saw it',
  );
  t.same(await spoolEmpty(), [], 'no spool file remains');
});

t.test('spool: a directory only the gateway can enter, files only it can read', async (t) => {
  const dir = tempSpoolDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const policy = await compilePolicy(uploadGate, { enabled: true, spool_dir: dir, memory_buffer: '1KB' });
  const data = Buffer.concat([PNG, Buffer.alloc(64 * 1024)]);
  const body = multipart([{ name: 'file', filename: 'r.png', type: 'image/png', data }]);
  let resume!: () => void;
  const paused = new Promise<void>((r) => (resume = r));
  // hold the upload half-way, once part of the file is on disk
  const run = runGate(policy, body, { pauseAt: 40 * 1024, chunkSize: 4096, resume: paused });
  let entries: string[] = [];
  for (let i = 0; i < 500 && !entries.some((e) => e.includes('part-')); i++) {
    await new Promise((r) => setTimeout(r, 2));
    entries = leftovers(dir);
  }
  const sub = entries.find((e) => !e.includes(path.sep))!;
  const file = entries.find((e) => e.includes('part-'))!;
  t.match(sub, /^rg-upload-\d+-/, 'a per-request directory');
  t.equal(fs.statSync(path.join(dir, sub)).mode & 0o777, 0o700, 'directory 0700');
  t.equal(fs.statSync(path.join(dir, file)).mode & 0o077, 0, 'file readable by the gateway alone');
  resume();
  const { verdict, ctx } = await run;
  t.equal(verdict, undefined, 'accepted');
  ctx.forwardBody?.dispose?.();
  await spoolsGone();
  t.same(leftovers(dir), [], 'removed once disposed');
});
