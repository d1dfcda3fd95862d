import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  loadConfigFile,
  MAX_CONFIG_BYTES,
  parseConfig,
  ConfigLoadError,
  formatProblem,
  type ConfigProblem,
} from '../../gateway/config/load.js';
import { compileGeneration, closeGeneration } from '../../gateway/config/compile.js';
import { offlineServices } from '../../gateway/commands/validate.js';
import { parseDuration, parseSize, parseLimits } from '../../gateway/config/units.js';
import { REPO } from '../helpers/harness.js';
import { execFileSync } from 'node:child_process';

/**
 * Bad configurations: every problem reported at once with file:line:column and key path;
 * ${VAR} interpolation and its typing; operator units.
 */

const SECRET = 'config-test-secret-0123456789-abcdefghij';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-config-test-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** Load and compile `yaml` from a temp file; the problems, or [] when it is valid. */
async function problemsOf(
  yaml: string,
  env: Record<string, string> = {},
): Promise<{ file: string; problems: readonly ConfigProblem[] }> {
  const file = path.join(dir, `c${++n}.yaml`);
  fs.writeFileSync(file, yaml);
  const fullEnv = { JWT_SECRET_KEY: SECRET, ...env };
  const services = offlineServices(fullEnv);
  try {
    const loaded = await loadConfigFile(file, fullEnv);
    const gen = await compileGeneration(loaded, services);
    await closeGeneration(gen);
    return { file, problems: [] };
  } catch (err) {
    if (err instanceof ConfigLoadError) return { file, problems: err.problems };
    throw err;
  } finally {
    await services.store.close();
  }
}

interface Expected {
  readonly line: number;
  readonly column: number;
  readonly keyPath: string;
  readonly message: RegExp;
}

interface Case {
  readonly name: string;
  readonly yaml: string;
  readonly env?: Record<string, string>;
  /** every problem, in file order */
  readonly expect: readonly Expected[];
}

const MINIMAL_AUTH = `
policies:
  auth:
    jwt:
      secret: \${JWT_SECRET_KEY}
`;

