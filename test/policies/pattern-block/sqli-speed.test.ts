import t from 'tap';
import fc from 'fast-check';
import {
  cannotFireUnquoted,
  detectSqli,
  fingerprintOf,
  sqliContexts,
  SQL_LACKS_WORDS,
  SQL_NEEDS,
  tokenize,
} from '../../../policies/pattern-block/detectors/sqli.js';
import { contextsLikePlain, judgesLikeExhaustive } from '../../helpers/sqli.js';

/**
 * The SQL detector's shortcuts (the fingerprint gate before strongTokens and the judge) must
 * decide exactly what the exhaustive path decides, on values rich in SQL shapes.
 */

const SQL_FRAGMENTS = [
  ...["'", '"', '`', "''", '\\', ' ', '  ', '\t', '\n', '\u00a0', 'x', 'a', 'o', "o'", 'é', '—', '$', '_'],
  ...['1', '0', '5', '0x1f', '1e5', '3x', '.5', '1.', '=', '==', '!=', '<>', '<=>', '<', '>', ':=', '+', '-'],
  ...[
    '(',
    ')',
    ',',
    ';',
    '#',
    '--',
    '/*',
    '*/',
    '/*!',
    '&',
    '&&',
    '|',
    '||',
    '@',
    '@@',
    '@@version',
    '%',
    '.',
  ],
  ...['union', 'select', 'where', 'having', 'order', 'group', 'by', 'and', 'or', 'xor', 'like', 'is', 'in'],
  ...['mod', 'between', 'not', 'null', 'from', 'as', 'all', 'distinct', 'into', 'set', 'table', 'drop'],
  ...['insert', 'update', 'delete', 'exec', 'xp_cmdshell', 'waitfor', 'delay', 'sleep', 'benchmark', 'char'],
  ...['load_file', 'concat', 'user', 'version', 'if', 'case', 'end', 'true', 'limit', 'declare', 'login'],
  ...['orx', 'xor1', 'sand', 'unions', 'trader', "joe's", 'square', 'phone', 'ref', ';select', '; drop'],
  ...[
    'order by',
    'group by',
    'union select',
    "' or '1'='1",
    '1=1',
    ') or (',
    'sp_',
    'x.y',
    "'order'",
    '`by`',
  ],
];

t.test('the fingerprint gate decides what the exhaustive path decides', async (t) => {
  const fragment = fc.constantFrom(...SQL_FRAGMENTS);
  let fired = 0;
  fc.assert(
    fc.property(fc.array(fragment, { maxLength: 12 }), (parts) => {
      const v = parts.join('');
      if (detectSqli(v, true)) fired++;
      return judgesLikeExhaustive(v);
    }),
    { numRuns: 60000 },
  );
  t.ok(fired > 5000, `${fired} values fired`);
  // shapes near each rule of the gate
  for (const v of [
    "'order' 'by' 1",
    '`order` `by` 1,',
    "'select' x(1)",
    '`select` x(1)',
    'where 1 = 1',
    'as x where x=1',
    ')) or 1',
    "'a' = 'a'",
    "x' or 1 --",
    "x')--",
    'x"#',
    '1 and 1',
    '((and 1 = 1',
    'union square cafe 5',
    '## summary',
    'order by 3',
    "x' order by 3--",
    "## x' or 1=1",
    '# a\nunion select 1',
    '/* # */ union select 1',
    '/*#*/ or 1=1',
    'x #" or 1=1--',
    ') # x',
    '*/ # x',
    "o'brien's pub 5",
    'say "hi" or 1=1',
    "(x) 'a' or 1=1",
    "\"a' or '1'='1",
    '\'a" or "1"="1',
  ])
    t.same(detectSqli(v), detectSqli(v, true), v);
});

t.test(
  'a # comment ends what the unquoted shortcut looks at on its line, unless a quote follows',
  async (t) => {
    t.ok(cannotFireUnquoted('## summary - taxi (6:15am) approved by @mgr; union select 1'));
    t.ok(cannotFireUnquoted('## summary\n\n- taxi (6:15am) approved, 3 nights'));
    // the line after a `#` comment is SQL again
    t.notOk(cannotFireUnquoted('## summary\n\n- taxi (6:15am) approved by @mgr; union select 1'));
    t.notOk(cannotFireUnquoted('1 #\n or 1=1'));
    t.notOk(cannotFireUnquoted("## it's x' or 1=1"));
    t.notOk(cannotFireUnquoted('/* # */ union select 1'));
    t.notOk(cannotFireUnquoted(') # x'));
  },
);

