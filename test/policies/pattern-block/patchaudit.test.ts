import t from 'tap';
import { Value } from '@sinclair/typebox/value';
import {
  patternBlock,
  engineFromConfig,
  type PatternBlockConfig,
} from '../../../policies/pattern-block/index.js';
import { inspectRequest, type Engine } from '../../../policies/pattern-block/engine.js';
import { ConfigError } from '../../../gateway/errors.js';

/**
 * JSON Patch copy and move (see walkJsonPatch in engine.ts): exclusions, the pseudo-rule
 * `json-patch-copy` in the configuration, and the bound on what a patch of copies costs.
 */

function config(over: Partial<PatternBlockConfig> = {}): PatternBlockConfig {
  return { ...(Value.Default(patternBlock.schema, {}) as PatternBlockConfig), ...over };
}
const H = { Host: 'receipts.example.com', 'User-Agent': 'test/1.0', Accept: 'application/json' };
const patch = (e: Engine, ops: unknown) =>
  inspectRequest(e, {
    method: 'PATCH',
    target: '/api/receipts/7',
    headers: { ...H, 'Content-Type': 'application/json-patch+json' },
    body: JSON.stringify(ops),
  });
const verdict = (e: Engine, ops: unknown) => {
  const v = patch(e, ops);
  return [v.decision, v.matches.map((m) => [m.ruleId, m.target])];
};

t.test('a field an exclusion names is laxer than one it does not name', async (t) => {
  const e = engineFromConfig(
    config({ exclusions: [{ targets: ['json:bio'], families: ['xss'] }] }),
    process.cwd(),
  );
  const xss = '<script>alert(1)</script>';
  t.same(verdict(e, [{ op: 'add', path: '/bio', value: xss }]), ['allow', []]);
  t.same(
    verdict(e, [
      { op: 'add', path: '/bio', value: xss },
      { op: 'copy', from: '/bio', path: '/merchant' },
    ]),
    [
      'deny',
      [
        ['xss-100', 'json:[1].from'],
        ['xss-110', 'json:[1].from'],
      ],
    ],
  );
  t.same(verdict(e, [{ op: 'move', from: '/bio', path: '/merchant' }]), [
    'deny',
    [['json-patch-copy', 'json:[0].from']],
  ]);
  t.same(verdict(e, [{ op: 'move', from: '/merchant', path: '/bio' }]), ['allow', []]);
});

t.test('json-patch-copy can be excluded, not disabled', async (t) => {
  const free = { free_text_fields: ['notes'], free_text_threshold: 10 };
  const ops = [{ op: 'copy', from: '/notes', path: '/merchant' }];
  t.equal(patch(engineFromConfig(config(free), process.cwd()), ops).decision, 'deny');
  const excluded = engineFromConfig(
    config({ ...free, exclusions: [{ targets: ['json:merchant'], rules: ['json-patch-copy'] }] }),
    process.cwd(),
  );
  t.same(verdict(excluded, ops), ['allow', []]);
  let err: unknown;
  try {
    engineFromConfig(config({ disabled_rules: ['json-patch-copy'] }), process.cwd());
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof ConfigError, 'a configuration error');
  t.match(
    (err as Error).message,
    /^unknown rule id "json-patch-copy" \(not a rule of the packs: an exclusion drops it/,
  );
});

t.test('copies of copies stay bounded by max_args', async (t) => {
  const e = engineFromConfig(config(), process.cwd());
  // each copy of the whole document doubles what the patch wrote: 2^60 without a bound
  const ops = [
    { op: 'add', path: '/a', value: 'x' },
    ...Array.from({ length: 60 }, (_, i) => ({ op: 'copy', from: '', path: `/c${i}` })),
  ];
  t.same(verdict(e, ops), ['deny', [['proto-151', 'request']]]);
  t.same(verdict(e, ops.slice(0, 6)), ['allow', []]);
});
