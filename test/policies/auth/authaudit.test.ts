/**
 * API keys and roles as an operator configures them: a configured role or key that the
 * gateway and the upstream would read differently, or that could never authenticate, is
 * refused at start (and by `hash-key`); a short API_KEY costs security score. Over real
 * TCP with the shipped gateway.yaml and the recording mock.
 */
import t from 'tap';
import http from 'node:http';
import { PassThrough, Readable } from 'node:stream';
import { startHarness, type HarnessOptions } from '../../helpers/harness.js';
import { hashApiKey } from '../../../policies/auth/index.js';
import { runHashKey } from '../../../gateway/commands/hash-key.js';

const KEY = 'authaudit-key-0123456789abcdef0123456789';

/**
 * The error a start with these options fails with (closing the gateway if it did start).
 * Without an audit file: the harness removes its directory at once, under a file still opening.
 */
async function startError(opts: HarnessOptions): Promise<string> {
  try {
    const h = await startHarness({ ...opts, config: `audit: { enabled: false }\n${opts.config ?? ''}` });
    await h.close();
  } catch (err) {
    return (err as Error).message;
  }
  return '(started)';
}

t.test('role names that X-Auth-Roles would split or that match nobody are refused', async (t) => {
  const keyRoles = await startError({
    config: `policies: { auth: { api_keys: { keys: [{ id: k1, hash: "${hashApiKey(KEY)}", roles: ["user,admin"] }] } } }`,
  });
  // (values under api_keys are not quoted in config errors: a key pasted there may be a secret)
  t.match(keyRoles, /policies\.auth\.api_keys\.keys\[0\]\.roles\[0\]: invalid value: a role name/);
  const routeRoles = await startError({
    config: `routes: [{ name: ops, path: /api/ops/**, policies: { auth: { roles: ["admin "] } } }]`,
  });
  t.match(routeRoles, /routes\[0\]\.policies\.auth\.roles\[0\]: invalid value "admin "/);

  // a role in the allowed alphabet reaches the upstream as one role
  const h = await startHarness({
    config: `policies: { auth: { api_keys: { keys: [{ id: k1, hash: "${hashApiKey(KEY)}", roles: ["billing:read", user] }] } } }`,
  });
  t.teardown(() => h.close());
  await h.clearMock();
  const r = await fetch(`${h.url}/api/receipts/1`, { headers: { 'x-api-key': KEY } });
  t.equal(r.status, 200);
  await r.arrayBuffer();
  const [rec, ...more] = await h.mockRequests();
  t.equal(more.length, 0);
  t.equal(rec?.headers['x-auth-roles'], 'billing:read,user');
  t.equal(rec?.headers['x-auth-subject'], 'api_key:k1');
});

t.test('an API_KEY no client could send in X-API-Key is refused at start', async (t) => {
  for (const [name, key] of [
    ['trailing space', `${KEY} `],
    ['leading tab', `\t${KEY}`],
    ['non-ASCII', `clé-${KEY}`],
    ['control character', `${KEY}\u0001`],
  ] as const) {
    const msg = await startError({ env: { API_KEY: key } });
    t.match(msg, /policies\.auth\.api_keys\.env_key: API_KEY cannot be sent in an X-API-Key header/, name);
    t.notOk(msg.includes(KEY), `${name}: the key is not in the message`);
  }
});

async function hashKeyRun(input: string, args: string[] = []) {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const o = new PassThrough().on('data', (c: Buffer) => out.push(c));
  const e = new PassThrough().on('data', (c: Buffer) => err.push(c));
  const code = await runHashKey(Readable.from([Buffer.from(input)]), o, e, args);
  return { code, out: Buffer.concat(out).toString(), err: Buffer.concat(err).toString() };
}

