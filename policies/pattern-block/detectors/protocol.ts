/**
 * Protocol checks: request-level detectors used by the `protocol` rule pack on the
 * `request` target. Each reads the request facts (method, raw target, raw header list,
 * body framing) and the policy's protocol settings, and returns a short note when the
 * request is abnormal.
 */

/** What a protocol detector may look at. */
export interface RequestFacts {
  readonly method: string;
  /** the request target exactly as received */
  readonly target: string;
  /** lowercased names */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** [name, value, name, value, …] as received */
  readonly rawHeaders: readonly string[];
  readonly httpVersion: string;
  /** body length in bytes (Content-Length or the buffered body) */
  readonly bodyLength: number;
  /** media type, lowercased, without parameters ('' when absent) */
  readonly mediaType: string;
  /** the raw urlencoded body, when the body is a form (for percent-encoding checks) */
  readonly rawForm: string | undefined;
  /** number of inspected values (query, cookies, body fields) */
  readonly argCount: number;
  /** the normalised request path */
  readonly path: string;
  /** the JSON body nests deeper than the walk follows (engine.ts MAX_JSON_DEPTH) */
  readonly jsonTooDeep?: boolean;
  /** the JSON body has a member `prototype` inside a member `constructor` (prototype pollution by a deep merge) */
  readonly prototypePath?: boolean;
  /** the body held more keys and values than the walk inspects (max_args): the rest was not */
  readonly truncated?: boolean;
  /**
   * the method a POST asks for with a `_method` parameter (query, form, multipart field or
   * top-level JSON member) other than POST, as sent; undefined when there is none
   */
  readonly methodOverride?: string;
  /**
   * true when every `%` of the target is known to start a valid escape of well-formed UTF-8
   * (neither `%u` nor overlong): the walk decoded each part of the target with the builtin
   * decoder, which refuses anything else. Then {@link percentFindings} of the target is 0 and
   * need not be computed. Undefined or false: not known.
   */
  readonly targetEscapesValid?: boolean;
  /**
   * Whether the path (the target before its `?`) holds a `%`, when the walk read it;
   * undefined: not known (the target is searched).
   */
  readonly pathPercent?: boolean | undefined;
}

/** Compiled protocol settings (from the policy config). */
export interface ProtocolSettings {
  readonly allowedMethods: ReadonlySet<string>;
  readonly allowedContentTypes: (mediaType: string) => boolean;
  readonly allowedCharsets: ReadonlySet<string>;
  readonly maxHeaders: number;
  readonly maxArgs: number;
  readonly maxRanges: number;
}

export type RequestDetector = (r: RequestFacts, s: ProtocolSettings) => string | undefined;

function header(r: RequestFacts, name: string): string | undefined {
  const v = r.headers[name];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(', ') : v;
}

/**
 * `raw.toLowerCase() === name` for an ASCII lower-case `name`, without building a string: of
 * the characters that lower-case to ASCII, only A–Z and the Kelvin sign U+212A (to `k`) do so
 * without changing the length (U+0130 becomes two code units).
 */
function isName(raw: string, name: string): boolean {
  const n = name.length;
  if (raw.length !== n) return false;
  for (let i = 0; i < n; i++) {
    const c = raw.charCodeAt(i);
    const l = name.charCodeAt(i);
    if (c !== l && !(c >= 65 && c <= 90 && c + 32 === l) && !(c === 0x212a && l === 107)) return false;
  }
  return true;
}

export const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** The value of hex digit `c`, or -1. */
function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

function isHex(c: number): boolean {
  return hexValue(c) >= 0;
}

/** `%` not followed by two hex digits (`%u` IIS escapes are judged by their own check). */
export function invalidPercent(s: string): boolean {
  for (let i = s.indexOf('%'); i >= 0; i = s.indexOf('%', i + 1)) {
    const a = s.charCodeAt(i + 1);
    const b = s.charCodeAt(i + 2);
    if (isHex(a) && isHex(b)) continue;
    if (
      (a === 117 || a === 85) &&
      isHex(b) &&
      isHex(s.charCodeAt(i + 3)) &&
      isHex(s.charCodeAt(i + 4)) &&
      isHex(s.charCodeAt(i + 5))
    )
      continue;
    return true;
  }
  return false;
}

