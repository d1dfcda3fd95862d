import t from 'tap';
import fs from 'node:fs';
import { uploadGate } from '../../../policies/upload-gate/index.js';
import { compilePolicy, makeServices } from '../../helpers/context.js';
import { png, jpeg, gif, bmp, tiff, pdf, elf, exe, HTML, SVG, PHP } from '../../fixtures/uploads/generate.js';
import { multipart, runGate, tempSpoolDir, leftovers, type PartSpec } from './multipart.js';
import { spoolsGone } from './multipart.js';
import type { Deny } from '../../../gateway/policy.js';

const dir = tempSpoolDir();

/** A one-file ZIP (stored), as a JAR or DOCX would end. */
function zipArchive(): Buffer {
  const name = Buffer.from('META-INF/MANIFEST.MF');
  const data = Buffer.from('Manifest-Version: 1.0\r\nMain-Class: Evil\r\n');
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(10, 4);
  local.writeUInt32LE(data.length, 18);
  local.writeUInt32LE(data.length, 22);
  local.writeUInt16LE(name.length, 26);
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt32LE(data.length, 20);
  central.writeUInt32LE(data.length, 24);
  central.writeUInt16LE(name.length, 28);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(1, 8);
  eocd.writeUInt16LE(1, 10);
  eocd.writeUInt32LE(46 + name.length, 12);
  eocd.writeUInt32LE(30 + name.length + data.length, 16);
  return Buffer.concat([local, name, data, central, name, eocd]);
}
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

interface Case {
  title: string;
  part: Omit<PartSpec, 'name'>;
  check: string;
  reason: string;
  config?: Record<string, unknown>;
  status?: number;
}

const file = (filename: string, type: string, data: Buffer | string) => ({ filename, type, data });

