import t, { type Test } from 'tap';
import { startFileHarness, mark, mockSaw, auditOf, metricsText, metricValue } from '../helpers/harness.js';

/**
 * JSON Patch (RFC 6902) and merge-patch bodies, found by an adversarial audit: a `copy` or
 * `move` writes the value at `from` into the field `path` names, so it must be judged there,
 * and must not launder a value written (in the same patch, or stored before) under a field
 * judged more leniently (a free-text note) into a stricter one. Over real TCP with a valid
 * JWT against the shipped gateway.yaml and the real mock (PATCH /api/receipts/:id, which the
 * mock answers 405: a forwarded request is one the mock recorded).
 */

const { h, token } = await startFileHarness(t);

interface Sent {
  readonly status: number;
  readonly json: Record<string, unknown> | undefined;
  readonly requestId: string | undefined;
  readonly marker: string;
}

const PATCH = 'application/json-patch+json';
const SQLI = "' OR 1=1 --";

async function patch(body: unknown, contentType = PATCH): Promise<Sent> {
  const marker = mark();
  const res = await fetch(`${h.url}/api/receipts/7?m=${marker}`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${token}`, 'content-type': contentType },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: res.status, json, requestId: res.headers.get('x-request-id') ?? undefined, marker };
}

/** 403 request_blocked with these rules, targets and reason, audited and counted; the mock never saw it. */
async function refused(
  t: Test,
  body: unknown,
  ruleIds: string[],
  targets: string[],
  reason: string,
  contentType = PATCH,
): Promise<void> {
  const before = metricValue(await metricsText(h), 'gateway_blocked_requests_total', { reason });
  const r = await patch(body, contentType);
  t.equal(r.status, 403, 'status');
  t.same(r.json, { error: 'request_blocked', message: r.json?.message, request_id: r.requestId }, 'body');
  const line = (await auditOf(h, r.requestId)).find((l) => l.event === 'request_blocked');
  t.equal(line?.reason, reason, 'audit reason');
  t.same(line?.rule_ids, ruleIds, 'audit rule ids');
  const matches = (line?.detail as { matches?: { target: string }[] } | undefined)?.matches ?? [];
  t.same(
    matches.map((m) => m.target),
    targets,
    'audit targets',
  );
  t.equal(
    metricValue(await metricsText(h), 'gateway_blocked_requests_total', { reason }),
    before + 1,
    `gateway_blocked_requests_total{reason="${reason}"}`,
  );
  t.notOk(await mockSaw(h, r.marker), 'the upstream never saw the request');
}

/** Not refused by the gateway: the mock received it (and answered 405: it has no PATCH). */
async function forwarded(t: Test, body: unknown, contentType = PATCH): Promise<void> {
  const r = await patch(body, contentType);
  t.equal(r.status, 405, 'the service answered');
  t.ok(await mockSaw(h, r.marker), 'forwarded');
}

t.test('a note with one finding passes under the free-text threshold, in a patch as in JSON', async (t) => {
  await forwarded(t, [{ op: 'add', path: '/notes', value: SQLI }]);
  await forwarded(t, { notes: SQLI }, 'application/merge-patch+json');
  await refused(t, [{ op: 'add', path: '/merchant', value: SQLI }], ['sqli-100'], ['json:[0].value'], 'sqli');
  await refused(
    t,
    { merchant: SQLI },
    ['sqli-100'],
    ['json:merchant'],
    'sqli',
    'application/merge-patch+json',
  );
});

t.test('copy or move cannot launder a value the patch wrote under a free-text field', async (t) => {
  const add = { op: 'add', path: '/notes', value: SQLI };
  for (const op of ['copy', 'move']) {
    await refused(
      t,
      [add, { op, from: '/notes', path: '/merchant' }],
      ['sqli-100'],
      ['json:[0].value', 'json:[1].from'],
      'sqli',
    );
  }
  // through another free-text field, out of an array or object the patch wrote, case-insensitive
  await refused(
    t,
    [
      add,
      { op: 'copy', from: '/notes', path: '/comment' },
      { op: 'move', from: '/comment', path: '/merchant' },
    ],
    ['sqli-100'],
    ['json:[0].value', 'json:[2].from'],
    'sqli',
  );
  await refused(
    t,
    [
      { op: 'add', path: '/items/0', value: { name: 'Tea', notes: SQLI } },
      { op: 'copy', from: '/items/0/notes', path: '/items/1/name' },
    ],
    ['sqli-100'],
    ['json:[0].value.notes', 'json:[1].from'],
    'sqli',
  );
  await refused(
    t,
    [add, { op: 'Move', From: '/notes', Path: '/merchant' }],
    ['sqli-100'],
    ['json:[0].value', 'json:[1].From'],
    'sqli',
  );
  // a clean note may be copied anywhere; a value moved along stays under its own field name
  await forwarded(t, [
    { op: 'add', path: '/notes', value: 'Lunch with the Northwind team' },
    { op: 'copy', from: '/notes', path: '/merchant' },
  ]);
  await forwarded(t, [
    { op: 'add', path: '/draft', value: { notes: SQLI } },
    { op: 'move', from: '/draft/notes', path: '/memo' },
  ]);
});

t.test('a stored value copied out of a laxer field the gateway cannot see is refused', async (t) => {
  await refused(
    t,
    [{ op: 'copy', from: '/notes', path: '/merchant' }],
    ['json-patch-copy'],
    ['json:[0].from'],
    'protocol',
  );
  await refused(
    t,
    [{ op: 'move', from: '/items/2/notes', path: '/items/0/name' }],
    ['json-patch-copy'],
    ['json:[0].from'],
    'protocol',
  );
  // the same operations in an array sent as application/json (ASP.NET Core binds a
  // JsonPatchDocument from it)
  await refused(
    t,
    [{ op: 'copy', from: '/notes', path: '/merchant' }],
    ['json-patch-copy'],
    ['json:[0].from'],
    'protocol',
    'application/json',
  );
  // nor through a location the patch wrote before, or through another free-text field
  await refused(
    t,
    [
      { op: 'add', path: '/draft', value: {} },
      { op: 'copy', from: '/notes', path: '/draft/notes' },
      { op: 'copy', from: '/draft/notes', path: '/merchant' },
    ],
    ['json-patch-copy'],
    ['json:[2].from'],
    'protocol',
  );
  await refused(
    t,
    [
      { op: 'add', path: '/draft', value: {} },
      { op: 'copy', from: '/stash', path: '/draft' },
      { op: 'copy', from: '/draft/notes', path: '/merchant' },
    ],
    ['json-patch-copy'],
    ['json:[2].from'],
    'protocol',
  );
  await refused(
    t,
    [
      { op: 'copy', from: '/notes', path: '/comment' },
      { op: 'move', from: '/comment', path: '/merchant' },
    ],
    ['json-patch-copy'],
    ['json:[1].from'],
    'protocol',
  );
  // into a field as lenient, or out of a stricter one
  await forwarded(t, [
    { op: 'copy', from: '/notes', path: '/draft/notes' },
    { op: 'move', from: '/draft', path: '/archive' },
  ]);
  await forwarded(t, [{ op: 'copy', from: '/notes', path: '/description' }]);
  await forwarded(t, [{ op: 'copy', from: '/merchant', path: '/notes' }]);
  await forwarded(t, [{ op: 'move', from: '/items/0', path: '/items/1' }]);
});

t.test('an operation naming path, from, op or value twice in different case is refused', async (t) => {
  // case-insensitive binders take one of them: the gateway cannot know which
  await refused(
    t,
    '[{"op":"add","path":"/notes","Path":"/merchant","value":"fine"}]',
    ['body-parse-error'],
    ['body'],
    'protocol',
  );
  await refused(
    t,
    '[{"op":"add","path":"/notes","value":"ok","VALUE":"x"}]',
    ['body-parse-error'],
    ['body'],
    'protocol',
  );
  // one member in another case is read as that member
  await forwarded(t, `[{"op":"add","Path":"/notes","Value":"${SQLI}"}]`);
});

t.test('pointers, shapes and merge-patch map to the fields of a plain JSON body', async (t) => {
  // an item's name is not free text, whatever index or escape addresses it
  await refused(
    t,
    [{ op: 'add', path: '/items/0/name', value: SQLI }],
    ['sqli-100'],
    ['json:[0].value'],
    'sqli',
  );
  await refused(
    t,
    [{ op: 'add', path: '/items/-', value: { name: SQLI } }],
    ['sqli-100'],
    ['json:[0].value.name'],
    'sqli',
  );
  await refused(t, [{ op: 'add', path: '/no~1tes', value: SQLI }], ['sqli-100'], ['json:[0].value'], 'sqli');
  await forwarded(t, [{ op: 'add', path: '/items/0/notes', value: SQLI }]);
  // a patch that is not an array of operations is plain JSON: `value` is no free-text field
  await refused(t, { op: 'add', path: '/notes', value: SQLI }, ['sqli-100'], ['json:value'], 'sqli');
  // an operation without a value, or with an unknown op, writes nothing to judge
  await forwarded(t, [
    { op: 'add', path: '/merchant' },
    { op: 'frob', path: '/merchant', from: '/notes' },
  ]);
  // merge-patch: deletions are null, nested members are judged under their own names
  await forwarded(
    t,
    { notes: null, merchant: 'Blue Bottle', items: [{ name: 'Tea', notes: SQLI }] },
    'application/merge-patch+json',
  );
  await refused(
    t,
    { notes: null, items: [{ name: SQLI }] },
    ['sqli-100'],
    ['json:items[0].name'],
    'sqli',
    'application/merge-patch+json',
  );
});
