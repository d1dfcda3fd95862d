/**
 * Value transforms of the pattern engine. Each is a pure `string → string` function that
 * runs in linear time; a rule lists the transforms it wants (in order) and the engine
 * caches every distinct chain per inspected value.
 */

export type Transform = (s: string) => string;

const HEX = /^[0-9a-fA-F]$/;

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/**
 * Lenient UTF-8 decoding of a byte array: accepts overlong forms (`C0 AE` → '.'), 5- and
 * 6-byte forms, and keeps an invalid byte as the Latin-1 character of the same value, so
 * nothing an attacker sends disappears from view.
 */
export function utf8Lenient(bytes: ArrayLike<number>, len = bytes.length): string {
  // code units collected in a reused buffer (each byte gives at most one unit), then read
  // as UTF-16 in one native call: no array and no concatenation per character
  if (units16.length < len) growUnits(len);
  const units = units16;
  let k = 0;
  let i = 0;
  while (i < len) {
    const b = bytes[i]!;
    if (b < 0x80) {
      units[k++] = b;
      i++;
      continue;
    }
    let need = 0;
    let cp = 0;
    if (b >= 0xc0 && b < 0xe0) {
      need = 1;
      cp = b & 0x1f;
    } else if (b >= 0xe0 && b < 0xf0) {
      need = 2;
      cp = b & 0x0f;
    } else if (b >= 0xf0 && b < 0xf8) {
      need = 3;
      cp = b & 0x07;
    } else if (b >= 0xf8 && b < 0xfc) {
      need = 4;
      cp = b & 0x03;
    } else if (b >= 0xfc && b < 0xfe) {
      need = 5;
      cp = b & 0x01;
    }
    let ok = need > 0 && i + need < len;
    if (ok) {
      for (let j = 1; j <= need; j++) {
        const c = bytes[i + j];
        if (c === undefined || (c & 0xc0) !== 0x80) {
          ok = false;
          break;
        }
        cp = cp * 64 + (c & 0x3f);
      }
    }
    if (ok && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)) {
      if (cp < 0x10000) units[k++] = cp;
      else {
        units[k++] = 0xd800 + ((cp - 0x10000) >> 10);
        units[k++] = 0xdc00 + ((cp - 0x10000) & 0x3ff);
      }
      i += need + 1;
    } else {
      units[k++] = b;
      i++;
    }
  }
  return unitsToString(k);
}

/** Reused code-unit buffer of {@link utf8Lenient}, and a Buffer over the same memory. */
let units16 = new Uint16Array(256);
let units16Bytes = Buffer.from(units16.buffer, 0, units16.byteLength);
/** Uint16Array stores code units in the platform's byte order; `utf16le` reads little-endian. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function growUnits(n: number): void {
  units16 = new Uint16Array(Math.max(n, units16.length * 2));
  units16Bytes = Buffer.from(units16.buffer, 0, units16.byteLength);
}

/** Code units per String.fromCharCode call (well below the engines' argument limits). */
const UNITS_PER_CALL = 4096;

/** The string of the first `k` code units of {@link units16}. */
function unitsToString(k: number): string {
  if (LITTLE_ENDIAN) return units16Bytes.toString('utf16le', 0, 2 * k);
  let out = '';
  for (let j = 0; j < k; j += UNITS_PER_CALL)
    out += String.fromCharCode(...units16.subarray(j, Math.min(k, j + UNITS_PER_CALL)));
  return out;
}

/**
 * One round of lenient URL decoding: `%XX`, IIS-style `%uXXXX`, and (when `plus`) `+` as a
 * space. Invalid escapes stay as they are. The decoded bytes are read as lenient UTF-8.
 */
export function urlDecodeOnce(s: string, plus = true): string {
  const hasPlus = plus && s.indexOf('+') >= 0;
  if (s.indexOf('%') < 0) {
    if (!hasPlus) return s;
    return decodeByHand(s, plus);
  }
  if (builtinSkips > 0) builtinSkips--;
  else if (s.isWellFormed()) {
    // Escapes of valid UTF-8 only (what clients send): the builtin decoder gives what the
    // lenient one below gives, faster. It throws on anything else (an invalid or `%u`
    // escape, overlong or broken UTF-8), which the lenient decoder then reads. (A lone
    // surrogate, which the builtin keeps and the lenient decoder reads as invalid UTF-8,
    // cannot be in a well-formed string.) A throw costs microseconds: after one, the
    // builtin is skipped for the next few values, so values built to throw cost no more
    // than the lenient decoder.
    try {
      return decodeURIComponent(hasPlus ? s.replaceAll('+', ' ') : s);
    } catch {
      builtinSkips = BUILTIN_SKIP_AFTER_THROW;
    }
  }
  handDecodings.count++;
  return decodeByHand(s, plus);
}

