/**
 * The mock receipt service (upstream-mock/), over real TCP: every route's status and body,
 * JWTs (HS256 secret, RS256/ES256 JWKS and rotation), recording, multipart parsing,
 * WebSocket echo and the CLI entry.
 */
import t from 'tap';
import type { Test } from 'tap';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import type { JSONWebKeySet } from 'jose';
import { WebSocket } from 'ws';
import { startMock, FIXTURE_USERS, MAX_SLOW_MS } from '../../upstream-mock/server.js';
import type { MockHandle, MockRecord } from '../../upstream-mock/server.js';
import { MAX_RECORDS, RecordLog, EMPTY_SHA256 } from '../../upstream-mock/record.js';
import { seedReceipts } from '../../upstream-mock/receipts.js';

const SECRET = 'test-secret-for-the-mock-0123456789abcdef';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

async function withMock(env: Record<string, string | undefined>, t2: Test): Promise<MockHandle> {
  const mock = await startMock({
    port: 0,
    env: {
      JWT_SECRET_KEY: SECRET,
      MOCK_RECORD: undefined,
      MOCK_JWT_ALG: undefined,
      MOCK_DELAY_MS: undefined,
      ...env,
    },
  });
  t2.teardown(() => mock.close());
  return mock;
}

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A plain node:http request (for headers fetch would refuse or rewrite). */
function raw(
  url: string,
  opts: { method?: string; headers?: OutgoingHttpHeaders; body?: Buffer | string } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { method: opts.method ?? 'GET', headers: opts.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

async function json(res: Response): Promise<unknown> {
  return JSON.parse(await res.text()) as unknown;
}

function sha256(b: Buffer | string): string {
  return createHash('sha256').update(b).digest('hex');
}

function multipart(
  boundary: string,
  parts: { field: string; filename?: string; type?: string; content: Buffer | string }[],
): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.field}"`;
    if (p.filename !== undefined) head += `; filename="${p.filename}"`;
    head += '\r\n';
    if (p.type !== undefined) head += `Content-Type: ${p.type}\r\n`;
    chunks.push(Buffer.from(`${head}\r\n`), Buffer.from(p.content), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

async function login(mock: MockHandle, username: string, password: string): Promise<string> {
  const res = await fetch(`${mock.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (res.status !== 200) throw new Error(`login answered ${res.status}`);
  return ((await json(res)) as { token: string }).token;
}

async function jwks(mock: MockHandle): Promise<JSONWebKeySet> {
  const res = await fetch(`${mock.url}/.well-known/jwks.json`);
  if (res.status !== 200) throw new Error(`jwks answered ${res.status}`);
  return (await json(res)) as JSONWebKeySet;
}

t.test('health, identifying headers, HEAD, unknown routes, wrong methods', async (t) => {
  const mock = await withMock({}, t);
  const res = await fetch(`${mock.url}/api/health`);
  t.equal(res.status, 200);
  t.equal(res.headers.get('server'), 'receipt-mock');
  t.equal(res.headers.get('x-powered-by'), 'mock');
  t.match(res.headers.get('content-type'), /^application\/json/);
  t.same(await json(res), { status: 'ok' });

  const head = await raw(`${mock.url}/api/health`, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.body.length, 0);

  const unknown = await fetch(`${mock.url}/nope`);
  t.equal(unknown.status, 404);
  t.equal(unknown.headers.get('server'), 'receipt-mock');
  t.same(await json(unknown), { error: 'not_found', message: 'no such resource' });
  t.equal((await fetch(`${mock.url}/api/receipts/1/extra`)).status, 404);
  t.equal((await fetch(`${mock.url}/api/health/`)).status, 404);

  const wrong = await fetch(`${mock.url}/api/health`, { method: 'POST', body: 'x' });
  t.equal(wrong.status, 405);
  t.equal(wrong.headers.get('allow'), 'GET, HEAD, OPTIONS');
  t.same(await json(wrong), { error: 'method_not_allowed', message: 'method POST not allowed' });
  const put = await fetch(`${mock.url}/api/receipts/1`, { method: 'PUT', body: '{}' });
  t.equal(put.status, 405);
  t.equal(put.headers.get('allow'), 'GET, HEAD, DELETE, OPTIONS');
  const opts = await fetch(`${mock.url}/api/receipts`, { method: 'OPTIONS' });
  t.equal(opts.status, 204);
  t.equal(opts.headers.get('allow'), 'GET, HEAD, POST, OPTIONS');

  t.equal((await fetch(`${mock.url}/.well-known/jwks.json`)).status, 404, 'no JWKS with HS256');
});

t.test('GET /api/receipts: list, filters, sort, validation', async (t) => {
  const mock = await withMock({}, t);
  const seed = seedReceipts();
  type List = { receipts: { id: number; merchant: string; date: string; total: number }[]; count: number };

  const all = (await json(await fetch(`${mock.url}/api/receipts`))) as List;
  t.equal(all.count, 24);
  t.same(all.receipts, seed);

  const shell = (await json(await fetch(`${mock.url}/api/receipts?merchant=sHeLL`))) as List;
  t.same(
    shell.receipts.map((r) => r.id),
    [2, 10, 18],
  );
  t.ok(shell.receipts.every((r) => r.merchant === 'Shell'));

  const range = (await json(await fetch(`${mock.url}/api/receipts?from=2024-03-01&to=2024-04-30`))) as List;
  const expected = seed.filter((r) => r.date >= '2024-03-01' && r.date <= '2024-04-30').map((r) => r.id);
  t.ok(expected.length > 0);
  t.same(
    range.receipts.map((r) => r.id),
    expected,
  );
  t.equal(range.count, expected.length);

  const byTotal = (await json(await fetch(`${mock.url}/api/receipts?sort=-total`))) as List;
  const totals = byTotal.receipts.map((r) => r.total);
  t.same(
    totals,
    [...seed.map((r) => r.total)].sort((a, b) => b - a),
  );
  const byDate = (await json(await fetch(`${mock.url}/api/receipts?sort=date&merchant=target`))) as List;
  const dates = byDate.receipts.map((r) => r.date);
  t.same(dates, [...dates].sort());
  t.equal(byDate.count, 3);

  const ignored = await fetch(`${mock.url}/api/receipts?unrelated=1`);
  t.equal(ignored.status, 200);
  t.equal(((await json(ignored)) as List).count, 24);

  const badSort = await fetch(`${mock.url}/api/receipts?sort=price`);
  t.equal(badSort.status, 400);
  t.equal(((await json(badSort)) as { error: string }).error, 'bad_request');
  t.equal((await fetch(`${mock.url}/api/receipts?from=yesterday`)).status, 400);
  t.equal((await fetch(`${mock.url}/api/receipts?to=2024-13-01`)).status, 400);
});

t.test('receipt by id, create, delete', async (t) => {
  const mock = await withMock({}, t);
  const one = await fetch(`${mock.url}/api/receipts/3`);
  t.equal(one.status, 200);
  t.same(await json(one), seedReceipts()[2]);
  t.equal((await fetch(`${mock.url}/api/receipts/999`)).status, 404);
  const abc = await fetch(`${mock.url}/api/receipts/abc`);
  t.equal(abc.status, 404);
  t.same(await json(abc), { error: 'not_found', message: 'receipt not found' });

  const created = await fetch(`${mock.url}/api/receipts`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      merchant: 'Corner Shop',
      total: 12.5,
      date: '2024-12-24',
      items: [{ name: 'tea', quantity: 2, price: 6.25 }],
    }),
  });
  t.equal(created.status, 201);
  t.equal(created.headers.get('location'), '/api/receipts/25');
  const body = (await json(created)) as Record<string, unknown>;
  t.same(body, {
    id: 25,
    merchant: 'Corner Shop',
    date: '2024-12-24',
    total: 12.5,
    currency: 'USD',
    category: 'uncategorized',
    items: [{ name: 'tea', quantity: 2, price: 6.25 }],
  });
  t.same(await json(await fetch(`${mock.url}/api/receipts/25`)), body);
  t.equal(((await json(await fetch(`${mock.url}/api/receipts`))) as { count: number }).count, 25);

  const badJson = await fetch(`${mock.url}/api/receipts`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"merchant":',
  });
  t.equal(badJson.status, 400);
  t.same(await json(badJson), { error: 'bad_request', message: 'body is not valid JSON' });
  const noMerchant = await fetch(`${mock.url}/api/receipts`, {
    method: 'POST',
    body: JSON.stringify({ total: 1 }),
  });
  t.equal(noMerchant.status, 400);
  t.match(((await json(noMerchant)) as { message: string }).message, /merchant/);
  t.equal(
    (
      await fetch(`${mock.url}/api/receipts`, {
        method: 'POST',
        body: JSON.stringify({ merchant: 'x', total: -1 }),
      })
    ).status,
    400,
  );
  t.equal((await fetch(`${mock.url}/api/receipts`, { method: 'POST', body: '[1,2]' })).status, 400);
  t.equal((await fetch(`${mock.url}/api/receipts`, { method: 'POST' })).status, 400, 'empty body');
  const huge = await fetch(`${mock.url}/api/receipts`, {
    method: 'POST',
    body: Buffer.alloc(1024 * 1024 + 1, 0x20),
  });
  t.equal(huge.status, 413);

  const del = await fetch(`${mock.url}/api/receipts/3`, { method: 'DELETE' });
  t.equal(del.status, 204);
  t.equal(del.headers.get('server'), 'receipt-mock');
  t.equal(await del.text(), '');
  t.equal((await fetch(`${mock.url}/api/receipts/3`)).status, 404);
  t.equal((await fetch(`${mock.url}/api/receipts/3`, { method: 'DELETE' })).status, 204, 'idempotent');
  const list = (await json(await fetch(`${mock.url}/api/receipts`))) as {
    receipts: { id: number }[];
    count: number;
  };
  t.equal(list.count, 24);
  t.notOk(list.receipts.some((r) => r.id === 3));
});

t.test('login: HS256 tokens, form bodies, failures', async (t) => {
  const mock = await withMock({}, t);
  t.equal(mock.secret, SECRET);
  t.equal(mock.secretGenerated, false);
  t.equal(mock.alg, 'HS256');

  const token = await login(mock, 'alice', 'alice-secret-pw');
  const key = new TextEncoder().encode(SECRET);
  const { payload, protectedHeader } = await jwtVerify(token, key, {
    issuer: 'receipt-mock',
    algorithms: ['HS256'],
  });
  t.equal(protectedHeader.alg, 'HS256');
  t.equal(payload.sub, 'alice');
  t.equal(payload.role, 'user');
  t.equal(payload.iss, 'receipt-mock');
  t.equal(typeof payload.iat, 'number');
  t.equal(payload.exp! - payload.iat!, 3600);

  const adminToken = await login(mock, 'admin', 'admin-secret-pw');
  t.equal((await jwtVerify(adminToken, key)).payload.role, 'admin');

  const form = await fetch(`${mock.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'username=alice&password=alice-secret-pw',
  });
  t.equal(form.status, 200);
  const formToken = ((await json(form)) as { token: string }).token;
  t.equal((await jwtVerify(formToken, key)).payload.sub, 'alice');

  await t.rejects(
    jwtVerify(token, new TextEncoder().encode('another-secret-another-secret-another')),
    'not verifiable with another secret',
  );

  for (const [username, password] of [
    ['alice', 'wrong'],
    ['admin', 'alice-secret-pw'],
    ['mallory', 'x'],
    ['constructor', 'x'],
  ]) {
    const res = await fetch(`${mock.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
    t.equal(res.status, 401, `${username} refused`);
    t.same(await json(res), { error: 'invalid_credentials', message: 'invalid username or password' });
  }
  const missing = await fetch(`${mock.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"username":"alice"}',
  });
  t.equal(missing.status, 400);
  const broken = await fetch(`${mock.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{',
  });
  t.equal(broken.status, 400);
  t.same(await json(broken), { error: 'bad_request', message: 'body is not valid JSON' });

  const signed = await mock.sign({ sub: 'bob', role: 'user', exp: 1000 });
  const decoded = await jwtVerify(signed, key, { currentDate: new Date(500_000) });
  t.equal(decoded.payload.exp, 1000, 'sign() lets claims override the defaults');
  await t.rejects(jwtVerify(signed, key), { code: 'ERR_JWT_EXPIRED' });
  t.same(Object.keys(FIXTURE_USERS).sort(), ['admin', 'alice']);
});

t.test('without JWT_SECRET_KEY a random 48-character secret is generated and used', async (t) => {
  const mock = await withMock({ JWT_SECRET_KEY: undefined }, t);
  // (an env key present with the value undefined means "unset", whatever process.env holds)
  t.equal(mock.secretGenerated, true);
  t.equal(mock.secret.length, 48);
  const token = await login(mock, 'alice', 'alice-secret-pw');
  t.equal((await jwtVerify(token, new TextEncoder().encode(mock.secret))).payload.sub, 'alice');
  const other = await withMock({ JWT_SECRET_KEY: '' }, t);
  t.not(other.secret, mock.secret);
});

t.test('register, password change, admin listing', async (t) => {
  const mock = await withMock({}, t);
  const reg = await fetch(`${mock.url}/api/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'bob', password: 'Str0ng!pass' }),
  });
  t.equal(reg.status, 201);
  t.same(await json(reg), { username: 'bob', role: 'user' });
  const formReg = await fetch(`${mock.url}/api/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'username=carol&password=x',
  });
  t.equal(formReg.status, 201);
  t.equal(
    (
      await fetch(`${mock.url}/api/auth/register`, {
        method: 'POST',
        body: JSON.stringify({ username: 'bob' }),
      })
    ).status,
    400,
  );
  t.equal(
    (
      await fetch(`${mock.url}/api/auth/register`, {
        method: 'POST',
        body: JSON.stringify({ username: 'a b', password: 'x' }),
      })
    ).status,
    400,
  );
  t.equal(
    (
      await fetch(`${mock.url}/api/auth/register`, {
        method: 'POST',
        body: JSON.stringify({ username: 'alice', password: 'x' }),
      })
    ).status,
    409,
  );

  const pw = await fetch(`${mock.url}/api/auth/password`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ old_password: 'a', new_password: 'b' }),
  });
  t.equal(pw.status, 204);
  t.equal(await pw.text(), '');
  const pwBad = await fetch(`${mock.url}/api/auth/password`, {
    method: 'POST',
    body: JSON.stringify({ new_password: 'b' }),
  });
  t.equal(pwBad.status, 400);
  t.same(await json(pwBad), { error: 'bad_request', message: 'old_password and new_password are required' });

  const users = await fetch(`${mock.url}/api/admin/users`);
  t.equal(users.status, 200);
  t.same(await json(users), {
    users: [
      { username: 'alice', role: 'user' },
      { username: 'admin', role: 'admin' },
    ],
    count: 2,
  });
});

t.test('whoami, echo-headers, slow, big, set-cookie', async (t) => {
  const mock = await withMock({}, t);
  const who = await fetch(`${mock.url}/api/whoami`, {
    headers: {
      'x-auth-subject': 'alice',
      'x-auth-roles': 'user, auditor',
      'x-auth-method': 'api_key',
      'x-auth-key-id': 'k1',
      authorization: 'Bearer x',
    },
  });
  t.equal(who.status, 200);
  t.same(await json(who), {
    subject: 'alice',
    roles: ['user', 'auditor'],
    roles_header: 'user, auditor',
    method: 'api_key',
    key_id: 'k1',
    authorization_present: true,
  });
  t.same(await json(await fetch(`${mock.url}/api/whoami`)), {
    subject: null,
    roles: [],
    roles_header: null,
    method: null,
    key_id: null,
    authorization_present: false,
  });

  const echo = await raw(`${mock.url}/api/echo-headers?x=1`, {
    headers: { 'X-Forwarded-For': ['10.0.0.1', '10.0.0.2'], Cookie: ['a=1', 'b=2'], 'X-Custom': 'v' },
  });
  t.equal(echo.status, 200);
  const echoed = JSON.parse(echo.body.toString()) as Record<string, string>;
  t.equal(echoed['x-forwarded-for'], '10.0.0.1, 10.0.0.2');
  t.equal(echoed.cookie, 'a=1; b=2');
  t.equal(echoed['x-custom'], 'v');
  t.equal(echoed.host, `127.0.0.1:${mock.port}`);
  t.equal(echoed.connection, 'close');
  const longHeader = await raw(`${mock.url}/api/echo-headers`, {
    headers: { 'x-long': 'a'.repeat(40 * 1024) },
  });
  t.equal(longHeader.status, 200, 'headers up to 64 KB are accepted (the gateway enforces its own limit)');
  t.equal((JSON.parse(longHeader.body.toString()) as Record<string, string>)['x-long']!.length, 40 * 1024);

  const slow = await fetch(`${mock.url}/api/slow?ms=20`);
  t.equal(slow.status, 200);
  t.same(await json(slow), { slept_ms: 20 });
  t.equal((await fetch(`${mock.url}/api/slow?ms=-5`)).status, 400);
  t.equal((await fetch(`${mock.url}/api/slow?ms=abc`)).status, 400);
  t.equal(MAX_SLOW_MS, 30_000);

  const big = await fetch(`${mock.url}/api/big?kb=3`);
  t.equal(big.status, 200);
  const bigText = await big.text();
  t.equal(bigText.length, 3072);
  t.equal(big.headers.get('content-length'), '3072');
  t.match(JSON.parse(bigText), { data: /^x+$/ });
  t.equal((await fetch(`${mock.url}/api/big?kb=0`)).status, 400);
  const capped = await fetch(`${mock.url}/api/big?kb=999999`);
  t.equal(capped.headers.get('content-length'), String(32 * 1024 * 1024), 'bounded to 32 MB');
  await capped.body?.cancel();

  const cookies = await fetch(`${mock.url}/api/set-cookie`);
  t.equal(cookies.status, 200);
  t.same(cookies.headers.getSetCookie(), [
    'session=abc; Path=/',
    'theme=dark; Path=/; HttpOnly; Secure; SameSite=Strict',
  ]);
  t.same(await json(cookies), { ok: true });
});

t.test('uploads: multipart parts reported and recorded', async (t) => {
  const mock = await withMock({ MOCK_RECORD: '1' }, t);
  const png = Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    Buffer.alloc(5000, 7),
  ]);
  const pdf = Buffer.from('%PDF-1.4\n% receipt\n');
  const boundary = '----mockboundary42';
  const body = multipart(boundary, [
    { field: 'note', content: 'two receipts' },
    { field: 'file', filename: 'scan.png', type: 'image/png', content: png },
    { field: 'file', filename: '../../etc/évil name.pdf', type: 'application/pdf', content: pdf },
  ]);
  const res = await raw(`${mock.url}/api/receipts/upload`, {
    method: 'POST',
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': body.length },
    body,
  });
  t.equal(res.status, 201);
  t.same(JSON.parse(res.body.toString()), {
    files: [
      {
        field: 'file',
        filename: 'scan.png',
        size: png.length,
        sha256: sha256(png),
        content_type: 'image/png',
      },
      {
        field: 'file',
        filename: '../../etc/évil name.pdf',
        size: pdf.length,
        sha256: sha256(pdf),
        content_type: 'application/pdf',
      },
    ],
  });

  const records = (await json(await fetch(`${mock.url}/__mock/requests`))) as MockRecord[];
  t.equal(records.length, 1, '/__mock/* requests are not recorded');
  const rec = records[0]!;
  t.equal(rec.method, 'POST');
  t.equal(rec.path, '/api/receipts/upload');
  t.equal(rec.body_size, body.length);
  t.equal(rec.body_sha256, sha256(body));
  t.equal(rec.status, 201);
  t.same(rec.parts, [
    { field: 'file', filename: 'scan.png', size: png.length, content_type: 'image/png' },
    { field: 'file', filename: '../../etc/évil name.pdf', size: pdf.length, content_type: 'application/pdf' },
  ]);
  t.equal(rec.headers['content-type'], `multipart/form-data; boundary=${boundary}`);

  // A larger upload through fetch's own multipart encoder (streams, several chunks).
  const large = Buffer.alloc(3 * 1024 * 1024, 0xab);
  const fd = new FormData();
  fd.append('file', new Blob([large], { type: 'image/jpeg' }), 'big.jpg');
  const up = await fetch(`${mock.url}/api/receipts/upload`, { method: 'POST', body: fd });
  t.equal(up.status, 201);
  t.same(await json(up), {
    files: [
      {
        field: 'file',
        filename: 'big.jpg',
        size: large.length,
        sha256: sha256(large),
        content_type: 'image/jpeg',
      },
    ],
  });

  const noFile = multipart(boundary, [{ field: 'note', content: 'nothing attached' }]);
  const r400 = await raw(`${mock.url}/api/receipts/upload`, {
    method: 'POST',
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    body: noFile,
  });
  t.equal(r400.status, 400);
  t.same(JSON.parse(r400.body.toString()), { error: 'bad_request', message: 'no file part in the form' });
  const notMultipart = await fetch(`${mock.url}/api/receipts/upload`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{}',
  });
  t.equal(notMultipart.status, 400);
  const empty = await fetch(`${mock.url}/api/receipts/upload`, { method: 'POST' });
  t.equal(empty.status, 400);
  const truncated = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nabc`,
  );
  const rTrunc = await raw(`${mock.url}/api/receipts/upload`, {
    method: 'POST',
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    body: truncated,
  });
  t.equal(rTrunc.status, 400);
  t.match(JSON.parse(rTrunc.body.toString()), { error: 'bad_request', message: /malformed multipart/ });

  // Multipart bodies sent to other routes are recorded with their parts too.
  mock.clear();
  const other = multipart(boundary, [
    { field: 'doc', filename: 'x.gif', type: 'image/gif', content: 'GIF89a' },
  ]);
  await raw(`${mock.url}/api/echo-headers`, {
    method: 'POST',
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    body: other,
  });
  t.same(mock.records()[0]!.parts, [{ field: 'doc', filename: 'x.gif', size: 6, content_type: 'image/gif' }]);
});

