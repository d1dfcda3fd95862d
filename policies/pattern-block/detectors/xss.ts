/**
 * XSS detector: an HTML/JS context check. Instead of matching words, it reads the value the
 * way a browser's tokenizer would: a `<` followed by a tag name opens a tag, and the tag is
 * judged by its name (script, iframe, svg …) and its attributes (event handlers, script
 * URLs, CSS expressions). Outside tags it looks for script URLs and JS sinks reached by a
 * quote/bracket break. "<3", "a < b", "<S3cret>" and "Price > list" are not tags that do
 * anything and pass.
 *
 * Input: a value already decoded (URL, HTML entities, JS escapes), NFKC-normalised and
 * lower-cased by the rule's transforms.
 */

import { WS_UNIT } from '../transforms.js';

/** Tags that are dangerous by themselves (script execution, navigation, embedding, styling). */
const DANGEROUS_TAGS = new Set([
  'script',
  'iframe',
  'frame',
  'frameset',
  'object',
  'embed',
  'applet',
  'style',
  'link',
  'meta',
  'base',
  'svg',
  'math',
  'xml',
  'import',
  'vmlframe',
  'template',
  'portal',
  'xss',
  'isindex',
  'layer',
  'ilayer',
  'bgsound',
  'noscript',
  'handler',
  'listener',
  'animate',
  'set',
  'image',
  'xmp',
  'plaintext',
  'form',
  'html',
  'body',
  'head',
  'title',
  'textarea',
]);

/** Attributes that take a URL: a script scheme there runs code. */
const URL_ATTRS = new Set([
  'href',
  'src',
  'action',
  'formaction',
  'data',
  'code',
  'codebase',
  'background',
  'dynsrc',
  'lowsrc',
  'xlink:href',
  'from',
  'to',
  'values',
  'poster',
  'srcdoc',
  'content',
  'style',
  'ping',
  'cite',
  'icon',
  'manifest',
  'archive',
  'classid',
  'by',
  'folder',
  'datasrc',
  'xmlns',
]);

/** Script URL schemes (matched on a value with whitespace and NULs removed). */
export const SCRIPT_URL =
  /(?:java|vb|live|ecma|j|moz)script:|\bmocha:|data:(?:text\/html|image\/svg|application\/(?:x-)?(?:javascript|ecmascript|xhtml))/;
const SCRIPT_URL_ALL = new RegExp(SCRIPT_URL.source, 'g');

/** JavaScript words that may come before the code itself: `javascript:void 0`, `javascript:new Image().src=…`. */
const JS_LEADING_WORDS = new Set([
  'new',
  'void',
  'typeof',
  'throw',
  'delete',
  'return',
  'await',
  'yield',
  'var',
  'let',
  'const',
]);

function isIdentifierUnit(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 95;
}

/** The index in `v` of the code unit that has index `k` once whitespace and NULs are removed (`v.length` past the end). */
function originalIndex(v: string, k: number): number {
  let seen = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 0 || WS_UNIT[c] === 1) continue;
    if (seen === k) return i;
    seen++;
  }
  return v.length;
}

/**
 * Whether what follows a script scheme (`javascript:` …) from `from` on reads as code:
 * nothing (a bare scheme), or a character that is not part of a word (`(`, `` ` ``, `=`,
 * `/`, `.`, quotes …) before a second word, or words after the first only when it is one of
 * {@link JS_LEADING_WORDS}. Two plain words in a row are prose (`JavaScript: The Good
 * Parts`), which a script URL cannot start with: `a b` is a syntax error.
 */
function codeFollows(v: string, from: number): boolean {
  const n = v.length;
  let i = from;
  let words = 0;
  let leading = true;
  for (;;) {
    while (i < n && (v.charCodeAt(i) === 0 || WS_UNIT[v.charCodeAt(i)] === 1)) i++;
    if (i >= n || !isIdentifierUnit(v.charCodeAt(i))) return true;
    if (words > 0 && !leading) return false;
    const start = i;
    while (i < n && isIdentifierUnit(v.charCodeAt(i))) i++;
    leading = JS_LEADING_WORDS.has(v.slice(start, i));
    words++;
  }
}

