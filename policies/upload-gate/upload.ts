import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import busboy from 'busboy';
import { fileTypeFromBuffer } from 'file-type';
import { isUnsafeCharsetField } from '../../gateway/body.js';
import type { RequestContext } from '../../gateway/context.js';
import type { Deny, Services, Verdict } from '../../gateway/policy.js';
import { dangerousInner, sanitizeFilename, type SanitizeOptions } from './filename.js';
import { imageDimensions } from './image-header.js';
import { NEVER_SNIFFED, type FileKind } from './kinds.js';
import { MarkupScanner } from './markup-scan.js';
import { PdfScanner, type PdfScanLimits } from './pdf-scan.js';
import { Spool, SpoolPart, type SpoolOptions } from './spool.js';

/**
 * The failed check, as `detail.check` of the refusal and the metric reason. (`spool`, a
 * 503 when the gateway cannot write its spool, is not a check of the upload.)
 */
export type UploadCheck =
  'extension' | 'type' | 'content' | 'size' | 'count' | 'filename' | 'active_content' | 'malformed';

/** What compile() precomputed for the request path. */
export interface UploadSettings {
  readonly kinds: ReadonlyMap<string, FileKind>;
  readonly allowedList: string;
  readonly allowOctetStream: boolean;
  readonly allowDoubleExtensions: boolean;
  readonly maxFile: number;
  readonly maxTotal: number;
  readonly maxRequest: number;
  readonly maxFiles: number;
  readonly maxFields: number;
  readonly maxParts: number;
  readonly maxFieldSize: number;
  readonly filename: SanitizeOptions;
  readonly scanMarkup: boolean;
  readonly scanArchives: boolean;
  readonly activeContent: 'reject' | 'monitor';
  readonly pdfNames: ReadonlySet<string>;
  readonly pdfLimits: PdfScanLimits;
  readonly maxImagePixels: number;
  readonly maxImageSide: number;
  readonly spool: SpoolOptions;
  readonly idleTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  readonly spoolMaxAgeMs: number;
  /** the policy runs in monitor mode: content checks are recorded, not enforced */
  readonly monitor: boolean;
  readonly services: Services;
}

/** Facts about the file a refusal concerns (never its content). */
export interface FileFacts {
  field?: string;
  file?: string;
  size?: number;
  type?: string;
  sha256?: string;
}

const CHECK_TEXT: Record<UploadCheck, string> = {
  extension: 'extension',
  type: 'declared type',
  content: 'content',
  size: 'size',
  count: 'count',
  filename: 'filename',
  active_content: 'active content',
  malformed: 'malformed body',
};

/** Build the refusal for a failed check: 413 for size, 400 upload_rejected otherwise. */
export function reject(
  check: UploadCheck,
  reason: string,
  text: string,
  facts: FileFacts,
  extra: Record<string, unknown> = {},
): Deny {
  const detail: Record<string, unknown> = { check, reason, ...extra };
  for (const [k, v] of Object.entries(facts)) if (v !== undefined) detail[k] = v;
  return {
    code: check === 'size' ? 'payload_too_large' : 'upload_rejected',
    reason: check === 'size' ? 'size' : 'upload',
    // every refused upload is an upload_rejected audit event, the 413s included
    event: 'upload_rejected',
    message: `Upload rejected (${CHECK_TEXT[check]} check): ${text}.`,
    detail,
  };
}

/** Lowercased media type without parameters. */
export function mediaTypeOf(ct: string | undefined): string {
  if (ct === undefined) return '';
  const semi = ct.indexOf(';');
  return (semi === -1 ? ct : ct.slice(0, semi)).trim().toLowerCase();
}

/** Bytes file-type is given to sniff (its own detection window). */
const SNIFF_BYTES = 4100;

interface FieldPart {
  readonly kind: 'field';
  readonly name: string;
  readonly value: string;
}

