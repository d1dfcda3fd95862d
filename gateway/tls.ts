import fs from 'node:fs';
import fsp from 'node:fs/promises';
import https from 'node:https';
import http2 from 'node:http2';
import type { IncomingHttpHeaders } from 'node:http';
import path from 'node:path';
import tls from 'node:tls';
import type net from 'node:net';
import { X509Certificate, constants, createPrivateKey, type KeyObject } from 'node:crypto';
import type { Metrics } from './observability/metrics.js';
import type { AuditLog } from './observability/audit.js';
import type { Deny, OpsLogger } from './policy.js';

/**
 * TLS termination for the main listener (edge mode): loading and checking PEM
 * certificates, SNI selection, and hot rotation. Certificate files are watched; a
 * changed file is loaded, checked (parses, key matches, not expired, covers its SNI
 * names) and swapped in with `server.setSecureContext()` (new handshakes use it, open
 * connections keep theirs). A bad new file keeps the old certificate serving and is
 * logged and counted in `gateway_tls_reloads_total{result="error"}`.
 */

/** One configured certificate (the first is the default one). */
export interface TlsCertificateSettings {
  /** absolute paths */
  readonly certFile: string;
  readonly keyFile: string;
  /** SNI names (lowercase); empty for the default certificate */
  readonly servernames: readonly string[];
  /** where it is in gateway.yaml, for error messages */
  readonly at: readonly (string | number)[];
}

/** A certificate read from disk and checked. */
export interface LoadedCertificate {
  readonly settings: TlsCertificateSettings;
  readonly cert: Buffer;
  readonly key: Buffer;
  /** ms since the epoch */
  readonly notAfter: number;
  readonly notBefore: number;
  readonly subject: string;
  /** DNS and IP subject alternative names */
  readonly altNames: readonly string[];
  /** the metric label: `default` or the first SNI name */
  readonly label: string;
  /** `ec`, `rsa`, `ed25519`…: SNI certificates must share the default one's (see compileTls) */
  readonly keyType: string;
}

/** `listen.tls` compiled: settings plus the certificates loaded when the config was compiled. */
export interface TlsSettings {
  readonly certificates: readonly LoadedCertificate[];
  readonly minVersion: tls.SecureVersion;
  readonly ciphers: string;
  readonly sessionTimeoutSeconds: number;
  readonly handshakeTimeoutMs: number;
  readonly http2: boolean;
  readonly maxConcurrentStreams: number;
  readonly idleTimeoutMs: number;
}

/** A problem with one file or setting, with the key path it belongs to. */
export class TlsConfigError extends Error {
  constructor(
    readonly at: readonly (string | number)[],
    message: string,
  ) {
    super(message);
    this.name = 'TlsConfigError';
  }
}

function label(s: TlsCertificateSettings): string {
  return s.servernames[0] ?? 'default';
}

/** Subject alternative names of a certificate: `DNS:a, IP Address:1.2.3.4` → [a, 1.2.3.4]. */
export function altNamesOf(x: X509Certificate): string[] {
  const san = x.subjectAltName;
  if (san === undefined) return [];
  return san
    .split(/,\s*/)
    .map((e) => /^(?:DNS|IP Address):(.+)$/.exec(e.trim())?.[1])
    .filter((v): v is string => v !== undefined)
    .map((v) => v.toLowerCase());
}

async function readPem(file: string, at: readonly (string | number)[], what: string): Promise<Buffer> {
  try {
    return await fsp.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new TlsConfigError(
      at,
      `cannot read the ${what} file "${file}" (${code === 'ENOENT' ? 'not found' : code})`,
    );
  }
}

/**
 * Read and check one certificate and its key: the PEM parses, the key is a private key
 * matching the leaf, the certificate is within its validity period, and it covers the
 * SNI names it is configured for.
 */
