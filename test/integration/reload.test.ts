import t, { type Test } from 'tap';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { AsyncLocalStorage } from 'node:async_hooks';
import os from 'node:os';
import path from 'node:path';
import { startHarness, metricValue, type Harness } from '../helpers/harness.js';
import { Gateway } from '../../gateway/server.js';
import { silentLogger } from '../../gateway/observability/ops-log.js';
import { eventually } from '../helpers/wait.js';
import { ConfigLoadError, parseConfig } from '../../gateway/config/load.js';

/**
 * Hot reload: by signal (Gateway.reload, what SIGHUP calls) and by file watch; an invalid
 * file leaves the old config serving; requests in flight finish on their generation;
 * counter state survives.
 */

async function reloads(h: { adminUrl: string }, result: string): Promise<number> {
  return metricValue(await (await fetch(`${h.adminUrl}/metrics`)).text(), 'gateway_config_reloads_total', {
    result,
  });
}

async function readyGeneration(adminUrl: string): Promise<number> {
  const body = (await (await fetch(`${adminUrl}/readyz`)).json()) as { generation: number };
  return body.generation;
}

const GEN = (n: number) => `policies:\n  security_headers:\n    extra: { X-Gen: "${n}" }\n`;

let h: Harness;
t.before(async () => {
  h = await startHarness({ config: GEN(1) });
});
t.teardown(() => h.close());

t.test('reload by signal: the new config serves, generation, metric and audit event', async (t) => {
  const before = h.gateway.generation.id;
  const ok0 = await reloads(h, 'success');
  t.equal((await fetch(`${h.url}/api/health`)).headers.get('x-gen'), '1');
  await h.reload(GEN(2));
  t.equal(h.gateway.generation.id, before + 1, 'a new generation');
  t.equal(await readyGeneration(h.adminUrl), before + 1, '/readyz shows it');
  t.equal((await fetch(`${h.url}/api/health`)).headers.get('x-gen'), '2', 'new requests use the new config');
  t.equal(await reloads(h, 'success'), ok0 + 1, 'gateway_config_reloads_total{result="success"}');
  const rec = await h.gateway.reload('SIGHUP');
  t.equal(rec.result, 'success');
  t.equal(rec.trigger, 'SIGHUP');
  const audit = (await h.audit()).filter((l) => l.event === 'config_reload');
  t.ok(
    audit.some((l) => l.result === 'success' && l.trigger === 'SIGHUP' && l.generation === rec.generation),
    'config_reload audit event',
  );
});

t.test('an invalid file is rejected: the old config keeps serving', async (t) => {
  const gen = h.gateway.generation.id;
  const err0 = await reloads(h, 'error');
  const good = fs.readFileSync(h.configFile, 'utf8');
  t.teardown(() => fs.writeFileSync(h.configFile, good));
  for (const bad of [
    'listen: [unclosed\n',
    `${good}\nbogus_key: 1\n`,
    good.replace(/url: http:\/\/127\.0\.0\.1:\d+/, 'url: ftp://nowhere'),
  ]) {
    fs.writeFileSync(h.configFile, bad);
    const rec = await h.gateway.reload('SIGHUP');
    t.equal(rec.result, 'error');
    t.ok((rec.errors ?? []).length > 0, 'the errors are kept');
    t.match(rec.errors?.[0], /^.+:\d+:\d+: /, 'with file:line:column');
    t.equal(h.gateway.generation.id, gen, 'the generation did not change');
    const r = await fetch(`${h.url}/api/health`);
    t.equal(r.status, 200, 'still serving');
    t.equal(r.headers.get('x-gen'), '2', 'with the old config');
  }
  t.equal(await reloads(h, 'error'), err0 + 3, 'gateway_config_reloads_total{result="error"}');
  const lines = (await h.audit()).filter((l) => l.event === 'config_reload' && l.result === 'error');
  t.equal(lines.length, 3, 'a config_reload audit event with result error for each');
  t.ok(
    lines.every((l) => Array.isArray(l.errors) && (l.errors as string[]).length > 0),
    'the audit event lists the errors',
  );
  const admin = await fetch(`${h.adminUrl}/api/reload`, { method: 'POST' });
  t.equal(admin.status, 422, 'the admin reload endpoint reports the failure');
  t.equal(((await admin.json()) as { result: string }).result, 'error');
});

