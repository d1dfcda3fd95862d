import t from 'tap';
import { PassThrough } from 'node:stream';
import {
  DecisionLog,
  createDecisionLog,
  decisionFromContext,
  isWellFormedRequestId,
  ENTRY_LIMITS,
  type DecisionEntry,
} from '../../../gateway/observability/decisions.js';
import type { RequestContext } from '../../../gateway/context.js';
import { makeContext } from '../../helpers/context.js';

let seq = 0;
function entry(
  decision: DecisionEntry['decision'],
  id = `req-${++seq}`,
  extra: Partial<DecisionEntry> = {},
): DecisionEntry {
  return {
    request_id: id,
    time: new Date(Date.UTC(2026, 0, 1, 0, 0, 0, seq)).toISOString(),
    method: 'GET',
    path: '/api/receipts',
    route: 'api',
    client_ip: '10.0.0.1',
    status: decision === 'allow' ? 200 : 403,
    decision,
    steps: [{ policy: 'pattern_block', verdict: decision === 'allow' ? 'pass' : 'deny', micros: 12 }],
    total_ms: 1.5,
    ...extra,
  };
}

t.test('record, get and recent', async (t) => {
  const log = createDecisionLog({ size: 10, allowSize: 5 });
  const a = entry('allow');
  const d = entry('deny', undefined, { code: 'request_blocked' });
  const m = entry('monitor');
  log.record(a);
  log.record(d);
  log.record(m);
  t.same(log.get(a.request_id), a);
  t.same(log.get(d.request_id), d);
  t.equal(log.get('nope'), undefined);
  t.same(
    log.recent().map((e) => e.request_id),
    [m.request_id, d.request_id, a.request_id],
    'newest first across both rings',
  );
  t.same(
    log.recent({ deniedOnly: true }).map((e) => e.request_id),
    [m.request_id, d.request_id],
    'denied and monitor-flagged only',
  );
  t.same(
    log.recent({ limit: 1 }).map((e) => e.request_id),
    [m.request_id],
  );
  t.same(log.recent({ limit: 0 }), []);
});

t.test('refused requests are kept preferentially: a flood of allows does not evict them', async (t) => {
  const log = new DecisionLog({ size: 4, allowSize: 2 });
  const denied = [entry('deny'), entry('deny'), entry('deny')];
  for (const e of denied) log.record(e);
  const allows: DecisionEntry[] = [];
  for (let i = 0; i < 1000; i++) {
    const e = entry('allow');
    allows.push(e);
    log.record(e);
  }
  for (const e of denied) t.ok(log.get(e.request_id), `${e.request_id} still kept`);
  t.notOk(log.get(allows[0]!.request_id), 'old allows evicted');
  t.ok(log.get(allows[999]!.request_id));
  t.ok(log.get(allows[998]!.request_id));
  t.notOk(log.get(allows[997]!.request_id), 'allow ring holds 2');
  t.same(log.stats(), { denied: 3, deniedCapacity: 4, allowed: 2, allowedCapacity: 2 });
});

t.test('the deny ring is bounded and evicts the oldest', async (t) => {
  const log = new DecisionLog({ size: 3 });
  const es = Array.from({ length: 5 }, () => entry('deny'));
  for (const e of es) log.record(e);
  t.notOk(log.get(es[0]!.request_id));
  t.notOk(log.get(es[1]!.request_id));
  t.same(
    log.recent({ deniedOnly: true, limit: 10 }).map((e) => e.request_id),
    [es[4]!.request_id, es[3]!.request_id, es[2]!.request_id],
  );
  t.equal(log.stats().allowedCapacity, 1, 'default allow ring: a quarter of size, at least 1');
});