export async function loadCertificate(s: TlsCertificateSettings, now: number): Promise<LoadedCertificate> {
  const certAt = [...s.at, 'cert_file'];
  const keyAt = [...s.at, 'key_file'];
  const [cert, key] = await Promise.all([
    readPem(s.certFile, certAt, 'certificate'),
    readPem(s.keyFile, keyAt, 'key'),
  ]);
  if (!cert.includes('-----BEGIN CERTIFICATE-----'))
    throw new TlsConfigError(certAt, `"${s.certFile}" holds no PEM certificate`);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new TlsConfigError(
      certAt,
      `"${s.certFile}" is not a valid certificate (${(err as Error).message})`,
    );
  }
  let pk: KeyObject;
  try {
    pk = createPrivateKey(key);
  } catch (err) {
    const msg = (err as Error).message;
    throw new TlsConfigError(
      keyAt,
      /passphrase|encrypted/i.test(msg)
        ? `"${s.keyFile}" is encrypted; give an unencrypted PEM key`
        : `"${s.keyFile}" is not a PEM private key (${msg})`,
    );
  }
  if (!x509.checkPrivateKey(pk))
    throw new TlsConfigError(
      keyAt,
      `the key in "${s.keyFile}" does not match the certificate in "${s.certFile}"`,
    );
  const notAfter = Date.parse(x509.validTo);
  const notBefore = Date.parse(x509.validFrom);
  if (notAfter <= now)
    throw new TlsConfigError(
      certAt,
      `the certificate in "${s.certFile}" expired on ${new Date(notAfter).toISOString()}`,
    );
  if (notBefore > now)
    throw new TlsConfigError(
      certAt,
      `the certificate in "${s.certFile}" is not valid before ${new Date(notBefore).toISOString()}`,
    );
  s.servernames.forEach((name, i) => {
    const probe = name.startsWith('*.') ? `sni-probe${name.slice(1)}` : name;
    if (x509.checkHost(probe, { wildcards: true, subject: 'default' }) === undefined) {
      throw new TlsConfigError(
        [...s.at, 'servernames', i],
        `the certificate in "${s.certFile}" does not cover "${name}"`,
      );
    }
  });
  // The same check OpenSSL makes when the context is built (e.g. an unusable key type).
  try {
    tls.createSecureContext({ cert, key });
  } catch (err) {
    throw new TlsConfigError(
      certAt,
      `OpenSSL refuses "${s.certFile}" with its key (${(err as Error).message})`,
    );
  }
  return {
    settings: s,
    cert,
    key,
    notAfter,
    notBefore,
    subject: x509.subject.replace(/\n/g, ', '),
    altNames: altNamesOf(x509),
    label: label(s),
    keyType: pk.asymmetricKeyType ?? 'unknown',
  };
}

/** The secure-context options shared by the default and the SNI contexts. */
function contextOptions(t: TlsSettings, c: LoadedCertificate): tls.SecureContextOptions {
  return {
    cert: c.cert,
    key: c.key,
    minVersion: t.minVersion,
    ciphers: t.ciphers,
    sessionTimeout: t.sessionTimeoutSeconds,
    // No renegotiation (TLS 1.2 and below): a client-started handshake on an open connection
    // costs the server a handshake each time (a known CPU drain), HTTP/2 forbids it (RFC 9113
    // §9.2.1), and Node answers it on an HTTP/2 connection by tearing the session down from
    // inside OpenSSL's callback. NGINX refuses it too. The client gets a no_renegotiation alert.
    secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
    // Below TLS 1.2 OpenSSL 3 needs security level 0 for the old SHA-1 based suites.
    ...(t.minVersion === 'TLSv1' || t.minVersion === 'TLSv1.1'
      ? { ciphers: `${t.ciphers}:@SECLEVEL=0` }
      : {}),
  };
}

/** Check that the cipher list and version settings build a context (config validation). */
export function checkTlsOptions(t: Omit<TlsSettings, 'certificates'>, c: LoadedCertificate): void {
  try {
    tls.createSecureContext(contextOptions({ ...t, certificates: [c] }, c));
  } catch (err) {
    throw new TlsConfigError(
      ['listen', 'tls', 'ciphers'],
      `OpenSSL refuses the cipher list (${(err as Error).message})`,
    );
  }
}

/** SNI lookup: exact names first, then `*.parent` for one label. */
class SniTable {
  private readonly exact = new Map<string, tls.SecureContext>();
  private readonly wildcard = new Map<string, tls.SecureContext>();

  constructor(t: TlsSettings) {
    for (const c of t.certificates.slice(1)) {
      const ctx = tls.createSecureContext(contextOptions(t, c));
      for (const name of c.settings.servernames) {
        if (name.startsWith('*.')) {
          if (!this.wildcard.has(name.slice(2))) this.wildcard.set(name.slice(2), ctx);
        } else if (!this.exact.has(name)) this.exact.set(name, ctx);
      }
    }
  }

