import { escapeRegex } from '../../gateway/regex-escape.js';
import { LO, HI, HI_NON_ASCII, HI_DOUBLE_SPACE, type CharMask } from './charmask.js';

/**
 * Literal prefilter: for each rule regex, a set of literal strings of which every match holds
 * at least one (derived from the regex itself, so it is a necessary condition by
 * construction), and one Aho-Corasick automaton over the literals of every rule of an engine.
 * One scan of a value tells which rules can possibly match it; the others are skipped without
 * running their regex.
 *
 * The automaton matches loosely, which keeps it a superset of what any regex can match: ASCII
 * letters are folded to lower case (so `i` flags and lower-cased inputs need nothing
 * special), and every non-ASCII code unit is one and the same character.
 */

/** Most strings a node's exact set may hold before the analysis gives up on it. */
const MAX_EXACT = 256;
/** Most characters a class may hold to count as a set of one-character literals. */
const MAX_CLASS = 32;

/** What the analysis knows about a regex node. */
interface Info {
  /** every string the node can match (folded), or undefined when unknown or too many */
  readonly exact: readonly string[] | undefined;
  /** every match holds one of these (folded, non-empty), or undefined when no literal is required */
  readonly req: readonly string[] | undefined;
}

const ANY: Info = { exact: undefined, req: undefined };
const EMPTY: Info = { exact: [''], req: undefined };

/**
 * A word boundary (`\b`) in the analysis's strings: never a folded character (those are at
 * most U+0080). A literal `\uffffor\uffff` is `or` with a word boundary on both sides in
 * every match: `\bor\b` does not match `order` or `airport`. (See {@link boundedLiterals}.)
 */
export const BOUNDARY = '\uffff';
const BOUNDARY_INFO: Info = { exact: [BOUNDARY], req: undefined };

/** `s` without its boundary marks. */
export function bare(s: string): string {
  return s.indexOf(BOUNDARY) < 0 ? s : s.replaceAll(BOUNDARY, '');
}

/** The boundary marks of a literal: bit 1 before it, bit 2 after it. */
export function marksOf(l: string): number {
  return (l.startsWith(BOUNDARY) ? 1 : 0) | (l.endsWith(BOUNDARY) ? 2 : 0);
}

/** The bare literal `l` with the boundary marks `marks` ({@link marksOf}). */
export function withMarks(l: string, marks: number): string {
  return `${(marks & 1) !== 0 ? BOUNDARY : ''}${l}${(marks & 2) !== 0 ? BOUNDARY : ''}`;
}

/** The folding of the automaton: ASCII upper case to lower case, non-ASCII to U+0080. */
export function foldCode(c: number): number {
  if (c >= 65 && c <= 90) return c + 32;
  return c < 128 ? c : 128;
}

/**
 * Whether lower-casing `s` leaves its literal scan unchanged. The scan folds ASCII case and
 * maps every non-ASCII code unit to one class; lower-casing maps every code point to as many
 * non-ASCII units but two: U+0130 (to `i` and U+0307) and U+212A (to `k`). A test checks
 * this over every code point.
 */
export function lowerScansAlike(s: string): boolean {
  return s.indexOf('\u0130') < 0 && s.indexOf('\u212a') < 0;
}

function foldString(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) out += String.fromCharCode(foldCode(s.charCodeAt(i)));
  return out;
}

/** One-character literals that ordinary text holds often (letters, digits, space, prose punctuation). */
const COMMON_CHAR = /^[a-z0-9 .,'"():;!?/&-]$/;

/** Relative chance of a literal set to occur in ordinary text (lower is a better gate). */
function weight(req: readonly string[]): number {
  let w = 0;
  for (const marked of req) {
    const l = bare(marked);
    w +=
      l.length >= 5
        ? 0.001
        : l.length === 1
          ? COMMON_CHAR.test(l)
            ? 1
            : 0.3
          : [1, 1, 0.1, 0.02, 0.005][l.length]!;
  }
  return w;
}

function reqOfExact(exact: readonly string[]): readonly string[] | undefined {
  // (a boundary alone is no literal)
  return exact.some((e) => bare(e) === '') ? undefined : exact;
}

function best(
  a: readonly string[] | undefined,
  b: readonly string[] | undefined,
): readonly string[] | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  const wa = weight(a);
  const wb = weight(b);
  if (wb !== wa) return wb < wa ? b : a;
  // the same literals, one set with more word boundaries (`x` of the group in `\b(?:x|y)\b`,
  // `\bx\b` of the sequence): the bounded ones, which tell more
  return markCount(b) > markCount(a) && sameBare(a, b) ? b : a;
}

