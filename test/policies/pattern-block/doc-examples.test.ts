import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { REPO, deepMerge, startHarness, type Harness } from '../../helpers/harness.js';
import { validateConfigFile } from '../../../gateway/commands/validate.js';
import {
  loadPackDir,
  parsePack,
  shippedRulesDir,
  type RuleDef,
} from '../../../policies/pattern-block/rules.js';
import { TRANSFORMS } from '../../../policies/pattern-block/transforms.js';
import { VALUE_DETECTORS } from '../../../policies/pattern-block/detectors/index.js';
import { inspectRequest } from '../../../policies/pattern-block/engine.js';
import { engineFromConfig, patternBlock } from '../../../policies/pattern-block/index.js';
import { Value } from '@sinclair/typebox/value';
import type { Static } from '@sinclair/typebox';

/**
 * The pattern-block examples of README.md and docs/pattern-block.md are a promise: every
 * YAML block is read from the markdown here, loads as printed over the shipped gateway.yaml,
 * and the main ones do over real TCP what the text around them says.
 */

type Obj = Record<string, unknown>;

interface Block {
  readonly file: string;
  readonly line: number;
  readonly text: string;
}

function yamlBlocks(file: string): Block[] {
  const md = fs.readFileSync(path.join(REPO, file), 'utf8');
  const out: Block[] = [];
  const re = /^```yaml\n([\s\S]*?)^```/gm;
  for (let m = re.exec(md); m !== null; m = re.exec(md))
    out.push({ file, line: md.slice(0, m.index).split('\n').length, text: m[1]! });
  return out;
}

const README_BLOCKS = yamlBlocks('README.md').filter((b) => b.text.includes('pattern_block'));
const DOC_BLOCKS = yamlBlocks('docs/pattern-block.md');

function block(blocks: readonly Block[], marker: string): Block {
  const found = blocks.filter((b) => b.text.includes(marker));
  if (found.length !== 1) throw new Error(`expected one example block with ${JSON.stringify(marker)}`);
  return found[0]!;
}

/** The pack that README's `rule_files: [rules/local.yaml]` names: one paranoia-2 rule. */
const LOCAL_PACK = `- id: local-200
  family: xss
  paranoia: 2
  score: 5
  description: template expression in a parameter
  targets: [args]
  transforms: [url_decode, lowercase]
  regex: "\\\\{\\\\{[^}]{0,100}\\\\}\\\\}"
  examples:
    match: ["{{7*7}}"]
    no_match: ["{ a } and { b }"]
`;

const SHIPPED = YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as Obj;
const SHIPPED_ROUTES = SHIPPED.routes as Obj[];

/**
 * An example as an operator applies it: a bare `pattern_block:` fragment goes under
 * `policies:`; a route replaces the shipped route of that name or, new, goes before the
 * catch-all `api` route (first match wins).
 */
function overlay(text: string): Obj {
  const doc = YAML.parse(text) as Obj;
  const out: Obj = doc.policies === undefined && doc.routes === undefined ? { policies: doc } : { ...doc };
  if (Array.isArray(doc.routes)) {
    const routes = [...SHIPPED_ROUTES];
    for (const r of doc.routes as Obj[]) {
      const i = routes.findIndex((x) => x.name === r.name);
      if (i >= 0) routes[i] = r;
      else
        routes.splice(
          routes.findIndex((x) => x.name === 'api'),
          0,
          r,
        );
    }
    out.routes = routes;
  }
  return out;
}

t.test('every YAML example of the pattern-block docs is found', async (t) => {
  t.ok(README_BLOCKS.length >= 1, `README.md: ${README_BLOCKS.length} pattern_block blocks`);
  t.ok(DOC_BLOCKS.length >= 5, `docs/pattern-block.md: ${DOC_BLOCKS.length} blocks`);
});

t.test('every config example loads as printed over the shipped gateway.yaml', async (t) => {
  for (const b of [...README_BLOCKS, ...DOC_BLOCKS]) {
    if (Array.isArray(YAML.parse(b.text))) continue; // the rule pack example, below
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-doc-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.mkdirSync(path.join(dir, 'rules'));
    fs.writeFileSync(path.join(dir, 'rules', 'local.yaml'), LOCAL_PACK);
    const file = path.join(dir, 'gateway.yaml');
    fs.writeFileSync(file, YAML.stringify(deepMerge(SHIPPED, overlay(b.text))));
    const r = await validateConfigFile(file, { JWT_SECRET_KEY: 'k'.repeat(40) });
    t.ok(r.ok, `${b.file}:${b.line} validates${r.ok ? '' : `: ${r.errors.join('; ')}`}`);
  }
});

