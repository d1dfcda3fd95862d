import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { startHarness, deepMerge, type Harness } from '../helpers/harness.js';
import { Gateway } from '../../gateway/server.js';
import { attachObservability } from '../../gateway/observability/wire.js';
import type { OpsLogger } from '../../gateway/policy.js';
import { ConfigLoadError, parseConfig } from '../../gateway/config/load.js';
import { TestPki } from '../helpers/certs.js';
import { eventually } from '../helpers/wait.js';

/**
 * A reload applies what it can and says what waits for a restart (listener addresses, the
 * admin listener, the store, the audit log, workers, TLS on or off), in the ops log, the
 * config_reload audit line and the admin API's answer, while the dashboard and the
 * security score go on describing what the process runs; and a rejected reload never
 * repeats a credential written in the file.
 */

interface LogLine {
  level: 'info' | 'warn' | 'error';
  obj: Record<string, unknown>;
  msg: string;
}

let h: Harness;
t.before(async () => {
  h = await startHarness();
});
t.teardown(() => h.close());

/** A gateway of its own on a copy of the harness config (with `extra` merged in), with its ops log kept. */
async function ownGateway(
  t: Test,
  extra: Record<string, unknown> = {},
): Promise<{
  gw: Gateway;
  file: string;
  base: Record<string, unknown>;
  logs: LogLine[];
  audit: () => Record<string, unknown>[];
}> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-restart-bound-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'gateway.yaml');
  const auditFile = path.join(dir, 'audit.log');
  const base = deepMerge(YAML.parse(fs.readFileSync(h.configFile, 'utf8')), {
    audit: { file: auditFile },
    ...extra,
  }) as Record<string, unknown>;
  fs.writeFileSync(file, YAML.stringify(base));
  const logs: LogLine[] = [];
  const log: OpsLogger = {
    info: (obj, msg) => logs.push({ level: 'info', obj, msg }),
    warn: (obj, msg) => logs.push({ level: 'warn', obj, msg }),
    error: (obj, msg) => logs.push({ level: 'error', obj, msg }),
  };
  const gw = await Gateway.start({
    configFile: file,
    env: h.env,
    port: 0,
    adminPort: 0,
    watch: false,
    log,
    defaultMetrics: false,
  });
  t.teardown(() => gw.close());
  await attachObservability(gw);
  const audit = () =>
    fs
      .readFileSync(auditFile, 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { gw, file, base, logs, audit };
}

const RESTART_MSG = 'these settings apply only after a restart; the running values stay in force';

