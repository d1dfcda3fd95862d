import { isUtf8 } from 'node:buffer';
import type { RequestBody } from './context.js';
import { utf8Lenient } from '../policies/pattern-block/transforms.js';

/**
 * Body parsing shared by the live pipeline and by offline scoring (`replay`, the pattern
 * engine's corpus test), so both see the same values.
 *
 * - `application/json` and every `+json` type (`application/merge-patch+json`,
 *   `application/json-patch+json`, …): parsed with JSON.parse; invalid UTF-8 or JSON sets
 *   `parseError` and leaves `json` undefined. So does an object with the same member name
 *   twice: RFC 8259 leaves its meaning to the parser (JSON.parse keeps the last, others the
 *   first), so a policy could judge one value while the service uses the other.
 * - `application/x-www-form-urlencoded`: decoded name/value pairs (`+` is a space; an invalid
 *   escape stays literal, as browsers and most frameworks do). Bytes that are not valid UTF-8,
 *   raw or escaped, are read leniently (see {@link decodeText}). A `_charset_` field naming a
 *   charset under which ASCII bytes do not stand for themselves sets `parseError`.
 * - `multipart/form-data` (when the full Content-Type with its boundary is given): text fields
 *   in `fields`, file parts as `{field, filename}` in `files`, text parts declared as JSON also
 *   parsed in `jsonParts` (one that does not parse sets `parseError`). The upload gate fills the same
 *   fields from its spool on upload routes.
 * - anything else: only `raw` and `mediaType`.
 *
 * A body of any other type than JSON that is valid JSON (an object, an array or a string, in
 * UTF-8) is also parsed into `jsonSniffed`, for the pattern engine to judge as JSON: a service
 * that parses its bodies as JSON whatever the Content-Type would read a form-labelled
 * `{"merchant":"\u002e\u002e\u002f…"}` as `../…`, which the form parse leaves escaped. Its
 * duplicate member names set `parseError`, as in a JSON body.
 */

/** Media type of a Content-Type header value: lowercased, parameters removed, '' when absent. */
export function mediaTypeOf(contentType: string | undefined): string {
  if (contentType === undefined) return '';
  const semi = contentType.indexOf(';');
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

/** True for `application/json` and any `*\/*+json` media type. */
export function isJsonMediaType(mediaType: string): boolean {
  return mediaType === 'application/json' || (mediaType.endsWith('+json') && mediaType.includes('/'));
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Text of form and multipart bytes as the pattern engine should judge it: valid UTF-8 as it
 * is; otherwise read leniently, like the `url_decode` transform reads the query (an overlong
 * form such as `C0 AE` is the `.` that lenient decoders make of it, an invalid byte is the
 * Latin-1 character of the same value). A replacement character instead would hide
 * `%C0%AE%C0%AE%C0%AF` (`../`) in a form body while the same value in the query is refused.
 */
function decodeText(bytes: Buffer): string {
  return isUtf8(bytes) ? bytes.toString('utf8') : utf8Lenient(bytes);
}

/**
 * Whether a valid JSON text (one JSON.parse accepted) has an object with the same member
 * name twice, names compared after unescaping. One pass; a name is unescaped (JSON.parse of
 * the string alone) only when it holds a backslash.
 */
export function hasDuplicateKeys(text: string): boolean {
  // the open containers: the names seen in each object, undefined for an array
  const open: (Set<string> | undefined)[] = [];
  let nameNext = false;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      let escaped = false;
      for (; j < n; j++) {
        const d = text.charCodeAt(j);
        if (d === 0x5c) {
          escaped = true;
          j++;
        } else if (d === 0x22) break;
      }
      if (nameNext) {
        const names = open[open.length - 1]!;
        const name = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : text.slice(i + 1, j);
        if (names.has(name)) return true;
        names.add(name);
        nameNext = false;
      }
      i = j;
    } else if (c === 0x7b) {
      open.push(new Set());
      nameNext = true;
    } else if (c === 0x5b) open.push(undefined);
    else if (c === 0x7d || c === 0x5d) {
      open.pop();
      nameNext = false;
    } else if (c === 0x2c) nameNext = open[open.length - 1] !== undefined;
  }
  return false;
}

function decodeComponent(s: string): string {
  const plus = s.indexOf('+') >= 0 ? s.replace(/\+/g, ' ') : s;
  if (plus.indexOf('%') < 0) return plus;
  try {
    return decodeURIComponent(plus);
  } catch {
    // decode the valid escapes one by one, keep the invalid ones literal; the bytes are read
    // leniently (an overlong `%C0%AE` is a `.`), see decodeText
    const bytes: number[] = [];
    for (let i = 0; i < plus.length; i++) {
      const c = plus.charCodeAt(i);
      if (c === 37 && /^[0-9a-fA-F]{2}$/.test(plus.slice(i + 1, i + 3))) {
        bytes.push(parseInt(plus.slice(i + 1, i + 3), 16));
        i += 2;
      } else if (c < 0x80) bytes.push(c);
      else {
        const cp = plus.codePointAt(i)!;
        if (cp > 0xffff) i++;
        for (const b of Buffer.from(String.fromCodePoint(cp), 'utf8')) bytes.push(b);
      }
    }
    return decodeText(Buffer.from(bytes));
  }
}

