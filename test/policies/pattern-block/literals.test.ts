import t from 'tap';
import fc from 'fast-check';
import { loadPackDir, shippedRulesDir, parsePack } from '../../../policies/pattern-block/rules.js';
import {
  requiredLiterals,
  alternativeLiterals,
  boundedLiterals,
  confirmOf,
  bare,
  BOUNDARY,
  buildScanner,
  scanLiterals,
  scanLiteralsAndMask,
  scanLiteralsSkipping,
  scanLiteralsCompressing,
  foldCode,
  lowerScansAlike,
} from '../../../policies/pattern-block/literals.js';
import {
  compileEngine,
  DEFAULT_ENGINE_OPTIONS,
  inspectRequest,
  type Engine,
  type RawRequest,
} from '../../../policies/pattern-block/engine.js';
import {
  TRANSFORMS,
  WS_UNIT,
  compressWhitespaceRuns,
  removeWhitespace,
} from '../../../policies/pattern-block/transforms.js';
import { charMask } from '../../../policies/pattern-block/charmask.js';

/**
 * The literal prefilter skips a rule when a value holds none of the literals derived from
 * its regex. These check that the derivation is a necessary condition (a value the regex
 * matches always holds one), that the automaton finds exactly the literals a plain search
 * finds, and that an engine with the prefilter decides exactly what one without it decides.
 */

const rules = loadPackDir(shippedRulesDir());

function fold(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) out += String.fromCharCode(foldCode(s.charCodeAt(i)));
  return out;
}

function holdsOne(lits: readonly string[], s: string): boolean {
  const f = fold(s);
  return lits.some((l) => f.includes(l));
}

t.test('derivation of required literals', async (t) => {
  t.same(requiredLiterals('abc', ''), ['abc']);
  t.same(requiredLiterals('ABC', 'i'), ['abc']);
  t.same(requiredLiterals('a|bc', '')!.sort(), ['a', 'bc']);
  t.same(requiredLiterals('\\bsleep ?\\(', '')!.sort(), ['sleep (', 'sleep(']);
  t.same(requiredLiterals('(?:ab)?', ''), undefined);
  t.same(requiredLiterals('x*', ''), undefined);
  t.same(requiredLiterals('.+', ''), undefined);
  t.same(requiredLiterals('(.)\\1', ''), undefined, 'a backreference is not followed');
  t.same(requiredLiterals('[^a]bc', ''), ['bc']);
  t.same(requiredLiterals('(?=abc)d', ''), ['d'], 'a lookahead consumes nothing');
  t.same(requiredLiterals('(?<!x)yz', ''), ['yz']);
  t.same(requiredLiterals('a{2}b', ''), ['aab']);
  t.same(requiredLiterals('a{2,}bcd', ''), ['bcd'], 'the rarest candidate of a sequence');
  t.same(requiredLiterals('[ab]c', '')!.sort(), ['ac', 'bc']);
  t.same(requiredLiterals('\\x41\\u0042', ''), ['ab']);
  t.same(requiredLiterals('a{', ''), ['a{'], 'Annex B: a brace that is no quantifier is a character');
  t.same(requiredLiterals('union|union select', ''), ['union'], 'a literal holding another is dropped');
  t.same(requiredLiterals('café', ''), ['caf\u0080'], 'non-ASCII folds to one character');
  t.same(requiredLiterals('abc', 'iu'), undefined, 'Unicode case folding maps some non-ASCII to ASCII');
  t.same(requiredLiterals('(?<n>a)\\k<n>', ''), undefined);
});

/** Literal sets of a few short literals, as requirements of a scanner. */
const literalSets = fc.array(
  fc.array(fc.string({ unit: fc.constantFrom('a', 'b', 'A', '(', 'é', ' '), minLength: 1, maxLength: 4 }), {
    minLength: 1,
    maxLength: 4,
  }),
  { minLength: 1, maxLength: 6 },
);
/** Texts with whitespace of several kinds (runs, tab, NBSP) among letters and punctuation. */
const scanText = fc.string({
  unit: fc.constantFrom('a', 'b', 'B', '(', 'ü', ' ', '  ', '\t', '\n', '\r\n', '\u00a0', 'x', '%', '<'),
  maxLength: 24,
});

