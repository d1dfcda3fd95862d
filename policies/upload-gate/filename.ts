import { DANGEROUS_EXTENSIONS } from './kinds.js';

/** What sanitizing a client filename gave. */
export interface SanitizedName {
  /** the name forwarded upstream */
  readonly name: string;
  /** the final extension, lowercase, without the dot ('' when there is none) */
  readonly ext: string;
  /** the inner extensions (`receipt.php.png` → ['php']), lowercase */
  readonly inner: readonly string[];
}

export interface SanitizeOptions {
  /** 'NFC' keeps compatibility characters; 'NFKC' also folds them (fullwidth solidus → '/') */
  readonly normalization: 'NFC' | 'NFKC';
  /** longest name kept, in UTF-16 code units, extension included */
  readonly maxLength: number;
}

// C0/C1 controls, DEL, and format characters (bidi overrides such as U+202E that make
// "gpj.exe" look like "exe.jpg", zero-width joiners, BOM).
const CONTROL_OR_FORMAT = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;
// Characters that mean something to a shell, a filesystem or a header parameter.
const RESERVED = /[<>:"|?*\\/;%$`']/g;
// Windows device names: Windows reads `NUL.txt` and `NUL.tar.gz` as NUL too (the name up to
// the first dot, trailing spaces dropped), and the superscript digits of COM¹–COM³, LPT¹–LPT³
// (kept by NFC) as ports as well.
const WINDOWS_DEVICE = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]) *(\.|$)/i;

/**
 * Reduce a client filename to a safe basename: Unicode-normalised, the last path segment
 * only (both `/` and `\`), no control or format characters, no reserved characters, no
 * leading dots or spaces, no trailing dots or spaces, not a Windows device name, bounded
 * length with the extension kept. Returns '' as `name` when nothing is left.
 */
export function sanitizeFilename(raw: string, opts: SanitizeOptions): SanitizedName {
  // Normalise first, so that compatibility forms of '/' or '.' are folded before splitting.
  let s = raw.normalize(opts.normalization);
  s = s.replace(CONTROL_OR_FORMAT, '');
  const slash = Math.max(s.lastIndexOf('/'), s.lastIndexOf('\\'));
  if (slash >= 0) s = s.slice(slash + 1);
  s = s.replace(RESERVED, '_').replace(/\s+/g, ' ');
  s = s.replace(/^[\s.]+/, '').replace(/[\s.]+$/, '');
  const dot = s.lastIndexOf('.');
  let stem = dot > 0 ? s.slice(0, dot) : s;
  let ext = dot > 0 ? s.slice(dot + 1) : '';
  stem = stem.replace(/[\s.]+$/, '');
  if (WINDOWS_DEVICE.test(stem)) stem = `_${stem}`;
  const inner = innerExtensions(stem);
  ext = ext.trim();
  if (stem === '' && ext !== '') stem = 'upload';
  const suffix = ext === '' ? '' : `.${ext}`;
  const room = opts.maxLength - suffix.length;
  if (room < 1) return { name: '', ext: ext.toLowerCase(), inner };
  if (stem.length > room) {
    // cut on a code point boundary, never inside a surrogate pair
    let cut = '';
    for (const ch of stem) {
      if (cut.length + ch.length > room) break;
      cut += ch;
    }
    stem = cut;
    stem = stem.replace(/[\s.]+$/, '');
    // the cut can end the stem on a new inner extension ('x.phpAAAA' cut to 'x.php'): the
    // forwarded name is what a server will see, so its inner extensions count too
    for (const e of innerExtensions(stem)) if (!inner.includes(e)) inner.push(e);
  }
  const name = stem === '' ? '' : `${stem}${suffix}`;
  return { name, ext: ext.toLowerCase(), inner };
}

/** The dot-separated segments of a stem after its first (`a.php.x` → ['php', 'x']), lowercase. */
function innerExtensions(stem: string): string[] {
  return stem
    .split('.')
    .slice(1)
    .map((e) => e.trim().toLowerCase())
    .filter((e) => e !== '');
}

/** The inner extensions that are dangerous (`receipt.php.png` → ['php']). */
export function dangerousInner(inner: readonly string[]): string[] {
  return inner.filter((e) => DANGEROUS_EXTENSIONS.has(e));
}
