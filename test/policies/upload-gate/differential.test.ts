/**
 * Parser differentials on the upload route, over real TCP against the real mock: each case of
 * test/integration/body-differential.test.ts sent to /api/receipts/upload (shipped
 * gateway.yaml). The gate re-serialises the body it forwards, so a case is harmless when the
 * upstream reads exactly the fields and files the gate judged; the others are refused as a
 * malformed upload (400 upload_rejected) and never reach the mock.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { startHarness, type Harness } from '../../helpers/harness.js';
import { rawExchange, head } from '../../helpers/raw-http.js';
import { png } from '../../fixtures/uploads/generate.js';
import { tempSpoolDir } from './multipart.js';

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

const XSS = '<script>alert(1)</script>';
const PNG = png().toString('latin1');
const part = (disposition: string, value: string, extra = ''): string =>
  `--XB\r\nContent-Disposition: ${disposition}\r\n${extra}\r\n${value}\r\n`;
const FILE = part('form-data; name="file"; filename="r.png"', PNG, 'Content-Type: image/png\r\n');
const END = '--XB--\r\n';

interface Sent {
  readonly status: number;
  readonly json: Record<string, unknown> | undefined;
  readonly requestId: string | undefined;
  readonly marker: string;
}

/** POST a multipart body (latin1 string, sent byte for byte) to the upload route. */
async function upload(body: string): Promise<Sent> {
  const marker = `probe-${randomUUID()}`;
  const x = await rawExchange(
    h.url,
    head(`POST /api/receipts/upload?m=${marker} HTTP/1.1`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Content-Type', 'multipart/form-data; boundary=XB'],
      ['Content-Length', String(Buffer.byteLength(body, 'latin1'))],
    ]) + body,
    { responses: 1 },
  );
  const r = x.responses[0];
  return { status: r?.status ?? 0, json: r?.json, requestId: r?.headers['x-request-id'], marker };
}