function markCount(req: readonly string[]): number {
  let n = 0;
  for (const l of req) n += [0, 1, 1, 2][marksOf(l)]!;
  return n;
}

function sameBare(a: readonly string[], b: readonly string[]): boolean {
  const x = new Set(a.map(bare));
  const y = new Set(b.map(bare));
  return x.size === y.size && [...x].every((l) => y.has(l));
}

function dedupe(list: readonly string[]): string[] {
  return [...new Set(list)];
}

function product(a: readonly string[], b: readonly string[]): string[] | undefined {
  if (a.length * b.length > MAX_EXACT) return undefined;
  const out: string[] = [];
  for (const x of a) for (const y of b) out.push(x + y);
  return dedupe(out);
}

class Unsupported extends Error {}

/** A small parser of JavaScript regex syntax that only computes {@link Info}. */
class Analyzer {
  private i = 0;

  constructor(
    private readonly src: string,
    private readonly unicode: boolean,
  ) {}

  run(): Info {
    const r = this.alternation();
    if (this.i !== this.src.length) throw new Unsupported(`unexpected ${this.src[this.i]!}`);
    return r;
  }

  private alternation(): Info {
    const alts: Info[] = [this.sequence()];
    while (this.src[this.i] === '|') {
      this.i++;
      alts.push(this.sequence());
    }
    if (alts.length === 1) return alts[0]!;
    let exact: string[] | undefined = [];
    let req: string[] | undefined = [];
    for (const a of alts) {
      if (exact !== undefined && a.exact !== undefined) exact.push(...a.exact);
      else exact = undefined;
      const r = a.req ?? (a.exact !== undefined ? reqOfExact(a.exact) : undefined);
      if (req !== undefined && r !== undefined) req.push(...r);
      else req = undefined;
    }
    if (exact !== undefined) exact = exact.length > MAX_EXACT ? undefined : dedupe(exact);
    return { exact, req: req !== undefined ? dedupe(req) : undefined };
  }

  private sequence(): Info {
    let all: readonly string[] | undefined = [''];
    let run: readonly string[] = [''];
    let req: readonly string[] | undefined;
    const closeRun = () => {
      req = best(req, reqOfExact(run));
      run = [''];
    };
    while (this.i < this.src.length && this.src[this.i] !== '|' && this.src[this.i] !== ')') {
      const item = this.quantified();
      if (all !== undefined) all = item.exact !== undefined ? product(all, item.exact) : undefined;
      if (item.exact === undefined) {
        closeRun();
        req = best(req, item.req);
        continue;
      }
      const next = product(run, item.exact);
      if (next === undefined) {
        closeRun();
        run = item.exact;
      } else run = next;
      req = best(req, item.req);
    }
    closeRun();
    if (all !== undefined) req = best(req, reqOfExact(all));
    return { exact: all, req };
  }

  private quantified(): Info {
    const atom = this.atom();
    const q = this.quantifier();
    if (q === undefined) return atom;
    const [min, max] = q;
    if (this.src[this.i] === '?') this.i++; // lazy
    const reqAtom = atom.req ?? (atom.exact !== undefined ? reqOfExact(atom.exact) : undefined);
    let exact: readonly string[] | undefined;
    if (atom.exact !== undefined && max !== Infinity && max <= 3) {
      // enumerate small repetition counts: x? x{2} x{1,3}
      let acc: readonly string[] | undefined = [''];
      const out: string[] = [];
      for (let n = 0; n <= max && acc !== undefined; n++) {
        if (n >= min) out.push(...acc);
        if (n < max) acc = product(acc, atom.exact);
      }
      exact = acc === undefined || out.length > MAX_EXACT ? undefined : dedupe(out);
    }
    return { exact, req: min >= 1 ? reqAtom : undefined };
  }

