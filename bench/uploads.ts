/**
 * Upload throughput through the gateway: `concurrency` uploads of a genuine PDF of about
 * `sizeBytes` each, all started at once, each a multipart/form-data POST to
 * /api/receipts/upload. The lead's `npm run bench` measures the gateway's RSS around it.
 *
 * Alone: `node dist/bench/uploads.js http://127.0.0.1:8080 <token> [concurrency] [MB]`.
 */
import http from 'node:http';
import crypto from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface UploadRunOptions {
  /** uploads in flight at once (and in total) */
  readonly concurrency: number;
  /** size of each uploaded file */
  readonly sizeBytes: number;
  /** a JWT (or API key, with `apiKey: true`) accepted by the upload route */
  readonly token: string;
  readonly apiKey?: boolean;
  /** request path (default /api/receipts/upload) */
  readonly path?: string;
}

export interface UploadRunResult {
  /** wall time from the first request to the last response */
  readonly seconds: number;
  /** file megabytes (MiB) moved per second, all uploads together */
  readonly mbPerSec: number;
  /** response statuses and their counts, e.g. {"201": 50} */
  readonly statuses: Record<string, number>;
}

/**
 * A genuine one-page PDF of `size` bytes: its bulk is an image XObject stream of random
 * bytes (what a scanned receipt is), with '<' bytes avoided so that no random run can
 * look like markup to the gate's polyglot check.
 */
export function bigPdf(size: number): Buffer {
  const head = Buffer.from('%PDF-1.7\n%\xe2\xe3\xcf\xd3\n', 'latin1');
  const objs = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /Im1 4 0 R >> >> /Contents 5 0 R >>',
  ];
  const content = 'q 612 0 0 792 0 0 cm /Im1 Do Q';
  const overhead = 1024;
  const imageLen = Math.max(1, size - overhead);
  const image = crypto.randomBytes(imageLen);
  for (let i = 0; i < image.length; i++) if (image[i] === 0x3c) image[i] = 0x3d;
  const parts: Buffer[] = [head];
  const offsets: number[] = [];
  let pos = head.length;
  const add = (b: Buffer) => {
    offsets.push(pos);
    parts.push(b);
    pos += b.length;
  };
  objs.forEach((o, i) => add(Buffer.from(`${i + 1} 0 obj\n${o}\nendobj\n`)));
  add(
    Buffer.concat([
      Buffer.from(
        `4 0 obj\n<< /Type /XObject /Subtype /Image /Width 1000 /Height ${Math.ceil(imageLen / 3000)} /ColorSpace /DeviceRGB /BitsPerComponent 8 /Length ${imageLen} >>\nstream\n`,
      ),
      image,
      Buffer.from('\nendstream\nendobj\n'),
    ]),
  );
  add(Buffer.from(`5 0 obj\n<< /Length ${content.length} >>\nstream\n${content}\nendstream\nendobj\n`));
  const xref = [
    'xref\n0 6\n',
    '0000000000 65535 f \n',
    ...offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n \n`),
  ].join('');
  parts.push(Buffer.from(`${xref}trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n${pos}\n%%EOF\n`));
  return Buffer.concat(parts);
}

function multipartBody(file: Buffer, boundary: string): Buffer {
  return Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="merchant"\r\n\r\nBench Store\r\n`),
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="scan.pdf"\r\nContent-Type: application/pdf\r\n\r\n`,
    ),
    file,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
}

function once(url: URL, body: Buffer, headers: http.OutgoingHttpHeaders): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request(url, { method: 'POST', headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(0));
    });
    req.on('error', () => resolve(0));
    req.end(body);
  });
}

/** Run the uploads; every one shares the same body buffer, so the client stays small. */
export async function runUploads(url: string, opts: UploadRunOptions): Promise<UploadRunResult> {
  const boundary = `----bench-${crypto.randomBytes(8).toString('hex')}`;
  const file = bigPdf(opts.sizeBytes);
  const body = multipartBody(file, boundary);
  const target = new URL(opts.path ?? '/api/receipts/upload', url);
  const headers: http.OutgoingHttpHeaders = {
    'content-type': `multipart/form-data; boundary=${boundary}`,
    'content-length': body.length,
    ...(opts.apiKey ? { 'x-api-key': opts.token } : { authorization: `Bearer ${opts.token}` }),
  };
  const t0 = process.hrtime.bigint();
  const codes = await Promise.all(
    Array.from({ length: opts.concurrency }, () => once(target, body, headers)),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const statuses: Record<string, number> = {};
  for (const c of codes) statuses[String(c)] = (statuses[String(c)] ?? 0) + 1;
  const mb = (file.length * opts.concurrency) / (1024 * 1024);
  return { seconds, mbPerSec: mb / seconds, statuses };
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [url, token, conc, mb] = process.argv.slice(2);
  if (url === undefined || token === undefined) {
    console.error('usage: uploads.js GATEWAY_URL TOKEN [concurrency=50] [MB=16]');
    process.exit(2);
  }
  const r = await runUploads(url, {
    concurrency: Number(conc ?? 50),
    sizeBytes: Math.floor(Number(mb ?? 16) * 1024 * 1024) - 4096,
    token,
  });
  console.log(
    `${Number(conc ?? 50)} uploads: ${r.seconds.toFixed(2)} s, ${r.mbPerSec.toFixed(1)} MB/s, statuses ${JSON.stringify(r.statuses)}`,
  );
}
