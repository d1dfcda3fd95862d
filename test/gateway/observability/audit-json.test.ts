import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { jsonString, serializeFlatLine } from '../../../gateway/observability/audit-json.js';
import {
  AUDIT_FILE_MODE,
  AUDIT_FLUSH_MS,
  AUDIT_PINO_OPTIONS,
  createAuditLog,
  redactTarget,
  type AuditLog,
} from '../../../gateway/observability/audit.js';
import { Metrics } from '../../../gateway/observability/metrics.js';
import { createContext } from '../../../gateway/context-factory.js';
import { PassThrough } from 'node:stream';

/** pino configured as the audit log is, writing into a string. */
function reference(): (line: Record<string, unknown>) => string {
  let out = '';
  const logger = pino(AUDIT_PINO_OPTIONS, {
    write(s: string) {
      out = s;
    },
  });
  return (line) => {
    logger.info(line);
    return out;
  };
}

const AWKWARD: string[] = [
  '',
  'plain',
  'say "hi"',
  'back\\slash',
  '\\"',
  'tab\there',
  'new\nline',
  'nul\u0000byte',
  'bell\u0007',
  'del\u007f',
  'ends with control\u001f',
  'line sep \u2028 and \u2029',
  'lone high \ud800 surrogate',
  'lone low \udc00 surrogate',
  'reversed pair \udc00\ud800',
  'emoji 😀 pair',
  'accents éàü ß 中文',
  'x'.repeat(99) + '"',
  'x'.repeat(100),
  'x'.repeat(100) + '"',
  'x'.repeat(101),
  '"'.repeat(150),
  '\ud800'.repeat(120),
  'x'.repeat(200) + '\n',
  '</script><script>alert(1)</script>',
  '/api/receipts/1?merchant=Whole%20Foods&password=[REDACTED]',
];

/** An ASCII-only description (a raw U+2028 or lone surrogate would garble the TAP stream). */
const show = (s: string) =>
  JSON.stringify(s).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

t.test('strings are written as pino writes them', async (t) => {
  const ref = reference();
  for (const s of AWKWARD) {
    const expected = ref({ v: s });
    t.equal(`{"log":"security_audit","v":${jsonString(s)}}\n`, expected, show(s));
    const key = ref({ [s]: 1 });
    t.equal(`{"log":"security_audit",${jsonString(s)}:1}\n`, key, `key ${show(s)}`);
  }
});

t.test('a flat line matches pino byte for byte', async (t) => {
  const ref = reference();
  const excluded = new Set(['authorization', 'headers', 'err']);
  const lines: Record<string, unknown>[] = [
    { time: '2026-01-01T00:00:00.000Z', event: 'api_access', status: 200, decision: 'allow' },
    { a: 0, b: -0, c: 1.5, d: NaN, e: Infinity, f: -Infinity, g: 1e21, h: 5e-7, i: true, j: false },
    { skipped: undefined, kept: 'x', alsoSkipped: undefined },
    Object.fromEntries(AWKWARD.map((s, i) => [`k${i}${s}`, s])),
    { 2: 'integer keys', b: 'come', 1: 'first' },
    { message: 'a message field', msg: 'and msg' },
  ];
  for (const line of lines) {
    t.equal(serializeFlatLine('{"log":"security_audit"', '}\n', line, excluded), ref(line));
  }
});

t.test('lines pino must handle are left to it', async (t) => {
  const excluded = new Set(['authorization', 'headers', 'err']);
  const frame = ['{"log":"security_audit"', '}\n'] as const;
  t.equal(serializeFlatLine(...frame, { authorization: 'Bearer x' }, excluded), undefined);
  t.equal(serializeFlatLine(...frame, { err: 'boom' }, excluded), undefined);
  t.equal(serializeFlatLine(...frame, { detail: { a: 1 } }, excluded), undefined);
  t.equal(serializeFlatLine(...frame, { ids: ['a'] }, excluded), undefined);
  t.equal(serializeFlatLine(...frame, { n: null }, excluded), undefined);
  t.equal(serializeFlatLine(...frame, { n: 10n }, excluded), undefined);
  t.equal(
    serializeFlatLine(...frame, { authorization: undefined, ok: 1 }, excluded),
    '{"log":"security_audit","ok":1}\n',
    'an undefined excluded field is skipped like any undefined field',
  );
});