t.test('the automaton finds what a plain search finds', async (t) => {
  fc.assert(
    fc.property(
      literalSets,
      fc.string({ unit: fc.constantFrom('a', 'b', 'B', '(', 'ü', ' ', 'x'), maxLength: 24 }),
      (reqs, text) => {
        const folded = reqs.map((r) => r.map(fold));
        const sc = buildScanner(folded);
        const hit = new Int32Array(sc.size * 2);
        scanLiterals(sc, text, hit, 7, sc.size);
        for (let k = 0; k < folded.length; k++) {
          if ((hit[sc.size + k] === 7) !== holdsOne(folded[k]!, text)) return false;
          if (hit[k] !== 0) return false;
        }
        return true;
      },
    ),
    { numRuns: 2000 },
  );
  t.pass('same hits');
});

t.test('the fused scans equal the scan and the signature they inline', async (t) => {
  fc.assert(
    fc.property(literalSets, scanText, (reqs, text) => {
      const sc = buildScanner(reqs.map((r) => r.map(fold)));
      const plain = new Int32Array(sc.size);
      const fused = new Int32Array(sc.size);
      // scanLiteralsAndMask: the scan of the text and its signature, and the OR of the plan
      // bits of the requirements found (here bit k for requirement k, modulo 31)
      scanLiterals(sc, text, plain, 1);
      const mask = { lo: 0, hi: 0 };
      const plansOf = Int32Array.from({ length: sc.size }, (_, k) => 1 << (k % 31));
      const plans = scanLiteralsAndMask(sc, text, fused, 1, 0, mask, plansOf);
      const sig = charMask(text, { lo: 0, hi: 0 });
      if (mask.lo !== sig.lo || mask.hi !== sig.hi || plain.join() !== fused.join()) return false;
      let found = 0;
      for (let k = 0; k < sc.size; k++) if (plain[k] === 1) found |= plansOf[k]!;
      if (plans !== found) return false;
      // scanLiteralsSkipping: the scan of the text without its whitespace
      plain.fill(0);
      fused.fill(0);
      scanLiterals(sc, removeWhitespace(text), plain, 1);
      scanLiteralsSkipping(sc, text, fused, 1, 0, WS_UNIT);
      if (plain.join() !== fused.join()) return false;
      // scanLiteralsCompressing: the scan of the text with its whitespace runs compressed
      plain.fill(0);
      fused.fill(0);
      scanLiterals(sc, compressWhitespaceRuns(text), plain, 1);
      scanLiteralsCompressing(sc, text, fused, 1, 0, WS_UNIT);
      return plain.join() === fused.join();
    }),
    { numRuns: 3000 },
  );
  t.pass('same hits and signature');
});

/** Characters and fragments the generated values are made of: every rule's literals and examples, and punctuation. */
/** Ids of the rules of `e` that match the JSON body `{"a": v}`. */
function jsonValueRuleIds(e: Engine, v: string): string[] {
  return inspectRequest(e, {
    method: 'POST',
    target: '/x',
    headers: { Host: 'h', 'Content-Type': 'application/json' },
    body: JSON.stringify({ a: v }),
  }).matches.map((m) => m.ruleId);
}