  get empty(): boolean {
    return this.exact.size === 0 && this.wildcard.size === 0;
  }

  lookup(servername: string): tls.SecureContext | undefined {
    const name = servername.toLowerCase().replace(/\.$/, '');
    const hit = this.exact.get(name);
    if (hit !== undefined) return hit;
    const dot = name.indexOf('.');
    return dot === -1 ? undefined : this.wildcard.get(name.slice(dot + 1));
  }
}

/** The server options of the TLS listener for the given settings (used once, at start). */
export function serverTlsOptions(
  t: TlsSettings,
  sni: (name: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void,
): tls.TlsOptions {
  const d = t.certificates[0]!;
  return {
    ...contextOptions(t, d),
    handshakeTimeout: t.handshakeTimeoutMs,
    SNICallback: sni,
  };
}

export interface TlsManagerDeps {
  readonly metrics: Metrics;
  readonly audit: AuditLog;
  readonly log: OpsLogger;
  readonly now: () => number;
}

/** A server that can swap its default secure context (tls.Server, https.Server, Http2SecureServer). */
export interface SecureServer {
  setSecureContext(options: tls.SecureContextOptions): void;
}

/**
 * Owns the live certificates of the TLS listener: SNI selection, file watching with a
 * debounce, rotation through `setSecureContext`, the reload counter and the expiry gauge.
 */
export class TlsManager {
  private settings: TlsSettings;
  private sni: SniTable;
  private server: SecureServer | undefined;
  private watchers: fs.FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private closed = false;
  /**
   * The files last rejected, per certificate label (certificate and key bytes): the same bad
   * files are judged once, not again at every event in their directory (a log file written
   * there would otherwise make each rejection trigger the next).
   */
  private readonly rejected = new Map<string, { cert: Buffer; key: Buffer }>();
  /** called when certificates read again from disk replaced served ones (the security score follows) */
  onRotated: (() => void) | undefined;
  /** called after each reload attempt (tests wait on it) */
  onReload: ((result: 'success' | 'error' | 'unchanged') => void) | undefined;

  constructor(
    settings: TlsSettings,
    private readonly deps: TlsManagerDeps,
    private readonly debounceMs = 200,
  ) {
    this.settings = settings;
    this.sni = new SniTable(settings);
    deps.metrics.tlsExpirySource = () => this.expiry();
  }

  /** The SNICallback given to the server: picks the certificate by the client's server name. */
  readonly sniCallback = (
    servername: string,
    cb: (err: Error | null, ctx?: tls.SecureContext) => void,
  ): void => {
    cb(null, this.sni.empty ? undefined : this.sni.lookup(servername));
  };

  /** Options for creating the listener. */
  serverOptions(): tls.TlsOptions {
    return serverTlsOptions(this.settings, this.sniCallback);
  }

  /** Seconds until each certificate expires (negative once expired), for the gauge. */
  *expiry(): Iterable<[string, number]> {
    const now = this.deps.now();
    for (const c of this.settings.certificates) yield [c.label, Math.round((c.notAfter - now) / 1000)];
  }

  get certificates(): readonly LoadedCertificate[] {
    return this.settings.certificates;
  }

  get current(): TlsSettings {
    return this.settings;
  }

  /** Attach to the listening server and start watching the certificate directories. */
  attach(server: SecureServer): void {
    this.server = server;
    this.watch();
  }

  private watch(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    const dirs = new Set<string>();
    for (const c of this.settings.certificates) {
      dirs.add(path.dirname(c.settings.certFile));
      dirs.add(path.dirname(c.settings.keyFile));
    }
    for (const dir of dirs) {
      try {
        // Every event in the directory: certbot swaps symlinks in live/, Kubernetes swaps
        // the `..data` symlink of a Secret volume; the content comparison filters noise.
        const w = fs.watch(dir, () => this.schedule());
        w.on('error', () => {});
        this.watchers.push(w);
      } catch (err) {
        this.deps.log.warn(
          { dir, err: (err as Error).message },
          'cannot watch the certificate directory; rotate with a config reload (SIGHUP)',
        );
      }
    }
  }

  private schedule(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.reloadFromDisk('watch'), this.debounceMs);
    this.timer.unref();
  }

  /**
   * Read every certificate again; each one that changed and passes the checks replaces the
   * old one, each one that changed and fails keeps the old one serving (logged, counted).
   */
  reloadFromDisk(trigger: string): Promise<void> {
    const run = this.running.then(() => this.doReload(trigger));
    this.running = run.catch(() => {});
    return run;
  }

  private async doReload(trigger: string): Promise<void> {
    if (this.closed) return;
    const now = this.deps.now();
    const next: LoadedCertificate[] = [];
    let changed = false;
    let failed = false;
    for (const old of this.settings.certificates) {
      let fresh: LoadedCertificate;
      try {
        fresh = await loadCertificate(old.settings, now);
      } catch (err) {
        // Unchanged files that now fail (e.g. expired) keep serving: only new files are
        // judged, and the same new files once
        const files = await readFiles(old.settings);
        if (!sameAs(files, old) && !sameAs(files, this.rejected.get(old.label))) {
          failed = true;
          this.rejected.set(old.label, files);
          this.reject(old.label, trigger, (err as Error).message);
        }
        next.push(old);
        continue;
      }
      if (sameAs(fresh, old)) {
        this.rejected.delete(old.label);
        next.push(old);
        continue;
      }
      if (this.settings.certificates.length > 1 && fresh.keyType !== old.keyType) {
        if (!sameAs(fresh, this.rejected.get(old.label))) {
          failed = true;
          this.rejected.set(old.label, { cert: fresh.cert, key: fresh.key });
          this.reject(old.label, trigger, keyTypeMessage(fresh, old));
        }
        next.push(old);
        continue;
      }
      this.rejected.delete(old.label);
      changed = true;
      next.push(fresh);
      this.deps.metrics.tlsReloads.inc({ result: 'success' });
      this.deps.audit.system('config_reload', {
        result: 'success',
        trigger: `tls-${trigger}`,
        certificate: fresh.label,
        not_after: new Date(fresh.notAfter).toISOString(),
      });
      this.deps.log.info(
        { certificate: fresh.label, not_after: new Date(fresh.notAfter).toISOString() },
        'TLS certificate reloaded',
      );
    }
    if (changed) {
      this.apply({ ...this.settings, certificates: next });
      this.onRotated?.();
    }
    this.onReload?.(changed ? 'success' : failed ? 'error' : 'unchanged');
  }

  /** Count, audit and log the rejection of new files for certificate `label`. */
  private reject(label: string, trigger: string, error: string): void {
    this.deps.metrics.tlsReloads.inc({ result: 'error' });
    this.deps.audit.system('config_reload', {
      result: 'error',
      trigger: `tls-${trigger}`,
      certificate: label,
      error,
    });
    this.deps.log.error(
      { certificate: label, err: error },
      'new TLS certificate rejected; the previous one keeps serving',
    );
  }

  /** Swap in new settings (a config reload compiled and checked them). */
  update(settings: TlsSettings): void {
    const before = this.settings;
    const files = (t: TlsSettings) =>
      t.certificates
        .map((c) => `${c.settings.certFile}|${c.settings.keyFile}|${c.settings.servernames.join(',')}`)
        .join(';');
    const same =
      files(before) === files(settings) &&
      before.minVersion === settings.minVersion &&
      before.ciphers === settings.ciphers &&
      before.sessionTimeoutSeconds === settings.sessionTimeoutSeconds &&
      before.certificates.every(
        (c, i) =>
          c.cert.equals(settings.certificates[i]!.cert) && c.key.equals(settings.certificates[i]!.key),
      );
    // (http2 and max_concurrent_streams wait for a restart: the reload reports them)
    if (same) return;
    this.apply(settings);
    if (files(before) !== files(settings)) this.watch();
  }

  private apply(settings: TlsSettings): void {
    const sni = new SniTable(settings);
    this.server?.setSecureContext(contextOptions(settings, settings.certificates[0]!));
    this.settings = settings;
    this.sni = sni;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.deps.metrics.tlsExpirySource !== undefined) this.deps.metrics.tlsExpirySource = undefined;
  }
}

