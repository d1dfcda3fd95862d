import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Type } from '@sinclair/typebox';
import type { Deny, Policy, PolicyFactory } from '../../gateway/policy.js';
import { hasBody, type RequestContext } from '../../gateway/context.js';
import { ConfigError } from '../../gateway/errors.js';
import { Duration, policyBlock, Size } from '../../gateway/config/policy-schema.js';
import { parseDuration, parseSize } from '../../gateway/config/units.js';
import { DANGEROUS_EXTENSIONS, DEFAULT_EXTENSIONS, KINDS, type FileKind } from './kinds.js';
import { sweepStaleSpools } from './spool.js';
import {
  LOCALS_KEY,
  mediaTypeOf,
  reject,
  runUpload,
  type UploadLocals,
  type UploadSettings,
} from './upload.js';

export { cleanupAll, liveSpoolCount, spooledMemoryBytes } from './spool.js';

const schema = policyBlock(
  {
    allowed_extensions: Type.Array(Type.String({ minLength: 1 }), {
      default: [...DEFAULT_EXTENSIONS],
      minItems: 1,
      description:
        'file extensions accepted (lowercase, without the dot); each must be a kind the gate can verify: png, jpg, jpeg, jpe, gif, pdf, tif, tiff, bmp',
    }),
    allow_octet_stream: Type.Boolean({
      default: false,
      description:
        'accept a declared Content-Type of application/octet-stream for any allowed extension (the magic bytes still decide)',
    }),
    allow_double_extensions: Type.Boolean({
      default: false,
      description:
        'accept names whose inner extension is dangerous (receipt.php.png); off, they are refused (check "extension")',
    }),
    max_file_size: Size('16MB', 'largest file part; 413 payload_too_large'),
    max_total_size: Size('64MB', 'largest sum of file parts in one request; 413 payload_too_large'),
    max_request_size: Size(
      '65MB',
      'largest multipart body, as sent; decided from Content-Length before reading when present; 413',
    ),
    max_files: Type.Integer({
      minimum: 1,
      default: 10,
      description: 'most file parts in one request; 400 upload_rejected (check "count")',
    }),
    max_fields: Type.Integer({
      minimum: 0,
      default: 20,
      description: 'most text fields in one request; 400 (check "count")',
    }),
    max_parts: Type.Integer({
      minimum: 1,
      default: 40,
      description: 'most parts of any kind, including ignored ones; 400 (check "count")',
    }),
    max_field_size: Size('16KB', 'longest text field value; 413 payload_too_large'),
    max_filename_length: Type.Integer({
      minimum: 16,
      maximum: 255,
      default: 128,
      description: 'longest forwarded filename (UTF-16 units, extension kept); longer names are cut',
    }),
    filename_normalization: Type.Union([Type.Literal('NFKC'), Type.Literal('NFC')], {
      default: 'NFKC',
      description:
        'Unicode normalisation of filenames before sanitizing (NFKC also folds look-alike compatibility characters)',
    }),
    scan_markup: Type.Boolean({
      default: true,
      description:
        'refuse files that contain HTML, SVG or server-script openers anywhere (polyglots); check "content"',
    }),
    scan_archives: Type.Boolean({
      default: true,
      description:
        'refuse files with a ZIP/JAR archive appended (its end record in the last 64 KB; GIFAR-style polyglots); check "content"',
    }),
    active_content: Type.Union([Type.Literal('reject'), Type.Literal('monitor')], {
      default: 'reject',
      description:
        'PDF actions and image bombs: reject (check "active_content"), or monitor (record the would-be refusal and forward)',
    }),
    pdf_forbidden_names: Type.Array(Type.String({ minLength: 1, pattern: '^[A-Za-z0-9]+$' }), {
      default: ['JavaScript', 'JS', 'Launch', 'OpenAction'],
      description:
        'PDF names that mark active content (without the slash); e.g. add AA, RichMedia, EmbeddedFile, XFA, SubmitForm',
    }),
    pdf_max_object_stream: Size(
      '8MB',
      'largest compressed PDF object stream inspected; a larger one counts as active content',
    ),
    pdf_max_inflated: Size('32MB', 'largest inflated PDF object stream; beyond, it counts as active content'),
    max_image_pixels: Type.Integer({
      minimum: 1,
      default: 100_000_000,
      description:
        'most pixels an image header may declare (width × height; largest TIFF page); beyond is a decompression bomb',
    }),
    max_image_side: Type.Integer({
      minimum: 1,
      default: 30_000,
      description: 'longest image side in pixels an image header may declare',
    }),
    require_multipart: Type.Boolean({
      default: false,
      description:
        'refuse a request body that is not multipart/form-data (check "type"); off, such bodies are left to the other policies',
    }),
    memory_buffer: Size(
      '64KB',
      'upload bytes one request keeps in memory before spooling to disk (NGINX client_body_buffer_size)',
    ),
    memory_buffer_total: Size(
      '16MB',
      'upload bytes all requests of the process keep in memory together before spooling to disk',
    ),
    spool_dir: Type.String({
      default: '',
      description: 'directory for spool files (relative to gateway.yaml); empty: the OS temp directory',
    }),
    idle_timeout: Duration(
      '30s',
      'longest pause between two chunks of an upload; then 400 upload_rejected (check "malformed")',
    ),
    body_timeout: Duration(
      '5m',
      'longest time to receive a whole upload; then 400 upload_rejected (check "malformed")',
    ),
    spool_max_age: Duration(
      '15m',
      'spool files of an accepted upload are removed after this time even if the upstream exchange never ended',
    ),
  },
  {
    description: 'upload gating: streamed multipart inspection, spooling, checks, filename sanitizing',
    enabled: false,
  },
);