t.test('the audit file holds exactly what pino would have written, in order', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'audit-json-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'audit.log');
  const tapped: Record<string, unknown>[] = [];
  const metrics = new Metrics({ defaultMetrics: false });
  const audit = createAuditLog({
    enabled: true,
    file,
    accessSampleRate: 1,
    metrics,
    tap: (line) => tapped.push(line),
  });
  const ctx = (target: string, ip = '10.0.0.1') =>
    createContext({
      method: 'GET',
      target,
      headers: {},
      rawHeaders: [],
      clientIp: ip,
      secure: false,
      httpVersion: '1.1',
      bodySource: new PassThrough(),
      signal: new AbortController().signal,
    });
  for (let i = 0; i < 400; i++) {
    const s = AWKWARD[i % AWKWARD.length]!;
    audit.request('api_access', ctx(`/api/x?q=${s}&token=abc${i}`), {
      decision: 'allow',
      status: 200,
      subject: s,
    });
    if (i % 7 === 0) {
      // nested and redacted fields: pino's own path
      audit.request('request_blocked', ctx('/api/y', s), {
        decision: 'deny',
        reason: 'sqli',
        status: 403,
        rule_ids: ['942100', s],
        detail: { password: 'hunter2', note: s },
        authorization: 'Bearer secret',
      });
    }
    if (i % 50 === 0) audit.system('config_reload', { decision: 'allow', reason: s, version: i });
  }
  await audit.flush();
  const ref = reference();
  const expected = tapped.map((l) => ref(l)).join('');
  t.ok(Buffer.from(expected, 'utf8').equals(fs.readFileSync(file)), 'same bytes');
  const text = fs.readFileSync(file, 'utf8');
  t.notMatch(text, /hunter2|Bearer secret|token=abc/, 'secrets redacted');
  t.equal(text.split('\n').length - 1, tapped.length, 'one line per event');
  const counted = (await metrics.registry.getSingleMetric('gateway_audit_events_total')!.get()).values;
  const byEvent = Object.fromEntries(counted.map((v) => [v.labels.event, v.value]));
  t.same(byEvent, { api_access: 400, request_blocked: 58, config_reload: 8 });
  await audit.close();
});

/**
 * An audit log of every line (no sampling) to a file of a temporary folder, both gone when `t`
 * ends; `prepare` sees the file's path before the log opens it.
 */
function auditToFile(
  t: Test,
  prefix: string,
  prepare?: (file: string) => void,
): { file: string; audit: AuditLog } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'audit.log');
  prepare?.(file);
  const audit = createAuditLog({
    enabled: true,
    file,
    accessSampleRate: 1,
    metrics: new Metrics({ defaultMetrics: false }),
  });
  t.teardown(() => audit.close());
  return { file, audit };
}

t.test('a lone line reaches the file within the flush interval, without a flush call', async (t) => {
  const { file, audit } = auditToFile(t, 'audit-flush-');
  // let the file open, then write one short line (far below the chunk size)
  await new Promise((r) => setTimeout(r, 100));
  audit.system('ip_banned', { decision: 'deny', reason: 'auto_ban', client_ip: '10.9.8.7' });
  t.equal(fs.readFileSync(file, 'utf8'), '', 'not written at once (lines are batched)');
  const deadline = Date.now() + 20 * AUDIT_FLUSH_MS;
  let text = '';
  while (Date.now() < deadline && text === '') {
    await new Promise((r) => setTimeout(r, AUDIT_FLUSH_MS / 5));
    text = fs.readFileSync(file, 'utf8');
  }
  t.match(
    text,
    /^\{"log":"security_audit","time":"[^"]+","event":"ip_banned".*"client_ip":"10\.9\.8\.7"\}\n$/,
  );
});

t.test('flush() waits for the lines written while the file was busy with an earlier chunk', async (t) => {
  const { file, audit } = auditToFile(t, 'audit-busy-');
  await new Promise((r) => setTimeout(r, 100));
  for (let round = 0; round < 20; round++) {
    // enough lines for one chunk (its write to the file starts and is still running) …
    for (let i = 0; i < 25; i++)
      audit.system('config_reload', { decision: 'allow', reason: `filler ${round}-${i} ${'x'.repeat(80)}` });
    // … then one line below the chunk size, and flush at once
    audit.system('ip_banned', { decision: 'deny', reason: 'auto_ban', client_ip: `10.0.0.${round}` });
    await audit.flush();
    const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
    t.match(lines[lines.length - 1], new RegExp(`"client_ip":"10\\.0\\.0\\.${round}"`), `round ${round}`);
  }
});

