/**
 * Micro-benchmark: the per-request cost of the auth policy's JWT check (header parsing,
 * verification, identity and X-Auth-* headers), with and without the verified-token
 * cache, for HS256, RS256 and ES256. Prints µs/op. Run: `node dist/bench/jwt.js`
 * (part of `npm run bench`); BENCH_JWT_MS sets the time per scenario (default 700).
 */
import { Readable } from 'node:stream';
import { SignJWT, generateKeyPair, exportSPKI } from 'jose';
import { Value } from '@sinclair/typebox/value';
import type { RequestContext } from '../gateway/context.js';
import type { Policy, Services } from '../gateway/policy.js';
import { Metrics } from '../gateway/observability/metrics.js';
import { auth } from '../policies/auth/index.js';
import { createContext } from '../gateway/context-factory.js';

const MS = Number(process.env.BENCH_JWT_MS ?? 700);
const SECRET = 'bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz';

function services(): Services {
  const no = () => Promise.reject(new Error('no store'));
  return {
    store: {
      kind: 'memory',
      consume: no,
      increment: no,
      count: no,
      block: no,
      acquire: no,
      release: no,
      blockedFor: no,
      reset: no,
      listBlocks: no,
      ping: no,
      healthy: () => true,
      close: () => Promise.resolve(),
    },
    metrics: new Metrics({ defaultMetrics: false }),
    audit: {
      enabled: false,
      request() {},
      system() {},
      reopen() {},
      flush: async () => {},
      close: async () => {},
    },
    log: { info() {}, warn() {}, error() {} },
    now: Date.now,
    persistent: new Map(),
    env: {},
  };
}

function context(token: string): RequestContext {
  const ctx = createContext({
    id: 'bench',
    method: 'GET',
    target: '/api/receipts',
    headers: { authorization: `Bearer ${token}`, host: 'bench' },
    rawHeaders: ['Authorization', `Bearer ${token}`, 'Host', 'bench'],
    clientIp: '127.0.0.1',
    secure: false,
    httpVersion: '1.1',
    bodySource: Readable.from([]),
    signal: new AbortController().signal,
  });
  ctx.routeName = 'api';
  return ctx;
}

async function compile(jwt: Record<string, unknown>): Promise<Policy> {
  const config = Value.Default(auth.schema, { audit_success_sample_rate: 0, jwt }) as never;
  return auth.compile(config, {
    services: services(),
    path: ['policies', 'auth'],
    config: {},
    configDir: process.cwd(),
  });
}

/** µs per onRequest call, measured for about MS milliseconds after a warm-up. */
async function measure(policy: Policy, token: string): Promise<number> {
  const ctx = context(token);
  const once = async () => {
    const v = policy.onRequest!(ctx);
    const r = v instanceof Promise ? await v : v;
    if (r !== undefined) throw new Error(`bench token refused: ${JSON.stringify(r)}`);
  };
  for (let i = 0; i < 200; i++) await once();
  let n = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(MS) * 1_000_000n;
  let now = start;
  while (now < deadline) {
    for (let i = 0; i < 100; i++) await once();
    n += 100;
    now = process.hrtime.bigint();
  }
  return Number(now - start) / 1000 / n;
}

async function main(): Promise<void> {
  const claims = { sub: 'alice', role: 'user' };
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const rows: { name: string; off: number; on: number }[] = [];

  const hsToken = await new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(SECRET));
  rows.push({
    name: 'HS256',
    off: await measure(await compile({ secret: SECRET, cache: { max_entries: 0 } }), hsToken),
    on: await measure(await compile({ secret: SECRET }), hsToken),
  });

  for (const alg of ['RS256', 'ES256'] as const) {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    const pem = await exportSPKI(publicKey);
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg, kid: 'k1' })
      .setExpirationTime(exp)
      .sign(privateKey);
    const keys = [{ kid: 'k1', pem }];
    rows.push({
      name: alg,
      off: await measure(
        await compile({ public_keys: keys, algorithms: [alg], cache: { max_entries: 0 } }),
        token,
      ),
      on: await measure(await compile({ public_keys: keys, algorithms: [alg] }), token),
    });
  }

  const pad = (s: string, n: number) => s.padStart(n);
  process.stdout.write(
    `${'alg'.padEnd(8)}${pad('no cache µs/op', 16)}${pad('cached µs/op', 14)}${pad('speed-up', 10)}\n`,
  );
  for (const r of rows) {
    process.stdout.write(
      `${r.name.padEnd(8)}${pad(r.off.toFixed(2), 16)}${pad(r.on.toFixed(2), 14)}${pad(`${(r.off / r.on).toFixed(1)}x`, 10)}\n`,
    );
  }
}

main().catch((err: Error) => {
  process.stderr.write(`jwt bench failed: ${err.stack ?? err.message}\n`);
  process.exitCode = 1;
});
