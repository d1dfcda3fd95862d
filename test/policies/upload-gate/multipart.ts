/**
 * Helpers for the upload gate's tests: build multipart bodies by hand (including broken
 * ones), feed them to the policy as a request stream, read back what would be forwarded.
 * Run directly (tap runs every file under test/), it checks the builder against busboy.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import busboy from 'busboy';
import type { RequestContext } from '../../../gateway/context.js';
import type { Policy, Verdict } from '../../../gateway/policy.js';
import { makeContext } from '../../helpers/context.js';
import { liveSpoolCount } from '../../../policies/upload-gate/index.js';

export const BOUNDARY = 'TestBoundary7MA4YWxkTrZu0gW';

export interface PartSpec {
  /** field name; omit for a part without one */
  name?: string;
  filename?: string;
  /** the part's Content-Type; omitted when undefined */
  type?: string;
  data: Buffer | string;
  /** the whole Content-Disposition value, instead of the one built from name/filename */
  disposition?: string;
  /** extra raw header lines */
  headers?: string[];
}

/** A multipart/form-data body with the given parts, as a client would send it. */
export function multipart(parts: readonly PartSpec[], boundary = BOUNDARY): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) {
    let disp = p.disposition;
    if (disp === undefined) {
      disp = 'form-data';
      if (p.name !== undefined) disp += `; name="${p.name}"`;
      if (p.filename !== undefined) disp += `; filename="${p.filename}"`;
    }
    const lines = [`--${boundary}`, `Content-Disposition: ${disp}`];
    if (p.type !== undefined) lines.push(`Content-Type: ${p.type}`);
    lines.push(...(p.headers ?? []));
    out.push(Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'utf8'), Buffer.from(p.data), Buffer.from('\r\n'));
  }
  out.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(out);
}

export const contentType = (boundary = BOUNDARY) => `multipart/form-data; boundary=${boundary}`;

export interface StreamOptions {
  /** bytes per chunk (default 16 KB) */
  chunkSize?: number;
  /** stop sending after this many bytes and never end (a stalled client) */
  stallAfter?: number;
  /** destroy the stream with an error after this many bytes (a client that went away) */
  failAfter?: number;
  /** hold back the bytes after `pauseAt` until `resume` resolves */
  pauseAt?: number;
  resume?: Promise<void>;
}

/** The body as a request stream, in chunks, possibly stalling or failing half-way. */
export function bodyStream(body: Buffer, opts: StreamOptions = {}): Readable {
  const size = opts.chunkSize ?? 16 * 1024;
  let pos = 0;
  let resumed = false;
  return new Readable({
    read() {
      if (opts.failAfter !== undefined && pos >= opts.failAfter) {
        this.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
        return;
      }
      if (opts.stallAfter !== undefined && pos >= opts.stallAfter) return; // never push again
      if (pos >= body.length) {
        this.push(null);
        return;
      }
      if (opts.pauseAt !== undefined && opts.resume !== undefined && pos >= opts.pauseAt && !resumed) {
        void opts.resume.then(() => {
          resumed = true;
          this.read(0);
          this._read(size);
        });
        return;
      }
      let end = Math.min(body.length, pos + size);
      if (opts.pauseAt !== undefined && !resumed) end = Math.min(end, opts.pauseAt);
      if (opts.stallAfter !== undefined) end = Math.min(end, opts.stallAfter);
      if (opts.failAfter !== undefined) end = Math.min(end, opts.failAfter);
      const chunk = body.subarray(pos, end);
      pos = end;
      setImmediate(() => this.push(chunk));
    },
  });
}

export interface RunOptions extends StreamOptions {
  contentType?: string;
  /** set Content-Length (default true) */
  contentLength?: boolean | number;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** Drive the policy's readBody over a request carrying `body`. */
export async function runGate(
  policy: Policy,
  body: Buffer,
  opts: RunOptions = {},
): Promise<{ verdict: Verdict | 'skip'; ctx: RequestContext }> {
  const headers: Record<string, string> = {
    'content-type': opts.contentType ?? contentType(),
    ...opts.headers,
  };
  if (opts.contentLength !== false)
    headers['content-length'] = String(
      typeof opts.contentLength === 'number' ? opts.contentLength : body.length,
    );
  else headers['transfer-encoding'] = 'chunked';
  const base = makeContext({
    method: 'POST',
    target: '/api/receipts/upload',
    headers,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const ctx: RequestContext = { ...base, bodySource: bodyStream(body, opts) };
  const verdict = await policy.readBody!(ctx);
  return { verdict, ctx };
}

/** Read the whole forwarded stream. */
export async function readForward(ctx: RequestContext): Promise<Buffer> {
  const fb = ctx.forwardBody;
  if (fb === undefined) throw new Error('no forward body');
  if (Buffer.isBuffer(fb.stream)) return fb.stream;
  const chunks: Buffer[] = [];
  for await (const c of fb.stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export interface ParsedPart {
  name: string;
  filename?: string;
  type?: string;
  data: Buffer;
}

/** Parse a multipart body back (what the upstream would see). */
export function parseMultipart(body: Buffer, ct: string): Promise<ParsedPart[]> {
  return new Promise((resolve, reject) => {
    const parts: ParsedPart[] = [];
    const bb = busboy({ headers: { 'content-type': ct }, defParamCharset: 'utf8', preservePath: true });
    bb.on('file', (name, stream, info) => {
      // keep the parts in body order: the file's entry is made when its headers arrive
      const part: ParsedPart = { name, filename: info.filename, type: info.mimeType, data: Buffer.alloc(0) };
      parts.push(part);
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => (part.data = Buffer.concat(chunks)));
    });
    bb.on('field', (name, value) => parts.push({ name, data: Buffer.from(value) }));
    bb.on('close', () => resolve(parts));
    bb.on('error', reject);
    bb.end(body);
  });
}

/** A fresh spool directory for one test. */
export function tempSpoolDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'upload-gate-test-'));
}

/** Resolves once every spool of the process was removed (dispose runs in the background). */
export async function spoolsGone(): Promise<void> {
  for (let i = 0; i < 2500 && liveSpoolCount() > 0; i++) await new Promise((r) => setTimeout(r, 2));
}

/** Every file and directory under `dir` (relative paths), to prove nothing was left. */
export function leftovers(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true }).map(String).sort();
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { default: t } = await import('tap');
  t.test('the hand-made multipart body parses back to its parts', async (t) => {
    const body = multipart([
      { name: 'note', data: 'lunch' },
      { name: 'file', filename: 'a.png', type: 'image/png', data: Buffer.from([1, 2, 3]) },
    ]);
    const parts = await parseMultipart(body, contentType());
    t.same(
      parts.map((p) => [p.name, p.filename, p.data.toString('hex')]),
      [
        ['note', undefined, Buffer.from('lunch').toString('hex')],
        ['file', 'a.png', '010203'],
      ],
    );
  });
  t.test('bodyStream delivers every byte in chunks', async (t) => {
    const body = Buffer.alloc(40_000, 7);
    const got: Buffer[] = [];
    for await (const c of bodyStream(body, { chunkSize: 1000 })) got.push(c as Buffer);
    t.equal(got.length, 40);
    t.ok(Buffer.concat(got).equals(body));
  });
}