/**
 * Node installs an SNI certificate into the slot of its key type and leaves the default
 * certificate's slot in place, so under TLS 1.3 a client would still get the default
 * certificate when the key types differ: they must match.
 */
function keyTypeMessage(c: LoadedCertificate, d: LoadedCertificate): string {
  return `the key of "${c.settings.keyFile}" is ${c.keyType} but the default certificate's is ${d.keyType}; SNI certificates must use the default certificate's key type`;
}

const UNREADABLE = Buffer.alloc(0);

/** The bytes of a certificate's two files (empty for one that cannot be read). */
async function readFiles(settings: LoadedCertificate['settings']): Promise<{ cert: Buffer; key: Buffer }> {
  const read = (f: string) => fsp.readFile(f).catch(() => UNREADABLE);
  const [cert, key] = await Promise.all([read(settings.certFile), read(settings.keyFile)]);
  return { cert, key };
}

/** Whether two pairs of certificate and key bytes are the same (an absent one matches nothing). */
function sameAs(
  a: { cert: Buffer; key: Buffer } | undefined,
  b: { readonly cert: Buffer; readonly key: Buffer } | undefined,
): boolean {
  return a !== undefined && b !== undefined && a.cert.equals(b.cert) && a.key.equals(b.key);
}

/**
 * Compile `listen.tls` of a validated config: resolve paths against the config file's
 * directory, load and check every certificate. Throws TlsConfigError with the key path.
 */