/** CSS that runs script (inside style attributes or style rules). */
export const CSS_SCRIPT = /-moz-binding|expression\(|behaviou?r:|@import/;
/** CSS property context outside tags: `x:expression(`, `{-moz-binding:`. */
export const CSS_PROPERTY = /(?:^|[;:{])(?:expression\(|-moz-binding:|behaviou?r:url\()/;

export const EVENT_ATTR = /^on[a-z]{3,}$/;

export interface XssResult {
  readonly reason: string;
  /** index where the evidence starts */
  readonly at: number;
}

function isTagStart(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90);
}

const MAX_TAGS = 64;

const COMPACTED = /[\s\0]/;

/**
 * Whether {@link SCRIPT_URL} or {@link CSS_PROPERTY} can match the value with whitespace and
 * NULs removed: both need `t:`, `a:` (`script:`, `mocha:`, `data:`), `g:` (`-moz-binding:`),
 * `r:` (`behaviour:`) or `n(` (`expression(`) there, i.e. such a pair in the value with only
 * whitespace or NULs between.
 */
export function mayHaveScriptOutsideTags(v: string): boolean {
  // each `:` and each `(` (found natively), and the character before it past whitespace and NULs
  for (let i = v.indexOf(':'); i >= 0; i = v.indexOf(':', i + 1)) {
    const p = beforeCompacted(v, i);
    if (p === 116 || p === 97 || p === 103 || p === 114) return true;
  }
  for (let i = v.indexOf('('); i >= 0; i = v.indexOf('(', i + 1))
    if (beforeCompacted(v, i) === 110) return true;
  return false;
}

/** The code unit before `i` once whitespace and NULs ({@link COMPACTED}) are skipped, or -1. */
function beforeCompacted(v: string, i: number): number {
  let j = i - 1;
  while (j >= 0) {
    const c = v.charCodeAt(j);
    // COMPACTED on one code unit: a whitespace unit (the table is built from the same class) or NUL
    if (c !== 0 && WS_UNIT[c] !== 1) return c;
    j--;
  }
  return -1;
}

/** The definition of {@link mayHaveScriptOutsideTags}: every position, with the pattern (the tests compare both). */
export function mayHaveScriptOutsideTagsPlain(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c !== 58 && c !== 40) continue;
    let j = i - 1;
    while (j >= 0 && COMPACTED.test(v[j]!)) j--;
    if (j < 0) continue;
    const p = v.charCodeAt(j);
    if (c === 58 ? p === 116 || p === 97 || p === 103 || p === 114 : p === 110) return true;
  }
  return false;
}

/** Judge one value; returns the evidence or undefined. Linear: each character is visited a bounded number of times. */
export function detectXss(v: string): XssResult | undefined {
  const n = v.length;
  let tags = 0;
  let from = 0;
  while (tags < MAX_TAGS) {
    const lt = v.indexOf('<', from);
    if (lt < 0) break;
    from = lt + 1;
    let i = lt + 1;
    // `</script`, `<!--`, `<?xml`, `<!doctype`, `<!entity`
    if (v[i] === '!' || v[i] === '?') {
      const rest = v.slice(i + 1, i + 12);
      if (/^(?:\[cdata\[|doctype|entity|element|attlist|xml|import)/.test(rest))
        return { reason: 'markup-declaration', at: lt };
      if (rest.startsWith('--') && /<[a-z]|-->\s*</.test(v.slice(i, i + 200)))
        return { reason: 'comment-break', at: lt };
      continue;
    }
    if (v[i] === '/') i++;
    if (i >= n || !isTagStart(v.charCodeAt(i))) continue;
    tags++;
    let j = i;
    while (j < n && /[a-z0-9:_-]/.test(v[j]!)) j++;
    const name = v.slice(i, j);
    const local = name.includes(':') ? name.slice(name.indexOf(':') + 1) : name;
    if (DANGEROUS_TAGS.has(name) || DANGEROUS_TAGS.has(local)) return { reason: `tag:${local}`, at: lt };
    // attributes, until '>' or the end (an unclosed tag still runs in many sinks)
    let k = j;
    let attrs = 0;
    while (k < n && v[k] !== '>' && attrs < 32) {
      // separators between attributes: whitespace, '/', quotes left over
      while (k < n && /[\s/"'`]/.test(v[k]!)) k++;
      if (k >= n || v[k] === '>') break;
      const an = k;
      while (k < n && !/[\s=/>"']/.test(v[k]!)) k++;
      const attr = v.slice(an, k);
      if (attr.length === 0) {
        k++;
        continue;
      }
      attrs++;
      while (k < n && /\s/.test(v[k]!)) k++;
      let value = '';
      if (v[k] === '=') {
        k++;
        while (k < n && /\s/.test(v[k]!)) k++;
        const q = v[k];
        if (q === '"' || q === "'" || q === '`') {
          const end = v.indexOf(q, k + 1);
          value = end < 0 ? v.slice(k + 1) : v.slice(k + 1, end);
          k = end < 0 ? n : end + 1;
        } else {
          const vs = k;
          while (k < n && !/[\s>]/.test(v[k]!)) k++;
          value = v.slice(vs, k);
        }
      }
      if (EVENT_ATTR.test(attr)) return { reason: `event-handler:${attr}`, at: lt };
      const cv = value.replace(/[\s\0]/g, '');
      if (URL_ATTRS.has(attr) && SCRIPT_URL.test(cv)) return { reason: `script-url:${attr}`, at: lt };
      if (attr === 'style' && (CSS_SCRIPT.test(cv) || SCRIPT_URL.test(cv)))
        return { reason: 'style-script', at: lt };
      if (attr === 'http-equiv' || attr === 'srcdoc' || attr === 'xmlns' || attr.startsWith('xmlns:'))
        return { reason: `attribute:${attr}`, at: lt };
    }
  }
  // outside tags: script URLs (anywhere: at the start of a value, after a quote or bracket
  // break), unless a script scheme is followed by prose
  if (!mayHaveScriptOutsideTags(v)) return undefined;
  const compact = v.replace(/[\s\0]/g, '');
  SCRIPT_URL_ALL.lastIndex = 0;
  for (let m = SCRIPT_URL_ALL.exec(compact); m !== null; m = SCRIPT_URL_ALL.exec(compact)) {
    if (!m[0].endsWith(':') || codeFollows(v, originalIndex(v, m.index + m[0].length)))
      return { reason: 'script-url', at: originalIndex(v, m.index) };
  }
  const c = CSS_PROPERTY.exec(compact);
  if (c) return { reason: 'css-script', at: originalIndex(v, c.index) };
  return undefined;
}
