import { ConfigError } from './errors.js';
import { escapeRegex } from './regex-escape.js';

/**
 * Route patterns compiled once: literal segments, `:name` or `*` for one segment, and a
 * final `**` for any rest (including nothing: `/api/**` matches `/api`, `/api/` and
 * `/api/a/b`). Matching is on the normalised path; first match wins.
 */
export interface RoutePattern<T> {
  readonly name: string;
  readonly methods: ReadonlySet<string> | undefined;
  readonly path: string;
  readonly value: T;
}

interface CompiledPattern<T> extends RoutePattern<T> {
  readonly exact: string | undefined;
  readonly prefix: string;
  readonly re: RegExp | undefined;
}

export type RouteMatch<T> =
  | {
      readonly kind: 'match';
      readonly route: RoutePattern<T>;
      readonly params: Readonly<Record<string, string>>;
    }
  | { readonly kind: 'method'; readonly allow: readonly string[] }
  | { readonly kind: 'none' };

const SEGMENT = /^[^/]*$/;

function compilePattern(
  path: string,
  at: readonly (string | number)[],
): { exact?: string; prefix: string; re?: RegExp } {
  const segs = path.split('/').slice(1);
  let literal = true;
  let prefix = '';
  let src = '^';
  const params = new Set<string>();
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    if (seg === '**') {
      if (i !== segs.length - 1) throw new ConfigError('`**` may only be the last segment', at);
      literal = false;
      src += '(?:/.*)?';
      continue;
    }
    if (seg === '*' || seg.startsWith(':')) {
      if (seg.startsWith(':') && !/^:[A-Za-z_][A-Za-z0-9_]*$/.test(seg)) {
        throw new ConfigError(`invalid parameter segment "${seg}"`, at);
      }
      if (seg.startsWith(':')) {
        // a repeated name would be a duplicate regex group: a SyntaxError, not a config error
        if (params.has(seg)) throw new ConfigError(`duplicate parameter "${seg}"`, at);
        params.add(seg);
      }
      literal = false;
      src += seg === '*' ? '/[^/]+' : `/(?<${seg.slice(1)}>[^/]+)`;
      continue;
    }
    if (!SEGMENT.test(seg) || seg.includes('*')) throw new ConfigError(`invalid path segment "${seg}"`, at);
    src += '/' + escapeRegex(seg);
    if (literal) prefix += '/' + seg;
  }
  if (literal) return { exact: path, prefix: path };
  return { prefix, re: new RegExp(src + '$') };
}

export class Router<T> {
  private readonly routes: CompiledPattern<T>[];

  /** candidates by the request's first two path segments, then its first, then none */
  private readonly bySeg2 = new Map<string, CompiledPattern<T>[]>();
  private readonly bySeg1 = new Map<string, CompiledPattern<T>[]>();
  private readonly rootOnly: CompiledPattern<T>[];
  /** the same routes with their literal segments lowercased, to match {@link lenientPath}s */
  private readonly folded: Router<T>;

  constructor(
    routes: readonly RoutePattern<T>[],
    at: (index: number) => readonly (string | number)[],
    folded = false,
  ) {
    this.routes = routes.map(
      (r, i) => ({ ...r, ...compilePattern(r.path, [...at(i), 'path']) }) as CompiledPattern<T>,
    );
    this.folded = folded
      ? this
      : new Router(
          routes.map((r) => ({ ...r, path: foldPattern(r.path) })),
          at,
          true,
        );
    // Index routes by the literal segments their pattern starts with, so matching cost stays
    // nearly flat with the number of routes; each list keeps the configured order.
    const lit = this.routes.map((r) =>
      r.prefix
        .split('/')
        .slice(1)
        .filter((s) => s !== ''),
    );
    this.rootOnly = this.routes.filter((_r, i) => lit[i]!.length === 0);
    for (let i = 0; i < this.routes.length; i++) {
      const l = lit[i]!;
      if (l.length >= 1 && !this.bySeg1.has(l[0]!)) {
        this.bySeg1.set(
          l[0]!,
          this.routes.filter(
            (_r, j) => lit[j]!.length === 0 || (lit[j]!.length === 1 && lit[j]![0] === l[0]),
          ),
        );
      }
      if (l.length >= 2) {
        const key = `${l[0]}/${l[1]}`;
        if (!this.bySeg2.has(key)) {
          this.bySeg2.set(
            key,
            this.routes.filter((_r, j) => {
              const m = lit[j]!;
              return m.length === 0 || (m[0] === l[0] && (m.length === 1 || m[1] === l[1]));
            }),
          );
        }
      }
    }
  }

  private candidates(path: string): readonly CompiledPattern<T>[] {
    const a = path.indexOf('/', 1);
    const s1 = a === -1 ? path.slice(1) : path.slice(1, a);
    if (a !== -1) {
      const b = path.indexOf('/', a + 1);
      const hit = this.bySeg2.get(`${s1}/${b === -1 ? path.slice(a + 1) : path.slice(a + 1, b)}`);
      if (hit !== undefined) return hit;
    }
    return this.bySeg1.get(s1) ?? this.rootOnly;
  }