/**
 * How many values holding a `%` {@link urlDecodeOnce} has decoded by hand: the builtin
 * decoder refused them (an escape that is not `%` and two hex digits, a `%u` escape, an
 * overlong or otherwise invalid UTF-8 sequence) or was skipped. A caller that finds the count
 * unchanged across its decodings knows that every escape they held was valid.
 */
export const handDecodings = { count: 0 };

/**
 * {@link urlDecodeOnce} without the builtin decoder: every escape read by hand, invalid UTF-8
 * kept as Latin-1 (exported for the tests, which compare the two).
 */
export function urlDecodeLenient(s: string, plus = true): string {
  if (s.indexOf('%') < 0 && (!plus || s.indexOf('+') < 0)) return s;
  return decodeByHand(s, plus);
}

/** The lenient decoding of {@link urlDecodeLenient}, for a value holding a `%` or (with `plus`) a `+`. */
function decodeByHand(s: string, plus: boolean): string {
  if (asciiWithoutEscapes(s, plus)) return s;
  const n = s.length;
  // every code unit gives at most 3 bytes (a surrogate pair, two units, gives 4)
  if (decodeBuf.length < 3 * n) decodeBuf = Buffer.allocUnsafe(Math.max(3 * n, 2 * decodeBuf.length));
  const bytes = decodeBuf;
  let len = 0;
  let high = false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === 37 /* % */) {
      if (i + 2 < n) {
        const h = hexVal(s.charCodeAt(i + 1));
        const l = hexVal(s.charCodeAt(i + 2));
        if (h >= 0 && l >= 0) {
          const x = h * 16 + l;
          if (x >= 0x80) high = true;
          bytes[len++] = x;
          i += 2;
          continue;
        }
      }
      if (i + 5 < n && (s.charCodeAt(i + 1) | 32) === 117 /* u */) {
        const a = hexVal(s.charCodeAt(i + 2));
        const b = hexVal(s.charCodeAt(i + 3));
        const d = hexVal(s.charCodeAt(i + 4));
        const e = hexVal(s.charCodeAt(i + 5));
        if (a >= 0 && b >= 0 && d >= 0 && e >= 0) {
          const cp = ((a * 16 + b) * 16 + d) * 16 + e;
          if (cp >= 0x80) high = true;
          len = putUtf8(bytes, len, cp);
          i += 5;
          continue;
        }
      }
      bytes[len++] = 37;
    } else if (c === 43 /* + */ && plus) {
      bytes[len++] = 32;
    } else if (c < 0x80) {
      bytes[len++] = c;
    } else {
      const cp = s.codePointAt(i)!;
      if (cp > 0xffff) i++;
      high = true;
      len = putUtf8(bytes, len, cp);
    }
  }
  // ASCII bytes are their own code units (what utf8Lenient gives them)
  return high ? utf8Lenient(bytes, len) : bytes.toString('latin1', 0, len);
}

/** Values {@link urlDecodeOnce} still decodes without the builtin since the builtin last threw. */
const BUILTIN_SKIP_AFTER_THROW = 64;
let builtinSkips = 0;

/** Reused byte buffer of {@link urlDecodeOnce}. */
let decodeBuf = Buffer.allocUnsafe(256);

/** The UTF-8 bytes of code point `cp` into `b` at `at`; returns the new length. */
function putUtf8(b: Buffer, at: number, cp: number): number {
  if (cp < 0x80) b[at++] = cp;
  else if (cp < 0x800) {
    b[at++] = 0xc0 | (cp >> 6);
    b[at++] = 0x80 | (cp & 0x3f);
  } else if (cp < 0x10000) {
    b[at++] = 0xe0 | (cp >> 12);
    b[at++] = 0x80 | ((cp >> 6) & 0x3f);
    b[at++] = 0x80 | (cp & 0x3f);
  } else {
    b[at++] = 0xf0 | (cp >> 18);
    b[at++] = 0x80 | ((cp >> 12) & 0x3f);
    b[at++] = 0x80 | ((cp >> 6) & 0x3f);
    b[at++] = 0x80 | (cp & 0x3f);
  }
  return at;
}

