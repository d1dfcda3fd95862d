import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runReplay, resolveOnly } from '../../../gateway/commands/replay.js';
import { REPO, TEST_SECRET } from '../../helpers/harness.js';

const CORPUS = path.resolve(REPO, '..', 'shared', 'corpus', 'waf-dev.jsonl');
const CONFIG = path.join(REPO, 'gateway.yaml');

function capture(): { write(s: string): boolean; text: string } {
  const o = { text: '', write: (s: string) => ((o.text += s), true) };
  return o;
}

interface Decision {
  id: string;
  decision: string;
  code: string | null;
  status: number;
  rule_ids: string[];
}

t.test(
  'replay --only waf scores the shared dev corpus at the goal of issue 5 (default config)',
  async (t) => {
    if (!fs.existsSync(CORPUS)) {
      t.fail(`corpus not found at ${CORPUS}`);
      return;
    }
    const out = capture();
    const err = capture();
    const code = await runReplay(
      ['--config', CONFIG, '--requests', CORPUS, '--only', 'waf', '--format', 'jsonl'],
      out,
      err,
      {
        JWT_SECRET_KEY: TEST_SECRET,
      },
    );
    t.equal(code, 0);
    const decisions = new Map(
      out.text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Decision)
        .map((d) => [d.id, d]),
    );
    const rows = fs
      .readFileSync(CORPUS, 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as { id: string; source: string; family: string; expected: string });
    t.equal(decisions.size, rows.length, 'one decision per request');
    const blocked = (id: string) => {
      const d = decisions.get(id)!;
      return d.decision === 'deny' && (d.status === 403 || d.status === 406);
    };
    const attacks = rows.filter((r) => r.expected === 'attack');
    const gen = rows.filter((r) => r.source === 'benign-gen');
    const crsNeg = rows.filter((r) => r.source === 'crs' && r.expected === 'benign');
    const rate = (xs: typeof rows) => xs.filter((r) => blocked(r.id)).length / xs.length;
    const families = new Map<string, typeof rows>();
    for (const r of attacks) families.set(r.family, [...(families.get(r.family) ?? []), r]);
    const summary = [...families].map(([f, xs]) => `${f} ${(100 * rate(xs)).toFixed(1)}%`).join(', ');
    t.comment(
      `attacks ${(100 * rate(attacks)).toFixed(1)}% (${summary}); benign-gen ${(100 * rate(gen)).toFixed(1)}%; CRS negatives ${(100 * rate(crsNeg)).toFixed(1)}%`,
    );
    t.ok(rate(attacks) >= 0.94, `attacks blocked ${(100 * rate(attacks)).toFixed(1)}% >= 94%`);
    t.ok(rate(gen) <= 0.01, `generated benign blocked ${(100 * rate(gen)).toFixed(1)}% <= 1%`);
    t.ok(rate(crsNeg) <= 0.1, `CRS negative tests blocked ${(100 * rate(crsNeg)).toFixed(1)}% <= 10%`);
    for (const [family, xs] of families) {
      if (xs.length < 50) continue;
      t.ok(rate(xs) >= 0.9, `${family}: ${(100 * rate(xs)).toFixed(1)}% >= 90%`);
    }
    // the upstream is never contacted: the config's upstream does not even exist here
    t.match(err.text, /throwaway secret|^$/);
  },
);