export async function compileTls(
  raw: {
    cert_file: string;
    key_file: string;
    certificates: readonly { cert_file: string; key_file: string; servernames: readonly string[] }[];
    min_version: string;
    ciphers: string;
    session_timeout: string;
    handshake_timeout: string;
    http2: boolean;
    max_concurrent_streams: number;
    idle_timeout: string;
  },
  configDir: string,
  now: number,
  parseDuration: (s: string) => number,
): Promise<TlsSettings> {
  const base: Omit<TlsSettings, 'certificates'> = {
    minVersion: raw.min_version as tls.SecureVersion,
    ciphers: raw.ciphers,
    sessionTimeoutSeconds: Math.max(1, Math.round(parseDuration(raw.session_timeout) / 1000)),
    handshakeTimeoutMs: parseDuration(raw.handshake_timeout),
    http2: raw.http2,
    maxConcurrentStreams: raw.max_concurrent_streams,
    idleTimeoutMs: parseDuration(raw.idle_timeout),
  };
  const specs: TlsCertificateSettings[] = [
    {
      certFile: path.resolve(configDir, raw.cert_file),
      keyFile: path.resolve(configDir, raw.key_file),
      servernames: [],
      at: ['listen', 'tls'],
    },
    ...raw.certificates.map((c, i) => ({
      certFile: path.resolve(configDir, c.cert_file),
      keyFile: path.resolve(configDir, c.key_file),
      servernames: c.servernames.map((n) => n.toLowerCase()),
      at: ['listen', 'tls', 'certificates', i] as const,
    })),
  ];
  const results = await Promise.allSettled(specs.map((s) => loadCertificate(s, now)));
  const errors = results
    .filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    .map((r) => r.reason as Error);
  if (errors.length > 0) throw new AggregateError(errors, errors.map((e) => e.message).join('; '));
  const certificates = results.map((r) => (r as PromiseFulfilledResult<LoadedCertificate>).value);
  const mixed = certificates.findIndex((c) => c.keyType !== certificates[0]!.keyType);
  if (mixed > 0)
    throw new TlsConfigError(
      [...certificates[mixed]!.settings.at, 'key_file'],
      keyTypeMessage(certificates[mixed]!, certificates[0]!),
    );
  checkTlsOptions(base, certificates[0]!);
  return { ...base, certificates };
}

/**
 * The compat response of HTTP/2 streams, with the two members the server reads on
 * HTTP/1 responses: `shouldKeepAlive` (false: reset the stream after a refusal whose body
 * was not read) and `destroyed`.
 */
export class GatewayH2Response extends http2.Http2ServerResponse {
  shouldKeepAlive = true;
}
// @types/node declares `destroyed` on the compat response; Node 20 does not implement it.
Object.defineProperty(GatewayH2Response.prototype, 'destroyed', {
  get(this: GatewayH2Response): boolean {
    return this.stream.destroyed;
  },
});

/** The HTTP/1.1 listener settings the TLS listener shares. */
export interface H1Settings {
  readonly maxHeaderSize: number;
  readonly maxHeaders: number;
  readonly headerTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly connectionsCheckingIntervalMs: number;
}

/**
 * The TLS main listener: HTTP/2 with HTTP/1.1 fallback by ALPN (`http2: true`), or
 * HTTPS/1.1 only. Both get the HTTP/1 limits of the plain listener; HTTP/2 gets a
 * per-connection stream cap, a header list cap and an idle timeout.
 */