/**
 * `upload_gate`: on routes where it is enabled, multipart/form-data bodies are parsed as
 * they arrive (busboy) and spooled (memory, then a temp directory). Every file part is
 * checked: extension on the allowlist, no dangerous inner extension, declared
 * Content-Type consistent with the extension, magic bytes (file-type) consistent with
 * both, markup/script openers (polyglots), PDF actions, image header dimensions, size and
 * count limits. Only when every part passed is the body re-encoded from the spool with
 * sanitized filenames and an exact Content-Length into `ctx.forwardBody`; the text fields
 * and filenames go to `ctx.body` for the pattern engine. Refusals: 400 `upload_rejected`
 * (`detail.check` = extension | type | content | size | count | filename | active_content
 * | malformed) and 413 `payload_too_large` (`detail.check` = size).
 *
 * Monitor mode applies to the content checks (the body was read whole, so it can still be
 * forwarded); limits and malformed bodies are always enforced, because a body read in
 * part cannot be forwarded. The compiled policy therefore reports `mode: 'enforce'` to the
 * pipeline and records monitored refusals in `ctx.monitored` itself.
 *
 * ```yaml
 * routes:
 *   - name: receipt-upload
 *     match: { path: /api/receipts/upload, methods: [POST] }
 *     policies:
 *       size_limit: { max_body: 65MB }
 *       upload_gate: { enabled: true, require_multipart: true }
 * ```
 */
/** Methods whose request is expected to carry the upload. */
const BODY_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH']);