  /** `*` `+` `?` `{n}` `{n,}` `{n,m}`, or undefined (a `{` that is no quantifier is a literal, Annex B). */
  private quantifier(): [number, number] | undefined {
    const c = this.src[this.i];
    if (c === '*') {
      this.i++;
      return [0, Infinity];
    }
    if (c === '+') {
      this.i++;
      return [1, Infinity];
    }
    if (c === '?') {
      this.i++;
      return [0, 1];
    }
    if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.i));
      if (!m) return undefined;
      this.i += m[0].length;
      const min = Number(m[1]);
      const max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
      return [min, max];
    }
    return undefined;
  }

  private atom(): Info {
    const s = this.src;
    const c = s[this.i]!;
    if (c === '(') {
      this.i++;
      let lookaround = false;
      if (s.startsWith('?:', this.i)) this.i += 2;
      else if (s.startsWith('?=', this.i) || s.startsWith('?!', this.i)) {
        this.i += 2;
        lookaround = true;
      } else if (s.startsWith('?<=', this.i) || s.startsWith('?<!', this.i)) {
        this.i += 3;
        lookaround = true;
      } else if (s.startsWith('?<', this.i)) {
        const end = s.indexOf('>', this.i);
        if (end < 0) throw new Unsupported('group name');
        this.i = end + 1;
      } else if (s[this.i] === '?') throw new Unsupported('group modifier');
      const inner = this.alternation();
      if (s[this.i] !== ')') throw new Unsupported('unclosed group');
      this.i++;
      return lookaround ? EMPTY : inner;
    }
    if (c === '[') return this.charClass();
    if (c === '^' || c === '$') {
      this.i++;
      return EMPTY;
    }
    if (c === '.') {
      this.i++;
      return ANY;
    }
    if (c === '\\') return this.escape();
    if (c === '*' || c === '+' || c === '?' || c === ')' || c === '|')
      throw new Unsupported(`nothing to repeat at ${this.i}`);
    this.i++;
    if (this.unicode && c.charCodeAt(0) >= 0xd800 && c.charCodeAt(0) <= 0xdbff) {
      // a surrogate pair is one character in unicode mode
      this.i++;
      return ANY;
    }
    return lit(c);
  }

  private escape(): Info {
    const s = this.src;
    const e = s[this.i + 1];
    if (e === undefined) throw new Unsupported('trailing backslash');
    this.i += 2;
    switch (e) {
      case 'b':
        return BOUNDARY_INFO;
      case 'B':
        return EMPTY;
      case 'd':
        return set('0123456789');
      case 'D':
      case 'w':
      case 'W':
      case 's':
      case 'S':
        return ANY;
      case 'p':
      case 'P':
        if (this.unicode) throw new Unsupported('property escape');
        return lit(e);
      case 'k':
        if (s[this.i] === '<') throw new Unsupported('named backreference');
        return lit(e);
      default:
        break;
    }
    if (e >= '1' && e <= '9') throw new Unsupported('backreference');
    this.i -= 1;
    return lit(this.escapedChar());
  }

  /** The character of an escape whose backslash is consumed (at `this.i`: the escape letter). */
  private escapedChar(): string {
    const s = this.src;
    const e = s[this.i]!;
    this.i++;
    switch (e) {
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 't':
        return '\t';
      case 'v':
        return '\v';
      case 'f':
        return '\f';
      case '0':
        if (/[0-9]/.test(s[this.i] ?? '')) throw new Unsupported('octal escape');
        return '\0';
      case 'x': {
        const m = /^[0-9a-fA-F]{2}/.exec(s.slice(this.i));
        if (!m) {
          if (this.unicode) throw new Unsupported('bad \\x');
          return 'x';
        }
        this.i += 2;
        return String.fromCharCode(parseInt(m[0], 16));
      }
      case 'u': {
        const m = /^[0-9a-fA-F]{4}/.exec(s.slice(this.i));
        if (m) {
          this.i += 4;
          return String.fromCharCode(parseInt(m[0], 16));
        }
        throw new Unsupported('\\u form');
      }
      case 'c':
        throw new Unsupported('control escape');
      default:
        if (/[0-9]/.test(e)) throw new Unsupported('numeric escape');
        if (/[a-zA-Z]/.test(e) && this.unicode) throw new Unsupported('identity escape');
        return e;
    }
  }

  private charClass(): Info {
    const s = this.src;
    this.i++; // [
    let negated = false;
    if (s[this.i] === '^') {
      negated = true;
      this.i++;
    }
    const chars = new Set<string>();
    let wide = false;
    while (this.i < s.length && s[this.i] !== ']') {
      const lo = this.classAtom();
      if (s[this.i] === '-' && s[this.i + 1] !== ']' && this.i + 1 < s.length) {
        this.i++;
        const hi = this.classAtom();
        if (lo === undefined || hi === undefined) {
          if (this.unicode) throw new Unsupported('class range of a class');
          wide = true; // Annex B: `[\w-x]` is \w, '-', x
          continue;
        }
        const a = lo.charCodeAt(0);
        const b = hi.charCodeAt(0);
        if (b < a) throw new Unsupported('range out of order');
        if (b - a > MAX_CLASS) wide = true;
        else for (let x = a; x <= b; x++) chars.add(String.fromCharCode(x));
        continue;
      }
      if (lo === undefined) wide = true;
      else chars.add(lo);
    }
    if (s[this.i] !== ']') throw new Unsupported('unclosed class');
    this.i++;
    if (negated || wide) return ANY;
    const folded = dedupe([...chars].map(foldString));
    if (folded.length > MAX_CLASS || folded.length === 0) return ANY;
    return { exact: folded, req: folded };
  }

  /** One class member: a character, or undefined for a class escape (`\w`, `\d` …). */
  private classAtom(): string | undefined {
    const s = this.src;
    const c = s[this.i]!;
    if (c !== '\\') {
      this.i++;
      if (this.unicode && c.charCodeAt(0) >= 0xd800 && c.charCodeAt(0) <= 0xdbff) {
        this.i++;
        return undefined;
      }
      return c;
    }
    const e = s[this.i + 1];
    if (e === undefined) throw new Unsupported('trailing backslash');
    if ('dDwWsS'.includes(e)) {
      this.i += 2;
      return undefined;
    }
    if (e === 'p' || e === 'P') {
      if (this.unicode) throw new Unsupported('property escape');
    }
    if (e === 'b') {
      this.i += 2;
      return '\b';
    }
    if (e === '-') {
      this.i += 2;
      return '-';
    }
    this.i += 1;
    return this.escapedChar();
  }
}

