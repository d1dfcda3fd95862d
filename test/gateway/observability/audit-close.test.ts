import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { REPO } from '../../helpers/harness.js';

/**
 * A process that closes its audit log right after opening it (a gateway whose port is taken
 * fails within milliseconds of start) must still be able to exit: the file was not open yet,
 * and pino's exit hook, which flushes it synchronously, threw out of process.exit ("sonic
 * boom is not ready yet"); a cluster worker then stayed alive, serving nothing.
 */
t.test('audit.close() right after createAuditLog: process.exit(code) still exits with code', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-audit-close-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = path.join(dir, 'close-then-exit.mts');
  const mod = (p: string) => JSON.stringify(path.join(REPO, p));
  fs.writeFileSync(
    script,
    `import { createAuditLog } from ${mod('gateway/observability/audit.js')};
import { Metrics } from ${mod('gateway/observability/metrics.js')};
const audit = createAuditLog({
  enabled: true,
  file: ${JSON.stringify(path.join(dir, 'audit.log'))},
  accessSampleRate: 1,
  metrics: new Metrics({ defaultMetrics: false }),
});
audit.system('config_reload', { result: 'error', errors: ['x'], trigger: 'test' });
await audit.close();
process.exit(3);
`,
  );
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  t.equal(code, 3, 'the exit code asked for');
  t.equal(stderr, '', 'nothing on stderr (no "sonic boom is not ready yet")');
  // the line written before close() is in the file
  const lines = fs.readFileSync(path.join(dir, 'audit.log'), 'utf8').trim().split('\n');
  t.equal(lines.length, 1);
  t.match(JSON.parse(lines[0]!), { event: 'config_reload', result: 'error', trigger: 'test' });
});