t.test('recording: only with MOCK_RECORD=1, what a record holds, clearing', async (t) => {
  const off = await withMock({}, t);
  t.equal(off.recording, false);
  await fetch(`${off.url}/api/health`);
  t.same(off.records(), []);
  for (const [method, path] of [
    ['GET', '/__mock/requests'],
    ['DELETE', '/__mock/requests'],
    ['POST', '/__mock/rotate-key'],
  ] as const) {
    const res = await fetch(`${off.url}${path}`, { method });
    t.equal(res.status, 404, `${method} ${path} absent without MOCK_RECORD`);
    t.same(await json(res), { error: 'not_found', message: 'no such resource' });
  }

  const on = await withMock({ MOCK_RECORD: '1' }, t);
  t.equal(on.recording, true);
  await raw(`${on.url}/api/receipts?merchant=shell&x=%27`, {
    headers: { 'X-Dup': ['1', '2'], Authorization: 'Bearer abc' },
  });
  const payload = JSON.stringify({ merchant: 'M', total: 1 });
  await fetch(`${on.url}/api/receipts`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: payload,
  });
  await fetch(`${on.url}/does-not-exist`, { method: 'PUT', body: 'abc' });

  const res = await fetch(`${on.url}/__mock/requests`);
  t.equal(res.status, 200);
  const recs = (await json(res)) as MockRecord[];
  t.same(recs, on.records());
  t.equal(recs.length, 3);
  const [get, post, put] = recs as [MockRecord, MockRecord, MockRecord];
  t.equal(get.method, 'GET');
  t.equal(get.path, '/api/receipts?merchant=shell&x=%27');
  t.equal(get.headers['x-dup'], '1, 2');
  t.equal(get.headers.authorization, 'Bearer abc');
  t.same(get.raw_headers.slice(0, 2), ['X-Dup', '1']);
  t.equal(get.body_size, 0);
  t.equal(get.body_sha256, EMPTY_SHA256);
  t.equal(get.status, 200);
  t.notOk('parts' in get);
  t.match(get.time, /^\d{4}-\d\d-\d\dT/);
  t.equal(post.body_size, Buffer.byteLength(payload));
  t.equal(post.body_sha256, sha256(payload));
  t.equal(post.status, 201);
  t.equal(put.path, '/does-not-exist');
  t.equal(put.body_size, 3);
  t.equal(put.body_sha256, sha256('abc'));
  t.equal(put.status, 404);

  const del = await fetch(`${on.url}/__mock/requests`, { method: 'DELETE' });
  t.equal(del.status, 204);
  t.same(await json(await fetch(`${on.url}/__mock/requests`)), []);
  await fetch(`${on.url}/api/health`);
  t.equal(on.records().length, 1);
  on.clear();
  t.same(on.records(), []);
  t.equal((await fetch(`${on.url}/__mock/requests`, { method: 'PUT' })).status, 405);
  t.equal((await fetch(`${on.url}/__mock/other`)).status, 404);
});