const cases: Case[] = [
  {
    title: 'ELF executable renamed .png',
    part: file('receipt.png', 'image/png', elf()),
    check: 'content',
    reason: 'forbidden_content',
  },
  {
    title: 'Windows executable renamed .jpg',
    part: file('receipt.jpg', 'image/jpeg', exe()),
    check: 'content',
    reason: 'forbidden_content',
  },
  {
    title: 'HTML page named .jpg',
    part: file('receipt.jpg', 'image/jpeg', HTML),
    check: 'content',
    reason: 'unrecognised_content',
  },
  {
    title: 'SVG named .png',
    part: file('receipt.png', 'image/png', SVG),
    check: 'content',
    reason: 'unrecognised_content',
  },
  {
    title: 'SVG with an XML declaration named .png',
    part: file('receipt.png', 'image/png', Buffer.concat([Buffer.from('<?xml version="1.0"?>\n'), SVG])),
    check: 'content',
    reason: 'forbidden_content',
  },
  {
    title: 'PHP script named .gif',
    part: file('receipt.gif', 'image/gif', PHP),
    check: 'content',
    reason: 'unrecognised_content',
  },
  {
    title: 'PDF named .png',
    part: file('receipt.png', 'image/png', pdf()),
    check: 'content',
    reason: 'content_mismatch',
  },
  {
    title: 'PNG named .pdf',
    part: file('receipt.pdf', 'application/pdf', png()),
    check: 'content',
    reason: 'content_mismatch',
  },
  {
    title: 'PNG declared as application/pdf',
    part: file('receipt.png', 'application/pdf', png()),
    check: 'type',
    reason: 'declared_type_mismatch',
  },
  {
    title: 'JPEG declared as text/html',
    part: file('receipt.jpg', 'text/html', jpeg()),
    check: 'type',
    reason: 'declared_type_mismatch',
  },
  {
    title: 'octet-stream refused by default',
    part: file('receipt.png', 'application/octet-stream', png()),
    check: 'type',
    reason: 'declared_type_mismatch',
  },
  {
    title: 'an .svg file',
    part: file('logo.svg', 'image/svg+xml', SVG),
    check: 'extension',
    reason: 'extension_not_allowed',
  },
  {
    title: 'an .html file',
    part: file('index.html', 'text/html', HTML),
    check: 'extension',
    reason: 'extension_not_allowed',
  },
  {
    title: 'an .exe file',
    part: file('setup.exe', 'application/octet-stream', exe()),
    check: 'extension',
    reason: 'extension_not_allowed',
  },
  {
    title: 'a name without extension',
    part: file('receipt', 'image/png', png()),
    check: 'extension',
    reason: 'no_extension',
  },
  {
    title: 'double extension receipt.php.png',
    part: file('receipt.php.png', 'image/png', png()),
    check: 'extension',
    reason: 'double_extension',
  },
  {
    title: "double extension with an encoded NUL (filename*=UTF-8''receipt.php%00.png)",
    part: {
      type: 'image/png',
      data: png(),
      disposition: 'form-data; name="file"; filename*=UTF-8\'\'receipt.php%00.png',
    },
    check: 'extension',
    reason: 'double_extension',
  },
  {
    title: 'uppercase double extension SHELL.PHTML.JPG',
    part: file('SHELL.PHTML.JPG', 'image/jpeg', jpeg()),
    check: 'extension',
    reason: 'double_extension',
  },
  {
    title: 'empty filename',
    part: file('', 'image/png', png()),
    check: 'filename',
    reason: 'missing_filename',
  },
  {
    title: 'a filename of only dots and slashes',
    part: file('../../..', 'image/png', png()),
    check: 'filename',
    reason: 'unusable_filename',
  },
  {
    title: 'polyglot: GIF that is also an HTML page',
    part: file('receipt.gif', 'image/gif', gif({ trailer: '<html><script>alert(1)</script></html>' })),
    check: 'content',
    reason: 'embedded_markup',
  },
  {
    title: 'polyglot: PNG with PHP in a text chunk',
    part: file('receipt.png', 'image/png', png(4, 3, { text: '<?php system($_GET[c]); ?>' })),
    check: 'content',
    reason: 'embedded_markup',
  },
  {
    title: 'polyglot: JPEG with a script in a comment segment',
    part: file(
      'receipt.jpg',
      'image/jpeg',
      jpeg({ comment: '*/=1;<SCRIPT src=//evil.example/x.js></script>' }),
    ),
    check: 'content',
    reason: 'embedded_markup',
  },
  {
    title: 'polyglot: PDF with an SVG payload',
    part: file(
      'receipt.pdf',
      'application/pdf',
      pdf({ objects: ['<< /Payload (<svg onload=alert(1)>) >>'] }),
    ),
    check: 'content',
    reason: 'embedded_markup',
  },
  {
    title: 'polyglot: GIF with a JAR appended (GIFAR)',
    part: file('receipt.gif', 'image/gif', Buffer.concat([gif(), zipArchive()])),
    check: 'content',
    reason: 'embedded_archive',
  },
  {
    title: 'polyglot: PDF with a ZIP appended',
    part: file('receipt.pdf', 'application/pdf', Buffer.concat([pdf(), zipArchive()])),
    check: 'content',
    reason: 'embedded_archive',
  },
  {
    title: 'PNG declaring 100000×100000',
    part: file('bomb.png', 'image/png', png(2, 2, { declare: [100000, 100000] })),
    check: 'active_content',
    reason: 'image_dimensions',
  },
  {
    title: 'PNG declaring 20000×20000 (over the pixel budget)',
    part: file('bomb.png', 'image/png', png(2, 2, { declare: [20000, 20000] })),
    check: 'active_content',
    reason: 'image_dimensions',
  },
  {
    title: 'GIF declaring 65535×65535',
    part: file('bomb.gif', 'image/gif', gif({ declare: [65535, 65535] })),
    check: 'active_content',
    reason: 'image_dimensions',
  },
  {
    title: 'JPEG declaring 65000×65000 behind a large EXIF segment',
    part: file('bomb.jpg', 'image/jpeg', jpeg({ declare: [65000, 65000], exif: 60000 })),
    check: 'active_content',
    reason: 'image_dimensions',
  },
  {
    title: 'BMP declaring 50000×50000',
    part: file('bomb.bmp', 'image/bmp', bmp(3, 2, { declare: [50000, 50000] })),
    check: 'active_content',
    reason: 'image_dimensions',
  },
  {
    title: 'TIFF declaring 40000×40000',
    part: file('bomb.tiff', 'image/tiff', tiff(2, 2, { declare: [40000, 40000] })),
    check: 'active_content',
    reason: 'image_dimensions',
  },
  {
    title: 'PNG declaring 0×0',
    part: file('zero.png', 'image/png', png(2, 2, { declare: [0, 0] })),
    check: 'content',
    reason: 'invalid_image_header',
  },
  {
    title: 'BMP magic without a BMP header',
    part: file('fake.bmp', 'image/bmp', Buffer.concat([Buffer.from('BM'), Buffer.alloc(60, 0xff)])),
    check: 'content',
    reason: 'invalid_image_header',
  },
  {
    title: 'PDF with /JavaScript',
    part: file(
      'receipt.pdf',
      'application/pdf',
      pdf({
        catalogExtra: '/Names << /JavaScript << /Names [(x) 4 0 R] >> >>',
        objects: ['<< /S /JavaScript /JS (app.alert(1)) >>'],
      }),
    ),
    check: 'active_content',
    reason: 'pdf_actions',
  },
  {
    title: 'PDF with /OpenAction',
    part: file(
      'receipt.pdf',
      'application/pdf',
      pdf({ catalogExtra: '/OpenAction 4 0 R', objects: ['<< /S /URI /URI (https://evil.example) >>'] }),
    ),
    check: 'active_content',
    reason: 'pdf_actions',
  },
  {
    title: 'PDF with /Launch',
    part: file('receipt.pdf', 'application/pdf', pdf({ objects: ['<< /S /Launch /F (cmd.exe) >>'] })),
    check: 'active_content',
    reason: 'pdf_actions',
  },
  {
    title: 'PDF with a hex-escaped /J#61vaScript name',
    part: file(
      'receipt.pdf',
      'application/pdf',
      pdf({ objects: ['<< /S /J#61vaScript /J#53 (app.alert(1)) >>'] }),
    ),
    check: 'active_content',
    reason: 'pdf_actions',
  },
  {
    title: 'PDF with JavaScript hidden in a compressed object stream',
    part: file(
      'receipt.pdf',
      'application/pdf',
      pdf({ objectStream: ['<< /S /JavaScript /JS (app.alert(1)) >>'] }),
    ),
    check: 'active_content',
    reason: 'pdf_actions',
  },
  {
    title: 'PDF with an object stream under a filter the gate cannot undo',
    part: file(
      'receipt.pdf',
      'application/pdf',
      pdf({ objectStream: ['<< /A 1 >>'], objectStreamFilter: '[/ASCIIHexDecode /FlateDecode]' }),
    ),
    check: 'active_content',
    reason: 'pdf_uninspectable',
  },
];

