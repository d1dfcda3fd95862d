/**
 * The two "success" audit events, `auth_success` and `upload_accepted`, over real TCP with the
 * shipped config in front of the real mock, read back from the real audit file. Both are
 * written when the request is over and carry the status the client got; `upload_accepted` is
 * written only for an upload the gateway forwarded to the upstream, so a file that a later
 * policy refused (a blocked pattern in another field of the same body) is never reported as
 * accepted. Exactly one line per event and request, also when the client leaves early.
 */
import t from 'tap';
import http from 'node:http';
import { startHarness, type Harness } from '../helpers/harness.js';
import { eventually } from '../helpers/wait.js';
import { png } from '../fixtures/uploads/generate.js';
import { multipart, contentType, type PartSpec } from '../policies/upload-gate/multipart.js';

interface Res {
  status: number;
  json: Record<string, unknown>;
}

type Line = Record<string, unknown>;

/** POST an upload; the request id is chosen by the test so its audit lines can be found. */
function upload(
  h: Harness,
  id: string,
  token: string,
  parts: PartSpec[],
  extra: Record<string, string> = {},
): Promise<Res> {
  const body = multipart(parts);
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${h.url}/api/receipts/upload`,
      {
        method: 'POST',
        agent: false,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': contentType(),
          'content-length': String(body.length),
          'x-request-id': id,
          ...extra,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            json: JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The request's audit lines, as [event, status, decision], in file order. */
async function linesOf(h: Harness, id: string): Promise<Line[]> {
  return (await h.audit()).filter((l) => l.request_id === id);
}
const summary = (lines: Line[]) => lines.map((l) => [l.event, l.status, l.decision]);

const receipt = (): PartSpec => ({ name: 'file', filename: 'r.png', type: 'image/png', data: png() });

t.test('auth_success and upload_accepted carry the final status', async (t) => {
  const h = await startHarness({
    config: `
upstream:
  response_timeout: 500ms
policies:
  auth:
    audit_success_sample_rate: 1
`,
  });
  t.teardown(() => h.close());
  const token = await h.login('alice');

  await t.test('a forwarded upload: one upload_accepted per file with the upstream status', async (t) => {
    await h.clearMock();
    const r = await upload(h, 'up-ok-1', token, [
      { name: 'merchant', data: 'Corner Shop' },
      receipt(),
      { name: 'file', filename: 's.png', type: 'image/png', data: png(5, 5) },
    ]);
    t.equal(r.status, 201);
    t.equal((await h.mockRequests()).length, 1, 'the upstream received it');
    const lines = await linesOf(h, 'up-ok-1');
    t.same(summary(lines), [
      ['api_access', 201, 'allow'],
      ['auth_success', 201, 'allow'],
      ['upload_accepted', 201, 'allow'],
      ['upload_accepted', 201, 'allow'],
    ]);
    const accepted = lines.filter((l) => l.event === 'upload_accepted');
    t.match(accepted, [
      { filename: 'r.png', type: 'image/png', size: png().length, subject: 'alice', route: 'upload' },
      { filename: 's.png', type: 'image/png', size: png(5, 5).length, subject: 'alice', route: 'upload' },
    ]);
    t.match(
      lines.find((l) => l.event === 'auth_success'),
      {
        subject: 'alice',
        auth_method: 'jwt',
        path: '/api/receipts/upload',
      },
    );
  });

  await t.test('a file refused by pattern_block in another field is not reported accepted', async (t) => {
    await h.clearMock();
    const r = await upload(h, 'up-blocked-1', token, [
      { name: 'merchant', data: "1' UNION SELECT password FROM users--" },
      receipt(),
    ]);
    t.equal(r.status, 403);
    t.equal(r.json.error, 'request_blocked');
    t.same(await h.mockRequests(), [], 'the upstream never received it');
    const lines = await linesOf(h, 'up-blocked-1');
    t.same(summary(lines), [
      ['request_blocked', 403, 'deny'],
      ['auth_success', 403, 'allow'],
    ]);
    t.notOk(
      lines.some((l) => l.event === 'upload_accepted'),
      'no upload_accepted line',
    );
  });

  await t.test('an upstream that does not answer in time: upload_accepted with the 504', async (t) => {
    await h.clearMock();
    const r = await upload(h, 'up-timeout-1', token, [receipt()], { 'x-mock-delay-ms': '5000' });
    t.equal(r.status, 504);
    t.equal(r.json.error, 'gateway_timeout');
    t.equal((await h.mockRequests()).length, 1, 'the upstream received the file');
    t.same(summary(await linesOf(h, 'up-timeout-1')), [
      ['api_access', 504, 'allow'],
      ['auth_success', 504, 'allow'],
      ['upload_accepted', 504, 'allow'],
    ]);
  });

  await t.test('the client leaves while the upstream answers: one line each, status 499', async (t) => {
    await h.clearMock();
    const body = multipart([receipt()]);
    const req = http.request(`${h.url}/api/receipts/upload`, {
      method: 'POST',
      agent: false,
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': contentType(),
        'content-length': String(body.length),
        'x-request-id': 'up-gone-1',
        'x-mock-delay-ms': '3000',
      },
    });
    const closed = new Promise<void>((resolve) => req.once('close', () => resolve()));
    req.on('error', () => {});
    req.on('response', () => t.fail('no response expected'));
    req.end(body);
    await eventually('the upstream received the upload', async () => (await h.mockRequests()).length === 1);
    req.destroy();
    await closed;
    await eventually('the request was accounted for', async () =>
      (await linesOf(h, 'up-gone-1')).some((l) => l.event === 'api_access'),
    );
    // a moment more: nothing else is written for the request (the upstream request was cancelled)
    await new Promise((r) => setTimeout(r, 300));
    t.same(summary(await linesOf(h, 'up-gone-1')), [
      ['api_access', 499, 'allow'],
      ['auth_success', 499, 'allow'],
      ['upload_accepted', 499, 'allow'],
    ]);
  });

  await t.test('auth_success carries the status of a refusal after authentication', async (t) => {
    await h.clearMock();
    const r = await fetch(`${h.url}/api/admin/users`, {
      headers: { authorization: `Bearer ${token}`, 'x-request-id': 'auth-403-1' },
    });
    await r.arrayBuffer();
    t.equal(r.status, 403);
    t.same(await h.mockRequests(), [], 'the upstream never received it');
    t.same(summary(await linesOf(h, 'auth-403-1')), [
      ['access_denied', 403, 'deny'],
      ['auth_success', 403, 'allow'],
    ]);

    const ok = await fetch(`${h.url}/api/receipts`, {
      headers: { authorization: `Bearer ${token}`, 'x-request-id': 'auth-200-1' },
    });
    await ok.arrayBuffer();
    t.equal(ok.status, 200);
    t.same(summary(await linesOf(h, 'auth-200-1')), [
      ['api_access', 200, 'allow'],
      ['auth_success', 200, 'allow'],
    ]);
  });
});

t.test('auth_success sampled out: no line, whatever the outcome', async (t) => {
  const h = await startHarness({ config: 'policies: { auth: { audit_success_sample_rate: 0 } }' });
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const r = await upload(h, 'up-unsampled-1', token, [receipt()]);
  t.equal(r.status, 201);
  t.same(summary(await linesOf(h, 'up-unsampled-1')), [
    ['api_access', 201, 'allow'],
    ['upload_accepted', 201, 'allow'],
  ]);
});