const CASES: Case[] = [
  {
    name: 'malformed YAML: bad indentation',
    yaml: 'listen:\n  port: 8080\n   host: x\n',
    expect: [
      { line: 2, column: 9, keyPath: '', message: /Nested mappings are not allowed/ },
      { line: 2, column: 9, keyPath: '', message: /Implicit keys need to be on a single line/ },
    ],
  },
  {
    name: 'malformed YAML: unclosed flow sequence',
    yaml: 'listen:\n  trusted_proxies: [10.0.0.0/8\nupstream: {}\n',
    expect: [{ line: 3, column: 1, keyPath: '', message: /Flow sequence/ }],
  },
  {
    name: 'malformed YAML: duplicate key',
    yaml: 'workers: 1\nworkers: 2\n',
    expect: [{ line: 2, column: 1, keyPath: '', message: /unique/i }],
  },
  {
    name: 'malformed YAML: a tab for indentation',
    yaml: 'listen:\n\tport: 8080\n',
    expect: [{ line: 2, column: 1, keyPath: '', message: /Tabs/ }],
  },
  {
    name: 'unknown keys at several depths, route policy overrides included, all at once',
    yaml: `listn:
  port: 1
listen:
  prot: 8080
policies:
  cors:
    orgins: x
  nosuch: {}
routes:
  - name: a
    path: /api/**
    policies:
      cors: { orgins: [x] }
      size_limit: { max_bdy: 1MB }
  - name: b
    path: /x
    polices: {}
`,
    expect: [
      { line: 1, column: 1, keyPath: 'listn', message: /^unknown key "listn"$/ },
      { line: 4, column: 3, keyPath: 'listen.prot', message: /^unknown key "prot"$/ },
      { line: 7, column: 5, keyPath: 'policies.cors.orgins', message: /^unknown key "orgins"$/ },
      { line: 8, column: 3, keyPath: 'policies.nosuch', message: /^unknown key "nosuch"$/ },
      { line: 13, column: 15, keyPath: 'routes[0].policies.cors.orgins', message: /^unknown key "orgins"$/ },
      {
        line: 14,
        column: 21,
        keyPath: 'routes[0].policies.size_limit.max_bdy',
        message: /^unknown key "max_bdy"$/,
      },
      { line: 17, column: 5, keyPath: 'routes[1].polices', message: /^unknown key "polices"$/ },
    ],
  },
  {
    name: 'wrong types',
    yaml: `listen:
  port: abc
  max_connections: -5
admin:
  enabled: sometimes
workers: many
routes:
  - name: Bad Name
    path: nope
    methods: [FETCH]
policies:
  size_limit:
    max_body: lots
  user_agent:
    max_length: long
`,
    expect: [
      { line: 2, column: 9, keyPath: 'listen.port', message: /integer/ },
      { line: 3, column: 20, keyPath: 'listen.max_connections', message: /1/ },
      { line: 5, column: 12, keyPath: 'admin.enabled', message: /boolean/ },
      { line: 6, column: 10, keyPath: 'workers', message: /integer/ },
      { line: 8, column: 11, keyPath: 'routes[0].name', message: /invalid value "Bad Name"/ },
      { line: 9, column: 11, keyPath: 'routes[0].path', message: /invalid value "nope"/ },
      { line: 10, column: 15, keyPath: 'routes[0].methods[0]', message: /must be one of "GET"/ },
      {
        line: 13,
        column: 15,
        keyPath: 'policies.size_limit.max_body',
        message: /invalid value "lots".*size, e\.g\. 512KB, 16MB/,
      },
      { line: 15, column: 17, keyPath: 'policies.user_agent.max_length', message: /integer/ },
    ],
  },
  {
    name: 'unknown and missing keys inside nested policy blocks (lists of rules and keys)',
    yaml: `policies:
  auth:
    jwt:
      secret: \${JWT_SECRET_KEY}
      secrett: x
routes:
  - name: a
    path: /a
    policies:
      auth:
        jwt: { secrett: y }
        api_keys: { keys: [{ id: k, hash: "sha256:${'0'.repeat(64)}", rolez: [x] }] }
`,
    expect: [
      { line: 5, column: 7, keyPath: 'policies.auth.jwt.secrett', message: /^unknown key "secrett"$/ },
      {
        line: 11,
        column: 16,
        keyPath: 'routes[0].policies.auth.jwt.secrett',
        message: /^unknown key "secrett"$/,
      },
      {
        line: 12,
        column: 118,
        keyPath: 'routes[0].policies.auth.api_keys.keys[0].rolez',
        message: /^unknown key "rolez"$/,
      },
    ],
  },
  {
    name: 'a wrong type in a route policy override',
    yaml: `routes:
  - name: up
    path: /api/receipts/upload
    policies:
      size_limit: { max_body: huge }
`,
    expect: [
      {
        line: 5,
        column: 31,
        keyPath: 'routes[0].policies.size_limit.max_body',
        message: /invalid value "huge"/,
      },
    ],
  },
  {
    name: 'missing ${VAR} without default, named, at its line',
    yaml: `listen:
  port: \${RGW_TEST_NOT_SET}
upstream:
  url: http://\${RGW_TEST_ALSO_NOT_SET}:9000
`,
    expect: [
      {
        line: 2,
        column: 9,
        keyPath: 'listen.port',
        message: /^environment variable RGW_TEST_NOT_SET is not set and has no default/,
      },
      {
        line: 4,
        column: 8,
        keyPath: 'upstream.url',
        message: /^environment variable RGW_TEST_ALSO_NOT_SET is not set/,
      },
    ],
  },
  {
    name: 'invalid upstream URLs',
    yaml: 'upstream:\n  url: ftp://files.example\n',
    expect: [
      {
        line: 2,
        column: 8,
        keyPath: 'upstream.url',
        message: /invalid upstream URL "ftp:\/\/files\.example"/,
      },
    ],
  },
  {
    name: 'an upstream URL that does not parse',
    yaml: 'upstream:\n  url: "not a url"\n',
    expect: [{ line: 2, column: 8, keyPath: 'upstream.url', message: /invalid upstream URL/ }],
  },
  {
    name: 'invalid CIDRs',
    yaml: 'listen:\n  trusted_proxies: [10.0.0.0/33, nope, 10.0.0.0/8, "::1/129", 1.2.3.4/x]\n',
    expect: [
      {
        line: 2,
        column: 21,
        keyPath: 'listen.trusted_proxies[0]',
        message: /invalid CIDR "10\.0\.0\.0\/33"/,
      },
      { line: 2, column: 34, keyPath: 'listen.trusted_proxies[1]', message: /invalid CIDR "nope"/ },
      { line: 2, column: 52, keyPath: 'listen.trusted_proxies[3]', message: /invalid CIDR "::1\/129"/ },
      { line: 2, column: 63, keyPath: 'listen.trusted_proxies[4]', message: /invalid CIDR "1\.2\.3\.4\/x"/ },
    ],
  },
  {
    name: 'duplicate route names',
    yaml: `routes:
  - name: api
    path: /api/**
  - name: other
    path: /other
  - name: api
    path: /api2/**
`,
    expect: [{ line: 6, column: 11, keyPath: 'routes[2].name', message: /duplicate route name "api"/ }],
  },
  {
    name: 'workers > 1 with the memory store',
    yaml: 'workers: 4\nstore:\n  url: memory://\n',
    expect: [{ line: 1, column: 10, keyPath: 'workers', message: /memory:\/\/ store.*redis/ }],
  },
  {
    name: 'a header timeout longer than the request timeout',
    yaml: 'listen:\n  header_timeout: 2m\n  request_timeout: 60s\n',
    expect: [{ line: 2, column: 19, keyPath: 'listen.header_timeout', message: /request_timeout/ }],
  },
  {
    name: 'schema errors and semantic errors together, all at once',
    yaml: `listen:
  prot: 1
  trusted_proxies: [300.1.1.1/8]
upstream:
  url: gopher://x
workers: 2
routes:
  - name: a
    path: /a
  - name: a
    path: /b
    methods: [GOT]
`,
    expect: [
      { line: 2, column: 3, keyPath: 'listen.prot', message: /unknown key/ },
      { line: 3, column: 21, keyPath: 'listen.trusted_proxies[0]', message: /invalid CIDR/ },
      { line: 5, column: 8, keyPath: 'upstream.url', message: /invalid upstream URL/ },
      { line: 6, column: 10, keyPath: 'workers', message: /memory/ },
      { line: 10, column: 11, keyPath: 'routes[1].name', message: /duplicate route name/ },
      { line: 12, column: 15, keyPath: 'routes[1].methods[0]', message: /must be one of/ },
    ],
  },
  {
    name: 'a policy compile error (CORS wildcard with credentials) names its key path',
    yaml: `policies:
  cors:
    origins: "*"
    allow_credentials: true
`,
    expect: [{ line: 3, column: 14, keyPath: 'policies.cors.origins', message: /credentials/ }],
  },
  {
    name: 'pattern_block: rule ids, prefixes and families that select no rule, global and per route',
    yaml: `policies:
  pattern_block:
    disabled_rules: [sqli-1OO, xss-9*]
    exclusions:
      - routes: [api]
        rules: [rce-100]
      - paths: [/api/auth/**]
        families: [cmd_injection, shell]
      - paths: [/api/receipts/export]
        rules: [sqli-1OO, lfi-11*, lfi-9*]
  auth:
    jwt:
      secret: \${JWT_SECRET_KEY}
routes:
  - name: notes
    path: /api/notes
    policies:
      pattern_block:
        exclusions:
          - rules: [proto-141, xss-1O0]
  - name: other
    path: /api/other
    policies:
      pattern_block: { threshold: 7 }
`,
    expect: [
      {
        line: 3,
        column: 22,
        keyPath: 'policies.pattern_block.disabled_rules[0]',
        message: /^unknown rule id "sqli-1OO" \(no rule of the loaded packs has it\)$/,
      },
      {
        line: 3,
        column: 32,
        keyPath: 'policies.pattern_block.disabled_rules[1]',
        message: /^rule id prefix "xss-9\*" matches no rule of the loaded packs$/,
      },
      {
        line: 8,
        column: 35,
        keyPath: 'policies.pattern_block.exclusions[1].families[1]',
        message:
          /^unknown family "shell" \(families: sqli, xss, path_traversal, cmd_injection, rfi, php, nodejs, protocol, scanner; lfi and rce as aliases\)$/,
      },
      {
        line: 10,
        column: 17,
        keyPath: 'policies.pattern_block.exclusions[2].rules[0]',
        message: /^unknown rule id "sqli-1OO" \(no rule of the loaded packs has it\)$/,
      },
      {
        line: 10,
        column: 36,
        keyPath: 'policies.pattern_block.exclusions[2].rules[2]',
        message: /^rule id prefix "lfi-9\*" matches no rule of the loaded packs$/,
      },
      {
        line: 20,
        column: 32,
        keyPath: 'routes[0].policies.pattern_block.exclusions[0].rules[1]',
        message: /^unknown rule id "xss-1O0" \(no rule of the loaded packs has it\)$/,
      },
    ],
  },
  {
    name: 'pattern_block: body-parse-error is excluded, not disabled',
    yaml: `policies:
  pattern_block:
    disabled_rules: [body-parse-error]
  auth:
    jwt:
      secret: \${JWT_SECRET_KEY}
`,
    expect: [
      {
        line: 3,
        column: 22,
        keyPath: 'policies.pattern_block.disabled_rules[0]',
        message:
          /^unknown rule id "body-parse-error" \(not a rule of the packs: an exclusion drops it, e\.g\. \{ rules: \[body-parse-error\] \}\)$/,
      },
    ],
  },
  {
    name: 'route patterns: ** not last, bad parameter',
    yaml: `routes:
  - name: a
    path: /a/**/b
  - name: b
    path: /b/:9x
${MINIMAL_AUTH}`,
    expect: [
      { line: 3, column: 11, keyPath: 'routes[0].path', message: /\*\*/ },
      { line: 5, column: 11, keyPath: 'routes[1].path', message: /parameter/ },
    ],
  },
];

