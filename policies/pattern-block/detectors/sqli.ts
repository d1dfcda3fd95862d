/**
 * SQL-injection detector: a small SQL tokenizer and a judge over token-class fingerprints,
 * in the spirit of libinjection (written from scratch for this project).
 *
 * A value is tokenized three times: as it is, as if it were injected inside a single-quoted
 * string, and inside a double-quoted string (only when that quote occurs in the value). Each
 * tokenization gives a fingerprint, one character per token class, and the judge looks for
 * shapes that only SQL has: a string break followed by a boolean test, UNION SELECT, stacked
 * statements, comment-terminated breaks, dangerous calls. Plain English ("order by phone",
 * "Union Square", "coffee or tea", "O'Brien's") does not form these shapes.
 *
 * Token classes:
 *   s string · 1 number, true, false, null · n bareword · v @variable · f SQL function followed by `(`
 *   U union · E statement keyword (select, insert, …) · F from · k other keyword
 *   & and/or/xor/&&/|| · o operator (= <> like in is …) · ( ) , ;  · c comment · ? other
 */

import type { DetectorNeed } from './index.js';

const STATEMENT = new Set([
  'select',
  'insert',
  'update',
  'delete',
  'drop',
  'exec',
  'execute',
  'declare',
  'create',
  'alter',
  'truncate',
  'shutdown',
  'grant',
  'revoke',
  'waitfor',
  'merge',
  'call',
  'handler',
]);

const KEYWORDS = new Set([
  'where',
  'by',
  'group',
  'having',
  'limit',
  'offset',
  'as',
  'into',
  'values',
  'set',
  'table',
  'database',
  'schema',
  'join',
  'inner',
  'outer',
  'left',
  'right',
  'cross',
  'on',
  'all',
  'distinct',
  'case',
  'when',
  'then',
  'else',
  'end',
  'not',
  'top',
  'procedure',
  'function',
  'delay',
  'outfile',
  'dumpfile',
  'asc',
  'desc',
  'with',
  'if',
  'exists',
  'index',
  'view',
  'trigger',
  'user',
  'column',
  'rownum',
  'returning',
  'using',
  'for',
  'begin',
  'immediate',
  'load_file',
  'analyse',
]);

/**
 * Boolean and null literals: values, like numbers (`' or true#`, `1' or not false#`), as
 * libinjection types them.
 */
const LITERAL_WORDS = new Set(['true', 'false', 'null']);

const OPERATOR_WORDS = new Set([
  'like',
  'rlike',
  'regexp',
  'sounds',
  'between',
  'is',
  'in',
  'div',
  'mod',
  'collate',
  'escape',
  'glob',
  'match',
  'against',
]);

const LOGIC_WORDS = new Set(['and', 'or', 'xor']);

/** Functions whose call is itself evidence (timing, file, out-of-band, error-based extraction). */
export const DANGEROUS_FUNCTIONS = new Set([
  'sleep',
  'benchmark',
  'pg_sleep',
  'load_file',
  'extractvalue',
  'updatexml',
  'utl_inaddr',
  'utl_http',
  'dbms_pipe',
  'dbms_lock',
  'sys_eval',
  'sys_exec',
  'xp_cmdshell',
  'xp_dirtree',
  'openrowset',
  'opendatasource',
  'make_set',
  'group_concat',
  'concat_ws',
  'xmltype',
  'exp',
  'geometrycollection',
  'polygon',
  'multipoint',
  'linestring',
  'multilinestring',
  'multipolygon',
  'name_const',
  'row_count',
  'get_host_address',
  'randomblob',
  'char',
  'chr',
  'ascii',
  'substring',
  'substr',
  'concat',
  'hex',
  'unhex',
  'cast',
  'convert',
  'version',
  'database',
  'current_user',
  'user',
  'system_user',
  'session_user',
  'schema',
  'db_name',
  'if',
  'ifnull',
  'nullif',
  'coalesce',
  'elt',
  'md5',
  'sha1',
  'rand',
  'floor',
  'count',
  'length',
  'mid',
  'ord',
  'iif',
  'waitfor',
  'sysdate',
  'now',
]);

export type SqliContext = 'none' | "'" | '"';

export interface SqliResult {
  readonly context: SqliContext;
  readonly fingerprint: string;
  /** which judge rule fired */
  readonly reason: string;
}

interface Tok {
  t: string;
  v: string;
}

/**
 * 1 for each UTF-16 code unit the tokenizer reads as part of a word: ASCII letters and
 * digits, `_`, `$`, and everything from U+0080. (A table lookup: the tokenizer's word loops
 * ran about 15 % faster with it than with the comparisons.)
 */
const WORD_UNIT: Uint8Array = (() => {
  const t = new Uint8Array(65536);
  for (let c = 0; c < 65536; c++)
    t[c] =
      (c >= 97 && c <= 122) ||
      (c >= 65 && c <= 90) ||
      (c >= 48 && c <= 57) ||
      c === 95 ||
      c === 36 ||
      c >= 0x80
        ? 1
        : 0;
  return t;
})();

/** Whether code unit `c` (NaN past the end: no) is part of a word (see {@link WORD_UNIT}). */
function isWordChar(c: number): boolean {
  return WORD_UNIT[c] === 1;
}

/**
 * The token class of every word that is not a plain bareword, by the precedence of the
 * sets above (union, from, statement, logic, operator word, dangerous call, keyword): `plain`
 * when no `(` follows, `call` (only for dangerous functions not classed before) when one does.
 */
interface WordClass {
  readonly plain: string;
  readonly call: string | undefined;
  /** the character codes of `plain` and of `call` (`plain`'s without one) */
  readonly plainCode: number;
  readonly callCode: number;
}

function wordClass(plain: string, call: string | undefined): WordClass {
  return { plain, call, plainCode: plain.charCodeAt(0), callCode: (call ?? plain).charCodeAt(0) };
}

const WORD_CLASS: ReadonlyMap<string, WordClass> = (() => {
  const m = new Map<string, WordClass>();
  const words = new Set([
    'union',
    'from',
    ...STATEMENT,
    ...LOGIC_WORDS,
    ...OPERATOR_WORDS,
    ...DANGEROUS_FUNCTIONS,
    ...KEYWORDS,
    ...LITERAL_WORDS,
  ]);
  for (const w of words) {
    const before =
      w === 'union'
        ? 'U'
        : w === 'from'
          ? 'F'
          : STATEMENT.has(w)
            ? 'E'
            : LOGIC_WORDS.has(w)
              ? '&'
              : LITERAL_WORDS.has(w)
                ? '1'
                : OPERATOR_WORDS.has(w)
                  ? 'o'
                  : undefined;
    if (before !== undefined) m.set(w, wordClass(before, undefined));
    else {
      const plain = KEYWORDS.has(w) ? 'k' : 'n';
      m.set(w, wordClass(plain, DANGEROUS_FUNCTIONS.has(w) ? 'f' : undefined));
    }
  }
  return m;
})();