for (const c of cases) {
  t.test(c.title, async (t) => {
    const services = makeServices();
    const policy = await compilePolicy(
      uploadGate,
      { enabled: true, spool_dir: dir, memory_buffer: '0', ...c.config },
      services,
    );
    const body = multipart([
      { name: 'note', data: 'x' },
      { name: 'file', ...c.part },
    ]);
    const { verdict, ctx } = await runGate(policy, body, { chunkSize: 1000 });
    const d = verdict as Deny;
    t.equal(d?.code, c.check === 'size' ? 'payload_too_large' : 'upload_rejected');
    t.equal(d.detail?.check, c.check);
    t.equal(d.detail?.reason, c.reason);
    const label = { type: 'declared type', active_content: 'active content' }[c.check] ?? c.check;
    t.ok(d.message?.startsWith(`Upload rejected (${label} check): `), 'the message names the check');
    // the client message never echoes file content
    const content = Buffer.from(c.part.data).toString('latin1');
    for (const probe of [
      '<script',
      '<html',
      'alert(',
      '<?php',
      'system(',
      'app.alert',
      'cmd.exe',
      'evil.example',
      '\x7fELF',
      '<svg',
    ]) {
      if (content.includes(probe)) t.notMatch(d.message ?? '', probe, `message does not echo "${probe}"`);
    }
    t.equal(ctx.forwardBody, undefined, 'nothing to forward');
    t.same(leftovers(dir), [], 'no temp file remains');
    const m = await services.metrics.uploadRejections.get();
    t.same(
      m.values.map((v) => [v.labels.reason, v.value]),
      [[c.check, 1]],
      'gateway_upload_rejections_total{reason}',
    );
  });
}

t.test('rejections carry sanitized name, size, sniffed type and sha256 in detail', async (t) => {
  const policy = await compilePolicy(uploadGate, { enabled: true });
  const data = pdf({ objects: ['<< /S /JavaScript /JS (x) >>'] });
  const { verdict } = await runGate(
    policy,
    multipart([{ name: 'file', filename: '../../evil\u202Efdp.pdf', type: 'application/pdf', data }]),
  );
  const detail = (verdict as Deny).detail!;
  t.match(detail, {
    check: 'active_content',
    field: 'file',
    file: 'evilfdp.pdf',
    size: data.length,
    type: 'application/pdf',
    names: ['JavaScript', 'JS'],
  });
  t.match(detail.sha256, /^[0-9a-f]{64}$/);
});