interface FilePart {
  readonly kind: 'file';
  readonly field: string;
  readonly filename: string;
  readonly fileKind: FileKind;
  readonly data: SpoolPart;
  size: number;
  sniffedMime: string;
  sha256: string;
}

/** A per-request parse: owns the spool, the busboy instance and the timers. */
class UploadJob {
  private readonly ctx: RequestContext;
  private readonly s: UploadSettings;
  private readonly spool: Spool;
  private readonly parts: (FieldPart | FilePart)[] = [];
  private readonly pending: Promise<void>[] = [];
  private readonly monitored: Deny[] = [];
  private bb: busboy.Busboy | undefined;
  private fileBytes = 0;
  private rawBytes = 0;
  private done = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private bodyTimer: NodeJS.Timeout | undefined;
  private resolve!: (v: Verdict) => void;
  readonly result: Promise<Verdict>;

  constructor(ctx: RequestContext, s: UploadSettings) {
    this.ctx = ctx;
    this.s = s;
    this.spool = new Spool(s.spool);
    this.result = new Promise<Verdict>((r) => (this.resolve = r));
  }

  private readonly onData = (chunk: Buffer) => {
    this.rawBytes += chunk.length;
    this.idleTimer?.refresh();
    if (this.rawBytes > this.s.maxRequest) {
      this.fail(
        reject(
          'size',
          'request_too_large',
          `the upload is larger than ${this.s.maxRequest} bytes`,
          {},
          { limit: this.s.maxRequest },
        ),
      );
    }
  };
  private readonly onSourceError = () =>
    this.fail(reject('malformed', 'aborted', 'the upload was interrupted', {}));
  private readonly onSourceClose = () => {
    if (!this.ctx.bodySource.readableEnded) this.onSourceError();
  };
  private readonly onAbort = () => this.fail(reject('malformed', 'aborted', 'the request was aborted', {}));

  start(): Promise<Verdict> {
    const src = this.ctx.bodySource;
    if (this.ctx.signal.aborted) {
      this.onAbort();
      return this.result;
    }
    let bb: busboy.Busboy;
    try {
      bb = busboy({
        headers: { 'content-type': this.ctx.headers['content-type'] },
        preservePath: true,
        defParamCharset: 'utf8',
        defCharset: 'utf8',
        // busboy's size and part limits fire on reaching the limit, not on passing it (a file
        // of exactly fileSize bytes is 'truncated', the partsLimit event follows the last
        // allowed part): one more, so that a body exactly at each configured limit passes.
        // (The files and fields limits fire when one more part begins: they are exact.)
        limits: {
          fileSize: this.s.maxFile + 1,
          files: this.s.maxFiles,
          fields: this.s.maxFields,
          parts: this.s.maxParts + 1,
          fieldSize: this.s.maxFieldSize + 1,
          fieldNameSize: 200,
          headerPairs: 32,
        },
      });
    } catch {
      this.fail(
        reject('malformed', 'bad_content_type', 'the multipart Content-Type has no usable boundary', {}),
      );
      return this.result;
    }
    this.bb = bb;
    bb.on('file', (name, stream, info) => {
      const p = this.onFile(name, stream, info).catch((err: unknown) => {
        if (!this.done) {
          // the spool could not be written (disk full, spool removed at shutdown): not the client's fault
          this.s.services.log.error(
            { request_id: this.ctx.id, err: (err as Error).message },
            'upload spool failed',
          );
          this.fail(spoolFailure(err));
        }
      });
      this.pending.push(p);
    });
    bb.on('field', (name, value, info) => this.onField(name, value, info));
    bb.on('partsLimit', () =>
      this.fail(
        reject(
          'count',
          'too_many_parts',
          `more than ${this.s.maxParts} parts`,
          {},
          { limit: this.s.maxParts },
        ),
      ),
    );
    bb.on('filesLimit', () =>
      this.fail(
        reject(
          'count',
          'too_many_files',
          `more than ${this.s.maxFiles} files`,
          {},
          { limit: this.s.maxFiles },
        ),
      ),
    );
    bb.on('fieldsLimit', () =>
      this.fail(
        reject(
          'count',
          'too_many_fields',
          `more than ${this.s.maxFields} text fields`,
          {},
          { limit: this.s.maxFields },
        ),
      ),
    );
    bb.on('error', (err: Error) => this.fail(malformed(err)));
    bb.on('close', () => void this.complete());

    this.idleTimer = setTimeout(() => this.timeout('idle'), this.s.idleTimeoutMs);
    this.bodyTimer = setTimeout(() => this.timeout('body'), this.s.bodyTimeoutMs);
    this.ctx.signal.addEventListener('abort', this.onAbort, { once: true });
    src.on('data', this.onData);
    src.on('error', this.onSourceError);
    src.on('aborted', this.onSourceError);
    src.on('close', this.onSourceClose);
    src.pipe(bb);
    return this.result;
  }