const FRAGMENTS: string[] = (() => {
  const out = new Set<string>([
    "'",
    '"',
    '(',
    ')',
    ';',
    '<',
    '>',
    '=',
    ' ',
    '  ',
    '\t',
    '\n',
    '%',
    '/',
    '\\',
  ]);
  out.add('A').add('z').add('0').add('9').add('é').add('＜').add('\u0000');
  // word characters beside a word literal (`or` in `for` and `airport`, `_` and digits are word characters)
  out.add('f').add('airp').add('_').add('\n\n');
  // lower-case to ASCII letters (Kelvin sign, capital I with dot), also percent-encoded
  out.add('\u212a').add('\u0130').add('%E2%84%AA').add('%C4%B0');
  for (const r of rules) {
    if (r.regex !== undefined) for (const l of requiredLiterals(r.regex, r.flags ?? '') ?? []) out.add(l);
    for (const ex of [...r.examples.match, ...r.examples.no_match]) if (typeof ex === 'string') out.add(ex);
  }
  return [...out];
})();
const value = fc.array(fc.constantFrom(...FRAGMENTS), { maxLength: 6 }).map((a) => a.join(''));
const mixedCase = fc.tuple(value, fc.boolean()).map(([v, up]) => (up ? v.toUpperCase() : v));

t.test('every shipped regex: a value it matches holds one of its literals', async (t) => {
  const regexRules = rules.filter((r) => r.regex !== undefined);
  let derived = 0;
  for (const r of regexRules) {
    const lits = requiredLiterals(r.regex!, r.flags ?? '');
    if (lits === undefined) continue;
    derived++;
    const re = new RegExp(r.regex!, r.flags ?? '');
    const transformed = (v: string) => r.transforms.reduce((x, name) => TRANSFORMS[name]!(x), v);
    for (const ex of [...r.examples.match, ...r.examples.no_match]) {
      if (typeof ex !== 'string') continue;
      const v = transformed(ex);
      if (re.test(v) && !holdsOne(lits, v))
        t.fail(`${r.id}: example ${JSON.stringify(ex)} matches without a literal`);
    }
    fc.assert(
      fc.property(mixedCase, (raw) => {
        for (const v of [raw, transformed(raw)]) if (re.test(v) && !holdsOne(lits, v)) return false;
        return true;
      }),
      { numRuns: 300 },
    );
  }
  t.ok(derived > 40, `literals derived for ${derived} of ${regexRules.length} regex rules`);
});

t.test('word boundaries of required literals', async (t) => {
  const marked = (src: string) =>
    boundedLiterals(src, '')
      ?.map((l) => l.replaceAll(BOUNDARY, '|'))
      .sort();
  t.same(marked('\\bor\\b'), ['|or|']);
  t.same(marked('\\bor\\b|\\bxor\\b'), ['or|'], '`or` keeps the boundary after it that `xor` gives it');
  t.same(marked('\\bor\\b|order'), ['or'], 'and none for `order`');
  t.same(marked('\\bor\\b|\\$or'), ['|or'], 'the `$` of `$or` is a boundary before it');
  t.same(marked('\\bor\\b|\\bor'), ['|or'], 'a boundary only every form has');
  t.same(marked('\\b(?:x|y)\\b'), ['|x|', '|y|']);
  t.same(marked('a\\bor'), ['aor'], 'a boundary inside a literal is not kept');
  t.same(requiredLiterals('\\bor\\b|\\bxor\\b', ''), ['or'], 'requiredLiterals: without the marks');
  const logic = confirmOf(boundedLiterals('\\b(?:and|or)\\b|&&', '')!)!;
  for (const yes of ['a OR b', "1'or'1", 'x && y', 'or', 'AND 1']) t.ok(logic.test(yes), yes);
  for (const no of ['airport', 'order', 'for', 'sandwich', 'x & y']) t.notOk(logic.test(no), no);
  const union = confirmOf(boundedLiterals('\\bunion select\\b', '')!)!;
  t.ok(union.test('1 UNION\n\n  SELECT 2'), 'whitespace in a literal: any run of it');
  t.notOk(union.test('reunion select'));
  t.equal(confirmOf(['&&', 'or']), undefined, 'no boundary: the hit is enough');
  t.equal(confirmOf(['group', `${BOUNDARY}or${BOUNDARY}`]), undefined, 'a word without boundaries beside');
  t.equal(confirmOf([`${BOUNDARY}\u0080x`]), undefined, 'a non-ASCII character (the automaton folds them)');
});

