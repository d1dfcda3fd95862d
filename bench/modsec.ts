// The reference WAF for the benchmark: nginx + ModSecurity v3 + OWASP CRS (paranoia
// level 1), one worker, in front of the same upstream, adding the same security headers.
// Used only where Debian's nginx, libnginx-mod-http-modsecurity and modsecurity-crs are
// installed (`apt-get install nginx libnginx-mod-http-modsecurity modsecurity-crs`).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { freePort, sleep } from './lib.js';

const MODULE = '/usr/lib/nginx/modules/ngx_http_modsecurity_module.so';
const CRS_SETUP = '/etc/modsecurity/crs/crs-setup.conf';
const CRS_RULES = '/usr/share/modsecurity-crs/rules';
const NGINX = '/usr/sbin/nginx';

export function modsecAvailable(): boolean {
  return [MODULE, CRS_SETUP, CRS_RULES, NGINX].every((p) => fs.existsSync(p));
}

const HEADERS = [
  ['X-Content-Type-Options', 'nosniff'],
  ['X-Frame-Options', 'SAMEORIGIN'],
  ['X-XSS-Protection', '"1; mode=block"'],
  ['Strict-Transport-Security', '"max-age=31536000; includeSubDomains"'],
  ['Content-Security-Policy', `"default-src 'self'"`],
  ['Referrer-Policy', 'strict-origin-when-cross-origin'],
  ['Permissions-Policy', '"geolocation=(), microphone=(), camera=()"'],
];

/** The pid of the (single) worker of an nginx master process, from /proc. */
function workerOf(master: number): number | undefined {
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      // "pid (comm) state ppid …"
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === master) return Number(e);
    } catch {
      // the process ended meanwhile
    }
  }
  return undefined;
}

export async function startModsec(
  upstreamPort: number,
): Promise<{ url: string; workerPid: number | undefined; stop(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-modsec-'));
  const port = await freePort();
  fs.writeFileSync(
    path.join(dir, 'modsec.conf'),
    [
      'SecRuleEngine On',
      'SecRequestBodyAccess On',
      'SecRequestBodyLimit 13107200',
      'SecRequestBodyNoFilesLimit 2097152',
      'SecRequestBodyLimitAction Reject',
      'SecResponseBodyAccess Off',
      'SecAuditEngine Off',
      'SecArgumentSeparator &',
      'SecPcreMatchLimit 100000',
      'SecPcreMatchLimitRecursion 100000',
      `Include ${CRS_SETUP}`,
      `Include ${CRS_RULES}/*.conf`,
      '',
    ].join('\n'),
  );
  fs.writeFileSync(
    path.join(dir, 'nginx.conf'),
    `load_module ${MODULE};
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log error;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  client_max_body_size 20m;
  client_body_buffer_size 2m;
  upstream up { server 127.0.0.1:${upstreamPort}; keepalive 128; }
  server {
    listen 127.0.0.1:${port};
    modsecurity on;
    modsecurity_rules_file ${dir}/modsec.conf;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
${HEADERS.map(([k, v]) => `      add_header ${k} ${v} always;`).join('\n')}
    }
  }
}
`,
  );
  const proc = spawn(NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`nginx exited: ${err}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/api/health`);
      await r.arrayBuffer();
      break;
    } catch {
      await sleep(100);
    }
  }
  return {
    url: `http://127.0.0.1:${port}`,
    workerPid: proc.pid === undefined ? undefined : workerOf(proc.pid),
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) {
          fs.rmSync(dir, { recursive: true, force: true });
          return resolve();
        }
        proc.once('exit', () => {
          fs.rmSync(dir, { recursive: true, force: true });
          resolve();
        });
        proc.kill('SIGQUIT');
        setTimeout(() => proc.kill('SIGKILL'), 5000).unref();
      }),
  };
}
