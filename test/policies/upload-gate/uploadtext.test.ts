/**
 * The upload route's text fields, over real TCP (shipped gateway.yaml, real mock): the
 * evasions the buffered multipart parser (`gateway/body.ts`) refuses or sees through on other
 * routes, sent beside one genuine PNG.
 *
 * - a `_charset_` field naming UTF-7 or UTF-16 (RFC 7578 §4.6: the charset of the other
 *   fields) was forwarded: a service honouring it reads `+ACc- OR 1+AD0-1 --` as
 *   `' OR 1=1 --`, which the gate judged as harmless ASCII. Now refused as on other routes.
 *
 * The rest pins what already holds: an empty file name is a text field judged as one, a
 * part whose disposition busboy cannot read is dropped, a JSON-typed part is refused, and a
 * genuine upload with ordinary text fields is forwarded byte for byte as the gate writes it.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { startHarness, metricsText, metricValue, type Harness } from '../../helpers/harness.js';
import { rawExchange, head } from '../../helpers/raw-http.js';
import { png } from '../../fixtures/uploads/generate.js';
import { uploadGate } from '../../../policies/upload-gate/index.js';
import { compilePolicy } from '../../helpers/context.js';
import { parseBody } from '../../../gateway/body.js';
import { multipart, readForward, runGate, tempSpoolDir } from './multipart.js';

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

/** One part, its Content-Disposition written verbatim (latin1 bytes). */
const part = (disposition: string, data: string | Buffer, type?: string): Buffer =>
  Buffer.concat([
    Buffer.from(
      `--XB\r\nContent-Disposition: ${disposition}\r\n${type === undefined ? '' : `Content-Type: ${type}\r\n`}\r\n`,
      'latin1',
    ),
    Buffer.from(data),
    Buffer.from('\r\n', 'latin1'),
  ]);
const field = (name: string, value: string) => part(`form-data; name="${name}"`, value);
const FILE = part('form-data; name="file"; filename="r.png"', PNG, 'image/png');
const END = Buffer.from('--XB--\r\n', 'latin1');

interface Sent {
  readonly status: number;
  readonly json: Record<string, unknown> | undefined;
  readonly requestId: string | undefined;
  readonly marker: string;
}