t.test('bad configurations: every problem at once, with file:line:column and key path', async (t) => {
  for (const c of CASES) {
    await t.test(c.name, async (t) => {
      const { file, problems } = await problemsOf(c.yaml, c.env);
      t.equal(
        problems.length,
        c.expect.length,
        `${c.expect.length} problem(s): ${problems.map(formatProblem).join(' | ')}`,
      );
      c.expect.forEach((e, i) => {
        const p = problems[i];
        t.ok(p, `problem ${i + 1}`);
        if (!p) return;
        t.equal(p.file, file, 'file');
        t.equal(p.keyPath, e.keyPath, `key path of problem ${i + 1}`);
        t.equal(`${p.line}:${p.column}`, `${e.line}:${e.column}`, `line:column of ${e.keyPath || 'problem'}`);
        t.match(p.message, e.message, `message of ${e.keyPath || 'problem'}`);
        t.equal(
          formatProblem(p),
          `${file}:${e.line}:${e.column}: ${e.keyPath ? `${e.keyPath}: ` : ''}${p.message}`,
        );
      });
    });
  }
});

t.test('a missing file is one problem, not a crash', async (t) => {
  await t.rejects(loadConfigFile(path.join(dir, 'absent.yaml'), {}), ConfigLoadError);
  try {
    await loadConfigFile(path.join(dir, 'absent.yaml'), {});
  } catch (err) {
    t.match((err as ConfigLoadError).problems[0]?.message, /file not found/);
  }
});