  get size(): number {
    return this.routes.length;
  }

  match(method: string, path: string): RouteMatch<T> {
    let allow: Set<string> | undefined;
    const routes = this.candidates(path);
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i]!;
      let params: Record<string, string> | undefined;
      if (r.exact !== undefined) {
        if (path !== r.exact) continue;
      } else {
        if (r.prefix !== '' && !path.startsWith(r.prefix)) continue;
        const m = r.re!.exec(path);
        if (m === null) continue;
        params = m.groups;
      }
      if (r.methods === undefined || r.methods.has(method) || (method === 'HEAD' && r.methods.has('GET'))) {
        return { kind: 'match', route: r, params: params ?? {} };
      }
      allow ??= new Set();
      for (const m of r.methods) allow.add(m);
    }
    if (allow !== undefined) return { kind: 'method', allow: [...allow] };
    return { kind: 'none' };
  }

  /**
   * Whether `m`, the route `path` matched, could be the wrong judge of the request: a service
   * that reads the path leniently ({@link lenientPath}) would act on a path that another
   * route, or none, covers. `/api/ADMIN/users`, `/api/admin%2Fusers`, `/api/x/..;/admin/users`
   * all match `/api/**` here, while Express (case-insensitive routing), WSGI servers (which
   * decode `%2F`) and Tomcat (which drops `;` path parameters) serve `/api/admin/users`.
   */
  ambiguous(method: string, path: string, m: RouteMatch<T>): boolean {
    if (m.kind !== 'match') return false;
    const alt = lenientPath(path);
    if (alt === undefined) return false;
    const am = this.folded.match(method, alt);
    return am.kind !== 'match' || am.route.value !== m.route.value;
  }
}

/** A route pattern with its literal segments lowercased (parameters keep their names). */
function foldPattern(path: string): string {
  return path
    .split('/')
    .map((s) => (s.startsWith(':') ? s : s.toLowerCase()))
    .join('/');
}

const LENIENT_HINT = /[A-Z;\\]|%2F|%5C|.\/$|[^/.]\.(?:\/|$)/;

/**
 * A normalised path as the most lenient common servers read it, or undefined when that is
 * the path itself: letters in lower case (Express, ASP.NET, IIS), an encoded `/` or `\` and a
 * plain `\` as separators (WSGI servers decode the path before routing; Node's WHATWG URL
 * parser and IIS turn `\` into `/`), `;` path parameters dropped from each segment (Tomcat,
 * Jetty, Spring), then dot segments removed, trailing dots dropped from the other segments
 * (IIS and Windows read `admin.` as `admin`), and no trailing slash (Express and Spring match
 * `/x/` as `/x`). Compared by route only ({@link Router.ambiguous}), never forwarded.
 */
export function lenientPath(path: string): string | undefined {
  if (!LENIENT_HINT.test(path)) return undefined;
  let p = path.replace(/%2F|%5C|\\/g, '/');
  if (p.includes(';')) p = p.replace(/;[^/]*/g, '');
  p = (normalizePath(p) ?? p).toLowerCase();
  if (p.includes('.')) p = p.replace(/([^/.])\.+(?=\/|$)/g, '$1');
  if (p.length > 1 && p.endsWith('/')) p = p.slice(0, -1);
  return p === path ? undefined : p;
}

/**
 * Normalise a request path for routing and forwarding (RFC 3986 §5.2.4): decode
 * percent-encoded unreserved characters, remove dot segments (clamped at the root),
 * collapse repeated slashes. Encoded `/`, `?`, `%` and other reserved characters stay
 * encoded. Returns undefined for paths that are not origin-form.
 */
export function normalizePath(raw: string): string | undefined {
  if (raw.length === 0 || raw.charCodeAt(0) !== 47 /* / */) return undefined;
  let p = raw;
  if (p.includes('%')) {
    p = p.replace(/%([0-9A-Fa-f]{2})/g, (m, hex: string) => {
      const c = Number.parseInt(hex, 16);
      // unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~"
      if (
        (c >= 0x41 && c <= 0x5a) ||
        (c >= 0x61 && c <= 0x7a) ||
        (c >= 0x30 && c <= 0x39) ||
        c === 0x2d ||
        c === 0x2e ||
        c === 0x5f ||
        c === 0x7e
      ) {
        return String.fromCharCode(c);
      }
      return m.toUpperCase();
    });
  }
  if (!p.includes('//') && !p.includes('/.')) return p;
  const out: string[] = [];
  const segs = p.split('/');
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!;
    if (s === '.' || (s === '' && i < segs.length - 1)) continue;
    if (s === '..') {
      out.pop();
      continue;
    }
    out.push(s);
  }
  const last = segs[segs.length - 1];
  if ((last === '.' || last === '..') && out[out.length - 1] !== '') out.push('');
  return '/' + out.join('/');
}
