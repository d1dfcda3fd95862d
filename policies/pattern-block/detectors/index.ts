import { detectSqli, SQLI_NEEDS } from './sqli.js';
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
 * What a value needs for a detector to find anything: one of `chars`, one of `words` (as a
 * substring, ASCII case folded), or a start that `start` accepts. The engine checks it before
 * calling the detector (the characters and words from what it computed for the value anyway).
 */
export interface DetectorNeeds {
  readonly chars: string;
  readonly words: readonly string[];
  readonly start: (v: string) => boolean;
}

/** The needs of the value detectors that have them (see {@link DetectorNeeds}). */
export const VALUE_DETECTOR_NEEDS: Readonly<Record<string, DetectorNeeds>> = { sqli: SQLI_NEEDS };

/** Every detector name a rule may use. */
export const DETECTOR_NAMES: readonly string[] = [
  ...Object.keys(VALUE_DETECTORS),
  ...Object.keys(REQUEST_DETECTORS),
];

export { REQUEST_DETECTORS };
