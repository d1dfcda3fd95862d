import t from 'tap';
import crypto from 'node:crypto';
import { MarkupScanner } from '../../../policies/upload-gate/markup-scan.js';
import { PdfScanner } from '../../../policies/upload-gate/pdf-scan.js';
import { pdf } from '../../fixtures/uploads/generate.js';

const limits = { maxObjectStream: 1 << 20, maxInflated: 4 << 20 };
const NAMES = new Set(['JavaScript', 'JS', 'Launch', 'OpenAction']);

function markupIn(data: Buffer, sizes: number[]): string | undefined {
  const s = new MarkupScanner();
  let pos = 0;
  for (let k = 0; pos < data.length; k++) {
    const n = sizes[k % sizes.length]!;
    s.feed(data.subarray(pos, pos + n));
    pos += n;
  }
  s.end();
  return s.found;
}

async function pdfNames(data: Buffer, split: number): Promise<string[]> {
  const s = new PdfScanner(NAMES, limits);
  s.feed(data.subarray(0, split));
  s.feed(data.subarray(split));
  return (await s.finish()).names;
}

t.test('markup openers are found wherever the chunks split them', async (t) => {
  const body = Buffer.concat([
    crypto.randomBytes(200).map((b) => (b === 0x3c ? 0x3d : b)),
    Buffer.from('<ScRiPt>'),
    Buffer.alloc(50, 0x41),
  ]);
  for (let a = 1; a <= 20; a++) {
    t.equal(markupIn(body, [a]), 'script', `chunks of ${a}`);
    t.equal(markupIn(body, [a, 197 - a, 3]), 'script', `uneven chunks around ${a}`);
  }
  t.equal(markupIn(Buffer.from('x<?php'), [2]), undefined, 'a PHP opener needs its delimiter');
  t.equal(markupIn(Buffer.from('x<?php '), [3]), 'php');
  t.equal(markupIn(Buffer.from('<svg'), [1]), undefined, 'at the very end, without its delimiter');
  t.equal(markupIn(Buffer.from('<svg>'), [1]), 'svg');
  t.equal(
    markupIn(Buffer.from('a <b>bold</b> <scripts'), [4]),
    undefined,
    'other tags and longer words do not count',
  );
});

t.test('every byte that ends an HTML tag name ends a marker', async (t) => {
  for (const tag of ['script', 'html', 'svg', 'iframe', 'object', 'embed', 'body']) {
    for (const end of [' ', '\t', '\n', '\f', '\r', '>', '/']) {
      t.ok(markupIn(Buffer.from(`x<${tag}${end}onload=alert(1)>`), [3]), `<${tag}${JSON.stringify(end)}`);
    }
  }
  t.equal(markupIn(Buffer.from('x<svgx '), [3]), undefined, 'a longer tag name is another tag');
});

t.test('markup scan over 4 MB of random bytes without "<" finds nothing', async (t) => {
  const data = Buffer.from(crypto.randomBytes(4 << 20).map((b) => (b === 0x3c ? 0x3d : b)));
  t.equal(markupIn(data, [65536]), undefined);
});

t.test('PDF action names across every split point', async (t) => {
  const data = pdf({ objects: ['<< /Type /Action /S /J#61vaScript /JS (app.alert(1)) >>'] });
  for (let split = 1; split < data.length; split += 1) {
    const names = await pdfNames(data, split);
    if (names.join() !== 'JavaScript,JS') {
      t.fail(`split at ${split}: ${names.join()}`);
      return;
    }
  }
  t.pass('found at every split');
});

t.test('long names are found in the raw bytes too, split anywhere', async (t) => {
  const data = pdf({ binaryStream: Buffer.from('xx /OpenAction yy endstrea /Launch', 'latin1') });
  for (let split = 1; split < data.length; split += 1) {
    const names = await pdfNames(data, split);
    if (names.sort().join() !== 'Launch,OpenAction') {
      t.fail(`split at ${split}: ${names.join()}`);
      return;
    }
  }
  t.pass('found at every split');
});

t.test('short names in stream data, strings and comments are not names', async (t) => {
  const noise = Buffer.from('/JS /AA endstrea /JS', 'latin1');
  const data = pdf({
    binaryStream: noise,
    objects: ['<< /Title (/JS \\) /JS) /Subject <2F4A53> >>\n% /JS\n'],
  });
  for (let split = 1; split < data.length; split += 3) {
    const names = await pdfNames(data, split);
    if (names.length !== 0) {
      t.fail(`split at ${split}: ${names.join()}`);
      return;
    }
  }
  t.pass('nothing found at any split');
});

t.test('object streams: inflated and lexed, or reported when they cannot be', async (t) => {
  t.same(await pdfNames(pdf({ objectStream: ['<< /S /Launch /F (x) >>'] }), 10), ['Launch']);
  t.same(
    await pdfNames(pdf({ objectStream: ['<< /S /Launch /F (x) >>'], objectStreamFilter: '' }), 10),
    ['Launch'],
    'uncompressed',
  );
  const s = new PdfScanner(NAMES, { maxObjectStream: 16, maxInflated: 1 << 20 });
  s.feed(pdf({ objectStream: ['<< /A (' + 'x'.repeat(200) + ') >>'] }));
  t.match(await s.finish(), { names: [], uninspectable: /larger than the inspection limit/ });
  const s2 = new PdfScanner(NAMES, limits);
  s2.feed(pdf({ objectStream: ['<< /A 1 >>'], objectStreamFilter: '5 0 R' }));
  t.match(await s2.finish(), { uninspectable: /unsupported filter/ }, 'an indirect filter');
  const s3 = new PdfScanner(NAMES, { maxObjectStream: 1 << 20, maxInflated: 64 });
  s3.feed(pdf({ objectStream: ['<< /A (' + 'y'.repeat(5000) + ') >>'] }));
  t.match(await s3.finish(), { uninspectable: /does not inflate within/ }, 'an inflation bomb');
});
