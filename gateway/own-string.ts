/**
 * In V8, a string cut out of another one (`slice`, `substring`, `split`, `trim`, a regex
 * match or group) is, from {@link SLICE_MIN_LENGTH} characters on, a slice: a view that
 * keeps its whole parent alive. A 14-character client address cut out of a 16 KB
 * X-Forwarded-For header keeps the 16 KB header alive for as long as the address is kept,
 * and a concatenation (`a + b`, a template literal) keeps its parts, slices included.
 * Strings that outlive the request they were cut from (store keys, cache keys, recorded
 * decisions) are therefore kept as {@link ownString} copies.
 */

/** Shorter strings are never slices: V8 copies them when they are cut out. */
export const SLICE_MIN_LENGTH = 13;

// eslint-disable-next-line no-control-regex -- the whole one-byte range is the point
const ONE_BYTE = /^[\x00-\xff]*$/;

/**
 * `s` as a flat string of its own: neither a slice of a longer string nor a concatenation
 * of pieces, whatever `s` is, and equal to it. Costs a copy (about 0.3 µs for an address,
 * 1.5 µs for 2 KB): meant for the strings a long-lived structure keeps, not for every
 * string of a request. (`` ` ${s}`.slice(1) `` is a slice too, of a fresh copy one
 * character longer.)
 */
export function ownString(s: string): string {
  if (s.length < SLICE_MIN_LENGTH) return s;
  if (s.length <= 64) return JSON.parse(JSON.stringify(s)) as string;
  return ONE_BYTE.test(s)
    ? Buffer.from(s, 'latin1').toString('latin1')
    : Buffer.from(s, 'utf16le').toString('utf16le');
}