  private timeout(which: 'idle' | 'body'): void {
    this.fail(
      reject(
        'malformed',
        'timeout',
        'upload timed out',
        {},
        {
          timeout: which,
          limit_ms: which === 'idle' ? this.s.idleTimeoutMs : this.s.bodyTimeoutMs,
        },
      ),
    );
  }

  /**
   * `value` is undefined when busboy cannot decode the part's charset: it decodes UTF-8,
   * Latin-1 (and its aliases), UTF-16LE and "base64", and yields nothing for every other
   * charset (ISO-8859-15, ISO-2022-JP, …). Such a field would be forwarded with the text
   * `undefined` in place of what the client sent, unjudged: refused as malformed.
   */
  private onField(name: string | undefined, value: string | undefined, info: busboy.FieldInfo): void {
    if (this.done) return;
    if (name === undefined || name === '' || info.nameTruncated) {
      this.fail(reject('malformed', 'part_without_name', 'a part has no name', {}));
      return;
    }
    if (info.mimeType !== 'text/plain') {
      // a typed part without a filename (busboy reads `filename=""` as none): a file in disguise
      this.fail(
        reject(
          'filename',
          'missing_filename',
          'a file part has no filename',
          { field: name },
          { declared: info.mimeType },
        ),
      );
      return;
    }
    if (info.valueTruncated) {
      this.fail(
        reject(
          'size',
          'field_too_large',
          `a text field is longer than ${this.s.maxFieldSize} bytes`,
          { field: name },
          { limit: this.s.maxFieldSize },
        ),
      );
      return;
    }
    if (value === undefined) {
      this.fail(
        reject('malformed', 'charset', 'the charset of a text field is not supported', { field: name }),
      );
      return;
    }
    // the forwarded fields are UTF-8, but a service honouring `_charset_` (RFC 7578 §4.6) would
    // read them as UTF-7 or UTF-16, where `+ADs-` is `;`: refused as by the buffered parser
    if (isUnsafeCharsetField(name, value)) {
      this.fail(
        reject('malformed', 'charset', 'the _charset_ field names a charset that is not supported', {
          field: name,
        }),
      );
      return;
    }
    this.parts.push({ kind: 'field', name, value });
  }

