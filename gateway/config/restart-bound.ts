import type { Generation } from './compile.js';
import { parseDuration } from './units.js';

/**
 * What only a restart changes, as the process started with it: the listeners' addresses,
 * whether the main listener speaks TLS (its certificates, minimum version and ciphers follow
 * reloads and rotation: see TlsManager), the admin listener, the store connection, the
 * audit log and the number of workers. The security score and the dashboard describe
 * these, and a reload that asks for other values says they wait for a restart.
 */
export interface RestartBound {
  readonly storeUrl: string;
  readonly workers: number;
  readonly listen: { readonly host: string; readonly port: number; readonly tls: boolean };
  readonly admin: { readonly enabled: boolean; readonly host: string; readonly port: number };
  readonly audit: { readonly enabled: boolean; readonly file: string; readonly accessSampleRate: number };
}

/** The restart-bound values of a generation (the ones a process started on it runs with). */
export function restartBoundOf(gen: Generation): RestartBound {
  const c = gen.config;
  return {
    storeUrl: c.store.url,
    workers: c.workers,
    listen: { host: c.listen.host, port: c.listen.port, tls: gen.listen.tls !== undefined },
    admin: { enabled: c.admin.enabled, host: c.admin.host, port: c.admin.port },
    audit: { enabled: c.audit.enabled, file: c.audit.file, accessSampleRate: c.audit.access_sample_rate },
  };
}

/**
 * Every setting a reload cannot apply, by key path, as comparable text (undefined: does
 * not apply, e.g. `listen.tls.http2` without TLS). The listener, admin listener, store and
 * audit log are opened once at start; workers are forked once.
 */
export function restartBoundSettings(gen: Generation): Readonly<Record<string, string | undefined>> {
  const c = gen.config;
  const l = gen.listen;
  const duration = (v: string) => {
    try {
      return String(parseDuration(v));
    } catch {
      return v;
    }
  };
  return {
    'listen.host': l.host,
    'listen.port': String(l.port),
    'listen.max_header_size': String(l.maxHeaderSize),
    'listen.tls': l.tls !== undefined ? 'on' : 'off',
    'listen.tls.http2': l.tls !== undefined ? String(l.tls.http2) : undefined,
    'listen.tls.max_concurrent_streams': l.tls !== undefined ? String(l.tls.maxConcurrentStreams) : undefined,
    'listen.redirect': l.redirect !== undefined ? 'on' : 'off',
    'listen.redirect.host': l.redirect?.host,
    'listen.redirect.port': l.redirect !== undefined ? String(l.redirect.port) : undefined,
    'admin.enabled': String(c.admin.enabled),
    'admin.host': c.admin.enabled ? c.admin.host : undefined,
    'admin.port': c.admin.enabled ? String(c.admin.port) : undefined,
    'store.url': c.store.url,
    'store.max_keys': String(c.store.max_keys),
    'store.timeout': duration(c.store.timeout),
    'store.prefix': c.store.prefix,
    'audit.enabled': String(c.audit.enabled),
    'audit.file': c.audit.enabled ? c.audit.file : undefined,
    'audit.access_sample_rate': c.audit.enabled ? String(c.audit.access_sample_rate) : undefined,
    workers: String(c.workers),
  };
}

/**
 * The key paths whose value in `next` differs from the one the process runs with: a
 * reload applies the rest of the file and reports these as waiting for a restart.
 */
export function pendingRestart(
  running: Readonly<Record<string, string | undefined>>,
  next: Readonly<Record<string, string | undefined>>,
): string[] {
  return Object.keys(running).filter(
    (k) => running[k] !== undefined && next[k] !== undefined && running[k] !== next[k],
  );
}