t.test('hash-key refuses a key that could not arrive intact in X-API-Key', async (t) => {
  for (const input of [
    `${KEY}\n\n`,
    `${KEY}\r`,
    `${KEY} \n`,
    ` ${KEY}\n`,
    `clé-${KEY}\n`,
    `${KEY}\u0007\n`,
  ]) {
    const r = await hashKeyRun(input);
    t.equal(r.code, 1, JSON.stringify(input));
    t.equal(r.out, '', 'no hash printed');
    t.match(r.err, /^hash-key: this key cannot be sent in an X-API-Key header: /);
  }
  const ok = await hashKeyRun(`${KEY}\r\n`);
  t.equal(ok.code, 0);
  t.equal(ok.out, `${hashApiKey(KEY)}\n`);
  t.equal(ok.err, '');
  const inner = await hashKeyRun(`two words ${KEY}\n`);
  t.equal(inner.code, 0, 'a space inside the key is kept');
  t.equal(inner.out, `${hashApiKey(`two words ${KEY}`)}\n`);
});

interface Check {
  id: string;
  pass: boolean;
  detail?: string;
  recommendation: string;
}

async function securityHealth(adminUrl: string) {
  const r = await fetch(`${adminUrl}/api/health/security`);
  const text = await r.text();
  return { status: r.status, text, body: JSON.parse(text) as { checks: Check[]; recommendations: string[] } };
}

t.test('a short API_KEY fails the security score, a long one passes, none is not applicable', async (t) => {
  const short = 'short-key-12345';
  const h = await startHarness({ env: { API_KEY: short } });
  t.teardown(() => h.close());
  const s = await securityHealth(h.adminUrl);
  t.equal(s.status, 200);
  const check = s.body.checks.find((c) => c.id === 'api_key_length');
  t.match(check, { pass: false, detail: '15 characters' });
  t.ok(s.body.recommendations.includes(check!.recommendation), 'listed among the recommendations');
  t.notOk(s.text.includes(short), 'the key itself is never returned');
  // the key still works: the score advises, it does not refuse
  const r = await fetch(`${h.url}/api/receipts/1`, { headers: { 'x-api-key': short } });
  t.equal(r.status, 200);
  await r.arrayBuffer();

  h.env.API_KEY = KEY;
  await h.gateway.reload('test');
  const long = await securityHealth(h.adminUrl);
  t.match(
    long.body.checks.find((c) => c.id === 'api_key_length'),
    { pass: true, detail: `${KEY.length} characters` },
  );

  delete h.env.API_KEY;
  await h.gateway.reload('test');
  const none = await securityHealth(h.adminUrl);
  t.equal(
    none.body.checks.find((c) => c.id === 'api_key_length'),
    undefined,
    'no API_KEY: not applicable',
  );
});

t.test('hash-key refuses a key given as an argument, --help prints the usage', async (t) => {
  // stdin holds something else: hash-key printed its hash, as if it were the argument's
  const arg = await hashKeyRun('other-key-0123456789abcdef0123456789abc\n', [KEY]);
  t.equal(arg.code, 1);
  t.equal(arg.out, '', 'no hash printed');
  t.match(arg.err, /^hash-key: takes no arguments; give the key on stdin/);
  t.notOk(arg.err.includes(KEY), 'the key is not echoed');
  const help = await hashKeyRun('', ['--help']);
  t.equal(help.code, 0);
  t.match(help.out, /^usage: printf %s "\$KEY" \| receipt-gateway hash-key/);
  t.equal(help.err, '');
});

t.test('forward_authorization: false also strips the API key header spelled with underscores', async (t) => {
  const h = await startHarness({
    config: `policies: { auth: { forward_authorization: false, api_keys: { keys: [{ id: k1, hash: "${hashApiKey(KEY)}" }] } } }`,
  });
  t.teardown(() => h.close());
  await h.clearMock();
  const u = new URL(h.url);
  // raw header names: fetch would not keep X_API_Key's spelling apart from the others
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        path: '/api/receipts/1',
        headers: [
          ['Host', u.host],
          ['X-API-Key', KEY],
          ['X_API_Key', 'forged-by-client'],
          ['x-api_key', 'forged-by-client'],
          ['Authorization', 'Basic Zm9vOmJhcg=='],
        ].flat(),
        agent: false,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end();
  });
  t.equal(status, 200);
  const [rec, ...more] = await h.mockRequests();
  t.equal(more.length, 0);
  t.equal(rec?.headers['x-auth-key-id'], 'k1');
  t.same(
    Object.keys(rec!.headers).filter((n) => /^(x[-_]api[-_]key|authorization)$/i.test(n)),
    [],
    'neither the key header, in any spelling, nor Authorization reached the upstream',
  );
});
