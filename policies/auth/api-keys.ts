import { createHash, timingSafeEqual } from 'node:crypto';
import type { Limit } from '../../gateway/config/units.js';

/**
 * API key hashes in gateway.yaml have the form `sha256:<64 lowercase hex>`: the SHA-256
 * of the key's UTF-8 bytes. API keys are long random strings (`receipt-gateway hash-key`
 * prints a hash for any key and warns when the key is short), so a fast hash is enough:
 * the file never holds a usable key, and a request costs one SHA-256, not a password KDF.
 */
export const API_KEY_HASH_PATTERN = '^sha256:[0-9a-f]{64}$';
const PREFIX = 'sha256:';

/** The hash of an API key, in the form gateway.yaml expects. */
export function hashApiKey(key: string): string {
  return PREFIX + createHash('sha256').update(key, 'utf8').digest('hex');
}

/** One accepted key, as compiled. */
export interface ApiKeyEntry {
  readonly id: string;
  readonly roles: readonly string[];
  /** per-key rate-limit override (used by the rate-limit policy), parsed */
  readonly rateLimit: readonly Limit[] | undefined;
  /** the 32-byte digest */
  readonly digest: Buffer;
}

/**
 * Why `key` cannot be used in an `X-API-Key` header, or undefined when it can. The gateway
 * hashes the header value as it arrives: HTTP strips spaces and tabs at either end of a header
 * value (so such a key never matches), Node's parser refuses control characters in one, and a
 * byte outside ASCII arrives as one Latin-1 character, so a non-ASCII key matches only from
 * clients that happen to send its Latin-1 bytes (curl sends UTF-8, browsers refuse it). Such a
 * key would be configured yet refused on (nearly) every request: `hash-key` and `API_KEY`
 * refuse it instead.
 */
export function unusableApiKey(key: string): string | undefined {
  if (/^[ \t]|[ \t]$/.test(key))
    return 'it begins or ends with whitespace, which HTTP strips from header values';
  if (!/^[\x20-\x7e\t]*$/.test(key))
    return 'it contains a character other than printable ASCII, which an HTTP header cannot carry as such';
  return undefined;
}

/**
 * API keys shorter than this get a warning (`hash-key`, API_KEY at start) and fail the
 * security score's `api_key_length` check: an API key should be a long random string.
 */
export const MIN_RECOMMENDED_KEY_LENGTH = 32;

/** API keys longer than this are refused without hashing. */
export const MAX_API_KEY_LENGTH = 1024;

/**
 * Find the entry whose hash matches `presented`. Every configured digest is compared
 * with `timingSafeEqual` and the loop never exits early, so the time taken does not
 * depend on which key (if any) matched, nor on how many leading bytes agreed.
 */
export function matchApiKey(entries: readonly ApiKeyEntry[], presented: string): ApiKeyEntry | undefined {
  const digest = createHash('sha256').update(presented, 'utf8').digest();
  let found: ApiKeyEntry | undefined;
  for (const entry of entries) {
    if (timingSafeEqual(digest, entry.digest) && found === undefined) found = entry;
  }
  return found;
}

/** The digest bytes of a `sha256:<hex>` hash string (already validated by the schema). */
export function digestOf(hash: string): Buffer {
  return Buffer.from(hash.slice(PREFIX.length), 'hex');
}
