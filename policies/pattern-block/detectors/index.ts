import { detectSqli, SQL_NEEDS } from './sqli.js';
import { detectXss } from './xss.js';
import { REQUEST_DETECTORS } from './protocol.js';

/** A value detector's evidence: where it starts, and a short note (fingerprint, tag …). */
export interface Evidence {
  readonly at: number;
  readonly note: string;
}

/**
 * A value detector. `lacks`: bits of what the caller knows the value does not hold (see
 * {@link VALUE_DETECTOR_NEEDS}); 0 when it knows nothing.
 */
export type ValueDetector = (v: string, lacks?: number) => Evidence | undefined;

/** Detectors that judge one (transformed) value. */
export const VALUE_DETECTORS: Readonly<Record<string, ValueDetector>> = {
  sqli: (v, lacks) => {
    const r = detectSqli(v, false, lacks);
    return r
      ? { at: 0, note: `${r.reason} ${r.context === 'none' ? '' : r.context}${r.fingerprint.slice(0, 12)}` }
      : undefined;
  },
  xss: (v) => {
    const r = detectXss(v);
    return r ? { at: r.at, note: r.reason } : undefined;
  },
};

/** A group of what a value may hold: a character (on its signature) or a substring (in any case). */
export interface DetectorNeed {
  readonly chars: string;
  readonly substrings: readonly string[];
  /** the detector's `lacks` bit for a value that holds nothing of the group */
  readonly lacks: number;
}

/**
 * What every value a detector fires on holds: something of one of its groups. The engine skips
 * the detector on a value that holds nothing of any (its signature and its literal scan tell),
 * and passes the `lacks` bits of the groups the value holds nothing of.
 */
export const VALUE_DETECTOR_NEEDS: Readonly<Record<string, readonly DetectorNeed[]>> = {
  sqli: SQL_NEEDS,
};

/** Every detector name a rule may use. */
export const DETECTOR_NAMES: readonly string[] = [
  ...Object.keys(VALUE_DETECTORS),
  ...Object.keys(REQUEST_DETECTORS),
];

export { REQUEST_DETECTORS };
