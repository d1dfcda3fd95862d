import t, { type Test } from 'tap';
import { startFileHarness, mark, mockSaw, auditOf, metricsText, metricValue } from '../helpers/harness.js';
import { rawExchange, head } from '../helpers/raw-http.js';

/**
 * Request-body inspection evasion, found by an adversarial audit: an attack framed or
 * encoded so that the service still decodes it must be judged in its decoded form or refused
 * (403 request_blocked), and never reach the upstream. Over real TCP against the real mock,
 * with the shipped gateway.yaml routes.
 */

const { h, token } = await startFileHarness(t);

interface Sent {
  readonly status: number;
  readonly json: Record<string, unknown> | undefined;
  readonly requestId: string | undefined;
  readonly marker: string;
}

/** POST `body` (a Buffer, sent byte for byte) to /api/receipts with this Content-Type. */
async function post(contentType: string, body: Buffer): Promise<Sent> {
  const marker = mark();
  const x = await rawExchange(
    h.url,
    Buffer.concat([
      Buffer.from(
        head(`POST /api/receipts?m=${marker} HTTP/1.1`, [
          ['Host', 'x'],
          ['Authorization', `Bearer ${token}`],
          ['Content-Type', contentType],
          ['Content-Length', String(body.length)],
        ]),
        'latin1',
      ),
      body,
    ]).toString('latin1'),
    { responses: 1 },
  );
  const r = x.responses[0];
  return { status: r?.status ?? 0, json: r?.json, requestId: r?.headers['x-request-id'], marker };
}

const FORM = 'application/x-www-form-urlencoded';
const MULTIPART = 'multipart/form-data; boundary=XB';
const part = (name: string, value: Buffer | string, extra = ''): Buffer =>
  Buffer.concat([
    Buffer.from(`--XB\r\nContent-Disposition: form-data; name="${name}"\r\n${extra}\r\n`, 'latin1'),
    typeof value === 'string' ? Buffer.from(value, 'utf8') : value,
    Buffer.from('\r\n', 'latin1'),
  ]);
const multipart = (...parts: Buffer[]): Buffer => Buffer.concat([...parts, Buffer.from('--XB--\r\n')]);

/** 403 request_blocked with these rules and reason, audited and counted; the mock never saw it. */
async function refused(t: Test, send: () => Promise<Sent>, ruleIds: string[], reason: string): Promise<void> {
  const before = metricValue(await metricsText(h), 'gateway_blocked_requests_total', { reason });
  const r = await send();
  t.equal(r.status, 403, 'status');
  t.same(r.json, { error: 'request_blocked', message: r.json?.message, request_id: r.requestId }, 'body');
  const line = (await auditOf(h, r.requestId)).find((l) => l.event === 'request_blocked');
  t.equal(line?.reason, reason, 'audit reason');
  t.same(line?.rule_ids, ruleIds, 'audit rule ids');
  t.equal(line?.status, 403, 'audit status');
  t.equal(
    metricValue(await metricsText(h), 'gateway_blocked_requests_total', { reason }),
    before + 1,
    `gateway_blocked_requests_total{reason="${reason}"}`,
  );
  t.notOk(await mockSaw(h, r.marker), 'the upstream never saw the request');
}

/** Not refused by the gateway: the mock received it (its own 400: it wants JSON). */
async function forwarded(t: Test, send: () => Promise<Sent>): Promise<void> {
  const r = await send();
  t.equal(r.status, 400, 'the service answered');
  t.equal(r.json?.error, 'bad_request');
  t.ok(await mockSaw(h, r.marker), 'forwarded');
}

// `../../etc/passwd` with every `.` and `/` as an overlong two-byte UTF-8 form (C0 AE, C0 AF):
// what a lenient UTF-8 decoder makes of it. The same value in the query is refused.
const OVERLONG_ESCAPED = '%C0%AE%C0%AE%C0%AF%C0%AE%C0%AE%C0%AFetc%C0%AFpasswd';
const OVERLONG_RAW = Buffer.from(
  [0xc0, 0xae, 0xc0, 0xae, 0xc0, 0xaf, 0xc0, 0xae, 0xc0, 0xae, 0xc0, 0xaf]
    .map((b) => String.fromCharCode(b))
    .join('') + 'etc\xc0\xafpasswd',
  'latin1',
);