export function createTlsServer(
  t: TlsSettings,
  h1: H1Settings,
  options: tls.TlsOptions,
): https.Server | http2.Http2SecureServer {
  if (!t.http2) {
    return https.createServer({
      ...options,
      maxHeaderSize: h1.maxHeaderSize,
      requestTimeout: h1.requestTimeoutMs,
      headersTimeout: h1.headerTimeoutMs,
      keepAliveTimeout: h1.keepAliveTimeoutMs,
      connectionsCheckingInterval: h1.connectionsCheckingIntervalMs,
      requireHostHeader: false,
      joinDuplicateHeaders: false,
      insecureHTTPParser: false,
    });
  }
  const server = http2.createSecureServer({
    ...options,
    allowHTTP1: true,
    settings: {
      maxConcurrentStreams: t.maxConcurrentStreams,
      maxHeaderListSize: h1.maxHeaderSize,
      enablePush: false,
    },
    // pseudo-headers count too
    maxHeaderListPairs: h1.maxHeaders + 8,
    unknownProtocolTimeout: t.handshakeTimeoutMs,
    Http2ServerResponse: GatewayH2Response,
  }) as unknown as http2.Http2SecureServer;
  // HTTP/1.1 connections on this server are served by Node's HTTP/1 code, which reads
  // these properties of the server it is given. With allowHTTP1, Node 20 also starts the
  // HTTP/1 connection tracking and deadline checks (header/request timeouts) when the server
  // starts listening, reading connectionsCheckingInterval then: set before listen().
  // test/integration/tls-timeouts.test.ts checks they are enforced over TLS.
  const s = server as unknown as Record<string, unknown>;
  s.headersTimeout = h1.headerTimeoutMs;
  s.requestTimeout = h1.requestTimeoutMs;
  s.keepAliveTimeout = h1.keepAliveTimeoutMs;
  s.maxHeaderSize = h1.maxHeaderSize;
  s.connectionsCheckingInterval = h1.connectionsCheckingIntervalMs;
  server.setTimeout(t.idleTimeoutMs);
  return server;
}

/** A request that arrived as an HTTP/2 stream (not an HTTP/1 request line claiming 2.0). */
export function isH2Request(req: object): req is http2.Http2ServerRequest {
  return req instanceof http2.Http2ServerRequest;
}

/**
 * HTTP/2 checks the HTTP/1.1 parser makes for the other protocol: the head may not exceed
 * `listen.max_header_size` (names + values + 32 per field, as RFC 9113 §6.5.2 counts;
 * nghttp2 only advertises the limit), and `Host`, when present, must name the same
 * authority as `:authority` (RFC 9113 §8.3.1), or the gateway and the upstream could
 * disagree on the target host.
 */
export function h2RequestProblem(req: http2.Http2ServerRequest, maxHeaderSize: number): Deny | undefined {
  const raw = req.rawHeaders;
  let size = 0;
  for (let i = 0; i + 1 < raw.length; i += 2) size += raw[i]!.length + raw[i + 1]!.length + 32;
  if (size > maxHeaderSize)
    return {
      code: 'headers_too_large',
      message: 'The request head is too large.',
      ruleIds: ['h2-header-list-size'],
    };
  const authority = req.headers[':authority'];
  const host = req.headers.host;
  if (typeof authority === 'string' && host !== undefined && host.toLowerCase() !== authority.toLowerCase()) {
    return {
      code: 'bad_request',
      message: 'Host and :authority name different hosts.',
      ruleIds: ['h2-authority'],
    };
  }
  return undefined;
}

/** What an HTTP/2 stream looks like as the equivalent HTTP/1.1 request, for the policies. */
export interface H2View {
  readonly target: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
}

/**
 * Normalise an HTTP/2 request for the pipeline: pseudo-headers removed, `:authority`
 * becomes `Host` (RFC 9113 §8.3.1), the `cookie` fields joined into one (RFC 9113 §8.2.3:
 * browsers send each cookie as a field of its own, for HPACK; the HTTP/1.1 request has one
 * Cookie line, so `max_headers` counts them once, as Node's `headers.cookie` already holds
 * them joined with `; `), and a body without Content-Length is announced as chunked (as the
 * HTTP/1.1 request would be), so body checks and forwarding see it.
 */
