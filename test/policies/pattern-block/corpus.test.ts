import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Value } from '@sinclair/typebox/value';
import { patternBlock, engineFromConfig } from '../../../policies/pattern-block/index.js';
import { inspectRequest } from '../../../policies/pattern-block/engine.js';

/**
 * Scores the shared development corpus through the DEFAULT pattern_block config, the way
 * the gateway sees each request (body parsed by gateway/body.ts parseBody), and fails
 * below the goal of issue 5; then at paranoia level 2, which must add detection without
 * changing level 1 (docs/pattern-block.md, "Paranoia levels").
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

interface Score {
  attacks: number;
  blocked: number;
  gen: number;
  genBlocked: number;
  crsNeg: number;
  crsNegBlocked: number;
  fam: Map<string, { attacks: number; blocked: number }>;
}

function score(rows: readonly Row[], paranoiaLevel: number): Score {
  const config = Value.Default(patternBlock.schema, { paranoia_level: paranoiaLevel }) as Parameters<
    typeof engineFromConfig
  >[0];
  const engine = engineFromConfig(config, process.cwd());
  const s: Score = {
    attacks: 0,
    blocked: 0,
    gen: 0,
    genBlocked: 0,
    crsNeg: 0,
    crsNegBlocked: 0,
    fam: new Map(),
  };
  for (const r of rows) {
    const v = inspectRequest(engine, { method: r.method, target: r.path, headers: r.headers, body: r.body });
    const deny = v.decision === 'deny';
    if (r.expected === 'attack') {
      s.attacks++;
      if (deny) s.blocked++;
      const f = s.fam.get(r.family) ?? { attacks: 0, blocked: 0 };
      f.attacks++;
      if (deny) f.blocked++;
      s.fam.set(r.family, f);
    } else if (r.source === 'benign-gen') {
      s.gen++;
      if (deny) s.genBlocked++;
    } else if (r.source === 'crs') {
      s.crsNeg++;
      if (deny) s.crsNegBlocked++;
    }
  }
  return s;
}

const pct = (a: number, b: number) => (b === 0 ? 0 : (100 * a) / b);

function readRows(): Row[] | undefined {
  if (!fs.existsSync(CORPUS)) return undefined;
  return fs
    .readFileSync(CORPUS, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Row);
}

function comment(t: { comment: (msg: string) => void }, level: number, s: Score): void {
  t.comment(
    `paranoia ${level}: attacks blocked ${s.blocked}/${s.attacks} (${pct(s.blocked, s.attacks).toFixed(1)} %)`,
  );
  for (const [f, x] of [...s.fam].sort())
    t.comment(`  ${f}: ${x.blocked}/${x.attacks} (${pct(x.blocked, x.attacks).toFixed(1)} %)`);
  t.comment(
    `benign-gen blocked ${s.genBlocked}/${s.gen} (${pct(s.genBlocked, s.gen).toFixed(2)} %), CRS negatives blocked ${s.crsNegBlocked}/${s.crsNeg} (${pct(s.crsNegBlocked, s.crsNeg).toFixed(1)} %)`,
  );
}

const rows = readRows();
const level1 = rows && score(rows, 1);

t.test('dev corpus meets the detection and false-positive goals', async (t) => {
  if (!rows || !level1) {
    t.fail(
      `corpus not found at ${CORPUS}: the WAF goal cannot be checked without ../shared/corpus/waf-dev.jsonl`,
    );
    return;
  }
  const { attacks, blocked, gen, genBlocked, crsNeg, crsNegBlocked, fam } = level1;
  comment(t, 1, level1);

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

t.test('paranoia 2 adds detection; paranoia 1 is unchanged by the higher-level rules', async (t) => {
  if (!rows || !level1) {
    t.fail(`corpus not found at ${CORPUS}`);
    return;
  }
  // Level 1 as measured when the level-2/3/4 rules were added (this schema-default config has
  // no free-text fields or password exclusions, so it differs a little from `replay` with the
  // shipped gateway.yaml, docs/pattern-block.md): the
  // higher-level rules must not move it. A deliberate change to a level-1 rule updates these.
  t.same(
    { blocked: level1.blocked, genBlocked: level1.genBlocked, crsNegBlocked: level1.crsNegBlocked },
    { blocked: 1896, genBlocked: 0, crsNegBlocked: 9 },
    'paranoia 1 figures unchanged',
  );
  const level2 = score(rows, 2);
  comment(t, 2, level2);
  // measured gain at level 2: +44 attacks (1896 -> 1940 of 1972); allow a margin of 4
  t.ok(
    level2.blocked >= level1.blocked + 40,
    `paranoia 2 blocks ${level2.blocked} attacks >= ${level1.blocked} + 40`,
  );
  for (const [f, s] of level1.fam)
    t.ok((level2.fam.get(f)?.blocked ?? 0) >= s.blocked, `${f}: level 2 blocks at least what level 1 does`);
  t.ok(
    pct(level2.genBlocked, level2.gen) <= 3,
    `paranoia 2 generated benign blocked ${pct(level2.genBlocked, level2.gen).toFixed(2)} % <= 3 %`,
  );
});
