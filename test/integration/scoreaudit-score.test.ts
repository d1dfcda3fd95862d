import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import YAML from 'yaml';
import { startFileHarness, REPO, TEST_SECRET, metricsText } from '../helpers/harness.js';

/**
 * The security score judges the configuration that really runs: rule packs and checks in
 * monitor mode inside an enforcing policy, a route's own JWT settings (a weak secret, no
 * audience), a shared secret used beside a JWKS, and static public keys.
 */

interface Check {
  id: string;
  pass: boolean;
  weight: number;
  recommendation: string;
  detail?: string;
}
interface Report {
  score: number;
  checks: Check[];
  recommendations: string[];
}

const { h } = await startFileHarness(t);
const shipped = YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as {
  routes: Record<string, unknown>[];
};

/** The report on the admin listener, checked against the gauge, and its raw text. */
async function report(t: Test): Promise<{ r: Report; text: string }> {
  const res = await fetch(`${h.adminUrl}/api/health/security`);
  t.equal(res.status, 200);
  const text = await res.text();
  const r = JSON.parse(text) as Report;
  const gauge = /^gateway_security_score (\S+)$/m.exec(await metricsText(h))?.[1];
  t.equal(Number(gauge), r.score, 'gateway_security_score equals the JSON score');
  const weight = (cs: Check[]) => cs.reduce((a, c) => a + c.weight, 0);
  t.equal(
    r.score,
    Math.round((100 * weight(r.checks.filter((c) => c.pass))) / weight(r.checks)),
    'the score is the weighted share of passing checks',
  );
  return { r, text };
}
const check = (r: Report, id: string) => r.checks.find((c) => c.id === id);

/** YAML for the shipped routes with `route` first. */
const withRoute = (route: Record<string, unknown>, policies: Record<string, unknown> = {}) =>
  YAML.stringify({ routes: [route, ...shipped.routes], policies });

t.test('a rule pack in monitor mode fails monitor_mode; enforcing it again passes', async (t) => {
  const before = (await report(t)).r;
  t.equal(check(before, 'monitor_mode')?.pass, true, 'nothing monitors in the shipped config');

  await h.reload('policies: { pattern_block: { packs: { sqli: monitor } } }');
  const { r } = await report(t);
  const c = check(r, 'monitor_mode')!;
  t.equal(c.pass, false, 'the monitoring pack fails the check');
  t.equal(c.detail, 'monitor mode: pattern-block (pack sqli)');
  t.ok(r.recommendations.includes(c.recommendation), 'with its recommendation');
  t.ok(r.score < before.score, 'the score is lower than before');

  await h.reload('policies: { pattern_block: { packs: { sqli: enforce } } }');
  const after = (await report(t)).r;
  t.equal(check(after, 'monitor_mode')?.pass, true, 'an enforcing pack passes');
  t.notOk(after.recommendations.includes(c.recommendation), 'and the recommendation is gone');
  t.equal(after.score, before.score, 'the score is back');
});

t.test("the upload gate's active-content check in monitor mode fails monitor_mode", async (t) => {
  await h.reload(
    withRoute({
      name: 'upload2',
      methods: ['POST'],
      path: '/api/receipts/upload2',
      policies: { upload_gate: { enabled: true, active_content: 'monitor' } },
    }),
  );
  const { r } = await report(t);
  t.equal(check(r, 'monitor_mode')?.pass, false);
  t.equal(check(r, 'monitor_mode')?.detail, 'monitor mode: upload-gate (active_content)');
});

t.test("a route's own weak JWT secret and missing audience are judged", async (t) => {
  const weak = 'q'.repeat(40);
  await h.reload(
    withRoute(
      {
        name: 'legacy',
        path: '/api/legacy/**',
        policies: { auth: { require: ['jwt'], jwt: { secret: weak } } },
      },
      { auth: { jwt: { audience: 'receipts', issuer: 'idp' } } },
    ),
  );
  const { r, text } = await report(t);
  t.equal(check(r, 'jwt_secret_length')?.pass, true, '40 characters are long enough');
  t.equal(check(r, 'jwt_secret_entropy')?.pass, false, "the route's repeated-character secret fails");
  t.equal(check(r, 'jwt_secret_entropy')?.detail, '0.00 bits/char, about 0 bits in all');
  t.equal(check(r, 'jwt_audience')?.pass, false, 'the route checks no audience');
  t.equal(check(r, 'jwt_issuer')?.pass, false, 'nor issuer');
  t.notOk(text.includes('qqqqqqqq'), 'the secret is never shown');
  t.notOk(text.includes(TEST_SECRET.slice(0, 8)), 'nor the global one');

  // the route checks them too, with a strong secret of its own: everything passes
  await h.reload(
    withRoute(
      {
        name: 'legacy',
        path: '/api/legacy/**',
        policies: {
          auth: {
            require: ['jwt'],
            jwt: { secret: crypto.randomBytes(32).toString('base64'), audience: 'receipts', issuer: 'idp' },
          },
        },
      },
      { auth: { jwt: { audience: 'receipts', issuer: 'idp' } } },
    ),
  );
  const fixed = (await report(t)).r;
  for (const id of ['jwt_secret_length', 'jwt_audience', 'jwt_issuer'])
    t.equal(check(fixed, id)?.pass, true, `${id} passes`);
});