function lit(c: string): Info {
  const f = foldString(c);
  return { exact: [f], req: [f] };
}

function set(chars: string): Info {
  const list = dedupe([...chars].map(foldString));
  return { exact: list, req: list };
}

/** Whether `c` is a character `\b` counts as a word character (non-ASCII folds to U+0080: not one). */
function isWordCode(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 95;
}

/**
 * The boundary marks `x` (bit 1: before it, bit 2: after it) keeps as the stand-in for a longer
 * literal `l` that holds it, whose own marks are `lm`: those that some occurrence of `x` in `l`
 * satisfies (a boundary of `l` where they meet its ends, or one between two of its characters).
 * `or` keeps its closing boundary for `\bxor\b`, and none for `order`.
 */
function marksWithin(x: string, xm: number, l: string, lm: number): number {
  let best = 0;
  for (let p = l.indexOf(x); p >= 0; p = l.indexOf(x, p + 1)) {
    const e = p + x.length;
    const left = p === 0 ? (lm & 1) !== 0 : isWordCode(l.charCodeAt(p - 1)) !== isWordCode(l.charCodeAt(p));
    const right =
      e === l.length ? (lm & 2) !== 0 : isWordCode(l.charCodeAt(e - 1)) !== isWordCode(l.charCodeAt(e));
    const kept = xm & ((left ? 1 : 0) | (right ? 2 : 0));
    if (kept === xm) return xm;
    if (kept > best) best = kept;
  }
  return best;
}

/**
 * Drop literals that hold another literal of the set (holding the shorter one is implied),
 * comparing them without their boundary marks. A literal keeps a boundary mark only when every
 * form of it in the set has it, and, for each longer literal dropped for it, when one of its
 * occurrences there has it ({@link marksWithin}).
 */
function minimise(req: readonly string[]): string[] {
  const marks = new Map<string, number>();
  for (const r of req) {
    const l = bare(r);
    const m = marksOf(r);
    const had = marks.get(l);
    marks.set(l, had === undefined ? m : had & m);
  }
  const sorted = [...marks.keys()].sort((a, b) => a.length - b.length);
  const out: string[] = [];
  for (const l of sorted) {
    const within = out.filter((x) => l.includes(x));
    if (within.length === 0) out.push(l);
    for (const x of within) marks.set(x, marksWithin(x, marks.get(x)!, l, marks.get(l)!));
  }
  return out.map((l) => withMarks(l, marks.get(l)!));
}

