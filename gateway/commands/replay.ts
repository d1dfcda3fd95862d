import { parseOptions } from './args.js';
import fs from 'node:fs';
import readline from 'node:readline';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { loadConfigFile, ConfigLoadError, formatProblem } from '../config/load.js';
import { compileGeneration, closeGeneration, type Generation } from '../config/compile.js';
import { createContext } from '../context-factory.js';
import {
  runRequestPhase,
  framingDeny,
  serverWideOptions,
  targetFragmentDeny,
  ambiguousPathDeny,
} from '../pipeline.js';
import { normalizePath } from '../router.js';
import { CODES } from '../errors.js';
import { FACTORIES } from '../../policies/registry.js';
import type { Services } from '../policy.js';
import { offlineServices } from './validate.js';

/** One recorded request (the format of shared/corpus). */
export interface ReplayRequest {
  readonly id: string;
  readonly method: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly body?: string | null;
  readonly expected?: 'attack' | 'benign';
  readonly family?: string;
  readonly source?: string;
  readonly client_ip?: string;
}

export interface ReplayDecision {
  readonly id: string;
  readonly decision: 'allow' | 'deny' | 'monitor';
  /** the refusal's code (e.g. request_blocked), null when allowed */
  readonly code: string | null;
  /** the HTTP status the gateway would answer (200 when it would forward) */
  readonly status: number;
  readonly rule_ids: readonly string[];
}

/** Resolve `--only` names: policy names or YAML keys; `waf` = every request-inspection policy. */
export function resolveOnly(spec: string | undefined): Set<string> | undefined {
  if (spec === undefined || spec.trim() === '') return undefined;
  const out = new Set<string>();
  for (const raw of spec.split(',')) {
    const n = raw.trim();
    if (n === '') continue;
    if (n === 'waf') {
      for (const f of FACTORIES) if (f.waf) out.add(f.name);
      continue;
    }
    const f = FACTORIES.find((x) => x.name === n || x.key === n || x.key === n.replace(/-/g, '_'));
    if (!f) throw new Error(`unknown policy "${n}" (known: waf, ${FACTORIES.map((x) => x.name).join(', ')})`);
    out.add(f.name);
  }
  return out;
}

function toHeaders(
  h: Record<string, string> | undefined,
  bodyLength: number | undefined,
): { headers: IncomingHttpHeaders; raw: string[] } {
  const headers: IncomingHttpHeaders = {};
  const raw: string[] = [];
  for (const [k, v] of Object.entries(h ?? {})) {
    const name = k.toLowerCase();
    if (name === 'content-length') continue;
    raw.push(k, String(v));
    const prev = headers[name];
    if (prev === undefined) headers[name] = String(v);
    else if (name === 'set-cookie')
      headers[name] = [...(Array.isArray(prev) ? prev : [String(prev)]), String(v)];
    else headers[name] = `${String(prev)}${name === 'cookie' ? '; ' : ', '}${String(v)}`;
  }
  if (bodyLength !== undefined) {
    headers['content-length'] = String(bodyLength);
    raw.push('Content-Length', String(bodyLength));
  }
  return { headers, raw };
}

/**
 * Run one recorded request through the request phase, in-process; the upstream is never
 * contacted. Its signal is aborted once it is decided: no response phase follows, and what a
 * policy holds for a request in flight (login_lockout's per-username lease) is given back.
 */
export async function replayOne(
  gen: Generation,
  services: Services,
  r: ReplayRequest,
  only: ReadonlySet<string> | undefined,
): Promise<ReplayDecision> {
  const ac = new AbortController();
  try {
    return await decide(gen, services, r, only, ac.signal);
  } finally {
    ac.abort();
  }
}

