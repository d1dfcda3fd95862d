/**
 * The shared Redis store as an attacker and an operator see it: a Redis that refuses writes
 * (maxmemory) while reads pass, malformed REDIS_URLs, a wrong password. One redis-server
 * for the whole file.
 */
import { execFileSync } from 'node:child_process';
import t, { type Test } from 'tap';
import path from 'node:path';
import {
  startHarness,
  metricsText,
  metricValue,
  REPO,
  TEST_SECRET,
  type Harness,
} from '../../helpers/harness.js';
import { loadConfigFile } from '../../../gateway/config/load.js';
import { freePort, startRedis, type TestRedis } from '../../helpers/redis.js';
import { eventually } from '../../helpers/wait.js';
import { Metrics } from '../../../gateway/observability/metrics.js';
import type { AuditLog } from '../../../gateway/observability/audit.js';
import { createStore } from '../../../gateway/store/index.js';

let redis: TestRedis;
t.before(async () => {
  redis = await startRedis();
});
t.teardown(() => redis.stop());
const cli = (...args: string[]) =>
  execFileSync('redis-cli', ['-p', String(redis.port), ...args], { encoding: 'utf8' }).trim();

let seq = 0;
const config = (fail: 'open' | 'closed') => `
store:
  prefix: "sa${++seq}:"
  timeout: 200ms
policies:
  rate_limit:
    enabled: true
    default: "100/minute"
    default_fail: ${fail}
  ip_ban:
    enabled: true
routes:
  - name: health
    methods: [GET]
    path: /api/health
    policies:
      auth: { require: [none] }
`;

async function gateway(t: Test, fail: 'open' | 'closed', url = redis.url): Promise<Harness> {
  const h = await startHarness({ config: config(fail), abuseControls: true, env: { REDIS_URL: url } });
  t.teardown(() => h.close());
  // a live Redis connected before the first request (which would otherwise wait at most
  // store.timeout for the connection, too little on a loaded CI machine)
  if (url.startsWith(redis.url.replace(/\/\d+$/, '')))
    await eventually('Redis connected', async () => {
      const r = await fetch(`${h.adminUrl}/readyz`);
      await r.arrayBuffer();
      return r.status === 200;
    });
  return h;
}

t.test(
  'redis refusing writes (maxmemory) while reads pass: fail mode applies, one store_unavailable per interval, not per request',
  async (t) => {
    // (fail closed refuses with 503 instead; the reporting is the same)
    for (const fail of ['open'] as const) {
      const h = await gateway(t, fail);
      t.equal((await fetch(`${h.url}/api/health`)).status, 200, `${fail}: healthy before`);
      cli('CONFIG', 'SET', 'maxmemory', '1');
      const statuses: string[] = [];
      try {
        for (let i = 0; i < 6; i++) {
          const r = await fetch(`${h.url}/api/health`);
          statuses.push(
            `${r.status} ${r.status === 200 ? '' : ((await r.json()) as { error: string }).error}`,
          );
        }
      } finally {
        cli('CONFIG', 'SET', 'maxmemory', '0');
      }
      t.same(
        statuses,
        Array(6).fill(fail === 'open' ? '200 ' : '503 service_unavailable'),
        `${fail}: every request gets the rule's failure mode`,
      );
      t.equal((await h.mockRequests()).length, fail === 'open' ? 7 : 1, `${fail}: forwarded requests`);
      // each request: the ban check (a read) passes, the rate limit (a write) fails
      t.equal(
        metricValue(await metricsText(h), 'gateway_store_errors_total', { store: 'redis' }),
        6,
        `${fail}: every failed operation counted`,
      );
      const events = (await h.audit()).filter((l) => l.event === 'store_unavailable');
      t.equal(events.length, 1, `${fail}: one store_unavailable audit event for the interval`);
      t.match(events[0], { store: 'redis', suppressed: 0, error: /^OOM command not allowed/ });
      t.equal((await fetch(`${h.url}/api/health`)).status, 200, `${fail}: writes accepted again`);
    }
  },
);

