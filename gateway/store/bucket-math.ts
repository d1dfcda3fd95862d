/**
 * Token-bucket arithmetic shared by the memory store and (transcribed into Lua) by the
 * redis store, so both backends answer exactly alike.
 *
 * To stay exact, a bucket's level is kept in integer "token-milliseconds": a full bucket
 * holds `capacity × windowMs` units, one token costs `windowMs` units, and every
 * elapsed millisecond adds `capacity` units. All values stay integers below 2^53, so
 * JavaScript and Lua doubles compute them without rounding.
 */

/** ceil(a / b) for non-negative integers a and positive integers b, exact below 2^53. */
export function ceilDiv(a: number, b: number): number {
  if (a <= 0) return 0;
  let q = Math.floor(a / b);
  if (q * b > a) q -= 1;
  return q * b === a ? q : q + 1;
}

/** floor(a / b) for non-negative integers a and positive integers b, exact below 2^53. */
export function floorDiv(a: number, b: number): number {
  if (a <= 0) return 0;
  let q = Math.floor(a / b);
  if (q * b > a) q -= 1;
  else if ((q + 1) * b <= a) q += 1;
  return q;
}

/** The largest capacity × windowMs a bucket may have (exact integer arithmetic). */
export const MAX_BUCKET_UNITS = Number.MAX_SAFE_INTEGER;

/** Check a bucket definition; throws with an operator-readable message. */
export function checkBucket(capacity: number, windowMs: number): void {
  if (!Number.isInteger(capacity) || capacity <= 0)
    throw new Error(`bucket capacity must be a positive integer (got ${capacity})`);
  if (!Number.isInteger(windowMs) || windowMs <= 0)
    throw new Error(`bucket window must be a positive whole number of ms (got ${windowMs})`);
  if (capacity * windowMs > MAX_BUCKET_UNITS)
    throw new Error(`bucket ${capacity} per ${windowMs}ms is too large`);
}

/**
 * Check the limits of one rate-limit rule or API-key override: each a valid bucket, no two
 * with the same window (their buckets would share a key and a header item name).
 */
export function checkLimits(limits: readonly { count: number; windowMs: number; text: string }[]): void {
  for (const l of limits) checkBucket(l.count, l.windowMs);
  const seen = new Set<number>();
  for (const l of limits) {
    if (seen.has(l.windowMs)) throw new Error(`two limits share the window of "${l.text}"`);
    seen.add(l.windowMs);
  }
}

/** The level of a bucket at `now`, given its stored level and time (undefined = never used: full). */
export function levelAt(
  capacity: number,
  windowMs: number,
  stored: { level: number; ts: number } | undefined,
  now: number,
): number {
  const full = capacity * windowMs;
  if (stored === undefined) return full;
  const elapsed = now - stored.ts;
  if (elapsed <= 0) return Math.min(full, stored.level);
  return Math.min(full, stored.level + elapsed * capacity);
}
