import { detectSqli, SQL_NEEDS } from './sqli.js';
import { detectXss } from './xss.js';
import { REQUEST_DETECTORS } from './protocol.js';

/** A value detector's evidence: where it starts, and a short note (fingerprint, tag …). */
export interface Evidence {
  readonly at: number;
  readonly note: string;
}

export type ValueDetector = (v: string) => Evidence | undefined;

/** Detectors that judge one (transformed) value. */
export const VALUE_DETECTORS: Readonly<Record<string, ValueDetector>> = {
  sqli: (v) => {
    const r = detectSqli(v);
    return r
      ? { at: 0, note: `${r.reason} ${r.context === 'none' ? '' : r.context}${r.fingerprint.slice(0, 12)}` }
      : undefined;
  },
  xss: (v) => {
    const r = detectXss(v);
    return r ? { at: r.at, note: r.reason } : undefined;
  },
};

/**
 * What every value a detector fires on holds: one of `chars`, or one of `substrings` (matched
 * in any case). The engine skips the detector on a value that holds none (its signature and
 * its literal scan tell).
 */
export const VALUE_DETECTOR_NEEDS: Readonly<
  Record<string, { readonly chars: string; readonly substrings: readonly string[] }>
> = {
  sqli: SQL_NEEDS,
};

/** Every detector name a rule may use. */
export const DETECTOR_NAMES: readonly string[] = [
  ...Object.keys(VALUE_DETECTORS),
  ...Object.keys(REQUEST_DETECTORS),
];

export { REQUEST_DETECTORS };