export function h2RequestView(req: http2.Http2ServerRequest): H2View {
  const src = req.headers;
  const headers: IncomingHttpHeaders = {};
  for (const k in src) if (k.charCodeAt(0) !== 58 /* : */) (headers as Record<string, unknown>)[k] = src[k];
  const raw = req.rawHeaders;
  const rawHeaders: string[] = [];
  let cookieAt = -1;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.charCodeAt(0) === 58) continue;
    // (HTTP/2 field names are lowercase: nghttp2 refuses the stream otherwise)
    if (name.length === 6 && name === 'cookie') {
      if (cookieAt !== -1) {
        rawHeaders[cookieAt] = `${rawHeaders[cookieAt]!}; ${raw[i + 1]!}`;
        continue;
      }
      cookieAt = rawHeaders.length + 1;
    }
    rawHeaders.push(name, raw[i + 1]!);
  }
  const authority = src[':authority'];
  if (headers.host === undefined && typeof authority === 'string') {
    headers.host = authority;
    rawHeaders.push('host', authority);
  }
  if (headers['content-length'] === undefined && !req.stream.endAfterHeaders) {
    headers['transfer-encoding'] = 'chunked';
    rawHeaders.push('transfer-encoding', 'chunked');
  }
  const path = src[':path'];
  return { target: typeof path === 'string' && path !== '' ? path : '*', headers, rawHeaders };
}

/**
 * Make `session.destroy()` take effect on the next turn of the event loop (setImmediate),
 * never inside the native call that asked for it.
 *
 * Node destroys a server session from inside native callbacks: a fatal nghttp2 error while
 * parsing input (`onSessionInternalError`, e.g. a peer that overruns a flow-control window),
 * a read error of the TLS socket, a refused TLS renegotiation (from OpenSSL's info callback).
 * Destroying there sends RST_STREAM for every open stream, each a TLS write that can complete
 * synchronously and re-enter the session's input processing while the outer call is still
 * on the stack (Http2Session::OnStreamAfterWrite → ConsumeHTTP2Data → nghttp2_session_mem_recv).
 * On Node 20.20.2 this aborted the gateway under fuzzing (`Assertion failed:
 * onread->IsFunction()` in StreamBase::CallJSOnreadMethod: DATA delivered to a stream whose
 * JS side was never created because the session was already marked destroyed), the same
 * re-entrancy as nodejs/node#38964, whose other outcome is heap corruption. Deferred, the
 * teardown runs from a clean stack: setImmediate, not nextTick or a microtask, which run
 * when the native callback's scope closes, still inside it. `destroy()` stays idempotent.
 */
export function deferDestroy(session: http2.Http2Session, afterDestroy?: () => void): void {
  const destroy = session.destroy;
  let scheduled = false;
  session.destroy = (error?: Error, code?: number): void => {
    if (scheduled || session.destroyed) return;
    scheduled = true;
    setImmediate(() => {
      destroy.call(session, error, code);
      afterDestroy?.();
    });
  };
}

/**
 * How long a destroyed HTTP/2 session may wait for its socket to close. Node ends the socket
 * of a destroyed session only once the session's write in progress completes, and when the
 * session was closed (GOAWAY) first, waits for the peer to close the connection before it
 * emits 'close'. Under fuzzing (peers that reset the connection mid-write or never close
 * it) sessions stayed destroyed but never closed, holding their TLS socket, its file
 * descriptor and `gateway_open_connections` for good, out of reach of the idle timeout,
 * which skips destroyed and closed sessions.
 */
export const SESSION_CLOSE_GRACE_MS = 10_000;

/**
 * The connections of the HTTP/2 listener, for graceful shutdown: Node's HTTP/2 server has
 * no closeIdleConnections() and its close() leaves sessions open, so an idle keep-alive
 * connection or HTTP/2 session would hold `close()` until the shutdown deadline. At
 * shutdown idle HTTP/1.1 connections end at once, busy ones after their response, and
 * every HTTP/2 session gets GOAWAY (its open streams finish).
 */
export class TlsConnections {
  private readonly busy = new Map<tls.TLSSocket, number>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private closing = false;
  /** Per session: requests being handled, and streams refused because too many were. */
  private readonly load = new WeakMap<http2.Http2Session, { handling: number; refused: number }>();

  /** The socket a session being created runs on: Node creates it in its own listener of this event. */
  private connecting: net.Socket | undefined;

