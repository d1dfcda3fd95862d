import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import type { Test } from 'tap';
import { Gateway } from '../../gateway/server.js';
import { attachObservability, type ObservabilityHandle } from '../../gateway/observability/wire.js';
import { silentLogger } from '../../gateway/observability/ops-log.js';
import { startMock } from '../../upstream-mock/server.js';
import { FACTORIES } from '../../policies/registry.js';
import type { OpsLogger } from '../../gateway/policy.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TEST_SECRET = 'test-secret-0123456789-abcdefghijklmnop-XYZ';

export interface HarnessOptions {
  /** YAML merged over the repository's gateway.yaml (deep merge; arrays replace) */
  readonly config?: string;
  /** environment for ${VAR} interpolation */
  readonly env?: Record<string, string>;
  /** environment of the mock (MOCK_RECORD=1 is always set) */
  readonly mockEnv?: Record<string, string>;
  /** keep the shipped rate limits and auto-ban (off by default so tests can send many requests) */
  readonly abuseControls?: boolean;
  /** do not start a mock; use this upstream URL */
  readonly upstreamUrl?: string;
  /** files written next to the config before the start (relative path → content), e.g. a rule pack */
  readonly files?: Record<string, string>;
  /** the gateway's ops log (default: silent) */
  readonly log?: OpsLogger;
}

export interface Harness {
  readonly url: string;
  readonly adminUrl: string;
  readonly mockUrl: string;
  readonly gateway: Gateway;
  readonly observability: ObservabilityHandle;
  readonly auditFile: string;
  readonly configFile: string;
  readonly dir: string;
  readonly env: Record<string, string>;
  mockRequests(): Promise<MockRecordLike[]>;
  clearMock(): Promise<void>;
  audit(): Promise<Record<string, unknown>[]>;
  reload(extraYaml: string): Promise<void>;
  /** a fresh mock token for a fixture user (alice, admin) */
  login(username?: string): Promise<string>;
  close(): Promise<void>;
}