export const uploadGate: PolicyFactory<typeof schema> = {
  name: 'upload-gate',
  key: 'upload_gate',
  schema,
  waf: true,
  compile(config, ctx): Policy {
    const at = (key: string) => [...ctx.path, key];
    const kinds = new Map<string, FileKind>();
    config.allowed_extensions.forEach((raw, i) => {
      const ext = raw.trim().replace(/^\.+/, '').toLowerCase();
      if (DANGEROUS_EXTENSIONS.has(ext)) {
        throw new ConfigError(
          `"${raw}" can never be an allowed upload extension (markup, script or executable)`,
          [...at('allowed_extensions'), i],
        );
      }
      const kind = KINDS[ext];
      if (kind === undefined) {
        throw new ConfigError(
          `"${raw}" is not a kind the upload gate can verify (known: ${Object.keys(KINDS).join(', ')})`,
          [...at('allowed_extensions'), i],
        );
      }
      kinds.set(ext, kind);
    });
    const sizeOf = (key: keyof typeof config & string) => {
      try {
        return parseSize(config[key] as string);
      } catch (err) {
        throw new ConfigError((err as Error).message, at(key));
      }
    };
    const durationOf = (key: keyof typeof config & string) => {
      try {
        return parseDuration(config[key] as string);
      } catch (err) {
        throw new ConfigError((err as Error).message, at(key));
      }
    };
    const maxFile = sizeOf('max_file_size');
    const maxTotal = sizeOf('max_total_size');
    const maxRequest = sizeOf('max_request_size');
    if (maxFile < 1) throw new ConfigError('max_file_size must be positive', at('max_file_size'));
    if (maxTotal < maxFile)
      throw new ConfigError('max_total_size must be at least max_file_size', at('max_total_size'));
    if (maxRequest < maxFile)
      throw new ConfigError('max_request_size must be at least max_file_size', at('max_request_size'));
    if (config.max_parts < config.max_files)
      throw new ConfigError('max_parts must be at least max_files', at('max_parts'));
    const dir = config.spool_dir === '' ? os.tmpdir() : path.resolve(ctx.configDir, config.spool_dir);
    try {
      fs.mkdirSync(dir, { recursive: true });
      fs.accessSync(dir, fs.constants.W_OK);
    } catch (err) {
      throw new ConfigError(
        `spool directory ${dir} is not writable: ${(err as Error).message}`,
        at('spool_dir'),
      );
    }
    const removed = sweepStaleSpools(dir);
    if (removed > 0)
      ctx.services.log.info({ dir, removed }, 'removed upload spool directories of dead gateway processes');

    const settings: UploadSettings = {
      kinds,
      allowedList: [...kinds.keys()].join(', '),
      allowOctetStream: config.allow_octet_stream,
      allowDoubleExtensions: config.allow_double_extensions,
      maxFile,
      maxTotal,
      maxRequest,
      maxFiles: config.max_files,
      maxFields: config.max_fields,
      maxParts: config.max_parts,
      maxFieldSize: sizeOf('max_field_size'),
      filename: { normalization: config.filename_normalization, maxLength: config.max_filename_length },
      scanMarkup: config.scan_markup,
      scanArchives: config.scan_archives,
      activeContent: config.active_content,
      pdfNames: new Set(config.pdf_forbidden_names),
      pdfLimits: {
        maxObjectStream: sizeOf('pdf_max_object_stream'),
        maxInflated: sizeOf('pdf_max_inflated'),
      },
      maxImagePixels: config.max_image_pixels,
      maxImageSide: config.max_image_side,
      spool: {
        dir,
        memoryPerRequest: sizeOf('memory_buffer'),
        memoryPerProcess: sizeOf('memory_buffer_total'),
      },
      idleTimeoutMs: durationOf('idle_timeout'),
      bodyTimeoutMs: durationOf('body_timeout'),
      spoolMaxAgeMs: durationOf('spool_max_age'),
      monitor: config.mode === 'monitor',
      services: ctx.services,
    };
    const requireMultipart = config.require_multipart;
    const services = ctx.services;
    const notMultipart = () => reject('type', 'not_multipart', 'the body must be multipart/form-data', {});
    /** Count a refusal of the whole request; in monitor mode record it and let the request on. */
    const refuse = (rctx: RequestContext, deny: Deny): Deny | undefined => {
      services.metrics.uploadRejections.inc({ reason: deny.detail!.check as string });
      if (!settings.monitor) return deny;
      rctx.monitored.push(deny);
      return undefined;
    };

    return {
      name: 'upload-gate',
      // see the factory's comment: monitoring is applied inside, per check
      mode: 'enforce',
      failure: 'closed',
      onIdentified(rctx) {
        // the body phase does not run for a request without a body: where an upload is
        // required, an empty one is refused here (after authentication, as a bad body is)
        if (!requireMultipart || hasBody(rctx) || !BODY_METHODS.has(rctx.method)) return undefined;
        const deny =
          mediaTypeOf(rctx.headers['content-type']) === 'multipart/form-data'
            ? reject('malformed', 'empty', 'the body is empty', {})
            : notMultipart();
        return refuse(rctx, deny);
      },
      async readBody(rctx) {
        const media = mediaTypeOf(rctx.headers['content-type']);
        if (media !== 'multipart/form-data') {
          if (!requireMultipart) return 'skip';
          return refuse(rctx, notMultipart()) ?? 'skip';
        }
        const cl = rctx.headers['content-length'];
        if (cl !== undefined) {
          const n = Number(cl);
          if (Number.isFinite(n) && n > maxRequest) {
            services.metrics.uploadRejections.inc({ reason: 'size' });
            return reject(
              'size',
              'request_too_large',
              `the upload is larger than ${maxRequest} bytes`,
              {},
              { content_length: n, limit: maxRequest },
            );
          }
        }
        return runUpload(rctx, settings);
      },
      onDone(rctx, outcome) {
        // the request is over, whichever way it ended (forwarded, refused by a later policy,
        // upstream error): the spool is no longer needed
        const local = rctx.locals.get(LOCALS_KEY) as UploadLocals | undefined;
        if (local === undefined) return;
        local.dispose();
        // accepted means forwarded: a file a later policy refused never reached the service.
        // The status is the one the client got (the upstream's, 502/504, 499 when it left).
        if (!rctx.forwarded) return;
        for (const u of local.accepted)
          services.audit.request('upload_accepted', rctx, {
            decision: 'allow',
            ...u,
            status: outcome.status,
          });
      },
    };
  },
};
