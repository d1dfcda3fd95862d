import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { SignJWT } from 'jose';
import { metricsText, metricValue, REPO, startHarness, TEST_SECRET } from '../../helpers/harness.js';
import { ConfigLoadError, loadConfigFile } from '../../../gateway/config/load.js';
import { closeGeneration, compileGeneration } from '../../../gateway/config/compile.js';
import { offlineServices } from '../../../gateway/commands/validate.js';

/**
 * Rate-limit audit findings, over real TCP with the real mock: a GET rule also counts HEAD
 * (which the route accepts and the service answers), a subject spelt like the hash of
 * another subject does not share its buckets, and a rule scoped to a route that does not
 * exist is a configuration error instead of a rule that never applies.
 */

const CONFIG = `
policies:
  rate_limit:
    enabled: true
    default: "off"
    rules:
      - { name: reads, limits: 2/minute, methods: [GET], routes: [health] }
      - { name: per-user, limits: 1/minute, key: subject, routes: [api] }
`;

const nowS = () => Math.floor(Date.now() / 1000);
const token = (sub: string) =>
  new SignJWT({ sub, role: 'user', exp: nowS() + 600 })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode(TEST_SECRET));

t.test('a GET rule counts HEAD requests too: HEAD cannot bypass it', async (t) => {
  const h = await startHarness({ config: CONFIG, abuseControls: true });
  t.teardown(() => h.close());
  await h.clearMock();
  const health = async (method: string) => {
    const r = await fetch(`${h.url}/api/health`, { method });
    await r.arrayBuffer();
    return r;
  };
  t.equal((await health('HEAD')).status, 200, 'HEAD is served on the GET route');
  t.equal((await health('GET')).status, 200);
  const get = await health('GET');
  t.equal(get.status, 429, 'the HEAD took a token of the GET rule');
  t.equal(get.headers.get('ratelimit-policy'), '"reads-60s";q=2;w=60');
  const head = await health('HEAD');
  t.equal(head.status, 429, 'a HEAD past the limit is refused');
  t.equal(head.headers.get('ratelimit-policy'), '"reads-60s";q=2;w=60');
  t.match(head.headers.get('ratelimit'), /^"reads-60s";r=0;t=(59|60)$/);
  t.match(head.headers.get('retry-after'), /^(29|30)$/);
  t.same(
    (await h.mockRequests()).map((r) => r.method),
    ['HEAD', 'GET'],
    'the refused requests never reached the service',
  );
  const limited = (await h.audit()).filter((l) => l.event === 'rate_limited');
  t.same(
    limited.map((l) => [l.method, l.status, l.rule_ids]),
    [
      ['GET', 429, ['reads']],
      ['HEAD', 429, ['reads']],
    ],
  );
  t.equal(metricValue(await metricsText(h), 'gateway_rate_limited_total', { rule: 'reads' }), 2);
});

t.test('a subject spelt like the hash of another subject has buckets of its own', async (t) => {
  const h = await startHarness({ config: CONFIG, abuseControls: true });
  t.teardown(() => h.close());
  await h.clearMock();
  // a subject with a space is stored under `#` + 32 hex digits of its sha256
  const victim = 'John Smith';
  const lookalike = `#${createHash('sha256').update(victim).digest('hex').slice(0, 32)}`;
  const receipts = async (sub: string) => {
    const r = await fetch(`${h.url}/api/receipts`, {
      headers: { authorization: `Bearer ${await token(sub)}` },
    });
    await r.arrayBuffer();
    return r.status;
  };
  t.equal(await receipts(lookalike), 200);
  t.equal(await receipts(lookalike), 429, 'the look-alike is limited on its own bucket');
  t.equal(await receipts(victim), 200, "the look-alike did not spend the victim's token");
  t.equal(await receipts(victim), 429);
  t.same(
    (await h.mockRequests()).map((r) => r.headers['x-auth-subject']),
    [lookalike, victim],
    'one request of each reached the service',
  );
});

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-rlaudit-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
let files = 0;

/** Load and compile a config file; its problems as [key path, message], [] when valid. */
async function problemsOf(yaml: string): Promise<string[][]> {
  const env = { JWT_SECRET_KEY: TEST_SECRET };
  const file = path.join(dir, `c${++files}.yaml`);
  fs.writeFileSync(file, yaml);
  const services = offlineServices(env);
  try {
    const gen = await compileGeneration(await loadConfigFile(file, env), services);
    await closeGeneration(gen);
    return [];
  } catch (err) {
    if (err instanceof ConfigLoadError) return err.problems.map((p) => [p.keyPath, p.message]);
    throw err;
  } finally {
    await services.store.close();
  }
}

t.test('a rule scoped to a route that does not exist is a configuration error', async (t) => {
  // appended to the shipped file's `routes` (its last key): a route of its own adds the rule
  const shipped = fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8');
  const withRule = (routes: string) => `${shipped}
  - name: extra
    path: /extra
    policies:
      rate_limit:
        route_rules:
          - { name: uploads, limits: 5/minute, routes: [${routes}] }
`;
  t.same(await problemsOf(withRule('upload, uplaod')), [
    ['routes[9].policies.rate_limit.route_rules[0].routes[1]', 'no route is named "uplaod"'],
  ]);
  t.same(
    await problemsOf(withRule('upload, login, unmatched')),
    [],
    'every configured route, and `unmatched`, may be named',
  );
});

t.test('an API key override the limiter cannot use is a configuration error', async (t) => {
  // the shipped file, its (empty) API key list replaced by one key with an override
  const shipped = fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8');
  t.match(shipped, /\n {6}keys: \[\]/);
  const withKey = (limits: string) =>
    shipped.replace(
      /\n {6}keys: \[\][^\n]*/,
      `\n      keys: [{ id: batch, hash: "sha256:${'a'.repeat(64)}", rate_limit: "${limits}" }]`,
    );
  t.same(await problemsOf(withKey('5/minute;10 per 60 seconds')), [
    ['policies.auth.api_keys.keys[0].rate_limit', 'two limits share the window of "10/60 seconds"'],
  ]);
  t.same(await problemsOf(withKey('9007199254741/second')), [
    ['policies.auth.api_keys.keys[0].rate_limit', 'bucket 9007199254741 per 1000ms is too large'],
  ]);
  t.same(await problemsOf(withKey('5/minute;100/hour')), [], 'a usable override loads');
});
