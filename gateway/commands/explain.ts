/**
 * `receipt-gateway explain REQUEST_ID [--admin URL] [--json]`: asks the admin listener
 * why a recent request was allowed or refused (`GET {admin}/api/decisions/{id}`) and
 * prints the answer readably: the request, the route, each policy's verdict in order
 * with its code, reason, rule ids, matched targets and time spent.
 *
 * The admin URL defaults to `GATEWAY_ADMIN_URL`, else `http://127.0.0.1:${GATEWAY_ADMIN_PORT:-9901}`.
 * Exit status: 0 when the decision was printed, 1 otherwise (malformed or unknown id,
 * admin listener unreachable), 2 on a usage error.
 */
import { Agent, request } from 'undici';
import { isWellFormedRequestId, type DecisionEntry, type DecisionStep } from '../observability/decisions.js';

export interface ExplainIO {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
  env?: Record<string, string | undefined>;
}

const USAGE = 'usage: receipt-gateway explain REQUEST_ID [--admin URL] [--json]\n';
const TIMEOUT_MS = 5000;

/** Parse, fetch and print. Returns the process exit status. */
export async function runExplain(
  args: readonly string[],
  out: ExplainIO = { stdout: process.stdout, stderr: process.stderr, env: process.env },
): Promise<number> {
  const env = out.env ?? process.env;
  let admin = env.GATEWAY_ADMIN_URL || `http://127.0.0.1:${env.GATEWAY_ADMIN_PORT || '9901'}`;
  let json = false;
  const ids: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--admin') {
      const v = args[++i];
      if (!v) {
        out.stderr.write('explain: --admin needs a URL\n' + USAGE);
        return 2;
      }
      admin = v;
    } else if (a.startsWith('--admin=')) admin = a.slice('--admin='.length);
    else if (a === '--json') json = true;
    else if (a === '-h' || a === '--help') {
      out.stdout.write(USAGE);
      return 0;
    } else if (a.startsWith('--')) {
      out.stderr.write(`explain: unknown option ${a}\n` + USAGE);
      return 2;
    } else ids.push(a);
  }
  if (ids.length !== 1) {
    out.stderr.write(USAGE);
    return 2;
  }
  const id = ids[0]!;
  if (!isWellFormedRequestId(id)) {
    out.stderr.write(
      `explain: "${printable(id)}" is not a request id (printable characters without spaces, at most 128); copy it from the X-Request-Id header or the error body's request_id\n`,
    );
    return 1;
  }
  let base: URL;
  try {
    base = new URL(admin);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new Error('not http');
  } catch {
    out.stderr.write(`explain: --admin must be an http(s) URL, got "${printable(admin)}"\n`);
    return 2;
  }
  const url = new URL(`${base.pathname.replace(/\/$/, '')}/api/decisions/${encodeURIComponent(id)}`, base);
  let status: number;
  let text: string;
  // a private agent, closed at once: the command exits without waiting for keep-alive
  const agent = new Agent({ connect: { timeout: TIMEOUT_MS } });
  try {
    const res = await request(url, {
      method: 'GET',
      dispatcher: agent,
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    status = res.statusCode;
    text = await res.body.text();
  } catch (err) {
    const e = err as Error & { code?: string; cause?: { code?: string } };
    const why = e.code ?? e.cause?.code ?? e.message;
    out.stderr.write(
      `explain: cannot reach the admin listener at ${base.origin} (${why}); is the gateway running? (--admin URL)\n`,
    );
    return 1;
  } finally {
    await agent.close().catch(() => {});
  }
  if (status === 404) {
    out.stderr.write(
      `explain: no decision recorded for request ${id}: it is older than the gateway keeps (monitoring.decisions_kept), went to another instance, or never reached the gateway\n`,
    );
    return 1;
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    out.stderr.write(`explain: the admin listener answered ${status} with something that is not JSON\n`);
    return 1;
  }
  if (status !== 200) {
    const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    const msg = typeof b.message === 'string' ? b.message : typeof b.error === 'string' ? b.error : '';
    out.stderr.write(
      terminalSafe(`explain: the admin listener answered ${status}${msg ? `: ${msg}` : ''}`) + '\n',
    );
    return 1;
  }
  if (!isDecision(body)) {
    out.stderr.write(
      `explain: the admin listener answered ${status} with something that is not a decision (is ${terminalSafe(base.origin)} the gateway's admin listener?)\n`,
    );
    return 1;
  }
  if (json) out.stdout.write(jsonTerminalSafe(JSON.stringify(body, null, 2)) + '\n');
  else out.stdout.write(formatDecision(body));
  return 0;
}

/** The shape formatDecision reads: a request id and a list of steps, each with a policy name. */
function isDecision(v: unknown): v is DecisionEntry {
  if (typeof v !== 'object' || v === null) return false;
  const e = v as { request_id?: unknown; steps?: unknown };
  return (
    typeof e.request_id === 'string' &&
    Array.isArray(e.steps) &&
    e.steps.every(
      (s: unknown) =>
        typeof s === 'object' && s !== null && typeof (s as { policy?: unknown }).policy === 'string',
    )
  );
}

/**
 * What must not reach a terminal as it is: C0 and C1 controls and DEL (escape sequences:
 * `ESC [`, the 8-bit CSI U+009B, OSC, which recolour, move the cursor, retitle the window or
 * hide lines), the line and paragraph separators, and the invisible or reordering format
 * characters (soft hyphen, bidi marks, overrides and isolates, zero-width characters, BOM).
 * A decision carries request data: paths, excerpts of bodies and headers, JSON field names.
 */
const TERMINAL_UNSAFE =
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  /[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g;
/** the same without C0: JSON.stringify escapes those itself, and its own line breaks are kept */
const JSON_TERMINAL_UNSAFE =
  /[\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g;

const hex = (c: string, width: number) => c.charCodeAt(0).toString(16).padStart(width, '0');

/** One line of text with every {@link TERMINAL_UNSAFE} character shown as an escape (`\x1b`, `\u202e`). */
export function terminalSafe(s: string): string {
  return s.replace(TERMINAL_UNSAFE, (c) => (c.charCodeAt(0) <= 0xff ? `\\x${hex(c, 2)}` : `\\u${hex(c, 4)}`));
}

/** JSON text with those characters as JSON escapes (`\u009b`): the same value, safe to print. */
export function jsonTerminalSafe(json: string): string {
  return json.replace(JSON_TERMINAL_UNSAFE, (c) => `\\u${hex(c, 4)}`);
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, 140);
}

function verdictLabel(step: DecisionStep): string {
  switch (step.verdict) {
    case 'deny':
      return 'DENY';
    case 'monitor':
      return 'MONITOR (would deny)';
    case 'error':
      return 'ERROR';
    default:
      return 'pass';
  }
}

function fmtMicros(us: number): string {
  return us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${Math.round(us)} µs`;
}

function fmtDetail(detail: Record<string, unknown>, indent: string): string[] {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(detail)) {
    if (Array.isArray(v)) {
      lines.push(`${indent}${k}:`);
      for (const item of v) {
        if (item && typeof item === 'object') {
          lines.push(
            `${indent}  - ${Object.entries(item as Record<string, unknown>)
              .map(([a, b]) => `${a}=${JSON.stringify(b)}`)
              .join(' ')}`,
          );
        } else lines.push(`${indent}  - ${JSON.stringify(item)}`);
      }
    } else lines.push(`${indent}${k}: ${JSON.stringify(v)}`);
  }
  return lines;
}

/** A decision as readable text (what `explain` prints), control and bidi characters escaped. */
export function formatDecision(e: DecisionEntry): string {
  const head =
    e.decision === 'allow'
      ? `ALLOWED (${e.status})`
      : e.decision === 'monitor'
        ? `ALLOWED, monitor-mode policies would have refused it (${e.status})`
        : `REFUSED ${e.status}${e.code ? ` ${e.code}` : ''}`;
  const lines = [
    `Request ${e.request_id}: ${head}`,
    `  time     ${e.time}`,
    `  request  ${e.method} ${e.path}`,
    `  route    ${e.route}`,
    `  client   ${e.client_ip}`,
    `  total    ${e.total_ms} ms${e.score !== undefined ? `    score ${e.score}` : ''}`,
    '',
  ];
  if (!e.steps.length) lines.push('No policy ran (refused before the policies, or no route matched).');
  else {
    lines.push('Policies, in the order they ran:');
    const width = Math.max(...e.steps.map((s) => s.policy.length));
    e.steps.forEach((s, i) => {
      const parts = [`${String(i + 1).padStart(3)}. ${s.policy.padEnd(width)}  ${verdictLabel(s)}`];
      if (s.code) parts.push(s.code);
      if (s.reason) parts.push(`reason=${s.reason}`);
      parts.push(`(${fmtMicros(s.micros)})`);
      lines.push(parts.join('  '));
      if (s.rule_ids?.length) lines.push(`       rules: ${s.rule_ids.join(', ')}`);
      if (s.detail && Object.keys(s.detail).length) lines.push(...fmtDetail(s.detail, '       '));
    });
    const decisive = e.steps.find((s) => s.verdict === 'deny') ?? e.steps.find((s) => s.verdict === 'error');
    if (decisive) {
      lines.push('');
      lines.push(
        `Decided by ${decisive.policy}${decisive.reason ? ` (${decisive.reason})` : ''}${decisive.rule_ids?.length ? `, rule ${decisive.rule_ids.join(', ')}` : ''}.`,
      );
    }
  }
  // request data is in these lines: no escape sequence or bidi control reaches the terminal
  return lines.map(terminalSafe).join('\n') + '\n';
}