/** Patterns of the tokenizer and the judge (module-level: compiled once). */
const HEX_DIGIT = /[0-9a-f]/;
const EXPONENT = /[-+0-9]/;
const FP_UNION = /U[k(]{0,2}E/;
const FP_SELECT_EXPR = /^(?:f\(|v|\(+E)/;
const EXEC_PROC = /^(?:xp_|sp_|master\.)/;
const FP_WHERE = /^(?:kn)?k\(*[s1nv]\)*o\(*[s1nvf]/;
const FP_PAREN_BREAK = /^\)+[&o]\(*[s1nv(]?/;
const FP_STRING_OP = /^so[s1]/;
const FP_BREAK_COMMENT = /^s\)*;?c$/;
const FP_BREAK_CALL = /^s\)*[;,&o]?\(*(?:f\(|E)/;
const FP_CALL_OR_STATEMENT = /[fE]/;
const FP_STATEMENT_COMMENT = /^En;?c$/;
const DDL_VERB = /^(?:drop|truncate|delete|alter|shutdown)$/;
/**
 * A fingerprint without any of these classes fires nothing: @@variables and dangerous calls
 * (v f), UNION (U), statements (E), stacked `;`, tautologies, WHERE clauses and operator
 * breaks (o), parenthesis breaks and calls `)`, boolean breaks (&), comment breaks (c),
 * ORDER BY n (1).
 */
const FP_CAN_FIRE = /[UE;o)&cfv1]/;
/**
 * Nor does one (of those that pass {@link FP_CAN_FIRE}) that matches none of these, the shapes
 * that strongTokens and each judge rule need: @@variables and dangerous calls (v f); UNION
 * SELECT, the SELECT rules, DDL statements and calls after a break (E); stacked statements
 * (;); a tautology's `a op b` ([1sn]o[1sn]); `select fn(` where `select` was a string or a
 * backtick name ([sn]n\(); ORDER BY n, whose `order`/`group` and `by` may each be a word, a
 * string or a backtick name. By context, the start of each leading rule's pattern: as it is,
 * WHERE/HAVING comparisons, parenthesis breaks, string operators and boolean breaks; inside a
 * string, a boolean, operator or comment right after the break.
 */
const FP_MAY_FIRE_NONE =
  /[Efv;]|[1sn]o[1sn]|[sn]n\(|(?:^|[s)1])[ksn][ksn]1(?:[,c;)]|$)|^(?:(?:kn)?k\(*[s1nv]\)*o|\)+[&o]|so[s1]|(?:1|\(+)?\)*&)/;
const FP_MAY_FIRE_QUOTED = /[Efv;]|[1sn]o[1sn]|[sn]n\(|(?:^|[s)1])[ksn][ksn]1(?:[,c;)]|$)|^s\)*[&oc]/;
/**
 * As the value is: a value then a logical operator and a comparison, or then a logical
 * operator and a value (`1 or 2#`), or NOT and a value (`1 or not false#`), ended by a comment
 * or `;`.
 */