/**
 * A field name as a case-insensitive binder matches it: Go's encoding/json, ASP.NET Core and
 * Jackson with case-insensitive properties bind `PASSWORD` (and, in Go, `paſſword` with the long
 * s, or a Kelvin sign for `k`) to the `password` property, the last occurrence winning.
 */
export function foldFieldName(name: string): string {
  return name.toUpperCase().toLowerCase();
}

/** Decode an `application/x-www-form-urlencoded` string into pairs. */
export function parseForm(text: string): [string, string][] {
  const out: [string, string][] = [];
  if (text === '') return out;
  for (const part of text.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    out.push(
      eq < 0
        ? [decodeComponent(part), '']
        : [decodeComponent(part.slice(0, eq)), decodeComponent(part.slice(eq + 1))],
    );
  }
  return out;
}

/** The `boundary` parameter of a multipart Content-Type, or undefined. */
export function boundaryOf(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  const m = /;\s*boundary\s*=\s*(?:"([^"]{1,200})"|([^;\s]{1,200}))/i.exec(contentType);
  return m ? (m[1] ?? m[2]) : undefined;
}

/** Most parts a multipart body may have; more is refused rather than left uninspected. */
export const MAX_MULTIPART_PARTS = 1000;

/** Part charsets under which every ASCII byte stands for itself and nothing else does. */
const ASCII_SAFE_CHARSETS = new Set([
  'utf-8',
  'utf8',
  'us-ascii',
  'ascii',
  'iso-8859-1',
  'latin1',
  'iso-8859-15',
  'windows-1252',
]);

/**
 * A `_charset_` field: its value is the charset of the other fields for parsers that follow
 * RFC 7578 §4.6 (and HTML forms that send one), so under UTF-7 or UTF-16 the service would read
 * `+ADw-script+AD4-` as `<script>` where the gateway judged ASCII.
 */
function isCharsetField(name: string): boolean {
  return name.length === 9 && name.toLowerCase() === '_charset_';
}

/**
 * Whether a form or multipart field is a `_charset_` field naming a charset under which ASCII
 * bytes do not stand for themselves (a `body-parse-error`; the upload gate refuses it too).
 */
export function isUnsafeCharsetField(name: string, value: string): boolean {
  return isCharsetField(name) && !ASCII_SAFE_CHARSETS.has(value.trim().toLowerCase());
}

/** Content-Transfer-Encoding values that leave the part's bytes as they are (RFC 2045 §6.1). */
const IDENTITY_TRANSFER_ENCODINGS = new Set(['7bit', '8bit', 'binary']);

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * The parameters of a Content-Disposition value after its type, lowercased names, quoted
 * strings unescaped (as busboy does), or an error. A parameter given twice is an error: one
 * parser takes the first (busboy), another the last, so the gateway cannot know which the
 * service uses.
 */
function dispositionParams(s: string): Map<string, string> | string {
  const params = new Map<string, string>();
  let i = 0;
  const n = s.length;
  const skipWs = () => {
    while (i < n && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  for (;;) {
    skipWs();
    if (i >= n) return params;
    if (s[i] !== ';') return 'malformed Content-Disposition';
    i++;
    skipWs();
    const eq = s.indexOf('=', i);
    if (eq < 0) return 'malformed Content-Disposition';
    const name = s.slice(i, eq).trim().toLowerCase();
    if (!TOKEN.test(name)) return 'malformed Content-Disposition';
    i = eq + 1;
    skipWs();
    let value = '';
    if (s[i] === '"') {
      i++;
      let closed = false;
      for (; i < n; i++) {
        const c = s[i]!;
        if (c === '\\' && i + 1 < n) value += s[++i];
        else if (c === '"') {
          closed = true;
          i++;
          break;
        } else value += c;
      }
      if (!closed) return 'malformed Content-Disposition';
    } else {
      const start = i;
      while (i < n && s[i] !== ';' && s[i] !== ' ' && s[i] !== '\t') i++;
      value = s.slice(start, i);
    }
    if (params.has(name)) return `Content-Disposition parameter "${name}" given twice`;
    params.set(name, value);
  }
}

/** An RFC 8187 (RFC 5987) extended value, `charset'lang'pct-encoded`, decoded; undefined if invalid. */
function extendedValue(v: string): string | undefined {
  const m = /^([!#$&+^`{}~0-9A-Za-z-]*)'[^']*'((?:[!#$&+.^_`|~0-9A-Za-z-]|%[0-9A-Fa-f]{2})*)$/.exec(v);
  if (!m) return undefined;
  const charset = m[1]!.toLowerCase();
  const bytes = Buffer.from(
    m[2]!.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))),
    'latin1',
  );
  if (charset === 'utf-8') {
    try {
      return utf8.decode(bytes);
    } catch {
      return undefined;
    }
  }
  return charset === 'iso-8859-1' ? bytes.toString('latin1') : undefined;
}

/** The charset parameter of a part's Content-Type, lowercased, or undefined. */
function charsetOf(contentType: string): string | undefined {
  const m = /;\s*charset\s*=\s*(?:"([^"]*)"|([^;\s]*))/i.exec(contentType);
  return m ? (m[1] ?? m[2] ?? '').toLowerCase() : undefined;
}

