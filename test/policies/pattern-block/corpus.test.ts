import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Value } from '@sinclair/typebox/value';
import { patternBlock, engineFromConfig } from '../../../policies/pattern-block/index.js';
import { inspectRequest } from '../../../policies/pattern-block/engine.js';

/**
 * Scores the shared development corpus through the DEFAULT pattern_block config, the way
 * the gateway sees each request (body parsed by gateway/body.ts parseBody), and fails
 * below the goal of issue 5.
 */
const CORPUS = path.resolve('..', 'shared', 'corpus', 'waf-dev.jsonl');

interface Row {
  id: string;
  source: string;
  family: string;
  expected: 'attack' | 'benign';
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string | null;
}

t.test('dev corpus meets the detection and false-positive goals', async (t) => {
  if (!fs.existsSync(CORPUS)) {
    t.fail(
      `corpus not found at ${CORPUS}: the WAF goal cannot be checked without ../shared/corpus/waf-dev.jsonl`,
    );
    return;
  }
  const config = Value.Default(patternBlock.schema, {}) as Parameters<typeof engineFromConfig>[0];
  const engine = engineFromConfig(config, process.cwd());
  const rows = fs
    .readFileSync(CORPUS, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Row);
  const fam = new Map<string, { attacks: number; blocked: number }>();
  let attacks = 0;
  let blocked = 0;
  let gen = 0;
  let genBlocked = 0;
  let crsNeg = 0;
  let crsNegBlocked = 0;
  for (const r of rows) {
    const v = inspectRequest(engine, { method: r.method, target: r.path, headers: r.headers, body: r.body });
    const deny = v.decision === 'deny';
    if (r.expected === 'attack') {
      attacks++;
      if (deny) blocked++;
      const f = fam.get(r.family) ?? { attacks: 0, blocked: 0 };
      f.attacks++;
      if (deny) f.blocked++;
      fam.set(r.family, f);
    } else if (r.source === 'benign-gen') {
      gen++;
      if (deny) genBlocked++;
    } else if (r.source === 'crs') {
      crsNeg++;
      if (deny) crsNegBlocked++;
    }
  }
  const pct = (a: number, b: number) => (b === 0 ? 0 : (100 * a) / b);
  t.comment(`attacks blocked ${blocked}/${attacks} (${pct(blocked, attacks).toFixed(1)} %)`);
  for (const [f, s] of [...fam].sort())
    t.comment(`  ${f}: ${s.blocked}/${s.attacks} (${pct(s.blocked, s.attacks).toFixed(1)} %)`);
  t.comment(
    `benign-gen blocked ${genBlocked}/${gen} (${pct(genBlocked, gen).toFixed(2)} %), CRS negatives blocked ${crsNegBlocked}/${crsNeg} (${pct(crsNegBlocked, crsNeg).toFixed(1)} %)`,
  );

  t.ok(pct(blocked, attacks) >= 94, `overall detection ${pct(blocked, attacks).toFixed(1)} % >= 94 %`);
  t.ok(pct(genBlocked, gen) <= 1, `generated benign blocked ${pct(genBlocked, gen).toFixed(2)} % <= 1 %`);
  t.ok(
    pct(crsNegBlocked, crsNeg) <= 10,
    `CRS negative tests blocked ${pct(crsNegBlocked, crsNeg).toFixed(1)} % <= 10 %`,
  );
  // every attack family with at least 50 samples in the corpus (attacks and benign of that family)
  const samples = new Map<string, number>();
  for (const r of rows) samples.set(r.family, (samples.get(r.family) ?? 0) + 1);
  for (const [f, s] of fam) {
    if ((samples.get(f) ?? 0) < 50) continue;
    t.ok(pct(s.blocked, s.attacks) >= 90, `${f}: ${pct(s.blocked, s.attacks).toFixed(1)} % >= 90 %`);
  }
});
