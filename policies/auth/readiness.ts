import type { Services } from '../../gateway/policy.js';
import type { JwksClient, JwksState } from './jwks-client.js';
import { sharedWithPrefix } from './shared.js';

/** Prefix of the JWKS clients' keys in `services.persistent`. */
export const JWKS_PREFIX = 'auth:jwks:';

/** The JWKS URL without credentials or query, for messages. */
export function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid url)';
  }
}

/** The state of every JWKS client of the running configuration. */
export function jwksStates(services: Services): JwksState[] {
  return sharedWithPrefix<JwksClient>(services, JWKS_PREFIX).map((c) => c.state());
}

/**
 * Readiness of authentication, for `/readyz`: not ready while a configured JWKS has no
 * usable keys (never fetched, or cached keys expired while fetches fail), because every
 * request needing it is refused; `reasons` says why (empty when ok). `warnings` names a
 * JWKS whose last refresh failed while cached keys are still served: ready, but worth a
 * look (the dashboard may show it; /readyz should not fail on it).
 *
 * @example
 *   const { ok, reasons } = authReadiness(services);
 *   // ok=false, reasons=['jwks http://idp/.well-known/jwks.json: no usable keys (HTTP status 500; 3 failed fetches)']
 */
export function authReadiness(services: Services): { ok: boolean; reasons: string[]; warnings: string[] } {
  const reasons: string[] = [];
  const warnings: string[] = [];
  for (const s of jwksStates(services)) {
    const where = `jwks ${displayUrl(s.url)}`;
    if (!s.usable) {
      const why = s.lastError ?? (s.failures === 0 ? 'first fetch in progress' : 'keys expired');
      reasons.push(`${where}: no usable keys (${why}; ${s.failures} failed fetches)`);
    } else if (s.consecutiveFailures > 0) {
      warnings.push(
        `${where}: serving cached keys, last refresh failed (${s.lastError ?? 'unknown error'}; ${s.failures} failed fetches)`,
      );
    }
  }
  return { ok: reasons.length === 0, reasons, warnings };
}