t.test('replay: formats, --only names, summary, malformed lines', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-replay-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'req.jsonl');
  fs.writeFileSync(
    file,
    [
      JSON.stringify({
        id: 'sqli',
        method: 'GET',
        path: "/api/receipts?m=1'%20UNION%20SELECT%20password%20FROM%20users--",
        headers: { Host: 'x' },
        body: null,
        expected: 'attack',
        family: 'sqli',
      }),
      JSON.stringify({
        id: 'ok',
        method: 'GET',
        path: '/api/health',
        headers: { Host: 'x', 'User-Agent': 'curl/8' },
        body: null,
        expected: 'benign',
      }),
      JSON.stringify({
        id: 'noauth',
        method: 'GET',
        path: '/api/receipts',
        headers: { Host: 'x' },
        body: null,
      }),
      JSON.stringify({
        id: 'json',
        method: 'POST',
        path: '/api/receipts',
        headers: { Host: 'x', 'Content-Type': 'application/json', 'X-API-Key': 'replay-test-key-0123456789' },
        body: '{"merchant":"<script>alert(1)</script>"}',
      }),
      JSON.stringify({
        id: 'json-anon',
        method: 'POST',
        path: '/api/receipts',
        headers: { Host: 'x', 'Content-Type': 'application/json' },
        body: '{"merchant":"<script>alert(1)</script>"}',
      }),
      JSON.stringify({ id: 'pipe-get', method: '|GET', path: '/', headers: { Host: 'x' }, body: null }),
      JSON.stringify({
        id: 'options-star',
        method: 'OPTIONS',
        path: '*',
        headers: { Host: 'x' },
        body: null,
      }),
      JSON.stringify({ id: 'get-star', method: 'GET', path: '*', headers: { Host: 'x' }, body: null }),
      'this is not json',
      '',
    ].join('\n'),
  );
  const out = capture();
  const err = capture();
  const env = { JWT_SECRET_KEY: TEST_SECRET, API_KEY: 'replay-test-key-0123456789' };
  t.equal(await runReplay(['--config', CONFIG, '--requests', file, '--format', 'jsonl'], out, err, env), 0);
  const d = out.text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Decision);
  t.same(
    d.map((x) => [x.id, x.decision, x.code, x.status]),
    [
      ['sqli', 'deny', 'request_blocked', 403],
      ['ok', 'allow', null, 200],
      ['noauth', 'deny', 'unauthorized', 401],
      ['json', 'deny', 'request_blocked', 403],
      ['json-anon', 'deny', 'unauthorized', 401],
      // as the live listener, whose HTTP parser refuses a method it does not know
      ['pipe-get', 'deny', 'bad_request', 400],
      // the server-wide OPTIONS is answered by the gateway, as on the live listener
      ['options-star', 'allow', null, 204],
      ['get-star', 'deny', 'bad_request', 400],
    ],
    'every policy of the route runs without --only (bodies are read only after authentication)',
  );
  t.ok(d[0]!.rule_ids.length > 0, 'rule ids of the match');
  t.match(err.text, /:9: skipped/, 'malformed line reported with its number');

  const only = capture();
  await runReplay(
    ['--config', CONFIG, '--requests', file, '--format', 'jsonl', '--only', 'pattern-block'],
    only,
    capture(),
    { JWT_SECRET_KEY: TEST_SECRET },
  );
  const noauth = only.text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Decision)
    .find((x) => x.id === 'noauth')!;
  t.equal(noauth.decision, 'allow', '--only pattern-block skips authentication');

  const text = capture();
  await runReplay(['--config', CONFIG, '--requests', file, '--only', 'waf'], text, capture(), {
    JWT_SECRET_KEY: TEST_SECRET,
  });
  t.match(text.text, /summary \(blocked = 403\/406\)/);
  // the table's columns are named as the jsonl fields: status is the HTTP status, code the error code
  t.match(text.text.split('\n')[0], /^decision +status +code +id$/);
  t.match(text.text, /^deny +403 +request_blocked +sqli {2}\[/m);
  t.match(text.text, /attacks sqli\s+1 \/ 1\s+100\.0 %/);
  t.match(text.text, /benign\s+blocked\s+0 \/ 1/);

  t.equal(
    await runReplay(['--config', CONFIG], capture(), capture(), {}),
    2,
    'usage error without --requests',
  );
  const e = capture();
  t.equal(await runReplay(['--config', CONFIG, '--requests', file, '--only', 'nope'], capture(), e, {}), 2);
  t.match(e.text, /unknown policy "nope"/);
  t.ok(resolveOnly('waf')!.has('pattern-block'));
  t.notOk(resolveOnly('waf')!.has('auth'), 'waf is request inspection only');
  t.ok(resolveOnly('rate_limit')!.has('rate-limit'), 'YAML keys work too');
});

t.test('replay: logins for one username one after the other are each decided alone', async (t) => {
  // login_lockout holds a per-username lease while an attempt is with the upstream; replay
  // has no upstream and no response phase, so each replayed request gives it back when decided
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-replay-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'req.jsonl');
  const loginRow = (id: string) =>
    JSON.stringify({
      id,
      method: 'POST',
      path: '/api/auth/login',
      headers: { Host: 'x', 'Content-Type': 'application/json', 'User-Agent': 'curl/8' },
      body: JSON.stringify({ username: 'alice', password: 'alice-secret-pw' }),
    });
  fs.writeFileSync(file, [loginRow('first'), loginRow('second'), loginRow('third')].join('\n'));
  const out = capture();
  t.equal(
    await runReplay(['--config', CONFIG, '--requests', file, '--format', 'jsonl'], out, capture(), {
      JWT_SECRET_KEY: TEST_SECRET,
    }),
    0,
  );
  t.same(
    out.text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Decision)
      .map((x) => [x.id, x.decision, x.code]),
    [
      ['first', 'allow', null],
      ['second', 'allow', null],
      ['third', 'allow', null],
    ],
  );
});
