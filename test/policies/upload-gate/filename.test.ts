import t from 'tap';
import { sanitizeFilename, dangerousInner } from '../../../policies/upload-gate/filename.js';
import { uploadGate } from '../../../policies/upload-gate/index.js';
import { compilePolicy } from '../../helpers/context.js';
import { png } from '../../fixtures/uploads/generate.js';
import { multipart, runGate, readForward, parseMultipart, spoolsGone } from './multipart.js';

const opts = { normalization: 'NFKC' as const, maxLength: 64 };
const name = (raw: string, o = opts) => sanitizeFilename(raw, o).name;

t.test('basename only, both separators', async (t) => {
  t.equal(name('../../etc/passwd.png'), 'passwd.png');
  t.equal(name('C:\\Users\\bob\\Desktop\\receipt.png'), 'receipt.png');
  t.equal(name('/var/www/html/shell.png'), 'shell.png');
  t.equal(name('..\\..\\boot.ini.png'), 'boot.ini.png');
});

t.test('compatibility slashes are folded (NFKC) before the basename is taken', async (t) => {
  t.equal(name('..／..／etc／receipt.png'), 'receipt.png', 'fullwidth solidus');
  t.equal(name('a＼b.png'), 'b.png', 'fullwidth reverse solidus');
  t.equal(name('ｒｅｃｅｉｐｔ.ｐｎｇ'), 'receipt.png', 'fullwidth letters');
  t.equal(
    sanitizeFilename('ｒｅｃｅｉｐｔ.ｐｎｇ', { normalization: 'NFC', maxLength: 64 }).ext,
    'ｐｎｇ',
    'NFC keeps them',
  );
});

t.test('NFC: composed and decomposed forms give one name', async (t) => {
  t.equal(name('Cafe\u0301.png'), 'Café.png');
  t.equal(name('Cafe\u0301.png'), name('Caf\u00e9.png'));
});

t.test('control and format characters are removed', async (t) => {
  t.equal(name('rec\u0000eipt.png'), 'receipt.png');
  t.equal(name('line\r\nbreak.png'), 'linebreak.png');
  t.equal(name('bell\u0007\u007f\u0085.png'), 'bell.png');
  t.equal(name('invoice\u202Egnp.exe'), 'invoicegnp.exe', 'right-to-left override');
  t.equal(name('zero\u200Bwidth\uFEFF.png'), 'zerowidth.png');
});

t.test('leading dots and spaces, trailing dots and spaces', async (t) => {
  t.equal(name('.htaccess.png'), 'htaccess.png');
  t.equal(name('...hidden.png'), 'hidden.png');
  t.equal(name('  spaced  .png  '), 'spaced.png');
  t.equal(name('receipt.png.'), 'receipt.png');
  t.equal(name('.png'), 'png', 'a dot-file name has no extension left');
});

t.test('reserved characters become underscores', async (t) => {
  t.equal(name('a"b<c>d|e?f*g:h.png'), 'a_b_c_d_e_f_g_h.png');
  t.equal(name("it's $(rm -rf) `x`;.png"), 'it_s _(rm -rf) _x__.png');
});

t.test('Windows device names are defused', async (t) => {
  t.equal(name('CON.png'), '_CON.png');
  t.equal(name('lpt1.jpg'), '_lpt1.jpg');
});

t.test('length is bounded and the extension kept', async (t) => {
  const long = `${'a'.repeat(300)}.jpeg`;
  const n = name(long);
  t.equal(n.length, 64);
  t.ok(n.endsWith('.jpeg'));
  const emoji = `${'😀'.repeat(40)}.png`;
  const e = name(emoji);
  t.ok(e.length <= 64 && e.endsWith('.png'));
  t.notOk(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])/.test(e), 'no lone surrogate');
});

t.test('extensions and inner extensions', async (t) => {
  t.same(sanitizeFilename('Receipt.2024.01.JPG', opts), {
    name: 'Receipt.2024.01.JPG',
    ext: 'jpg',
    inner: ['2024', '01'],
  });
  t.same(dangerousInner(sanitizeFilename('shell.PhP.png', opts).inner), ['php']);
  t.same(dangerousInner(sanitizeFilename('a.svg.gif', opts).inner), ['svg']);
  t.same(dangerousInner(sanitizeFilename('scan.final.v2.pdf', opts).inner), []);
  // PHP handlers' other extensions (Apache's AddHandler lists, OWASP's upload cheat sheet)
  for (const e of ['php2', 'php6', 'phpt', 'phtm', 'pgif'])
    t.same(dangerousInner(sanitizeFilename(`x.${e}.png`, opts).inner), [e], e);
});

t.test('a cut that ends the stem on a dangerous extension reports it as inner', async (t) => {
  // maxLength 64, ".png": the stem keeps 60 characters, which end in ".php"
  const r = sanitizeFilename(`${'a'.repeat(56)}.php${'b'.repeat(40)}.png`, opts);
  t.equal(r.name, `${'a'.repeat(56)}.php.png`);
  t.same(dangerousInner(r.inner), ['php']);
});

t.test('nothing usable left', async (t) => {
  t.equal(name('../..'), '');
  t.equal(name('\u0000\u0001'), '');
});

t.test('the forwarded body carries the sanitized filename', async (t) => {
  const policy = await compilePolicy(uploadGate, { enabled: true, max_filename_length: 32 });
  const raw = `../../${'x'.repeat(50)}\u202E\u0007.png`;
  // control characters cannot appear raw in a header: RFC 5987 encoding carries them
  const disposition = `form-data; name="file"; filename*=UTF-8''${encodeURIComponent(raw)}`;
  const { verdict, ctx } = await runGate(
    policy,
    multipart([{ disposition, type: 'image/png', data: png() }]),
  );
  t.equal(verdict, undefined);
  const back = await parseMultipart(await readForward(ctx), ctx.forwardBody!.contentType);
  t.equal(back[0]!.filename, `${'x'.repeat(28)}.png`);
  t.same(ctx.body?.files, [{ field: 'file', filename: `${'x'.repeat(28)}.png` }]);
  await spoolsGone();
});

t.test('field names with quotes and newlines are re-encoded safely', async (t) => {
  const policy = await compilePolicy(uploadGate, { enabled: true });
  const body = multipart([
    { disposition: 'form-data; name="a%22b"', data: 'v1' },
    { name: 'file', filename: 'r.png', type: 'image/png', data: png() },
  ]);
  const { verdict, ctx } = await runGate(policy, body);
  t.equal(verdict, undefined);
  const fwd = await readForward(ctx);
  t.equal(fwd.length, ctx.forwardBody!.length);
  const back = await parseMultipart(fwd, ctx.forwardBody!.contentType);
  t.equal(back.length, 2);
  await spoolsGone();
});
