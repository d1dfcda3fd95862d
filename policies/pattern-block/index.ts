import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import type { PolicyFactory, Policy, Verdict, CompileContext } from '../../gateway/policy.js';
import type { RequestContext } from '../../gateway/context.js';
import { policyBlock } from '../../gateway/config/policy-schema.js';
import { ConfigError } from '../../gateway/errors.js';
import {
  compileEngine,
  decide,
  inspectBody,
  inspectHead,
  mergeMatches,
  DEFAULT_ENGINE_OPTIONS,
  type Engine,
  type HeadInput,
  type Match,
} from './engine.js';
import { loadPackDir, loadPackFile, shippedRulesDir, FAMILIES, type Family, type RuleDef } from './rules.js';

const FamilyKey = Type.Union(FAMILIES.map((f) => Type.Literal(f)));

const Exclusion = Type.Object(
  {
    routes: Type.Optional(
      Type.Array(Type.String(), { description: 'route names this exclusion applies to (default: all)' }),
    ),
    paths: Type.Optional(
      Type.Array(Type.String(), {
        description: 'request paths: exact, or a prefix ending in /* (one segment) or /** (any depth)',
      }),
    ),
    methods: Type.Optional(Type.Array(Type.String(), { description: 'HTTP methods (default: all)' })),
    rules: Type.Optional(
      Type.Array(Type.String(), {
        description: 'rule ids to skip; a trailing * makes a prefix (e.g. "rce-1*")',
      }),
    ),
    families: Type.Optional(
      Type.Array(Type.String(), {
        description:
          'families to skip: sqli, xss, path_traversal, cmd_injection, rfi, php, nodejs, protocol, scanner',
      }),
    ),
    targets: Type.Optional(
      Type.Array(Type.String(), {
        description:
          'targets to skip: "json:password", "form:password", "password" (any kind, by field name), "header:referer", "query:*"',
      }),
    ),
  },
  {
    additionalProperties: false,
    description: 'matches on the selected requests, rules and targets are ignored; empty lists mean "any"',
  },
);

const schema = policyBlock(
  {
    paranoia_level: Type.Integer({
      minimum: 1,
      maximum: 4,
      default: 1,
      description:
        'run rules of this paranoia level and below (1 = fewest false positives, 4 = most detection)',
    }),
    threshold: Type.Number({
      minimum: 1,
      default: 5,
      description: 'anomaly score at which a request is denied (a critical match scores 5)',
    }),
    family_thresholds: Type.Partial(Type.Record(FamilyKey, Type.Number({ minimum: 1 })), {
      default: {},
      description:
        'per-family thresholds, e.g. {protocol: 10}; a family listed here is judged alone and does not add to the request score',
    }),
    packs: Type.Record(
      Type.String({ pattern: '^[a-z0-9_-]+$' }),
      Type.Union([Type.Literal('enforce'), Type.Literal('monitor'), Type.Literal('off')]),
      {
        default: {},
        description:
          'mode per rule pack (file name without .yaml): enforce, monitor (log and count, let through) or off',
      },
    ),
    rule_files: Type.Array(Type.String(), {
      default: [],
      description: 'extra rule pack files (YAML), relative to gateway.yaml',
    }),
    disabled_rules: Type.Array(Type.String(), {
      default: [],
      description: 'rule ids never run; a trailing * makes a prefix',
    }),
    exclusions: Type.Array(Exclusion, {
      default: [],
      description: 'where rules are skipped (per route, path, method, rule, family, target)',
    }),
    free_text_fields: Type.Array(Type.String(), {
      default: [],
      description:
        'field names holding prose (e.g. notes); their matches are scored on their own against free_text_threshold',
    }),
    free_text_threshold: Type.Number({
      minimum: 1,
      default: 10,
      description: 'anomaly score at which matches inside free-text fields deny the request',
    }),
    allowed_methods: Type.Array(Type.String(), {
      default: [...DEFAULT_ENGINE_OPTIONS.allowedMethods],
      description: 'methods accepted by the protocol pack',
    }),
    allowed_content_types: Type.Array(Type.String(), {
      default: [...DEFAULT_ENGINE_OPTIONS.allowedContentTypes],
      description:
        'media types accepted for a non-empty body ("application/*+json" and "type/*" wildcards allowed)',
    }),
    allowed_charsets: Type.Array(Type.String(), {
      default: [...DEFAULT_ENGINE_OPTIONS.allowedCharsets],
      description: 'charsets accepted in Content-Type and Accept',
    }),
    max_headers: Type.Integer({
      minimum: 8,
      default: DEFAULT_ENGINE_OPTIONS.maxHeaders,
      description: 'more request headers than this is an anomaly',
    }),
    max_args: Type.Integer({
      minimum: 8,
      default: DEFAULT_ENGINE_OPTIONS.maxArgs,
      description:
        'more query/cookie/body names and values than this is an anomaly (proto-151); the rest is not inspected',
    }),
    max_ranges: Type.Integer({
      minimum: 1,
      default: DEFAULT_ENGINE_OPTIONS.maxRanges,
      description: 'more byte ranges than this in Range is an anomaly',
    }),
    max_value_length: Type.Integer({
      minimum: 256,
      default: DEFAULT_ENGINE_OPTIONS.maxValueLength,
      description:
        'characters a rule sees at a time: longer values are inspected whole, in overlapping windows of this length',
    }),
    skip_headers: Type.Array(Type.String(), {
      default: [...DEFAULT_ENGINE_OPTIONS.skipHeaders],
      description:
        'headers not inspected by rules on "every header" (credentials, ids); rules naming a header still see it',
    }),
  },
  {
    description:
      'Request inspection: SQLi, XSS, traversal, command injection, PHP/Node injection, RFI, scanners and protocol checks, with CRS-style anomaly scoring',
  },
);