t.test('the shipped gateway.yaml is valid with only JWT_SECRET_KEY set', async (t) => {
  const { problems } = await problemsOf(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8'));
  t.same(problems.map(formatProblem), []);
});

t.test('${VAR} and ${VAR:-default}: typed like the YAML they replace', async (t) => {
  const yaml = `listen:
  port: \${P}
  host: \${H:-127.0.0.1}
  max_connections: \${MC:-50}
  trusted_proxies: ["\${TP:-10.0.0.0/8}"]
admin:
  enabled: \${AE:-false}
audit:
  enabled: \${AUD}
  access_sample_rate: \${RATE:-0.5}
  file: \${AUDIT_FILE:-logs/a.log}
monitoring:
  webhook_url: \${HOOK:-}
upstream:
  url: http://\${UH:-127.0.0.1}:\${UP:-9000}/base
${MINIMAL_AUTH}`;
  const loaded = parseConfig(yaml, 'typed.yaml', {
    P: '8081',
    AUD: 'TRUE',
    JWT_SECRET_KEY: SECRET,
    UP: '9100',
  });
  const c = loaded.config;
  t.equal(c.listen.port, 8081, 'a plain scalar number from the environment is a number');
  t.equal(c.listen.host, '127.0.0.1', 'default used when unset');
  t.equal(c.listen.max_connections, 50, 'a numeric default is a number');
  t.same(c.listen.trusted_proxies, ['10.0.0.0/8']);
  t.equal(c.admin.enabled, false, 'a boolean default is a boolean');
  t.equal(c.audit.enabled, true, 'TRUE is a boolean');
  t.equal(c.audit.access_sample_rate, 0.5, 'a decimal');
  t.equal(c.audit.file, 'logs/a.log');
  t.equal(c.monitoring.webhook_url, '', 'an empty default is the empty string');
  t.equal(c.upstream.url, 'http://127.0.0.1:9100/base', 'several variables inside one string');
  // an empty variable falls back to the default; a set one wins over it
  const e = parseConfig('listen:\n  port: ${P:-7000}\n', 'e.yaml', { P: '' });
  t.equal(e.config.listen.port, 7000, 'empty counts as unset');
  const w = parseConfig('listen:\n  port: ${P:-7000}\n', 'w.yaml', { P: '7001' });
  t.equal(w.config.listen.port, 7001);
  // a value that is not a number stays a string and is refused where a number is wanted
  t.throws(() => parseConfig('listen:\n  port: ${P}\n', 'bad.yaml', { P: '80a' }), ConfigLoadError);
  // false/0 from the environment
  const f = parseConfig('audit:\n  enabled: ${A}\nworkers: ${W:-1}\n', 'f.yaml', { A: 'false' });
  t.equal(f.config.audit.enabled, false);
  t.equal(f.config.workers, 1);
});

t.test('units: durations', async (t) => {
  const ok: [string | number, number][] = [
    ['500ms', 500],
    ['30s', 30_000],
    ['1.5s', 1500],
    ['15m', 900_000],
    ['15min', 900_000],
    ['1h', 3_600_000],
    ['1d', 86_400_000],
    [' 2s ', 2000],
    ['250', 250],
    [0, 0],
    [100, 100],
  ];
  for (const [v, ms] of ok) t.equal(parseDuration(v), ms, `duration ${JSON.stringify(v)}`);
  t.equal(parseDuration(15, 'm'), 900_000, 'a bare number in the given unit (LOGIN_LOCKOUT_DURATION=15)');
  t.equal(parseDuration('15', 'm'), 900_000);
  for (const bad of ['', 'ms', '10 years', '-1s', '1h30m', 'soon', '1e3s', '5 s s']) {
    t.throws(() => parseDuration(bad), /invalid duration/, `duration ${JSON.stringify(bad)} refused`);
  }
  t.throws(() => parseDuration(-1), /invalid duration/);
  t.throws(() => parseDuration(Number.NaN), /invalid duration/);
});

t.test('units: sizes', async (t) => {
  const ok: [string | number, number][] = [
    ['16MB', 16 * 1024 * 1024],
    ['512KB', 512 * 1024],
    ['512kb', 512 * 1024],
    ['1GB', 1024 ** 3],
    ['10B', 10],
    ['100', 100],
    ['1.5MB', 1.5 * 1024 * 1024],
    ['16m', 16 * 1024 * 1024],
    ['8KiB', 8192],
    [' 2 MB ', 2 * 1024 * 1024],
    [4096, 4096],
  ];
  for (const [v, bytes] of ok) t.equal(parseSize(v), bytes, `size ${JSON.stringify(v)}`);
  for (const bad of ['', 'MB', 'lots', '-1MB', '1TB', '16 M B', '0x10']) {
    t.throws(() => parseSize(bad), /invalid size/, `size ${JSON.stringify(bad)} refused`);
  }
  t.throws(() => parseSize(-5), /invalid size/);
});

t.test('units: rate limits', async (t) => {
  t.same(parseLimits('10/minute'), [{ count: 10, windowMs: 60_000, text: '10/minute' }]);
  t.same(parseLimits('10 per minute'), [{ count: 10, windowMs: 60_000, text: '10/minute' }]);
  t.same(parseLimits('200 per day;50 per hour;10 per minute'), [
    { count: 200, windowMs: 86_400_000, text: '200/day' },
    { count: 50, windowMs: 3_600_000, text: '50/hour' },
    { count: 10, windowMs: 60_000, text: '10/minute' },
  ]);
  t.same(parseLimits(' 5 / second ; 100/hours ;'), [
    { count: 5, windowMs: 1000, text: '5/second' },
    { count: 100, windowMs: 3_600_000, text: '100/hour' },
  ]);
  t.same(parseLimits('5 per 15 minutes'), [{ count: 5, windowMs: 900_000, text: '5/15 minutes' }]);
  t.same(parseLimits('3/10s'), [{ count: 3, windowMs: 10_000, text: '3/10 seconds' }]);
  t.same(parseLimits('1 per Day'), [{ count: 1, windowMs: 86_400_000, text: '1/day' }]);
  for (const bad of [
    '',
    ';',
    '10',
    'ten per minute',
    '10 per fortnight',
    '0/minute',
    '10/0 minutes',
    '10 minute',
    '-1/minute',
    '10/minute;oops',
  ]) {
    t.throws(() => parseLimits(bad), /limit/, `limit ${JSON.stringify(bad)} refused`);
  }
});

t.test(
  'listener addresses: host names and IP addresses, nothing that could only fail at listen',
  async (t) => {
    const at = (host: string) =>
      `upstream:\n  url: http://127.0.0.1:9000\nlisten:\n  host: ${JSON.stringify(host)}\nadmin:\n  host: ${JSON.stringify(host)}\n`;
    for (const host of [
      '0.0.0.0',
      '127.0.0.1',
      '::',
      '::1',
      '::ffff:127.0.0.1',
      'fe80::1%eth0',
      'localhost',
      'gw-1.internal',
    ])
      t.same((await problemsOf(at(host))).problems, [], `${host} accepted`);
    for (const host of [
      '',
      'not a host!',
      '[::1]',
      'http://0.0.0.0',
      '0.0.0.0:8080',
      'host_name',
      '-x.example',
    ]) {
      const { problems } = await problemsOf(at(host));
      t.same(
        problems.map((p) => p.keyPath),
        ['listen.host', 'admin.host'],
        `${JSON.stringify(host)} refused on both listeners`,
      );
      t.match(problems[0]?.message, /a host name, an IPv4 address or an IPv6 address without brackets/);
    }
  },
);

t.test('a file that is not a configuration is refused before it is read whole', async (t) => {
  const problem = async (file: string) => {
    const err = await loadConfigFile(file, { JWT_SECRET_KEY: SECRET }).catch((e: unknown) => e);
    t.type(err, ConfigLoadError, file);
    return (err as ConfigLoadError).problems.map(formatProblem);
  };
  // larger than 4 MiB (a comment padded out): refused by size, not parsed
  const big = path.join(dir, 'big.yaml');
  fs.writeFileSync(big, `upstream:\n  url: http://127.0.0.1:9000\n# ${'x'.repeat(MAX_CONFIG_BYTES)}\n`);
  t.same(await problem(big), [
    `${big}:0:0: the file is ${fs.statSync(big).size} bytes; a configuration is at most 4194304 bytes (4 MiB)`,
  ]);
  // just below the limit: parsed as usual
  const fits = path.join(dir, 'fits.yaml');
  fs.writeFileSync(
    fits,
    `upstream:\n  url: http://127.0.0.1:9000\n# ${'x'.repeat(MAX_CONFIG_BYTES - 100)}\n`,
  );
  t.equal(
    (await loadConfigFile(fits, { JWT_SECRET_KEY: SECRET })).config.upstream.url,
    'http://127.0.0.1:9000',
  );
  // a device that never ends and a directory
  t.same(await problem('/dev/zero'), ['/dev/zero:0:0: not a regular file']);
  t.same(await problem(dir), [`${dir}:0:0: not a regular file`]);
  // a FIFO without a writer: opening it must not wait for one
  const fifo = path.join(dir, 'fifo.yaml');
  execFileSync('mkfifo', [fifo]);
  t.same(await problem(fifo), [`${fifo}:0:0: not a regular file`]);
});