  private async onFile(
    name: string | undefined,
    stream: Readable & { truncated?: boolean },
    info: busboy.FileInfo,
  ): Promise<void> {
    // busboy destroys the part's stream with an error when the request is cut short; the
    // failure is handled through busboy's own 'error' event
    stream.on('error', noop);
    if (this.done) {
      stream.resume();
      return;
    }
    /** true when the request stops here (enforced); false when the finding is only monitored */
    const stop = (d: Deny): boolean => {
      this.fail(d);
      if (this.done) stream.resume();
      return this.done;
    };
    if (name === undefined || name === '') {
      stop(reject('malformed', 'part_without_name', 'a part has no name', {}));
      return;
    }
    const enc = info.encoding.toLowerCase();
    if (enc !== '7bit' && enc !== '8bit' && enc !== 'binary') {
      stop(
        reject('malformed', 'transfer_encoding', 'Content-Transfer-Encoding is not supported', {
          field: name,
        }),
      );
      return;
    }
    const declared = info.mimeType.toLowerCase();
    const rawName = info.filename ?? '';
    if (
      rawName === '' &&
      stop(reject('filename', 'missing_filename', 'a file part has no filename', { field: name }))
    )
      return;
    const san = sanitizeFilename(rawName, this.s.filename);
    const facts: FileFacts = { field: name, file: san.name === '' ? undefined : san.name };
    if (
      rawName !== '' &&
      san.name === '' &&
      stop(reject('filename', 'unusable_filename', 'the filename is empty once sanitized', facts))
    )
      return;
    let kind = this.s.kinds.get(san.ext);
    if (kind === undefined) {
      const why = san.ext === '' ? 'no_extension' : 'extension_not_allowed';
      if (stop(reject('extension', why, `allowed extensions are ${this.s.allowedList}`, facts))) return;
      // monitor mode: forward it as declared
      kind = {
        sniffed: '',
        canonical: /^[a-z0-9.+-]+\/[a-z0-9.+-]+$/.test(declared) ? declared : 'application/octet-stream',
        declared: [],
      };
    }
    if (!this.s.allowDoubleExtensions) {
      const inner = dangerousInner(san.inner);
      if (
        inner.length > 0 &&
        stop(
          reject('extension', 'double_extension', 'the filename has a dangerous inner extension', facts, {
            inner,
          }),
        )
      )
        return;
    }
    if (
      !kind.declared.includes(declared) &&
      !(this.s.allowOctetStream && declared === 'application/octet-stream') &&
      kind.sniffed !== '' &&
      stop(
        reject(
          'type',
          'declared_type_mismatch',
          'the declared Content-Type does not match the file extension',
          facts,
          { declared },
        ),
      )
    ) {
      return;
    }

    const fileKind = kind;
    const part: FilePart = {
      kind: 'file',
      field: name,
      filename: san.name === '' ? 'upload' : san.name,
      fileKind,
      data: new SpoolPart(this.spool),
      size: 0,
      sniffedMime: '',
      sha256: '',
    };
    this.parts.push(part);
    stream.on('limit', () =>
      this.fail(
        reject(
          'size',
          'file_too_large',
          `a file is larger than ${this.s.maxFile} bytes`,
          { ...facts, size: this.s.maxFile },
          { limit: this.s.maxFile },
        ),
      ),
    );
    const hash = createHash('sha256');
    const markup = this.s.scanMarkup ? new MarkupScanner() : undefined;
    const pdf = fileKind.sniffed === 'pdf' ? new PdfScanner(this.s.pdfNames, this.s.pdfLimits) : undefined;
    const head: Buffer[] = [];
    let headLen = 0;
    let sniffed = false;
    const sniff = async (): Promise<Deny | undefined> => {
      sniffed = true;
      const buf = Buffer.concat(head, headLen);
      head.length = 0;
      const ft = await fileTypeFromBuffer(buf);
      const label =
        fileKind.sniffed === 'jpg'
          ? 'JPEG'
          : fileKind.sniffed === 'tif'
            ? 'TIFF'
            : fileKind.sniffed.toUpperCase();
      if (ft === undefined)
        return reject(
          'content',
          'unrecognised_content',
          `the content is not a ${label || 'recognised'} file`,
          facts,
        );
      part.sniffedMime = ft.mime;
      if (NEVER_SNIFFED.has(ft.ext)) {
        return reject('content', 'forbidden_content', 'the content is markup, a script or an executable', {
          ...facts,
          type: ft.mime,
        });
      }
      if (ft.ext !== fileKind.sniffed) {
        return reject(
          'content',
          'content_mismatch',
          'the content does not match the extension and declared type',
          { ...facts, type: ft.mime },
        );
      }
      return undefined;
    };

    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        if (this.done) return;
        part.size += chunk.length;
        this.fileBytes += chunk.length;
        if (this.fileBytes > this.s.maxTotal) {
          this.fail(
            reject(
              'size',
              'total_too_large',
              `the files together are larger than ${this.s.maxTotal} bytes`,
              facts,
              { limit: this.s.maxTotal },
            ),
          );
          return;
        }
        hash.update(chunk);
        markup?.feed(chunk);
        pdf?.feed(chunk);
        if (!sniffed) {
          const take = Math.min(chunk.length, SNIFF_BYTES - headLen);
          head.push(Buffer.from(chunk.subarray(0, take)));
          headLen += take;
          if (headLen >= SNIFF_BYTES) {
            const d = await sniff();
            if (d !== undefined && stop(d)) return;
          }
        }
        try {
          await part.data.write(chunk);
        } catch (err) {
          if (!this.done) {
            this.s.services.log.error(
              { request_id: this.ctx.id, err: (err as Error).message },
              'upload spool failed',
            );
            this.fail(spoolFailure(err));
          }
          return;
        }
      }
    } catch (err) {
      if (!this.done) this.fail(malformed(err as Error));
      return;
    }
    if (this.done || stream.truncated) return;
    if (!sniffed) {
      const d = await sniff();
      if (d !== undefined && stop(d)) return;
    }
    await part.data.finish();
    part.sha256 = hash.digest('hex');
    if (this.done) return;
    const full: FileFacts = {
      ...facts,
      size: part.size,
      type: part.sniffedMime || undefined,
      sha256: part.sha256,
    };
    if (markup !== undefined) {
      markup.end();
      if (
        markup.found !== undefined &&
        stop(
          reject('content', 'embedded_markup', 'the file contains markup or script', full, {
            found: markup.found,
          }),
        )
      ) {
        return;
      }
    }
    if (this.s.scanArchives) {
      // a ZIP (JAR, DOCX…) appended to an image or PDF: GIFAR-style polyglots. A ZIP reader
      // finds its end-of-central-directory record in the last 64 KB + 22 bytes.
      const tailLen = Math.min(part.size, 65_557);
      const tail = await part.data.read(part.size - tailLen, tailLen);
      if (this.done) return;
      if (
        tail.includes(ZIP_EOCD) &&
        stop(reject('content', 'embedded_archive', 'the file has an archive appended', full))
      )
        return;
    }
    const dims = await imageDimensions(fileKind.sniffed, part.data.windowedReader(), part.size);
    if (this.done) return;
    if (dims !== undefined && !dims.ok) {
      if (
        stop(
          reject('content', 'invalid_image_header', 'the image header is invalid', full, { why: dims.why }),
        )
      )
        return;
    } else if (dims?.ok) {
      const { width, height } = dims;
      if (width === 0 || height === 0) {
        if (stop(reject('content', 'invalid_image_header', 'the image declares no size', full))) return;
      } else if (
        width > this.s.maxImageSide ||
        height > this.s.maxImageSide ||
        width * height > this.s.maxImagePixels
      ) {
        if (
          !this.activeContent(
            reject('active_content', 'image_dimensions', 'the image declares excessive dimensions', full, {
              width,
              height,
            }),
          )
        )
          return;
      }
    }
    if (pdf !== undefined) {
      const f = await pdf.finish();
      if (this.done) return;
      if (f.names.length > 0) {
        const d = reject(
          'active_content',
          'pdf_actions',
          'the PDF contains active content (JavaScript, launch or open actions)',
          full,
          {
            names: f.names,
          },
        );
        if (!this.activeContent(d)) return;
      }
      if (f.uninspectable !== undefined) {
        const d = reject(
          'active_content',
          'pdf_uninspectable',
          'the PDF contains an object stream that cannot be inspected',
          full,
          {
            why: f.uninspectable,
          },
        );
        if (!this.activeContent(d)) return;
      }
    }
  }

  /** Returns true when the request may go on (the finding is only monitored). */
  private activeContent(d: Deny): boolean {
    if (this.s.activeContent === 'monitor') {
      this.monitored.push(d);
      return true;
    }
    this.fail(d);
    return !this.done;
  }

  /** The first failure wins: stop reading, remove the spool, answer. */
  fail(d: Deny): void {
    if (this.done) return;
    const check = (d.detail?.check as string | undefined) ?? 'malformed';
    // content checks can be monitored: the body is read to the end and forwarded
    if (this.s.monitor && MONITORABLE.has(check)) {
      this.monitored.push(d);
      return;
    }
    this.done = true;
    this.s.services.metrics.uploadRejections.inc({ reason: check });
    this.detach();
    void this.spool.dispose().then(() => this.resolve(d));
  }

  private detach(): void {
    clearTimeout(this.idleTimer);
    clearTimeout(this.bodyTimer);
    const src = this.ctx.bodySource;
    src.off('data', this.onData);
    src.off('error', this.onSourceError);
    src.off('aborted', this.onSourceError);
    src.off('close', this.onSourceClose);
    this.ctx.signal.removeEventListener('abort', this.onAbort);
    const bb = this.bb;
    if (bb !== undefined) {
      src.unpipe(bb);
      bb.on('error', noop);
      // not synchronously: this may run inside one of busboy's own event handlers
      process.nextTick(() => bb.destroy());
    }
  }

  private async complete(): Promise<void> {
    await Promise.all(this.pending);
    if (this.done) return;
    this.done = true;
    this.detach();
    try {
      this.succeed();
    } catch (err) {
      this.s.services.log.error(
        { request_id: this.ctx.id, err: (err as Error).message },
        'upload re-encoding failed',
      );
      this.ctx.forwardBody = undefined;
      this.ctx.body = undefined;
      this.ctx.locals.delete(LOCALS_KEY);
      this.s.services.metrics.uploadRejections.inc({ reason: 'spool' });
      await this.spool.dispose();
      this.resolve(spoolFailure(err));
      return;
    }
    this.resolve(undefined);
  }

  private succeed(): void {
    const { ctx, s } = this;
    const boundary = `----receipt-gateway-${randomBytes(16).toString('hex')}`;
    const segments: (Buffer | SpoolPart)[] = [];
    const fields: [string, string][] = [];
    const files: { field: string; filename: string }[] = [];
    const uploads: Record<string, unknown>[] = [];
    let length = 0;
    const push = (seg: Buffer | SpoolPart) => {
      segments.push(seg);
      length += seg instanceof SpoolPart ? seg.size : seg.length;
    };
    for (const p of this.parts) {
      if (p.kind === 'field') {
        push(
          Buffer.from(
            `--${boundary}\r\nContent-Disposition: form-data; name="${escapeParam(p.name)}"\r\n\r\n${p.value}\r\n`,
            'utf8',
          ),
        );
        fields.push([p.name, p.value]);
      } else {
        push(
          Buffer.from(
            `--${boundary}\r\nContent-Disposition: form-data; name="${escapeParam(p.field)}"; filename="${escapeParam(p.filename)}"\r\n` +
              `Content-Type: ${p.fileKind.canonical}\r\n\r\n`,
            'utf8',
          ),
        );
        push(p.data);
        push(CRLF);
        files.push({ field: p.field, filename: p.filename });
        uploads.push({
          field: p.field,
          filename: p.filename,
          size: p.size,
          type: p.sniffedMime,
          sha256: p.sha256,
        });
      }
    }
    push(Buffer.from(`--${boundary}--\r\n`, 'latin1'));

    const spool = this.spool;
    let disposed = false;
    const dispose = () => {
      if (disposed) return;
      disposed = true;
      clearTimeout(ageTimer);
      ctx.signal.removeEventListener('abort', dispose);
      void spool.dispose();
    };
    const ageTimer = setTimeout(dispose, s.spoolMaxAgeMs);
    ageTimer.unref();
    ctx.signal.addEventListener('abort', dispose, { once: true });
    const stream = Readable.from(encode(segments), { objectMode: false });
    // once the upstream has read the body (or the stream was destroyed) the spool is not needed
    stream.once('close', dispose);

    ctx.forwardBody = { stream, length, contentType: `multipart/form-data; boundary=${boundary}`, dispose };
    // the files are reported accepted (upload_accepted) by onDone, once the request is over and
    // only if it was forwarded: a later policy may still refuse it
    const local: UploadLocals = { dispose, accepted: this.monitored.length === 0 ? uploads : [] };
    ctx.locals.set(LOCALS_KEY, local);
    ctx.body = {
      raw: Buffer.from(fields.map(([k, v]) => `${k}=${v}`).join('&'), 'utf8'),
      mediaType: 'multipart/form-data',
      fields,
      files,
    };
    ctx.audit.uploads = uploads;
    for (const d of this.monitored) ctx.monitored.push(d);
    for (const d of this.monitored)
      s.services.metrics.uploadRejections.inc({ reason: (d.detail?.check as string) ?? 'content' });
  }
}

