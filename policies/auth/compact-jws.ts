/**
 * The shape of a compact JWS (RFC 7515 §7.1): three base64url segments, header and payload
 * non-empty, the signature possibly empty (e.g. alg none, refused later by the pinned list).
 */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * For each base64url character code (< 128), the bits of its 6-bit value that a decoder
 * drops when it is the last character of a segment. A segment of length 4n + 2 ends with
 * one byte: its last character carries 2 data bits and 4 unused ones. A segment of length
 * 4n + 3 ends with two bytes: 4 data bits and 2 unused ones. Built once at load.
 */
const UNUSED_BITS_2 = new Uint8Array(128);
const UNUSED_BITS_3 = new Uint8Array(128);
for (let v = 0; v < ALPHABET.length; v++) {
  UNUSED_BITS_2[ALPHABET.charCodeAt(v)] = v & 0b1111;
  UNUSED_BITS_3[ALPHABET.charCodeAt(v)] = v & 0b11;
}

/**
 * Whether `s[start, end)`, already known to hold only base64url characters without padding,
 * is the one canonical spelling of its bytes (RFC 4648 §3.5): its length is not 1 more than
 * a multiple of 4, and the unused low bits of its last character are zero. Decoders drop
 * those bits, so without this check `…A` and `…B` can be the same signature.
 */
function canonicalSegment(s: string, start: number, end: number): boolean {
  const rest = (end - start) & 3;
  if (rest === 0) return true;
  if (rest === 1) return false;
  const last = s.charCodeAt(end - 1);
  return (rest === 2 ? UNUSED_BITS_2[last] : UNUSED_BITS_3[last]) === 0;
}

/**
 * Whether `token` is a compact JWS whose three segments are canonical base64url: only the
 * URL-safe alphabet, no padding, no segment of an impossible length, and zero unused bits
 * in each segment's last character. A token has then exactly one accepted spelling, so a
 * cache, denylist or replay store keyed by the token string sees every use of it.
 * Costs one regular-expression test, two `indexOf` and three table lookups; nothing is decoded.
 */
export function isCanonicalCompactJws(token: string): boolean {
  if (!COMPACT_JWS.test(token)) return false;
  const dot1 = token.indexOf('.');
  const dot2 = token.indexOf('.', dot1 + 1);
  return (
    canonicalSegment(token, 0, dot1) &&
    canonicalSegment(token, dot1 + 1, dot2) &&
    canonicalSegment(token, dot2 + 1, token.length)
  );
}