t.test(
  'a file caught empty (truncated, not yet rewritten) is refused, not loaded as a config of defaults',
  async (t) => {
    const gen = h.gateway.generation.id;
    const routes = h.gateway.generation.routes.length;
    const err0 = await reloads(h, 'error');
    const good = fs.readFileSync(h.configFile, 'utf8');
    t.teardown(() => fs.writeFileSync(h.configFile, good));
    const bad = ['', '\n  \n', '# receipt-gateway configuration.\n# (the rest not written yet)\n'];
    for (const text of bad) {
      fs.writeFileSync(h.configFile, text);
      const rec = await h.gateway.reload('SIGHUP');
      t.equal(rec.result, 'error', JSON.stringify(text));
      t.same(rec.errors, [
        `${h.configFile}:1:1: the configuration file is empty (write \`{}\` for a configuration of defaults)`,
      ]);
      t.equal(h.gateway.generation.id, gen, 'the generation did not change');
      t.equal(h.gateway.generation.routes.length, routes, 'the routes are still there');
      const r = await fetch(`${h.url}/api/health`);
      t.equal(r.status, 200, 'the health route still answers');
      t.equal(r.headers.get('x-gen'), '2', 'from the old config');
      await r.arrayBuffer();
    }
    t.equal(await reloads(h, 'error'), err0 + bad.length, 'gateway_config_reloads_total{result="error"}');
    const lines = (await h.audit()).filter((l) => l.event === 'config_reload' && l.result === 'error');
    t.ok(lines.length >= bad.length);
    t.match(lines.at(-1), { trigger: 'SIGHUP', errors: [/the configuration file is empty/] });
    t.doesNotThrow(
      () => parseConfig('{}\n', 'defaults.yaml', {}),
      'an explicit {} is a configuration of defaults',
    );
    t.throws(() => parseConfig('# nothing\n', 'empty.yaml', {}), ConfigLoadError);
  },
);

t.test(
  'reloads take turns: the last one asked for stays, even when an earlier one reads slowly',
  async (t) => {
    const good = fs.readFileSync(h.configFile, 'utf8');
    const v1 = good.replace(/X-Gen: "?\d+"?/, 'X-Gen: "11"');
    const v2 = good.replace(/X-Gen: "?\d+"?/, 'X-Gen: "12"');
    t.not(v1, v2);
    // The first reload's reads of the file are slow (a loaded disk, a network file system)
    // and return the file as it was when it was asked for.
    const readFile = fsp.readFile;
    const who = new AsyncLocalStorage<string>();
    const patched = async (...args: Parameters<typeof readFile>) => {
      if (who.getStore() === 'first' && path.resolve(String(args[0])) === path.resolve(h.configFile)) {
        await new Promise((r) => setTimeout(r, 300));
        // (text when an encoding is asked for, bytes otherwise, as readFile does)
        return args[1] === undefined ? Buffer.from(v1) : v1;
      }
      return readFile(...args);
    };
    (fsp as { readFile: unknown }).readFile = patched;
    t.teardown(() => {
      (fsp as { readFile: unknown }).readFile = readFile;
      fs.writeFileSync(h.configFile, good);
    });
    fs.writeFileSync(h.configFile, v1);
    const first = who.run('first', () => h.gateway.reload('SIGHUP'));
    // the file changes again, and a second reload is asked for while the first one runs
    fs.writeFileSync(h.configFile, v2);
    const second = who.run('second', () => h.gateway.reload('watch'));
    const [a, b] = await Promise.all([first, second]);
    t.equal(a.result, 'success');
    t.equal(b.result, 'success');
    t.ok(b.generation! > a.generation!, 'the second reload swapped after the first');
    t.equal(h.gateway.generation.id, b.generation, 'the generation of the last reload serves');
    const r = await fetch(`${h.url}/api/health`);
    t.equal(r.headers.get('x-gen'), '12', 'the file as it is now, not as the slow reload read it');
    await r.arrayBuffer();
    (fsp as { readFile: unknown }).readFile = readFile;
    await h.reload(GEN(2));
  },
);

