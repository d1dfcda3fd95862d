import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { ConfigError, INSPECTION_REASONS } from '../../gateway/errors.js';
import { TRANSFORMS } from './transforms.js';
import { DETECTOR_NAMES } from './detectors/index.js';

/**
 * Rule packs: YAML files, one rule list each. A rule:
 *
 * ```yaml
 * - id: "942100"
 *   family: sqli                # metric reason: sqli xss path_traversal cmd_injection rfi php nodejs protocol scanner
 *   paranoia: 1                 # 1..4; the policy runs rules with paranoia <= paranoia_level
 *   score: 5                    # added to the request's anomaly score on a match
 *   description: SQL injection by tokenizer fingerprint
 *   targets: [args, args_names, cookies, "headers:user-agent"]
 *   transforms: [url_decode, nfkc, remove_nulls, lowercase]
 *   detector: sqli              # or: regex: "\\bunion\\s+select\\b" (written for the transformed value)
 *   examples:
 *     match: ["1' or '1'='1"]
 *     no_match: ["O'Brien's Pub"]
 * ```
 */

export const FAMILIES = INSPECTION_REASONS;
export type Family = (typeof FAMILIES)[number];

/** Target selectors a rule may name. */
export const TARGET_SELECTORS = [
  'path',
  'query',
  'query_names',
  'headers',
  'header_names',
  'cookies',
  'cookie_names',
  'json',
  'json_keys',
  'form',
  'form_names',
  'multipart',
  'multipart_names',
  'filenames',
  'args',
  'args_names',
  'body',
  'request',
] as const;

/** A request-level example (for rules on the `request` target or any rule). */
export interface RequestExample {
  readonly method?: string;
  readonly target: string;
  readonly headers?: Record<string, string>;
  readonly body?: string | null;
}

export type Example = string | RequestExample;

export interface RuleDef {
  readonly id: string;
  readonly pack: string;
  readonly family: Family;
  readonly paranoia: number;
  readonly score: number;
  readonly description: string;
  readonly targets: readonly string[];
  /** optional regex (case-insensitive) on the target's field name: the rule only runs on matching fields */
  readonly names?: string;
  /**
   * optional characters of which the transformed value must hold at least one for the rule
   * to match (a cheap gate; the rule's author guarantees it is necessary)
   */
  readonly requires?: string;
  /** optional substrings of which the transformed value must hold at least one (another necessary-condition gate) */
  readonly requiresAny?: readonly string[];
  readonly transforms: readonly string[];
  readonly regex?: string;
  /** regex flags, default none (values are usually lower-cased by a transform) */
  readonly flags?: string;
  readonly detector?: string;
  readonly examples: { readonly match: readonly Example[]; readonly no_match: readonly Example[] };
  /** where it was defined, for error messages */
  readonly source: string;
}

function fail(source: string, msg: string): never {
  throw new ConfigError(`${source}: ${msg}`, ['policies', 'pattern_block', 'rule_files']);
}

function asStringList(v: unknown, where: string, field: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))
    fail(where, `${field} must be a list of strings`);
  return v as string[];
}

function asExamples(v: unknown, where: string): Example[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) fail(where, 'examples must be lists');
  return v.map((x) => {
    if (typeof x === 'string') return x;
    if (x && typeof x === 'object' && typeof (x as RequestExample).target === 'string')
      return x as RequestExample;
    return fail(where, 'an example is a string or {method, target, headers, body}');
  });
}

const ALLOWED_KEYS = new Set([
  'id',
  'family',
  'paranoia',
  'score',
  'description',
  'targets',
  'names',
  'requires',
  'requires_any',
  'transforms',
  'regex',
  'flags',
  'detector',
  'examples',
]);