t.test('every shipped regex: a value it matches holds a literal with its boundaries', async (t) => {
  let confirmed = 0;
  for (const r of rules) {
    if (r.regex === undefined) continue;
    // the whole regex and each of its top-level alternatives, each with its confirmation
    const flags = r.flags ?? '';
    const parts = [
      { source: r.regex, literals: boundedLiterals(r.regex, flags) },
      ...(alternativeLiterals(r.regex, flags) ?? []),
    ].flatMap((p) => {
      const c = p.literals === undefined ? undefined : confirmOf(p.literals);
      return c === undefined ? [] : [{ re: new RegExp(p.source, flags), confirm: c }];
    });
    if (parts.length === 0) continue;
    confirmed++;
    const transformed = (v: string) => r.transforms.reduce((x, name) => TRANSFORMS[name]!(x), v);
    // the string a plain scan read (the regex's own, up to case), and the value an ASCII
    // value's compressing scan read before its whitespace runs became one space
    const holds = (raw: string) =>
      parts.every(({ re, confirm }) => {
        for (const v of [raw, transformed(raw)]) if (re.test(v) && !confirm.test(v)) return false;
        if (
          [...raw].every((c) => c.charCodeAt(0) < 128) &&
          re.test(compressWhitespaceRuns(raw).toLowerCase())
        )
          return confirm.test(raw);
        return true;
      });
    for (const ex of [...r.examples.match, ...r.examples.no_match])
      if (typeof ex === 'string' && !holds(ex)) t.fail(`${r.id}: example ${JSON.stringify(ex)}`);
    fc.assert(fc.property(mixedCase, holds), { numRuns: 300 });
  }
  t.ok(confirmed > 20, `boundaries confirmed for ${confirmed} regex rules`);
});

t.test('a regex whose literal occurs only inside words is not run', async (t) => {
  // sqli-160 requires `&&`, `||`, `\band\b` or `or\b`: `airport`, `order` and `sandwich`
  // hold the automaton's `or` and `and`, and a note with line breaks would otherwise be
  // compressed and lower-cased for it
  const engine = compileEngine({ ...DEFAULT_ENGINE_OPTIONS, rules });
  const plans = engine.plansByKind.get('query')!.plans;
  const rule = plans.flatMap((p) => p.groups.flatMap((g) => g.rules)).find((r) => r.id === 'sqli-160')!;
  const exec = rule.regex!.exec;
  let runs = 0;
  rule.regex!.exec = function (s: string) {
    runs++;
    return exec.call(this, s);
  };
  const ask = (note: string) => {
    runs = 0;
    return inspectRequest(engine, {
      method: 'GET',
      target: `/api/receipts?q=${encodeURIComponent(note)}`,
      headers: { Host: 'receipts.example.com' },
    });
  };
  t.equal(ask('Summary\n\n- taxi to the airport (6:15am)\n- a sandwich to order').decision, 'allow');
  t.equal(runs, 0, 'not run for `or` and `and` inside words');
  t.equal(ask('Summary\n\n- taxi or (bus)').decision, 'allow');
  t.equal(runs, 1, 'run for the word `or`');
  t.equal(ask('x\n\nor 1=1').decision, 'deny');
  t.equal(runs, 1);
});

/**
 * For one test rule (its YAML lines after `id`), with and without the prefilter: the ids of the
 * rules matching a query value `q` (sent percent-encoded).
 */
function queryMatchers(
  rule: readonly string[],
  options: Partial<typeof DEFAULT_ENGINE_OPTIONS> = {},
): ((q: string) => string[])[] {
  const pack = parsePack(
    ['- id: test-rule', '  score: 5', '  description: test', '  targets: [args]', ...rule].join('\n'),
    'test',
    'test.yaml',
  );
  const opts = { ...DEFAULT_ENGINE_OPTIONS, ...options, rules: pack };
  return [compileEngine(opts), compileEngine({ ...opts, prefilter: false })].map(
    (e) => (q: string) =>
      inspectRequest(e, {
        method: 'GET',
        target: `/x?q=${encodeURIComponent(q)}`,
        headers: { Host: 'h' },
      }).matches.map((m) => m.ruleId),
  );
}

