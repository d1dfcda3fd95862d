/**
 * The admin dashboard page (`GET /` on the admin listener): `dashboard.html`, one
 * self-contained file (inline CSS and JS, no CDN), served with a strict
 * Content-Security-Policy that allows exactly its inline script and style by hash and
 * lets it fetch only from its own origin.
 */
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';

export interface DashboardPage {
  body: Buffer;
  /** headers to send with the page (content type, CSP, no caching, no framing) */
  headers: Record<string, string>;
}

/**
 * Where `dashboard.html` is looked for: next to this module (source tree, or `dist/`
 * when the build copies it), then in the source tree from `dist/gateway/admin/`.
 */
export function dashboardHtmlCandidates(): string[] {
  return [
    fileURLToPath(new URL('./dashboard.html', import.meta.url)),
    fileURLToPath(new URL('../../../gateway/admin/dashboard.html', import.meta.url)),
  ];
}

function sha256(s: string): string {
  return `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;
}

/** The page with its headers, computed from HTML text (exported for tests). */
export function dashboardPageFromHtml(html: string): DashboardPage {
  const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => sha256(m[1]!));
  const styles = [...html.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => sha256(m[1]!));
  const csp = [
    "default-src 'none'",
    `script-src ${scripts.join(' ') || "'none'"}`,
    `style-src ${styles.join(' ') || "'none'"}`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return {
    body: Buffer.from(html, 'utf8'),
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': csp,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
    },
  };
}

/** Read the page once (at start); throws with the paths tried when it is missing. */
export function loadDashboardPage(candidates: readonly string[] = dashboardHtmlCandidates()): DashboardPage {
  for (const file of candidates) {
    try {
      return dashboardPageFromHtml(fs.readFileSync(file, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  throw new Error(`admin dashboard page not found (looked in ${candidates.join(', ')})`);
}
