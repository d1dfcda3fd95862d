import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { startHarness, type Harness } from '../helpers/harness.js';
import { rawExchange, head } from '../helpers/raw-http.js';

/**
 * Parser differentials in request bodies, over real TCP against the real mock: the gateway
 * must judge the body as the service's parser will read it. A multipart/form-data body that
 * two parsers could read differently is refused (403 request_blocked, rule
 * `body-parse-error`) and never forwarded; a well-formed one is judged field by field.
 */

let h: Harness;
let token: string;

t.before(async () => {
  h = await startHarness();
  token = await h.login('alice');
});
t.teardown(() => h.close());

const XSS = '<script>alert(1)</script>';

interface Sent {
  readonly status: number;
  readonly json: Record<string, unknown> | undefined;
  readonly requestId: string | undefined;
  readonly marker: string;
}

/** POST a multipart body (latin1 string, sent byte for byte) to /api/receipts. */
async function postMultipart(body: string, boundary = 'XB'): Promise<Sent> {
  const marker = `probe-${randomUUID()}`;
  const x = await rawExchange(
    h.url,
    head(`POST /api/receipts?m=${marker} HTTP/1.1`, [
      ['Host', 'x'],
      ['Authorization', `Bearer ${token}`],
      ['Content-Type', `multipart/form-data; boundary=${boundary}`],
      ['Content-Length', String(Buffer.byteLength(body, 'latin1'))],
    ]) + body,
    { responses: 1 },
  );
  const r = x.responses[0];
  return {
    status: r?.status ?? 0,
    json: r?.json,
    requestId: r?.headers['x-request-id'],
    marker,
  };
}

const part = (disposition: string, value: string, extra = ''): string =>
  `--XB\r\nContent-Disposition: ${disposition}\r\n${extra}\r\n${value}\r\n`;
const END = '--XB--\r\n';
/** A string's UTF-8 bytes as a latin1 string (what postMultipart sends byte for byte). */
const utf8 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