t.test('redactTarget: secret-looking query values, names judged once decoded', async (t) => {
  const cases: [string, string][] = [
    ['/api/x', '/api/x'],
    ['/api/x?q=1', '/api/x?q=1'],
    ['/api/x?password=hunter2&q=1', '/api/x?password=[REDACTED]&q=1'],
    ['/api/x?q=1&api_key=k1&X-Token=t', '/api/x?q=1&api_key=[REDACTED]&X-Token=[REDACTED]'],
    // percent-encoded names are the same names to the service
    ['/api/x?pass%77ord=hunter3&%74oken=tok3', '/api/x?pass%77ord=[REDACTED]&%74oken=[REDACTED]'],
    ['/api/x?pwd=PW&user=bob', '/api/x?pwd=[REDACTED]&user=bob'],
    // an undecodable name is judged as it is
    ['/api/x?%E0%A4token=v&%zz=1', '/api/x?%E0%A4token=[REDACTED]&%zz=1'],
    // a `#` sent by a client ends nothing: parameters after it are judged too
    ['/api/x?secret=s#frag', '/api/x?secret=[REDACTED]'],
    ['/api/x?x=1#&token=SECRET1&password=SECRET2', '/api/x?x=1#&token=[REDACTED]&password=[REDACTED]'],
    ['/api/x?#token=abc', '/api/x?#token=[REDACTED]'],
    ['/api/x?flag&token', '/api/x?flag&token'],
    // path parameters (Java servlet session ids in URLs) with secret names
    ['/api/receipts;jsessionid=ABC123', '/api/receipts;jsessionid=[REDACTED]'],
    ['/api/x;JSESSIONID=abc;v=2', '/api/x;JSESSIONID=[REDACTED];v=2'],
    ['/api/x;jsessionid=ABC/y?token=t&q=1', '/api/x;jsessionid=[REDACTED]/y?token=[REDACTED]&q=1'],
    ['/api/x;jsessionid=ABC?q=1', '/api/x;jsessionid=[REDACTED]?q=1'],
    ['/api/x;%73ession=abc', '/api/x;%73ession=[REDACTED]'],
    ['/api/x;v=2?q=1', '/api/x;v=2?q=1'],
    ['/api/x;v=2', '/api/x;v=2'],
  ];
  for (const [target, want] of cases) t.equal(redactTarget(target), want, target);
});

t.test('the audit log file the gateway creates is not world-readable, after a rotation too', async (t) => {
  const old = process.umask(0o022);
  t.teardown(() => process.umask(old));
  const { file, audit } = auditToFile(t, 'audit-mode-');
  audit.system('ip_banned', { decision: 'deny', reason: 'auto_ban', client_ip: '10.9.8.7' });
  await audit.flush();
  t.equal(fs.statSync(file).mode & 0o777, AUDIT_FILE_MODE, 'created 0640');
  t.equal(AUDIT_FILE_MODE & 0o007, 0, 'nothing for others');
  // logrotate without `create` moves the file away; the gateway reopens on SIGUSR2
  fs.renameSync(file, `${file}.1`);
  audit.reopen();
  audit.system('ip_banned', { decision: 'deny', reason: 'auto_ban', client_ip: '10.9.8.6' });
  await audit.flush();
  await new Promise((r) => setTimeout(r, 50));
  t.match(fs.readFileSync(file, 'utf8'), /10\.9\.8\.6/, 'the reopened file holds the new line');
  t.equal(fs.statSync(file).mode & 0o777, AUDIT_FILE_MODE, 'the reopened file is created 0640');
});

t.test('an existing audit log file keeps the mode the operator gave it', async (t) => {
  const { file, audit } = auditToFile(t, 'audit-keep-', (f) => {
    fs.writeFileSync(f, '');
    fs.chmodSync(f, 0o600);
  });
  audit.system('ip_banned', { decision: 'deny', reason: 'auto_ban', client_ip: '10.9.8.5' });
  await audit.flush();
  t.equal(fs.statSync(file).mode & 0o777, 0o600);
});