t.test('boundaries are not judged on a scan without whitespace', async (t) => {
  // the rule reads the value without its whitespace: `) ( id` is `)(id` there, where `\\)\\(id\\b`
  // matches, while the value as received holds no `)(id`
  for (const ids of queryMatchers([
    '  family: cmd_injection',
    '  requires: "("',
    '  transforms: [url_decode, lowercase, remove_whitespace]',
    '  regex: "\\\\)\\\\((?:id|ls)\\\\b"',
  ])) {
    t.same(ids('f ( x ) ( ID'), ['test-rule']);
    t.same(ids('f(x)(idle)'), []);
  }
});

t.test('boundaries are not judged on a value the regexes see in windows', async (t) => {
  // 64 characters at a time, each window 56 after the last: the second starts at `or`, where
  // the regex finds the word `or` that the whole value (`…xor 1…`) does not hold
  const rule = ['  family: sqli', '  transforms: [lowercase]', '  regex: "\\\\bor\\\\b"'];
  for (const ids of queryMatchers(rule, { maxValueLength: 64 })) {
    t.same(ids(`${'x'.repeat(56)}or 1${'x'.repeat(10)}`), ['test-rule']);
    t.same(ids(`${'x'.repeat(50)}or 1${'x'.repeat(16)}`), []);
  }
});

t.test('a regex is split into its top-level alternatives, each with its literals', async (t) => {
  t.same(alternativeLiterals('a|b(c|d)|[|x]|e\\|f', ''), [
    { source: 'a', literals: ['a'] },
    { source: 'b(c|d)', literals: ['bc', 'bd'] },
    { source: '[|x]', literals: ['|', 'x'] },
    { source: 'e\\|f', literals: ['e|f'] },
  ]);
  // one alternative, one without literals, a backreference or a named group: not split
  t.equal(alternativeLiterals('(?:a|b)c', ''), undefined);
  t.equal(alternativeLiterals('abc|x*', ''), undefined);
  t.equal(alternativeLiterals('(a)\\1|b', ''), undefined);
  t.equal(alternativeLiterals('(?<x>a)|b', ''), undefined);
  t.equal(alternativeLiterals('a|b(?<=a)|(?<!c)d', '')?.length, 3);
  // every shipped split: the alternatives joined are the pattern, and a match of the pattern
  // on each rule's examples is a match of one alternative holding one of its literals
  for (const r of rules) {
    if (r.regex === undefined) continue;
    const alts = alternativeLiterals(r.regex, r.flags ?? '');
    if (alts === undefined) continue;
    t.equal(alts.map((a) => a.source).join('|'), r.regex, r.id);
    for (const ex of r.examples.match) {
      if (typeof ex !== 'string') continue;
      const x = r.transforms.reduce((s, name) => TRANSFORMS[name]!(s), ex);
      const folded = [...x].map((c) => String.fromCharCode(foldCode(c.charCodeAt(0)))).join('');
      // (and with the word boundaries the literals' marks ask for)
      t.ok(
        alts.some(
          (a) =>
            new RegExp(a.source, r.flags ?? '').test(x) &&
            a.literals.some((l) => folded.includes(bare(l))) &&
            (confirmOf(a.literals)?.test(x) ?? true),
        ),
        `${r.id}: ${JSON.stringify(ex)}`,
      );
    }
  }
});

