import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { Gateway } from '../../gateway/server.js';
import type { OpsLogger } from '../../gateway/policy.js';
import { REPO, TEST_SECRET } from '../helpers/harness.js';
import { startRedis } from '../helpers/redis.js';

/**
 * A start that fails because its port is taken closes the Redis store it opened a moment
 * before, while the store's first connection is still being set up. ioredis then gives up
 * its ready check on that connection ("Stream isn't writeable …"): no outage, and nothing
 * to warn about (it was logged as `state store unavailable` on almost every such start).
 */
t.test('a start whose port is taken logs no store warning (real Redis)', async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => taken.close(() => resolve())));
  const port = (taken.address() as net.AddressInfo).port;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-lifeaudit-taken-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const lines: string[] = [];
  const log: OpsLogger = {
    info: (o, m) => lines.push(`info ${m} ${JSON.stringify(o)}`),
    warn: (o, m) => lines.push(`warn ${m} ${JSON.stringify(o)}`),
    error: (o, m) => lines.push(`error ${m} ${JSON.stringify(o)}`),
  };
  // (the warning came on about nine starts in ten: five make a miss unlikely)
  for (let i = 0; i < 5; i++) {
    await t.rejects(
      Gateway.start({
        configFile: path.join(REPO, 'gateway.yaml'),
        env: {
          JWT_SECRET_KEY: TEST_SECRET,
          REDIS_URL: redis.url,
          AUDIT_LOG_FILE: path.join(dir, `audit-${i}.log`),
        },
        host: '127.0.0.1',
        port,
        adminPort: 0,
        watch: false,
        log,
        defaultMetrics: false,
      }),
      /EADDRINUSE/,
    );
  }
  // what a late connection error would have logged, had one come
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.same(lines, [], 'nothing on the ops log: the start failed for its port, not for the store');
  for (let i = 0; i < 5; i++) {
    const file = path.join(dir, `audit-${i}.log`);
    const audit = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    t.notMatch(audit, /store_unavailable/, `no store_unavailable audit line (start ${i + 1})`);
  }
});