const noop = () => {};
/** ctx.locals key of what the onDone hook needs of an upload that passed the gate (UploadLocals) */
export const LOCALS_KEY = 'upload-gate';

/** What the gate leaves in `ctx.locals` for its onDone hook. */
export interface UploadLocals {
  /** frees the spool */
  readonly dispose: () => void;
  /** the files to report as `upload_accepted` if the request is forwarded (none when a check was monitored) */
  readonly accepted: readonly Readonly<Record<string, unknown>>[];
}
const MONITORABLE: ReadonlySet<string> = new Set([
  'extension',
  'type',
  'content',
  'filename',
  'active_content',
]);
const CRLF = Buffer.from('\r\n', 'latin1');
const ZIP_EOCD = Buffer.from([0x50, 0x4b, 0x05, 0x06]);

async function* encode(segments: readonly (Buffer | SpoolPart)[]): AsyncGenerator<Buffer> {
  for (const seg of segments) {
    if (seg instanceof SpoolPart) yield* seg.stream() as AsyncIterable<Buffer>;
    else yield seg;
  }
}

/**
 * Quote a Content-Disposition parameter the way browsers do (WHATWG multipart encoding),
 * and a backslash too: busboy (the gate's parser, and the service's) reads `\` in a quoted
 * string as an escape, so a name ending in one (`name="a\"`) would swallow its closing quote
 * and the service would read another part structure than the gate judged. `%5C` reads the
 * same in every parser, escape-aware or not.
 */
function escapeParam(v: string): string {
  return v.replace(/\\/g, '%5C').replace(/"/g, '%22').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

/** 503: the gateway could not spool or re-encode the upload (disk full, shutdown). */
function spoolFailure(err: unknown): Deny {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return {
    code: 'service_unavailable',
    message: 'The upload could not be stored by the gateway; retry later.',
    event: 'upload_rejected',
    detail: { check: 'spool', reason: code ?? 'spool_error' },
  };
}

function malformed(err: Error): Deny {
  const m = err.message;
  if (m === 'Unexpected end of form' || m === 'Unexpected end of file') {
    return reject('malformed', 'truncated', 'the multipart body ended before its closing boundary', {});
  }
  if (m === 'Malformed part header')
    return reject('malformed', 'bad_part_header', 'a part header is malformed or too large', {});
  if (m === 'Malformed urlencoded form') return reject('malformed', 'bad_body', 'the body is malformed', {});
  return reject('malformed', 'bad_multipart', 'the multipart body is malformed', {});
}

/** Parse, spool and check a multipart upload; see the factory's documentation. */
export function runUpload(ctx: RequestContext, s: UploadSettings): Promise<Verdict> {
  return new UploadJob(ctx, s).start();
}