t.test('a short secret still used for HS256 beside a JWKS fails the secret checks', async (t) => {
  await h.reload(
    YAML.stringify({
      policies: {
        auth: {
          jwt: {
            secret: 'short-but-allowed',
            allow_weak_secret: true,
            jwks_url: 'http://127.0.0.1:9/jwks.json',
            algorithms: ['HS256', 'RS256'],
          },
        },
      },
    }),
  );
  const { r, text } = await report(t);
  t.equal(check(r, 'jwt_secret_length')?.pass, false, 'HS256 tokens are verified with the short secret');
  t.equal(check(r, 'jwt_secret_length')?.detail, '17 characters');
  t.notOk(text.includes('short-but'), 'the secret is never shown');

  // RS256 only: the secret is not used, the JWKS passes the secret checks
  await h.reload(
    YAML.stringify({
      policies: {
        auth: {
          jwt: {
            secret: 'short-but-allowed',
            allow_weak_secret: true,
            jwks_url: 'http://127.0.0.1:9/jwks.json',
            algorithms: ['RS256'],
          },
        },
      },
    }),
  );
  const keys = (await report(t)).r;
  t.equal(check(keys, 'jwt_secret_length')?.pass, true);
  t.equal(
    check(keys, 'jwt_secret_length')?.detail,
    'JWTs are verified with JWKS public keys; no shared secret',
  );
});

t.test('static public keys: the audience and issuer checks apply', async (t) => {
  const pem = crypto
    .generateKeyPairSync('ec', { namedCurve: 'P-256' })
    .publicKey.export({ type: 'spki', format: 'pem' })
    .toString();
  await h.reload(YAML.stringify({ policies: { auth: { jwt: { secret: '', public_keys: [{ pem }] } } } }));
  const { r } = await report(t);
  t.equal(check(r, 'jwt_secret_length')?.pass, true);
  t.equal(check(r, 'jwt_secret_length')?.detail, 'JWTs are verified with public keys; no shared secret');
  t.equal(check(r, 'jwt_audience')?.pass, false, 'no audience is checked');
  t.equal(check(r, 'jwt_issuer')?.pass, false, 'no issuer is checked');
});

t.test('HSTS with max-age=0 fails the hsts check; a real max-age passes', async (t) => {
  await h.reload(
    YAML.stringify({
      policies: { security_headers: { extra: { 'Strict-Transport-Security': 'max-age=0' } } },
    }),
  );
  const { r } = await report(t);
  const c = check(r, 'hsts')!;
  t.equal(c.pass, false, 'max-age=0 switches HSTS off in browsers');
  t.ok(r.recommendations.includes(c.recommendation), 'with its recommendation');
  const sent = await fetch(`${h.url}/api/health`);
  await sent.arrayBuffer();
  t.equal(sent.headers.get('strict-transport-security'), 'max-age=0', 'what the gateway sends');

  await h.reload(
    YAML.stringify({ policies: { security_headers: { extra: { 'Strict-Transport-Security': null } } } }),
  );
  t.equal(check((await report(t)).r, 'hsts')?.pass, false, 'removed: fails');

  await h.reload(
    YAML.stringify({
      policies: { security_headers: { extra: { 'Strict-Transport-Security': 'max-age=63072000; preload' } } },
    }),
  );
  const fixed = (await report(t)).r;
  t.equal(check(fixed, 'hsts')?.pass, true, 'a real max-age passes');
  t.notOk(fixed.recommendations.includes(c.recommendation), 'and the recommendation is gone');
});