t.test('store level: failures alternating with successes are logged once per interval', async (t) => {
  const warns: Record<string, unknown>[] = [];
  const infos: Record<string, unknown>[] = [];
  const audits: string[] = [];
  const store = createStore({
    url: redis.url,
    prefix: `sa${++seq}:`,
    timeoutMs: 200,
    metrics: new Metrics({ defaultMetrics: false }),
    errorLogIntervalMs: 60_000,
    audit: { system: (event: string) => void audits.push(event) } as unknown as AuditLog,
    log: {
      info: (o) => void infos.push(o as Record<string, unknown>),
      warn: (o) => void warns.push(o as Record<string, unknown>),
      error: (o) => void warns.push(o as Record<string, unknown>),
    },
  });
  t.teardown(() => store.close());
  await store.ping();
  const spec = [{ key: 'ip:192.0.2.1', capacity: 10, windowMs: 60_000 }];
  cli('CONFIG', 'SET', 'maxmemory', '1');
  try {
    for (let i = 0; i < 5; i++) {
      await t.rejects(store.consume(spec), /OOM/);
      t.equal(await store.blockedFor('ban:192.0.2.1'), 0);
    }
  } finally {
    cli('CONFIG', 'SET', 'maxmemory', '0');
  }
  t.same(audits, ['store_unavailable'], 'one audit event');
  t.equal(warns.length, 1, 'one warning');
  t.same(infos, [{ store: 'redis', suppressed: 0 }], 'one recovery line, after the reported failure');
});