/**
 * An ASCII value in which no `%` starts an escape (`%HH`, `%uHHHH`) and (with `plus`) no `+`
 * occurs decodes to itself: every character is its own byte, and a lone `%` stays.
 */
function asciiWithoutEscapes(s: string, plus: boolean): boolean {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80 || (c === 43 && plus)) return false;
    if (c !== 37) continue;
    if (i + 2 < n && hexVal(s.charCodeAt(i + 1)) >= 0 && hexVal(s.charCodeAt(i + 2)) >= 0) return false;
    if (i + 5 < n && (s.charCodeAt(i + 1) | 32) === 117) return false;
  }
  return true;
}

/** Maximum rounds of repeated URL decoding. */
export const MAX_URL_DECODE_ROUNDS = 4;

/** URL-decode until the value is stable, at most {@link MAX_URL_DECODE_ROUNDS} rounds. */
export function urlDecodeRepeat(s: string): string {
  let cur = s;
  for (let k = 0; k < MAX_URL_DECODE_ROUNDS; k++) {
    const next = urlDecodeOnce(cur, true);
    if (next === cur) break;
    cur = next;
  }
  return cur;
}

const NAMED_ENTITIES: Record<string, string> = {
  lt: '<',
  gt: '>',
  amp: '&',
  quot: '"',
  apos: "'",
  nbsp: ' ',
  tab: '\t',
  newline: '\n',
  colon: ':',
  semi: ';',
  comma: ',',
  period: '.',
  sol: '/',
  bsol: '\\',
  lpar: '(',
  rpar: ')',
  lsqb: '[',
  rsqb: ']',
  lbrack: '[',
  rbrack: ']',
  lcub: '{',
  rcub: '}',
  lbrace: '{',
  rbrace: '}',
  excl: '!',
  quest: '?',
  num: '#',
  equals: '=',
  plus: '+',
  grave: '`',
  dollar: '$',
  percnt: '%',
  ast: '*',
  midast: '*',
  hyphen: '-',
  dash: '-',
  lowbar: '_',
  verbar: '|',
  vert: '|',
  hat: '^',
  commat: '@',
  apostrophe: "'",
};

export const ENTITY = /&(?:#[xX]([0-9a-fA-F]{1,8});?|#([0-9]{1,10});?|([a-zA-Z][a-zA-Z0-9]{1,15});?)/g;

/** Decode HTML character references: decimal, hex (with or without `;`, leading zeros) and common named ones. */
export function htmlEntityDecode(s: string): string {
  if (s.indexOf('&') < 0) return s;
  return s.replace(
    ENTITY,
    (m, hex: string | undefined, dec: string | undefined, name: string | undefined) => {
      if (hex !== undefined || dec !== undefined) {
        const cp = hex !== undefined ? parseInt(hex, 16) : parseInt(dec!, 10);
        if (cp > 0 && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)) return String.fromCodePoint(cp);
        return m;
      }
      const v = NAMED_ENTITIES[name!.toLowerCase()];
      return v ?? m;
    },
  );
}

/** Decode JavaScript / CSS escapes: `\xHH`, `\uHHHH`, `\u{H..}`, CSS `\HHHHHH `. */
export function jsDecode(s: string): string {
  if (s.indexOf('\\') < 0) return s;
  let out = '';
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s[i]!;
    if (c !== '\\' || i + 1 >= n) {
      out += c;
      continue;
    }
    const d = s[i + 1]!;
    if ((d === 'x' || d === 'X') && i + 3 < n && HEX.test(s[i + 2]!) && HEX.test(s[i + 3]!)) {
      out += String.fromCharCode(parseInt(s.slice(i + 2, i + 4), 16));
      i += 3;
      continue;
    }
    if ((d === 'u' || d === 'U') && i + 5 < n && /^[0-9a-fA-F]{4}$/.test(s.slice(i + 2, i + 6))) {
      out += String.fromCharCode(parseInt(s.slice(i + 2, i + 6), 16));
      i += 5;
      continue;
    }
    if (HEX.test(d)) {
      // CSS escape: 1 to 6 hex digits, optional single whitespace
      let j = i + 1;
      while (j < n && j < i + 7 && HEX.test(s[j]!)) j++;
      const cp = parseInt(s.slice(i + 1, j), 16);
      if (j < n && (s[j] === ' ' || s[j] === '\t')) j++;
      out += cp > 0 && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff) ? String.fromCodePoint(cp) : '';
      i = j - 1;
      continue;
    }
    // an escaped ordinary character stands for itself (`\j` → `j`)
    out += d;
    i++;
  }
  return out;
}