/**
 * {@link requiredLiterals} with boundary marks: a literal starting ({@link BOUNDARY}) or ending
 * with a mark has a word boundary (`\b`) there in every match of `source`.
 */
export function boundedLiterals(source: string, flags: string): string[] | undefined {
  // with both `i` and `u`, Unicode case folding maps some non-ASCII characters to ASCII letters
  if (flags.includes('i') && flags.includes('u')) return undefined;
  if (flags.includes('v')) return undefined;
  try {
    const info = new Analyzer(source, flags.includes('u')).run();
    const req = info.req ?? (info.exact !== undefined ? reqOfExact(info.exact) : undefined);
    return req === undefined || req.length === 0 ? undefined : minimise(req);
  } catch (e) {
    if (e instanceof Unsupported) return undefined;
    throw e;
  }
}

/**
 * A regex that a string holding one of `literals` (with boundary marks, see
 * {@link boundedLiterals}) as a match of the literal's regex would hold it, with its word
 * boundaries, matches: case-insensitive, and each whitespace character of a literal standing for
 * any run of whitespace (so it also holds for the string before its whitespace runs are
 * compressed). Undefined when no literal has a boundary (the automaton's hit tells as much) or
 * one holds a non-ASCII character (which the automaton folds: any stands for it), and when one
 * that is a word has none. The automaton finds `or` in `order` and `airport`; this tells
 * whether `\bor\b` is there.
 */
export function confirmOf(literals: readonly string[]): RegExp | undefined {
  if (!literals.some((l) => marksOf(l) !== 0)) return undefined;
  // a word without boundaries (`group`) is held about as often as one with them: the regex
  // would mostly confirm, at a cost
  if (literals.some((l) => marksOf(l) === 0 && /^\w+$/.test(l))) return undefined;
  const parts: string[] = [];
  for (const l of literals) {
    const b = bare(l);
    let p = '';
    for (const ch of b) {
      if (ch.charCodeAt(0) >= 128) return undefined;
      p += /\s/.test(ch) ? '\\s+' : escapeRegex(ch);
    }
    const m = marksOf(l);
    parts.push(`${(m & 1) !== 0 ? '\\b' : ''}${p}${(m & 2) !== 0 ? '\\b' : ''}`);
  }
  return new RegExp(parts.join('|'), 'i');
}

/**
 * Literals of which every match of `source` (with `flags`) holds at least one, folded like
 * the automaton; undefined when the regex requires none (or uses syntax the analysis does not
 * follow — then the rule simply always runs).
 */
export function requiredLiterals(source: string, flags: string): string[] | undefined {
  return boundedLiterals(source, flags)?.map(bare);
}

/**
 * Whether the pattern `source` names its groups or refers to one (`(?<x>…)`, `\1`, `\k<x>`):
 * its parts cannot be compiled apart, nor joined with other patterns into one alternation
 * (a number would then name another pattern's group, and a name could occur twice).
 */