export interface MockRecordLike {
  method: string;
  path: string;
  headers: Record<string, string>;
  body_size: number;
  body_sha256?: string;
  parts?: { field: string; filename?: string; size: number; content_type?: string }[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

export function deepMerge(base: unknown, over: unknown): unknown {
  if (!isObj(base) || !isObj(over)) return over === undefined ? base : over;
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = k in base ? deepMerge(base[k], v) : v;
  return out;
}

function buildConfig(
  extra: string | undefined,
  opts: HarnessOptions,
  auditFile: string,
  upstream: string,
): string {
  const base = YAML.parse(fs.readFileSync(path.join(REPO, 'gateway.yaml'), 'utf8')) as Obj;
  const harness: Obj = {
    upstream: { url: upstream },
    audit: { enabled: true, file: auditFile },
    listen: { host: '127.0.0.1', shutdown_timeout: '2s' },
  };
  if (!opts.abuseControls) {
    const pol: Obj = {};
    for (const key of ['rate_limit', 'ip_ban'])
      if (FACTORIES.some((f) => f.key === key)) pol[key] = { enabled: false };
    harness.policies = pol;
  }
  let merged = deepMerge(base, harness);
  if (extra !== undefined && extra.trim() !== '') merged = deepMerge(merged, YAML.parse(extra));
  return YAML.stringify(merged);
}

/** Start the real mock and the real gateway on ephemeral ports, with the shipped config. */
export async function startHarness(opts: HarnessOptions = {}): Promise<Harness> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rgw-test-'));
  const auditFile = path.join(dir, 'audit.log');
  const configFile = path.join(dir, 'gateway.yaml');
  const env: Record<string, string> = { JWT_SECRET_KEY: TEST_SECRET, ...opts.env };
  const mock = opts.upstreamUrl
    ? undefined
    : await startMock({
        port: 0,
        env: { MOCK_RECORD: '1', JWT_SECRET_KEY: env.JWT_SECRET_KEY!, ...opts.mockEnv },
      });
  const upstream = opts.upstreamUrl ?? mock!.url;
  let extra = opts.config;
  let gateway: Gateway;
  try {
    for (const [rel, content] of Object.entries(opts.files ?? {})) {
      const file = path.join(dir, rel);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, content);
    }
    fs.writeFileSync(configFile, buildConfig(extra, opts, auditFile, upstream));
    gateway = await Gateway.start({
      configFile,
      env,
      port: 0,
      adminPort: 0,
      watch: false,
      log: opts.log ?? silentLogger,
      defaultMetrics: false,
    });
  } catch (err) {
    await mock?.close();
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const observability = await attachObservability(gateway);
  const mockUrl = upstream;
  return {
    url: gateway.url,
    adminUrl: gateway.adminUrl!,
    mockUrl,
    gateway,
    observability,
    auditFile,
    configFile,
    dir,
    env,
    async mockRequests() {
      const r = await fetch(`${mockUrl}/__mock/requests`);
      return (await r.json()) as MockRecordLike[];
    },
    async clearMock() {
      await fetch(`${mockUrl}/__mock/requests`, { method: 'DELETE' });
    },
    async audit() {
      await gateway.audit.flush();
      if (!fs.existsSync(auditFile)) return [];
      return fs
        .readFileSync(auditFile, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async reload(extraYaml: string) {
      extra = extraYaml;
      fs.writeFileSync(configFile, buildConfig(extra, opts, auditFile, upstream));
      const r = await gateway.reload('test');
      if (r.result !== 'success') throw new Error(`reload failed: ${(r.errors ?? []).join('; ')}`);
    },
    async login(username = 'alice') {
      const r = await fetch(`${mockUrl}/api/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username, password: `${username}-secret-pw` }),
      });
      const body = (await r.json()) as { token: string };
      return body.token;
    },
    async close() {
      await gateway.close();
      await mock?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Start a harness for the whole test file `t` (closed when the file ends) and log `user` in.
 * For a test file's top level: `const { h, token } = await startFileHarness(t, opts);`.
 */
export async function startFileHarness(
  t: Test,
  opts: HarnessOptions = {},
  user = 'alice',
): Promise<{ h: Harness; token: string }> {
  const h = await startHarness(opts);
  t.teardown(() => h.close());
  return { h, token: await h.login(user) };
}

/** A marker no other request carries; put it in the path, query or a header. */
export const mark = (): string => `probe-${randomUUID()}`;

/** Whether the mock recorded a request with `marker` in its path or in a header value. */
export async function mockSaw(h: Harness, marker: string): Promise<boolean> {
  return (await h.mockRequests()).some(
    (r) => r.path.includes(marker) || Object.values(r.headers).some((v) => v.includes(marker)),
  );
}

/** What {@link sendMarked} got back. */
export interface MarkedAnswer {
  readonly status: number;
  readonly json: Record<string, unknown>;
  readonly requestId: string | undefined;
  /** the request's {@link mark}, for {@link mockSaw} */
  readonly marker: string;
}

/**
 * Send `body` to `path` with a bearer token, a {@link mark} in the query (`m=…`, then `query`,
 * which starts with `&`), and read the JSON answer.
 */
export async function sendMarked(
  h: Harness,
  token: string,
  req: { method: string; path: string; query?: string; contentType: string; body: string | Buffer },
): Promise<MarkedAnswer> {
  const marker = mark();
  const r = await fetch(`${h.url}${req.path}?m=${marker}${req.query ?? ''}`, {
    method: req.method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': req.contentType },
    body: req.body,
  });
  return {
    status: r.status,
    json: (await r.json()) as Record<string, unknown>,
    requestId: r.headers.get('x-request-id') ?? undefined,
    marker,
  };
}

/** The audit lines of one request. */
export async function auditOf(h: Harness, requestId: string | undefined): Promise<Record<string, unknown>[]> {
  return (await h.audit()).filter((l) => requestId !== undefined && l.request_id === requestId);
}

/** The Prometheus exposition of the admin listener. */
export async function metricsText(h: Harness): Promise<string> {
  return (await fetch(`${h.adminUrl}/metrics`)).text();
}

/** The sum of the samples of `name` whose labels include `labels` (0 when there is none). */
export function metricValue(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    const got: Record<string, string> = {};
    for (const m of inner.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[m[1]!] = m[2]!;
    if (Object.entries(labels).every(([k, v]) => got[k] === v))
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
