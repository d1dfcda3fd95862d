/**
 * Operator units of gateway.yaml: durations (`500ms`, `15m`, `1h`), sizes (`16MB`,
 * `512KB`) and rate limits (`10/minute`, `10 per minute`, several joined by `;`).
 * Each parser throws an Error with a message fit for a validation report.
 */

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  sec: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

export const DURATION_PATTERN = '^\\s*\\d+(\\.\\d+)?\\s*(ms|s|sec|m|min|h|d)\\s*$';
const DURATION_RE = new RegExp(DURATION_PATTERN);

/** Parse a duration into milliseconds. A bare number is taken in `bareUnit` (default ms). */
export function parseDuration(value: string | number, bareUnit: keyof typeof DURATION_UNITS = 'ms'): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new Error(`invalid duration ${value}`);
    return value * DURATION_UNITS[bareUnit]!;
  }
  const m = DURATION_RE.exec(value);
  if (!m) {
    if (/^\s*\d+(\.\d+)?\s*$/.test(value)) return Number(value) * DURATION_UNITS[bareUnit]!;
    throw new Error(`invalid duration "${value}" (use e.g. 500ms, 30s, 15m, 1h, 1d)`);
  }
  const n = Number.parseFloat(value);
  return Math.round(n * DURATION_UNITS[m[2]!]!);
}

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1024,
  k: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

export const SIZE_PATTERN = '^\\s*\\d+(\\.\\d+)?\\s*([kKmMgG]([iI]?[bB])?|[bB])?\\s*$';
const SIZE_RE = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i;

/** Parse a size into bytes (`16MB` = 16 MiB, as NGINX reads `16m`). */
export function parseSize(value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new Error(`invalid size ${value}`);
    return Math.floor(value);
  }
  const m = SIZE_RE.exec(value);
  const unit = m?.[2]?.toLowerCase() ?? '';
  const mult = unit === '' ? 1 : SIZE_UNITS[unit];
  if (!m || mult === undefined) throw new Error(`invalid size "${value}" (use e.g. 512KB, 16MB)`);
  return Math.floor(Number.parseFloat(m[1]!) * mult);
}

const PERIODS: Record<string, number> = {
  second: 1000,
  sec: 1000,
  s: 1000,
  minute: 60_000,
  min: 60_000,
  m: 60_000,
  hour: 3_600_000,
  h: 3_600_000,
  day: 86_400_000,
  d: 86_400_000,
};

const CANONICAL_PERIOD: Record<number, string> = {
  1000: 'second',
  60_000: 'minute',
  3_600_000: 'hour',
  86_400_000: 'day',
};

export interface Limit {
  /** requests allowed per window */
  readonly count: number;
  /** the window in ms */
  readonly windowMs: number;
  /** as written, normalised (`10/minute`) */
  readonly text: string;
}

const LIMIT_RE = /^\s*(\d+)\s*(?:\/|per)\s*(\d+\s*)?([a-z]+?)s?\s*$/i;
export const LIMITS_PATTERN =
  '^\\s*\\d+\\s*(/|per)\\s*(\\d+\\s*)?[a-zA-Z]+\\s*(;\\s*\\d+\\s*(/|per)\\s*(\\d+\\s*)?[a-zA-Z]+\\s*)*;?\\s*$';

/** Parse `200 per day;50 per hour;10/minute` (also `5/15m`-style `5 per 15 minutes`). */
export function parseLimits(value: string): Limit[] {
  const parts = value
    .split(';')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  if (parts.length === 0) throw new Error('empty rate limit');
  return parts.map((part) => {
    const m = LIMIT_RE.exec(part);
    const unit = m?.[3]?.toLowerCase();
    const period = unit === undefined ? undefined : PERIODS[unit];
    if (!m || period === undefined) {
      throw new Error(
        `invalid limit "${part}" (use e.g. 10/minute or 10 per minute; units second, minute, hour, day)`,
      );
    }
    const count = Number.parseInt(m[1]!, 10);
    const mult = m[2] ? Number.parseInt(m[2], 10) : 1;
    if (count <= 0 || mult <= 0)
      throw new Error(`invalid limit "${part}": count and period must be positive`);
    const name = CANONICAL_PERIOD[period]!;
    return {
      count,
      windowMs: period * mult,
      text: `${count}/${mult > 1 ? `${mult} ` : ''}${name}${mult > 1 ? 's' : ''}`,
    };
  });
}