/** IIS `%uXXXX` escapes (the definition {@link percentFindings} follows). */
export const IIS_ESCAPE = /%u[0-9a-f]{4}/i;

/** Overlong UTF-8 and `%u`-escaped separators (the definition {@link percentFindings} follows). */
export const OVERLONG_ESCAPE =
  /%(?:c0|c1)%[89ab][0-9a-z]|%e0%80%|%f0%80%80%|%f8%80%|%fc%80%|%u(?:2215|2216|ff0f|ff3c|ff0e)/i;

/** `%`-sequences of {@link OVERLONG_ESCAPE} that are fixed strings (lower case). */
const OVERLONG_FIXED = [
  '%e0%80%',
  '%f0%80%80%',
  '%f8%80%',
  '%fc%80%',
  '%u2215',
  '%u2216',
  '%uff0f',
  '%uff3c',
  '%uff0e',
];

/** The code unit at `i` with ASCII upper case folded (what a case-insensitive ASCII pattern compares). */
function lowerAt(s: string, i: number): number {
  const c = s.charCodeAt(i);
  return c >= 65 && c <= 90 ? c + 32 : c;
}

function startsLowerAt(s: string, i: number, lit: string): boolean {
  for (let k = 0; k < lit.length; k++) if (lowerAt(s, i + k) !== lit.charCodeAt(k)) return false;
  return true;
}

/** Whether a match of {@link OVERLONG_ESCAPE} starts at `i` (a `%`). */
function overlongAt(s: string, i: number): boolean {
  const a = lowerAt(s, i + 1);
  if (a === 99 /* c */) {
    const b = s.charCodeAt(i + 2);
    if ((b !== 48 && b !== 49) || s.charCodeAt(i + 3) !== 37) return false;
    const x = lowerAt(s, i + 4);
    const y = lowerAt(s, i + 5);
    return (x === 56 || x === 57 || x === 97 || x === 98) && ((y >= 48 && y <= 57) || (y >= 97 && y <= 122));
  }
  if (a !== 101 /* e */ && a !== 102 /* f */ && a !== 117 /* u */) return false;
  for (const lit of OVERLONG_FIXED) if (startsLowerAt(s, i, lit)) return true;
  return false;
}

/** Bits of {@link percentFindings}. */
export const PERCENT_INVALID = 1;
export const PERCENT_IIS = 2;
export const PERCENT_OVERLONG = 4;

/** The Host value {@link REQUEST_DETECTORS}.host_header judged last, and its verdict. */
let lastHost: string | undefined;
let lastHostNote: string | undefined;

let lastPercentInput: string | undefined;
let lastPercentFindings = 0;

/**
 * What three checks look for at the `%` signs of `s`, in one pass over them:
 * {@link PERCENT_INVALID} as {@link invalidPercent}, {@link PERCENT_IIS} as
 * {@link IIS_ESCAPE}, {@link PERCENT_OVERLONG} as {@link OVERLONG_ESCAPE}. The last input is
 * remembered (the three checks ask about the same target in turn).
 */
export function percentFindings(s: string): number {
  if (s === lastPercentInput) return lastPercentFindings;
  let found = 0;
  for (let i = s.indexOf('%'); i >= 0; i = s.indexOf('%', i + 1)) {
    const a = s.charCodeAt(i + 1);
    const b = s.charCodeAt(i + 2);
    // the usual escape, a digit then a hex digit: valid, and neither %u nor an overlong form
    // (both start with a letter)
    if (a >= 48 && a <= 57 && isHex(b)) continue;
    const u =
      (a === 117 || a === 85) &&
      isHex(b) &&
      isHex(s.charCodeAt(i + 3)) &&
      isHex(s.charCodeAt(i + 4)) &&
      isHex(s.charCodeAt(i + 5));
    if (u) found |= PERCENT_IIS;
    else if (!(isHex(a) && isHex(b))) found |= PERCENT_INVALID;
    if ((found & PERCENT_OVERLONG) === 0 && overlongAt(s, i)) found |= PERCENT_OVERLONG;
    if (found === (PERCENT_INVALID | PERCENT_IIS | PERCENT_OVERLONG)) break;
  }
  lastPercentInput = s;
  lastPercentFindings = found;
  return found;
}

