import { Type } from '@sinclair/typebox';
import type { PolicyFactory, Policy, Verdict } from '../../gateway/policy.js';
import type { RequestContext } from '../../gateway/context.js';
import { policyBlock, Duration } from '../../gateway/config/policy-schema.js';
import { parseDuration } from '../../gateway/config/units.js';
import { ConfigError } from '../../gateway/errors.js';
import { OriginList } from '../../gateway/origins.js';

// An HTTP token (RFC 9110 §5.6.2): a method or a field name. The lists below are written into
// response headers as they are; a space, comma or line break in one would break the header
// (Node refuses to send it: the connection closes without an answer) or the browser's reading.
const TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
const method = Type.String({ pattern: TOKEN, description: 'an HTTP method (a token)' });
const fieldName = Type.String({
  pattern: TOKEN,
  description: 'a header name (a token, no spaces or commas)',
});

const schema = policyBlock(
  {
    origins: Type.Union([Type.String(), Type.Array(Type.String())], {
      default: 'http://localhost:10000,http://127.0.0.1:10000',
      description:
        'allowed origins, a list or one comma-separated string (CORS_ORIGINS): scheme://host[:port], or scheme://*.domain[:port] for its subdomains; `*` allows any origin but never together with credentials',
    }),
    allow_credentials: Type.Boolean({
      default: true,
      description: 'send Access-Control-Allow-Credentials: true',
    }),
    allow_methods: Type.Array(method, {
      default: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
      description: 'methods a preflight may ask for',
    }),
    allow_headers: Type.Array(fieldName, {
      default: [
        'Authorization',
        'Content-Type',
        'X-API-Key',
        'X-Request-Id',
        'X-CSRF-Token',
        'X-Requested-With',
      ],
      description: 'request headers a preflight may ask for (case-insensitive)',
    }),
    expose_headers: Type.Array(fieldName, {
      default: ['X-Request-Id', 'Retry-After', 'RateLimit', 'RateLimit-Policy'],
      description: 'response headers readable by the browser',
    }),
    max_age: Duration('10m', 'how long browsers may cache a preflight answer'),
    allow_same_origin: Type.Boolean({
      default: true,
      description: 'accept an Origin equal to the request’s own origin (scheme://Host) even when not listed',
    }),
  },
  {
    description: 'strict CORS: origin allowlist, preflights answered by the gateway, foreign origins refused',
  },
);

/** Whether a `Vary` value already covers `Origin`: one of its field names, or `*` (RFC 9110 §12.5.5). */
function varies(vary: string): boolean {
  for (const part of vary.split(',')) {
    const name = part.trim().toLowerCase();
    if (name === 'origin' || name === '*') return true;
  }
  return false;
}

/**
 * `cors`: answers preflights itself (204 or 403 `cors_origin_denied`) and refuses actual
 * requests whose `Origin` is not allowed. Example:
 * ```yaml
 * policies:
 *   cors:
 *     origins: ${CORS_ORIGINS:-http://localhost:10000}
 *     allow_credentials: true
 * ```
 */
export const cors: PolicyFactory<typeof schema> = {
  name: 'cors',
  key: 'cors',
  schema,
  compile(config, ctx): Policy {
    const list = (Array.isArray(config.origins) ? config.origins : config.origins.split(','))
      .map((o) => o.trim())
      .filter((o) => o !== '');
    const wildcard = list.includes('*');
    if (wildcard && config.allow_credentials) {
      throw new ConfigError(
        'origins "*" together with allow_credentials would let any site make credentialed requests; list the origins',
        [...ctx.path, 'origins'],
      );
    }
    const allowed = new OriginList(
      list.filter((o) => o !== '*'),
      (message) => {
        throw new ConfigError(message, [...ctx.path, 'origins']);
      },
    );
    const methods = new Set(config.allow_methods.map((m) => m.toUpperCase()));
    const headersAllowed = new Set(config.allow_headers.map((h) => h.toLowerCase()));
    const allowMethods = [...methods].join(', ');
    const allowHeaders = config.allow_headers.join(', ');
    const expose = config.expose_headers.join(', ');
    const maxAge = String(Math.floor(parseDuration(config.max_age) / 1000));
    const credentials = config.allow_credentials;
    const sameOrigin = config.allow_same_origin;

    const originAllowed = (origin: string, rc: RequestContext): boolean => {
      if (wildcard || allowed.has(origin)) return true;
      if (sameOrigin && rc.headers.host !== undefined) {
        // the request's own origin; a Host that spells out the scheme's default port names
        // the same origin (RFC 6454 §4), which an Origin header never spells out
        const scheme = rc.secure ? 'https' : 'http';
        let host = rc.headers.host.toLowerCase();
        const defaultPort = rc.secure ? ':443' : ':80';
        if (host.endsWith(defaultPort)) host = host.slice(0, -defaultPort.length);
        return origin === `${scheme}://${host}`;
      }
      return false;
    };
    const deny = (why: string): Verdict => ({
      code: 'cors_origin_denied',
      detail: { cors: why },
    });

    return {
      name: 'cors',
      mode: config.mode,
      failure: 'closed',
      onRequest(rc) {
        const origin = rc.headers.origin;
        if (origin === undefined) return undefined;
        const isPreflight =
          rc.method === 'OPTIONS' && rc.headers['access-control-request-method'] !== undefined;
        // Origin is lowercase per RFC 6454 serialisation; compare case-insensitively on scheme/host.
        const o = origin.toLowerCase();
        if (!originAllowed(o, rc))
          return deny(isPreflight ? 'preflight origin not allowed' : 'origin not allowed');
        if (!isPreflight) return undefined;
        const reqMethod = String(rc.headers['access-control-request-method']).toUpperCase();
        if (!methods.has(reqMethod)) return deny('preflight method not allowed');
        const reqHeaders = rc.headers['access-control-request-headers'];
        if (reqHeaders) {
          for (const h of reqHeaders.split(',')) {
            const name = h.trim().toLowerCase();
            if (name !== '' && !headersAllowed.has(name)) return deny('preflight header not allowed');
          }
        }
        const headers: Record<string, string> = {
          'access-control-allow-origin': wildcard ? '*' : origin,
          'access-control-allow-methods': allowMethods,
          'access-control-allow-headers': allowHeaders,
          'access-control-max-age': maxAge,
        };
        if (credentials) headers['access-control-allow-credentials'] = 'true';
        return { answer: { status: 204, headers } };
      },
      onResponse(rc, head) {
        const h = head.headers;
        const vary = h.vary;
        if (vary === undefined) h.vary = 'Origin';
        else if (!varies(String(vary))) h.vary = `${String(vary)}, Origin`;
        const origin = rc.headers.origin;
        if (origin === undefined || !originAllowed(origin.toLowerCase(), rc)) return;
        // a preflight answered by onRequest holds its grant already
        if (
          rc.method === 'OPTIONS' &&
          rc.headers['access-control-request-method'] !== undefined &&
          h['access-control-allow-origin'] !== undefined
        )
          return;
        // the gateway owns the grant: an upstream's own Access-Control-* answer (`*`, another
        // origin, other exposed headers) is replaced by the allowlist's
        h['access-control-allow-origin'] = wildcard ? '*' : origin;
        if (credentials) h['access-control-allow-credentials'] = 'true';
        else if (h['access-control-allow-credentials'] !== undefined)
          delete h['access-control-allow-credentials'];
        if (expose) h['access-control-expose-headers'] = expose;
        else if (h['access-control-expose-headers'] !== undefined) delete h['access-control-expose-headers'];
      },
    };
  },
};