t.test('an engine with the prefilter decides exactly what one without it decides', async (t) => {
  const opts = { ...DEFAULT_ENGINE_OPTIONS, rules, paranoiaLevel: 4, freeTextFields: ['notes'] };
  const withIt = compileEngine(opts);
  const without = compileEngine({ ...opts, prefilter: false });
  const requests = (v: string): RawRequest[] => {
    const enc = encodeURIComponent(v);
    const headerSafe = /^[\x20-\x7e]*$/.test(v) && v.trim() === v;
    return [
      {
        method: 'GET',
        target: `/api/receipts/${enc}?q=${enc}&${enc}=1`,
        headers: {
          Host: 'receipts.example.com',
          ...(headerSafe
            ? { 'User-Agent': v, Referer: v, 'X-Note': v, Cookie: `c=${v.replace(/;/g, '')}` }
            : {}),
        },
      },
      {
        method: 'POST',
        target: '/api/receipts',
        headers: { Host: 'receipts.example.com', 'Content-Type': 'application/json' },
        body: JSON.stringify({ merchant: v, notes: v, [v]: [v] }),
      },
      {
        method: 'POST',
        target: '/api/receipts',
        headers: { Host: 'receipts.example.com', 'Content-Type': 'application/x-www-form-urlencoded' },
        body: `file=${enc}&${enc}=x`,
      },
    ];
  };
  const same = (v: string) =>
    requests(v).every(
      (req) => JSON.stringify(inspectRequest(withIt, req)) === JSON.stringify(inspectRequest(without, req)),
    );
  for (const r of rules)
    for (const ex of [...r.examples.match, ...r.examples.no_match])
      if (typeof ex === 'string' && !same(ex)) t.fail(`${r.id}: ${JSON.stringify(ex)} decided differently`);
  fc.assert(fc.property(mixedCase, same), { numRuns: 1500 });
  fc.assert(
    fc.property(
      fc.string({
        unit: fc.constantFrom('%', '2', '7', 'c', '3', '+', '&', '#', ';', 'x', 'u', '\\', "'", '('),
        maxLength: 16,
      }),
      same,
    ),
    { numRuns: 500 },
  );
  t.pass('no difference');
});

t.test('non-ASCII letters that lower-case to ASCII are scanned as lower-cased', async (t) => {
  // a chain without NFKC: the Kelvin sign only becomes `k` in the lowercase step
  const pack = parsePack(
    [
      '- id: test-kill',
      '  family: cmd_injection',
      '  score: 5',
      '  description: test',
      '  targets: [args, path]',
      '  transforms: [url_decode, lowercase]',
      '  regex: "kill"',
      '- id: test-hi',
      '  family: cmd_injection',
      '  score: 5',
      '  description: test',
      '  targets: [args]',
      '  transforms: [lowercase]',
      '  regex: "\\\\bhi\\\\b"',
    ].join('\n'),
    'test',
    'test.yaml',
  );
  const opts = { ...DEFAULT_ENGINE_OPTIONS, rules: pack };
  for (const e of [compileEngine(opts), compileEngine({ ...opts, prefilter: false })])
    for (const target of ['/x?q=%E2%84%AAill', '/\u212aill', '/x?q=\u212aILL'])
      t.same(
        inspectRequest(e, { method: 'GET', target, headers: { Host: 'h' } }).matches.map((m) => m.ruleId),
        ['test-kill'],
        target,
      );
  // U+0130 is NFKC-stable and lower-cases to `i` and a combining dot: "hİ" takes the stable
  // path, and only its lower-cased form holds `hi`
  for (const e of [compileEngine(opts), compileEngine({ ...opts, prefilter: false })]) {
    t.same(jsonValueRuleIds(e, 'h\u0130'), ['test-hi']);
    const query = inspectRequest(e, { method: 'GET', target: '/x?q=h%C4%B0', headers: { Host: 'h' } });
    t.same(
      query.matches.map((m) => m.ruleId),
      ['test-hi'],
    );
  }
});