t.test('the record is bounded: a ring of the last 10,000', async (t) => {
  t.equal(MAX_RECORDS, 10_000);
  const log = new RecordLog(3);
  const rec = (n: number): MockRecord => ({
    time: '',
    method: 'GET',
    path: `/${n}`,
    headers: {},
    raw_headers: [],
    body_size: 0,
    body_sha256: '',
  });
  for (let i = 1; i <= 7; i++) log.push(rec(i));
  t.same(
    log.toArray().map((r) => r.path),
    ['/5', '/6', '/7'],
  );
  t.equal(log.length, 3);
  log.clear();
  t.same(log.toArray(), []);
  log.push(rec(8));
  t.same(
    log.toArray().map((r) => r.path),
    ['/8'],
  );

  // The service keeps its records in such a ring, sized MAX_RECORDS.
  const mock = await withMock({ MOCK_RECORD: '1' }, t);
  for (let i = 0; i < 5; i++) await (await fetch(`${mock.url}/api/health?n=${i}`)).arrayBuffer();
  t.same(
    mock.records().map((r) => r.path),
    [0, 1, 2, 3, 4].map((n) => `/api/health?n=${n}`),
  );
});

t.test('RS256: JWKS with kid, verification, rotation drops the old key', async (t) => {
  const mock = await withMock({ MOCK_JWT_ALG: 'RS256', MOCK_RECORD: '1' }, t);
  t.equal(mock.alg, 'RS256');
  const kid1 = mock.kid();
  t.type(kid1, 'string');
  const set1 = await jwks(mock);
  t.equal(set1.keys.length, 1);
  t.match(set1.keys[0], { kty: 'RSA', kid: kid1, alg: 'RS256', use: 'sig' });
  t.notOk('d' in set1.keys[0]!, 'no private part published');

  const token1 = await login(mock, 'admin', 'admin-secret-pw');
  t.same(decodeProtectedHeader(token1), { alg: 'RS256', typ: 'JWT', kid: kid1 });
  const v1 = await jwtVerify(token1, createLocalJWKSet(set1), { issuer: 'receipt-mock' });
  t.equal(v1.payload.sub, 'admin');
  t.equal(v1.payload.role, 'admin');
  await t.rejects(jwtVerify(token1, new TextEncoder().encode(SECRET)), 'not an HS256 token');

  const rot = await fetch(`${mock.url}/__mock/rotate-key`, { method: 'POST' });
  t.equal(rot.status, 200);
  const { kid: kid2, alg } = (await json(rot)) as { kid: string; alg: string };
  t.equal(alg, 'RS256');
  t.not(kid2, kid1);
  t.equal(mock.kid(), kid2);
  const set2 = await jwks(mock);
  t.same(
    set2.keys.map((k) => k.kid),
    [kid2],
    'only the new key is served',
  );

  await t.rejects(
    jwtVerify(token1, createLocalJWKSet(set2)),
    { code: 'ERR_JWKS_NO_MATCHING_KEY' },
    'old token no longer verifies',
  );
  const token2 = await login(mock, 'alice', 'alice-secret-pw');
  t.equal(decodeProtectedHeader(token2).kid, kid2);
  t.equal((await jwtVerify(token2, createLocalJWKSet(set2))).payload.sub, 'alice');

  await mock.rotateKey();
  const kid3 = mock.kid();
  t.not(kid3, kid2);
  t.same(
    (await jwks(mock)).keys.map((k) => k.kid),
    [kid3],
  );
  t.equal((await fetch(`${mock.url}/__mock/rotate-key`)).status, 405);
  t.ok(
    mock.records().some((r) => r.path === '/.well-known/jwks.json'),
    'JWKS fetches are recorded',
  );
});

