/**
 * The upload gate over real TCP: the real gateway with the shipped gateway.yaml (its
 * `upload` route) in front of the real mock. Every refused upload is checked against the
 * mock's record (it never arrived, not even in part), the spool directory against
 * leftovers, and the gateway keeps serving after each kind of bad input.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { startHarness, type Harness } from '../../helpers/harness.js';
import { genuine, png, pdf, elf, HTML } from '../../fixtures/uploads/generate.js';
import { multipart, contentType, tempSpoolDir, leftovers } from './multipart.js';

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  json: Record<string, unknown>;
}

function post(
  base: string,
  path: string,
  body: Buffer,
  headers: Record<string, string>,
  chunked = false,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const h: Record<string, string> = { ...headers };
    if (!chunked) h['content-length'] = String(body.length);
    const req = http.request(`${base}${path}`, { method: 'POST', headers: h, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          json: JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>,
        }),
      );
    });
    req.on('error', reject);
    if (chunked) {
      // several writes: Transfer-Encoding: chunked, no Content-Length
      for (let i = 0; i < body.length; i += 1000) req.write(body.subarray(i, i + 1000));
      req.end();
    } else req.end(body);
  });
}

/** Send raw bytes and read the raw response (for bodies http.request will not send). */
function raw(base: string, bytes: Buffer, opts: { keepOpen?: boolean } = {}): Promise<string> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), hostname, () => {
      s.write(bytes);
      if (!opts.keepOpen) s.end();
    });
    let out = '';
    s.on('data', (c: Buffer) => (out += c.toString('latin1')));
    s.on('end', () => resolve(out));
    s.on('close', () => resolve(out));
    s.on('error', (e: NodeJS.ErrnoException) =>
      e.code === 'ECONNRESET' || e.code === 'EPIPE' ? resolve(out) : reject(e),
    );
  });
}

