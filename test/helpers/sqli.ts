import { detectSqli, mayBeSql, sqliContexts } from '../../policies/pattern-block/detectors/sqli.js';

/** Whether the SQL judge, with its shortcuts, decides on `v` what its exhaustive path decides. */
export function judgesLikeExhaustive(v: string): boolean {
  return JSON.stringify(detectSqli(v)) === JSON.stringify(detectSqli(v, true));
}

/**
 * Whether the SQL contexts chosen for `v` are those each context's own check chooses; undefined
 * for a value that fails mayBeSql (sqliContexts is only asked about values that pass it).
 */
export function contextsLikePlain(v: string): boolean | undefined {
  if (!mayBeSql(v)) return undefined;
  return JSON.stringify(sqliContexts(v)) === JSON.stringify(sqliContexts(v, true));
}