/** {@link percentFindings} of the target of `r` (0 when the walk found its escapes valid). */
function targetPercent(r: RequestFacts): number {
  return r.targetEscapesValid === true ? 0 : percentFindings(r.target);
}

/**
 * The escape at `i` of `s`: `byte | length << 8` (length 3, or 5 for a double-encoded
 * `%25FF`, which a second decoding turns into `%FF` and which counts as the byte it hides),
 * or -1 when there is none.
 */
function escapeAt(s: string, i: number): number {
  if (s.charCodeAt(i) !== 37) return -1;
  const a = hexValue(s.charCodeAt(i + 1));
  const b = hexValue(s.charCodeAt(i + 2));
  if (a < 0 || b < 0) return -1;
  if (a === 2 && b === 5) {
    const c = hexValue(s.charCodeAt(i + 3));
    const d = hexValue(s.charCodeAt(i + 4));
    if (c >= 0 && d >= 0) return (c * 16 + d) | (5 << 8);
  }
  return (a * 16 + b) | (3 << 8);
}

/**
 * Whether the percent-escapes of `s[0, end)` spell invalid UTF-8 (RFC 3629): a stray
 * continuation byte, a lead byte never valid (C0, C1, F5–FF), an overlong or surrogate
 * form, or a sequence cut short. Characters that are not escapes are taken as they are; a
 * double-encoded escape (`%25FF`) counts as the byte it hides.
 */
export function invalidUtf8Escapes(s: string, end: number): boolean {
  for (let i = s.indexOf('%'); i >= 0 && i < end; i = s.indexOf('%', i)) {
    const e = escapeAt(s, i);
    if (e < 0) {
      i++;
      continue;
    }
    i += e >> 8;
    const b = e & 0xff;
    if (b < 0x80) continue;
    let need: number;
    // the range of the first continuation byte (it excludes overlong and surrogate forms)
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      else if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      else if (b === 0xf4) hi = 0x8f;
    } else return true;
    for (let k = 0; k < need; k++) {
      const ce = i < end ? escapeAt(s, i) : -1;
      const c = ce & 0xff;
      if (ce < 0 || c < lo || c > hi) return true;
      i += ce >> 8;
      lo = 0x80;
      hi = 0xbf;
    }
  }
  return false;
}

/** A Host that is an IP address alone: dotted or bare numeric IPv4, hex, or a bracketed IPv6 literal. */
export const IP_HOST = /^(?:[0-9.]+|0x[0-9a-f]+|\[[0-9a-f:.]+\])$/i;

/** Headers whose values carry URL-encoded data by definition (cookies, URLs, W3C trace baggage). */
const URL_ENCODED_HEADERS = new Set(['cookie', 'referer', 'baggage', 'tracestate', 'link']);

/** ` | < > $ : shell and markup metacharacters that no header value encodes for a reason. */
function isEncodedMeta(b: number): boolean {
  return b === 0x60 || b === 0x7c || b === 0x3c || b === 0x3e || b === 0x24;
}

