import t, { type Test } from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { runExplain, formatDecision } from '../../../gateway/commands/explain.js';
import {
  DecisionLog,
  isWellFormedRequestId,
  type DecisionEntry,
} from '../../../gateway/observability/decisions.js';

const denied: DecisionEntry = {
  request_id: 'abc-123',
  time: '2026-01-01T10:00:00.000Z',
  method: 'GET',
  path: '/api/receipts?q=[REDACTED]',
  route: 'api',
  client_ip: '203.0.113.9',
  status: 403,
  decision: 'deny',
  code: 'request_blocked',
  score: 8,
  steps: [
    { policy: 'ip_ban', verdict: 'pass', micros: 3 },
    { policy: 'user_agent', verdict: 'monitor', code: 'user_agent_rejected', reason: 'scanner', micros: 7 },
    {
      policy: 'pattern_block',
      verdict: 'deny',
      code: 'request_blocked',
      reason: 'sqli',
      rule_ids: ['942100', '942190'],
      detail: { matches: [{ target: 'query.q', excerpt: "' UNION SELECT" }] },
      micros: 1520,
    },
  ],
  total_ms: 1.9,
};

/**
 * A decision carrying terminal control sequences in every field request data can reach:
 * 7-bit (ESC [, OSC) and 8-bit (U+009B CSI) escapes, a bidi override, a line separator.
 */
const ESC = '\x1b[2J\x1b]0;owned\x07\x9b31m\u202eevil\u2028';
const hostile: DecisionEntry = {
  ...denied,
  request_id: 'hostile-1',
  time: `2026-01-01T10:00:00.000Z${ESC}`,
  method: `GET${ESC}`,
  path: `/api/receipts/${ESC}`,
  route: `api${ESC}`,
  client_ip: `203.0.113.9${ESC}`,
  code: `request_blocked${ESC}`,
  steps: [
    {
      policy: `pattern_block${ESC}`,
      verdict: 'deny',
      code: `request_blocked${ESC}`,
      reason: `sqli${ESC}`,
      rule_ids: [`942100${ESC}`],
      detail: {
        [`key${ESC}`]: `value${ESC}`,
        matches: [{ [`target${ESC}`]: `json:k${ESC}`, excerpt: `' UNION SELECT ${ESC}` }],
      },
      micros: 3,
    },
  ],
};
/** raw control characters, DEL, C1, bidi controls, line/paragraph separators */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNSAFE = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]/;

/** answers of an admin listener (or whatever --admin points at) that are not decisions */
const ODD_BODIES: Record<string, { status: number; body: string }> = {
  'not-a-decision': { status: 200, body: '{"status":"ok"}' },
  'null-decision': { status: 200, body: 'null' },
  'bad-steps': { status: 200, body: '{"request_id":"x","steps":[null]}' },
  'null-error': { status: 503, body: 'null' },
  'escape-error': { status: 503, body: JSON.stringify({ message: `down${ESC}` }) },
};