export function namesOrRefersToGroups(source: string): boolean {
  return /\\[1-9k]|\(\?<[^=!]/.test(source);
}

/**
 * The top-level alternatives of `source` (split at each `|` outside groups and character
 * classes), each with the literals every match of it holds (with their boundary marks, see
 * {@link boundedLiterals}): undefined unless there are at
 * least two and each requires literals, or when the pattern has a backreference or a named
 * group (its alternatives alone could not be compiled the same). A match of the pattern is a
 * match of one alternative, so a value holding none of an alternative's literals cannot
 * match through it: an engine runs only the alternatives whose literals it holds.
 */
export function alternativeLiterals(
  source: string,
  flags: string,
): { source: string; literals: string[] }[] | undefined {
  if (namesOrRefersToGroups(source)) return undefined;
  const parts: string[] = [];
  let depth = 0;
  let inClass = false;
  let start = 0;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) {
      parts.push(source.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(source.slice(start));
  if (parts.length < 2) return undefined;
  const out: { source: string; literals: string[] }[] = [];
  for (const part of parts) {
    const literals = boundedLiterals(part, flags);
    if (literals === undefined) return undefined;
    out.push({ source: part, literals });
  }
  return out;
}

/**
 * An Aho-Corasick automaton over literal sets ("requirements"). {@link scanLiterals} marks,
 * for one string, every requirement of which the string holds a literal.
 */
export interface LiteralScanner {
  /** number of requirements */
  readonly size: number;
  /** UTF-16 code unit → alphabet index of its folding (0: in no literal) */
  readonly classOf: Uint8Array;
  readonly width: number;
  /**
   * DFA transitions: `delta[state * width + class]` is the next state times `width` (the
   * offset of its row), or, when that state ends a literal, the state bit-inverted (negative:
   * its literals are looked up by state, and its row found by one multiplication)
   */
  readonly delta: Int32Array;
  /** requirement ids ending at a state (its own and its suffixes'): outIds[outStart[s] .. outStart[s+1]] */
  readonly outStart: Int32Array;
  readonly outIds: Int32Array;
}

/** Build the automaton; requirement `k` is `reqs[k]` (literals already folded, non-empty). */
export function buildScanner(reqs: readonly (readonly string[])[]): LiteralScanner {
  const classOf = new Uint8Array(129);
  let width = 1;
  for (const req of reqs)
    for (const l of req)
      for (let i = 0; i < l.length; i++) {
        const c = foldCode(l.charCodeAt(i));
        if (classOf[c] === 0) classOf[c] = width++;
      }
  // trie
  const next: Map<number, number>[] = [new Map()];
  const ends: number[][] = [[]];
  reqs.forEach((req, id) => {
    for (const l of req) {
      let st = 0;
      for (let i = 0; i < l.length; i++) {
        const c = classOf[foldCode(l.charCodeAt(i))]!;
        let to = next[st]!.get(c);
        if (to === undefined) {
          to = next.length;
          next.push(new Map());
          ends.push([]);
          next[st]!.set(c, to);
        }
        st = to;
      }
      if (!ends[st]!.includes(id)) ends[st]!.push(id);
    }
  });
  const n = next.length;
  const delta = new Int32Array(n * width);
  const fail = new Int32Array(n);
  const out: number[][] = ends.map((e) => [...e]);
  const queue: number[] = [];
  for (let c = 1; c < width; c++) {
    const to = next[0]!.get(c);
    if (to !== undefined) {
      delta[c] = to;
      fail[to] = 0;
      queue.push(to);
    }
  }
  for (let q = 0; q < queue.length; q++) {
    const st = queue[q]!;
    for (const id of out[fail[st]!]!) if (!out[st]!.includes(id)) out[st]!.push(id);
    for (let c = 0; c < width; c++) {
      const to = next[st]!.get(c);
      if (to !== undefined && c !== 0) {
        fail[to] = delta[fail[st]! * width + c]!;
        delta[st * width + c] = to;
        queue.push(to);
      } else delta[st * width + c] = delta[fail[st]! * width + c]!;
    }
  }
  const outStart = new Int32Array(n + 1);
  const ids: number[] = [];
  for (let st = 0; st < n; st++) {
    outStart[st] = ids.length;
    ids.push(...out[st]!);
  }
  outStart[n] = ids.length;
  for (let k = 0; k < delta.length; k++) {
    const to = delta[k]!;
    delta[k] = out[to]!.length > 0 ? ~to : to * width;
  }
  const classOfUnit = new Uint8Array(65536);
  for (let c = 0; c < 65536; c++) classOfUnit[c] = classOf[foldCode(c)]!;
  return { size: reqs.length, classOf: classOfUnit, width, delta, outStart, outIds: Int32Array.from(ids) };
}

/**
 * One transition of the automaton from `row` on character class `cls`: marks `hit[base + k]
 * = stamp` for every requirement `k` ending at the state reached, and returns its row.
 */
function step(
  sc: LiteralScanner,
  row: number,
  cls: number,
  hit: Int32Array,
  base: number,
  stamp: number,
): number {
  const to = sc.delta[row + cls]!;
  if (to >= 0) return to;
  const st = ~to;
  const b = sc.outStart[st + 1]!;
  for (let k = sc.outStart[st]!; k < b; k++) hit[base + sc.outIds[k]!] = stamp;
  return Math.imul(st, sc.width);
}

/**
 * Scan `s`: `hit[base + k] = stamp` for every requirement `k` of which `s` holds a literal
 * (folded). Linear in the length of `s`; no allocation.
 */
export function scanLiterals(sc: LiteralScanner, s: string, hit: Int32Array, stamp: number, base = 0): void {
  const classOf = sc.classOf;
  let row = 0;
  const n = s.length;
  for (let i = 0; i < n; i++) row = step(sc, row, classOf[s.charCodeAt(i)]!, hit, base, stamp);
}

/**
 * {@link scanLiterals} and {@link charMask} (the signature into `mask`) in one pass over `s`.
 * Returns the OR of `plansOf[k]` over the requirements `k` found (an engine keeps there the
 * plans each requirement lets run). (The automaton's step is written out: this loop runs on
 * every inspected value, and with the signature beside it, V8 keeps it in registers only
 * when it is this lean; a loop that also carried the whitespace-skipping scan ran every
 * character about 1.4 times slower.)
 */
export function scanLiteralsAndMask(
  sc: LiteralScanner,
  s: string,
  hit: Int32Array,
  stamp: number,
  base: number,
  mask: CharMask,
  plansOf: Int32Array,
): number {
  const classOf = sc.classOf;
  const delta = sc.delta;
  const outStart = sc.outStart;
  const outIds = sc.outIds;
  const width = sc.width;
  // (the signature tables as locals: read through the module's bindings, this loop ran about
  // 15 % slower per character)
  const loOf = LO;
  const hiOf = HI;
  let row = 0;
  let lo = 0;
  let hi = 0;
  let prev = 0;
  let plans = 0;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 128) {
      lo |= loOf[c]!;
      hi |= hiOf[c]!;
      if (c === 32 && prev === 32) hi |= HI_DOUBLE_SPACE;
    } else hi |= HI_NON_ASCII;
    prev = c;
    const to = delta[row + classOf[c]!]!;
    if (to >= 0) {
      row = to;
      continue;
    }
    const st = ~to;
    const end = outStart[st + 1]!;
    for (let k = outStart[st]!; k < end; k++) {
      const id = outIds[k]!;
      hit[base + id] = stamp;
      plans |= plansOf[id]!;
    }
    row = Math.imul(st, width);
  }
  mask.lo = lo;
  mask.hi = hi;
  return plans;
}