export type PatternBlockConfig = Static<typeof schema>;

/** Load the shipped packs plus the configured extra files. */
export function loadRules(extraFiles: readonly string[], configDir: string): RuleDef[] {
  const rules = [...loadPackDir(shippedRulesDir())];
  for (const f of extraFiles) rules.push(...loadPackFile(path.resolve(configDir, f)));
  const seen = new Set<string>();
  for (const r of rules) {
    if (seen.has(r.id))
      throw new ConfigError(`duplicate rule id ${r.id} (${r.source})`, [
        'policies',
        'pattern_block',
        'rule_files',
      ]);
    seen.add(r.id);
  }
  return rules;
}

/**
 * Findings an exclusion may name that are not rules of a pack (engine.ts adds them
 * itself): `body-parse-error`, a body that does not parse as its declared type, and
 * `json-patch-copy`, a JSON Patch copy or move of an unseen value out of a laxer field.
 */
const PSEUDO_RULE_IDS: readonly string[] = ['body-parse-error', 'json-patch-copy'];
/** Pack names an exclusion's `families` accepts for the family they hold. */
const FAMILY_ALIASES: readonly string[] = ['lfi', 'rce'];

/**
 * The rule ids and families a block names (`disabled_rules`, each exclusion's `rules` and
 * `families`) that select nothing: a typo there would leave the rule running unnoticed.
 * Known ids are those of every loaded pack, whatever the paranoia level or pack mode.
 */
function unknownReferences(
  config: PatternBlockConfig,
  rules: readonly RuleDef[],
  ctxPath: readonly (string | number)[],
): ConfigError[] {
  const out: ConfigError[] = [];
  const ids = rules.map((r) => r.id);
  const check = (id: string, known: readonly string[], at: readonly (string | number)[]) => {
    if (id.endsWith('*')) {
      const pre = id.slice(0, -1);
      if (!known.some((k) => k.startsWith(pre)))
        out.push(
          new ConfigError(`rule id prefix "${id}" matches no rule of the loaded packs`, [...ctxPath, ...at]),
        );
    } else if (!known.includes(id)) {
      // (a pseudo-rule reaches here only from disabled_rules, which cannot switch it off)
      const why = PSEUDO_RULE_IDS.includes(id)
        ? `not a rule of the packs: an exclusion drops it, e.g. { rules: [${id}] }`
        : 'no rule of the loaded packs has it';
      out.push(new ConfigError(`unknown rule id "${id}" (${why})`, [...ctxPath, ...at]));
    }
  };
  config.disabled_rules.forEach((id, j) => check(id, ids, ['disabled_rules', j]));
  const excludable = [...ids, ...PSEUDO_RULE_IDS];
  config.exclusions.forEach((e, i) => {
    (e.rules ?? []).forEach((id, j) => check(id, excludable, ['exclusions', i, 'rules', j]));
    (e.families ?? []).forEach((f, j) => {
      if (!(FAMILIES as readonly string[]).includes(f) && !FAMILY_ALIASES.includes(f))
        out.push(
          new ConfigError(
            `unknown family "${f}" (families: ${FAMILIES.join(', ')}; ${FAMILY_ALIASES.join(' and ')} as aliases)`,
            [...ctxPath, 'exclusions', i, 'families', j],
          ),
        );
    });
  });
  return out;
}

/**
 * Build the engine for a validated config block. Throws a ConfigError, or an
 * AggregateError of them when the block has several problems.
 */