/** The server disposes after the response is sent: wait (bounded) until the spool is empty. */
async function gone(dir: string): Promise<void> {
  for (let i = 0; i < 300 && leftovers(dir).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('upload gating through the gateway', async (t) => {
  const spool = tempSpoolDir();
  const h: Harness = await startHarness({
    config: `
policies:
  upload_gate:
    spool_dir: ${JSON.stringify(spool)}
    memory_buffer: 1KB
    idle_timeout: 400ms
`,
  });
  t.teardown(async () => {
    await h.close();
    fs.rmSync(spool, { recursive: true, force: true });
  });
  const token = await h.login('alice');
  const auth = { authorization: `Bearer ${token}` };
  const upload = (body: Buffer, extra: Record<string, string> = {}, chunked = false) =>
    post(h.url, '/api/receipts/upload', body, { ...auth, 'content-type': contentType(), ...extra }, chunked);

  const expectRefused = async (t: Test, r: Res, status: number, code: string, check: string) => {
    t.equal(r.status, status, 'status');
    t.equal(r.json.error, code, 'error code');
    t.match(r.json.message as string, /^Upload rejected \(/);
    t.match(r.json.request_id, /.+/);
    t.same(await h.mockRequests(), [], 'the upstream never saw it');
    await gone(spool);
    t.same(leftovers(spool), [], 'no spool file remains');
    const audit = (await h.audit()).filter((l) => l.request_id === r.json.request_id);
    const ev = audit.find((l) => l.event === 'upload_rejected');
    t.ok(ev, 'audited');
    t.match(ev, { decision: 'deny', status, detail: { check } });
  };

  await t.test(
    'genuine files of every kind reach the mock with sanitized names and exact sizes',
    async (t) => {
      await h.clearMock();
      const files = genuine();
      const parts = [
        { name: 'merchant', data: 'Corner Shop' },
        ...Object.entries(files).map(([ext, f]) => ({
          name: 'file',
          filename: `../../scans/.receipt\u00A0${ext}.${ext}`,
          type: f.type,
          data: f.data,
        })),
      ];
      const r = await upload(multipart(parts));
      t.equal(r.status, 201);
      const stored = r.json.files as { filename: string; size: number; sha256: string }[];
      t.same(
        stored.map((f) => [f.filename, f.size, f.sha256]),
        Object.entries(files).map(([ext, f]) => [`receipt ${ext}.${ext}`, f.data.length, sha(f.data)]),
      );
      const rec = await h.mockRequests();
      t.equal(rec.length, 1);
      t.match(rec[0]!.headers['content-type'], /^multipart\/form-data; boundary=----receipt-gateway-/);
      t.equal(Number(rec[0]!.headers['content-length']), rec[0]!.body_size, 'exact Content-Length');
      const audit = (await h.audit()).filter((l) => l.event === 'upload_accepted');
      t.equal(audit.length, Object.keys(files).length);
      t.match(audit[0], {
        filename: 'receipt png.png',
        size: files.png!.data.length,
        type: 'image/png',
        sha256: sha(files.png!.data),
      });
      await gone(spool);
      t.same(leftovers(spool), [], 'spool removed after the exchange');
    },
  );

  await t.test('a chunked upload without Content-Length is gated and forwarded with one', async (t) => {
    await h.clearMock();
    const data = png(64, 64);
    const r = await upload(
      multipart([{ name: 'file', filename: 'r.png', type: 'image/png', data }]),
      { 'transfer-encoding': 'chunked' },
      true,
    );
    t.equal(r.status, 201);
    const rec = await h.mockRequests();
    t.equal(rec[0]!.headers['transfer-encoding'], undefined);
    t.equal(Number(rec[0]!.headers['content-length']), rec[0]!.body_size);
  });

  const forged: [string, Buffer, string][] = [
    [
      'ELF renamed .png',
      multipart([{ name: 'file', filename: 'r.png', type: 'image/png', data: elf() }]),
      'content',
    ],
    [
      'HTML as .jpg',
      multipart([{ name: 'file', filename: 'r.jpg', type: 'image/jpeg', data: HTML }]),
      'content',
    ],
    [
      'PDF with JavaScript',
      multipart([
        {
          name: 'file',
          filename: 'r.pdf',
          type: 'application/pdf',
          data: pdf({ objects: ['<< /S /JavaScript /JS (x) >>'] }),
        },
      ]),
      'active_content',
    ],
    [
      'PNG declaring 100000×100000',
      multipart([
        {
          name: 'file',
          filename: 'r.png',
          type: 'image/png',
          data: png(2, 2, { declare: [100000, 100000] }),
        },
      ]),
      'active_content',
    ],
    [
      'receipt.php.png',
      multipart([{ name: 'file', filename: 'receipt.php.png', type: 'image/png', data: png() }]),
      'extension',
    ],
    [
      'a good file then a bad one (all or nothing)',
      multipart([
        { name: 'file', filename: 'good.png', type: 'image/png', data: png(300, 300) },
        { name: 'file', filename: 'bad.png', type: 'image/png', data: elf() },
      ]),
      'content',
    ],
  ];
  for (const [title, body, check] of forged) {
    await t.test(`refused: ${title}`, async (t) => {
      await h.clearMock();
      await expectRefused(t, await upload(body), 400, 'upload_rejected', check);
    });
  }

  await t.test('text fields reach the pattern engine; its refusal frees the spool too', async (t) => {
    await h.clearMock();
    const body = multipart([
      { name: 'merchant', data: "x' UNION SELECT password FROM users --" },
      { name: 'file', filename: 'r.png', type: 'image/png', data: png(300, 300) },
    ]);
    const r = await upload(body);
    t.equal(r.status, 403);
    t.equal(r.json.error, 'request_blocked');
    t.same(await h.mockRequests(), [], 'the upstream never saw it');
    await gone(spool);
    t.same(leftovers(spool), [], 'no spool file remains');
    const audit = (await h.audit()).filter((l) => l.request_id === r.json.request_id);
    t.match(
      audit.find((l) => l.event === 'request_blocked'),
      { reason: 'sqli' },
    );
  });

  await t.test('Content-Length over the limit: 413 before reading', async (t) => {
    await h.clearMock();
    const head = `POST /api/receipts/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: ${contentType()}\r\nContent-Length: ${70 * 1024 * 1024}\r\n\r\n`;
    const out = await raw(h.url, Buffer.from(head), { keepOpen: true });
    t.match(out, /^HTTP\/1\.1 413 /);
    t.match(out, /"error":"payload_too_large"/);
    t.same(await h.mockRequests(), []);
    const rid = /"request_id":"([^"]+)"/.exec(out)?.[1];
    t.match(
      (await h.audit()).find((l) => l.request_id === rid && l.event === 'upload_rejected'),
      { status: 413, detail: { check: 'size', reason: 'request_too_large' } },
    );
  });

  await t.test('truncated multipart body (no closing boundary)', async (t) => {
    await h.clearMock();
    const body = multipart([{ name: 'file', filename: 'r.png', type: 'image/png', data: png() }]);
    await expectRefused(
      t,
      await upload(body.subarray(0, body.length - 20)),
      400,
      'upload_rejected',
      'malformed',
    );
  });

  await t.test('a body that is not multipart: 400 upload_rejected (type), not a WAF 403', async (t) => {
    for (const [type, body] of [
      ['application/json', '{"merchant":"Cafe"}'],
      ['text/plain', 'just text'],
    ] as const) {
      await h.clearMock();
      await expectRefused(
        t,
        await upload(Buffer.from(body), { 'content-type': type }),
        400,
        'upload_rejected',
        'type',
      );
    }
  });

  await t.test('an empty body: 400 upload_rejected, never forwarded', async (t) => {
    await h.clearMock();
    // multipart announced, nothing sent (Content-Length: 0): malformed
    await expectRefused(t, await upload(Buffer.alloc(0)), 400, 'upload_rejected', 'malformed');
    // no Content-Type at all
    await h.clearMock();
    await expectRefused(
      t,
      await upload(Buffer.alloc(0), { 'content-type': '' }),
      400,
      'upload_rejected',
      'type',
    );
    // without a token, authentication answers first
    const anon = await post(h.url, '/api/receipts/upload', Buffer.alloc(0), {
      'content-type': contentType(),
    });
    t.equal(anon.status, 401);
  });

  await t.test('missing boundary', async (t) => {
    await h.clearMock();
    await expectRefused(
      t,
      await upload(multipart([{ name: 'file', filename: 'r.png', type: 'image/png', data: png() }]), {
        'content-type': 'multipart/form-data',
      }),
      400,
      'upload_rejected',
      'malformed',
    );
  });

  await t.test('thousands of tiny parts', async (t) => {
    await h.clearMock();
    const parts = Array.from({ length: 3000 }, (_, i) => ({ name: `f${i}`, data: 'x' }));
    await expectRefused(t, await upload(multipart(parts)), 400, 'upload_rejected', 'count');
  });

  await t.test('a huge part header', async (t) => {
    await h.clearMock();
    const body = multipart([
      {
        name: 'file',
        filename: 'r.png',
        type: 'image/png',
        data: png(),
        headers: [`X-Pad: ${'a'.repeat(20000)}`],
      },
    ]);
    await expectRefused(t, await upload(body), 400, 'upload_rejected', 'malformed');
  });

  await t.test('a client that stalls mid-upload gets 400 and its spool is removed', async (t) => {
    await h.clearMock();
    const body = multipart([
      {
        name: 'file',
        filename: 'r.png',
        type: 'image/png',
        data: Buffer.concat([png(), Buffer.alloc(50_000)]),
      },
    ]);
    const head = `POST /api/receipts/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: ${contentType()}\r\nContent-Length: ${body.length}\r\n\r\n`;
    const out = await raw(h.url, Buffer.concat([Buffer.from(head), body.subarray(0, 20_000)]), {
      keepOpen: true,
    });
    t.match(out, /^HTTP\/1\.1 400 /);
    t.match(out, /"error":"upload_rejected"/);
    t.match(out, /upload timed out/);
    t.same(await h.mockRequests(), []);
    t.same(leftovers(spool), []);
  });

  await t.test('a client that disconnects mid-upload leaves nothing behind', async (t) => {
    await h.clearMock();
    const body = multipart([
      {
        name: 'file',
        filename: 'r.png',
        type: 'image/png',
        data: Buffer.concat([png(), Buffer.alloc(50_000)]),
      },
    ]);
    const { hostname, port } = new URL(h.url);
    await new Promise<void>((resolve) => {
      const s = net.connect(Number(port), hostname, () => {
        s.write(
          `POST /api/receipts/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: ${contentType()}\r\nContent-Length: ${body.length}\r\n\r\n`,
        );
        s.write(body.subarray(0, 30_000), () => setTimeout(() => s.destroy(), 50));
      });
      s.on('close', () => resolve());
      s.on('error', () => {});
    });
    await gone(spool);
    t.same(leftovers(spool), []);
    t.same(await h.mockRequests(), []);
  });

  await t.test('the gateway keeps serving, and counts rejections by check', async (t) => {
    await h.clearMock();
    const r = await upload(
      multipart([{ name: 'file', filename: 'ok.gif', type: 'image/gif', data: genuine().gif!.data }]),
    );
    t.equal(r.status, 201);
    const m = await fetch(`${h.adminUrl}/metrics`).then((x) => x.text());
    t.match(m, /gateway_upload_rejections_total\{reason="content"\} 3/);
    t.match(m, /gateway_upload_rejections_total\{reason="active_content"\} 2/);
    t.match(m, /gateway_upload_rejections_total\{reason="malformed"\} 6/);
    t.match(m, /gateway_upload_rejections_total\{reason="type"\} 3/);
    t.match(m, /gateway_upload_rejections_total\{reason="size"\} 1/);
    t.match(m, /gateway_upload_rejections_total\{reason="count"\} 1/);
  });
});