/**
 * {@link scanLiterals} of `s` with the code units marked in `skip` left out: the scan of the
 * string those removed would give, without building it. (The step written out, as in
 * {@link scanLiteralsAndMask}.)
 */
export function scanLiteralsSkipping(
  sc: LiteralScanner,
  s: string,
  hit: Int32Array,
  stamp: number,
  base: number,
  skip: Uint8Array,
): void {
  const classOf = sc.classOf;
  const delta = sc.delta;
  const outStart = sc.outStart;
  const outIds = sc.outIds;
  const width = sc.width;
  let row = 0;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (skip[c] === 1) continue;
    const to = delta[row + classOf[c]!]!;
    if (to >= 0) {
      row = to;
      continue;
    }
    const st = ~to;
    const end = outStart[st + 1]!;
    for (let k = outStart[st]!; k < end; k++) hit[base + outIds[k]!] = stamp;
    row = Math.imul(st, width);
  }
}

/**
 * {@link scanLiterals} of `s` with each run of the code units marked in `ws` read as one space:
 * the scan of the string `compressWhitespaceRuns` would give (every maximal run of
 * whitespace becomes one space), without building it. (The step written out, as in
 * {@link scanLiteralsAndMask}.)
 */
export function scanLiteralsCompressing(
  sc: LiteralScanner,
  s: string,
  hit: Int32Array,
  stamp: number,
  base: number,
  ws: Uint8Array,
): void {
  const classOf = sc.classOf;
  const delta = sc.delta;
  const outStart = sc.outStart;
  const outIds = sc.outIds;
  const width = sc.width;
  const space = classOf[32]!;
  let row = 0;
  let inRun = false;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    let cls: number;
    if (ws[c] === 1) {
      if (inRun) continue;
      inRun = true;
      cls = space;
    } else {
      inRun = false;
      cls = classOf[c]!;
    }
    const to = delta[row + cls]!;
    if (to >= 0) {
      row = to;
      continue;
    }
    const st = ~to;
    const end = outStart[st + 1]!;
    for (let k = outStart[st]!; k < end; k++) hit[base + outIds[k]!] = stamp;
    row = Math.imul(st, width);
  }
}