t.test('requests in flight finish on the generation they started with', async (t) => {
  await h.reload(GEN(3));
  await h.clearMock();
  const token = await h.login();
  const slow = fetch(`${h.url}/api/slow?ms=3000`, { headers: { authorization: `Bearer ${token}` } });
  await eventually('the slow request reached the mock', async () =>
    (await h.mockRequests()).some((r) => r.path.startsWith('/api/slow')),
  );
  await h.reload(GEN(4));
  const fresh = await fetch(`${h.url}/api/health`);
  t.equal(fresh.headers.get('x-gen'), '4', 'a new request runs on the new generation');
  const r = await slow;
  t.equal(r.status, 200, 'the in-flight request completed');
  t.same(await r.json(), { slept_ms: 3000 });
  t.equal(r.headers.get('x-gen'), '3', 'its response phase ran on its own generation');
});

t.test('rate-limit counters survive a reload that keeps the rule', async (t) => {
  const hh = await startHarness({
    config: `policies:\n  rate_limit:\n    enabled: true\n    default: 3/minute\n${GEN(1).replace('policies:\n', '')}`,
  });
  t.teardown(() => hh.close());
  for (let i = 0; i < 3; i++) t.equal((await fetch(`${hh.url}/api/health`)).status, 200, `request ${i + 1}`);
  await hh.reload(
    `policies:\n  rate_limit:\n    enabled: true\n    default: 3/minute\n${GEN(2).replace('policies:\n', '')}`,
  );
  const r = await fetch(`${hh.url}/api/health`);
  t.equal(r.headers.get('x-gen'), '2', 'answered by the new generation');
  t.equal(r.status, 429, 'the fourth request in the minute is refused: the bucket survived the reload');
  t.equal(((await r.json()) as { error: string }).error, 'rate_limited');
  t.ok(Number(r.headers.get('retry-after')) >= 1);
});

t.test('listener limits follow a reload (max_headers)', async (t) => {
  const hh = await startHarness();
  t.teardown(() => hh.close());
  const token = await hh.login();
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  for (let i = 0; i < 150; i++) headers[`x-many-${i}`] = String(i);
  const before = await fetch(`${hh.url}/api/echo-headers`, { headers });
  t.equal(before.status, 431, 'over the default 100 header lines');
  await before.arrayBuffer();
  await hh.reload('listen:\n  max_headers: 200\npolicies:\n  pattern_block:\n    max_headers: 200\n');
  const after = await fetch(`${hh.url}/api/echo-headers`, { headers });
  t.equal(after.status, 200, 'accepted under the new limit');
  const seen = (await after.json()) as Record<string, string>;
  t.equal(
    Object.keys(seen).filter((k) => k.startsWith('x-many-')).length,
    150,
    'every header reached the upstream, none truncated',
  );
});

/** The harness's config with its audit log moved into `dir`. */
function configIn(dir: string): string {
  return fs
    .readFileSync(h.configFile, 'utf8')
    .replace(/file: .*audit\.log/, `file: ${path.join(dir, 'audit.log')}`);
}

/** A gateway of its own on `file`, watching it (closed when the test ends). */
async function watchingGateway(t: Test, file: string): Promise<Gateway> {
  const gw = await Gateway.start({
    configFile: file,
    env: h.env,
    port: 0,
    adminPort: 0,
    watch: true,
    log: silentLogger,
    defaultMetrics: false,
  });
  t.teardown(() => gw.close());
  return gw;
}

