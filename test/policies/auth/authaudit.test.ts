/**
 * API keys and roles as an operator configures them: a configured role that the gateway
 * and the upstream would read differently is refused at start. Over real TCP with the
 * shipped gateway.yaml and the recording mock.
 */
import t from 'tap';
import { startHarness, type HarnessOptions } from '../../helpers/harness.js';
import { hashApiKey } from '../../../policies/auth/index.js';

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
  t.match(keyRoles, /policies\.auth\.api_keys\.keys\[0\]\.roles\[0\]: invalid value "user,admin"/);
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
