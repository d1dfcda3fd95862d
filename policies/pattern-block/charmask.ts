/**
 * Character signatures: one pass over a value records which "interesting" characters it
 * holds (ASCII punctuation one bit each, plus classes for controls, digits, upper case and
 * non-ASCII). Rule gates (`requires:` in a pack) are checked against the signature with two
 * AND operations instead of a regex scan each.
 */

const PUNCT = '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~';

/** High-word class bits. */
export const HI_CONTROL = 1;
export const HI_DIGIT = 2;
export const HI_UPPER = 4;
export const HI_NON_ASCII = 8;
/** two spaces in a row */
export const HI_DOUBLE_SPACE = 16;
/**
 * a control character other than the whitespace ones (tab, line feed, vertical tab, form
 * feed, carriage return); such characters also set {@link HI_CONTROL}
 */
export const HI_CONTROL_OTHER = 32;

/** Signature bits per ASCII character (exported for scans that compute a signature on the way). */
export const LO = new Int32Array(128);
export const HI = new Int32Array(128);
for (let i = 0; i < PUNCT.length; i++) LO[PUNCT.charCodeAt(i)] = 1 << i;
for (let c = 0; c < 32; c++) HI[c] = c >= 9 && c <= 13 ? HI_CONTROL : HI_CONTROL | HI_CONTROL_OTHER;
HI[127] = HI_CONTROL | HI_CONTROL_OTHER;
for (let c = 48; c <= 57; c++) HI[c] = HI_DIGIT;
for (let c = 65; c <= 90; c++) HI[c] = HI_UPPER;

/** A signature: [punctuation bits, class bits]. */
export interface CharMask {
  lo: number;
  hi: number;
}

/** Compute the signature of `s` into `out` (no allocation). */
export function charMask(s: string, out: CharMask): CharMask {
  let lo = 0;
  let hi = 0;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 128) {
      lo |= LO[c]!;
      hi |= HI[c]!;
    } else hi |= HI_NON_ASCII;
  }
  if (s.indexOf('  ') >= 0) hi |= HI_DOUBLE_SPACE;
  out.lo = lo;
  out.hi = hi;
  return out;
}

/** The gate of a `requires` string: a value passes when it holds at least one of the characters. */
export function gateOf(chars: string): CharMask {
  let lo = 0;
  let hi = 0;
  for (const ch of chars) {
    const c = ch.codePointAt(0)!;
    if (c >= 128) hi |= HI_NON_ASCII;
    else if (LO[c]) lo |= LO[c]!;
    else if (HI[c]) hi |= HI[c]!;
    else if (c >= 97 && c <= 122) hi |= HI_UPPER; // letters are not tracked; a lower-case letter gate would be meaningless
  }
  return { lo, hi };
}

/** True when the signature has any bit of the gate. */
export function passes(m: CharMask, g: CharMask): boolean {
  return (m.lo & g.lo) !== 0 || (m.hi & g.hi) !== 0;
}