const NON_ASCII = /[^ -~\t\n\r]/;

/** Unicode NFKC (full-width `＜` → `<`), only when the value has non-ASCII characters. */
export function nfkc(s: string): string {
  return NON_ASCII.test(s) ? s.normalize('NFKC') : s;
}

/** Lower-case. */
export function lowercase(s: string): string {
  return HAS_UPPER.test(s) ? s.toLowerCase() : s;
}

const HAS_UPPER = /[A-Z\u00c0-\uffff]/;

export const WS = /[\s\u00a0]+/g;

/** Code units that {@link WS} matches (built from the pattern itself, so the two agree). */
export const WS_UNIT: Uint8Array = (() => {
  const t = new Uint8Array(65536);
  const one = /^[\s\u00a0]$/;
  for (let c = 0; c < 65536; c++) if (one.test(String.fromCharCode(c))) t[c] = 1;
  return t;
})();

/** `s` with every run of whitespace replaced by `sep` (what `s.replace(WS, sep)` gives), in one scan. */
function replaceWhitespaceRuns(s: string, sep: string): string {
  let out = '';
  let start = 0;
  const n = s.length;
  let i = 0;
  while (i < n) {
    if (WS_UNIT[s.charCodeAt(i)] === 0) {
      i++;
      continue;
    }
    out += s.slice(start, i) + sep;
    i++;
    while (i < n && WS_UNIT[s.charCodeAt(i)] === 1) i++;
    start = i;
  }
  if (start === 0) return s;
  return out + s.slice(start);
}

/** Every run of whitespace becomes one space. */
export function compressWhitespace(s: string): string {
  return NEEDS_WS.test(s) ? replaceWhitespaceRuns(s, ' ') : s;
}

/**
 * {@link compressWhitespace} of a value known to hold a whitespace run or a whitespace
 * control (what {@link NEEDS_WS} looks for), without looking for it again.
 */
export function compressWhitespaceRuns(s: string): string {
  return s.replace(WS_RUN_OR_CONTROL, ' ');
}

/**
 * What {@link compressWhitespaceRuns} replaces: a run of two or more whitespace characters,
 * or one that is not a space (a single space is already what it would become). The regex
 * engine builds the result in fewer pieces than a concatenation per run.
 */
const WS_RUN_OR_CONTROL = /\s{2,}|[^\S ]/g;

const NEEDS_WS = /\s\s|[\t\n\r\f\v\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]/;

/** Remove every whitespace character. */
export function removeWhitespace(s: string): string {
  return replaceWhitespaceRuns(s, '');
}

/** Remove NUL characters. */
export function removeNulls(s: string): string {
  return s.indexOf('\0') < 0 ? s : s.replace(/\0/g, '');
}

/**
 * Replace C-style comments (`/* … *\/`, also unterminated, and MySQL `/*! … *\/`) by one space,
 * so `UNION/**\/SELECT` reads as `UNION SELECT`. Linear: one left-to-right scan.
 */
export function replaceComments(s: string): string {
  if (s.indexOf('/*') < 0) return s;
  let out = '';
  let i = 0;
  const n = s.length;
  while (i < n) {
    if (s.charCodeAt(i) === 47 && s.charCodeAt(i + 1) === 42) {
      let j = i + 2;
      // MySQL version comment `/*!50000select*/`: keep the content
      if (s.charCodeAt(j) === 33) {
        j++;
        while (j < n && s.charCodeAt(j) >= 48 && s.charCodeAt(j) <= 57) j++;
        const end = s.indexOf('*/', j);
        out += ' ' + (end < 0 ? s.slice(j) : s.slice(j, end)) + ' ';
        i = end < 0 ? n : end + 2;
        continue;
      }
      const end = s.indexOf('*/', j);
      out += ' ';
      i = end < 0 ? n : end + 2;
      continue;
    }
    out += s[i];
    i++;
  }
  return out;
}

/** Division slash, fraction slash, big solidus, set minus, reverse solidus look-alikes. */
const UNICODE_SLASHES = /[\u2215\u2044\u29f8\u2216\u29f9\ufe68\uff0f\uff3c]/;
const UNICODE_SLASHES_G = /[\u2215\u2044\u29f8\u2216\u29f9\ufe68\uff0f\uff3c]/g;

