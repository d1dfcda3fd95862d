/**
 * A client may send any well-formed X-Request-Id, the id of an earlier request included: over
 * real TCP, a refused request's decision stays what `/api/decisions/{id}` answers when a later
 * allowed request reuses its id (before, the later one replaced it, so an attacker could hide
 * a refusal from `explain` by sending one benign request with the same id).
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { startHarness } from '../../helpers/harness.js';
import type { DecisionEntry } from '../../../gateway/observability/decisions.js';

t.test('a refusal is not hidden by a later allowed request with the same id', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const token = await h.login('alice');
  const id = `reuse-${randomUUID()}`;
  const headers = { authorization: `Bearer ${token}`, 'x-request-id': id };

  const attack = await fetch(`${h.url}/api/receipts?q=1'%20UNION%20SELECT%20password%20FROM%20users--`, {
    headers,
  });
  t.equal(attack.status, 403);
  t.equal(attack.headers.get('x-request-id'), id, 'the client id is kept');
  await attack.arrayBuffer();
  const benign = await fetch(`${h.url}/api/receipts?page=2`, { headers });
  t.equal(benign.status, 200);
  t.equal(benign.headers.get('x-request-id'), id);
  await benign.arrayBuffer();

  const d = await fetch(`${h.adminUrl}/api/decisions/${id}`);
  t.equal(d.status, 200);
  const entry = (await d.json()) as DecisionEntry;
  t.equal(entry.decision, 'deny');
  t.equal(entry.status, 403);
  t.equal(entry.code, 'request_blocked');

  t.same(
    h.observability.decisions
      .recent({ limit: 10 })
      .filter((e) => e.request_id === id)
      .map((e) => e.status),
    [200, 403],
    'both decisions are kept and listed, newest first',
  );
});
