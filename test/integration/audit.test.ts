import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { startHarness, REPO } from '../helpers/harness.js';
import { AUDIT_EVENTS } from '../../gateway/errors.js';

const API_KEY = 'rk_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0';
const WEAK_PASSWORD_SENT = "P@ss'w0rd;--wrong";

function multipart(name: string, type: string, content: Buffer): { body: Buffer; type: string } {
  const b = '----audittest7d1f';
  return {
    type: `multipart/form-data; boundary=${b}`,
    body: Buffer.concat([
      Buffer.from(
        `--${b}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: ${type}\r\n\r\n`,
      ),
      content,
      Buffer.from(`\r\n--${b}--\r\n`),
    ]),
  };
}

t.test(
  'every audit event is written where it happens, with the SPEC fields, and no secret reaches the file',
  async (t) => {
    const config = `
monitoring:
  thresholds:
    suspicious_requests: { count: 2, window: 1h }
policies:
  auth:
    audit_success_sample_rate: 1
  rate_limit:
    default: 1000/minute
  ip_ban:
    threshold: 4
routes:
  - { name: login, methods: [POST], path: /api/auth/login, policies: { auth: { require: [none] }, login_lockout: { enabled: true, max_attempts: 3 } } }
  - { name: health, methods: [GET], path: /api/health, policies: { auth: { require: [none] } } }
  - { name: admin, path: "/api/admin/**", policies: { auth: { require: [jwt], roles: [admin] } } }
  - { name: upload, methods: [POST], path: /api/receipts/upload, policies: { size_limit: { max_body: 100MB }, upload_gate: { enabled: true } } }
  - name: limited
    methods: [GET]
    path: /api/receipts/:id
    policies:
      rate_limit: { route_rules: [{ name: tight, limits: 1/minute, key: ip }] }
  - { name: api, path: "/api/**" }
`;
    const h = await startHarness({ abuseControls: true, env: { API_KEY }, config });
    t.teardown(() => h.close());
    const token = await h.login('alice');
    const bearer = { authorization: `Bearer ${token}` };
    const send = async (p: string, init: RequestInit = {}) => {
      const r = await fetch(`${h.url}${p}`, init);
      await r.arrayBuffer();
      return r.status;
    };
    const json = (body: unknown) => ({
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

    t.equal(await send('/api/auth/login', json({ username: 'alice', password: 'alice-secret-pw' })), 200);
    for (let i = 0; i < 3; i++)
      t.equal(await send('/api/auth/login', json({ username: 'bob', password: WEAK_PASSWORD_SENT })), 401);
    t.equal(
      await send('/api/auth/login', json({ username: 'bob', password: WEAK_PASSWORD_SENT })),
      429,
      'bob is locked',
    );
    t.equal(
      await send(`/api/receipts?merchant=x&token=${token.slice(0, 20)}`, {
        headers: { ...bearer, cookie: 'session=cookie-secret-value' },
      }),
      200,
    );
    t.equal(await send('/api/receipts', { headers: { 'x-api-key': API_KEY } }), 200);
    t.equal(await send('/api/receipts'), 401);
    t.equal(await send('/api/admin/users', { headers: bearer }), 403);
    t.equal(await send('/api/receipts', { headers: { ...bearer, origin: 'https://evil.example' } }), 403);
    t.equal(await send('/api/receipts/1', { headers: bearer }), 200);
    t.equal(await send('/api/receipts/1', { headers: bearer }), 429);
    const pdf = fs.readFileSync(path.join(REPO, 'test', 'fixtures', 'uploads', 'receipt.pdf'));
    const ok = multipart('receipt.pdf', 'application/pdf', pdf);
    t.equal(
      await send('/api/receipts/upload', {
        method: 'POST',
        headers: { ...bearer, 'content-type': ok.type },
        body: ok.body,
      }),
      201,
    );
    const bad = multipart(
      'invoice.exe',
      'application/octet-stream',
      Buffer.from('MZ\x90\x00 this is not a receipt'),
    );
    t.equal(
      await send('/api/receipts/upload', {
        method: 'POST',
        headers: { ...bearer, 'content-type': bad.type },
        body: bad.body,
      }),
      400,
    );
    // suspicious requests: the 2nd raises an alert, the 4th denial of a suspicious kind bans the IP
    t.equal(
      await send("/api/receipts?merchant=1'%20UNION%20SELECT%20password%20FROM%20users--", {
        headers: bearer,
      }),
      403,
    );
    t.equal(await send('/api/receipts?q=%3Cscript%3Ealert(1)%3C/script%3E', { headers: bearer }), 403);
    t.equal(await send('/api/receipts?f=../../../../etc/passwd', { headers: bearer }), 403);
    t.equal(await send('/api/health'), 403, 'banned after 4 suspicious denials');
    await h.reload(config);
    await new Promise((r) => setTimeout(r, 300));

    const lines = await h.audit();
    const events = new Set(lines.map((l) => l.event));
    // every SPEC §6 event but store_unavailable, which needs the store down (redis-outage.test.ts)
    for (const e of AUDIT_EVENTS.filter((x) => x !== 'store_unavailable')) {
      t.ok(events.has(e), `event ${e} written`);
    }
    for (const l of lines.filter((x) => x.request_id !== undefined)) {
      for (const f of ['time', 'event', 'request_id', 'client_ip', 'method', 'path'])
        t.ok(l[f] !== undefined, `${String(l.event)} has ${f}`);
    }
    for (const l of lines.filter((x) => x.decision === 'deny')) {
      t.type(l.status, 'number', `${String(l.event)} deny has a status`);
      t.type(l.reason, 'string', `${String(l.event)} deny has a reason`);
    }
    const blocked = lines.find((l) => l.event === 'request_blocked' && Array.isArray(l.rule_ids));
    t.ok(blocked, 'request_blocked carries rule_ids');
    const withToken = lines.find((l) => String(l.path).includes('merchant=x'));
    t.match(String(withToken?.path), /token=\[REDACTED\]/, 'secret query values are redacted');

    const text = fs.readFileSync(h.auditFile, 'utf8');
    for (const secret of [
      token,
      token.slice(0, 20),
      API_KEY,
      'alice-secret-pw',
      WEAK_PASSWORD_SENT,
      'cookie-secret-value',
      h.env.JWT_SECRET_KEY!,
    ]) {
      t.notOk(text.includes(secret), `the audit log never contains ${secret.slice(0, 12)}…`);
    }
    t.notMatch(text, /MZ\\u0090|this is not a receipt/, 'no upload content');
  },
);