t.test('ES256 signs with a P-256 key; HS256 cannot rotate', async (t) => {
  const es = await withMock({ MOCK_JWT_ALG: 'es256' }, t);
  const set = await jwks(es);
  t.match(set.keys[0], { kty: 'EC', crv: 'P-256', alg: 'ES256', kid: es.kid() });
  const token = await login(es, 'alice', 'alice-secret-pw');
  t.equal((await jwtVerify(token, createLocalJWKSet(set), { algorithms: ['ES256'] })).payload.role, 'user');

  const hs = await withMock({ MOCK_RECORD: '1' }, t);
  t.equal(hs.kid(), undefined);
  await t.rejects(hs.rotateKey(), /RS256 or ES256/);
  const res = await fetch(`${hs.url}/__mock/rotate-key`, { method: 'POST' });
  t.equal(res.status, 409);
  t.equal(((await json(res)) as { error: string }).error, 'not_supported');

  await t.rejects(startMock({ port: 0, env: { MOCK_JWT_ALG: 'none' } }), /MOCK_JWT_ALG/);
  await t.rejects(startMock({ port: 0, env: { MOCK_DELAY_MS: 'slow' } }), /MOCK_DELAY_MS/);
});

t.test(
  'artificial latency: x-mock-delay-ms only when recording, MOCK_DELAY_MS everywhere but /__mock/',
  async (t) => {
    // Without MOCK_RECORD the header is ignored: the answer comes (a 30 s wait would hit the test timeout).
    const plain = await withMock({}, t);
    const fast = await fetch(`${plain.url}/api/health`, { headers: { 'x-mock-delay-ms': '30000' } });
    t.equal(fast.status, 200);

    // With MOCK_RECORD=1 the request arrives (recorded) but its answer is held back.
    const rec = await withMock({ MOCK_RECORD: '1' }, t);
    let settled = false;
    const held = fetch(`${rec.url}/api/health`, { headers: { 'x-mock-delay-ms': '30000' } }).then(
      (r) => ((settled = true), r.status),
      () => ((settled = true), 'failed'),
    );
    while (rec.records().length === 0) await new Promise((r) => setTimeout(r, 5));
    t.equal(rec.records()[0]!.status, undefined, 'not answered yet');
    t.equal(settled, false);

    // MOCK_DELAY_MS holds every API answer but not the control routes.
    const delayed = await withMock({ MOCK_RECORD: '1', MOCK_DELAY_MS: '30000' }, t);
    const pending = fetch(`${delayed.url}/api/receipts`).then(
      (r) => r.status,
      () => 'failed',
    );
    while (delayed.records().length === 0) await new Promise((r) => setTimeout(r, 5));
    const control = await fetch(`${delayed.url}/__mock/requests`);
    t.equal(control.status, 200);
    t.equal(((await json(control)) as MockRecord[])[0]!.status, undefined);

    // Closing cuts the held requests instead of waiting 30 s.
    await rec.close();
    await delayed.close();
    t.equal(await held, 'failed');
    t.equal(await pending, 'failed');
  },
);

