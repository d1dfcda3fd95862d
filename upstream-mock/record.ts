/**
 * Request recording (MOCK_RECORD=1) and request-body reading for the mock receipt service.
 *
 * The body is read once, as a stream: its size and sha256 are computed on the fly, JSON
 * routes collect it (bounded), and multipart bodies go through busboy, which hashes every
 * file part without buffering it, so 16 MB uploads cost no more than a chunk of memory.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import busboy from 'busboy';

/** One file part of a multipart body, as received. */
export interface RecordedPart {
  /** The form field name. */
  field: string;
  /** The filename from Content-Disposition, exactly as sent. */
  filename: string;
  /** Bytes of the part's content. */
  size: number;
  /** The part's declared Content-Type. */
  content_type: string;
}

/** An uploaded file as `POST /api/receipts/upload` reports it. */
export interface UploadedFile extends RecordedPart {
  /** Hex sha256 of the part's content. */
  sha256: string;
}

/** What the mock recorded about one request it received (GET /__mock/requests). */
export interface MockRecord {
  /** ISO time at which the request's headers arrived. */
  time: string;
  method: string;
  /** The request target as received, query string included. */
  path: string;
  /** Every request header, names lowercased; repeated headers joined with ", " ("; " for cookie). */
  headers: Record<string, string>;
  /** The headers exactly as received: [name, value, name, value, ...] with original case. */
  raw_headers: string[];
  /** Bytes of request body received. */
  body_size: number;
  /** Hex sha256 of the request body (of the empty string when there was none). */
  body_sha256: string;
  /** For multipart/form-data bodies: the file parts. */
  parts?: RecordedPart[];
  /** Set when the body ended early (client aborted) or the multipart body was malformed. */
  body_error?: string;
  /** True for a WebSocket upgrade request. */
  websocket?: true;
  /** Status the mock answered with (set once the response has been written). */
  status?: number;
}

/** Records kept at most; older ones are dropped first. */
export const MAX_RECORDS = 10_000;

/** Hex sha256 of zero bytes. */
export const EMPTY_SHA256 = createHash('sha256').digest('hex');

/** A bounded, ordered log of records (ring buffer). */
export class RecordLog {
  private buf: (MockRecord | undefined)[];
  private start = 0;
  private count = 0;

  constructor(private readonly capacity = MAX_RECORDS) {
    this.buf = new Array<MockRecord | undefined>(capacity);
  }

  push(rec: MockRecord): void {
    if (this.count < this.capacity) {
      this.buf[(this.start + this.count) % this.capacity] = rec;
      this.count++;
    } else {
      this.buf[this.start] = rec;
      this.start = (this.start + 1) % this.capacity;
    }
  }

  /** The records, oldest first. */
  toArray(): MockRecord[] {
    const out: MockRecord[] = new Array<MockRecord>(this.count);
    for (let i = 0; i < this.count; i++) out[i] = this.buf[(this.start + i) % this.capacity]!;
    return out;
  }

  clear(): void {
    this.buf = new Array<MockRecord | undefined>(this.capacity);
    this.start = 0;
    this.count = 0;
  }

  get length(): number {
    return this.count;
  }
}

/** Builds the lowercase header object of a record from Node's rawHeaders. */
export function headerObject(raw: string[]): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    const prev = out[name];
    out[name] = prev === undefined ? value : `${prev}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  return out;
}

/** Options of {@link readBody}. */
export interface ReadBodyOptions {
  /** Collect the body into a Buffer, up to `limit` bytes (beyond: `tooLarge`, keep draining). */
  collect: boolean;
  limit: number;
  /** Parse as multipart/form-data and hash each file part. */
  multipart: boolean;
  /** Compute the sha256 of the whole body. */
  hash: boolean;
}

/** What {@link readBody} found. */
export interface BodyResult {
  size: number;
  sha256: string;
  /** The collected body (when `collect` and not `tooLarge`). */
  buffer?: Buffer;
  tooLarge: boolean;
  /** The file parts (when `multipart` and the body parsed). */
  files?: UploadedFile[];
  /** Why the multipart body could not be parsed. */
  multipartError?: string;
  /** The client went away before the body ended. */
  aborted: boolean;
}

/** True when the request announces a body (Content-Length > 0 or Transfer-Encoding). */
export function hasBody(req: IncomingMessage): boolean {
  const h = req.headers;
  if (h['transfer-encoding'] !== undefined) return true;
  const cl = h['content-length'];
  return cl !== undefined && cl !== '0';
}

/** Reads the whole request body as {@link ReadBodyOptions} say; never rejects. */
export function readBody(req: IncomingMessage, opts: ReadBodyOptions): Promise<BodyResult> {
  return new Promise<BodyResult>((resolve) => {
    const hash = opts.hash ? createHash('sha256') : undefined;
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    let reqDone = false;
    let aborted = false;
    let mpDone = !opts.multipart;
    let multipartError: string | undefined;
    const files: UploadedFile[] = [];
    let settled = false;

    const finish = (): void => {
      if (settled || !reqDone || !mpDone) return;
      settled = true;
      const result: BodyResult = {
        size,
        sha256: hash === undefined ? '' : hash.digest('hex'),
        tooLarge,
        aborted,
      };
      if (opts.collect && !tooLarge)
        result.buffer = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
      if (opts.multipart) {
        if (multipartError !== undefined) result.multipartError = multipartError;
        else result.files = files;
      }
      resolve(result);
    };

    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      hash?.update(chunk);
      if (opts.collect && !tooLarge) {
        if (size > opts.limit) {
          tooLarge = true;
          chunks.length = 0;
        } else {
          chunks.push(chunk);
        }
      }
    });
    req.on('end', () => {
      reqDone = true;
      finish();
    });
    req.on('close', () => {
      if (reqDone) return;
      aborted = true;
      reqDone = true;
      if (!mpDone) {
        multipartError ??= 'request aborted';
        mpDone = true;
      }
      finish();
    });

    if (opts.multipart) {
      const failMultipart = (message: string): void => {
        if (mpDone) return;
        multipartError = message;
        mpDone = true;
        finish();
      };
      let bb: busboy.Busboy;
      try {
        // preservePath: report the filename exactly as the client sent it (directories included).
        bb = busboy({ headers: req.headers, defParamCharset: 'utf8', preservePath: true });
      } catch (err) {
        failMultipart(err instanceof Error ? err.message : String(err));
        return;
      }
      let pendingFiles = 0;
      let parserClosed = false;
      const maybeDone = (): void => {
        if (parserClosed && pendingFiles === 0 && !mpDone) {
          mpDone = true;
          finish();
        }
      };
      bb.on('file', (field, stream, info) => {
        pendingFiles++;
        const h = createHash('sha256');
        let n = 0;
        stream.on('data', (c: Buffer) => {
          n += c.length;
          h.update(c);
        });
        stream.on('end', () => {
          files.push({
            field,
            filename: info.filename ?? '',
            size: n,
            sha256: h.digest('hex'),
            content_type: info.mimeType,
          });
          pendingFiles--;
          maybeDone();
        });
        stream.on('error', () => {
          pendingFiles--;
          maybeDone();
        });
      });
      bb.on('close', () => {
        parserClosed = true;
        maybeDone();
      });
      bb.on('error', (err: unknown) => {
        req.unpipe(bb);
        failMultipart(err instanceof Error ? err.message : String(err));
      });
      req.pipe(bb);
    }
  });
}