async function decide(
  gen: Generation,
  services: Services,
  r: ReplayRequest,
  only: ReadonlySet<string> | undefined,
  signal: AbortSignal,
): Promise<ReplayDecision> {
  const body = r.body === null || r.body === undefined ? undefined : Buffer.from(r.body, 'utf8');
  const { headers, raw } = toHeaders(r.headers, body?.length);
  const ctx = createContext({
    method: r.method.toUpperCase(),
    target: r.path,
    headers,
    rawHeaders: raw,
    clientIp: r.client_ip ?? '127.0.0.1',
    secure: false,
    httpVersion: '1.1',
    bodySource: Readable.from(body ? [body] : []),
    signal,
  });
  const framing = framingDeny(ctx, gen.listen.maxHeaders);
  const done = (code: keyof typeof CODES | null, ruleIds: readonly string[] = []): ReplayDecision => ({
    id: r.id,
    decision: code !== null ? 'deny' : ctx.monitored.length > 0 ? 'monitor' : 'allow',
    code,
    status: code !== null ? CODES[code].status : 200,
    rule_ids: code !== null ? ruleIds : ctx.monitored.flatMap((d) => d.ruleIds ?? []),
  });
  if (framing !== undefined) return done(framing.code, framing.ruleIds);
  (ctx as { path: string }).path = normalizePath(ctx.rawPath) ?? ctx.rawPath;
  const acrm = ctx.method === 'OPTIONS' ? ctx.headers['access-control-request-method'] : undefined;
  const routeMethod =
    acrm !== undefined && ctx.headers.origin !== undefined ? acrm.toUpperCase() : ctx.method;
  const m = gen.router.match(routeMethod, ctx.path);
  const route = m.kind === 'match' ? m.route.value : gen.unmatched;
  ctx.routeName = route.name;
  const phase = await runRequestPhase(route, ctx, services, only !== undefined ? { only } : {});
  if (phase.deny !== undefined) {
    const d = phase.deny;
    return { ...done(d.code, d.ruleIds ?? []), status: d.status ?? CODES[d.code].status };
  }
  const fragment = targetFragmentDeny(ctx);
  if (fragment !== undefined) return done(fragment.code, fragment.ruleIds);
  const ambiguous = ambiguousPathDeny(gen.router.ambiguous(routeMethod, ctx.path, m));
  if (ambiguous !== undefined) return done(ambiguous.code, ambiguous.ruleIds);
  const serverWide = serverWideOptions(ctx);
  if (serverWide !== undefined) return { ...done(null), status: serverWide.status };
  if (only === undefined && m.kind === 'none') return done('not_found');
  if (only === undefined && m.kind === 'method') return done('method_not_allowed');
  return done(null);
}

interface Tally {
  total: number;
  blocked: number;
}