t.test('the SQL contexts skip the patterns the value does not hold', async (t) => {
  const fragment = fc.constantFrom(...SQL_FRAGMENTS);
  fc.assert(
    fc.property(fc.array(fragment, { maxLength: 12 }), (parts) => {
      return contextsLikePlain(parts.join('')) ?? true;
    }),
    { numRuns: 40000 },
  );
  for (const v of ["o'neil or 1", "x' union", 'a "b" and c " or', "it's (x) or 'y", "order o'x"])
    t.same(sqliContexts(v), sqliContexts(v, true), v);
});

t.test('the fingerprint made without tokens is that of the tokens', async (t) => {
  const fragment = fc.constantFrom(...SQL_FRAGMENTS, '\\', "\\'", '""', '0b1', '`a`', 'sleep (', 'x/**/(');
  const context = fc.constantFrom('none' as const, "'" as const, '"' as const);
  fc.assert(
    fc.property(fc.array(fragment, { maxLength: 16 }), context, (parts, ctx) => {
      const v = parts.join('');
      const fp = tokenize(v, ctx, true)
        .map((x) => x.t)
        .join('');
      return fingerprintOf(v, ctx) === fp;
    }),
    { numRuns: 40000 },
  );
  const long = 'a b '.repeat(40);
  t.equal(fingerprintOf(long, 'none'), 'n'.repeat(48), 'at most 48 tokens');
  t.equal(fingerprintOf("x' or sleep(5)#", "'"), 's&f(1)c');
});

/** The `lacks` bits of `v` by SQL_NEEDS, read plainly (-1: it holds nothing of any group). */
function lacksOf(v: string): number {
  const l = v.toLowerCase();
  let lacks = 0;
  let held = false;
  for (const g of SQL_NEEDS) {
    if ([...g.chars].some((c) => l.includes(c)) || g.substrings.some((n) => l.includes(n))) held = true;
    else lacks |= g.lacks;
  }
  return held ? lacks : -1;
}

t.test(
  'the SQL detector decides alike when told what the value lacks (SQL_NEEDS), and never fires on a value holding nothing of them',
  async (t) => {
    // values rich in SQL shapes, and values made only of fragments holding nothing of some
    // group (numbers, operator words, function names, prose, whitespace)
    const noGroup = SQL_FRAGMENTS.filter((f) => lacksOf(f) < 0);
    const noWords = SQL_FRAGMENTS.filter((f) => lacksOf(f) >= 0 && (lacksOf(f) & 2) !== 0);
    t.ok(noGroup.length > 40, `${noGroup.length} fragments hold nothing of any group`);
    let fired = 0;
    let toldLacks = 0;
    let wrong = 0;
    for (const pool of [SQL_FRAGMENTS, noGroup, [...noGroup, ...noWords.slice(0, 30)]])
      fc.assert(
        fc.property(fc.array(fc.constantFrom(...pool), { maxLength: 12 }), (parts) => {
          const v = parts.join('');
          const found = detectSqli(v);
          const lacks = lacksOf(v);
          if (found) fired++;
          if (lacks < 0) {
            if (found !== undefined || detectSqli(v, true) !== undefined) wrong++;
            return wrong === 0;
          }
          if (lacks !== 0) toldLacks++;
          if (JSON.stringify(detectSqli(v, false, lacks)) !== JSON.stringify(found)) wrong++;
          return wrong === 0;
        }),
        { numRuns: 30000 },
      );
    t.ok(fired > 2000, `${fired} values fired`);
    t.ok(toldLacks > 10000, `${toldLacks} values told what they lack`);
    t.equal(wrong, 0);
    t.equal(detectSqli('1 like 2 between 3'), undefined);
    for (const v of [
      'sleep(5)',
      "1'",
      'x;select 1',
      '1 -- x',
      'a/*b*/',
      '1 OR 2#',
      'UNION SELECT 1',
      '1 or 2',
    ])
      t.not(lacksOf(v), -1, v);
    // the bits skip the gates they name (told wrongly, the detector believes them)
    t.ok(detectSqli('1 union select 2'));
    t.equal(detectSqli('1 union select 2', false, SQL_LACKS_WORDS), undefined);
  },
);
