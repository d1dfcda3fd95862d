import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

/**
 * Test certificates made with the `openssl` binary: a CA and leaves signed by it
 * (localhost/127.0.0.1 by default, any names, expired, or self-signed for a wrong host).
 */

export interface CertFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

export interface LeafOptions {
  /** subject alternative names, e.g. ['DNS:localhost', 'IP:127.0.0.1'] */
  readonly sans?: readonly string[];
  readonly cn?: string;
  /** validity in days; negative makes an already expired certificate */
  readonly days?: number;
  /** RSA instead of P-256 */
  readonly rsa?: boolean;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function keyArgs(rsa: boolean | undefined): string[] {
  return rsa ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
}

export class TestPki {
  readonly dir: string;
  readonly ca: CertFiles;
  private serial = 0;

  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-pki-'));
    openssl(
      [
        'req',
        '-x509',
        ...keyArgs(false),
        '-nodes',
        '-keyout',
        'ca.key',
        '-out',
        'ca.pem',
        '-days',
        '30',
        '-subj',
        '/CN=receipt-gateway test CA',
      ],
      this.dir,
    );
    this.ca = this.files('ca.pem', 'ca.key');
  }

  private files(cert: string, key: string): CertFiles {
    const certFile = path.join(this.dir, cert);
    const keyFile = path.join(this.dir, key);
    return { certFile, keyFile, cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) };
  }

  /** A leaf signed by the CA; its PEM file holds the leaf then the CA (a chain). */
  leaf(name: string, opts: LeafOptions = {}): CertFiles {
    const n = ++this.serial;
    const base = `${name}-${n}`;
    const sans = opts.sans ?? ['DNS:localhost', 'IP:127.0.0.1'];
    fs.writeFileSync(
      path.join(this.dir, `${base}.ext`),
      `subjectAltName=${sans.join(',')}\nextendedKeyUsage=serverAuth\n`,
    );
    openssl(
      [
        'req',
        ...keyArgs(opts.rsa),
        '-nodes',
        '-keyout',
        `${base}.key`,
        '-out',
        `${base}.csr`,
        '-subj',
        `/CN=${opts.cn ?? 'localhost'}`,
      ],
      this.dir,
    );
    openssl(
      [
        'x509',
        '-req',
        '-in',
        `${base}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-set_serial',
        String(1000 + n),
        '-out',
        `${base}.leaf.pem`,
        '-days',
        String(opts.days ?? 10),
        '-extfile',
        `${base}.ext`,
      ],
      this.dir,
    );
    fs.writeFileSync(
      path.join(this.dir, `${base}.pem`),
      Buffer.concat([fs.readFileSync(path.join(this.dir, `${base}.leaf.pem`)), this.ca.cert]),
    );
    return this.files(`${base}.pem`, `${base}.key`);
  }

  /** Copy a certificate and key to fixed names in `dir` (what a rotation tool does), atomically per file. */
  install(
    src: CertFiles,
    dir: string,
    certName = 'tls.crt',
    keyName = 'tls.key',
  ): { certFile: string; keyFile: string } {
    fs.mkdirSync(dir, { recursive: true });
    const certFile = path.join(dir, certName);
    const keyFile = path.join(dir, keyName);
    for (const [from, to] of [
      [src.keyFile, keyFile],
      [src.certFile, certFile],
    ] as const) {
      const tmp = `${to}.tmp-${process.pid}`;
      fs.copyFileSync(from, tmp);
      fs.renameSync(tmp, to);
    }
    return { certFile, keyFile };
  }

  /** Serial number (hex, uppercase) of a PEM certificate, for telling certificates apart. */
  static serialOf(pem: Buffer | string): string {
    return execFileSync('openssl', ['x509', '-noout', '-serial'], { input: pem })
      .toString()
      .trim()
      .replace(/^serial=/, '')
      .toUpperCase();
  }

  cleanup(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
