import { Type } from '@sinclair/typebox';
import type { PolicyFactory, Policy, ResponseHead } from '../../gateway/policy.js';
import { policyBlock } from '../../gateway/config/policy-schema.js';

/** The seed's header set (ORIGIN security summary), used as the defaults. */
export const SEED_HEADERS: Readonly<Record<string, string>> = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'SAMEORIGIN',
  'X-XSS-Protection': '1; mode=block',
  'Strict-Transport-Security': 'max-age=31536000; includeSubDomains',
  'Content-Security-Policy':
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; font-src 'self' data:; connect-src 'self'",
  'Referrer-Policy': 'strict-origin-when-cross-origin',
  'Permissions-Policy': 'geolocation=(), microphone=(), camera=()',
};

/** A header name: an HTTP token (RFC 9110 §5.6.2). */
const FIELD_NAME = Type.String({ pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$" });
/**
 * A header value: visible US-ASCII, spaces and tabs (RFC 9110 §5.5). A line break, another
 * control character or a character outside Latin-1 cannot be sent (Node refuses the whole
 * response head, so every response would end in a closed connection); it is refused at load.
 */
const FIELD_VALUE = Type.Union([
  Type.String({
    pattern: '^[\\t\\x20-\\x7e]*$',
    description: 'a header value: printable US-ASCII, spaces and tabs (no line breaks or control characters)',
  }),
  Type.Null(),
]);

const schema = policyBlock(
  {
    headers: Type.Record(FIELD_NAME, FIELD_VALUE, {
      default: SEED_HEADERS,
      description:
        'headers added to every response (gateway errors included); a value of null removes a header of that name. A route block replaces the whole map; use `extra` to add to it.',
    }),
    extra: Type.Record(FIELD_NAME, FIELD_VALUE, {
      default: {},
      description: 'headers merged over `headers` (null removes one); handy in route overrides',
    }),
    remove: Type.Array(Type.String(), {
      default: ['Server', 'X-Powered-By', 'X-AspNet-Version', 'X-AspNetMvc-Version'],
      description: 'upstream response headers removed (they reveal the stack)',
    }),
    override_upstream: Type.Boolean({
      default: true,
      description:
        'replace a header of the same name set by the upstream (false: keep the upstream value, except an X-Frame-Options that browsers ignore: several distinct values or one other than DENY/SAMEORIGIN, which becomes the configured value, or DENY when it held DENY). true never replaces a Content-Security-Policy: the configured one is added beside the upstream’s, and browsers enforce both',
    }),
    hsts_only_over_tls: Type.Boolean({
      default: false,
      description:
        'send Strict-Transport-Security only when the client connection is https (RFC 6797); off by default for the sidecar deployment behind a TLS-terminating proxy',
    }),
  },
  {
    description:
      'security response headers (X-Content-Type-Options, HSTS, CSP, …) and removal of revealing headers',
  },
);

/**
 * Whether an upstream's X-Frame-Options protects at all. Browsers (HTML, "check a navigation
 * response's adherence to X-Frame-Options") take the set of its lowercased values: more than
 * one distinct value (two conflicting headers, `DENY, SAMEORIGIN`) or one other than `deny` or
 * `sameorigin` (`ALLOW-FROM …`, `ALLOWALL`, a typo) lets any site frame the page. `values`:
 * {@link framingValues} of the field.
 */
function framingProtected(values: ReadonlySet<string>): boolean {
  if (values.size !== 1) return false;
  const only = values.values().next().value;
  return only === 'deny' || only === 'sameorigin';
}

/** The distinct values of an X-Frame-Options field (its lines and list items), lower-cased. */
function framingValues(value: string | string[] | number): Set<string> {
  const values = new Set<string>();
  for (const line of Array.isArray(value) ? value : [String(value)])
    for (const v of line.split(',')) values.add(v.trim().toLowerCase());
  return values;
}

/**
 * `security_headers`: adds the seed's security headers to every response and strips
 * `Server`/`X-Powered-By`. Example:
 * ```yaml
 * policies:
 *   security_headers:
 *     extra: { Cross-Origin-Opener-Policy: same-origin }
 * ```
 */
export const securityHeaders: PolicyFactory<typeof schema> = {
  name: 'security-headers',
  key: 'security_headers',
  schema,
  compile(config): Policy {
    const merged = { ...config.headers, ...config.extra };
    const set: [string, string][] = [];
    const del = new Set(config.remove.map((h) => h.toLowerCase()));
    for (const [name, value] of Object.entries(merged)) {
      if (value === null) del.add(name.toLowerCase());
      else set.push([name.toLowerCase(), value]);
    }
    const removeList = [...del];
    const hstsOnlyTls = config.hsts_only_over_tls;
    const override = config.override_upstream;
    return {
      name: 'security-headers',
      mode: config.mode,
      failure: 'open',
      onResponse(ctx, head: ResponseHead) {
        const h = head.headers;
        // (delete only what is there: deleting turns the object into a slower dictionary)
        for (let i = 0; i < removeList.length; i++) {
          const name = removeList[i]!;
          if (h[name] !== undefined) delete h[name];
        }
        for (let i = 0; i < set.length; i++) {
          const [name, value] = set[i]!;
          if (hstsOnlyTls && name === 'strict-transport-security' && !ctx.secure) continue;
          const upstream = h[name];
          // keep the upstream's own value (override_upstream: false), unless browsers ignore it
          if (!override && upstream !== undefined) {
            if (name !== 'x-frame-options') continue;
            const values = framingValues(upstream);
            if (framingProtected(values)) continue;
            // an X-Frame-Options browsers ignore (conflicting values, ALLOW-FROM …) is
            // replaced; when the service asked for DENY among them, DENY it is, not the
            // configured value when that one is looser
            if (values.has('deny')) {
              h[name] = 'DENY';
              continue;
            }
          }
          // A response may carry several policies and browsers enforce every one (CSP 3
          // §4.1): the gateway's is added beside the upstream's, never in its place, so an
          // upstream policy stricter than the configured one is not loosened.
          if (name === 'content-security-policy' && upstream !== undefined && !head.fromGateway) {
            const own = Array.isArray(upstream) ? upstream : [String(upstream)];
            h[name] = own.includes(value) ? own : [...own, value];
            continue;
          }
          h[name] = value;
        }
      },
    };
  },
};