t.test(
  'a reload that changes restart-bound settings applies the rest and reports them as waiting for a restart',
  async (t) => {
    const { gw, file, base, logs, audit } = await ownGateway(t);
    const admin0 = gw.generation.config.admin;
    t.equal(admin0.host, '127.0.0.1');
    fs.writeFileSync(
      file,
      YAML.stringify(
        deepMerge(base, {
          listen: { port: 18081 },
          admin: { host: '0.0.0.0', port: 19901 },
          store: { url: 'redis://127.0.0.1:1/0', prefix: 'other-', timeout: '1s' },
          audit: { enabled: false },
          workers: 2,
          policies: { security_headers: { extra: { 'X-Gen': 'restart-bound' } } },
        }),
      ),
    );
    const res = await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST' });
    t.equal(res.status, 200, 'the reload is applied');
    const expected = [
      'listen.port',
      'admin.host',
      'admin.port',
      'store.url',
      'store.timeout',
      'store.prefix',
      'audit.enabled',
      'workers',
    ];
    const body = (await res.json()) as Record<string, unknown>;
    t.match(body, { result: 'success', trigger: 'admin', generation: gw.generation.id });
    t.same(body.restart_required, expected, 'the answer names what waits for a restart');
    const r = await fetch(`${gw.url}/api/health`);
    t.equal(r.headers.get('x-gen'), 'restart-bound', 'the rest of the file applies');
    await r.arrayBuffer();
    t.same(
      logs.filter((l) => l.msg === RESTART_MSG),
      [{ level: 'warn', obj: { settings: expected }, msg: RESTART_MSG }],
      'one ops-log warning lists them',
    );
    const reloadLines = () => audit().filter((l) => l.event === 'config_reload');
    await eventually('the config_reload audit line is written', () => reloadLines().length === 1);
    const lines = reloadLines();
    t.match(lines[0], {
      result: 'success',
      trigger: 'admin',
      generation: gw.generation.id,
      restart_required: expected,
    });
    // the dashboard and the score describe the admin listener and audit log that run
    const dash = (await (await fetch(`${gw.adminUrl}/api/dashboard`)).json()) as {
      config: Record<string, unknown>;
    };
    t.equal(dash.config.admin, `127.0.0.1:${admin0.port}`, 'the admin listener as it runs');
    t.match(dash.config.audit, /audit\.log \(api_access sampled at 1\)$/, 'the audit log as it runs');
    t.equal(dash.config.store, 'memory://');
    t.equal(dash.config.workers, 1);
    const score = (await (await fetch(`${gw.adminUrl}/api/health/security`)).json()) as {
      checks: { id: string; pass: boolean; detail?: string }[];
    };
    const check = (id: string) => score.checks.find((c) => c.id === id);
    t.match(check('admin_loopback'), { pass: true, detail: 'bound to 127.0.0.1' });
    t.match(check('audit_log'), { pass: true });
    // a reload while they still differ says so again; one that puts them back does not
    const again = await gw.reload('SIGHUP');
    t.same(again.restart_required, expected);
    fs.writeFileSync(file, YAML.stringify(base));
    const back = await gw.reload('SIGHUP');
    t.equal(back.result, 'success');
    t.equal(back.restart_required, undefined, 'nothing waits once the file matches the running values');
    t.equal(logs.filter((l) => l.msg === RESTART_MSG).length, 2);
    await eventually('three config_reload audit lines', () => reloadLines().length === 3);
    t.same(reloadLines()[1]!.restart_required, expected);
    t.match(reloadLines()[2], { result: 'success', trigger: 'SIGHUP', generation: back.generation });
    t.notOk('restart_required' in reloadLines()[2]!, 'nor in the audit line');
  },
);

t.test('TLS switched on by a reload is reported, not silently left off', async (t) => {
  const pki = new TestPki();
  t.teardown(() => fs.rmSync(pki.dir, { recursive: true, force: true }));
  const leaf = pki.leaf('gw');
  // on a public address, where the score judges plain HTTP
  const { gw, file, base, logs } = await ownGateway(t, { listen: { host: '0.0.0.0' } });
  const checks = async () =>
    (
      (await (await fetch(`${gw.adminUrl}/api/health/security`)).json()) as {
        checks: { id: string; pass: boolean; detail?: string }[];
      }
    ).checks;
  t.match(
    (await checks()).find((c) => c.id === 'tls'),
    { pass: false, detail: 'plain HTTP' },
  );
  fs.writeFileSync(
    file,
    YAML.stringify(
      deepMerge(base, { listen: { tls: { cert_file: leaf.certFile, key_file: leaf.keyFile } } }),
    ),
  );
  const rec = await gw.reload('SIGHUP');
  t.equal(rec.result, 'success');
  t.same(rec.restart_required, ['listen.tls']);
  t.same(logs.filter((l) => l.msg === RESTART_MSG).at(-1)?.obj, { settings: ['listen.tls'] });
  t.match(gw.url, /^http:/, 'the listener still speaks plain HTTP');
  const r = await fetch(`${gw.url}/api/health`);
  t.equal(r.status, 200);
  await r.arrayBuffer();
  const after = await checks();
  t.match(
    after.find((c) => c.id === 'tls'),
    { pass: false, detail: 'plain HTTP' },
    'the score describes the plain listener, not the TLS in the file',
  );
  t.equal(
    after.find((c) => c.id === 'tls_certificate_expiry'),
    undefined,
    'no certificate is served',
  );
});