function validSelector(t: string): boolean {
  if ((TARGET_SELECTORS as readonly string[]).includes(t)) return true;
  return /^headers:[a-z0-9!#$%&'*+.^_`|~-]+$/.test(t);
}

/** Parse and validate one pack's YAML text. Throws ConfigError naming the file and rule. */
export function parsePack(text: string, pack: string, file: string): RuleDef[] {
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (e) {
    fail(file, `invalid YAML: ${(e as Error).message}`);
  }
  const list = (
    doc && typeof doc === 'object' && !Array.isArray(doc) ? (doc as { rules?: unknown }).rules : doc
  ) as unknown;
  if (!Array.isArray(list)) fail(file, 'a rule pack is a list of rules (or {rules: [...]})');
  const out: RuleDef[] = [];
  for (const [i, raw] of list.entries()) {
    const where = `${file} rule #${i + 1}`;
    if (!raw || typeof raw !== 'object') fail(where, 'a rule is a mapping');
    const r = raw as Record<string, unknown>;
    for (const k of Object.keys(r)) if (!ALLOWED_KEYS.has(k)) fail(where, `unknown key "${k}"`);
    const id = typeof r.id === 'number' ? String(r.id) : r.id;
    if (typeof id !== 'string' || !/^[A-Za-z0-9._-]{1,40}$/.test(id))
      fail(where, 'id must be a short string');
    const w = `${file} rule ${id}`;
    const family = r.family;
    if (typeof family !== 'string' || !(FAMILIES as readonly string[]).includes(family))
      fail(w, `family must be one of ${FAMILIES.join(', ')}`);
    const paranoia = r.paranoia ?? 1;
    if (typeof paranoia !== 'number' || !Number.isInteger(paranoia) || paranoia < 1 || paranoia > 4)
      fail(w, 'paranoia must be 1..4');
    const score = r.score ?? 5;
    if (typeof score !== 'number' || score < 0 || score > 100) fail(w, 'score must be 0..100');
    const targets = asStringList(r.targets, w, 'targets');
    if (targets.length === 0) fail(w, 'targets must not be empty');
    for (const t of targets) if (!validSelector(t)) fail(w, `unknown target "${t}"`);
    const names = r.names;
    if (names !== undefined) {
      if (typeof names !== 'string') fail(w, 'names must be a regex string');
      try {
        new RegExp(names, 'i');
      } catch (e) {
        fail(w, `invalid names regex: ${(e as Error).message}`);
      }
    }
    const requires = r.requires;
    if (requires !== undefined && (typeof requires !== 'string' || requires.length === 0))
      fail(w, 'requires must be a non-empty string of characters');
    const requiresAny =
      r.requires_any === undefined ? undefined : asStringList(r.requires_any, w, 'requires_any');
    if (requiresAny !== undefined && (requiresAny.length === 0 || requiresAny.some((x) => x === '')))
      fail(w, 'requires_any must list non-empty strings');
    const transforms = asStringList(r.transforms, w, 'transforms');
    for (const t of transforms) if (!(t in TRANSFORMS)) fail(w, `unknown transform "${t}"`);
    const regex = r.regex;
    const detector = r.detector;
    if ((regex === undefined) === (detector === undefined)) fail(w, 'exactly one of regex and detector');
    if (regex !== undefined) {
      if (typeof regex !== 'string' || regex.length === 0) fail(w, 'regex must be a string');
      const flags = r.flags ?? '';
      if (typeof flags !== 'string' || !/^[imsu]*$/.test(flags)) fail(w, 'flags: only i, m, s, u');
      try {
        new RegExp(regex, flags);
      } catch (e) {
        fail(w, `invalid regex: ${(e as Error).message}`);
      }
    }
    if (detector !== undefined && (typeof detector !== 'string' || !DETECTOR_NAMES.includes(detector)))
      fail(w, `unknown detector "${String(detector)}" (known: ${DETECTOR_NAMES.join(', ')})`);
    const ex = (r.examples ?? {}) as Record<string, unknown>;
    out.push({
      id,
      pack,
      family: family as Family,
      paranoia,
      score,
      description: typeof r.description === 'string' ? r.description : '',
      targets,
      ...(typeof names === 'string' ? { names } : {}),
      ...(typeof requires === 'string' ? { requires } : {}),
      ...(requiresAny !== undefined ? { requiresAny } : {}),
      transforms,
      ...(typeof regex === 'string' ? { regex, flags: (r.flags as string | undefined) ?? '' } : {}),
      ...(typeof detector === 'string' ? { detector } : {}),
      examples: { match: asExamples(ex.match, w), no_match: asExamples(ex.no_match, w) },
      source: file,
    });
  }
  return out;
}

/** The shipped rule directory (works from the sources and from the compiled dist/ tree). */
export function shippedRulesDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [
    path.join(here, 'rules'),
    path.resolve(here, '..', '..', '..', 'policies', 'pattern-block', 'rules'),
  ];
  for (const c of candidates) if (fs.existsSync(c)) return c;
  throw new ConfigError(`pattern-block rule packs not found (looked in ${candidates.join(', ')})`, [
    'policies',
    'pattern_block',
  ]);
}

const cache = new Map<string, RuleDef[]>();

/** Load every `*.yaml` pack of a directory (sorted by name), cached per file path and mtime. */
export function loadPackDir(dir: string): RuleDef[] {
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort();
  return files.flatMap((f) => loadPackFile(path.join(dir, f)));
}

/** Load one pack file; the pack name is the file name without extension. */
export function loadPackFile(file: string): RuleDef[] {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new ConfigError(`rule pack ${file} not found`, ['policies', 'pattern_block', 'rule_files']);
  }
  const key = `${file}:${st.mtimeMs}:${st.size}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const pack = path.basename(file).replace(/\.ya?ml$/, '');
  const rules = parsePack(fs.readFileSync(file, 'utf8'), pack, file);
  cache.set(key, rules);
  return rules;
}