async function rejections(reason: string): Promise<number> {
  const m = await (await fetch(`${h.adminUrl}/metrics`)).text();
  const line = m.split('\n').find((l) => l.startsWith(`gateway_upload_rejections_total{reason="${reason}"}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

/** 400 upload_rejected with this check and reason; audited; counted; the mock never saw it. */
async function refused(t: Test, body: string, check: string, reason: string): Promise<void> {
  const before = await rejections(check);
  const r = await upload(body);
  t.equal(r.status, 400, 'status');
  t.equal(r.json?.error, 'upload_rejected', 'error code');
  t.equal(r.json?.request_id, r.requestId, 'request id');
  const line = (await h.audit()).find((a) => a.request_id === r.requestId);
  t.equal(line?.event, 'upload_rejected', 'audit event');
  t.match(line, { decision: 'deny', status: 400, detail: { check, reason } }, 'audit detail');
  t.equal(await rejections(check), before + 1, `gateway_upload_rejections_total{reason="${check}"}`);
  t.notOk(
    (await h.mockRequests()).some((s) => s.path.includes(r.marker)),
    'the upstream never saw the request',
  );
}

/** Length of the body the gate forwards for these text fields and one r.png file. */
function forwardedLength(fields: [string, string][]): number {
  const b = `----receipt-gateway-${'0'.repeat(32)}`;
  let s = '';
  for (const [n, v] of fields) s += `--${b}\r\nContent-Disposition: form-data; name="${n}"\r\n\r\n${v}\r\n`;
  s += `--${b}\r\nContent-Disposition: form-data; name="file"; filename="r.png"\r\nContent-Type: image/png\r\n\r\n`;
  return Buffer.byteLength(s, 'utf8') + PNG.length + 2 + Buffer.byteLength(`--${b}--\r\n`);
}

/** 201 from the service, which received exactly the re-serialised fields and the one file. */
async function forwarded(t: Test, body: string, fields: [string, string][]): Promise<void> {
  const r = await upload(body);
  t.equal(r.status, 201, 'the service stored it');
  const seen = (await h.mockRequests()).find((s) => s.path.includes(r.marker));
  t.same(
    seen?.parts?.map((p) => [p.field, p.filename, p.size]),
    [['file', 'r.png', PNG.length]],
    'one file part, as judged',
  );
  t.equal(seen?.body_size, forwardedLength(fields), 'the text fields as the gate judged them, nothing else');
  t.equal(seen?.headers['content-transfer-encoding'], undefined);
}

t.test('refused as a malformed or over-count upload, never forwarded', async (t) => {
  const cases: [string, string, string, string][] = [
    [
      'more parts than the gate reads, an attack in the last',
      Array.from({ length: 1000 }, (_, i) => part(`form-data; name="f${i}"`, 'v')).join('') +
        part('form-data; name="merchant"', XSS) +
        FILE +
        END,
      'count',
      'too_many_fields',
    ],
    [
      'lines ending in a bare LF',
      `--XB\nContent-Disposition: form-data; name="merchant"\n\n${XSS}\n--XB\nContent-Disposition: form-data; name="file"; filename="r.png"\nContent-Type: image/png\n\n${PNG}\n--XB--\n`,
      'malformed',
      'truncated',
    ],
    ['no closing delimiter', part('form-data; name="merchant"', 'Shop') + FILE, 'malformed', 'truncated'],
    [
      'a base64 file part',
      part(
        'form-data; name="file"; filename="r.png"',
        png().toString('base64'),
        'Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n',
      ) + END,
      'malformed',
      'transfer_encoding',
    ],
    [
      'a text field in a charset the gate cannot decode (ISO-2022-JP)',
      part(
        'form-data; name="merchant"',
        '<scr\x1b(Bipt>alert(1)</scr\x1b(Bipt>',
        'Content-Type: text/plain; charset=iso-2022-jp\r\n',
      ) +
        FILE +
        END,
      'malformed',
      'charset',
    ],
    [
      'a text field in a charset the gate cannot decode (ISO-8859-15)',
      part('form-data; name="merchant"', 'Caf\xe9', 'Content-Type: text/plain; charset=iso-8859-15\r\n') +
        FILE +
        END,
      'malformed',
      'charset',
    ],
  ];
  for (const [name, body, check, reason] of cases) await t.test(name, (t) => refused(t, body, check, reason));
});

t.test('harmless by construction: the upstream reads only what the gate judged', async (t) => {
  const b64 = Buffer.from(XSS).toString('base64');
  const cases: [string, string, [string, string][]][] = [
    [
      'a part with another disposition than form-data: dropped',
      part('inline; name="merchant"', XSS) + FILE + END,
      [],
    ],
    [
      'a base64 text field: its encoded text, judged and forwarded as such, without the header',
      part('form-data; name="merchant"', b64, 'Content-Transfer-Encoding: base64\r\n') + FILE + END,
      [['merchant', b64]],
    ],
    [
      'a quoted-printable text field: likewise',
      part(
        'form-data; name="merchant"',
        '=3Cscript=3Ealert(1)=3C/script=3E',
        'Content-Transfer-Encoding: quoted-printable\r\n',
      ) +
        FILE +
        END,
      [['merchant', '=3Cscript=3Ealert(1)=3C/script=3E']],
    ],
    [
      'the name parameter twice: the first, alone',
      part('form-data; name="merchant"; name="notes"', 'Shop') + FILE + END,
      [['merchant', 'Shop']],
    ],
    [
      'Content-Disposition twice: the first, alone',
      part('form-data; name="notes"', 'Shop', 'Content-Disposition: form-data; name="merchant"\r\n') +
        FILE +
        END,
      [['notes', 'Shop']],
    ],
    [
      'a Content-Disposition inside another header: not forwarded',
      `--XB\r\nX-Note: content-disposition: form-data; name="notes"\r\nContent-Disposition: form-data; name="merchant"\r\n\r\nShop\r\n` +
        FILE +
        END,
      [['merchant', 'Shop']],
    ],
    [
      'a UTF-16LE text field: decoded, judged and forwarded as UTF-8',
      part(
        'form-data; name="merchant"',
        Buffer.from('Shop', 'utf16le').toString('latin1'),
        'Content-Type: text/plain; charset=utf-16le\r\n',
      ) +
        FILE +
        END,
      [['merchant', 'Shop']],
    ],
  ];
  for (const [name, body, fields] of cases) await t.test(name, (t) => forwarded(t, body, fields));

  await t.test('a UTF-16LE attack is judged decoded', async (t) => {
    const r = await upload(
      part(
        'form-data; name="merchant"',
        Buffer.from(XSS, 'utf16le').toString('latin1'),
        'Content-Type: text/plain; charset=utf-16le\r\n',
      ) +
        FILE +
        END,
    );
    t.equal(r.status, 403);
    t.equal(r.json?.error, 'request_blocked');
    t.notOk(
      (await h.mockRequests()).some((s) => s.path.includes(r.marker)),
      'never forwarded',
    );
  });

  await t.test('filename* beside filename: only the sanitized filename* is forwarded', async (t) => {
    const r = await upload(
      part(
        `form-data; name="file"; filename="a.png"; filename*=UTF-8''%3Cb%3E.png`,
        PNG,
        'Content-Type: image/png\r\n',
      ) + END,
    );
    t.equal(r.status, 201);
    const seen = (await h.mockRequests()).find((s) => s.path.includes(r.marker));
    t.same(
      seen?.parts?.map((p) => p.filename),
      ['_b_.png'],
    );
  });
});