/**
 * Path normalisation for traversal checks: backslashes and Unicode slash look-alikes become
 * slashes, runs of slashes collapse, `/./` segments go. `..` segments are KEPT (they are what
 * we look for).
 */
export function normalizePath(s: string): string {
  const unicode = UNICODE_SLASHES.test(s);
  if (!unicode && s.indexOf('\\') < 0 && s.indexOf('//') < 0 && s.indexOf('/./') < 0) return s;
  let t = (unicode ? s.replace(UNICODE_SLASHES_G, '/') : s).replace(/\\/g, '/').replace(/\/{2,}/g, '/');
  let prev = '';
  while (prev !== t) {
    prev = t;
    t = t.replace(/\/\.\//g, '/');
  }
  return t;
}

/**
 * Command-line normalisation (as CRS `cmdLine`): drop `\`, `"`, `'`, `^`; `,` and `;` become
 * spaces; spaces before `/` and `(` go; whitespace is compressed; lower-cased.
 */
export function cmdLine(s: string): string {
  if (!CMD_SPECIAL.test(s)) return lowercase(s);
  return s
    .replace(/["'\\^]/g, '')
    .replace(/[,;]/g, ' ')
    .replace(/\s+/g, ' ')
    .replace(/ (?=[/(])/g, '')
    .toLowerCase();
}

const CMD_SPECIAL = /["'\\^,;\s]/;

/**
 * Shell word splicing undone: a POSIX shell joins the pieces of a word, so `c'a't`, `i''d`,
 * `"w"ho"am"i`, `who\\ami`, `w$@hoami`, `who$()ami` and ``wh``oami`` run `cat`, `id` and
 * `whoami` (and cmd.exe drops `^`: `w^ho^ami`). In a word (a run between whitespace and
 * `;&|<>()`) that holds a splice — an empty `''`, `""` or ``` `` ```, an empty `$@` or `$*`,
 * or a quote, backslash or `^` between two word characters — quotes (when the word's
 * quotes pair up), backslashes (not the `\\n`, `\\r` other rules read as line breaks), empty
 * expansions and carets are dropped. Words without a splice stay as they are: a lone
 * apostrophe (`I'd`, `O'Brien`) does not pair up, and `'quoted'` words keep their quotes.
 * An empty `$()` goes wherever it is. Linear: one scan, each word looked at a bounded number
 * of times.
 */
export function shellUnquote(s: string): string {
  if (!SHELL_SPLICE_CHARS.test(s)) return s;
  // an empty command substitution expands to nothing wherever it is (`who$()ami`)
  if (s.includes('$()')) s = s.replace(/\$\(\)/g, '');
  let out = '';
  const n = s.length;
  let i = 0;
  while (i < n) {
    let j = i;
    while (j < n && !SHELL_WORD_END.has(s.charCodeAt(j))) j++;
    out += j > i ? unspliceWord(s.slice(i, j)) : '';
    if (j < n) out += s[j];
    i = j + 1;
  }
  return out;
}

const SHELL_SPLICE_CHARS = /['"\\$`^]/;
/** Whitespace and the shell's operator characters, which end a word. */
const SHELL_WORD_END = new Set([...' \t\n\r\v\f;&|<>()'].map((c) => c.charCodeAt(0)));

function shellWordChar(c: string | undefined): boolean {
  return c !== undefined && /[\w./-]/.test(c);
}

function unspliceWord(w: string): string {
  if (!SHELL_SPLICE_CHARS.test(w)) return w;
  let spliced = /''|""|``|\$[@*]/.test(w);
  for (let k = 1; !spliced && k < w.length - 1; k++) {
    const c = w[k]!;
    if (
      (c === "'" || c === '"' || c === '\\' || c === '^') &&
      shellWordChar(w[k - 1]) &&
      shellWordChar(w[k + 1])
    )
      spliced = !(c === '\\' && (w[k + 1] === 'n' || w[k + 1] === 'r'));
  }
  if (!spliced) return w;
  const quotesPair = (w.split("'").length - 1) % 2 === 0 && (w.split('"').length - 1) % 2 === 0;
  let r = w.replace(/``|\$[@*]|\^/g, '').replace(/\\([^nr])/g, '$1');
  if (quotesPair) r = r.replace(/['"]/g, '');
  return r;
}

/** The last segment of a path (`/api/receipts/1 or 1=1` → `1 or 1=1`), for rules on values appended to an id. */
export function pathLastSegment(s: string): string {
  const i = s.lastIndexOf('/');
  return i < 0 ? s : s.slice(i + 1);
}

/**
 * For an ASCII value without `+\\/*` and without controls other than whitespace: whether no
 * `%` or `&` in it can start an escape, also once its whitespace is removed — the character after
 * a `%` (whitespace skipped) is no hex digit and no `u`, the one after a `&` no `#`, and the
 * name after a `&` (as is, and with whitespace skipped) no named entity that decoding knows.
 * URL and entity decoding then return the value unchanged (`100%`, `Barnes & Noble`), like
 * every other transform but `lowercase`, `remove_whitespace` and `compress_whitespace`.
 */
export function inertPercentAmp(s: string): boolean {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c !== 37 && c !== 38) continue;
    let j = i + 1;
    while (j < n && WS_UNIT[s.charCodeAt(j)] === 1) j++;
    if (j >= n) continue;
    const d = s.charCodeAt(j);
    if (c === 37) {
      if (hexVal(d) >= 0 || (d | 32) === 117) return false;
    } else if (d === 35) return false;
    else if (isLetter(d) && (namedEntityAt(s, i + 1, false) || namedEntityAt(s, j, true))) return false;
  }
  return true;
}

function isLetter(c: number): boolean {
  return (c | 32) >= 97 && (c | 32) <= 122;
}

/**
 * Whether the name {@link ENTITY} reads from `from` (a letter, then letters and digits, 16 at
 * most; whitespace skipped when `skipWs`, as in the value without whitespace) is one that
 * {@link htmlEntityDecode} replaces.
 */
function namedEntityAt(s: string, from: number, skipWs: boolean): boolean {
  const n = s.length;
  let name = '';
  for (let k = from; k < n && name.length < 16; k++) {
    const c = s.charCodeAt(k);
    if (skipWs && WS_UNIT[c] === 1) continue;
    if (!(isLetter(c) || (c >= 48 && c <= 57))) break;
    name += s[k]!;
  }
  if (name.length < 2 || !isLetter(name.charCodeAt(0))) return false;
  return NAMED_ENTITIES[name.toLowerCase()] != null;
}

/**
 * For a value without `%+&\\/*`, control characters and double spaces: whether its non-ASCII
 * characters leave every transform but `lowercase` and `remove_whitespace` without effect —
 * none is whitespace or a slash look-alike, and the value is NFKC-normalised.
 */
export function nonAsciiStable(s: string): boolean {
  return !NON_ASCII_WS_OR_SLASH.test(s) && s.normalize('NFKC') === s;
}

/**
 * A non-ASCII whitespace character (a {@link WS_UNIT} from U+0080 on) or a slash look-alike
 * ({@link UNICODE_SLASHES}): one regex over the value instead of a loop over its code units.
 */
const NON_ASCII_WS_OR_SLASH: RegExp = (() => {
  let cls = '';
  for (let c = 0x80; c < 65536; c++) if (WS_UNIT[c] === 1) cls += `\\u${c.toString(16).padStart(4, '0')}`;
  // (one class: the slash pattern is a class too)
  return new RegExp(`[${cls}${UNICODE_SLASHES.source.slice(1, -1)}]`);
})();

/** Every transform, by the name rule packs use. */
export const TRANSFORMS: Readonly<Record<string, Transform>> = {
  url_decode: urlDecodeRepeat,
  url_decode_once: (s) => urlDecodeOnce(s, true),
  url_decode_keep_plus: (s) => {
    let cur = s;
    for (let k = 0; k < MAX_URL_DECODE_ROUNDS; k++) {
      const next = urlDecodeOnce(cur, false);
      if (next === cur) break;
      cur = next;
    }
    return cur;
  },
  html_entity_decode: htmlEntityDecode,
  js_decode: jsDecode,
  nfkc,
  lowercase,
  compress_whitespace: compressWhitespace,
  remove_whitespace: removeWhitespace,
  remove_nulls: removeNulls,
  replace_comments: replaceComments,
  normalize_path: normalizePath,
  path_last_segment: pathLastSegment,
  cmd_line: cmdLine,
  shell_unquote: shellUnquote,
};

export const TRANSFORM_NAMES = Object.keys(TRANSFORMS);