t.test('overlong UTF-8 in form and multipart fields is judged as it decodes', async (t) => {
  await t.test('control: the same value in the query string is refused', async (t) => {
    const marker = mark();
    const r = await fetch(`${h.url}/api/receipts?m=${marker}&file=${OVERLONG_ESCAPED}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    t.equal(r.status, 403);
    t.notOk(await mockSaw(h, marker));
  });
  await t.test('percent-escaped in a urlencoded form', (t) =>
    refused(
      t,
      () => post(FORM, Buffer.from(`merchant=${OVERLONG_ESCAPED}`)),
      ['lfi-100', 'lfi-110'],
      'path_traversal',
    ),
  );
  await t.test('raw bytes in a urlencoded form', (t) =>
    refused(
      t,
      () => post(FORM, Buffer.concat([Buffer.from('merchant='), OVERLONG_RAW])),
      ['lfi-100', 'lfi-110'],
      'path_traversal',
    ),
  );
  await t.test('raw bytes in a multipart text field', (t) =>
    refused(
      t,
      () => post(MULTIPART, multipart(part('merchant', OVERLONG_RAW))),
      ['lfi-100', 'lfi-110'],
      'path_traversal',
    ),
  );
  await t.test('control: Latin-1 bytes and UTF-8 in forms still pass', async (t) => {
    await forwarded(t, () => post(FORM, Buffer.from('merchant=Caf%E9+Zo%C3%AB&notes=Caf\xe9', 'latin1')));
    await forwarded(t, () => post(MULTIPART, multipart(part('merchant', Buffer.from('Caf\xe9', 'latin1')))));
  });
});

// `; cat /etc/passwd` with `;`, `.` and `/` in UTF-7 (`+ADs-` is `;`): ASCII for the gateway,
// the attack for a parser that honours `_charset_` (RFC 7578 §4.6).
const UTF7 = '+ADs- cat +AC8-etc+AC8-passwd';

t.test('a _charset_ field naming a charset under which ASCII changes meaning is refused', async (t) => {
  await t.test('multipart, UTF-7', (t) =>
    refused(
      t,
      () => post(MULTIPART, multipart(part('_charset_', 'UTF-7'), part('merchant', UTF7))),
      ['body-parse-error'],
      'protocol',
    ),
  );
  await t.test('multipart, after the field it governs', (t) =>
    refused(
      t,
      () => post(MULTIPART, multipart(part('merchant', UTF7), part('_charset_', 'utf-7'))),
      ['body-parse-error'],
      'protocol',
    ),
  );
  await t.test('urlencoded form, UTF-7', (t) =>
    refused(
      t,
      () => post(FORM, Buffer.from(`_charset_=utf-7&merchant=${encodeURIComponent(UTF7)}`)),
      ['body-parse-error'],
      'protocol',
    ),
  );
  await t.test('control: _charset_=UTF-8 (what browsers send) passes', async (t) => {
    await forwarded(t, () =>
      post(MULTIPART, multipart(part('_charset_', 'UTF-8'), part('merchant', 'Shop'))),
    );
    await forwarded(t, () => post(FORM, Buffer.from('_charset_=UTF-8&merchant=Shop')));
  });
});

/** `{"merchant": value}` with every character that an attack needs as a JSON `\u` escape. */
const escapedJson = (value: string): string =>
  JSON.stringify({ merchant: value, total: 1, date: '2024-01-01' }).replace(
    /[<>'./;=]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );

t.test('a JSON body labelled as a form is judged as JSON (the service parses it so)', async (t) => {
  const cases: [string, string, string[], string][] = [
    ['path traversal', '../../etc/passwd', ['lfi-100', 'lfi-110'], 'path_traversal'],
    ['command injection', '; cat /etc/passwd', ['lfi-110', 'rce-100'], 'path_traversal'],
    ['SQL injection', "' OR 1=1 --", ['sqli-100'], 'sqli'],
  ];
  for (const [name, attack, rules, reason] of cases)
    await t.test(name, (t) => refused(t, () => post(FORM, Buffer.from(escapedJson(attack))), rules, reason));
  await t.test('duplicate member names: refused as in a JSON body', (t) =>
    refused(
      t,
      () => post(FORM, Buffer.from('{"merchant":"Shop","merchant":"Other"}')),
      ['body-parse-error'],
      'protocol',
    ),
  );
  await t.test('control: a benign receipt so labelled is forwarded and stored', async (t) => {
    const r = await post(FORM, Buffer.from(escapedJson('Caf\u00e9 Zo\u00eb')));
    t.equal(r.status, 201, 'the service stored it');
    t.equal(r.json?.merchant, 'Café Zoë');
    t.ok(await mockSaw(h, r.marker));
  });
});

t.test('a multipart part declared as JSON is judged as JSON (its escapes decoded)', async (t) => {
  const JSON_PART = 'Content-Type: application/json\r\n';
  await t.test('path traversal in \\u escapes', (t) =>
    refused(
      t,
      () => post(MULTIPART, multipart(part('meta', escapedJson('../../etc/passwd'), JSON_PART))),
      ['lfi-100', 'lfi-110'],
      'path_traversal',
    ),
  );
  await t.test('a JSON part that does not parse', (t) =>
    refused(
      t,
      () => post(MULTIPART, multipart(part('meta', '{"merchant":"Shop"', JSON_PART))),
      ['body-parse-error'],
      'protocol',
    ),
  );
  await t.test('duplicate member names in a JSON part', (t) =>
    refused(
      t,
      () => post(MULTIPART, multipart(part('meta', '{"merchant":"Shop","merchant":"Other"}', JSON_PART))),
      ['body-parse-error'],
      'protocol',
    ),
  );
  await t.test('control: a benign JSON part is forwarded', (t) =>
    forwarded(t, () =>
      post(MULTIPART, multipart(part('meta', escapedJson('Caf\u00e9 Zo\u00eb'), JSON_PART))),
    ),
  );
});

t.test('a multipart Content-Type with two boundaries is refused (parsers pick different ones)', async (t) => {
  // busboy (and the gateway) read the body by the first boundary, Werkzeug by the last
  const bodyBy = (b: string, v: string): string =>
    `--${b}\r\nContent-Disposition: form-data; name="merchant"\r\n\r\n${v}\r\n--${b}--\r\n`;
  const body = Buffer.from(bodyBy('A', 'Shop') + bodyBy('B', '../../etc/passwd'));
  await t.test('boundary twice', (t) =>
    refused(t, () => post('multipart/form-data; boundary=A; boundary=B', body), ['proto-171'], 'protocol'),
  );
  await t.test('boundary and boundary* (RFC 2231)', (t) =>
    refused(
      t,
      () => post("multipart/form-data; boundary=A; boundary*=UTF-8''B", body),
      ['proto-171'],
      'protocol',
    ),
  );
  await t.test('control: one boundary', (t) =>
    forwarded(t, () => post('multipart/form-data; boundary=A', body)),
  );
});

t.test('a multipart part with an empty file name is judged as a text value (as Go reads it)', async (t) => {
  await t.test('filename=""', (t) =>
    refused(
      t,
      () => post(MULTIPART, multipart(part('merchant"; filename="', '../../etc/passwd'))),
      ['lfi-100', 'lfi-110'],
      'path_traversal',
    ),
  );
  await t.test("filename*=UTF-8''", (t) =>
    refused(
      t,
      () => post(MULTIPART, multipart(part(`merchant"; filename*="UTF-8''`, "' OR 1=1 --"))),
      ['sqli-100'],
      'sqli',
    ),
  );
  await t.test('control: an empty file input (no file chosen) is forwarded', (t) =>
    forwarded(t, () =>
      post(MULTIPART, multipart(part('file"; filename="', '', 'Content-Type: application/octet-stream\r\n'))),
    ),
  );
});