  /** `maxStreams`: `listen.tls.max_concurrent_streams`, also the cap on requests handled per session. */
  constructor(
    server: tls.Server,
    closeGraceMs = SESSION_CLOSE_GRACE_MS,
    private readonly maxStreams = 100,
    /** told of each refused stream, and of each session torn down for them (`goaway`) */
    private readonly onRefused: (
      action: 'refused_stream' | 'goaway',
      session: http2.Http2Session,
    ) => void = () => {},
  ) {
    const remember = (s: net.Socket) => (this.connecting = s);
    server.prependListener('connection', remember);
    server.prependListener('secureConnection', remember);
    server.on('session', (session: http2.ServerHttp2Session) => {
      const socket = this.connecting;
      this.connecting = undefined;
      // a destroyed session whose socket is still open after the grace period: close the
      // socket (from a timer, a clean stack), which closes the session
      deferDestroy(session, () => {
        if (socket === undefined || socket.destroyed) return;
        const timer = setTimeout(() => {
          if (!socket.destroyed) socket.destroy();
        }, closeGraceMs);
        timer.unref();
        session.once('close', () => clearTimeout(timer));
      });
      // the idle timeout skips a session that got or sent GOAWAY (closed): one whose last
      // streams stalled would stay open; destroy it when it times out
      session.on('timeout', () => {
        if (session.closed && !session.destroyed) session.destroy();
      });
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
      if (this.closing) session.close();
    });
    server.on('secureConnection', (s: tls.TLSSocket) => {
      if (s.alpnProtocol === 'h2') return;
      this.busy.set(s, 0);
      s.once('close', () => this.busy.delete(s));
    });
  }

  /**
   * An HTTP/2 stream asks to be handled. SETTINGS_MAX_CONCURRENT_STREAMS bounds the streams
   * open at the protocol level only: a stream the client resets (RST_STREAM) right after its
   * HEADERS is closed for nghttp2 at once, while the gateway is still handling its request
   * (policies, the upstream request already sent). Repeated, that is the rapid reset attack
   * (CVE-2023-44487): one connection had the upstream serve over a thousand requests in a
   * burst, whatever `max_concurrent_streams` said. Here at most `maxStreams` requests of a
   * session are handled at a time: a stream beyond that gets RST_STREAM REFUSED_STREAM (the
   * client may retry it; it never reached a policy or the upstream), and a session with more
   * than `maxStreams` such refusals is torn down with GOAWAY ENHANCE_YOUR_CALM. A client
   * that keeps to the setting is never refused: its streams end only when the gateway
   * answered them. Returns the release to call once the request was handled, or undefined
   * for a refused stream (already closed; do nothing more with it).
   */
  admit(stream: http2.ServerHttp2Stream): (() => void) | undefined {
    const session = stream.session;
    if (session === undefined) return () => {};
    let load = this.load.get(session);
    if (load === undefined) {
      load = { handling: 0, refused: 0 };
      this.load.set(session, load);
    }
    if (load.handling >= this.maxStreams) {
      if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      this.onRefused('refused_stream', session);
      if (++load.refused === this.maxStreams + 1 && !session.destroyed) {
        this.onRefused('goaway', session);
        session.destroy(
          new Error('HTTP/2 streams reset faster than they are handled (rapid reset)'),
          http2.constants.NGHTTP2_ENHANCE_YOUR_CALM,
        );
      }
      return undefined;
    }
    load.handling++;
    const l = load;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      l.handling--;
    };
  }

  /** A request started on an HTTP/1.1 connection; `res` closes when it is answered. */
  track(socket: object, res: { once(event: 'close', cb: () => void): unknown }): void {
    const s = socket as tls.TLSSocket;
    const n = this.busy.get(s);
    if (n === undefined) return;
    this.busy.set(s, n + 1);
    res.once('close', () => {
      const left = this.busy.get(s);
      if (left === undefined) return;
      this.busy.set(s, left - 1);
      if (this.closing && left - 1 === 0) s.end();
    });
  }

  /** The connection became a tunnel (WebSocket): it is no longer an HTTP connection. */
  forget(socket: object): void {
    this.busy.delete(socket as tls.TLSSocket);
  }

  /** Shutdown: end idle HTTP/1.1 connections now, busy ones after their response; GOAWAY to sessions. */
  closeIdle(): void {
    this.closing = true;
    for (const [s, n] of this.busy) if (n === 0) s.end();
    for (const session of this.sessions) session.close();
  }
}