t.test('the inline examples of docs/pattern-block.md load too', async (t) => {
  const md = fs.readFileSync(path.join(REPO, 'docs/pattern-block.md'), 'utf8');
  const inline = [
    'pattern_block: { mode: monitor }',
    'packs: { protocol: monitor, php: off }',
    '{ routes: [api], rules: [proto-141] }',
    'ip_ban: { allow: [{ cidr: 127.0.0.0/8, skip: [rate_limit, ip_ban] }] }',
  ];
  for (const frag of inline) {
    t.ok(md.includes(`\`${frag}\``), `the docs still show ${frag}`);
    const policies: Obj = frag.startsWith('{')
      ? { pattern_block: { exclusions: [YAML.parse(frag)] } }
      : frag.startsWith('packs')
        ? { pattern_block: YAML.parse(frag) }
        : (YAML.parse(frag) as Obj);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-doc-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'gateway.yaml');
    fs.writeFileSync(file, YAML.stringify(deepMerge(SHIPPED, { policies })));
    const r = await validateConfigFile(file, { JWT_SECRET_KEY: 'k'.repeat(40) });
    t.ok(r.ok, `${frag} validates${r.ok ? '' : `: ${r.errors.join('; ')}`}`);
  }
});

/** Apply a rule to one value the way the engine does (transforms, then the operator). */
function ruleMatchesValue(r: RuleDef, value: string): boolean {
  let v = value;
  for (const name of r.transforms) v = TRANSFORMS[name]!(v);
  if (r.regex !== undefined) return new RegExp(r.regex, r.flags ?? '').test(v);
  return VALUE_DETECTORS[r.detector!]!(v) !== undefined;
}

t.test('the rule pack example is a valid rule that does what its examples say', async (t) => {
  const b = block(DOC_BLOCKS, 'detector: sqli');
  const [rule] = parsePack(b.text, 'sqli', `${b.file}:${b.line}`);
  t.ok(rule);
  t.equal(rule!.paranoia, 1);
  t.equal(rule!.score, 5);
  t.ok(rule!.examples.match.length > 0 && rule!.examples.no_match.length > 0);
  for (const ex of rule!.examples.match) t.ok(ruleMatchesValue(rule!, ex as string), `matches ${String(ex)}`);
  for (const ex of rule!.examples.no_match)
    t.notOk(ruleMatchesValue(rule!, ex as string), `does not match ${String(ex)}`);
});

t.test('the "Default gateway.yaml block" of the docs is the shipped one', async (t) => {
  const doc = YAML.parse(block(DOC_BLOCKS, 'name: upload').text) as {
    policies: Obj;
    routes: { name: string; policies: Obj }[];
  };
  const shipped = SHIPPED as { policies: Obj; routes: { name: string; policies: Obj }[] };
  t.same(doc.policies.pattern_block, shipped.policies.pattern_block);
  for (const r of doc.routes) {
    const s = shipped.routes.find((x) => x.name === r.name);
    t.ok(s, `route ${r.name} is shipped`);
    t.same(r.policies.pattern_block, s?.policies.pattern_block, `route ${r.name}: same pattern_block`);
  }
});

t.test('an exclusion with rules and families drops the rules either names', async (t) => {
  const md = fs.readFileSync(path.join(REPO, 'docs/pattern-block.md'), 'utf8');
  const frag = '{ rules: [lfi-110], families: [php] }';
  t.ok(md.includes(`\`${frag}\``));
  const config = (exclusions: unknown[]) =>
    Value.Default(patternBlock.schema, { exclusions }) as Static<typeof patternBlock.schema>;
  const request = {
    method: 'GET',
    target: '/api/receipts?a=/etc/passwd&b=%3C%3Fphp%20echo%201%3B&c=x%27%20or%20%271%27%3D%271',
    headers: { Host: 'receipts.example.com', 'User-Agent': 'test' },
  };
  const ids = (exclusions: unknown[]) => [
    ...new Set(
      inspectRequest(engineFromConfig(config(exclusions), REPO), request).matches.map((m) => m.ruleId),
    ),
  ];
  t.same(ids([]), ['lfi-110', 'php-100', 'sqli-100']);
  t.same(ids([YAML.parse(frag)]), ['sqli-100']);
});

