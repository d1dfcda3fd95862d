import { Type } from '@sinclair/typebox';
import type { PolicyFactory, Policy } from '../../gateway/policy.js';
import { policyBlock, Size } from '../../gateway/config/policy-schema.js';
import { parseSize } from '../../gateway/config/units.js';

const schema = policyBlock(
  {
    max_body: Size(
      '1MB',
      'largest request body; 413 payload_too_large from Content-Length before reading, or while streaming',
    ),
    max_uri: Size('8KB', 'longest request target (path and query); 414 uri_too_long'),
    max_query_params: Type.Integer({
      minimum: 1,
      default: 256,
      description: 'most query parameters; 400 bad_request beyond',
    }),
  },
  { description: 'request size limits (body, URI, query parameter count)' },
);

/**
 * `size_limit`: refuses oversized bodies (413) and URIs (414). The header limit is the
 * listener's `max_header_size` (431). Example (an upload route):
 * ```yaml
 * routes:
 *   - name: upload
 *     policies: { size_limit: { max_body: 100MB } }
 * ```
 */
export const sizeLimit: PolicyFactory<typeof schema> = {
  name: 'size-limit',
  key: 'size_limit',
  schema,
  waf: true,
  compile(config): Policy {
    const maxBody = parseSize(config.max_body);
    const maxUri = parseSize(config.max_uri);
    const maxParams = config.max_query_params;
    return {
      name: 'size-limit',
      mode: config.mode,
      failure: 'closed',
      bodyLimit: maxBody,
      onRequest(ctx) {
        if (ctx.target.length > maxUri)
          return { code: 'uri_too_long', detail: { length: ctx.target.length, limit: maxUri } };
        const cl = ctx.headers['content-length'];
        if (cl !== undefined) {
          const n = Number(cl);
          if (n > maxBody)
            return { code: 'payload_too_large', detail: { content_length: n, limit: maxBody } };
        }
        if (ctx.query !== '') {
          let count = 1;
          const q = ctx.query;
          for (let i = 0; i < q.length; i++) if (q.charCodeAt(i) === 38 /* & */) count++;
          if (count > maxParams) {
            return {
              code: 'bad_request',
              message: 'Too many query parameters.',
              detail: { params: count, limit: maxParams },
            };
          }
        }
        return undefined;
      },
    };
  },
};