const FP_LEAD_NONE =
  /^(?:1|\(+)?\)*&\(*(?:[s1nv]|f\([^)]*\))\)*o(?:[(s1nvf]|$)|^(?:1|\(+)?\)*&\(*(?:[s1v]|f\([^)]*\))\)*(?:[c;]|$)|^(?:1|\(+)?\)*&\(*k\(*[1sv]\)*[c;]/;
/**
 * A string break then a boolean test or an operator, or a logical operator with a keyword and a
 * literal ended by a comment or `;` (`x' or not 0-- -`). Not `s o n s`, an operator with one bare
 * word and then the quoted rest of the value: `"between flights"`, `"like new"` in a search
 * box; SQL has no bare word followed by a string literal there, so it cannot run.
 */
const FP_LEAD_QUOTED =
  /^s\)*&\(*(?:[s1nv]|f\([^)]*\)|k)\)*(?:o|[c;]|$|\(|&|\?s)|^s\)*o\(*(?:[s1vf]|n(?!s$))|^s\)*&\(*k\(*[1sv]\)*[c;]/;

const MAX_TOKENS = 48;

/**
 * Tokenize `s` (already lower-cased). `openQuote`: the value starts inside a string closed by
 * that quote. `plain` builds every string token character by character and looks every
 * word up (the definition; the tests compare both).
 */
export function tokenize(s: string, openQuote: SqliContext, plain = false): Tok[] {
  return tokensOf(s, scan(s, openQuote, plain));
}

/**
 * The fingerprint of {@link tokenize}'s tokens, without making them (no token objects, no
 * slices): what the gates before strongTokens and the judge look at.
 */
export function fingerprintOf(s: string, openQuote: SqliContext): string {
  return classesOf(scan(s, openQuote, false));
}

/**
 * Where {@link scan} found each token: its text is `s.slice(TOK_START[k], TOK_END[k])`, or
 * TOK_TEXT[k] when set (a string token with escapes or doubled quotes). Valid until the next
 * scan.
 */
const TOK_START = new Int32Array(MAX_TOKENS);
const TOK_END = new Int32Array(MAX_TOKENS);
/** Each token's class, as a character code (plain array: String.fromCharCode.apply takes it fast). */
const TOK_CLASS: number[] = new Array<number>(MAX_TOKENS).fill(0);
/** 1 at the code of each class in {@link FP_CAN_FIRE}. */
const CAN_FIRE_CLASS: Uint8Array = (() => {
  const t = new Uint8Array(128);
  for (let c = 0; c < 128; c++) if (FP_CAN_FIRE.test(String.fromCharCode(c))) t[c] = 1;
  return t;
})();
const TOK_TEXT: (string | undefined)[] = new Array<string | undefined>(MAX_TOKENS).fill(undefined);

function span(k: number, start: number, end: number): void {
  TOK_START[k] = start;
  TOK_END[k] = end;
  TOK_TEXT[k] = undefined;
}

/** The one-character string of each ASCII code (a token's class). */
const ASCII_CHAR: readonly string[] = Array.from({ length: 128 }, (_, c) => String.fromCharCode(c));

/** The tokens of the last {@link scan} of `s`, which found `count`. */
function tokensOf(s: string, count: number): Tok[] {
  const toks = new Array<Tok>(count);
  for (let k = 0; k < count; k++)
    toks[k] = { t: ASCII_CHAR[TOK_CLASS[k]!]!, v: TOK_TEXT[k] ?? s.slice(TOK_START[k], TOK_END[k]) };
  return toks;
}

/** The fingerprint of the last {@link scan}, which found `count` tokens. */
function classesOf(count: number): string {
  return String.fromCharCode.apply(null, TOK_CLASS.slice(0, count));
}

/** Whether the last {@link scan} found a token of a class {@link FP_CAN_FIRE} holds. */
function classesCanFire(count: number): boolean {
  for (let k = 0; k < count; k++) if (CAN_FIRE_CLASS[TOK_CLASS[k]!] === 1) return true;
  return false;
}

/** 1 at the code of each token class (fingerprint character) in `classes`. */
function classTable(classes: string): Uint8Array {
  const t = new Uint8Array(128);
  for (const c of classes) t[c.charCodeAt(0)] = 1;
  return t;
}

/** Token classes {@link shapesMayFire} looks for. */
const C_WORD_KSN = classTable('ksn');
const C_VALUE_1SN = classTable('1sn');
const C_ANY_FIRES = classTable('Efv;');
const C_LEADS = classTable('ks1()&');
const C_BEFORE_PAIR = classTable('s)1');
const C_AFTER_NUMBER = classTable(',c;)');

/**
 * Whether the classes of the last {@link scan} may match {@link FP_MAY_FIRE_NONE} or
 * {@link FP_MAY_FIRE_QUOTED}, read on the codes without making the fingerprint string: a
 * class of `[Efv;]`; `[1sn]o[1sn]`; `[sn]n(`; `[ksn][ksn]1` at the start or after `[s)1]`,
 * then `[,c;)]` or the end; or a first class that starts one of the anchored shapes
 * (`k s 1 ( ) &`). It answers true wherever either pattern matches (and on more, for the
 * anchored shapes); the pattern then decides. Most prose stops here.
 */
function shapesMayFire(count: number): boolean {
  if (count === 0) return false;
  if (C_LEADS[TOK_CLASS[0]!] === 1) return true;
  for (let k = 0; k < count; k++) {
    const c = TOK_CLASS[k]!;
    if (C_ANY_FIRES[c] === 1) return true;
    if (c === 111 /* o */) {
      if (
        k >= 1 &&
        k + 1 < count &&
        C_VALUE_1SN[TOK_CLASS[k - 1]!] === 1 &&
        C_VALUE_1SN[TOK_CLASS[k + 1]!] === 1
      )
        return true;
    } else if (c === 40 /* ( */) {
      if (
        k >= 2 &&
        TOK_CLASS[k - 1] === 110 /* n */ &&
        (TOK_CLASS[k - 2] === 115 || TOK_CLASS[k - 2] === 110)
      )
        return true;
    } else if (c === 49 /* 1 */) {
      if (
        k >= 2 &&
        C_WORD_KSN[TOK_CLASS[k - 1]!] === 1 &&
        C_WORD_KSN[TOK_CLASS[k - 2]!] === 1 &&
        (k === 2 || C_BEFORE_PAIR[TOK_CLASS[k - 3]!] === 1) &&
        (k + 1 === count || C_AFTER_NUMBER[TOK_CLASS[k + 1]!] === 1)
      )
        return true;
    }
  }
  return false;
}

/**
 * For the tests: {@link shapesMayFire} of the fingerprint `fp` (at most MAX_TOKENS classes),
 * and whether {@link FP_MAY_FIRE_NONE} or {@link FP_MAY_FIRE_QUOTED} matches it.
 */
export function shapesMayFireFor(fp: string): { shapes: boolean; patterns: boolean } {
  const count = Math.min(fp.length, MAX_TOKENS);
  for (let k = 0; k < count; k++) TOK_CLASS[k] = fp.charCodeAt(k);
  return {
    shapes: shapesMayFire(count),
    patterns: FP_MAY_FIRE_NONE.test(fp.slice(0, count)) || FP_MAY_FIRE_QUOTED.test(fp.slice(0, count)),
  };
}

/**
 * The tokenizer: records each token's class (the fingerprint's character code, in
 * {@link TOK_CLASS}) and where it is (see {@link TOK_START}), and returns how many it found.
 */
function scan(s: string, openQuote: SqliContext, plain: boolean): number {
  let count = 0;
  const n = s.length;
  let i = 0;
  if (openQuote !== 'none') {
    const end = s.indexOf(openQuote);
    if (end < 0) return 0;
    span(count, 0, end);
    TOK_CLASS[count++] = 115; // 's'
    i = end + 1;
  }
  /** position of the next backslash at or after the last string token's start (-1: none left) */
  let nextBackslash = 0;
  while (i < n && count < MAX_TOKENS) {
    const c = s.charCodeAt(i);
    if (c <= 32 || c === 0xa0) {
      i++;
      continue;
    }
    // words (no branch below takes a word character other than a digit)
    if (isWordChar(c) && (c < 48 || c > 57)) {
      let j = i;
      // word characters, and `.` before one or before another `.`
      for (; j < n; j++) {
        const d = s.charCodeAt(j);
        if (isWordChar(d)) continue;
        if (d === 46) {
          const e = s.charCodeAt(j + 1);
          if (isWordChar(e) || e === 46) continue;
        }
        break;
      }
      const cls = plain ? WORD_CLASS.get(s.slice(i, j)) : wordClassAt(s, i, j);
      let code = 110; // n
      if (cls !== undefined) {
        code = cls.plainCode;
        if (cls.call !== undefined) {
          // a dangerous function name: a call when `(` follows (after whitespace and comments)
          let k = j;
          while (k < n && (s.charCodeAt(k) <= 32 || (s[k] === '/' && s[k + 1] === '*'))) {
            if (s[k] === '/') {
              const e = s.indexOf('*/', k + 2);
              k = e < 0 ? n : e + 2;
            } else k++;
          }
          if (s[k] === '(') code = cls.callCode;
        }
      }
      span(count, i, j);
      TOK_CLASS[count++] = code;
      i = j;
      continue;
    }
    const ch = s[i]!;
    // strings
    if (ch === "'" || ch === '"') {
      let j = i + 1;
      // without a backslash before the closing quote (or the end) and without a doubled
      // closing quote, the token is the text in between: what the loop below builds
      const close = s.indexOf(ch, j);
      // (the next backslash is looked up again only once passed: linear over the whole value)
      if (nextBackslash >= 0 && nextBackslash < j) nextBackslash = s.indexOf('\\', j);
      const bs = nextBackslash;
      if (!plain && (bs < 0 || (close >= 0 && bs > close)) && (close < 0 || s.charCodeAt(close + 1) !== c)) {
        span(count, j, close < 0 ? n : close);
        TOK_CLASS[count++] = 115; // 's'
        i = close < 0 ? n + 1 : close + 1;
        continue;
      }
      let v = '';
      for (;;) {
        if (j >= n) break;
        const d = s[j]!;
        if (d === '\\' && j + 1 < n) {
          v += s[j + 1];
          j += 2;
          continue;
        }
        if (d === ch) {
          if (s[j + 1] === ch) {
            v += ch;
            j += 2;
            continue;
          }
          break;
        }
        v += d;
        j++;
      }
      TOK_TEXT[count] = v;
      TOK_CLASS[count++] = 115; // 's'
      i = j + 1;
      continue;
    }
    // backtick identifier
    if (ch === '`') {
      const end = s.indexOf('`', i + 1);
      span(count, i + 1, end < 0 ? n : end);
      TOK_CLASS[count++] = 110; // 'n'
      i = end < 0 ? n : end + 1;
      continue;
    }
    // comments: `#` and `--` run to the end of the line (MySQL, PostgreSQL, SQL Server), and
    // what follows a line break is SQL again (`1' #↵or '1'='1`)
    if (ch === '#' || (ch === '-' && s[i + 1] === '-')) {
      const nl = s.indexOf('\n', i + 1);
      span(count, i, nl < 0 ? n : nl);
      TOK_CLASS[count++] = 99; // 'c'
      if (nl < 0) break;
      i = nl + 1;
      continue;
    }
    if (ch === '/' && s[i + 1] === '*') {
      if (s[i + 2] === '!') {
        // MySQL executable comment: its content is code
        i += 3;
        while (i < n && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) i++;
        continue;
      }
      const end = s.indexOf('*/', i + 2);
      // a closed comment is whitespace to SQL (`1'or/**/1=1#`, `'/**/||/**/'`); one left open
      // comments the rest of the statement out (`admin'/*`)
      if (end >= 0) {
        i = end + 2;
        continue;
      }
      span(count, i, n);
      TOK_CLASS[count++] = 99; // 'c'
      i = n;
      continue;
    }
    if (ch === '*' && s[i + 1] === '/') {
      i += 2;
      continue;
    }
    // variables
    if (ch === '@') {
      let j = i + 1;
      if (s[j] === '@') j++;
      const st = j;
      while (j < n && isWordChar(s.charCodeAt(j))) j++;
      span(count, i, j);
      TOK_CLASS[count++] = (j > st ? 'v' : 'o').charCodeAt(0);
      i = j;
      continue;
    }
    // numbers
    if ((c >= 48 && c <= 57) || (ch === '.' && s.charCodeAt(i + 1) >= 48 && s.charCodeAt(i + 1) <= 57)) {
      let j = i;
      if (ch === '0' && (s[i + 1] === 'x' || s[i + 1] === 'b')) {
        j += 2;
        while (j < n && HEX_DIGIT.test(s[j]!)) j++;
      } else {
        while (j < n && ((s.charCodeAt(j) >= 48 && s.charCodeAt(j) <= 57) || s[j] === '.')) j++;
        if (s[j] === 'e' && EXPONENT.test(s[j + 1] ?? '')) {
          j += 2;
          while (j < n && s.charCodeAt(j) >= 48 && s.charCodeAt(j) <= 57) j++;
        }
      }
      // a number glued to letters ("2x4", "4or") is a bareword
      if (j < n && isWordChar(s.charCodeAt(j))) {
        while (j < n && (isWordChar(s.charCodeAt(j)) || s[j] === '.')) j++;
        span(count, i, j);
        TOK_CLASS[count++] = 110; // 'n'
      } else {
        span(count, i, j);
        TOK_CLASS[count++] = 49; // '1'
      }
      i = j;
      continue;
    }
    // operators and punctuation
    const c1 = s.charCodeAt(i + 1);
    if (
      (c === 60 && c1 === 61 && s.charCodeAt(i + 2) === 62) ||
      ((c === 33 || c === 61) && c1 === 61 && s.charCodeAt(i + 2) === 61)
    ) {
      span(count, i, i + 3);
      TOK_CLASS[count++] = 111; // 'o'
      i += 3;
      continue;
    }
    if ((c === 38 && c1 === 38) || (c === 124 && c1 === 124)) {
      span(count, i, i + 2);
      TOK_CLASS[count++] = 38; // '&'
      i += 2;
      continue;
    }
    if (
      (c === 60 && (c1 === 62 || c1 === 61 || c1 === 60)) ||
      (c === 62 && (c1 === 61 || c1 === 62)) ||
      ((c === 33 || c === 61 || c === 58) && c1 === 61)
    ) {
      span(count, i, i + 2);
      TOK_CLASS[count++] = 111; // 'o'
      i += 2;
      continue;
    }
    // a lone `&` or `|` is far more often prose ("Dave & Buster's", "a&b") or a URL separator than SQL
    if (ch === '&' || ch === '|') {
      span(count, i, i + 1);
      TOK_CLASS[count++] = 63; // '?'
      i++;
      continue;
    }
    if ('=<>+-*/%^~!'.includes(ch)) {
      span(count, i, i + 1);
      TOK_CLASS[count++] = 111; // 'o'
      i++;
      continue;
    }
    if (ch === '(' || ch === ')' || ch === ',' || ch === ';') {
      span(count, i, i + 1);
      TOK_CLASS[count++] = ch.charCodeAt(0);
      i++;
      continue;
    }
    span(count, i, i + 1);
    TOK_CLASS[count++] = 63; // '?'
    i++;
  }
  return count;
}

function fingerprint(toks: readonly Tok[]): string {
  let fp = '';
  for (const t of toks) fp += t.t;
  return fp;
}

const OBJECT_WORDS = new Set([
  'table',
  'database',
  'schema',
  'view',
  'index',
  'procedure',
  'function',
  'user',
  'trigger',
  'column',
  'login',
]);

const COMPARISON = /^(?:=|==|<=?|>=?|!=|<>|<=>|like|rlike|regexp|is|in|between|sounds)$/;

/**
 * A value that starts with a logical word and a user variable (`@name`, not `@@name`) that
 * nothing compares: alone, or in arithmetic (`Or@nge-Juic3`, `And@lucia2025!`, `or @home`).
 * That is a word with `@` for a letter, not a test; `or @a=1` compares it.
 */
function userVariableUntested(toks: readonly Tok[], fp: string): boolean {
  if (!fp.startsWith('&v') || toks[1]!.v.startsWith('@@')) return false;
  const next = toks[2];
  return next === undefined || next.t !== 'o' || !COMPARISON.test(next.v);
}

/** Judge one tokenization; returns the reason when it is SQL injection, else undefined. */
function judge(toks: readonly Tok[], fp: string, ctx: SqliContext): string | undefined {
  // UNION [ALL|DISTINCT] [(] SELECT
  if (FP_UNION.test(fp)) {
    const u = fp.search(FP_UNION);
    const e = fp.indexOf('E', u);
    if (toks[e]!.v === 'select') return 'union-select';
  }
  // SELECT <something SQL-ish> FROM
  for (let i = 0; i < toks.length; i++) {
    if (toks[i]!.t !== 'E' || toks[i]!.v !== 'select') continue;
    let sqlish = false;
    for (let j = i + 1; j < toks.length && j < i + 12; j++) {
      const t = toks[j]!.t;
      if (t === 'F') {
        if (sqlish && j + 1 < toks.length) return 'select-from';
        break;
      }
      if (t === 'f' || t === 'v' || t === '1' || t === 'o' || t === ',' || t === '(' || t === 's')
        sqlish = true;
      if (t === ';' || t === 'c') break;
    }
    // select <function|@@var|number|string> then end/comment/;  ("select @@version", "select sleep(5)")
    const rest = fp.slice(i + 1);
    if (FP_SELECT_EXPR.test(rest)) return 'select-expression';
  }
  // stacked statements
  for (let i = 0; i + 1 < toks.length; i++) {
    if (toks[i]!.t !== ';') continue;
    const nx = toks[i + 1]!;
    const nn = toks[i + 2];
    if (nx.t === 'E') {
      if (nn === undefined || nn.t === 'c' || nn.t === ';') return 'stacked-statement';
      switch (nx.v) {
        case 'drop':
        case 'create':
        case 'alter':
        case 'truncate':
          if (nn.t === 'k' && OBJECT_WORDS.has(nn.v)) return 'stacked-ddl';
          break;
        case 'insert':
          if (nn.v === 'into') return 'stacked-insert';
          break;
        case 'delete':
          if (nn.t === 'F') return 'stacked-delete';
          break;
        case 'update':
          if (nn.t === 'n' && toks[i + 3]?.v === 'set') return 'stacked-update';
          break;
        case 'select':
          if (nn.t !== 'n') return 'stacked-select';
          break;
        case 'exec':
        case 'execute':
        case 'declare':
        case 'waitfor':
        case 'shutdown':
          if (nn.t !== 'n' || EXEC_PROC.test(nn.v)) return 'stacked-exec';
          break;
        default:
          break;
      }
    } else if (nx.t === 'k' && nx.v === 'set' && nn?.t === 'v') return 'stacked-set';
  }
  // a value that starts with WHERE/HAVING (optionally after `AS alias`) and a comparison
  if (ctx === 'none' && FP_WHERE.test(fp)) {
    const w = toks[fp.startsWith('kn') ? 2 : 0]!.v;
    if (w === 'where' || w === 'having') return 'where-clause';
  }
  // tautology: `x = x`, `1 != 2` at the start or after a separator
  for (let i = 0; i + 2 < toks.length; i++) {
    const a = toks[i]!;
    const op = toks[i + 1]!;
    const b = toks[i + 2]!;
    if (op.t !== 'o' || !'1sn'.includes(a.t) || !'1sn'.includes(b.t)) continue;
    const prev = i === 0 ? '^' : toks[i - 1]!.t;
    const next = toks[i + 3]?.t ?? '$';
    if (!'^,(&s;'.includes(prev) || !'$)c;&'.includes(next)) continue;
    if (
      (op.v === '=' || op.v === '==') &&
      a.v === b.v &&
      a.t === b.t &&
      (a.t !== 'n' || ctx !== 'none' || prev !== '^')
    )
      return 'tautology';
    if ((op.v === '!=' || op.v === '<>') && a.t === '1' && b.t === '1' && a.v !== b.v) return 'tautology';
  }
  // a value that starts by closing a parenthesis and continues with an operator
  if (ctx === 'none' && FP_PAREN_BREAK.test(fp) && fp.length >= 3) return 'paren-break';
  // DDL verb, object, terminator and comment: `DROP users;--`
  if (ctx === 'none' && FP_STATEMENT_COMMENT.test(fp) && DDL_VERB.test(toks[0]!.v))
    return 'statement-comment';
  // SELECT fn('…') ;  (a function call with a literal argument, then the end)
  for (let i = 0; i + 2 < toks.length; i++) {
    if (
      toks[i]!.v === 'select' &&
      (toks[i + 1]!.t === 'n' || toks[i + 1]!.t === 'f') &&
      toks[i + 2]!.t === '('
    ) {
      const arg = toks[i + 3]?.t;
      const close = toks[i + 4]?.t;
      if (arg !== undefined && '1sv)'.includes(arg) && (arg === ')' || close === ')')) return 'select-call';
    }
  }
  // string break followed by a boolean test, or a value that starts with one
  const lead = ctx === 'none' ? FP_LEAD_NONE : FP_LEAD_QUOTED;
  if (lead.test(fp) && !(ctx === 'none' && userVariableUntested(toks, fp))) return 'boolean-break';
  if (ctx === 'none' && FP_STRING_OP.test(fp)) return 'boolean-break';
  // string break then comment (`admin'--`, `x')#`); a `#` comment that itself holds the quote is prose
  if (ctx !== 'none' && FP_BREAK_COMMENT.test(fp)) {
    const c = toks[toks.length - 1]!.v;
    if (!(c.startsWith('#') && c.includes(ctx))) return 'break-comment';
  }
  // string break, then SELECT <column> FROM <table> (a stacked T-SQL statement)
  if (ctx !== 'none' && fp.length > 4 && fp.startsWith('sEnF') && toks[1]!.v === 'select')
    return 'break-select-from';
  // string break then a timing / dangerous call or statement (T-SQL needs no `;` between
  // statements); not a SELECT whose one operand is the quoted rest of the value, which only
  // selects a constant (`meeting room 'Select' on floor 3 -- coffee`)
  if (ctx !== 'none' && FP_BREAK_CALL.test(fp)) {
    const idx = fp.search(FP_CALL_OR_STATEMENT);
    const t = toks[idx]!;
    if (
      t.t === 'f' ||
      (t.t === 'E' && (t.v === 'waitfor' || t.v === 'select' || t.v === 'exec' || t.v === 'execute'))
    ) {
      const after = toks[idx + 1];
      if (
        t.t === 'f' ||
        !after ||
        (after.t !== 'n' && !(after.t === 's' && t.v === 'select' && idx + 2 === toks.length)) ||
        t.v === 'waitfor'
      )
        return 'break-call';
    }
  }
  // order by / group by with a column number, at the start or after a break
  for (let i = 0; i + 2 < toks.length; i++) {
    if (
      (toks[i]!.v === 'order' || toks[i]!.v === 'group') &&
      toks[i + 1]!.v === 'by' &&
      toks[i + 2]!.t === '1'
    ) {
      const prev = i === 0 ? '^' : toks[i - 1]!.t;
      const next = toks[i + 3]?.t ?? '$';
      if ('^s)1'.includes(prev) && ',c;)$'.includes(next)) return 'order-by-number';
    }
  }
  return undefined;
}

/** Strong one-token evidence anywhere: @@system variables, dangerous functions called. */
function strongTokens(toks: readonly Tok[]): string | undefined {
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i]!;
    if (t.t === 'v' && t.v.startsWith('@@') && t.v.length > 3) return 'system-variable';
    if (t.t === 'f' && toks[i + 1]?.t === '(') {
      const inner = toks[i + 2];
      switch (t.v) {
        case 'sleep':
        case 'pg_sleep':
        case 'benchmark':
          // a number followed by a word is a duration in prose ("Sleep (8 hrs) monitor")
          if (
            inner &&
            ((inner.t === '1' && toks[i + 3]?.t !== 'n' && toks[i + 3]?.t !== 'k') ||
              inner.t === 'o' ||
              inner.t === 'f')
          )
            return 'timing-call';
          break;
        case 'load_file':
        case 'extractvalue':
        case 'updatexml':
        case 'utl_inaddr':
        case 'utl_http':
        case 'dbms_pipe':
        case 'sys_eval':
        case 'sys_exec':
        case 'openrowset':
        case 'opendatasource':
        case 'name_const':
        case 'make_set':
        case 'group_concat':
        case 'concat_ws':
        case 'xmltype':
        case 'get_host_address':
          return 'dangerous-call';
        default:
          break;
      }
    }
  }
  return undefined;
}