/** Parameters of a header value like `type/sub; a=b; c="d"`. */
function params(v: string): [string, string][] {
  const out: [string, string][] = [];
  const re = /;\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|'[^']*'|[^;]*)/g;
  for (let m = re.exec(v); m; m = re.exec(v))
    out.push([m[1]!.toLowerCase(), m[2]!.replace(/^["']|["']$/g, '').trim()]);
  return out;
}

/** `type/subtype` with token characters (RFC 9110 §8.3.1). */
const MEDIA_TYPE = /^[!#$%&'*+.^_`|~0-9a-z-]+\/[!#$%&'*+.^_`|~0-9a-z-]+$/;

const CHARSET = /charset/i;

/** User agents known to send an empty Accept header (the exceptions of CRS 920310). */
const EMPTY_ACCEPT_CLIENTS = /AppleWebKit|Android|Business|Enterprise|Entreprise/;

export const CACHE_DIRECTIVE =
  /^(?:max-age=\d+|max-stale(?:=\d+)?|min-fresh=\d+|no-cache|no-store|no-transform|only-if-cached|must-revalidate|stale-if-error=\d+)$/i;

/** Request Cache-Control values that browsers and tools send, each one valid directive. */
const COMMON_CACHE_CONTROL = new Set(['no-cache', 'max-age=0', 'no-store']);

// The detectors' patterns are compiled once, here: a regex literal in a function body makes
// a new RegExp object each time the function runs.

/**
 * A target without a control character, space or DEL (none may stand in a request target,
 * RFC 9112 §3.2). (V8 runs an anchored class loop faster than a search for the class.)
 */
// eslint-disable-next-line no-control-regex
const TARGET_WITHOUT_CONTROL = /^[^\x00-\x20\x7f]*$/;

/** The scheme and authority of an absolute-form target. */
const ABSOLUTE_FORM = /^https?:\/\/[^/?#]+/i;

/** `host[:port]`: reg-name characters or a bracketed IPv6 literal, and up to five port digits. */
const HOST_SYNTAX = /^(?:[A-Za-z0-9._~!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * Bits of {@link requestFeatures}: what a request holds that some request detector looks at.
 * A detector that cannot fire without one of its {@link REQUEST_NEEDS} bits is not called for
 * a request that has none of them (the usual GET has almost none).
 */
const FEATURE_METHOD = 1 << 0; // a method outside the allowlist's exact spelling
const FEATURE_TARGET_PERCENT = 1 << 1; // the target's escapes are not known valid
const FEATURE_FORM = 1 << 2; // a urlencoded body
const FEATURE_PATH_PERCENT = 1 << 3; // a `%` before the `?`
const FEATURE_FRAMING = 1 << 4; // Content-Length, Transfer-Encoding, Connection, several Host
const FEATURE_HOST_ADDRESS = 1 << 5; // a Host starting with a digit or `[`
const FEATURE_BODY = 1 << 6; // a body length above 0, or a Transfer-Encoding
const FEATURE_CONTENT_TYPE = 1 << 7;
const FEATURE_ACCEPT = 1 << 8; // an Accept value that is blank or holds `=`
const FEATURE_CONTENT_ENCODING = 1 << 9;
const FEATURE_RANGE = 1 << 10; // Range or Request-Range
const FEATURE_CACHE_CONTROL = 1 << 11;
const FEATURE_HEADER_PERCENT = 1 << 12; // a `%` in a header value
const FEATURE_ARGS = 1 << 13; // more arguments than allowed, or some left uninspected
const FEATURE_JSON = 1 << 14; // a JSON body nested too deep, or a constructor.prototype path
const FEATURE_OVERRIDE = 1 << 15; // a `_method` parameter asking for another method

/**
 * The {@link requestFeatures} bits without which a detector cannot fire (it is skipped when the
 * request has none of them); 0 or absent: it always runs. Each entry is a necessary condition
 * of its detector's finding: a property test compares every detector's verdict with and without
 * the skip over generated requests.
 */
export const REQUEST_NEEDS: Readonly<Record<string, number>> = {
  method_allowlist: FEATURE_METHOD,
  invalid_percent_encoding: FEATURE_TARGET_PERCENT | FEATURE_FORM,
  iis_unicode_escape: FEATURE_TARGET_PERCENT | FEATURE_FORM,
  overlong_target: FEATURE_TARGET_PERCENT,
  path_utf8: FEATURE_PATH_PERCENT,
  framing_headers: FEATURE_FRAMING,
  ip_host: FEATURE_HOST_ADDRESS,
  arg_count: FEATURE_ARGS,
  json_depth: FEATURE_JSON,
  prototype_path: FEATURE_JSON,
  method_override: FEATURE_OVERRIDE,
  body_on_get: FEATURE_BODY,
  content_type: FEATURE_BODY,
  content_type_params: FEATURE_CONTENT_TYPE,
  accept_charset: FEATURE_ACCEPT,
  content_encoding: FEATURE_CONTENT_ENCODING,
  range_header: FEATURE_RANGE,
  cache_control: FEATURE_CACHE_CONTROL,
  empty_accept: FEATURE_ACCEPT,
  header_escapes: FEATURE_HEADER_PERCENT,
};

/** Whether `c` is a printable ASCII character (not whitespace to `String.prototype.trim`). */
function isPrintableAscii(c: number): boolean {
  return c > 32 && c < 127;
}

/** `v.trimStart().charCodeAt(0)` (NaN for a blank value), without a call for the usual value. */
function firstAfterSpace(v: string): number {
  const c = v.charCodeAt(0);
  return isPrintableAscii(c) ? c : v.trimStart().charCodeAt(0);
}

/** `v.trim() === ''`, without a call for the usual value. */
function isBlank(v: string): boolean {
  return !isPrintableAscii(v.charCodeAt(0)) && v.trim() === '';
}

/**
 * The {@link REQUEST_NEEDS} features of a request, from its facts and one pass over its raw
 * header list (names compared only when their length can match). `headers` is derived from
 * `rawHeaders` (Node's parser, the HTTP/2 adapter and the replay all build both), so a header
 * present in one has a raw entry. The header values are searched for `%` only when `wanted`
 * holds {@link FEATURE_HEADER_PERCENT}.
 */
export function requestFeatures(r: RequestFacts, s: ProtocolSettings, wanted: number): number {
  let f = 0;
  if (!s.allowedMethods.has(r.method)) f |= FEATURE_METHOD;
  if (r.targetEscapesValid !== true) f |= FEATURE_TARGET_PERCENT;
  if (r.rawForm !== undefined) f |= FEATURE_FORM;
  if (r.pathPercent !== undefined) {
    if (r.pathPercent) f |= FEATURE_PATH_PERCENT;
  } else {
    const t = r.target;
    const pct = t.indexOf('%');
    if (pct >= 0) {
      const q = t.indexOf('?');
      if (q < 0 || pct < q) f |= FEATURE_PATH_PERCENT;
    }
  }
  if (r.bodyLength > 0) f |= FEATURE_BODY;
  if (r.argCount > s.maxArgs || r.truncated === true) f |= FEATURE_ARGS;
  if (r.jsonTooDeep === true || r.prototypePath === true) f |= FEATURE_JSON;
  if (r.methodOverride !== undefined) f |= FEATURE_OVERRIDE;
  const raw = r.rawHeaders;
  const percent = (wanted & FEATURE_HEADER_PERCENT) !== 0;
  let hosts = 0;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const n = raw[i]!;
    const v = raw[i + 1]!;
    if (percent && v.indexOf('%') >= 0) f |= FEATURE_HEADER_PERCENT;
    switch (n.length) {
      case 4:
        if (isName(n, 'host')) {
          hosts++;
          const c = firstAfterSpace(v);
          if ((c >= 48 && c <= 57) || c === 91) f |= FEATURE_HOST_ADDRESS;
        }
        break;
      case 5:
        if (isName(n, 'range')) f |= FEATURE_RANGE;
        break;
      case 6:
        if (isName(n, 'accept') && (isBlank(v) || v.indexOf('=') >= 0)) f |= FEATURE_ACCEPT;
        break;
      case 10:
        if (isName(n, 'connection')) f |= FEATURE_FRAMING;
        break;
      case 12:
        if (isName(n, 'content-type')) f |= FEATURE_CONTENT_TYPE;
        break;
      case 13:
        if (isName(n, 'cache-control')) f |= FEATURE_CACHE_CONTROL;
        else if (isName(n, 'request-range')) f |= FEATURE_RANGE;
        break;
      case 14:
        if (isName(n, 'content-length')) f |= FEATURE_FRAMING;
        break;
      case 16:
        if (isName(n, 'content-encoding')) f |= FEATURE_CONTENT_ENCODING;
        break;
      case 17:
        if (isName(n, 'transfer-encoding')) f |= FEATURE_FRAMING | FEATURE_BODY;
        break;
    }
  }
  if (hosts > 1) f |= FEATURE_FRAMING;
  return f;
}

export const REQUEST_DETECTORS: Readonly<Record<string, RequestDetector>> = {
  /** The method is not a token or not in the allowlist. */
  method_allowlist: (r, s) =>
    // (the compiled allowlist holds only tokens, upper-case: the usual method is answered by one lookup)
    s.allowedMethods.has(r.method)
      ? undefined
      : !TOKEN.test(r.method)
        ? 'method is not a token'
        : s.allowedMethods.has(r.method.toUpperCase())
          ? undefined
          : `method ${r.method.slice(0, 16)} not allowed`,

  /** Request-target form: origin-form `/…`, `*` only for OPTIONS, absolute-form only http(s); no whitespace or controls. */
  request_line: (r) => {
    const t = r.target;
    if (!TARGET_WITHOUT_CONTROL.test(t)) return 'control character or space in the request target';
    if (t === '*') return r.method === 'OPTIONS' ? undefined : 'asterisk-form outside OPTIONS';
    if (t.startsWith('/')) return undefined;
    if (ABSOLUTE_FORM.test(t)) return undefined;
    return 'request target is not origin-form';
  },

  /** `%` not followed by two hex digits in the target or a urlencoded body. */
  invalid_percent_encoding: (r) =>
    (targetPercent(r) & PERCENT_INVALID) !== 0
      ? 'invalid percent-encoding in the target'
      : r.rawForm !== undefined && invalidPercent(r.rawForm)
        ? 'invalid percent-encoding in the form body'
        : undefined,

  /** IIS `%uXXXX` escapes (not standard; used to smuggle characters past filters). */
  iis_unicode_escape: (r) =>
    (targetPercent(r) & PERCENT_IIS) !== 0 ||
    (r.rawForm !== undefined && r.rawForm.indexOf('%') >= 0 && IIS_ESCAPE.test(r.rawForm))
      ? '%u escape'
      : undefined,

  /** Overlong UTF-8 sequences or %u-escaped separators in the raw target (traversal evasion). */
  overlong_target: (r) =>
    (targetPercent(r) & PERCENT_OVERLONG) !== 0 ? 'overlong or %u-escaped separator' : undefined,

  /**
   * Percent-escapes in the path that spell invalid UTF-8 (`%FF`, `%C0%AE`, a lone `%99`): no
   * client encodes a path that way; overlong and broken sequences are how traversal and
   * filter evasions hide `/`, `.` and `\` from a decoder that differs from the upstream's.
   */
  path_utf8: (r) => {
    const t = r.target;
    let end = t.indexOf('?');
    if (end < 0) end = t.length;
    return invalidUtf8Escapes(t, end) ? 'invalid UTF-8 in the percent-encoded path' : undefined;
  },

  /**
   * A Host that is a bare IP address with no port: what Internet-wide scanners send (CRS
   * 920350). Clients that address the gateway by IP on its own port (local tools, probes,
   * sidecars) send the port and pass; the default gateway.yaml excludes the health routes,
   * whose load-balancer checks may use the default port.
   */
  ip_host: (r) => {
    const h = header(r, 'host');
    if (h === undefined) return undefined;
    // only a digit or `[` can start an address (the usual name is ruled out by its first character)
    const c = h.charCodeAt(0);
    if ((c < 48 || c > 57) && c !== 91) return undefined;
    return IP_HOST.test(h) ? 'Host is a bare IP address' : undefined;
  },

  /**
   * A percent-encoded shell or markup metacharacter (` | < > $) in a header value: headers
   * are not URL-decoded by HTTP, so the escape is there for a downstream decoder (the
   * `%24%7Bjndi:` of Log4Shell). Headers that carry URL-encoded data are not judged.
   */
  header_escapes: (r) => {
    const raw = r.rawHeaders;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const v = raw[i + 1]!;
      let at = v.indexOf('%');
      if (at < 0) continue;
      const name = raw[i]!.toLowerCase();
      if (URL_ENCODED_HEADERS.has(name)) continue;
      for (; at >= 0; at = v.indexOf('%', at + 1)) {
        const e = escapeAt(v, at);
        if (e >= 0 && isEncodedMeta(e & 0xff)) return `encoded metacharacter in ${name.slice(0, 40)}`;
      }
    }
    return undefined;
  },

  /** Conflicting or duplicated framing headers (request smuggling); one pass over the raw header list. */
  framing_headers: (r) => {
    const raw = r.rawHeaders;
    let clCount = 0;
    let cl = '';
    let teCount = 0;
    let te = '';
    let hosts = 0;
    let conn = '';
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const n = raw[i]!;
      // names are compared only when their length can match
      if (n.length === 4) {
        if (isName(n, 'host')) hosts++;
      } else if (n.length === 10) {
        if (isName(n, 'connection')) conn = conn === '' ? raw[i + 1]! : `${conn},${raw[i + 1]!}`;
      } else if (n.length === 14) {
        if (isName(n, 'content-length') && clCount++ === 0) cl = raw[i + 1]!;
      } else if (n.length === 17) {
        if (isName(n, 'transfer-encoding')) te = teCount++ === 0 ? raw[i + 1]! : `${te},${raw[i + 1]!}`;
      }
    }
    if (clCount > 0 && teCount > 0) return 'Content-Length with Transfer-Encoding';
    if (clCount > 1 || (clCount === 1 && !/^\d+$/.test(cl.trim())))
      return 'several or malformed Content-Length';
    if (teCount > 0 && te.trim().toLowerCase() !== 'chunked') return 'Transfer-Encoding other than chunked';
    if (hosts > 1) return 'several Host headers';
    if (conn) {
      const tokens = conn
        .toLowerCase()
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);
      if (new Set(tokens).size !== tokens.length) return 'duplicate Connection options';
      if (tokens.includes('close') && tokens.includes('keep-alive')) return 'Connection close and keep-alive';
    }
    return undefined;
  },

  /** Missing or empty Host on HTTP/1.1, or a Host that is not host[:port]. */
  host_header: (r) => {
    const h = header(r, 'host');
    if (h === undefined) return r.httpVersion === '1.0' ? undefined : 'missing Host';
    // (a client sends the same Host on every request: the last one's verdict is remembered)
    if (h === lastHost) return lastHostNote;
    lastHostNote = h.trim() === '' ? 'empty Host' : HOST_SYNTAX.test(h) ? undefined : 'malformed Host';
    lastHost = h;
    return lastHostNote;
  },

  /** Absurd header counts. */
  header_count: (r, s) =>
    r.rawHeaders.length / 2 > s.maxHeaders ? `more than ${s.maxHeaders} headers` : undefined,

  /** Absurd argument counts (also stops padding attacks past the inspection cap). */
  arg_count: (r, s) =>
    r.argCount > s.maxArgs || r.truncated === true ? `more than ${s.maxArgs} arguments` : undefined,
  json_depth: (r) => (r.jsonTooDeep === true ? 'JSON nested too deep' : undefined),
  /** `{"constructor": {"prototype": …}}` in a JSON body. */
  prototype_path: (r) => (r.prototypePath === true ? 'constructor.prototype in the JSON body' : undefined),

  /**
   * A POST whose `_method` parameter names another method: Laravel and Symfony (query, form
   * or JSON), Rails and Express's method-override (form or query) then handle it as that
   * method, while the gateway's routes, roles and policies judged a POST. (The override
   * headers, `X-HTTP-Method-Override` and its kin, are never forwarded: gateway/proxy.ts.)
   */
  method_override: (r) =>
    r.methodOverride === undefined ? undefined : `_method asks for ${r.methodOverride.slice(0, 16)}`,

  /** A body on GET or HEAD. */
  body_on_get: (r) =>
    (r.method === 'GET' || r.method === 'HEAD') &&
    (r.bodyLength > 0 || header(r, 'transfer-encoding') !== undefined)
      ? `${r.method} with a body`
      : undefined,

  /**
   * A body sent with a content coding (`Content-Encoding: gzip`, `br`, `deflate` …): the
   * engine inspects the bytes as they arrive, so compressed content would reach a service
   * that decompresses request bodies without having been inspected. Only `identity` (the
   * absence of a coding) is accepted; a request without a body is left alone.
   */
  content_encoding: (r) => {
    if (r.bodyLength === 0 && header(r, 'transfer-encoding') === undefined) return undefined;
    const ce = header(r, 'content-encoding');
    if (ce === undefined) return undefined;
    for (const part of ce.split(',')) {
      const coding = part.trim().toLowerCase();
      if (coding !== '' && coding !== 'identity') return `body with content coding ${coding.slice(0, 20)}`;
    }
    return undefined;
  },

  /**
   * A non-empty body whose media type the route does not accept. An OPTIONS body is not
   * processed by the API (RFC 9110 §9.3.7 leaves its use open), so there only a missing or
   * malformed media type counts.
   */
  content_type: (r, s) => {
    if (r.bodyLength === 0) return undefined;
    if (r.mediaType === '') return 'body without Content-Type';
    if (r.method === 'OPTIONS')
      return MEDIA_TYPE.test(r.mediaType) ? undefined : `malformed media type ${r.mediaType.slice(0, 40)}`;
    return s.allowedContentTypes(r.mediaType)
      ? undefined
      : `media type ${r.mediaType.slice(0, 40)} not allowed`;
  },

  /** Content-Type parameters: one charset and one boundary at most, from the allowlist; no boundary outside multipart. */
  content_type_params: (r, s) => {
    const ct = header(r, 'content-type');
    if (ct === undefined) return undefined;
    const ps = params(ct);
    const charsets = ps.filter(([k]) => k === 'charset');
    if (charsets.length > 1) return 'several charsets';
    // parsers differ on which boundary counts (busboy the first, Werkzeug the last, Python's
    // email package `boundary*`): the body could be judged as other parts than the service reads
    if (ps.filter(([k]) => k === 'boundary' || k === 'boundary*').length > 1) return 'several boundaries';
    // a charset only matters for a body
    if (r.bodyLength > 0 && charsets[0] && !s.allowedCharsets.has(charsets[0][1].toLowerCase()))
      return 'charset not allowed';
    if (!r.mediaType.startsWith('multipart/') && ps.some(([k]) => k === 'boundary'))
      return 'boundary outside multipart';
    if (ps.some(([, v]) => /^[a-z]+\/[a-z0-9.+-]+$/i.test(v) && !r.mediaType.startsWith('multipart/')))
      return 'media type hidden in a parameter';
    return undefined;
  },

  /** Accept header charsets outside the allowlist (UTF-7 / UTF-16 response tricks). */
  accept_charset: (r, s) => {
    const a = header(r, 'accept');
    // a charset parameter needs `=`
    if (a === undefined || a.indexOf('=') < 0 || !CHARSET.test(a)) return undefined;
    for (const part of a.split(','))
      for (const [k, v] of params(part))
        if (k === 'charset' && !s.allowedCharsets.has(v.toLowerCase())) return 'Accept charset not allowed';
    return undefined;
  },

  /** Range: `bytes=` syntax, first <= last, at most maxRanges ranges (PDF readers excepted). */
  range_header: (r, s) => {
    const v = header(r, 'range') ?? header(r, 'request-range');
    if (v === undefined) return undefined;
    const m = /^\s*bytes\s*=\s*(.*)$/i.exec(v);
    // a range set without its unit (`1-2`) or under another unit is a probe; a value that is
    // neither (`Range: none`) is ignored by servers (RFC 9110 §14.2) and harmless
    if (!m) return /[\d=]/.test(v) ? 'Range without bytes unit' : undefined;
    const parts = m[1]!.split(',').map((x) => x.trim());
    for (const p of parts) {
      const pm = /^(\d*)-(\d*)$/.exec(p);
      if (!pm || (pm[1] === '' && pm[2] === '')) {
        if (p === '' && parts.length > 1) continue;
        return 'malformed range';
      }
      if (pm[1] !== '' && pm[2] !== '' && Number(pm[2]) < Number(pm[1])) return 'range end before start';
    }
    if (parts.length > s.maxRanges && !/\.pdf$/i.test(r.path)) return `more than ${s.maxRanges} ranges`;
    return undefined;
  },

  /** Cache-Control on a request: only request directives, well formed. */
  cache_control: (r) => {
    const v = header(r, 'cache-control');
    if (v === undefined || COMMON_CACHE_CONTROL.has(v)) return undefined;
    const parts = v.split(',').map((x) => x.trim());
    for (const p of parts) if (!CACHE_DIRECTIVE.test(p)) return 'invalid Cache-Control directive';
    return undefined;
  },

  /**
   * A present but empty Accept header. Real clients send none or a list; the exceptions (as
   * in CRS 920310) are OPTIONS, and WebKit/Android browsers and Microsoft's Business/Enterprise
   * clients, which are known to send it empty on some requests.
   */
  empty_accept: (r) => {
    if (r.method === 'OPTIONS') return undefined;
    const a = header(r, 'accept');
    if (a === undefined || a.trim() !== '') return undefined;
    const ua = header(r, 'user-agent');
    return ua !== undefined && EMPTY_ACCEPT_CLIENTS.test(ua) ? undefined : 'empty Accept';
  },
};