t.test('reload by file watch: rewriting the file swaps the config', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-watch-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'gateway.yaml');
  const base = configIn(dir);
  fs.writeFileSync(file, base);
  const gw = await watchingGateway(t, file);
  const first = await readyGeneration(gw.adminUrl!);
  fs.writeFileSync(file, base.replace(/X-Gen: "?\d+"?/, 'X-Gen: "99"'));
  await eventually(
    'the watcher swapped the config',
    async () => (await readyGeneration(gw.adminUrl!)) !== first,
  );
  const r = await fetch(`${gw.url}/api/health`);
  t.equal(r.headers.get('x-gen'), '99', 'the rewritten file serves');
  t.equal(gw.reloads.at(-1)?.trigger, 'watch');
  // an invalid rewrite is noticed, rejected, and changes nothing
  const gen = gw.generation.id;
  const n = gw.reloads.length;
  fs.writeFileSync(file, `${base}\nnot_a_key: true\n`);
  await eventually(
    'the watcher tried the invalid file',
    () => gw.reloads.length > n && gw.reloads.at(-1)?.result === 'error',
  );
  t.equal(gw.generation.id, gen, 'still the same generation');
  t.equal((await fetch(`${gw.url}/api/health`)).headers.get('x-gen'), '99');
  // an editor's atomic replace (write elsewhere, rename over) is seen too
  const tmp = path.join(dir, '.gateway.yaml.swp');
  fs.writeFileSync(tmp, base.replace(/X-Gen: "?\d+"?/, 'X-Gen: "100"'));
  fs.renameSync(tmp, file);
  await eventually(
    'the renamed file was loaded',
    async () => (await fetch(`${gw.url}/api/health`)).headers.get('x-gen') === '100',
  );
  t.pass('rename-over is picked up');
  // other files changing in the directory do not reload an unchanged config
  const before = gw.reloads.length;
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'unrelated');
  await new Promise((r) => setTimeout(r, 600));
  t.equal(gw.reloads.length, before, 'an unrelated file: no reload');
});

t.test(
  'reload by file watch: a file truncated, then written slowly, is loaded only once complete',
  async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-trunc-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'gateway.yaml');
    const base = configIn(dir);
    fs.writeFileSync(file, base.replace(/X-Gen: "?\d+"?/, 'X-Gen: "401"'));
    const gw = await watchingGateway(t, file);
    const gen = gw.generation.id;
    // the writer truncates the file and writes its header comment; the rest comes later than
    // the watch's settling time
    fs.writeFileSync(file, '# receipt-gateway configuration\n');
    await eventually('the watcher tried the truncated file', () =>
      gw.reloads.some((r) => r.trigger === 'watch'),
    );
    t.match(gw.reloads.at(-1), {
      trigger: 'watch',
      result: 'error',
      errors: [/the configuration file is empty/],
    });
    t.equal(gw.generation.id, gen, 'still the same generation');
    const r = await fetch(`${gw.url}/api/health`);
    t.equal(r.status, 200, 'the routes still answer');
    t.equal(r.headers.get('x-gen'), '401');
    fs.writeFileSync(file, base.replace(/X-Gen: "?\d+"?/, 'X-Gen: "402"'));
    await eventually(
      'the completed file was loaded',
      async () => (await fetch(`${gw.url}/api/health`)).headers.get('x-gen') === '402',
    );
    t.equal(gw.reloads.at(-1)?.result, 'success');
  },
);

t.test('reload by file watch: a Kubernetes ConfigMap update (..data symlink swap)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-configmap-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const base = configIn(dir);
  // the layout kubelet writes: gateway.yaml -> ..data/gateway.yaml, ..data -> ..<timestamp>
  const version = (name: string, gen: string) => {
    fs.mkdirSync(path.join(dir, name));
    fs.writeFileSync(path.join(dir, name, 'gateway.yaml'), base.replace(/X-Gen: "?\d+"?/, `X-Gen: "${gen}"`));
  };
  version('..2026_11_28_01', '201');
  fs.symlinkSync('..2026_11_28_01', path.join(dir, '..data'));
  fs.symlinkSync('..data/gateway.yaml', path.join(dir, 'gateway.yaml'));
  const gw = await watchingGateway(t, path.join(dir, 'gateway.yaml'));
  t.equal((await fetch(`${gw.url}/api/health`)).headers.get('x-gen'), '201');
  // the update: a new directory, a new symlink renamed over ..data; gateway.yaml itself is untouched
  version('..2026_11_28_02', '202');
  fs.symlinkSync('..2026_11_28_02', path.join(dir, '..data_tmp'));
  fs.renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  await eventually(
    'the ConfigMap update was loaded',
    async () => (await fetch(`${gw.url}/api/health`)).headers.get('x-gen') === '202',
  );
  t.equal(gw.reloads.at(-1)?.trigger, 'watch');
  t.equal(gw.reloads.at(-1)?.result, 'success');
});

