import t from 'tap';
import { check } from 'recheck';
import {
  loadPackDir,
  shippedRulesDir,
  parsePack,
  type RuleDef,
} from '../../../policies/pattern-block/rules.js';
import {
  compileEngine,
  DEFAULT_ENGINE_OPTIONS,
  inspectRequest,
  type Engine,
} from '../../../policies/pattern-block/engine.js';
import { TRANSFORMS } from '../../../policies/pattern-block/transforms.js';
import { VALUE_DETECTORS } from '../../../policies/pattern-block/detectors/index.js';
import { INTERNAL_PATTERNS } from '../../../policies/pattern-block/detectors/patterns.js';
import { ConfigError } from '../../../gateway/errors.js';
import { charMask, gateOf, passes } from '../../../policies/pattern-block/charmask.js';

const rules = loadPackDir(shippedRulesDir());

/** Apply a rule to one value the way the engine does (transforms, then the operator). */
function ruleMatchesValue(r: RuleDef, value: string): boolean {
  let v = value;
  for (const name of r.transforms) v = TRANSFORMS[name]!(v);
  if (r.regex !== undefined) return new RegExp(r.regex, r.flags ?? '').test(v);
  return VALUE_DETECTORS[r.detector!]!(v) !== undefined;
}

/** Run a request example through an engine that holds every shipped rule (paranoia 4). */
const engine: Engine = compileEngine({ ...DEFAULT_ENGINE_OPTIONS, rules, paranoiaLevel: 4 });
function ruleMatchesRequest(
  r: RuleDef,
  ex: { method?: string; target: string; headers?: Record<string, string>; body?: string | null },
): boolean {
  const v = inspectRequest(engine, {
    method: ex.method ?? 'GET',
    target: ex.target,
    headers: { Host: 'receipts.example.com', 'User-Agent': 'test', ...(ex.headers ?? {}) },
    body: ex.body ?? null,
  });
  return v.matches.some((m) => m.ruleId === r.id);
}

t.test('the shipped packs load, ids are unique, every rule has examples', async (t) => {
  t.ok(rules.length >= 40, `${rules.length} rules`);
  t.equal(new Set(rules.map((r) => r.id)).size, rules.length);
  for (const r of rules)
    t.ok(r.examples.match.length + r.examples.no_match.length > 0, `${r.id} has examples`);
});

t.test('every rule matches its positive examples and not its negative ones', async (t) => {
  for (const r of rules) {
    for (const ex of r.examples.match) {
      const hit = typeof ex === 'string' ? ruleMatchesValue(r, ex) : ruleMatchesRequest(r, ex);
      t.ok(hit, `${r.id} matches ${JSON.stringify(ex)}`);
    }
    for (const ex of r.examples.no_match) {
      const hit = typeof ex === 'string' ? ruleMatchesValue(r, ex) : ruleMatchesRequest(r, ex);
      t.notOk(hit, `${r.id} does not match ${JSON.stringify(ex)}`);
    }
  }
});

t.test('the gates of a rule let its positive string examples through', async (t) => {
  // String examples are judged by the operator alone (above); the engine first checks the
  // `requires` characters and `requires_any` substrings on the transformed value, so a gate
  // naming a character the signature does not track (a lower-case letter) or a substring the
  // attack need not hold would silently switch the rule off in the gateway.
  for (const r of rules) {
    if (r.requires === undefined && r.requiresAny === undefined) continue;
    for (const ex of r.examples.match) {
      if (typeof ex !== 'string') continue;
      let v = ex;
      for (const name of r.transforms) v = TRANSFORMS[name]!(v);
      if (r.requires !== undefined)
        t.ok(
          passes(charMask(v, { lo: 0, hi: 0 }), gateOf(r.requires)),
          `${r.id} requires: ${JSON.stringify(ex)}`,
        );
      if (r.requiresAny !== undefined) {
        const folded = v.toLowerCase();
        t.ok(
          r.requiresAny.some((s) => folded.includes(s.toLowerCase())),
          `${r.id} requires_any: ${JSON.stringify(ex)}`,
        );
      }
    }
  }
});

t.test('every shipped regex is linear-time (recheck)', async (t) => {
  const sources = [
    ...rules
      .filter((r) => r.regex !== undefined)
      .map((r) => ({ id: r.id, source: r.regex!, flags: r.flags ?? '' })),
    ...rules
      .filter((r) => r.names !== undefined)
      .map((r) => ({ id: `${r.id} names`, source: r.names!, flags: 'i' })),
    ...INTERNAL_PATTERNS.map((p) => ({
      id: p.name,
      source: p.re.source,
      flags: p.re.flags.replace(/[gy]/g, ''),
    })),
  ];
  // The automaton checker proves the absence of exponential backtracking quickly; polynomial
  // (quadratic) worst cases are bounded by max_value_length, the cap on every scanned value.
  const results = await Promise.all(
    sources.map((s) => check(s.source, s.flags, { checker: 'automaton', timeout: 1000 })),
  );
  for (const [i, s] of sources.entries()) {
    const res = results[i]!;
    const exponential = res.status === 'vulnerable' && res.complexity.type === 'exponential';
    t.notOk(
      exponential,
      `${s.id}: ${res.status}${res.status === 'vulnerable' ? ` (${res.complexity.summary})` : ''}`,
    );
  }
});

t.test('pack validation names the file and rule', async (t) => {
  const bad = (yaml: string) => () => parsePack(yaml, 'x', 'x.yaml');
  t.throws(bad('- { id: a, family: nope, targets: [args], regex: "x" }'), ConfigError);
  t.throws(bad('- { id: a, family: sqli, targets: [nowhere], regex: "x" }'), /unknown target/);
  t.throws(bad('- { id: a, family: sqli, targets: [args], regex: "(" }'), /invalid regex/);
  t.throws(
    bad('- { id: a, family: sqli, targets: [args], transforms: [rot13], regex: "x" }'),
    /unknown transform/,
  );
  t.throws(bad('- { id: a, family: sqli, targets: [args], detector: nope }'), /unknown detector/);
  t.throws(bad('- { id: a, family: sqli, targets: [args], regex: "x", detector: sqli }'), /exactly one/);
  t.throws(bad('- { id: a, family: sqli, targets: [args], regex: "x", extra: 1 }'), /unknown key "extra"/);
  t.equal(
    parsePack(
      'rules:\n  - { id: ok-1, family: xss, targets: ["headers:referer"], regex: "x" }',
      'p',
      'p.yaml',
    )[0]!.pack,
    'p',
  );
});

t.test("proto-240's lookahead form matches exactly where the plain pattern does", async (t) => {
  // the lookahead and its backreference read the run before the first parenthesis once; the
  // plain `^[^()]{0,200}\)…` (what the rule means) backtracks through it
  const shipped = rules.find((r) => r.id === 'proto-240')!;
  const atomic = new RegExp(shipped.regex!, shipped.flags ?? '');
  const plain = /^[^()]{0,200}\)\s*\(\s*[a-z&|!*]/;
  const alphabet = 'a()x \t&*|!';
  let seed = 7;
  const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  let matched = 0;
  for (let i = 0; i < 50_000; i++) {
    const n = i % 10 === 0 ? 190 + (next() % 20) : next() % 14;
    let s = '';
    for (let k = 0; k < n; k++) s += alphabet[next() % alphabet.length];
    const want = plain.test(s);
    if (want) matched++;
    if (atomic.test(s) !== want) {
      t.fail(JSON.stringify(s));
      break;
    }
  }
  t.ok(matched > 100, `both outcomes generated (${matched} matches)`);
});