/** `receipt-gateway replay`: see SPEC section 1. Exit 0 when it ran, whatever it decided. */
export async function runReplay(
  args: readonly string[],
  stdout: { write(s: string): unknown },
  stderr: { write(s: string): unknown },
  envIn: Readonly<Record<string, string | undefined>> = process.env,
): Promise<number> {
  const usage =
    'usage: receipt-gateway replay --config FILE --requests FILE.jsonl [--only P1,P2|waf] [--format text|jsonl]\n';
  // (--config=FILE as the other commands take it; an unknown option is an error, not ignored)
  const opts = parseOptions(args, ['config', 'requests', 'only', 'format']);
  if (!opts.ok) {
    stderr.write(`replay: ${opts.error}\n${usage}`);
    return 2;
  }
  const get = (name: string) => opts.values[name];
  const configFile = get('config') ?? envIn.GATEWAY_CONFIG ?? 'gateway.yaml';
  const requestsFile = get('requests');
  const format = get('format') ?? 'text';
  if (!requestsFile || (format !== 'text' && format !== 'jsonl')) {
    stderr.write(usage);
    return 2;
  }
  let only: Set<string> | undefined;
  try {
    only = resolveOnly(get('only'));
  } catch (err) {
    stderr.write(`replay: ${(err as Error).message}\n`);
    return 2;
  }
  const env: Record<string, string | undefined> = { ...envIn };
  if (!env.JWT_SECRET_KEY) {
    // Replay never verifies real sessions; a throwaway secret lets a production config load.
    env.JWT_SECRET_KEY = randomBytes(32).toString('base64url');
    stderr.write(
      'replay: JWT_SECRET_KEY is not set; using a throwaway secret (tokens in the requests will not verify)\n',
    );
  }
  const services = offlineServices(env);
  let gen: Generation;
  try {
    gen = await compileGeneration(await loadConfigFile(configFile, env), services);
  } catch (err) {
    if (err instanceof ConfigLoadError) for (const p of err.problems) stderr.write(`${formatProblem(p)}\n`);
    else stderr.write(`replay: ${(err as Error).message}\n`);
    return 1;
  }
  if (!fs.existsSync(requestsFile)) {
    stderr.write(`replay: ${requestsFile}: file not found\n`);
    return 1;
  }
  const families = new Map<string, Tally>();
  const benign: Tally = { total: 0, blocked: 0 };
  const attacks: Tally = { total: 0, blocked: 0 };
  const rows: string[] = [];
  let n = 0;
  let bad = 0;
  const rl = readline.createInterface({
    input: fs.createReadStream(requestsFile, 'utf8'),
    crlfDelay: Infinity,
  });
  for await (const line of rl) {
    n++;
    if (line.trim() === '') continue;
    let r: ReplayRequest;
    try {
      r = JSON.parse(line) as ReplayRequest;
      if (typeof r.method !== 'string' || typeof r.path !== 'string')
        throw new Error('method and path are required');
    } catch (err) {
      bad++;
      stderr.write(`replay: ${requestsFile}:${n}: skipped: ${(err as Error).message}\n`);
      continue;
    }
    const d = await replayOne(gen, services, { ...r, id: r.id ?? `line-${n}` }, only);
    const blocked = d.decision === 'deny' && (d.status === 403 || d.status === 406);
    if (r.expected === 'attack') {
      attacks.total++;
      if (blocked) attacks.blocked++;
      const fam = r.family ?? 'unknown';
      const t = families.get(fam) ?? { total: 0, blocked: 0 };
      t.total++;
      if (blocked) t.blocked++;
      families.set(fam, t);
    } else if (r.expected === 'benign') {
      benign.total++;
      if (blocked) benign.blocked++;
    }
    if (format === 'jsonl') stdout.write(`${JSON.stringify(d)}\n`);
    else
      rows.push(
        `${d.decision.padEnd(8)} ${String(d.status).padEnd(6)} ${(d.code ?? '-').padEnd(20)} ${d.id}${d.rule_ids.length ? `  [${d.rule_ids.join(',')}]` : ''}`,
      );
  }
  await closeGeneration(gen);
  await services.store.close();
  if (format === 'text') {
    // the columns of --format jsonl, by the same names: decision, status, code
    stdout.write(`${'decision'.padEnd(8)} ${'status'.padEnd(6)} ${'code'.padEnd(20)} id\n`);
    for (const row of rows) stdout.write(`${row}\n`);
    if (attacks.total + benign.total > 0) {
      const pct = (t: Tally) => (t.total === 0 ? '-' : `${((100 * t.blocked) / t.total).toFixed(1)} %`);
      stdout.write('\nsummary (blocked = 403/406)\n');
      for (const [fam, t] of [...families].sort((a, b) => b[1].total - a[1].total)) {
        stdout.write(
          `  attacks ${fam.padEnd(22)} ${String(t.blocked).padStart(5)} / ${String(t.total).padEnd(5)} ${pct(t)}\n`,
        );
      }
      stdout.write(
        `  attacks ${'all'.padEnd(22)} ${String(attacks.blocked).padStart(5)} / ${String(attacks.total).padEnd(5)} ${pct(attacks)}\n`,
      );
      stdout.write(
        `  benign  ${'blocked'.padEnd(22)} ${String(benign.blocked).padStart(5)} / ${String(benign.total).padEnd(5)} ${pct(benign)}\n`,
      );
    }
    if (bad > 0) stdout.write(`${bad} malformed line(s) skipped\n`);
  }
  return 0;
}
