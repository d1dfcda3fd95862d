import t from 'tap';
import { startHarness } from '../helpers/harness.js';

t.test('a health check passes through, an unknown path is refused and never reaches the mock', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const ok = await fetch(`${h.url}/api/health`);
  t.equal(ok.status, 200);
  t.same(await ok.json(), { status: 'ok' });
  const nf = await fetch(`${h.url}/nope`);
  t.equal(nf.status, 404);
  const body = (await nf.json()) as Record<string, string>;
  t.equal(body.error, 'not_found');
  const seen = await h.mockRequests();
  t.same(
    seen.map((r) => r.path),
    ['/api/health'],
  );
});
