import t from 'tap';
import { startHarness } from '../helpers/harness.js';

/** `gateway_requests_total{…labels}` from a /metrics text (undefined when absent). */
function requests(text: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith('gateway_requests_total{')) continue;
    const got: Record<string, string> = {};
    for (const m of line.slice(line.indexOf('{') + 1, line.indexOf('}')).matchAll(/(\w+)="([^"]*)"/g))
      got[m[1]!] = m[2]!;
    if (Object.entries(labels).every(([k, v]) => got[k] === v))
      return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

/**
 * The last resort: the request handler fails unexpectedly (here: forwarding throws, after the
 * policies ran). The client gets the SPEC's 500 internal_error; the request is counted once;
 * what it held is given back: login_lockout's per-username lease, so the next login for the
 * same account is not refused as "another attempt in progress".
 */
t.test('an unexpected error: 500 internal_error, counted once, the login lease given back', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const gw = h.gateway as unknown as { proxy?: () => Promise<void> };
  gw.proxy = async () => {
    throw new Error('forwarding failed unexpectedly');
  };
  const login = (password: string) =>
    fetch(`${h.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password }),
    });
  const failed = await login('alice-secret-pw');
  t.equal(failed.status, 500);
  t.match(await failed.json(), { error: 'internal_error', message: 'Internal gateway error.' });
  t.ok(failed.headers.get('x-request-id'), 'the request id goes back with it');
  t.equal(failed.headers.get('x-content-type-options'), 'nosniff', 'with the security headers');
  delete gw.proxy;

  const ok = await login('alice-secret-pw');
  t.equal(ok.status, 200, 'the lease of the failed attempt was given back: no 429 "in progress"');
  const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
  t.equal(
    requests(metrics, { route: 'login', method: 'POST', code: '500', decision: 'deny' }),
    1,
    'the failed request is counted once, as a 500',
  );
  t.equal(requests(metrics, { route: 'login', method: 'POST', code: '200', decision: 'allow' }), 1);
});