/** A stand-in for the admin listener's decision endpoint, backed by a real DecisionLog. */
async function admin(t: Test) {
  const log = new DecisionLog({ size: 10 });
  log.record(denied);
  log.record({ ...denied, request_id: 'ok-1', decision: 'allow', status: 200, code: undefined, steps: [] });
  log.record(hostile);
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req.url!);
    const m = /^\/api\/decisions\/([^/?]+)$/.exec(req.url!);
    res.setHeader('content-type', 'application/json');
    if (!m) {
      res.statusCode = 404;
      res.end(JSON.stringify({ error: 'not_found', message: 'No such endpoint.' }));
      return;
    }
    const id = decodeURIComponent(m[1]!);
    const odd = ODD_BODIES[id];
    if (odd !== undefined) {
      res.statusCode = odd.status;
      res.end(odd.body);
      return;
    }
    if (id === 'boom') {
      res.statusCode = 500;
      res.end(JSON.stringify({ error: 'internal_error', message: 'Internal gateway error.' }));
      return;
    }
    if (!isWellFormedRequestId(id)) {
      res.statusCode = 400;
      res.end(JSON.stringify({ error: 'bad_request', message: 'Malformed request id.' }));
      return;
    }
    const e = log.get(id);
    res.statusCode = e ? 200 : 404;
    res.end(
      JSON.stringify(e ?? { error: 'not_found', message: 'No decision recorded for this request id.' }),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

function io(env: Record<string, string> = {}) {
  const o = { out: '', err: '' };
  return {
    o,
    io: {
      stdout: { write: (s: string) => (o.out += s) },
      stderr: { write: (s: string) => (o.err += s) },
      env,
    },
  };
}

t.test('prints a refused request readably', async (t) => {
  const a = await admin(t);
  const { o, io: x } = io();
  t.equal(await runExplain(['abc-123', '--admin', a.url], x), 0);
  t.equal(o.err, '');
  t.equal(
    o.out,
    [
      'Request abc-123: REFUSED 403 request_blocked',
      '  time     2026-01-01T10:00:00.000Z',
      '  request  GET /api/receipts?q=[REDACTED]',
      '  route    api',
      '  client   203.0.113.9',
      '  total    1.9 ms    score 8',
      '',
      'Policies, in the order they ran:',
      '  1. ip_ban         pass  (3 µs)',
      '  2. user_agent     MONITOR (would deny)  user_agent_rejected  reason=scanner  (7 µs)',
      '  3. pattern_block  DENY  request_blocked  reason=sqli  (1.52 ms)',
      '       rules: 942100, 942190',
      '       matches:',
      '         - target="query.q" excerpt="\' UNION SELECT"',
      '',
      'Decided by pattern_block (sqli), rule 942100, 942190.',
      '',
    ].join('\n'),
  );
  t.same(a.seen, ['/api/decisions/abc-123']);
});

t.test('--json prints the raw decision; --admin=URL and GATEWAY_ADMIN_URL work', async (t) => {
  const a = await admin(t);
  const { o, io: x } = io({ GATEWAY_ADMIN_URL: a.url });
  t.equal(await runExplain(['--json', 'abc-123'], x), 0);
  t.same(JSON.parse(o.out), denied);
  const y = io();
  t.equal(await runExplain([`--admin=${a.url}/`, 'ok-1'], y.io), 0);
  t.match(y.o.out, /^Request ok-1: ALLOWED \(200\)\n/);
  t.match(y.o.out, /No policy ran/);
});

t.test('unknown id: clear message, exit 1', async (t) => {
  const a = await admin(t);
  const { o, io: x } = io();
  t.equal(await runExplain(['never-seen', '--admin', a.url], x), 1);
  t.equal(o.out, '');
  t.match(
    o.err,
    /^explain: no decision recorded for request never-seen: it is older than the gateway keeps \(monitoring\.decisions_kept\)/,
  );
});

t.test('malformed id: refused before any request, exit 1', async (t) => {
  const a = await admin(t);
  for (const bad of ['has space', 'x'.repeat(129), 'tab\there', 'é', '.', '..']) {
    const { o, io: x } = io();
    t.equal(await runExplain([bad, '--admin', a.url], x), 1, JSON.stringify(bad));
    t.match(o.err, /is not a request id/);
  }
  t.same(a.seen, [], 'the admin listener was never asked');
});

t.test('ids with reserved URL characters are encoded', async (t) => {
  const a = await admin(t);
  const { o, io: x } = io();
  t.equal(await runExplain(['a/b?c#d', '--admin', a.url], x), 1);
  t.same(a.seen, ['/api/decisions/a%2Fb%3Fc%23d']);
  t.match(o.err, /no decision recorded/);
});

t.test('server error is reported with its message', async (t) => {
  const a = await admin(t);
  const { o, io: x } = io();
  t.equal(await runExplain(['boom', '--admin', a.url], x), 1);
  t.equal(o.err, 'explain: the admin listener answered 500: Internal gateway error.\n');
});

t.test('admin listener unreachable: exit 1 with the reason', async (t) => {
  const srv = http.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  const { o, io: x } = io({ GATEWAY_ADMIN_PORT: String(port) });
  t.equal(await runExplain(['abc-123'], x), 1);
  t.match(
    o.err,
    new RegExp(`cannot reach the admin listener at http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`),
  );
});

t.test('usage errors exit 2', async (t) => {
  for (const args of [[], ['a', 'b'], ['--admin'], ['--nope', 'x'], ['x', '--admin', 'ftp://host']]) {
    const { o, io: x } = io();
    t.equal(await runExplain(args, x), 2, JSON.stringify(args));
    t.ok(o.err.length > 0);
  }
  const { o, io: x } = io();
  t.equal(await runExplain(['--help'], x), 0);
  t.match(o.out, /^usage: receipt-gateway explain REQUEST_ID/);
});

t.test('formatDecision: monitor decision and error step', async (t) => {
  const text = formatDecision({
    ...denied,
    decision: 'monitor',
    status: 200,
    score: undefined,
    steps: [{ policy: 'rate_limit', verdict: 'error', reason: 'store', micros: 2 }],
  });
  t.match(text, /^Request abc-123: ALLOWED, monitor-mode policies would have refused it \(200\)/);
  t.ok(text.includes('1. rate_limit  ERROR  reason=store  (2 µs)'));
  t.match(text, /Decided by rate_limit \(store\)\./);
  t.notMatch(text, /score/);
});

t.test('request data cannot send escape sequences or bidi controls to the terminal', async (t) => {
  const a = await admin(t);
  const { o, io: x } = io();
  t.equal(await runExplain(['hostile-1', '--admin', a.url], x), 0);
  t.equal(o.err, '');
  t.notMatch(o.out, UNSAFE, 'no raw control or bidi character printed');
  const shown = String.raw`\x1b[2J\x1b]0;owned\x07\x9b31m\u202eevil\u2028`;
  t.ok(o.out.includes(`  request  GET${shown} /api/receipts/${shown}\n`), 'path shown with visible escapes');
  t.ok(o.out.includes(`  route    api${shown}\n`));
  t.ok(o.out.includes(`  client   203.0.113.9${shown}\n`));
  t.ok(
    o.out.includes(
      `  1. pattern_block${shown}  DENY  request_blocked${shown}  reason=sqli${shown}  (3 µs)\n`,
    ),
  );
  t.ok(o.out.includes(`       rules: 942100${shown}\n`));
  // JSON.stringify escapes C0 itself (\u001b); the rest is escaped here
  const jsonShown = String.raw`\u001b[2J\u001b]0;owned\u0007\x9b31m\u202eevil\u2028`;
  t.ok(o.out.includes(`       key${shown}: "value${jsonShown}"\n`), 'detail key and value');
  t.ok(
    o.out.includes(`         - target${shown}="json:k${jsonShown}" excerpt="' UNION SELECT ${jsonShown}"\n`),
    'matched target and excerpt',
  );
  t.equal(o.out.split('\n').length, 16, 'no line broken by a separator in the data');

  const j = io();
  t.equal(await runExplain(['hostile-1', '--json', '--admin', a.url], j.io), 0);
  t.notMatch(j.o.out, UNSAFE, '--json: no raw control or bidi character printed');
  t.same(JSON.parse(j.o.out), hostile, '--json: the same decision, escaped as JSON');
  t.ok(j.o.out.includes(String.raw`\u009b31m\u202eevil\u2028`));
});

t.test('an answer that is not a decision: clear message, exit 1, no crash', async (t) => {
  const a = await admin(t);
  for (const id of ['not-a-decision', 'null-decision', 'bad-steps']) {
    const { o, io: x } = io();
    t.equal(await runExplain([id, '--admin', a.url], x), 1, id);
    t.equal(o.out, '');
    t.equal(
      o.err,
      `explain: the admin listener answered 200 with something that is not a decision (is ${a.url} the gateway's admin listener?)\n`,
      id,
    );
  }
  const n = io();
  t.equal(await runExplain(['null-error', '--admin', a.url], n.io), 1);
  t.equal(n.o.err, 'explain: the admin listener answered 503\n');
  const e = io();
  t.equal(await runExplain(['escape-error', '--admin', a.url], e.io), 1);
  t.equal(
    e.o.err,
    String.raw`explain: the admin listener answered 503: down\x1b[2J\x1b]0;owned\x07\x9b31m\u202eevil\u2028` +
      '\n',
  );
});
