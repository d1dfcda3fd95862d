import { Type, type Static } from '@sinclair/typebox';
import type { PolicyFactory, Policy, Deny } from '../../gateway/policy.js';
import { isWebSocketUpgrade, type RequestContext } from '../../gateway/context.js';
import { ConfigError } from '../../gateway/errors.js';
import { OriginList, canonicalOrigin } from '../../gateway/origins.js';
import { policyBlock } from '../../gateway/config/policy-schema.js';

/** SPEC §2's default of CORS_ORIGINS, used when neither the block nor the environment says. */
export const DEFAULT_ORIGINS = 'http://localhost:10000,http://127.0.0.1:10000';

const METHOD = Type.String({ pattern: '^[A-Z]+$' });

/**
 * `policies.csrf`: refuses cross-site state-changing requests that were authenticated by
 * a session cookie (the browser attaches cookies to cross-site requests; it does not
 * attach an Authorization header or an API key). Judged from `Origin` (same origin or an
 * allowed origin) and, when Origin is absent, `Sec-Fetch-Site`; when both are absent, a
 * `Referer` naming another origin is refused too. A WebSocket handshake is judged whatever
 * `methods` says: it is a GET, but the browser sends it with the cookie from any site and no
 * CORS check of its own, and it opens a two-way channel (cross-site WebSocket hijacking).
 * Requests authenticated by a header are not affected.
 *
 * @example
 * ```yaml
 * policies:
 *   csrf:
 *     allowed_origins: ${CORS_ORIGINS}
 * ```
 */
export const csrfSchema = policyBlock(
  {
    allowed_origins: Type.Union([Type.String(), Type.Array(Type.String())], {
      default: [],
      description:
        "origins allowed besides the gateway's own (list or comma-separated string; scheme://*.domain[:port] for its subdomains); empty = CORS_ORIGINS from the environment",
    }),
    methods: Type.Array(METHOD, {
      default: ['POST', 'PUT', 'PATCH', 'DELETE'],
      description:
        'state-changing methods that are checked (WebSocket handshakes, GET requests, are checked whatever this lists)',
    }),
    cookie_only: Type.Boolean({
      default: true,
      description: 'check only cookie-authenticated requests (false: every request with one of the methods)',
    }),
    require_origin: Type.Boolean({
      default: false,
      description: 'refuse when both Origin and Sec-Fetch-Site are absent (non-browser clients send neither)',
    }),
  },
  { description: 'CSRF protection for cookie-authenticated requests (Origin / Sec-Fetch-Site)' },
);

export type CsrfConfig = Static<typeof csrfSchema>;

/** The origin (`scheme://host[:port]`) of an absolute http(s) Referer, or undefined. */
function refererOrigin(value: string): string | undefined {
  try {
    const u = new URL(value);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.origin : undefined;
  } catch {
    return undefined;
  }
}

function refuse(check: 'origin' | 'sec_fetch_site' | 'referer' | 'missing_origin'): Deny {
  return { code: 'csrf_rejected', detail: { check } };
}

/** The CSRF policy (onIdentified). */
export const csrf: PolicyFactory<typeof csrfSchema> = {
  name: 'csrf',
  key: 'csrf',
  schema: csrfSchema,
  compile(config, ctx): Policy {
    const given = config.allowed_origins;
    const list =
      typeof given === 'string'
        ? given.split(',')
        : given.length > 0
          ? given
          : (ctx.services.env.CORS_ORIGINS ?? DEFAULT_ORIGINS).split(',');
    const entries: string[] = [];
    const indexes: number[] = [];
    list.forEach((raw, i) => {
      const o = raw.trim();
      if (o === '') return;
      if (o === '*')
        throw new ConfigError('a wildcard origin cannot be trusted for CSRF', [
          ...ctx.path,
          'allowed_origins',
          i,
        ]);
      entries.push(o);
      indexes.push(i);
    });
    const allowed = new OriginList(entries, (message, k) => {
      throw new ConfigError(message, [...ctx.path, 'allowed_origins', indexes[k]!]);
    });
    const methods = new Set(config.methods);
    const cookieOnly = config.cookie_only;
    const requireOrigin = config.require_origin;

    const ownOrigin = (c: RequestContext): string | undefined => {
      const host = c.headers.host;
      if (host === undefined || host === '') return undefined;
      return canonicalOrigin(`${c.secure ? 'https' : 'http'}://${host}`);
    };

    return {
      name: 'csrf',
      mode: config.mode,
      failure: 'closed',
      onIdentified(c) {
        if (!methods.has(c.method) && !isWebSocketUpgrade(c.headers)) return undefined;
        if (cookieOnly && c.identity?.via !== 'cookie') return undefined;
        const origin = c.headers.origin;
        if (origin !== undefined) {
          // An Origin of "null" (sandboxed frames, some redirects) is never trusted.
          const o = origin.toLowerCase();
          if (allowed.has(o) || (o !== 'null' && o === ownOrigin(c))) return undefined;
          return refuse('origin');
        }
        const site = c.headers['sec-fetch-site'];
        if (site !== undefined) {
          if (site === 'same-origin' || site === 'none') return undefined;
          return refuse('sec_fetch_site');
        }
        // Neither header (a browser from before Origin on every POST and Sec-Fetch-Site,
        // e.g. Firefox before 70): a Referer naming another site still tells a cross-site
        // request (OWASP CSRF cheat sheet). An own or allowed one proves nothing more (a
        // client writes what it likes there), so require_origin still applies.
        const referer = c.headers.referer;
        if (referer !== undefined && referer !== '') {
          const from = refererOrigin(referer);
          if (from === undefined || (!allowed.has(from) && from !== ownOrigin(c))) return refuse('referer');
        }
        return requireOrigin ? refuse('missing_origin') : undefined;
      },
    };
  },
};