t.test('allowed, when configured: double extensions and octet-stream', async (t) => {
  const policy = await compilePolicy(uploadGate, {
    enabled: true,
    allow_double_extensions: true,
    allow_octet_stream: true,
  });
  const { verdict, ctx } = await runGate(
    policy,
    multipart([{ name: 'file', filename: 'receipt.php.png', type: 'application/octet-stream', data: png() }]),
  );
  t.equal(verdict, undefined);
  t.same(ctx.body?.files, [{ field: 'file', filename: 'receipt.php.png' }]);
  ctx.forwardBody!.dispose!();
  await spoolsGone();
});

t.test(
  'short names outside the object syntax (stream data, strings, comments) are not actions',
  async (t) => {
    const policy = await compilePolicy(uploadGate, { enabled: true });
    // binary stream data containing "/JS " by chance, the name inside a string and a comment
    const noise = Buffer.concat([
      Buffer.from([0xff, 0xd8, 0xff]),
      Buffer.from('/JS (', 'latin1'),
      Buffer.alloc(100, 0x2f),
    ]);
    const data = pdf({
      binaryStream: noise,
      objects: ['<< /Title (a /JS string) >>\n% a comment about /JS\n'],
    });
    const { verdict, ctx } = await runGate(
      policy,
      multipart([{ name: 'file', filename: 'r.pdf', type: 'application/pdf', data }]),
      { chunkSize: 7 },
    );
    t.equal(verdict, undefined);
    ctx.forwardBody?.dispose?.();
    await spoolsGone();
  },
);

t.test(
  'long action names count anywhere: a fake stream, a string, a comment (parser differentials)',
  async (t) => {
    const policy = await compilePolicy(uploadGate, { enabled: true });
    const hidden = [
      // the lexer takes this for stream data; a reader recovering by xref offsets parses obj 9
      pdf({ binaryStream: Buffer.from('\n9 0 obj << /S /JavaScript /JS (app.alert(1)) >> endobj\n') }),
      // an unbalanced string would hide everything after it from the lexer
      pdf({ objects: ['<< /Title (unbalanced \\) >>\n9 0 obj << /S /Launch /F (cmd) >> endobj'] }),
      // a one-line object inside a comment, reachable from an xref offset
      pdf({ objects: ['<< >>\n% 9 0 obj << /OpenAction 4 0 R >> endobj'] }),
    ];
    for (const [i, data] of hidden.entries()) {
      const { verdict } = await runGate(
        policy,
        multipart([{ name: 'file', filename: 'r.pdf', type: 'application/pdf', data }]),
      );
      t.match(
        verdict,
        { code: 'upload_rejected', detail: { check: 'active_content', reason: 'pdf_actions' } },
        `case ${i}`,
      );
    }
  },
);

t.test('PDF names split across every possible chunk boundary are found', async (t) => {
  const policy = await compilePolicy(uploadGate, { enabled: true });
  const data = pdf({ objects: ['<< /S /Launch /F (x) >>'] });
  for (const chunkSize of [1, 2, 3, 5, 8, 13]) {
    const { verdict } = await runGate(
      policy,
      multipart([{ name: 'file', filename: 'r.pdf', type: 'application/pdf', data }]),
      { chunkSize },
    );
    t.match(verdict, { detail: { check: 'active_content', names: ['Launch'] } }, `chunks of ${chunkSize}`);
  }
});

t.test('the configured PDF name list is used', async (t) => {
  const policy = await compilePolicy(uploadGate, { enabled: true, pdf_forbidden_names: ['EmbeddedFile'] });
  const withJs = pdf({ objects: ['<< /S /JavaScript /JS (x) >>'] });
  const a = await runGate(
    policy,
    multipart([{ name: 'file', filename: 'r.pdf', type: 'application/pdf', data: withJs }]),
  );
  t.equal(a.verdict, undefined);
  a.ctx.forwardBody?.dispose?.();
  await spoolsGone();
  const withFile = pdf({ objects: ['<< /Type /EmbeddedFile /Length 0 >>'] });
  const b = await runGate(
    policy,
    multipart([{ name: 'file', filename: 'r.pdf', type: 'application/pdf', data: withFile }]),
  );
  t.match(b.verdict, { detail: { check: 'active_content', names: ['EmbeddedFile'] } });
});