t.test('lowerScansAlike: lower-casing changes the scan only for U+0130 and U+212A', async (t) => {
  // the claim, over every code point: the lower case of a non-ASCII character is as many
  // code units, none ASCII (so the scan, which folds every non-ASCII unit alike, sees the
  // same classes), except U+0130 and U+212A
  const changes: number[] = [];
  for (let cp = 0x80; cp <= 0x10ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const s = String.fromCodePoint(cp);
    const l = s.toLowerCase();
    let same = l.length === s.length;
    for (let i = 0; same && i < l.length; i++) same = foldCode(l.charCodeAt(i)) === foldCode(s.charCodeAt(i));
    if (!same) changes.push(cp);
  }
  t.same(changes, [0x130, 0x212a]);
  t.equal(lowerScansAlike('Café — 東京 Ωμέγα ΣΑΣ 🙂'), true);
  t.equal(lowerScansAlike('\u212aill'), false);
  t.equal(lowerScansAlike('h\u0130'), false);
  // and so the scan of a value and of its lower case agree
  const sc = buildScanner([['kill'], ['ss'], ['ia']]);
  fc.assert(
    fc.property(
      fc.string({
        unit: fc.constantFrom('K', 'i', 'L', 'l', 'S', 'ẞ', 'ß', 'Σ', 'é', 'É', 'A', ' ', '🙂'),
        maxLength: 16,
      }),
      (text) => {
        if (!lowerScansAlike(text)) return true;
        const a = new Int32Array(sc.size);
        const b = new Int32Array(sc.size);
        scanLiterals(sc, text, a, 1);
        scanLiterals(sc, text.toLowerCase(), b, 1);
        return a.every((x, k) => x === b[k]);
      },
    ),
    { numRuns: 2000 },
  );
});

t.test('a chain that normalises after removing whitespace is not taken for a stable variant', async (t) => {
  const pack = parsePack(
    [
      '- id: test-nfkc-late',
      '  family: xss',
      '  score: 5',
      '  description: test',
      '  targets: [args]',
      '  transforms: [remove_whitespace, nfkc]',
      '  regex: "\\u00e9x"',
    ].join('\n'),
    'test',
    'test.yaml',
  );
  // NFKC leaves "e \u0301x" alone; without its space it composes to "éx"
  for (const prefilter of [true, false]) {
    const e = compileEngine({ ...DEFAULT_ENGINE_OPTIONS, rules: pack, prefilter });
    t.same(jsonValueRuleIds(e, 'e \u0301x'), ['test-nfkc-late']);
  }
});

t.test('a rule that refers to its own groups is never joined with others', async (t) => {
  // the rules of a group (same transforms, gate and flags) and the fast path's rules without
  // literals run as one alternation, where `\1` would name another rule's group
  for (const requires of ['  requires: "-"', '']) {
    const rule = (id: string, regex: string) =>
      [
        `- id: ${id}`,
        '  family: cmd_injection',
        '  score: 5',
        '  description: test',
        '  targets: [args]',
        '  transforms: [lowercase]',
        ...(requires ? [requires] : []),
        `  regex: ${JSON.stringify(regex)}`,
      ].join('\n');
    const pack = parsePack(
      [rule('test-first', 'z(q)z'), rule('test-backref', '^(?=(a+))\\1b')].join('\n'),
      'x',
      'x.yaml',
    );
    for (const prefilter of [true, false]) {
      const e = compileEngine({ ...DEFAULT_ENGINE_OPTIONS, rules: pack, prefilter });
      t.same(
        jsonValueRuleIds(e, 'aab-'),
        ['test-backref'],
        `${requires || 'no gate'}, prefilter ${prefilter}`,
      );
      t.same(jsonValueRuleIds(e, 'zqz-'), ['test-first']);
      t.same(jsonValueRuleIds(e, 'aa-'), []);
    }
    // two rules naming a group alike: joined, the alternation would not even compile
    const named = parsePack(
      [rule('test-named-a', '(?<n>x)1'), rule('test-named-b', '(?<n>y)2')].join('\n'),
      'x',
      'x.yaml',
    );
    for (const prefilter of [true, false]) {
      const e = compileEngine({ ...DEFAULT_ENGINE_OPTIONS, rules: named, prefilter });
      t.same(jsonValueRuleIds(e, 'x1-'), ['test-named-a'], `named groups, prefilter ${prefilter}`);
      t.same(jsonValueRuleIds(e, 'y2-'), ['test-named-b']);
    }
  }
});