t.test('a reused request id: a refusal is not hidden by a later allowed request', async (t) => {
  const log = new DecisionLog({ size: 2, allowSize: 2 });
  const first = entry('deny', 'dup', { code: 'request_blocked', time: '2026-01-01T00:00:05.000Z' });
  const second = entry('allow', 'dup', { time: '2026-01-01T00:00:06.000Z' });
  log.record(first);
  log.record(second);
  t.same(log.get('dup'), first, 'the refusal, though the allowed request came later');
  t.same(
    log.recent().map((e) => e.decision),
    ['allow', 'deny'],
    'both are listed, newest first',
  );
  log.record(entry('deny'));
  log.record(entry('deny')); // evicts `first` from the deny ring
  t.same(log.get('dup'), second, 'once the refusal is evicted, the allowed entry is still indexed');

  const twice = new DecisionLog({ size: 4, allowSize: 4 });
  const m = entry('monitor', 'again', { path: '/m' });
  const d = entry('deny', 'again', { path: '/d' });
  twice.record(m);
  twice.record(d);
  twice.record(entry('allow', 'again'));
  t.equal(twice.get('again')?.path, '/d', 'among refused and flagged ones, the latest');
  twice.record(entry('allow', 'ok', { path: '/a1' }));
  twice.record(entry('allow', 'ok', { path: '/a2' }));
  t.equal(twice.get('ok')?.path, '/a2', 'among allowed ones, the latest');
});

t.test('entries are capped: steps, rule ids, detail size, path length', async (t) => {
  const log = new DecisionLog({ size: 2 });
  const big = entry('deny', 'big', {
    path: '/x?' + 'a'.repeat(10_000),
    steps: Array.from({ length: 100 }, (_, i) => ({
      policy: `p${i}`,
      verdict: 'pass' as const,
      rule_ids: Array.from({ length: 100 }, (_, j) => `r${j}`),
      detail: { excerpt: 'z'.repeat(10_000) },
      micros: 1,
    })),
  });
  log.record(big);
  const e = log.get('big')!;
  t.equal(e.path.length, ENTRY_LIMITS.maxPathLength + 1);
  t.equal(e.steps.length, ENTRY_LIMITS.maxSteps + 1);
  t.same(e.steps.at(-1), { policy: '…', verdict: 'pass', detail: { omitted_steps: 36 }, micros: 0 });
  t.equal(e.steps[0]!.rule_ids!.length, ENTRY_LIMITS.maxRuleIds);
  t.equal(e.steps[0]!.detail!.truncated, true);
  t.ok(JSON.stringify(e).length < 300_000);
  const small = entry('deny', 'small', {
    steps: [{ policy: 'p', verdict: 'deny', detail: { target: 'query.q', excerpt: "' OR 1=1" }, micros: 3 }],
  });
  log.record(small);
  t.same(
    log.get('small')!.steps[0]!.detail,
    { target: 'query.q', excerpt: "' OR 1=1" },
    'small details kept as they are',
  );
});

t.test('isWellFormedRequestId', async (t) => {
  t.equal(isWellFormedRequestId('abc-123_XYZ.~'), true);
  t.equal(isWellFormedRequestId('a'.repeat(128)), true);
  t.equal(isWellFormedRequestId('a'.repeat(129)), false);
  t.equal(isWellFormedRequestId(''), false);
  t.equal(isWellFormedRequestId('has space'), false);
  t.equal(isWellFormedRequestId('new\nline'), false);
  t.equal(isWellFormedRequestId('ünï'), false);
  // dot segments: `/api/decisions/..` resolves away in every URL parser
  t.equal(isWellFormedRequestId('.'), false);
  t.equal(isWellFormedRequestId('..'), false);
  t.equal(isWellFormedRequestId('...'), true);
  t.equal(isWellFormedRequestId('..a'), true);
});

t.test('decisionFromContext maps the trace and redacts the target', async (t) => {
  const ctx = {
    id: 'r-1',
    start: process.hrtime.bigint(),
    receivedAt: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
    method: 'POST',
    target: '/api/x?token=abc&q=1',
    rawPath: '/api/x',
    path: '/api/x',
    query: 'token=abc&q=1',
    headers: {},
    rawHeaders: [],
    clientIp: '192.0.2.7',
    forwardedFor: '192.0.2.7',
    secure: false,
    httpVersion: '1.1',
    bodySource: new PassThrough(),
    routeName: 'api',
    identity: undefined,
    body: undefined,
    forwardBody: undefined,
    forwarded: false,
    upstreamHeaders: {},
    dropUpstreamHeaders: new Set<string>(),
    responseHeaders: {},
    trace: [
      { policy: 'ip_ban', verdict: 'pass', micros: 4.4 },
      {
        policy: 'pattern_block',
        verdict: 'deny',
        code: 'request_blocked',
        reason: 'sqli',
        ruleIds: ['942100'],
        detail: { matches: [{ target: 'query.q', excerpt: '1' }] },
        micros: 120.6,
      },
    ],
    monitored: [],
    audit: {},
    locals: new Map(),
    signal: new AbortController().signal,
  } satisfies RequestContext;
  const e = decisionFromContext(ctx, {
    status: 403,
    decision: 'deny',
    code: 'request_blocked',
    score: 7,
    totalMs: 1.23456,
  });
  t.same(e, {
    request_id: 'r-1',
    time: '2026-01-02T03:04:05.006Z',
    method: 'POST',
    path: '/api/x?token=[REDACTED]&q=1',
    route: 'api',
    client_ip: '192.0.2.7',
    status: 403,
    decision: 'deny',
    code: 'request_blocked',
    score: 7,
    steps: [
      { policy: 'ip_ban', verdict: 'pass', micros: 4 },
      {
        policy: 'pattern_block',
        verdict: 'deny',
        code: 'request_blocked',
        reason: 'sqli',
        rule_ids: ['942100'],
        detail: { matches: [{ target: 'query.q', excerpt: '1' }] },
        micros: 121,
      },
    ],
    total_ms: 1.235,
  });
  const e2 = decisionFromContext(ctx, { status: 200, decision: 'allow' });
  t.ok(e2.total_ms >= 0, 'total measured from ctx.start when not given');
  t.notOk('code' in e2);
});