async function upload(...parts: Buffer[]): Promise<Sent> {
  const marker = `text-${randomUUID()}`;
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

const reached = async (r: Sent) => (await h.mockRequests()).some((s) => s.path.includes(r.marker));
const auditOf = async (r: Sent) => (await h.audit()).find((a) => a.request_id === r.requestId);

async function stored(t: Test, r: Sent): Promise<void> {
  t.equal(r.status, 201, 'stored');
  t.ok(await reached(r), 'forwarded');
}

t.test('a _charset_ field naming a charset that is not ASCII-safe is refused', async (t) => {
  const malformed = () =>
    metricsText(h).then((m) => metricValue(m, 'gateway_upload_rejections_total', { reason: 'malformed' }));
  const before = await malformed();
  const cases: [string, Buffer[]][] = [
    // UTF-7 for `' OR 1=1 --` and `; cat /etc/passwd`: plain letters and digits as ASCII
    [
      'UTF-7 before the field',
      [field('_charset_', 'UTF-7'), field('merchant', '+ACcAIABPAFIAIAAxAD0AMQAgAC0ALQ-')],
    ],
    [
      'UTF-7 after the field',
      [field('merchant', '+ADsAIABjAGEAdAAgAC8AZQB0AGMALwBwAGEAcwBzAHcAZA-'), field('_charset_', 'utf-7')],
    ],
    ['UTF-16, name in capitals', [field('_CHARSET_', ' UTF-16 '), field('merchant', 'x')]],
  ];
  for (const [name, parts] of cases) {
    await t.test(name, async (t) => {
      const r = await upload(...parts, FILE);
      t.equal(r.status, 400, 'status');
      t.same(
        { error: r.json?.error, message: r.json?.message },
        {
          error: 'upload_rejected',
          message:
            'Upload rejected (malformed body check): the _charset_ field names a charset that is not supported.',
        },
        'names the check',
      );
      const field = name.includes('capitals') ? '_CHARSET_' : '_charset_';
      t.match(
        await auditOf(r),
        {
          event: 'upload_rejected',
          decision: 'deny',
          status: 400,
          detail: { check: 'malformed', reason: 'charset', field },
        },
        'audited',
      );
      t.notOk(await reached(r), 'the upstream never saw it');
    });
  }
  t.equal(await malformed(), before + 3, 'counted under reason="malformed"');
  // the buffered parser (other routes) agrees
  const body = Buffer.concat([field('_charset_', 'UTF-7'), field('merchant', 'x'), END]);
  t.equal(
    parseBody('multipart/form-data', body, 'multipart/form-data; boundary=XB').parseError,
    'multipart _charset_ field with a charset not supported',
  );
});

t.test('a _charset_ field naming an ASCII-safe charset passes', async (t) => {
  for (const cs of ['UTF-8', 'iso-8859-1', 'windows-1252']) {
    const r = await upload(field('_charset_', cs), field('merchant', "Trader Joe's"), FILE);
    await t.test(cs, (t) => stored(t, r));
  }
});

t.test('evasive text parts are judged (or dropped) as on other routes', async (t) => {
  await t.test('an empty file name is a text field, judged', async (t) => {
    for (const disp of ['form-data; name="merchant"; filename=""', 'form-data; name="merchant"']) {
      const r = await upload(part(disp, '../../etc/passwd'), FILE);
      t.equal(r.status, 403, `${disp}: blocked`);
      t.match(await auditOf(r), {
        event: 'request_blocked',
        detail: { matches: [{ target: 'multipart:merchant' }] },
      });
      t.notOk(await reached(r), 'the upstream never saw it');
    }
  });
  await t.test(
    'an empty filename* is a disposition busboy cannot read: the part is not forwarded',
    async (t) => {
      const r = await upload(
        part('form-data; name="merchant"; filename*=UTF-8\'\'', '; cat /etc/passwd'),
        FILE,
      );
      await stored(t, r);
      const { ctx, verdict } = await runGate(
        await compilePolicy(uploadGate, { enabled: true, spool_dir: spool }),
        multipart([
          { disposition: 'form-data; name="merchant"; filename*=UTF-8\'\'', data: '; cat /etc/passwd' },
          { name: 'file', filename: 'r.png', type: 'image/png', data: PNG },
        ]),
      );
      t.equal(verdict, undefined);
      t.notOk((await readForward(ctx)).includes('cat /etc/passwd'), 'dropped from the forwarded body');
    },
  );
  await t.test('a part declared as JSON is refused', async (t) => {
    const r = await upload(
      part('form-data; name="meta"', '{"merchant":"\\u002e\\u002e\\u002fetc/passwd"}', 'application/json'),
      FILE,
    );
    t.equal(r.status, 400);
    t.match(await auditOf(r), {
      event: 'upload_rejected',
      detail: { check: 'filename', reason: 'missing_filename' },
    });
    t.notOk(await reached(r), 'the upstream never saw it');
  });
});

t.test('a genuine upload with ordinary text fields is forwarded byte for byte', async (t) => {
  const fields: [string, string][] = [
    ['merchant', "Trader Joe's & Sons"],
    ['notes', "Bob's lunch & coffee, 2 × 3,50 € — paid cash"],
    ['_charset_', 'UTF-8'],
  ];
  const r = await upload(...fields.map(([k, v]) => field(k, v)), FILE);
  await stored(t, r);
  const { ctx, verdict } = await runGate(
    await compilePolicy(uploadGate, { enabled: true, spool_dir: spool }),
    multipart([
      ...fields.map(([name, data]) => ({ name, data })),
      { name: 'file', filename: 'r.png', type: 'image/png', data: PNG },
    ]),
  );
  t.equal(verdict, undefined);
  t.same(ctx.body?.fields, fields, 'judged as sent');
  const boundary = /boundary=(.+)$/.exec(ctx.forwardBody!.contentType)![1]!;
  const expected = Buffer.concat([
    ...fields.map(([k, v]) =>
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`),
    ),
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="r.png"\r\nContent-Type: image/png\r\n\r\n`,
    ),
    PNG,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  t.ok((await readForward(ctx)).equals(expected), 'the forwarded body');
});
