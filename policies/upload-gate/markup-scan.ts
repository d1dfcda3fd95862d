/**
 * Looks for markup and server-side script openers inside a file (polyglots: a GIF that
 * is also an HTML page, a JPEG with `<?php` in a comment, a PNG with `<script>` in a text
 * chunk). Case-insensitive, across chunk boundaries. Each marker must be followed by a
 * delimiter, so that random compressed bytes practically never match: the shortest marker
 * with its delimiter is five fixed bytes. For a tag, the delimiters are every byte that ends
 * a tag name in the HTML tokenizer (whitespace including form feed, `>`, `/`: browsers read
 * `<svg/onload=…>` and `<script\f>` as tags); for `<?php`, PHP's own (space, tab, newline).
 */

/** What ends a tag name in the HTML tokenizer (WHATWG "tag name state"); CR becomes LF. */
const TAG_END = ' \t\n\f\r>/';

const MARKERS: readonly { readonly text: Buffer; readonly label: string; readonly delims: string }[] = [
  ['<script', 'script', TAG_END],
  ['<html', 'html', TAG_END],
  ['<!doctype html', 'html', ' \t\n\f\r>'],
  ['<svg', 'svg', TAG_END],
  ['<iframe', 'html', TAG_END],
  ['<object', 'html', TAG_END],
  ['<embed', 'html', TAG_END],
  ['<body', 'html', TAG_END],
  ['<?php', 'php', ' \t\r\n'],
  ['<jsp:', 'server script', ''],
].map(([text, label, delims]) => ({ text: Buffer.from(text!, 'latin1'), label: label!, delims: delims! }));

const LONGEST = Math.max(...MARKERS.map((m) => m.text.length)) + 1;
const DELIM_SETS = MARKERS.map((m) => new Set([...m.delims].map((c) => c.charCodeAt(0))));

export class MarkupScanner {
  /** the last bytes seen, whose markers may continue into the next chunk */
  private carry: Buffer = Buffer.alloc(0);
  /** the first marker found */
  found: string | undefined;

  feed(chunk: Buffer): void {
    if (this.found !== undefined) return;
    // the seam: openers that began in the carry and need the chunk's first bytes
    if (this.carry.length > 0)
      this.scan(Buffer.concat([this.carry, chunk.subarray(0, LONGEST)]), this.carry.length, false);
    // the chunk itself, without copying it (64 KB chunks, 16 MB files)
    this.scan(chunk, chunk.length, false);
    this.carry =
      chunk.length >= LONGEST
        ? Buffer.from(chunk.subarray(chunk.length - LONGEST))
        : Buffer.from(Buffer.concat([this.carry, chunk]).subarray(-LONGEST));
  }

  end(): void {
    if (this.found === undefined) this.scan(this.carry, this.carry.length, true);
  }

  /** Check every '<' before `limit`; one too close to the end waits for more bytes unless `final`. */
  private scan(buf: Buffer, limit: number, final: boolean): void {
    if (this.found !== undefined) return;
    let i = buf.indexOf(60 /* < */);
    while (i >= 0 && i < limit) {
      if (!final && buf.length - i < LONGEST) return; // decided when more bytes arrive
      for (let m = 0; m < MARKERS.length; m++) {
        const mk = MARKERS[m]!;
        if (matchAt(buf, i, mk.text)) {
          const next = buf[i + mk.text.length];
          const delims = DELIM_SETS[m]!;
          if (delims.size === 0 || (next !== undefined && delims.has(next))) {
            this.found = mk.label;
            return;
          }
        }
      }
      i = buf.indexOf(60, i + 1);
    }
  }
}

function matchAt(buf: Buffer, at: number, text: Buffer): boolean {
  if (at + text.length > buf.length) return false;
  for (let k = 0; k < text.length; k++) {
    let c = buf[at + k]!;
    if (c >= 65 && c <= 90) c += 32;
    if (c !== text[k]) return false;
  }
  return true;
}
