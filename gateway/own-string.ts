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

/**
 * `s` as a string that keeps nothing of the request alive: not a slice of what it was cut
 * from, nor a concatenation of pieces, and equal to it. ` ${s}` is flattened into a new string when it
 * is sliced, so the result refers to that copy alone (one character longer than `s`). Costs
 * a copy (about 15 ns for an address): meant for the strings a long-lived structure keeps,
 * not for every string of a request.
 */
export function ownString(s: string): string {
  return s.length < SLICE_MIN_LENGTH ? s : ` ${s}`.slice(1);
}