/**
 * Parse a buffered multipart/form-data body: text fields and file names (not file contents).
 *
 * The gateway must judge what the service's parser will see, so anything two parsers could
 * read differently is an `error` (and refused by the request inspection as a body that does
 * not parse) rather than guessed at: delimiters and part headers not on CRLF lines (RFC 2046
 * §5.1.1), a body without its closing delimiter, a part without a `form-data` disposition
 * and a name (RFC 7578 §4.2), a header or a disposition parameter given twice, a header
 * folded over lines, a Content-Transfer-Encoding that changes the bytes (base64,
 * quoted-printable: deprecated by RFC 7578 §4.7, still decoded by some parsers), a part
 * charset under which ASCII bytes do not stand for themselves (UTF-16, ISO-2022-JP, UTF-7), a
 * `_charset_` field naming one (RFC 7578 §4.6), and more than {@link MAX_MULTIPART_PARTS} parts. `filename*` (RFC 8187) is the file name
 * when present, as busboy and RFC 6266 §4.3 take it; a different plain `filename` beside it
 * is listed too, so both are inspected.
 */
export function parseMultipart(
  raw: Buffer,
  boundary: string,
): Pick<RequestBody, 'fields' | 'files' | 'jsonParts'> & { error?: string } {
  const fields: [string, string][] = [];
  const files: { field: string; filename: string }[] = [];
  const jsonParts: { field: string; json: unknown }[] = [];
  const fail = (error: string) => ({ fields, files, jsonParts, error });
  const text = raw.toString('latin1');
  const delim = `--${boundary}`;
  // the first delimiter opens the body or follows a CRLF (after a preamble)
  let pos = text.startsWith(delim) ? 0 : text.indexOf(`\r\n${delim}`);
  if (pos < 0) return fail('multipart boundary not found');
  if (pos > 0) pos += 2;
  for (let parts = 0; ; parts++) {
    pos += delim.length;
    // the close delimiter; what follows it (the epilogue) is ignored by every parser
    if (text.startsWith('--', pos)) return { fields, files, jsonParts };
    const eol = text.indexOf('\r\n', pos);
    if (eol < 0 || !/^[ \t]*$/.test(text.slice(pos, eol))) return fail('malformed multipart delimiter line');
    if (parts === MAX_MULTIPART_PARTS) return fail('too many multipart parts');
    const headEnd = text.indexOf('\r\n\r\n', eol);
    if (headEnd < 0) return fail('multipart part headers not terminated');
    const next = text.indexOf(`\r\n${delim}`, headEnd + 4);
    if (next < 0) return fail('multipart body without closing delimiter');
    const headers = new Map<string, string>();
    const head = text.slice(eol + 2, headEnd);
    for (const line of head === '' ? [] : head.split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon <= 0 || /[\r\n]/.test(line)) return fail('malformed multipart part header');
      const hname = line.slice(0, colon).toLowerCase();
      if (!TOKEN.test(hname)) return fail('malformed multipart part header');
      if (headers.has(hname)) return fail(`multipart part header "${hname}" given twice`);
      headers.set(hname, decodeText(Buffer.from(line.slice(colon + 1).trim(), 'latin1')));
    }
    const disp = headers.get('content-disposition');
    const type = disp === undefined ? undefined : /^form-data(?=$|[ \t;])/i.exec(disp);
    if (disp === undefined || !type) return fail('multipart part without a form-data disposition');
    const params = dispositionParams(disp.slice(type[0].length));
    if (typeof params === 'string') return fail(params);
    const name = params.get('name');
    if (name === undefined) return fail('multipart part without a name');
    const cte = headers.get('content-transfer-encoding');
    if (cte !== undefined && !IDENTITY_TRANSFER_ENCODINGS.has(cte.toLowerCase()))
      return fail('multipart part with a Content-Transfer-Encoding');
    const charset = charsetOf(headers.get('content-type') ?? '');
    if (charset !== undefined && !ASCII_SAFE_CHARSETS.has(charset))
      return fail('multipart part charset not supported');
    const plain = params.get('filename');
    const extRaw = params.get('filename*');
    const ext = extRaw === undefined ? undefined : extendedValue(extRaw);
    if (extRaw !== undefined && ext === undefined) return fail('malformed filename* in a multipart part');
    if (ext !== undefined) {
      files.push({ field: name, filename: ext });
      if (plain !== undefined && plain !== ext) files.push({ field: name, filename: plain });
    } else if (plain !== undefined) files.push({ field: name, filename: plain });
    // A part with an empty file name is a text value for Go's mime/multipart (ReadForm keeps a
    // part as a value when FileName() is ""), so its content is judged as one.
    if ((ext === undefined || ext === '') && (plain === undefined || plain === '')) {
      const content = Buffer.from(text.slice(headEnd + 4, next), 'latin1');
      const utf = charset === undefined || charset === 'utf-8' || charset === 'utf8';
      const value = utf ? decodeText(content) : content.toString('latin1');
      // RFC 7578 §4.6: `_charset_` sets the charset of the text fields that name none
      if (isUnsafeCharsetField(name, value))
        return fail('multipart _charset_ field with a charset not supported');
      fields.push([name, value]);
      if (content.length > 0 && isJsonMediaType(mediaTypeOf(headers.get('content-type')))) {
        // judged as JSON too: a service binding the part to an object decodes its escapes
        let json: unknown;
        try {
          json = JSON.parse(utf8.decode(content)) as unknown;
        } catch {
          return fail('multipart JSON part that does not parse');
        }
        if (hasDuplicateKeys(value)) return fail('duplicate key in a multipart JSON part');
        jsonParts.push({ field: name, json });
      }
    }
    pos = next + 2;
  }
}