t.test('the shipped packs hold rules of every paranoia level, as the docs say', async (t) => {
  const rules = loadPackDir(shippedRulesDir());
  t.same([...new Set(rules.map((r) => r.paranoia))].sort(), [1, 2, 3, 4]);
  // each higher-level rule says why it is not at a lower level (docs: "Paranoia levels")
  for (const r of rules.filter((x) => x.paranoia > 1))
    t.match(r.description, new RegExp(`level ${r.paranoia} because`), `${r.id} says why level ${r.paranoia}`);
});

// ---- over real TCP ---------------------------------------------------------------------

interface Reply {
  readonly status: number;
  readonly body: Obj;
}

async function send(
  h: Harness,
  method: string,
  target: string,
  headers: Record<string, string> = {},
  body?: unknown,
): Promise<Reply> {
  const r = await fetch(`${h.url}${target}`, {
    method,
    headers: {
      'User-Agent': 'doc-examples-test',
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...headers,
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await r.text();
  return { status: r.status, body: text.startsWith('{') ? (JSON.parse(text) as Obj) : {} };
}

/** A GET whose Host header is set as given (fetch always sends host:port). */
function getWithHost(h: Harness, target: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${h.url}${target}`, {
      headers: { Host: host, 'User-Agent': 'doc-examples-test' },
      agent: false,
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end();
  });
}

async function blockedLines(h: Harness): Promise<Obj[]> {
  return (await h.audit()).filter((e) => e.event === 'request_blocked');
}

async function metrics(h: Harness): Promise<string> {
  return (await fetch(`${h.adminUrl}/metrics`)).text();
}

function harnessConfig(text: string): string {
  return YAML.stringify(overlay(text));
}

t.test('shipped gateway.yaml: the login password may hold shell metacharacters, not SQLi', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  await h.clearMock();
  const login = (body: Obj) => send(h, 'POST', '/api/auth/login', {}, body);

  // rce-100 and rce-110 (cmd_injection) on the password are excluded on the login route:
  // the request reaches the service, which refuses the wrong password
  t.equal((await login({ username: 'alice', password: 'p;ls$(id)' })).status, 401);
  // the same value elsewhere is refused
  const asName = await login({ username: 'p;ls$(id)', password: 'x' });
  t.equal(asName.status, 403);
  t.equal(asName.body.error, 'request_blocked');
  // the exclusion keeps the SQLi checks on the password
  t.equal((await login({ username: 'alice', password: "' or '1'='1" })).status, 403);

  const seen = (await h.mockRequests()).filter((r) => r.path === '/api/auth/login');
  t.equal(seen.length, 1, 'only the excluded password reached the service');
  const lines = await blockedLines(h);
  t.equal(lines.length, 2);
  t.match(lines[0], {
    event: 'request_blocked',
    decision: 'deny',
    reason: 'cmd_injection',
    code: 'request_blocked',
    status: 403,
    path: '/api/auth/login',
    rule_ids: ['rce-110', 'rce-100'],
    detail: { score: 10, families: { cmd_injection: 10 } },
  });
  t.same(
    (lines[0]!.detail as { matches: Obj[] }).matches.map((m) => m.target),
    ['json:username', 'json:username'],
  );
  t.match(lines[1], { decision: 'deny', reason: 'sqli', status: 403, rule_ids: ['sqli-100'] });
  t.same((lines[1]!.detail as { matches: Obj[] }).matches, [
    { target: 'json:password', rule: 'sqli-100', excerpt: '[redacted]' },
  ]);
  const m = await metrics(h);
  t.match(m, /gateway_blocked_requests_total\{reason="cmd_injection"\} 1\n/);
  t.match(m, /gateway_blocked_requests_total\{reason="sqli"\} 1\n/);
});

t.test('shipped gateway.yaml: proto-141 (bare IP Host) is excluded on the health route only', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  t.equal(await getWithHost(h, '/api/health', '127.0.0.1'), 200);
  t.equal(await getWithHost(h, '/api/receipts', '127.0.0.1'), 403);
  const lines = await blockedLines(h);
  t.equal(lines.length, 1);
  t.match(lines[0], { path: '/api/receipts', reason: 'protocol', rule_ids: ['proto-141'], status: 403 });
});

t.test('docs exclusions example: by route and target, by rule id on a path, one header', async (t) => {
  const b = block(DOC_BLOCKS, 'x-legacy-token');
  const h = await startHarness({ config: harnessConfig(b.text) });
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const auth = { Authorization: `Bearer ${token}` };
  await h.clearMock();

  // rules: [lfi-110] on /api/receipts/export: the request reaches the service (its 404)
  t.equal((await send(h, 'GET', '/api/receipts/export?file=/etc/passwd', auth)).status, 404);
  // the same rule elsewhere still refuses
  const other = await send(h, 'GET', '/api/receipts?file=/etc/passwd', auth);
  t.equal(other.status, 403);
  t.equal(other.body.error, 'request_blocked');
  // targets: ["header:x-legacy-token"]: that header everywhere, no other header
  t.equal((await send(h, 'GET', '/api/receipts', { ...auth, 'X-Legacy-Token': '/etc/passwd' })).status, 200);
  t.equal((await send(h, 'GET', '/api/receipts', { ...auth, 'X-Other-Token': '/etc/passwd' })).status, 403);
  // routes + targets + families: the password on the login route
  t.equal(
    (await send(h, 'POST', '/api/auth/login', {}, { username: 'alice', password: 'p;ls$(id)' })).status,
    401,
  );

  const seen = await h.mockRequests();
  t.same(
    seen.map((r) => `${r.method} ${r.path}`),
    ['GET /api/receipts/export?file=/etc/passwd', 'GET /api/receipts', 'POST /api/auth/login'],
  );
  const lines = await blockedLines(h);
  t.equal(lines.length, 2);
  t.match(lines[0], {
    decision: 'deny',
    reason: 'path_traversal',
    status: 403,
    path: '/api/receipts?file=/etc/passwd',
    rule_ids: ['lfi-110'],
  });
  t.same((lines[0]!.detail as { matches: Obj[] }).matches, [
    { target: 'query:file', rule: 'lfi-110', excerpt: '/etc/passwd' },
  ]);
  t.match(lines[1], { reason: 'path_traversal', rule_ids: ['lfi-110'] });
  t.same(
    (lines[1]!.detail as { matches: Obj[] }).matches.map((m) => m.target),
    ['header:x-other-token'],
  );
  t.match(await metrics(h), /gateway_blocked_requests_total\{reason="path_traversal"\} 2\n/);
});

t.test('docs: whole policy in monitor mode logs and counts, lets the request through', async (t) => {
  const h = await startHarness({ config: harnessConfig('pattern_block: { mode: monitor }') });
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const auth = { Authorization: `Bearer ${token}` };
  await h.clearMock();
  const r = await send(h, 'POST', '/api/receipts?q=%3Bls', auth, { merchant: "x' or '1'='1", total: 1 });
  t.equal(r.status, 201, 'the request passes');
  t.equal((await h.mockRequests()).length, 1, 'and reaches the service');
  const lines = await blockedLines(h);
  t.equal(lines.length, 1, 'one would-be denial per request');
  t.match(lines[0], {
    event: 'request_blocked',
    decision: 'monitor',
    reason: 'cmd_injection',
    code: 'request_blocked',
    status: 201,
    rule_ids: ['rce-100'],
  });
  const m = await metrics(h);
  t.match(m, /gateway_requests_total\{route="api",method="POST",code="201",decision="monitor"\} 1\n/);
  t.notMatch(m, /gateway_blocked_requests_total\{/, 'not counted as blocked');
});

t.test('README example: a pack in monitor mode, a pack off, a stricter route in monitor', async (t) => {
  const b = block(README_BLOCKS, 'rule_files');
  const h = await startHarness({ config: harnessConfig(b.text), files: { 'rules/local.yaml': LOCAL_PACK } });
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const auth = { Authorization: `Bearer ${token}` };
  await h.clearMock();

  // packs: { protocol: monitor }: a restricted header passes, the would-be denial is logged
  t.equal((await send(h, 'GET', '/api/receipts', { ...auth, Proxy: 'x' })).status, 200);
  // php: off: a PHP tag is not inspected at all
  t.equal(
    (await send(h, 'POST', '/api/receipts', auth, { merchant: 'x', total: 1, ref: '<?php echo 1; ?>' }))
      .status,
    201,
  );
  // the enforced packs still refuse
  t.equal((await send(h, 'POST', '/api/receipts', auth, { merchant: "x' or '1'='1", total: 1 })).status, 403);
  // local-200 is paranoia 2: not run on the global level 1 (`{{total}}`, a bare placeholder, is
  // left alone by the shipped level-2 template rule rce-201, which wants an expression) ...
  t.equal((await send(h, 'GET', '/api/receipts?q={{total}}', auth)).status, 200);
  // ... run on the notes-import route (level 2), which is in monitor mode
  t.equal((await send(h, 'GET', '/api/import/batch?q={{total}}', auth)).status, 404, "the service's 404");

  const lines = await blockedLines(h);
  t.equal(lines.length, 3);
  t.match(lines[0], {
    decision: 'monitor',
    reason: 'protocol',
    status: 200,
    rule_ids: ['proto-260'],
    detail: { monitor: true, score: 5, families: { protocol: 5 } },
  });
  t.match(lines[1], { decision: 'deny', reason: 'sqli', status: 403, rule_ids: ['sqli-100'] });
  t.match(lines[2], {
    decision: 'monitor',
    reason: 'xss',
    status: 404,
    path: '/api/import/batch?q={{total}}',
    rule_ids: ['local-200'],
  });
  const m = await metrics(h);
  t.match(m, /gateway_requests_total\{route="api",method="GET",code="200",decision="monitor"\} 1\n/);
  t.match(m, /gateway_requests_total\{route="notes-import",method="GET",code="404",decision="monitor"\} 1\n/);
  t.match(m, /gateway_blocked_requests_total\{reason="sqli"\} 1\n/);
  t.notMatch(m, /gateway_blocked_requests_total\{reason="(?:protocol|xss|php)"\}/);
});

t.test('a paranoia level change selects the rules of the new level', async (t) => {
  const config = (level: number) =>
    `policies:\n  pattern_block:\n    paranoia_level: ${level}\n    rule_files: [rules/local.yaml]\n`;
  const h = await startHarness({ config: config(1), files: { 'rules/local.yaml': LOCAL_PACK } });
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const auth = { Authorization: `Bearer ${token}` };
  t.equal((await send(h, 'GET', '/api/receipts?q={{total}}', auth)).status, 200, 'level 1');
  await h.reload(config(2));
  const r = await send(h, 'GET', '/api/receipts?q={{total}}', auth);
  t.equal(r.status, 403, 'level 2');
  t.equal(r.body.error, 'request_blocked');
  const lines = await blockedLines(h);
  t.equal(lines.length, 1);
  t.match(lines[0], { decision: 'deny', reason: 'xss', status: 403, rule_ids: ['local-200'] });
  t.same((lines[0]!.detail as { matches: Obj[] }).matches, [
    { target: 'query:q', rule: 'local-200', excerpt: '{{total}}' },
  ]);
});

t.test('docs free-text example: one finding in a note passes, an injection does not', async (t) => {
  const b = block(DOC_BLOCKS, 'free_text_fields: [notes, description]');
  const h = await startHarness({ config: harnessConfig(b.text) });
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const auth = { Authorization: `Bearer ${token}` };
  const post = (body: Obj) =>
    send(h, 'POST', '/api/receipts', auth, { merchant: 'Corner Cafe', total: 4.5, ...body });

  t.equal((await post({ notes: 'call me;ls' })).status, 201, 'one finding (5) in a note: below 10');
  t.equal((await post({ description: 'call me;ls' })).status, 201, 'description is free text too');
  t.equal((await post({ merchant: 'call me;ls' })).status, 403, 'the same in another field: threshold 5');
  t.equal((await post({ notes: 'pay $(whoami)' })).status, 403, 'two findings (10) in a note');
  const lines = await blockedLines(h);
  t.equal(lines.length, 2);
  t.match(lines[0], { reason: 'cmd_injection', rule_ids: ['rce-100'], detail: { score: 5 } });
  t.match(lines[1], { reason: 'cmd_injection', rule_ids: ['rce-110', 'rce-100'], detail: { score: 10 } });
  t.same(
    (lines[1]!.detail as { matches: Obj[] }).matches.map((m) => m.target),
    ['json:notes', 'json:notes'],
  );
});

t.test('docs family threshold example: protocol anomalies need two findings', async (t) => {
  const b = block(DOC_BLOCKS, 'family_thresholds');
  const h = await startHarness({ config: harnessConfig(b.text) });
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const auth = { Authorization: `Bearer ${token}` };
  t.equal((await send(h, 'GET', '/api/receipts', { ...auth, Proxy: 'x' })).status, 200, 'one');
  t.equal(
    (await send(h, 'GET', '/api/receipts', { ...auth, Proxy: 'x', 'Lock-Token': 'y' })).status,
    403,
    'two',
  );
  const lines = await blockedLines(h);
  t.equal(lines.length, 1);
  t.match(lines[0], {
    reason: 'protocol',
    rule_ids: ['proto-260'],
    detail: { score: 10, families: { protocol: 10 } },
  });
});