export function engineFromConfig(
  config: PatternBlockConfig,
  configDir: string,
  ctxPath: readonly (string | number)[] = [],
): Engine {
  const rules = loadRules(config.rule_files, configDir);
  const packs = new Set(rules.map((r) => r.pack));
  const problems: ConfigError[] = [];
  for (const p of Object.keys(config.packs))
    if (!packs.has(p))
      problems.push(
        new ConfigError(`unknown rule pack "${p}" (known: ${[...packs].join(', ')})`, [
          ...ctxPath,
          'packs',
          p,
        ]),
      );
  problems.push(...unknownReferences(config, rules, ctxPath));
  if (problems.length === 1) throw problems[0]!;
  if (problems.length > 1) throw new AggregateError(problems, problems.map((e) => e.message).join('; '));
  return compileEngine({
    rules,
    paranoiaLevel: config.paranoia_level,
    threshold: config.threshold,
    familyThresholds: config.family_thresholds as Partial<Record<Family, number>>,
    packs: config.packs,
    disabledRules: config.disabled_rules,
    exclusions: config.exclusions,
    freeTextFields: config.free_text_fields,
    freeTextThreshold: config.free_text_threshold,
    allowedMethods: config.allowed_methods,
    allowedContentTypes: config.allowed_content_types,
    allowedCharsets: config.allowed_charsets,
    maxHeaders: config.max_headers,
    maxArgs: config.max_args,
    maxRanges: config.max_ranges,
    maxValueLength: config.max_value_length,
    skipHeaders: config.skip_headers,
  });
}

function headOfContext(ctx: RequestContext): HeadInput {
  return {
    method: ctx.method,
    target: ctx.target,
    rawPath: ctx.rawPath,
    query: ctx.query,
    path: ctx.path,
    headers: ctx.headers,
    rawHeaders: ctx.rawHeaders,
    httpVersion: ctx.httpVersion,
    routeName: ctx.routeName,
  };
}

const NAME = 'pattern-block';
/** `locals` marker: the head alone was refused (only seen by onBody in monitor mode). */
const HEAD_DENIED = Symbol('head denied');

/**
 * `pattern_block`: the request-inspection engine. Rule packs (YAML, shipped in
 * `policies/pattern-block/rules/`) score matches on the path, query names and values,
 * headers, cookies, JSON keys and leaves, form and multipart fields and file names; the
 * request is refused with 403 `request_blocked` (reason = the family with the highest
 * score) when the anomaly score reaches the threshold. Example:
 * ```yaml
 * policies:
 *   pattern_block:
 *     paranoia_level: 1
 *     threshold: 5
 *     packs: { protocol: monitor }
 *     exclusions:
 *       - { routes: [login], targets: [json:password, form:password], families: [cmd_injection] }
 * ```
 */
export const patternBlock: PolicyFactory<typeof schema> = {
  name: NAME,
  key: 'pattern_block',
  schema,
  waf: true,
  compile(config, ctx: CompileContext): Policy {
    const engine = engineFromConfig(config, ctx.configDir, ctx.path);
    const finish = (rc: RequestContext, matches: readonly Match[]): Verdict => {
      const v = decide(engine, matches);
      if (v.decision === 'deny') return v.deny;
      if (v.decision === 'monitor' && v.deny) {
        // a pack in monitor mode would have denied: record it, let the request through
        rc.monitored.push(v.deny);
        rc.trace.push({
          policy: NAME,
          verdict: 'monitor',
          code: 'request_blocked',
          ...(v.deny.reason ? { reason: v.deny.reason } : {}),
          ruleIds: v.deny.ruleIds ?? [],
          detail: v.deny.detail ?? {},
          micros: 0,
        });
      }
      return undefined;
    };
    return {
      name: NAME,
      mode: config.mode,
      failure: 'open',
      needsBody: true,
      onRequest(rc) {
        const matches = inspectHead(engine, headOfContext(rc));
        if (matches.length === 0) return undefined;
        const v = decide(engine, matches);
        if (v.decision === 'deny') {
          // in monitor mode the pipeline goes on to the body: the head's would-be denial is
          // the one enforce mode would answer, recorded once (not again with the body's)
          rc.locals.set(NAME, HEAD_DENIED);
          return v.deny;
        }
        rc.locals.set(NAME, matches);
        return undefined;
      },
      onBody(rc) {
        const stored = rc.locals.get(NAME);
        if (stored === HEAD_DENIED) return undefined;
        const head = (stored as Match[] | undefined) ?? [];
        const body = rc.body ? inspectBody(engine, headOfContext(rc), rc.body) : [];
        if (head.length === 0 && body.length === 0) return undefined;
        return finish(rc, mergeMatches(head, body));
      },
    };
  },
};