async function blockedCount(reason: string): Promise<number> {
  const m = await (await fetch(`${h.adminUrl}/metrics`)).text();
  const line = m.split('\n').find((l) => l.startsWith(`gateway_blocked_requests_total{reason="${reason}"}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

/** 403 request_blocked with these rule ids on the audit line; the mock never saw the request. */
async function refused(t: Test, r: Sent, ruleIds: string[], reason: string): Promise<void> {
  t.equal(r.status, 403, 'status');
  t.same(r.json, { error: 'request_blocked', message: r.json?.message, request_id: r.requestId }, 'body');
  const line = (await h.audit()).find((a) => a.request_id === r.requestId);
  t.equal(line?.event, 'request_blocked', 'audit event');
  t.equal(line?.reason, reason, 'audit reason');
  t.same(line?.rule_ids, ruleIds, 'audit rule ids');
  t.equal(line?.status, 403, 'audit status');
  const seen = await h.mockRequests();
  t.notOk(
    seen.some((s) => s.path.includes(r.marker)),
    'the upstream never saw the request',
  );
}

const AMBIGUOUS: [string, string][] = [
  [
    'more parts than the parser reads (1,000), an attack in the next one',
    Array.from({ length: 1000 }, (_, i) => part(`form-data; name="f${i}"`, 'v')).join('') +
      part('form-data; name="merchant"', XSS) +
      END,
  ],
  ['a part with another disposition than form-data', part('inline; name="merchant"', XSS) + END],
  [
    'a base64 Content-Transfer-Encoding (decoded by some parsers)',
    part(
      'form-data; name="merchant"',
      Buffer.from(XSS).toString('base64'),
      'Content-Transfer-Encoding: base64\r\n',
    ) + END,
  ],
  [
    'a quoted-printable Content-Transfer-Encoding',
    part(
      'form-data; name="merchant"',
      '=3Cscript=3Ealert(1)=3C/script=3E',
      'Content-Transfer-Encoding: quoted-printable\r\n',
    ) + END,
  ],
  [
    'lines ending in a bare LF (some parsers accept them)',
    `--XB\nContent-Disposition: form-data; name="merchant"\n\n${XSS}\n--XB--\n`,
  ],
  [
    'the name parameter given twice (busboy takes the first, others the last)',
    part('form-data; name="merchant"; name="notes"', 'Shop') + END,
  ],
  [
    'a part charset under which ASCII bytes change meaning (ISO-2022-JP escapes)',
    part(
      'form-data; name="merchant"',
      '<scr\x1b(Bipt>alert(1)</scr\x1b(Bipt>',
      'Content-Type: text/plain; charset=iso-2022-jp\r\n',
    ) + END,
  ],
  ['no closing delimiter (a truncated body)', part('form-data; name="merchant"', 'Shop')],
  [
    'Content-Disposition given twice',
    part('form-data; name="notes"', 'Shop', 'Content-Disposition: form-data; name="merchant"\r\n') + END,
  ],
];

t.test('multipart bodies that parsers read differently: refused, never forwarded', async (t) => {
  for (const [name, body] of AMBIGUOUS) {
    await t.test(name, async (t) => {
      const before = await blockedCount('protocol');
      await refused(t, await postMultipart(body), ['body-parse-error'], 'protocol');
      t.equal(
        await blockedCount('protocol'),
        before + 1,
        'gateway_blocked_requests_total{reason="protocol"}',
      );
    });
  }
});

t.test('a Content-Disposition named inside another header does not rename the field', async (t) => {
  // The field is "merchant" for the service: judged as such, not with the relaxed threshold
  // of the free-text field "notes" that the other header's value names.
  const sqli = "' OR 1=1--";
  const r = await postMultipart(
    `--XB\r\nX-Note: content-disposition: form-data; name="notes"\r\nContent-Disposition: form-data; name="merchant"\r\n\r\n${sqli}\r\n${END}`,
  );
  t.equal(r.status, 403);
  const line = (await h.audit()).find((a) => a.request_id === r.requestId);
  t.equal(line?.event, 'request_blocked');
  t.equal(line?.reason, 'sqli');
  t.notOk(
    (await h.mockRequests()).some((s) => s.path.includes(r.marker)),
    'never forwarded',
  );
});

t.test('a file name given only as filename* (RFC 8187) is inspected as the file name', async (t) => {
  const r = await postMultipart(
    part(`form-data; name="f"; filename*=UTF-8''%3Cscript%3Ealert%281%29%3C%2Fscript%3E.png`, 'x') + END,
  );
  t.equal(r.status, 403);
  const line = (await h.audit()).find((a) => a.request_id === r.requestId);
  t.equal(line?.event, 'request_blocked');
  t.equal(line?.reason, 'xss');
  t.notOk(
    (await h.mockRequests()).some((s) => s.path.includes(r.marker)),
    'never forwarded',
  );
});

t.test('well-formed multipart bodies are forwarded as sent (control)', async (t) => {
  const bodies: [string, string][] = [
    [
      'a browser form with a preamble and an epilogue',
      `preamble\r\n${part('form-data; name="merchant"', utf8('Café Zoë'))}${part('form-data; name="notes"', 'team lunch')}${END}epilogue`,
    ],
    [
      'a UTF-8 file name, a part Content-Type',
      part(
        `form-data; name="file"; filename="${utf8('东京.pdf')}"`,
        '%PDF-1.4',
        'Content-Type: application/pdf\r\n',
      ) + END,
    ],
    [
      'filename* beside a plain filename',
      part(`form-data; name="f"; filename="receipt.pdf"; filename*=UTF-8''re%C3%A7u.pdf`, 'x') + END,
    ],
    [
      '8bit transfer encoding, a latin1 charset, an empty part',
      part(
        'form-data; name="merchant"',
        'Shop',
        'Content-Transfer-Encoding: 8bit\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n',
      ) +
        part('form-data; name="empty"', '') +
        END,
    ],
  ];
  for (const [name, body] of bodies) {
    await t.test(name, async (t) => {
      const r = await postMultipart(body);
      // the mock's receipt handler wants JSON: its own 400 proves the body reached it
      t.equal(r.status, 400, 'the service answered');
      t.equal(r.json?.error, 'bad_request');
      const seen = (await h.mockRequests()).find((s) => s.path.includes(r.marker));
      t.equal(seen?.body_size, Buffer.byteLength(body, 'latin1'), 'forwarded whole');
    });
  }
});