t.test('reload by file watch: a config symlinked to a file in another directory', async (t) => {
  const target = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-target-'));
  const link = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-link-'));
  t.teardown(() => {
    fs.rmSync(target, { recursive: true, force: true });
    fs.rmSync(link, { recursive: true, force: true });
  });
  // (the audit log elsewhere: its writes would be events next to the link)
  const logs = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-logs-'));
  t.teardown(() => fs.rmSync(logs, { recursive: true, force: true }));
  const base = configIn(logs);
  const real = path.join(target, 'receipt-gateway.yaml');
  fs.writeFileSync(real, base.replace(/X-Gen: "?\d+"?/, 'X-Gen: "301"'));
  fs.symlinkSync(real, path.join(link, 'gateway.yaml'));
  const gw = await watchingGateway(t, path.join(link, 'gateway.yaml'));
  t.equal((await fetch(`${gw.url}/api/health`)).headers.get('x-gen'), '301');
  // an edit of the target: no event next to the link
  fs.writeFileSync(real, base.replace(/X-Gen: "?\d+"?/, 'X-Gen: "302"'));
  await eventually(
    'the edited target was loaded',
    async () => (await fetch(`${gw.url}/api/health`)).headers.get('x-gen') === '302',
    5000,
  );
  t.equal(gw.reloads.at(-1)?.trigger, 'watch');
  // the link pointed at a file in a third directory: followed, and edits there are seen
  const moved = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-moved-'));
  t.teardown(() => fs.rmSync(moved, { recursive: true, force: true }));
  const next = path.join(moved, 'gw.yaml');
  fs.writeFileSync(next, base.replace(/X-Gen: "?\d+"?/, 'X-Gen: "303"'));
  fs.symlinkSync(next, path.join(link, 'gateway.yaml.tmp'));
  fs.renameSync(path.join(link, 'gateway.yaml.tmp'), path.join(link, 'gateway.yaml'));
  await eventually(
    'the repointed link was loaded',
    async () => (await fetch(`${gw.url}/api/health`)).headers.get('x-gen') === '303',
    5000,
  );
  fs.writeFileSync(next, base.replace(/X-Gen: "?\d+"?/, 'X-Gen: "304"'));
  await eventually(
    'an edit in the new target directory was loaded',
    async () => (await fetch(`${gw.url}/api/health`)).headers.get('x-gen') === '304',
    5000,
  );
  t.pass('the watch follows the link');
});

t.test(
  'a reload asking for another store: the running one is what the score and dashboard describe',
  async (t) => {
    const before = (await (await fetch(`${h.adminUrl}/api/dashboard`)).json()) as {
      config: { store: string };
    };
    t.equal(before.config.store, 'memory://');
    await h.reload(`${GEN(7)}store:\n  url: redis://127.0.0.1:1/0\n`);
    t.equal((await fetch(`${h.url}/api/health`)).headers.get('x-gen'), '7', 'the rest of the file applies');
    const after = (await (await fetch(`${h.adminUrl}/api/dashboard`)).json()) as {
      config: { store: string };
    };
    t.equal(after.config.store, 'memory://', 'the store this process runs, not the file’s');
    const score = (await (await fetch(`${h.adminUrl}/api/health/security`)).json()) as {
      checks: { id: string; detail?: string }[];
    };
    t.match(score.checks.find((c) => c.id === 'shared_store')?.detail, /^memory store/);
    t.equal(h.gateway.running.storeUrl, 'memory://');
    await h.reload(GEN(1));
  },
);

t.test(
  'reload by file watch: a file written next to the config all the time does not hold it off',
  async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-busy-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'gateway.yaml');
    const base = configIn(dir);
    fs.writeFileSync(file, base.replace(/X-Gen: "?\d+"?/, 'X-Gen: "301"'));
    const gw = await watchingGateway(t, file);
    // a neighbour written every 40 ms, far more often than the 150 ms settling time
    const busy = setInterval(() => fs.appendFileSync(path.join(dir, 'busy.log'), 'x\n'), 40);
    t.teardown(() => clearInterval(busy));
    await new Promise((r) => setTimeout(r, 300));
    fs.writeFileSync(file, base.replace(/X-Gen: "?\d+"?/, 'X-Gen: "302"'));
    await eventually(
      'the rewritten file was loaded while the neighbour kept changing',
      async () => (await fetch(`${gw.url}/api/health`)).headers.get('x-gen') === '302',
      10_000,
    );
    clearInterval(busy);
    t.equal(
      gw.reloads.filter((r) => r.trigger === 'watch').length,
      1,
      'one reload: the neighbour alone causes none',
    );
  },
);
