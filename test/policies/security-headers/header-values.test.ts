/**
 * Header names and values written by the gateway from the configuration (security_headers
 * values, cors allow_methods / allow_headers / expose_headers) are refused at load when they
 * cannot be sent. They used to load: Node then refused the whole response head, so every
 * response on the route ended in a closed connection with no answer (a line break in a CSP, a
 * "☃" in a header value, a space in an exposed header name).
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfigFile, ConfigLoadError, type ConfigProblem } from '../../../gateway/config/load.js';
import { compileGeneration, closeGeneration } from '../../../gateway/config/compile.js';
import { offlineServices } from '../../../gateway/commands/validate.js';
import { startHarness } from '../../helpers/harness.js';

const SECRET = 'header-values-secret-0123456789-abcdefgh';
const VALUE_RULE =
  'a header value: printable US-ASCII, spaces and tabs (no line breaks or control characters)';
const NAME_RULE = 'a header name (a token, no spaces or commas)';
const METHOD_RULE = 'an HTTP method (a token)';

/** The problem reported for a value (or name) that cannot be sent, at file:line:column. */
function invalid(
  file: string,
  line: number,
  column: number,
  keyPath: string,
  value: string,
  rule: string,
): ConfigProblem {
  return { file, line, column, keyPath, message: `invalid value "${value}": ${rule}` };
}

t.test('refused at load: a value or name that cannot be sent, with file:line:column', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-header-values-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  const problemsOf = async (policies: string): Promise<[string, readonly ConfigProblem[]]> => {
    const file = path.join(dir, `c${++n}.yaml`);
    fs.writeFileSync(
      file,
      `upstream:\n  url: http://127.0.0.1:9\npolicies:\n  auth:\n    jwt:\n      secret: \${JWT_SECRET_KEY}\n${policies}routes:\n  - name: api\n    path: /api/**\n`,
    );
    const env = { JWT_SECRET_KEY: SECRET };
    const services = offlineServices(env);
    try {
      const gen = await compileGeneration(await loadConfigFile(file, env), services);
      await closeGeneration(gen);
      return [file, []];
    } catch (err) {
      if (err instanceof ConfigLoadError) return [file, err.problems];
      throw err;
    } finally {
      await services.store.close();
    }
  };

  let [file, problems] = await problemsOf(
    '  security_headers:\n' +
      '    headers:\n' +
      "      Content-Security-Policy: \"default-src 'self';\\n script-src 'self'\"\n" +
      '      X-Snowman: "\u2603"\n' +
      '    extra:\n' +
      '      X-Bell: "a\\u0007b"\n',
  );
  t.same(problems, [
    invalid(
      file,
      9,
      32,
      'policies.security_headers.headers.Content-Security-Policy',
      "default-src 'self';\\n script-src 'self'",
      VALUE_RULE,
    ),
    invalid(file, 10, 18, 'policies.security_headers.headers.X-Snowman', '\u2603', VALUE_RULE),
    invalid(file, 12, 15, 'policies.security_headers.extra.X-Bell', 'a\\u0007b', VALUE_RULE),
  ]);

  [file, problems] = await problemsOf(
    '  cors:\n' +
      '    allow_methods: [GET, "PUT\\r\\nX-Injected: 1"]\n' +
      '    allow_headers: [Content-Type, "X-Client Version"]\n' +
      '    expose_headers: ["X-Request-Id, Retry-After"]\n',
  );
  t.same(problems, [
    invalid(file, 8, 26, 'policies.cors.allow_methods[1]', 'PUT\\r\\nX-Injected: 1', METHOD_RULE),
    invalid(file, 9, 35, 'policies.cors.allow_headers[1]', 'X-Client Version', NAME_RULE),
    invalid(file, 10, 22, 'policies.cors.expose_headers[0]', 'X-Request-Id, Retry-After', NAME_RULE),
  ]);

  [file, problems] = await problemsOf(
    '  security_headers:\n' +
      '    extra:\n' +
      "      Content-Security-Policy: \"default-src 'none'; frame-ancestors 'none'\"\n" +
      '      X-Tabbed: "a\\tb"\n' +
      '      Server: null\n' +
      '  cors:\n' +
      '    allow_methods: [GET, PATCH, PROPFIND]\n' +
      '    allow_headers: ["*", X-Client-Version]\n',
  );
  t.same(problems, [], 'quotes, semicolons, tabs, null and the "*" token are fine');
});

t.test('over TCP: a reload with an unsendable value is refused and the old headers stay', async (t) => {
  const h = await startHarness({
    config: 'policies: { security_headers: { extra: { X-Route-Note: "v1; a=b" } } }',
  });
  t.teardown(() => h.close());
  const health = async () => {
    const r = await fetch(`${h.url}/api/health`, { headers: { origin: 'http://localhost:10000' } });
    await r.text();
    return r;
  };
  let r = await health();
  t.equal(r.status, 200);
  t.equal(r.headers.get('x-route-note'), 'v1; a=b');

  await t.rejects(
    h.reload('policies: { security_headers: { extra: { X-Route-Note: "v2\\r\\nSet-Cookie: a=b" } } }'),
    /policies\.security_headers\.extra\.X-Route-Note: invalid value/,
  );
  await t.rejects(
    h.reload('policies: { cors: { expose_headers: ["X-Request-Id\\nX-Other"] } }'),
    /policies\.cors\.expose_headers\[0\]: invalid value/,
  );
  r = await health();
  t.equal(r.status, 200, 'still answered');
  t.equal(r.headers.get('x-route-note'), 'v1; a=b', 'under the old configuration');
  t.equal(r.headers.get('set-cookie'), null);
  t.equal(
    r.headers.get('access-control-expose-headers'),
    'X-Request-Id, Retry-After, RateLimit, RateLimit-Policy',
  );
  t.equal(r.headers.get('access-control-allow-origin'), 'http://localhost:10000');
});