/** Whether a byte is JSON whitespace (RFC 8259 §2). */
function isJsonSpace(b: number): boolean {
  return b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
}

/** Fill `jsonSniffed` when a body of a non-JSON type is a JSON object, array or string (see {@link parseBody}). */
function sniffJson(body: RequestBody, buf: Buffer): void {
  let i = 0;
  // a UTF-8 byte order mark, which JSON parsers commonly skip
  if (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) i = 3;
  while (i < buf.length && isJsonSpace(buf[i]!)) i++;
  const first = buf[i];
  if (first !== 0x7b && first !== 0x5b && first !== 0x22) return;
  let text: string;
  let json: unknown;
  try {
    text = utf8.decode(buf);
    json = JSON.parse(text) as unknown;
  } catch {
    return;
  }
  if (hasDuplicateKeys(text)) body.parseError = 'duplicate key in a JSON object';
  else body.jsonSniffed = json;
}

/**
 * Parse a buffered body by its media type. `contentType` (the whole header) is needed only
 * for multipart (its boundary).
 */
export function parseBody(mediaType: string, raw: Buffer | string, contentType?: string): RequestBody {
  const buf = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
  const body: RequestBody = { raw: buf, mediaType };
  if (buf.length === 0) return body;
  if (!isJsonMediaType(mediaType)) sniffJson(body, buf);
  if (isJsonMediaType(mediaType)) {
    let text: string;
    try {
      text = utf8.decode(buf);
    } catch {
      body.parseError = 'invalid UTF-8';
      return body;
    }
    let json: unknown;
    try {
      json = JSON.parse(text) as unknown;
    } catch {
      body.parseError = 'invalid JSON';
      return body;
    }
    if (hasDuplicateKeys(text)) body.parseError = 'duplicate key in a JSON object';
    else body.json = json;
    return body;
  }
  if (mediaType === 'application/x-www-form-urlencoded') {
    body.form = parseForm(decodeText(buf));
    // (WHATWG HTML §4.10.21.8; read by Apache Sling, Tomcat and Jetty in multipart bodies)
    if (body.form.some(([k, v]) => isUnsafeCharsetField(k, v)))
      body.parseError = 'form _charset_ field with a charset not supported';
    return body;
  }
  if (mediaType === 'multipart/form-data') {
    const boundary = boundaryOf(contentType);
    if (boundary === undefined) {
      body.parseError = 'multipart without boundary';
      return body;
    }
    const mp = parseMultipart(buf, boundary);
    body.fields = mp.fields;
    body.files = mp.files;
    if (mp.jsonParts !== undefined && mp.jsonParts.length > 0) body.jsonParts = mp.jsonParts;
    if (mp.error) body.parseError = mp.error;
  }
  return body;
}
