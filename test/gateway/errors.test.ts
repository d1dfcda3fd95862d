import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { CODES, AUDIT_EVENTS, BLOCK_REASONS, type ErrorCode } from '../../gateway/errors.js';
import { REPO } from '../helpers/harness.js';

/**
 * Contract test: the code table (gateway/errors.ts) against SPEC section 4, both ways.
 * The SPEC lives next to the repository: ../shared/SPEC.md from the repository root.
 */

const SPEC_FILE = path.resolve(REPO, '..', 'shared', 'SPEC.md');

/** Codes the gateway adds to the SPEC's table, each with why. */
const DOCUMENTED_ADDITIONS: Readonly<Record<string, { status: number; why: string }>> = {
  service_unavailable: { status: 503, why: 'a fail-closed policy whose store is down (SPEC section 8)' },
  internal_error: { status: 500, why: 'the last-resort answer when the gateway itself fails' },
  request_timeout: {
    status: 408,
    why: 'a request body that stalls past listen.request_timeout (SPEC section 8: body timeouts)',
  },
};

interface SpecRow {
  readonly situation: string;
  readonly code: string;
  /** statuses the SPEC allows for this code; the first is the default */
  readonly statuses: readonly number[];
}

/** Parse the table of "## 4." into code → statuses (codes in notes such as 405 included). */
function parseSection4(spec: string): SpecRow[] {
  const start = spec.search(/^## 4\./m);
  if (start === -1) throw new Error('SPEC.md has no "## 4." section');
  const rest = spec.slice(start + 1);
  const end = rest.search(/^## /m);
  const section = end === -1 ? rest : rest.slice(0, end);
  const rows: SpecRow[] = [];
  for (const line of section.split('\n')) {
    if (!line.startsWith('|') || /^\|\s*-/.test(line) || /^\|\s*situation\s*\|/i.test(line)) continue;
    const cells = line
      .split('|')
      .slice(1, -1)
      .map((c) => c.trim());
    if (cells.length < 3) continue;
    const [situation, statusCell, codeCell, notes = ''] = cells as [string, string, string, string?];
    const statuses = [...statusCell.matchAll(/\d{3}/g)].map((m) => Number(m[0]));
    const codes = [...codeCell.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!);
    if (codes.length === statuses.length)
      codes.forEach((code, i) => rows.push({ situation, code, statuses: [statuses[i]!] }));
    else if (codes.length === 1) rows.push({ situation, code: codes[0]!, statuses });
    else throw new Error(`cannot pair statuses and codes in SPEC row: ${line}`);
    for (const m of notes.matchAll(/(\d{3}) `([a-z_]+)`/g))
      rows.push({ situation: `${situation} (notes)`, code: m[2]!, statuses: [Number(m[1])] });
  }
  return rows;
}

t.test('SPEC.md is present next to the repository', async (t) => {
  t.ok(
    fs.existsSync(SPEC_FILE),
    `the contract must be at ${SPEC_FILE} (../shared/SPEC.md from the repository root); this test cannot check the code table without it`,
  );
});

const specText = fs.existsSync(SPEC_FILE) ? fs.readFileSync(SPEC_FILE, 'utf8') : undefined;

t.test('every CODE of SPEC section 4 exists in CODES with the same status', async (t) => {
  if (specText === undefined) {
    t.fail(`SPEC.md not found at ${SPEC_FILE}`);
    return;
  }
  const rows = parseSection4(specText);
  t.ok(rows.length >= 18, `the table was parsed (${rows.length} codes)`);
  for (const row of rows) {
    const spec = (CODES as Record<string, { status: number }>)[row.code];
    t.ok(spec, `SPEC code "${row.code}" (${row.situation}) is in gateway/errors.ts`);
    if (!spec) continue;
    t.equal(spec.status, row.statuses[0], `"${row.code}" has status ${row.statuses[0]}`);
  }
  // the parse found the rows the table is known to have
  const codes = new Set(rows.map((r) => r.code));
  for (const c of [
    'request_blocked',
    'uri_too_long',
    'headers_too_large',
    'bad_request',
    'bad_gateway',
    'gateway_timeout',
    'method_not_allowed',
    'not_found',
  ]) {
    t.ok(codes.has(c), `parsed ${c}`);
  }
  t.same(
    rows.find((r) => r.code === 'user_agent_rejected')?.statuses,
    [403, 400],
    'a code with two statuses keeps both (403 default, 400 by override)',
  );
});

t.test('every code in CODES is in the SPEC, except the documented additions', async (t) => {
  if (specText === undefined) {
    t.fail(`SPEC.md not found at ${SPEC_FILE}`);
    return;
  }
  const specCodes = new Set(parseSection4(specText).map((r) => r.code));
  for (const code of Object.keys(CODES) as ErrorCode[]) {
    if (specCodes.has(code)) continue;
    const add = DOCUMENTED_ADDITIONS[code];
    t.ok(add, `"${code}" is in gateway/errors.ts but neither in SPEC section 4 nor a documented addition`);
    if (add) t.equal(CODES[code].status, add.status, `documented addition "${code}": ${add.why}`);
  }
  for (const code of Object.keys(DOCUMENTED_ADDITIONS)) {
    t.notOk(
      specCodes.has(code),
      `"${code}" is listed as an addition but the SPEC has it now: drop it from the list`,
    );
    t.ok(code in CODES, `documented addition "${code}" exists`);
  }
});

t.test('the code table is internally consistent', async (t) => {
  const events = new Set<string>(AUDIT_EVENTS);
  const reasons = new Set<string>(BLOCK_REASONS);
  for (const [code, spec] of Object.entries(CODES)) {
    t.ok(spec.status >= 400 && spec.status < 600, `${code}: an error status`);
    if (spec.event !== undefined)
      t.ok(events.has(spec.event), `${code}: audit event "${spec.event}" is a SPEC section 6 event`);
    if (spec.reason !== undefined)
      t.ok(reasons.has(spec.reason), `${code}: reason "${spec.reason}" is a bounded label value`);
    t.ok(
      spec.message.length > 0 && !/\$\{|stack|Error:/.test(spec.message),
      `${code}: a plain client message`,
    );
    if (spec.status < 500) t.ok(spec.event !== undefined, `${code}: a refusal writes an audit event`);
  }
  if (specText !== undefined) {
    const sec6 = specText.slice(specText.search(/^## 6\./m), specText.search(/^## 7\./m));
    for (const e of AUDIT_EVENTS)
      t.match(sec6, new RegExp(`\`${e}\``), `audit event ${e} is named in SPEC section 6`);
  }
});