t.test('WebSocket echo at /api/ws/echo', async (t) => {
  const mock = await withMock({ MOCK_RECORD: '1' }, t);
  const wsUrl = `${mock.url.replace('http', 'ws')}/api/ws/echo?room=1`;
  const ws = new WebSocket(wsUrl, { headers: { 'x-test': 'ws' } });
  await once(ws, 'open');
  const next = (): Promise<[Buffer, boolean]> =>
    new Promise((resolve) =>
      ws.once('message', (data: Buffer, isBinary: boolean) => resolve([data, isBinary])),
    );

  let msg = next();
  ws.send('hello receipts');
  const [text, textIsBinary] = await msg;
  t.equal(textIsBinary, false);
  t.equal(text.toString(), 'hello receipts');

  msg = next();
  const bin = Buffer.from([0, 1, 2, 250, 255]);
  ws.send(bin);
  const [echoed, isBinary] = await msg;
  t.equal(isBinary, true);
  t.same([...echoed], [...bin]);
  ws.close();
  await once(ws, 'close');

  const rec = mock.records().find((r) => r.websocket === true);
  t.ok(rec, 'the upgrade request is recorded');
  t.equal(rec!.path, '/api/ws/echo?room=1');
  t.equal(rec!.method, 'GET');
  t.equal(rec!.headers['x-test'], 'ws');
  t.equal(rec!.headers.upgrade, 'websocket');
  t.equal(rec!.status, 101);

  const bad = new WebSocket(`${mock.url.replace('http', 'ws')}/api/ws/other`);
  bad.on('error', () => undefined); // terminate() during the handshake reports an abort
  const [, response] = (await once(bad, 'unexpected-response')) as [
    unknown,
    { statusCode: number; headers: IncomingHttpHeaders },
  ];
  t.equal(response.statusCode, 404);
  t.equal(response.headers.server, 'receipt-mock');
  bad.terminate();

  // An open socket does not keep close() waiting.
  const lingering = new WebSocket(wsUrl);
  await once(lingering, 'open');
  const closed = once(lingering, 'close');
  await mock.close();
  await closed;
  t.pass('close() ended the open WebSocket');
});

t.test('close() with an idle keep-alive connection and an in-flight slow request', async (t) => {
  const mock = await startMock({ port: 0, env: { JWT_SECRET_KEY: SECRET } });
  await fetch(`${mock.url}/api/health`, { headers: { connection: 'keep-alive' } });
  const slow = fetch(`${mock.url}/api/slow?ms=30000`).then(
    (r) => r.status,
    () => 'failed',
  );
  await new Promise((r) => setTimeout(r, 50));
  await mock.close();
  t.equal(await slow, 'failed');
  await mock.close();
  await t.rejects(fetch(`${mock.url}/api/health`), 'no longer listening');
});

t.test('CLI: listens on MOCK_PORT, prints its address, stops on SIGTERM', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'upstream-mock/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, MOCK_PORT: '0', MOCK_HOST: '127.0.0.1', JWT_SECRET_KEY: SECRET, MOCK_RECORD: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let out = '';
  child.stdout.setEncoding('utf8');
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: string) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m !== null) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`mock exited early (${code}): ${out}`)));
  });
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.match(out, /alg HS256, recording off/);
  t.same(await json(await fetch(`${url}/api/health`)), { status: 'ok' });
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  t.equal(code, 0);
  t.match(out, /SIGTERM, stopping/);
});