t.test('a malformed REDIS_URL is a configuration error naming store.url, the password hidden', async (t) => {
  const cases: [string, RegExp][] = [
    [
      'redis://:s3cret-pw@127.0.0.1:99999/0',
      /store\.url: invalid store URL "redis:\/\/\*\*\*@127\.0\.0\.1:99999\/0": not a valid URL/,
    ],
    [
      'redis://:s3cret-pw@[::1/0',
      /store\.url: invalid store URL "redis:\/\/\*\*\*@\[::1\/0": not a valid URL/,
    ],
    ['redis://:s3cret%zz@127.0.0.1:6379/0', /store\.url: invalid store URL ".*": bad %-encoding/],
    [
      'redis://:s3cret-pw@127.0.0.1:6379/abc',
      /store\.url: invalid store URL ".*": the path must be a database/,
    ],
    [
      'rediss://:s3cret-pw@127.0.0.1:6379/0/x',
      /store\.url: invalid store URL ".*": the path must be a database/,
    ],
    ['redis:///0', /store\.url: invalid store URL "redis:\/\/\/0": no host/],
  ];
  for (const [url, message] of cases) {
    // what `validate` and `start` load: the shipped gateway.yaml, REDIS_URL from the environment
    const err = await loadConfigFile(path.join(REPO, 'gateway.yaml'), {
      JWT_SECRET_KEY: TEST_SECRET,
      REDIS_URL: url,
    }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    t.ok(err, `${url}: refused`);
    t.match(err?.message, message, url);
    t.notMatch(err?.message, /s3cret/, `${url}: the password is not repeated`);
  }
  const started = await startHarness({
    config: config('open'),
    abuseControls: true,
    env: { REDIS_URL: cases[0]![0] },
  }).then(
    async (h) => {
      await h.close();
      return undefined;
    },
    (e: unknown) => e as Error,
  );
  t.match(started?.message, cases[0]![1], 'start refuses it too');
  const h = await gateway(t, 'open', redis.url.replace(/\/0$/, '/3'));
  t.equal((await fetch(`${h.url}/api/health`)).status, 200, 'a database index is accepted');
  t.ok(cli('-n', '3', '--scan').includes(':b:rl:'), 'and used');
});

t.test(
  'a wrong Redis password: the fail mode applies, /readyz says why, the password is never written',
  async (t) => {
    cli('CONFIG', 'SET', 'requirepass', 'the-right-pw');
    t.teardown(() =>
      execFileSync('redis-cli', [
        '-p',
        String(redis.port),
        '--no-auth-warning',
        '-a',
        'the-right-pw',
        'CONFIG',
        'SET',
        'requirepass',
        '',
      ]),
    );
    const url = redis.url.replace('://', '://:Wr0ng-s3cret@');
    const h = await gateway(t, 'closed', url);
    const statuses: number[] = [];
    const retryAfter: (string | null)[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${h.url}/api/health`);
      statuses.push(r.status);
      retryAfter.push(r.headers.get('retry-after'));
    }
    t.same(statuses, [503, 503, 503], 'fail closed');
    t.same(retryAfter, ['5', '5', '5'], 'each 503 says when to come back');
    t.equal((await h.mockRequests()).length, 0, 'nothing reached the upstream');
    const ready = await fetch(`${h.adminUrl}/readyz`);
    t.equal(ready.status, 503);
    const body = (await ready.json()) as { reasons: string[] };
    t.match(
      body.reasons,
      [/^store unavailable \(redis not connected.*WRONGPASS/],
      'the reason names the refusal',
    );
    const events = (await h.audit()).filter((l) => l.event === 'store_unavailable');
    t.equal(events.length, 1);
    t.match(events[0], { error: /WRONGPASS/ });
    const everything = `${JSON.stringify(body)}\n${JSON.stringify(await h.audit())}\n${await metricsText(h)}\n${await (await fetch(`${h.adminUrl}/api/dashboard`)).text()}`;
    t.notMatch(everything, /Wr0ng-s3cret/, 'the password appears nowhere');
  },
);

t.test(
  'a login lease taken while Redis was paused does not lock the account once Redis answers',
  async (t) => {
    const h = await startHarness({
      config: `
store: { prefix: "sa${++seq}:", timeout: 200ms }
routes:
  - name: login
    methods: [POST]
    path: /api/auth/login
    policies:
      auth: { require: [none] }
      login_lockout: { enabled: true, max_attempts: 2, ip_max_attempts: 0, fail: open }
`,
      env: { REDIS_URL: redis.url },
    });
    t.teardown(() => h.close());
    const login = async () => {
      const r = await fetch(`${h.url}/api/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'alice', password: 'alice-secret-pw' }),
      });
      return `${r.status} ${r.status === 200 ? '' : ((await r.json()) as { error: string }).error}`;
    };
    t.equal(await login(), '200 ', 'before');
    const pid = Number(/process_id:(\d+)/.exec(cli('INFO', 'server'))![1]);
    process.kill(pid, 'SIGSTOP');
    let paused: string;
    try {
      paused = await login();
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    t.equal(paused, '200 ', 'paused: the lease times out and the check fails open');
    t.same([await login(), await login()], ['200 ', '200 '], 'the lease Redis set late was given back');
    t.equal((await h.mockRequests()).length, 4, 'every login reached the upstream');
  },
);

t.test(
  'a burst before the first connection to an unreachable Redis: no listener-leak warning, the cause told',
  async (t) => {
    const port = await freePort();
    const warnings: string[] = [];
    const onWarning = (w: Error) => void warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    t.teardown(() => void process.off('warning', onWarning));
    const store = createStore({
      url: `redis://127.0.0.1:${port}/0`,
      timeoutMs: 200,
      metrics: new Metrics({ defaultMetrics: false }),
      log: { info() {}, warn() {}, error() {} },
    });
    t.teardown(() => store.close());
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, () => store.consume([{ key: 'k', capacity: 1, windowMs: 1000 }])),
    );
    t.same(
      results.map((r) => r.status),
      Array(20).fill('rejected'),
    );
    t.match((results[0] as PromiseRejectedResult).reason, { message: /^redis not connected.*ECONNREFUSED/ });
    await new Promise((r) => setImmediate(r));
    t.same(warnings, [], 'no MaxListenersExceededWarning');
  },
);
