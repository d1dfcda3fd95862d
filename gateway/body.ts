import type { RequestBody } from './context.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decode application/x-www-form-urlencoded pairs (WHATWG rules: `+` is space). */
function parseForm(text: string): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of new URLSearchParams(text)) out.push([k, v]);
  return out;
}

/**
 * Parse a buffered body by its media type, as the live pipeline and `replay` both do:
 * JSON for application/json and any `+json` type (json-patch, merge-patch), pairs for
 * urlencoded forms. Invalid UTF-8 or JSON sets `parseError` and leaves the raw bytes.
 */
export function parseBody(mediaType: string, raw: Buffer): RequestBody {
  const body: RequestBody = { raw, mediaType };
  if (raw.length === 0) return body;
  const isJson = mediaType === 'application/json' || mediaType.endsWith('+json');
  const isForm = mediaType === 'application/x-www-form-urlencoded';
  if (!isJson && !isForm) return body;
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    body.parseError = 'invalid UTF-8';
    return body;
  }
  if (isJson) {
    try {
      body.json = JSON.parse(text) as unknown;
    } catch {
      body.parseError = 'invalid JSON';
    }
  } else body.form = parseForm(text);
  return body;
}