t.test('the score follows the certificate served, and TLS as the listener started', async (t) => {
  const pki = new TestPki();
  t.teardown(() => pki.cleanup());
  const certDir = path.join(pki.dir, 'live');
  const files = pki.install(pki.leaf('short', { days: 10 }), certDir);
  const { gw, file, base } = await ownGateway(t, {
    listen: { host: '0.0.0.0', tls: { cert_file: files.certFile, key_file: files.keyFile } },
  });
  t.match(gw.url, /^https:/);
  const check = async (id: string) =>
    (
      (await (await fetch(`${gw.adminUrl}/api/health/security`)).json()) as {
        checks: { id: string; pass: boolean; detail?: string }[];
      }
    ).checks.find((c) => c.id === id);
  t.match(await check('tls_certificate_expiry'), { pass: false, detail: /^expires in (9|10) day\(s\)$/ });
  // a rotation tool replaces the files: no reload of the config, no restart
  pki.install(pki.leaf('long', { days: 40 }), certDir);
  await gw.tls!.reloadFromDisk('test');
  t.match(
    await check('tls_certificate_expiry'),
    { pass: true, detail: /^expires in (39|40) day\(s\)$/ },
    'the days left of the certificate now served',
  );
  // a file without TLS leaves the listener on TLS until a restart
  const plain = structuredClone(base) as { listen: Record<string, unknown> };
  delete plain.listen.tls;
  fs.writeFileSync(file, YAML.stringify(plain));
  const rec = await gw.reload('SIGHUP');
  t.same(rec.restart_required, ['listen.tls']);
  t.match(await check('tls'), { pass: true, detail: 'minimum TLSv1.2' }, 'TLS still runs');
  t.match(await check('tls_certificate_expiry'), { pass: true, detail: /^expires in (39|40) day\(s\)$/ });
});

t.test('a rejected reload does not repeat credentials written in a URL', async (t) => {
  const { gw, file, base, logs, audit } = await ownGateway(t);
  const secret = 'Sup3rS3cretPw';
  fs.writeFileSync(
    file,
    YAML.stringify(
      deepMerge(base, {
        upstream: { url: `http://svc:${secret}@127.0.0.1:9/` },
        store: { url: `redis:/:${secret}@cache:6379/0` },
      }),
    ),
  );
  const res = await fetch(`${gw.adminUrl}/api/reload`, { method: 'POST' });
  t.equal(res.status, 422);
  const text = await res.text();
  const body = JSON.parse(text) as { result: string; errors: string[] };
  t.equal(body.result, 'error');
  t.match(body.errors, [
    /: upstream\.url: invalid upstream URL "http:\/\/\*\*\*@127\.0\.0\.1:9\/": credentials in the URL are not supported \(use http:\/\/host:port\[\/base\]\)$/,
    /: store\.url: invalid store URL "redis:\/\*\*\*@cache:6379\/0" \(memory:\/\/ or redis:\/\/host:port\/db\)$/,
  ]);
  t.notMatch(text, secret, 'not in the admin answer');
  await eventually('the config_reload audit line is written', () =>
    audit().some((l) => l.event === 'config_reload' && l.result === 'error'),
  );
  t.notMatch(JSON.stringify(audit()), secret, 'not in the audit log');
  t.notMatch(JSON.stringify(logs), secret, 'not in the ops log');
  t.notMatch(JSON.stringify(gw.reloads), secret, 'not in the reload history');
  // a stray scalar in a broken file is not quoted back either
  try {
    parseConfig(`- ${secret}\nfoo: ${secret}\n`, 'broken.yaml', {});
    t.fail('a broken file must be refused');
  } catch (err) {
    t.ok(err instanceof ConfigLoadError);
    t.notMatch((err as Error).message, secret);
    t.same(
      (err as ConfigLoadError).problems.map((p) => p.message),
      [
        'Unexpected scalar at node end',
        'Unexpected map-value-ind token in YAML stream: ":"',
        'Unexpected scalar token in YAML stream',
      ],
    );
  }
});