/**
 * Judge a value (transforms already applied: decoded, lower-cased). Returns the evidence or
 * undefined. Linear in the value length (bounded token count).
 */
/** A value without any of these cannot form a fingerprint the judge accepts. */
const SQL_GATE_CHARS =
  /['"`()=<>!|&#@]|--|\/\*|;\s*(?:[a-z]+\s+)?(?:select|insert|update|delete|drop|exec|execute|declare|create|alter|truncate|shutdown|grant|revoke|waitfor|merge|call|handler|set|begin|if|--|#|\/\*|$)/;
const SQL_GATE_WORDS = /\b(?:union|select|where|having|order|group)\b/;
const SQL_LOGIC = /\b(?:and|or|xor)\b/;
const SQL_LOGIC_OPERAND = /\d|\b(?:like|rlike|regexp|sounds|between|is|in|div|mod)\b/;

/** Bits of {@link detectSqli}'s `lacks`: what its caller knows the value does not hold. */
/** none of the characters of {@link SQL_GATE_CHARS} (nor `;`), and neither `--` nor `/*` */
export const SQL_LACKS_GATE_CHARS = 1;
/** none of the words of {@link SQL_GATE_WORDS}, in any case and even inside other words */
export const SQL_LACKS_WORDS = 2;
/** neither `and` nor `or`, in any case and even inside other words (`or` covers `xor`) */
export const SQL_LACKS_LOGIC = 4;

/**
 * What a value {@link detectSqli} finds SQL in holds: something of one of these groups (each
 * a character, read on the value's signature, or a substring, read by the literal automaton, in
 * any case). The engine skips the detector on a value that holds nothing of any group, and
 * otherwise tells it, in `lacks`, the groups the value holds nothing of, so that it does not
 * run those gates' regexes. A test checks the groups against the gates. (Characters are read
 * on the signature: as automaton literals they would end a match at every quote or
 * parenthesis of every value scanned.)
 */
export const SQL_NEEDS: readonly DetectorNeed[] = [
  { chars: `'"\`()=<>!|&#@;`, substrings: ['--', '/*'], lacks: SQL_LACKS_GATE_CHARS },
  { chars: '', substrings: ['union', 'select', 'where', 'having', 'order', 'group'], lacks: SQL_LACKS_WORDS },
  { chars: '', substrings: ['and', 'or'], lacks: SQL_LACKS_LOGIC },
];

/**
 * Without any of those characters, only keyword shapes can fire: UNION SELECT, SELECT … FROM,
 * WHERE/HAVING clauses, ORDER BY n, and a logical operator with a number or an operator word.
 */
export function mayBeSql(v: string): boolean {
  return SQL_GATE_CHARS.test(v) || SQL_GATE_WORDS.test(v) || (SQL_LOGIC.test(v) && SQL_LOGIC_OPERAND.test(v));
}

const SQL_GATE_CHARS_NO_QUOTES =
  /[`()=<>!|&#@]|--|\/\*|;\s*(?:[a-z]+\s+)?(?:select|insert|update|delete|drop|exec|execute|declare|create|alter|truncate|shutdown|grant|revoke|waitfor|merge|call|handler|set|begin|if|--|#|\/\*|$)/;

function mayBeSqlBesidesQuotes(v: string): boolean {
  return (
    SQL_GATE_CHARS_NO_QUOTES.test(v) ||
    SQL_GATE_WORDS.test(v) ||
    (SQL_LOGIC.test(v) && SQL_LOGIC_OPERAND.test(v))
  );
}

/** After a string break the judge also accepts a bare logical word (`' or x`) or another quote. */
function mayBeSqlAfterBreak(rest: string, quote: string): boolean {
  return (
    rest.includes(quote) ||
    SQL_GATE_CHARS_NO_QUOTES.test(rest) ||
    SQL_GATE_WORDS.test(rest) ||
    SQL_LOGIC.test(rest)
  );
}

/** The longest word of {@link WORD_CLASS}; all of them start with a letter a-z. */
const MAX_WORD = Math.max(...[...WORD_CLASS.keys()].map((w) => w.length));

/**
 * Index of a word's first letter (a-z), last code unit (non-ASCII as 127) and length (at
 * most {@link MAX_WORD}) in {@link SHAPE_INDEX}.
 */
function shapeOf(first: number, last: number, length: number): number {
  return ((first - 97) * 128 + (last < 128 ? last : 127)) * (MAX_WORD + 1) + length;
}

/** The words of {@link WORD_CLASS} with each shape, at the shape's index (+1) in {@link SHAPE_INDEX}. */
const SHAPE_WORDS: (readonly (readonly [string, WordClass])[])[] = [[]];
const SHAPE_INDEX: Uint8Array = (() => {
  const t = new Uint8Array(26 * 128 * (MAX_WORD + 1));
  for (const [w, cls] of WORD_CLASS) {
    const k = shapeOf(w.charCodeAt(0), w.charCodeAt(w.length - 1), w.length);
    if (t[k] === 0) {
      SHAPE_WORDS.push([]);
      t[k] = SHAPE_WORDS.length - 1;
    }
    (SHAPE_WORDS[t[k]!] as (readonly [string, WordClass])[]).push([w, cls]);
  }
  if (SHAPE_WORDS.length > 256) throw new Error('SHAPE_INDEX: more word shapes than a byte holds');
  return t;
})();

/**
 * `WORD_CLASS.get(s.slice(i, j))` without the slice: a run whose shape no word of WORD_CLASS
 * has is not one of them; otherwise it is the word of that shape (same length) it starts with.
 */
function wordClassAt(s: string, i: number, j: number): WordClass | undefined {
  const c = s.charCodeAt(i);
  if (c < 97 || c > 122 || j - i > MAX_WORD) return undefined;
  const k = SHAPE_INDEX[shapeOf(c, s.charCodeAt(j - 1), j - i)]!;
  if (k === 0) return undefined;
  const words = SHAPE_WORDS[k]!;
  for (let x = 0; x < words.length; x++) {
    // (indexed: destructuring would go through the array iterator)
    const e = words[x]!;
    if (s.startsWith(e[0], i)) return e[1];
  }
  return undefined;
}

/** {@link cannotFireUnquoted}'s classes of ASCII characters: word, other, one it looks at. */
const CFU_WORD = 1;
const CFU_OTHER = 2;
const CFU_CLASS: Uint8Array = (() => {
  const t = new Uint8Array(128);
  for (let c = 0; c < 128; c++)
    t[c] = isWordChar(c) ? CFU_WORD : '\'"`;@=<&|/#'.includes(String.fromCharCode(c)) ? 3 : CFU_OTHER;
  return t;
})();

/**
 * Whether the value, tokenized as it is, cannot give a fingerprint the judge or
 * {@link strongTokens} accepts, decided without tokenizing. Every shape needs one of: a quote
 * (string or backtick tokens, the only way `s`, or a `select`/`order` token without its
 * class, arises), `;`, `@` (variables), `=` or `<>` (the tautology operators), `&&`/`||` or a
 * word of {@link WORD_CLASS} (union, statements, keywords, and/or/xor, functions), or a
 * first token `)`. Words are looked up per maximal run of word characters (NBSP, which the
 * tokenizer skips before a word, splits runs too); a MySQL executable comment `/*!50000word`
 * or a leading comment end (`*` then `/`; both skipped without a token) make it answer false.
 * A `#` before any `/*` starts a comment token that ends the tokenization, and a trailing
 * comment forms no shape without one of those: the rest after it is only asked for quotes.
 */
export function cannotFireUnquoted(s: string): boolean {
  const n = s.length;
  let i = 0;
  // the first token: `)` starts a parenthesis break. Whitespace, closed comments (whitespace to
  // the tokenizer: `/**/) > 1`) and a stray `*/` come before it without a token.
  for (;;) {
    while (i < n && (s.charCodeAt(i) <= 32 || s.charCodeAt(i) === 0xa0)) i++;
    const c = s.charCodeAt(i);
    if (c === 42 && s.charCodeAt(i + 1) === 47) i += 2;
    else if (c === 47 && s.charCodeAt(i + 1) === 42 && s.charCodeAt(i + 2) !== 33) {
      const end = s.indexOf('*/', i + 2);
      if (end < 0) break;
      i = end + 2;
    } else break;
  }
  if (s.charCodeAt(i) === 41) return false;
  let run = -1;
  /** whether a `/*` occurred (a `#` after one may be inside that comment) */
  let blockComment = false;
  for (; i < n; i++) {
    const c = s.charCodeAt(i);
    const k = c < 128 ? CFU_CLASS[c]! : c === 0xa0 ? CFU_OTHER : CFU_WORD;
    if (k === CFU_WORD) {
      if (run < 0) run = i;
      continue;
    }
    // every word of WORD_CLASS starts with a letter (a run from a digit is a number or a bareword)
    if (run >= 0) {
      if (wordClassAt(s, run, i) !== undefined) return false;
      run = -1;
    }
    if (k === CFU_OTHER) continue;
    switch (c) {
      case 39: // '
      case 34: // "
      case 96: // `
      case 59: // ;
      case 61: // =
        return false;
      case 64: // @@ (a system variable fires alone); a lone `@` (a mention, an e-mail address)
        // makes a variable token, which no shape fires on without an operator, a keyword, a
        // logical word or a quote beside it, each of which this function stops at itself
        if (s.charCodeAt(i + 1) === 64) return false;
        break;
      case 60: // <>
        if (s.charCodeAt(i + 1) === 62) return false;
        break;
      case 38: // &&
      case 124: // ||
        if (s.charCodeAt(i + 1) === c) return false;
        break;
      case 47: // /*!
        if (s.charCodeAt(i + 1) === 42) {
          if (s.charCodeAt(i + 2) === 33) return false;
          blockComment = true;
        }
        break;
      case 35: // # (a quote after it would still start a string context)
        if (!blockComment) {
          // a comment to the end of the line: the next line is tokenized again
          const nl = s.indexOf('\n', i + 1);
          if (nl < 0) return s.indexOf("'", i + 1) < 0 && s.indexOf('"', i + 1) < 0;
          i = nl;
        }
        break;
      default:
        break;
    }
  }
  return run < 0 || wordClassAt(s, run, n) === undefined;
}

/**
 * The contexts worth tokenizing a value in (one that passed {@link mayBeSql}): as it is,
 * and inside each quote it holds. `plain` decides each with its own patterns (the
 * definition; the tests compare both).
 */
export function sqliContexts(value: string, plain = false): readonly SqliContext[] {
  if (plain) {
    const out: SqliContext[] = [];
    if (mayBeSqlBesidesQuotes(value)) out.push('none');
    for (const q of ["'", '"'] as const) {
      const at = value.indexOf(q);
      if (at >= 0 && mayBeSqlAfterBreak(value.slice(at + 1), q)) out.push(q);
    }
    return out;
  }
  return contextsAt(value, value.indexOf("'"), value.indexOf('"'));
}

/** The contexts of a value without quotes. */
const NONE_ONLY: readonly SqliContext[] = ['none'];

/** {@link sqliContexts} of a value whose first `'` and `"` are at `atSingle` and `atDouble`. */
function contextsAt(value: string, atSingle: number, atDouble: number, lacks = 0): readonly SqliContext[] {
  // (a value without quotes, the usual one, is read as it is only)
  if (atSingle < 0 && atDouble < 0) return NONE_ONLY;
  const contexts: SqliContext[] = [];
  // as it is: quotes alone only make string tokens, which need an operator, a keyword or a
  // logical word next to them to form a shape. Without quotes, mayBeSqlBesidesQuotes is
  // mayBeSql (the two patterns differ only in the quote characters), which held.
  // Which of mayBeSqlBesidesQuotes's patterns the value may hold (each is known absent once
  // tested false): a match of one in the rest after a quote, a suffix that follows a non-word
  // character, is one in the value too, so a pattern absent from the value is absent from
  // the rest.
  const chars = SQL_GATE_CHARS_NO_QUOTES.test(value);
  let words = !chars && (lacks & SQL_LACKS_WORDS) === 0 && SQL_GATE_WORDS.test(value);
  let logic = !chars && !words && (lacks & SQL_LACKS_LOGIC) === 0 && SQL_LOGIC.test(value);
  if (chars || words || (logic && SQL_LOGIC_OPERAND.test(value))) contexts.push('none');
  // (words and logic were tested only when the patterns before them were absent)
  words ||= chars;
  logic ||= words;
  // inside a string: only when what follows the closing quote can form a shape
  // (mayBeSqlAfterBreak, without the patterns the value does not hold)
  for (const q of ["'", '"'] as const) {
    const at = q === "'" ? atSingle : atDouble;
    if (at < 0) continue;
    if (value.indexOf(q, at + 1) >= 0) contexts.push(q);
    else if (logic) {
      const rest = value.slice(at + 1);
      if (
        (words && SQL_GATE_WORDS.test(rest)) ||
        SQL_LOGIC.test(rest) ||
        (chars && SQL_GATE_CHARS_NO_QUOTES.test(rest))
      )
        contexts.push(q);
    }
  }
  return contexts;
}

/**
 * `exhaustive` skips the {@link cannotFireUnquoted}, {@link fingerprintOf} and
 * {@link FP_MAY_FIRE_NONE} shortcuts (the tests compare both).
 */
export function detectSqli(value: string, exhaustive = false, lacks = 0): SqliResult | undefined {
  if (value.length < 2) return undefined;
  // A value without quotes is read in one context, as it is, where cannotFireUnquoted may rule
  // out every shape before any gate runs. It is asked first when the caller knows the value
  // holds a gate character (which the gate's regex would find) and the value holds no `;` (the
  // one the regex may pass over, and where cannotFireUnquoted stops): a parenthesis in prose.
  let asked = false;
  if (
    !exhaustive &&
    lacks !== 0 &&
    (lacks & SQL_LACKS_GATE_CHARS) === 0 &&
    value.indexOf("'") < 0 &&
    value.indexOf('"') < 0 &&
    value.indexOf(';') < 0
  ) {
    if (cannotFireUnquoted(value)) return undefined;
    asked = true;
  }
  // mayBeSql; its first pattern holds both quotes, so a value without a match has none. A
  // pattern the caller knows absent (`lacks`, see SQL_NEEDS) is not run.
  const gate = (lacks & SQL_LACKS_GATE_CHARS) === 0 && SQL_GATE_CHARS.test(value);
  const atSingle = gate ? value.indexOf("'") : -1;
  const atDouble = gate ? value.indexOf('"') : -1;
  if (
    !gate &&
    !(
      ((lacks & SQL_LACKS_WORDS) === 0 && SQL_GATE_WORDS.test(value)) ||
      ((lacks & SQL_LACKS_LOGIC) === 0 && SQL_LOGIC.test(value) && SQL_LOGIC_OPERAND.test(value))
    )
  )
    return undefined;
  // (cannotFireUnquoted answers false on any quote)
  if (!exhaustive && !asked && atSingle < 0 && atDouble < 0 && cannotFireUnquoted(value)) return undefined;
  const contexts = contextsAt(value, atSingle, atDouble, lacks);
  for (let c = 0; c < contexts.length; c++) {
    const ctx = contexts[c]!;
    let toks: Tok[];
    let fp: string;
    if (exhaustive) {
      toks = tokenize(value, ctx);
      if (toks.length === 0) continue;
      fp = fingerprint(toks);
      if (!FP_CAN_FIRE.test(fp)) continue;
    } else {
      // the fingerprint first, without token objects: most values stop at its gates
      const count = scan(value, ctx, false);
      // every rule of strongTokens and judge needs one of these shapes (FP_CAN_FIRE, on the codes)
      if (!classesCanFire(count) || !shapesMayFire(count)) continue;
      fp = classesOf(count);
      if (!(ctx === 'none' ? FP_MAY_FIRE_NONE : FP_MAY_FIRE_QUOTED).test(fp)) continue;
      toks = tokensOf(value, count);
    }
    const strong = strongTokens(toks);
    if (strong) return { context: ctx, fingerprint: fp, reason: strong };
    const r = judge(toks, fp, ctx);
    if (r) return { context: ctx, fingerprint: fp, reason: r };
  }
  return undefined;
}
