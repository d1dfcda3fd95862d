/**
 * Allowed origins, as the `cors` and `csrf` policies configure them: exact origins
 * (`https://app.example.com`, `http://localhost:10000`) and subdomain wildcards
 * (`https://*.example.com`: any subdomain of example.com, at any depth, with that scheme and
 * port; not example.com itself). Compiled at config load; a lookup is a set lookup, then one
 * precompiled regex per wildcard.
 */

import { getDomain } from 'tldts';
import { escapeRegex } from './regex-escape.js';

/** A DNS label as browsers serialise it in an Origin (lower case, punycode for IDNs). */
const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';

/** Canonical `scheme://host[:port]` of a configured origin, or why it is not one. */
function parseOrigin(value: string): { origin: string } | { error: string } {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    return { error: `invalid origin "${value}" (use scheme://host[:port])` };
  }
  if (
    (u.protocol !== 'http:' && u.protocol !== 'https:') ||
    u.username !== '' ||
    u.password !== '' ||
    (u.pathname !== '/' && u.pathname !== '') ||
    u.search !== '' ||
    u.hash !== '' ||
    // (URL drops an empty `?` or `#`)
    /[?#]/.test(value)
  ) {
    return { error: `origin "${value}" must be scheme://host[:port] only` };
  }
  return { origin: u.origin };
}

/** Canonical `scheme://host[:port]` of a configured origin, or undefined when it is not one. */
export function canonicalOrigin(value: string): string | undefined {
  const p = parseOrigin(value);
  return 'origin' in p ? p.origin : undefined;
}

export class OriginList {
  private readonly exact = new Set<string>();
  private readonly wildcards: RegExp[] = [];

  /** The configured origins, one per entry (already split and trimmed; `*` is the caller's). */
  constructor(entries: readonly string[], fail: (message: string, index: number) => never) {
    entries.forEach((o, i) => {
      const star = o.indexOf('*');
      if (star < 0) {
        const p = parseOrigin(o);
        if ('error' in p) return fail(p.error, i);
        this.exact.add(p.origin);
        return;
      }
      // a wildcard: only as the whole first label of the host, `scheme://*.domain[:port]`
      const m = /^(https?):\/\/\*\.([^*/?#@]+)$/i.exec(o);
      const rest = m === null ? undefined : canonicalOrigin(`${m[1]!}://${m[2]!}`);
      if (m === null || rest === undefined) {
        return fail(
          `"${o}": a wildcard may only stand for the subdomains of a domain, as in https://*.example.com[:port]`,
          i,
        );
      }
      const url = new URL(rest);
      // (a top-level label is never all digits: such a host is an IPv4 address)
      if (!/^[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z0-9-]*[a-z-][a-z0-9-]*$/.test(url.hostname)) {
        return fail(
          `"${o}": a wildcard needs a domain of two labels or more after "*." (not an IP address or a top-level domain)`,
          i,
        );
      }
      // nor a public suffix (the Public Suffix List, its private section included): `*.co.uk`,
      // `*.github.io` or `*.herokuapp.com` would trust every site anyone can register there
      if (getDomain(url.hostname, { allowPrivateDomains: true }) === null) {
        return fail(
          `"${o}": ${url.hostname} is a public suffix (anyone can register a site under it); list your own domain after "*."`,
          i,
        );
      }
      const port = url.port === '' ? '' : `:${url.port}`;
      this.wildcards.push(
        new RegExp(
          `^${escapeRegex(url.protocol)}//(?:${LABEL}\\.)+${escapeRegex(url.hostname)}${escapeRegex(port)}$`,
        ),
      );
    });
  }

  /** Whether no origin is listed. */
  get empty(): boolean {
    return this.exact.size === 0 && this.wildcards.length === 0;
  }

  /** Whether `origin` (as a browser sends it: lower case, no default port) is allowed. */
  has(origin: string): boolean {
    if (this.exact.has(origin)) return true;
    for (let i = 0; i < this.wildcards.length; i++) if (this.wildcards[i]!.test(origin)) return true;
    return false;
  }
}
