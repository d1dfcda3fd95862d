import type { RequestBody } from './context.js';

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
 *   escape stays literal, as browsers and most frameworks do).
 * - `multipart/form-data` (when the full Content-Type with its boundary is given): text fields
 *   in `fields`, file parts as `{field, filename}` in `files`. The upload gate fills the same
 *   fields from its spool on upload routes.
 * - anything else: only `raw` and `mediaType`.
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
    // decode the valid escapes one by one, keep the invalid ones literal
    const bytes: number[] = [];
    for (let i = 0; i < plus.length; i++) {
      const c = plus.charCodeAt(i);
      if (c === 37 && /^[0-9a-fA-F]{2}$/.test(plus.slice(i + 1, i + 3))) {
        bytes.push(parseInt(plus.slice(i + 1, i + 3), 16));
        i += 2;
      } else if (c < 0x80) bytes.push(c);
      else for (const b of Buffer.from(plus[i]!, 'utf8')) bytes.push(b);
    }
    return Buffer.from(bytes).toString('utf8');
  }
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

const DISPOSITION_PARAM = /;\s*([a-z*]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\r\n]*))/gi;

/** Parse a buffered multipart/form-data body: text fields and file names (not file contents). */
export function parseMultipart(
  raw: Buffer,
  boundary: string,
): Pick<RequestBody, 'fields' | 'files'> & { error?: string } {
  const fields: [string, string][] = [];
  const files: { field: string; filename: string }[] = [];
  const text = raw.toString('latin1');
  const delim = `--${boundary}`;
  let pos = text.indexOf(delim);
  if (pos < 0) return { fields, files, error: 'multipart boundary not found' };
  let parts = 0;
  while (pos >= 0 && parts < 1000) {
    pos += delim.length;
    if (text.startsWith('--', pos)) break;
    const headEnd = text.indexOf('\r\n\r\n', pos);
    if (headEnd < 0) break;
    const next = text.indexOf(`\r\n${delim}`, headEnd + 4);
    const content = text.slice(headEnd + 4, next < 0 ? text.length : next);
    const headers = text.slice(pos, headEnd);
    const disp = /content-disposition\s*:\s*form-data([^\r\n]*)/i.exec(headers);
    if (disp) {
      let name = '';
      let filename: string | undefined;
      DISPOSITION_PARAM.lastIndex = 0;
      for (let m = DISPOSITION_PARAM.exec(disp[1]!); m; m = DISPOSITION_PARAM.exec(disp[1]!)) {
        const key = m[1]!.toLowerCase();
        const val = Buffer.from(m[2] ?? (m[3] ?? '').trim(), 'latin1').toString('utf8');
        if (key === 'name') name = val;
        else if (key === 'filename') filename = val;
      }
      if (filename !== undefined) files.push({ field: name, filename });
      else fields.push([name, Buffer.from(content, 'latin1').toString('utf8')]);
    }
    parts++;
    pos = next < 0 ? -1 : next + 2;
  }
  return { fields, files };
}

/**
 * Parse a buffered body by its media type. `contentType` (the whole header) is needed only
 * for multipart (its boundary).
 */
export function parseBody(mediaType: string, raw: Buffer | string, contentType?: string): RequestBody {
  const buf = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
  const body: RequestBody = { raw: buf, mediaType };
  if (buf.length === 0) return body;
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
    body.form = parseForm(buf.toString('utf8'));
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
    if (mp.error) body.parseError = mp.error;
  }
  return body;
}