t.test('details are kept as plain JSON copies (no live Map, Buffer or object references)', async (t) => {
  const log = new DecisionLog({ size: 2 });
  const live = { n: 1, tags: new Map([['a', 1]]) };
  log.record(entry('deny', 'copy', { steps: [{ policy: 'p', verdict: 'deny', detail: live, micros: 1 }] }));
  live.n = 2;
  t.same(log.get('copy')!.steps[0]!.detail, { n: 1, tags: {} });
});

t.test('recordContext keeps what record(decisionFromContext(...)) keeps', async (t) => {
  const base = (trace: RequestContext['trace'], target: string, id: string): RequestContext => {
    const ctx = makeContext({
      id,
      target,
      clientIp: '192.0.2.7',
      routeName: 'api',
      receivedAt: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
    });
    ctx.trace.push(...trace);
    return ctx;
  };
  const big = { blob: 'x'.repeat(5000) };
  const cases: [RequestContext['trace'], string][] = [
    [[], '/api/plain'],
    [
      [
        { policy: 'ip_ban', verdict: 'pass', micros: 4.4 },
        { policy: 'auth', verdict: 'pass', detail: { answered: 204 }, micros: 2.5 },
        {
          policy: 'pattern_block',
          verdict: 'monitor',
          code: 'request_blocked',
          reason: 'sqli',
          ruleIds: Array.from({ length: 40 }, (_, i) => `9421${i}`),
          detail: { matches: [{ target: 'query.q', excerpt: '1' }], when: new Date(0) },
          micros: 120.6,
        },
        { policy: 'upload', verdict: 'deny', code: 'upload_rejected', detail: big, micros: 0.4 },
      ],
      '/api/x?password=hunter2&q=1',
    ],
    [
      Array.from({ length: 70 }, (_, i) => ({ policy: `p${i}`, verdict: 'pass' as const, micros: i })),
      `/api/${'y'.repeat(3000)}?token=t`,
    ],
  ];
  const outcomes = [
    { status: 200, decision: 'allow' as const, totalMs: 1.23456 },
    { status: 403, decision: 'monitor' as const, code: 'request_blocked', score: 7, totalMs: 0.5 },
    { status: 502, decision: 'deny' as const, code: 'bad_gateway' },
  ];
  let n = 0;
  for (const [trace, target] of cases) {
    for (const outcome of outcomes) {
      const id = `same-${++n}`;
      const a = createDecisionLog();
      const b = createDecisionLog();
      const ctx = base(trace, target, id);
      a.record(decisionFromContext(ctx, outcome));
      b.recordContext(ctx, outcome);
      const ea = a.get(id)!;
      const eb = b.get(id)!;
      if (outcome.totalMs === undefined) eb.total_ms = ea.total_ms; // measured at the call
      t.same(eb, ea, `${id}: ${target.slice(0, 30)} ${outcome.decision}`);
      t.same(Object.keys(eb), Object.keys(ea), 'same key order');
      t.same(
        eb.steps.map((s) => Object.keys(s)),
        ea.steps.map((s) => Object.keys(s)),
      );
      t.same(
        b.recent(),
        a.recent().map(() => eb),
      );
    }
  }
});
