import type { RequestBody } from '../../gateway/context.js';
import type { Deny } from '../../gateway/policy.js';
import type { BlockReason } from '../../gateway/errors.js';
import { escapeRegex } from '../../gateway/regex-escape.js';
import { parseBody, mediaTypeOf } from '../../gateway/body.js';
import { ownString } from '../../gateway/own-string.js';
import { SECRET_NAME } from '../../gateway/observability/secret-names.js';
import {
  TRANSFORMS,
  urlDecodeOnce,
  handDecodings,
  lowercase,
  removeWhitespace,
  nonAsciiStable,
  inertPercentAmp,
  compressWhitespaceRuns,
  WS_UNIT,
  type Transform,
} from './transforms.js';
import {
  charMask,
  gateOf,
  passes,
  HI_CONTROL,
  HI_CONTROL_OTHER,
  HI_NON_ASCII,
  HI_DOUBLE_SPACE,
  HI_UPPER,
  type CharMask,
} from './charmask.js';
import {
  VALUE_DETECTORS,
  VALUE_DETECTOR_NEEDS,
  REQUEST_DETECTORS,
  type Evidence,
  type ValueDetector,
} from './detectors/index.js';
import {
  REQUEST_NEEDS,
  TOKEN,
  requestFeatures,
  type RequestFacts,
  type ProtocolSettings,
  type RequestDetector,
} from './detectors/protocol.js';
import { FAMILIES, type Family, type RuleDef } from './rules.js';
import {
  boundedLiterals,
  bare,
  marksOf,
  withMarks,
  confirmOf,
  alternativeLiterals,
  namesOrRefersToGroups,
  buildScanner,
  scanLiterals,
  scanLiteralsAndMask,
  scanLiteralsSkipping,
  scanLiteralsCompressing,
  foldCode,
  lowerScansAlike,
  type LiteralScanner,
} from './literals.js';

/**
 * The pattern engine: compiled rules plus the request walk. Everything expensive (regexes,
 * combined prefilters, per-target plans, exclusion matchers) is built once by
 * {@link compileEngine}; {@link inspectHead}, {@link inspectBody} and {@link inspectRequest}
 * only execute.
 */

export type PackMode = 'enforce' | 'monitor' | 'off';

/** One exclusion: matches on the selected requests/targets are ignored. */
export interface ExclusionSpec {
  /** route names (ctx.routeName); empty = every route */
  readonly routes?: readonly string[];
  /** path patterns: exact, or a prefix ending in `*` / `**` */
  readonly paths?: readonly string[];
  readonly methods?: readonly string[];
  /** rule ids (a trailing `*` makes a prefix) */
  readonly rules?: readonly string[];
  readonly families?: readonly string[];
  /**
   * target names: `json:password` (kind and field), `password` (any kind, by field name),
   * `header:referer`, `query:*` (every query value); empty = every target
   */
  readonly targets?: readonly string[];
}

export interface EngineOptions {
  readonly rules: readonly RuleDef[];
  readonly paranoiaLevel: number;
  readonly threshold: number;
  readonly familyThresholds: Readonly<Partial<Record<Family, number>>>;
  readonly packs: Readonly<Record<string, PackMode>>;
  readonly disabledRules: readonly string[];
  readonly exclusions: readonly ExclusionSpec[];
  readonly freeTextFields: readonly string[];
  readonly freeTextThreshold: number;
  readonly allowedMethods: readonly string[];
  readonly allowedContentTypes: readonly string[];
  readonly allowedCharsets: readonly string[];
  readonly maxHeaders: number;
  readonly maxArgs: number;
  readonly maxRanges: number;
  readonly maxValueLength: number;
  readonly skipHeaders: readonly string[];
  /**
   * the literal prefilter (default on); off, every rule runs its own gates only. It never
   * changes a verdict: the tests compare both.
   */
  readonly prefilter?: boolean;
}

export const DEFAULT_ENGINE_OPTIONS: Omit<EngineOptions, 'rules'> = {
  paranoiaLevel: 1,
  threshold: 5,
  familyThresholds: {},
  packs: {},
  disabledRules: [],
  exclusions: [],
  freeTextFields: [],
  freeTextThreshold: 5,
  allowedMethods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
  allowedContentTypes: [
    'application/json',
    'application/*+json',
    'application/x-www-form-urlencoded',
    'multipart/form-data',
  ],
  allowedCharsets: ['utf-8', 'utf8', 'iso-8859-1', 'iso-8859-15', 'us-ascii', 'windows-1252'],
  maxHeaders: 100,
  maxArgs: 1024,
  maxRanges: 5,
  maxValueLength: 8192,
  skipHeaders: [
    'authorization',
    'cookie',
    'host',
    'content-length',
    'content-type',
    'connection',
    'accept',
    'accept-encoding',
    'accept-language',
    'cache-control',
    'if-none-match',
    'if-modified-since',
    'x-request-id',
    'x-csrf-token',
    'x-api-key',
    'sec-fetch-site',
    'sec-fetch-mode',
    'sec-fetch-dest',
    'sec-fetch-user',
    'sec-ch-ua',
    'sec-ch-ua-mobile',
    'sec-ch-ua-platform',
    'sec-ch-ua-full-version-list',
  ],
};

type Kind =
  | 'path'
  | 'query'
  | 'query_name'
  | 'header'
  | 'header_name'
  | 'cookie'
  | 'cookie_name'
  | 'json'
  | 'json_key'
  | 'form'
  | 'form_name'
  | 'multipart'
  | 'multipart_name'
  | 'filename';

const SELECTOR_KINDS: Record<string, readonly Kind[]> = {
  path: ['path'],
  query: ['query'],
  query_names: ['query_name'],
  headers: ['header'],
  header_names: ['header_name'],
  cookies: ['cookie'],
  cookie_names: ['cookie_name'],
  json: ['json'],
  json_keys: ['json_key'],
  form: ['form'],
  form_names: ['form_name'],
  multipart: ['multipart'],
  multipart_names: ['multipart_name'],
  filenames: ['filename'],
  args: ['query', 'json', 'form', 'multipart'],
  args_names: ['query_name', 'json_key', 'form_name', 'multipart_name'],
  body: ['json', 'form', 'multipart'],
};

const FAMILY_REASON: Record<Family, BlockReason> = {
  sqli: 'sqli',
  xss: 'xss',
  path_traversal: 'path_traversal',
  cmd_injection: 'cmd_injection',
  rfi: 'rfi',
  php: 'php',
  nodejs: 'nodejs',
  protocol: 'protocol',
  scanner: 'scanner',
};

interface CompiledRule {
  readonly id: string;
  readonly pack: string;
  readonly family: Family;
  readonly score: number;
  readonly monitor: boolean;
  /** only fields whose name matches */
  readonly names?: RegExp;
  readonly regex?: RegExp;
  readonly detector?: ValueDetector;
  readonly request?: RequestDetector;
  /** a request rule whose verdict depends on the body (re-run in the body phase) */
  readonly bodyAware?: boolean;
  /** a request rule that cannot fire on a request without one of these features (protocol.ts requestFeatures; 0: always runs) */
  readonly needs?: number;
  /** the rule can only match a transformed value holding one of these characters */
  readonly gate?: CharMask;
  readonly gateKey?: string;
  /** and at least one of these substrings (one literal alternation, checked after the character gate) */
  readonly gateSubs?: RegExp;
  /** requirement id of the literals every match of the regex holds (see literals.ts), or -1 */
  readonly lits?: number;
  /**
   * The regex's top-level alternatives, each with the requirement id of its literals (see
   * literals.ts alternativeLiterals), when it has several and each requires some: only the
   * alternatives whose literals a value holds are run (see {@link execAlternatives}).
   */
  readonly alts?: readonly Alternative[];
  /** requirement id of the `requires_any` substrings (folded), or -1 */
  readonly subsLits?: number;
  /**
   * A detector rule's needs (detectors/index.ts VALUE_DETECTOR_NEEDS), {@link NEED_STRIDE}
   * numbers per group: the requirement id of its substrings (-1: none), its characters' gate
   * (two words) and its `lacks` bit. See {@link Walk.lacksOf}.
   */
  readonly valueNeeds?: Int32Array;
}

/** What the walk knows of a header name (see {@link Engine.headerNames}). */
interface HeaderName {
  /** the header's own plan set (a value of {@link Engine.head}'s headerSets; undefined: the common one) */
  readonly own: PlanSet | null | undefined;
  /** the name was found clean (by the header-name rules) */
  clean: boolean;
}

/** A top-level alternative of a rule's regex, alone, and the requirement id of its literals. */
interface Alternative {
  readonly regex: RegExp;
  readonly lits: number;
}

/** Regex rules of a plan sharing one gate (and flags), with their alternation as a prefilter. */
interface RuleGroup {
  readonly gate: CharMask | undefined;
  readonly gateSubs: RegExp | undefined;
  /** alternation of the group's regexes, or undefined for a single rule */
  readonly combined: RegExp | undefined;
  readonly rules: readonly CompiledRule[];
  /** literal prefilter: requirement id holding the literals of every rule of the group (-1: none) */
  readonly lits: number;
  /** requirement id of the group's `requires_any` substrings, folded (-1: none) */
  readonly subsLits: number;
}

/** Rules sharing one transform chain. */
interface Plan {
  readonly chainKey: string;
  /** the chain's last node in the plan set's transform trie (-1: no transform) */
  readonly node: number;
  /**
   * the node whose value the literal prefilter scans for this chain when that value is
   * ASCII: trailing `lowercase` steps are skipped, the scan folds case anyway (-1: the value
   * itself)
   */
  readonly scanNode: number;
  /** union of the character gates of every rule in the plan, when every rule has one */
  readonly gateUnion: CharMask | undefined;
  readonly groups: readonly RuleGroup[];
  readonly detectorRules: readonly CompiledRule[];
  /**
   * What the chain makes of a "stable" value (see {@link STABLE_EXCLUDE}): bit 1 lower-cased,
   * bit 2 whitespace removed; -1 when the chain holds a transform without a known reduction.
   */
  readonly stableVariant: number;
  /**
   * A chain without a known reduction whose transforms are stable-identity ones, case and
   * whitespace steps and {@link REMOVAL_ONLY} ones, and whose every rule is gated: a stable
   * value skips it when the gates fail (removing characters cannot make a gate pass) and
   * otherwise runs it through the transform trie, so it does not take the stable path away
   * from the other chains.
   */
  readonly stableFallback: boolean;
  /**
   * For a {@link stableFallback} chain: the characters without which its removal-only
   * transforms leave a value as it is (the value then gets {@link plainVariant}).
   */
  readonly removalTrigger: CharMask;
  /** the variant of a stable value without {@link removalTrigger} characters (-1: none) */
  readonly plainVariant: number;
  /** only regex groups, each with literals (so a literal scan alone can rule the plan out) */
  readonly litsOnly: boolean;
  /**
   * What lets a group or a detector rule of the plan run, {@link PRE_STRIDE} numbers each:
   * 1 when it has no character gate, the gate's two words, and the requirement ids of its
   * literals and `requires_any` substrings (-1: none). See {@link Walk.mayRun}.
   */
  readonly pre: Int32Array;
}

/** Numbers per group of {@link CompiledRule.valueNeeds}. */
const NEED_STRIDE = 4;

/** How a slot of the literal scan read its string (see Walk.scanInto). */
const SCAN_PLAIN = 0;
const SCAN_SKIPPING = 1;
const SCAN_COMPRESSING = 2;

/** Numbers per entry of {@link Plan.pre}. */
const PRE_STRIDE = 5;

/** Whether the regexes of `rules` can be joined in one alternation (see {@link namesOrRefersToGroups}). */
function combinable(rules: readonly Full[]): boolean {
  return !rules.some((r) => namesOrRefersToGroups(r.regex!.source));
}

/** One regex matching where any of `rules`' regexes does (their flags are alike). */
function alternation(rules: readonly Full[]): RegExp {
  return new RegExp(rules.map((r) => `(?:${r.regex!.source})`).join('|'), rules[0]!.flags);
}

/**
 * The requirement an entry of {@link Plan.pre} at `k` cannot pass without: its literals', else its
 * `requires_any` substrings' (-1: none, the entry may pass on any value).
 */
function entryRequirement(pre: Int32Array, k: number): number {
  return pre[k + 3]! >= 0 ? pre[k + 3]! : pre[k + 4]!;
}

function preEntry(gate: CharMask | undefined, lits: number, subsLits: number): number[] {
  return gate === undefined ? [1, 0, 0, lits, subsLits] : [0, gate.lo, gate.hi, lits, subsLits];
}

/**
 * Every plan that applies to one kind of target, plus the fast path: a value without any
 * "special" character (none that a transform would change, none that a gated rule needs)
 * can only be matched by the ungated rules, all of which then see `lowercase(value)`; one
 * combined regex and the ungated detectors decide whether the full walk is needed.
 */
interface PlanSet {
  /**
   * Short names already found clean by this plan set (see {@link CleanMemo}). The verdict of
   * a value depends only on the value and the compiled rules, so repeating JSON keys and
   * parameter names are inspected once.
   */
  readonly clean: CleanMemo;
  /** slots of this set's memos: fewer for the sets of longer values (headers, paths), bounding memory alike */
  readonly memoSlots: number;
  /** false when a rule of the set depends on the field name (`names:`), so a value alone does not decide */
  readonly memoOk: boolean;
  /**
   * When rules of the set depend on the field name: their distinct `names` patterns (at most
   * {@link MAX_NAME_TESTS}). A value's verdict then depends only on the value and on which of
   * these the field name matches, so one memo per combination ({@link cleanByNames}, indexed
   * by the bits of the patterns that match) decides as `clean` does for the other sets.
   */
  readonly nameTests: readonly RegExp[] | undefined;
  readonly cleanByNames: (CleanMemo | undefined)[];
  /** which of {@link nameTests} each recent field name matches (bounded like the memos) */
  readonly nameBits: Map<string, number>;
  readonly plans: readonly Plan[];
  /** transform trie: chains share their common prefixes; node i applies fn[i] to its parent's value */
  readonly parent: Int32Array;
  readonly fn: readonly Transform[];
  /** signature bits that send a value to the full walk */
  readonly special: CharMask;
  readonly fast: readonly RegExp[];
  /** per fast regex: the requirement id of its rules' literals (-1: none) */
  readonly fastLits: Int32Array;
  /** per fast regex: its alternatives run apart (see CompiledRule.alts), when it has them */
  readonly fastAlts: readonly (readonly Alternative[] | undefined)[];
  readonly fastDetectors: readonly ValueDetector[];
  /** the needs of each fast detector (see CompiledRule.valueNeeds) */
  readonly fastDetectorNeeds: readonly (Int32Array | undefined)[];
  readonly fastOk: boolean;
  /** every plan reduces to a variant on stable values (so the transform trie can be skipped for them) */
  readonly stableOk: boolean;
  /**
   * stable values may hold non-ASCII characters: no chain applies `nfkc` after `lowercase`
   * or `remove_whitespace` (which can un-normalise a normalised value: `e \u0301` without
   * its space composes to `é`)
   */
  readonly stableNonAsciiOk: boolean;
  /**
   * A plan checks the scan of a stable value without its whitespace (variants 2 and 3 of a
   * plan of literals only): the value's first scan makes it too, from the first character
   * of {@link skipTrigger} on (the union of those plans' gates; undefined: from the start).
   */
  readonly skipScan: boolean;
  readonly skipTrigger: CharMask | undefined;
  /**
   * Per literal requirement: the bits of the plans (bit i for plans[i]) with a group or
   * detector that needs it (its literals, else its `requires_any` substrings). A plan that
   * reads the value's own scan (variants 0 and 1, and 4 and 5 of a value without whitespace
   * runs) and is not in {@link openPlans} can only run when the value holds a literal of one
   * of its requirements: the scan ORs the bits of those it finds, and the plans outside them
   * are skipped without looking. Filled in by {@link compileEngine} once every plan set has
   * added its requirements (the registry's final size).
   */
  litPlans: Int32Array;
  /**
   * Plans that may run whatever the value's scan holds: one with a group or detector without
   * a literal requirement, one that reads another scan (variants 2 and 3, a fallback chain);
   * every plan when there are more than 32.
   */
  readonly openPlans: number;
  /** plans of variants 4 and 5: they read the scan with whitespace runs compressed when the value has runs */
  readonly compressPlans: number;
}

interface CompiledExclusion {
  readonly routes: ReadonlySet<string> | undefined;
  readonly paths: readonly ((p: string) => boolean)[] | undefined;
  readonly methods: ReadonlySet<string> | undefined;
  readonly rule: ((id: string, family: Family) => boolean) | undefined;
  readonly target: ((name: string, leaf: string) => boolean) | undefined;
}

/** A compiled engine (immutable). */
export interface Engine {
  readonly options: Omit<EngineOptions, 'rules'>;
  readonly ruleCount: number;
  readonly plansByKind: ReadonlyMap<Kind, PlanSet>;
  /**
   * The plan sets {@link walkHead} reads, looked up once at compile time; `allHeaders`: the
   * rules on every header; `headerSets`: by lowercased header name, the set of a header with
   * rules of its own (those and its own), or null for a header in `skip_headers`.
   */
  readonly head: {
    readonly path: PlanSet | undefined;
    readonly query: PlanSet | undefined;
    readonly queryName: PlanSet | undefined;
    readonly headerName: PlanSet | undefined;
    readonly cookie: PlanSet | undefined;
    readonly cookieName: PlanSet | undefined;
    readonly allHeaders: PlanSet;
    readonly headerSets: ReadonlyMap<string, PlanSet | null>;
  };
  readonly requestRules: readonly CompiledRule[];
  /** the request rules that need no feature (see protocol.ts REQUEST_NEEDS): all a request without any runs */
  readonly unconditionalRules: readonly CompiledRule[];
  /** the features (protocol.ts requestFeatures) some request rule needs */
  readonly headNeeds: number;
  readonly exclusions: readonly CompiledExclusion[];
  readonly protocol: ProtocolSettings;
  readonly freeText: ReadonlySet<string>;
  readonly familyThresholds: ReadonlyMap<Family, number>;
  /** the literal prefilter of every rule (one Aho-Corasick automaton) */
  readonly literals: LiteralScanner;
  /**
   * Per requirement of {@link literals}, the regex that tells whether a hit of the automaton is
   * one with the word boundaries the requirement's regexes ask for (literals.ts confirmOf), or
   * undefined (the hit is enough).
   */
  readonly confirms: readonly (RegExp | undefined)[];
  /**
   * Raw query-string pairs (`name=value` as received, before decoding) whose name and value
   * were both found clean: a pair's verdict depends only on its raw text, so a recurring
   * pair (`limit=20`, `sort=-date`) is neither decoded nor looked up again.
   */
  readonly cleanPairs: CleanMemo;
  /**
   * Header names seen, up to {@link CLEAN_MEMO_ENTRIES} of them (then cleared): each with its
   * own plan set (see headerSets) and whether the name was found clean. Names repeat on every
   * request: one lookup tells both (a memo lookup and a map lookup apiece before).
   */
  readonly headerNames: Map<string, HeaderName>;
}

/** One rule match. `excerpt` is at most 40 characters (redacted for secret-looking targets). */
export interface Match {
  readonly ruleId: string;
  readonly family: Family;
  readonly score: number;
  readonly pack: string;
  readonly monitor: boolean;
  readonly target: string;
  readonly freeText: boolean;
  readonly excerpt: string;
}

export type Decision = 'allow' | 'deny' | 'monitor';

export interface Verdict {
  readonly decision: Decision;
  readonly score: number;
  readonly families: Readonly<Partial<Record<Family, number>>>;
  readonly matches: readonly Match[];
  /** the denial to return (decision deny) or to record (decision monitor) */
  readonly deny: Deny | undefined;
}

function globToTest(p: string): (s: string) => boolean {
  if (p.endsWith('**')) {
    const pre = p.slice(0, -2);
    return (s) => s.startsWith(pre);
  }
  if (p.endsWith('*')) {
    const pre = p.slice(0, -1);
    return (s) => s.startsWith(pre) && !s.slice(pre.length).includes('/');
  }
  return (s) => s === p;
}

function compileExclusion(e: ExclusionSpec): CompiledExclusion {
  const ruleTests: ((id: string, f: Family) => boolean)[] = [];
  for (const r of e.rules ?? []) {
    if (r.endsWith('*')) {
      const pre = r.slice(0, -1);
      ruleTests.push((id) => id.startsWith(pre));
    } else ruleTests.push((id) => id === r);
  }
  for (const f of e.families ?? [])
    ruleTests.push(
      (_id, fam) =>
        fam === f || (f === 'lfi' && fam === 'path_traversal') || (f === 'rce' && fam === 'cmd_injection'),
    );
  const targetTests: ((name: string, leaf: string) => boolean)[] = [];
  for (const t of e.targets ?? []) {
    const lower = t.toLowerCase();
    const colon = lower.indexOf(':');
    if (colon < 0) {
      targetTests.push((_n, leaf) => leaf.toLowerCase() === lower);
      continue;
    }
    const kind = lower.slice(0, colon);
    const field = lower.slice(colon + 1);
    targetTests.push((name, leaf) => {
      const nc = name.indexOf(':');
      const nk = nc < 0 ? name : name.slice(0, nc);
      if (nk !== kind && !(kind === 'args' && /^(?:query|json|form|multipart)$/.test(nk))) return false;
      if (field === '*') return true;
      const nf = (nc < 0 ? '' : name.slice(nc + 1)).toLowerCase();
      return nf === field || leaf.toLowerCase() === field;
    });
  }
  return {
    routes: e.routes && e.routes.length ? new Set(e.routes) : undefined,
    paths: e.paths && e.paths.length ? e.paths.map(globToTest) : undefined,
    methods: e.methods && e.methods.length ? new Set(e.methods.map((m) => m.toUpperCase())) : undefined,
    rule: ruleTests.length ? (id, f) => ruleTests.some((t) => t(id, f)) : undefined,
    target: targetTests.length ? (n, l) => targetTests.some((t) => t(n, l)) : undefined,
  };
}

type Full = CompiledRule & {
  transforms: readonly string[];
  flags: string;
  targets: readonly string[];
  /** literals every match of the regex holds, with their boundary marks (undefined: none derived) */
  litList?: readonly string[];
  /** the `requires_any` substrings, folded */
  subsList?: readonly string[];
};

/** Literals longer than this are cut to their prefix (a smaller automaton scans faster). */
const MAX_LITERAL = 5;

/** The literal sets ("requirements") of an engine's prefilter, shared where equal. */
class LiteralRegistry {
  /** each requirement's literals (without boundary marks: what the automaton looks for) */
  readonly reqs: string[][] = [];
  /** each requirement's {@link confirmOf} regex, when one of its literals has a word boundary */
  readonly confirms: (RegExp | undefined)[] = [];
  private readonly byKey = new Map<string, number>();

  constructor(private readonly enabled: boolean) {}

  /**
   * The id of a literal set (-1 for undefined: no requirement). Literals may carry boundary
   * marks (literals.ts boundedLiterals).
   */
  add(lits: readonly string[] | undefined): number {
    // (an empty literal would be held by every string: no requirement either)
    if (!this.enabled || lits === undefined || lits.length === 0 || lits.some((l) => bare(l) === ''))
      return -1;
    // a prefix of a required literal is required too: shorter literals keep the automaton small
    // (a cut literal loses its closing boundary); a literal keeps a boundary only when every
    // form of it here has it
    const marks = new Map<string, number>();
    for (const m of lits) {
      let l = bare(m);
      let b = marksOf(m);
      if (l.length > MAX_LITERAL) {
        l = l.slice(0, MAX_LITERAL);
        b &= 1;
      }
      const had = marks.get(l);
      marks.set(l, had === undefined ? b : had & b);
    }
    const sorted = [...marks.keys()].sort();
    const marked = sorted.map((l) => withMarks(l, marks.get(l)!));
    const key = marked.join('\u0000');
    let id = this.byKey.get(key);
    if (id === undefined) {
      id = this.reqs.length;
      this.reqs.push(sorted);
      this.confirms.push(confirmOf(marked));
      this.byKey.set(key, id);
    }
    return id;
  }

  /** The union of the literal sets of `rules`, or undefined when one of them has none. */
  union(rules: readonly Full[]): string[] | undefined {
    const out: string[] = [];
    for (const r of rules) {
      if (r.litList === undefined) return undefined;
      out.push(...r.litList);
    }
    return out;
  }
}

/** ASCII characters that make some transform change a value (so the fast path would be wrong). */
const TRANSFORM_TRIGGERS = '%+&\\/*';
const TRIGGER_MASK: CharMask = (() => {
  const m = gateOf(TRANSFORM_TRIGGERS);
  m.hi |= HI_CONTROL | HI_NON_ASCII;
  return m;
})();

/**
 * Values with none of these (ASCII printable, no `%+&\\/*`, no double space) are "stable":
 * every transform except `lowercase` and `remove_whitespace` returns them unchanged, so a
 * chain's result is one of four variants (as is, lower-cased, without whitespace, both).
 */
const STABLE_EXCLUDE: CharMask = (() => {
  const m = gateOf(TRANSFORM_TRIGGERS);
  m.hi |= HI_CONTROL | HI_NON_ASCII | HI_DOUBLE_SPACE;
  return m;
})();

/** {@link STABLE_EXCLUDE} but for non-ASCII characters, which {@link nonAsciiStable} judges. */
const STABLE_EXCLUDE_ASCII: CharMask = { lo: STABLE_EXCLUDE.lo, hi: STABLE_EXCLUDE.hi & ~HI_NON_ASCII };

/** `%` and `&`, which {@link inertPercentAmp} judges in ASCII values. */
const PERCENT_AMP: CharMask = gateOf('%&');

/**
 * Control characters and double spaces, which ASCII values may hold when every control is
 * whitespace (no {@link HI_CONTROL_OTHER}).
 */
const HI_WS_RUNS = HI_CONTROL | HI_DOUBLE_SPACE;

/** {@link STABLE_EXCLUDE_ASCII} but for `%` and `&`, controls and double spaces (judged per value). */
const STABLE_EXCLUDE_PRECISE: CharMask = {
  lo: STABLE_EXCLUDE_ASCII.lo & ~PERCENT_AMP.lo,
  hi: STABLE_EXCLUDE_ASCII.hi & ~HI_WS_RUNS,
};

/**
 * Transforms that return a stable value unchanged: URL decoding (no `%`, no `+`), entity and
 * JS decoding (no `&`, no `\\`), NFKC (ASCII only), NUL removal (no controls), comment
 * replacement and path normalisation (no `/`, `\\`, no non-ASCII slash look-alikes), whitespace
 * compression (no control whitespace, no double space).
 */
const STABLE_IDENTITY = new Set([
  'url_decode',
  'url_decode_once',
  'url_decode_keep_plus',
  'html_entity_decode',
  'js_decode',
  'nfkc',
  'remove_nulls',
  'replace_comments',
  'normalize_path',
  'path_last_segment',
]);

/**
 * Transforms that only delete characters, never add or change one (`shell_unquote` drops
 * splicing quotes, backslashes, carets and empty expansions): the signature of their output is
 * within their input's, so a character gate that fails before them fails after them.
 */
const REMOVAL_ONLY = new Map<string, string>([['shell_unquote', `'"\\$\`^`]]);

/** Whether a chain's transforms each either leave a stable value as it is, fold case or whitespace, or only remove characters. */
function stableOrRemoval(transforms: readonly string[]): boolean {
  return transforms.every(
    (t) =>
      STABLE_IDENTITY.has(t) ||
      REMOVAL_ONLY.has(t) ||
      t === 'lowercase' ||
      t === 'remove_whitespace' ||
      t === 'compress_whitespace',
  );
}

/** The variant a chain makes of a stable value (bit 1 lower-cased, bit 2 without whitespace), or -1. */
function stableVariantOf(transforms: readonly string[]): number {
  let v = 0;
  for (const t of transforms) {
    if (t === 'lowercase') v |= 1;
    else if (t === 'remove_whitespace') v |= 2;
    else if (t === 'compress_whitespace') v |= 4;
    else if (!STABLE_IDENTITY.has(t)) return -1;
  }
  // without whitespace, compressing it changes nothing (before or after the removal)
  return (v & 2) !== 0 ? v & 3 : v;
}

/** Most distinct `names` patterns in a plan set for its values to be remembered (one memo per combination). */
const MAX_NAME_TESTS = 3;

/** Transforms that change even a value without special characters. */
const NOT_IDENTITY_ON_PLAIN = new Set(['remove_whitespace', 'cmd_line']);

function buildPlanSet(rules: readonly Full[], lits: LiteralRegistry, memoSlots: number): PlanSet {
  const byChain = new Map<string, Full[]>();
  for (const r of rules) {
    const key = r.transforms.join(',');
    const list = byChain.get(key) ?? [];
    list.push(r);
    byChain.set(key, list);
  }
  const plans: Plan[] = [];
  const parents: number[] = [];
  const fns: Transform[] = [];
  const trie = new Map<string, number>();
  for (const [chainKey, list] of byChain) {
    let node = -1;
    const names = list[0]!.transforms;
    for (let i = 0; i < names.length; i++) {
      const key = names.slice(0, i + 1).join(',');
      let idx = trie.get(key);
      if (idx === undefined) {
        idx = fns.length;
        fns.push(TRANSFORMS[names[i]!]!);
        parents.push(node);
        trie.set(key, idx);
      }
      node = idx;
    }
    const groupsByKey = new Map<string, Full[]>();
    for (const r of list.filter((x) => x.regex)) {
      const key = `${r.gateKey ?? ''}\u0000${r.flags}`;
      const g = groupsByKey.get(key) ?? [];
      g.push(r);
      groupsByKey.set(key, g);
    }
    const groups: RuleGroup[] = [...groupsByKey.values()].map((g) => ({
      gate: g[0]!.gate,
      gateSubs: g[0]!.gateSubs,
      combined: g.length > 1 && combinable(g) ? alternation(g) : undefined,
      rules: g,
      lits: lits.add(lits.union(g)),
      subsLits: lits.add(g[0]!.subsList),
    }));
    let gateUnion: CharMask | undefined = { lo: 0, hi: 0 };
    for (const r of list) {
      if (!r.gate) {
        gateUnion = undefined;
        break;
      }
      gateUnion.lo |= r.gate.lo;
      gateUnion.hi |= r.gate.hi;
    }
    let scanNode = node;
    while (scanNode >= 0 && fns[scanNode] === lowercase) scanNode = parents[scanNode]!;
    plans.push({
      chainKey,
      node,
      scanNode,
      gateUnion,
      groups,
      detectorRules: list.filter((r) => r.detector),
      stableVariant: stableVariantOf(names),
      stableFallback: stableVariantOf(names) < 0 && gateUnion !== undefined && stableOrRemoval(names),
      removalTrigger: gateOf(names.map((t) => REMOVAL_ONLY.get(t) ?? '').join('')),
      plainVariant: stableVariantOf(names.filter((t) => !REMOVAL_ONLY.has(t))),
      litsOnly: list.every((r) => r.regex !== undefined) && groups.every((g) => g.lits >= 0),
      pre: Int32Array.from([
        // a group whose rules' own literals are confirmed by their word boundaries (see
        // Walk.holds) has one entry per rule: its own requirement, the union of theirs, is
        // mostly not (`or\b` of one rule beside `order` of another)
        ...groups.flatMap((g) =>
          g.rules.length > 1 && g.rules.some((r) => r.lits! >= 0 && lits.confirms[r.lits!] !== undefined)
            ? g.rules.flatMap((r) => preEntry(g.gate, r.lits!, g.subsLits))
            : preEntry(g.gate, g.lits, g.subsLits),
        ),
        ...list.filter((r) => r.detector).flatMap((r) => preEntry(r.gate, -1, -1)),
      ]),
    });
  }
  const special = gateOf(TRANSFORM_TRIGGERS);
  special.hi |= HI_CONTROL | HI_NON_ASCII | HI_DOUBLE_SPACE;
  for (const r of rules) {
    if (!r.gate) continue;
    special.lo |= r.gate.lo;
    special.hi |= r.gate.hi;
  }
  const ungated = rules.filter((r) => !r.gate);
  const fastOk = !ungated.some((r) => r.transforms.some((t) => NOT_IDENTITY_ON_PLAIN.has(t)));
  // each rule with literals on its own, run only when one of its literals occurred (one common
  // literal, `or` in `words`, would otherwise run the alternation of every rule); the rules
  // without literals in one combined regex per flags
  const fastList: { regex: RegExp; lits: number; alts?: readonly Alternative[] | undefined }[] = [];
  const byFlags = new Map<string, Full[]>();
  for (const r of ungated) {
    if (!r.regex) continue;
    const id = lits.add(r.litList);
    if (id >= 0) {
      fastList.push({ regex: r.regex, lits: id, alts: r.alts });
      continue;
    }
    const list = byFlags.get(r.flags) ?? [];
    list.push(r);
    byFlags.set(r.flags, list);
  }
  for (const list of byFlags.values()) {
    if (list.length === 1 || !combinable(list))
      for (const r of list) fastList.push({ regex: r.regex!, lits: -1 });
    else fastList.push({ regex: alternation(list), lits: -1 });
  }
  const fast = fastList.map((f) => f.regex);
  const fastLits = Int32Array.from(fastList.map((f) => f.lits));
  const fastAlts = fastList.map((f) => f.alts);
  const fastDetectors = ungated.filter((r) => r.detector).map((r) => r.detector!);
  const fastDetectorNeeds = ungated.filter((r) => r.detector).map((r) => r.valueNeeds);
  // (the compiled `names` patterns have flag `i` only: testing them keeps no state)
  const nameTests: RegExp[] = [];
  for (const r of rules)
    if (
      r.names !== undefined &&
      !nameTests.some((x) => x.source === r.names!.source && x.flags === r.names!.flags)
    )
      nameTests.push(r.names);
  const skipPlans = plans.filter((p) => (p.stableVariant === 2 || p.stableVariant === 3) && p.litsOnly);
  let skipTrigger: CharMask | undefined = { lo: 0, hi: 0 };
  for (const p of skipPlans) {
    if (p.gateUnion === undefined) {
      skipTrigger = undefined;
      break;
    }
    skipTrigger.lo |= p.gateUnion.lo;
    skipTrigger.hi |= p.gateUnion.hi;
  }
  // the plans that look whatever the value's scan holds (see PlanSet.litPlans)
  let openPlans = plans.length > 32 ? -1 : 0;
  let compressPlans = 0;
  plans.forEach((p, i) => {
    if (i >= 32) return;
    const bit = 1 << i;
    const sv = p.stableVariant;
    if (sv < 0 || sv === 2 || sv === 3) openPlans |= bit;
    else if (sv >= 4) compressPlans |= bit;
    for (let k = 0; k < p.pre.length; k += PRE_STRIDE) if (entryRequirement(p.pre, k) < 0) openPlans |= bit;
  });
  return {
    clean: new CleanMemo(memoSlots),
    memoSlots,
    memoOk: nameTests.length === 0,
    nameTests: nameTests.length > 0 && nameTests.length <= MAX_NAME_TESTS ? nameTests : undefined,
    cleanByNames: [],
    nameBits: new Map<string, number>(),
    plans,
    parent: Int32Array.from(parents),
    fn: fns,
    special,
    fast,
    fastLits,
    fastAlts,
    fastDetectors,
    fastDetectorNeeds,
    fastOk,
    stableOk: plans.every((p) => p.stableVariant >= 0 || p.stableFallback),
    stableNonAsciiOk: rules.every((r) => {
      const n = r.transforms.lastIndexOf('nfkc');
      return n < 0 || r.transforms.slice(0, n).every((t) => t !== 'lowercase' && t !== 'remove_whitespace');
    }),
    skipScan: skipPlans.length > 0,
    skipTrigger,
    litPlans: new Int32Array(0),
    openPlans,
    compressPlans,
  };
}

/** Fill in {@link PlanSet.litPlans} of `set` for a registry of `size` requirements. */
function finishPlanSet(set: PlanSet, size: number): void {
  const bits = new Int32Array(size);
  set.plans.forEach((p, i) => {
    if (i >= 32) return;
    for (let k = 0; k < p.pre.length; k += PRE_STRIDE) {
      const req = entryRequirement(p.pre, k);
      if (req >= 0) bits[req]! |= 1 << i;
    }
  });
  set.litPlans = bits;
}

function contentTypeMatcher(list: readonly string[]): (mt: string) => boolean {
  const exact = new Set<string>();
  const tests: ((mt: string) => boolean)[] = [];
  for (const raw of list) {
    const t = raw.toLowerCase().trim();
    if (t === '*/*') tests.push(() => true);
    else if (t.endsWith('/*')) tests.push((mt) => mt.startsWith(t.slice(0, -1)));
    else if (t.includes('/*+')) {
      const [pre, suf] = t.split('/*');
      tests.push((mt) => mt.startsWith(`${pre}/`) && mt.endsWith(suf!));
    } else exact.add(t);
  }
  return (mt) => exact.has(mt) || tests.some((f) => f(mt));
}

/** Compile the engine: select rules by paranoia level, pack mode and disabled ids; precompile everything. */
export function compileEngine(opts: EngineOptions): Engine {
  const disabled = opts.disabledRules.map((r) =>
    r.endsWith('*') ? (id: string) => id.startsWith(r.slice(0, -1)) : (id: string) => id === r,
  );
  const lits = new LiteralRegistry(opts.prefilter !== false);
  const selected: Full[] = [];
  for (const r of opts.rules) {
    if (r.paranoia > opts.paranoiaLevel) continue;
    const mode = opts.packs[r.pack] ?? 'enforce';
    if (mode === 'off') continue;
    if (disabled.some((d) => d(r.id))) continue;
    const base = {
      id: r.id,
      pack: r.pack,
      family: r.family,
      score: r.score,
      monitor: mode === 'monitor',
      transforms: r.transforms,
      flags: r.flags ?? '',
      targets: r.targets,
      ...(r.names !== undefined ? { names: new RegExp(r.names, 'i') } : {}),
      ...(r.requires !== undefined ? { gate: gateOf(r.requires), gateKey: r.requires } : {}),
      ...(r.requiresAny !== undefined
        ? {
            gateSubs: literalAlternation(r.requiresAny),
            gateKey: `${r.requires ?? ''}\u0001${r.requiresAny.join('\u0001')}`,
          }
        : {}),
    };
    if (r.regex !== undefined) {
      const litList = boundedLiterals(r.regex, r.flags ?? '');
      const alts = alternativesOf(r.regex, r.flags ?? '', lits);
      selected.push({
        ...base,
        regex: new RegExp(r.regex, r.flags ?? ''),
        ...(litList !== undefined ? { litList } : {}),
        lits: lits.add(litList),
        ...(alts !== undefined ? { alts } : {}),
        ...(r.requiresAny !== undefined ? { subsList: r.requiresAny.map(foldLiteral) } : {}),
      });
    } else if (r.detector !== undefined && VALUE_DETECTORS[r.detector]) {
      // the groups' substrings as literal requirements (without the prefilter, or with a
      // group the automaton cannot take, the detector runs on every value as before)
      const needs = VALUE_DETECTOR_NEEDS[r.detector];
      const ids = needs?.map((n) => lits.add(n.substrings.map(foldLiteral)));
      const valueNeeds =
        needs === undefined || ids!.some((id, k) => id < 0 && needs[k]!.substrings.length > 0)
          ? undefined
          : Int32Array.from(
              needs.flatMap((n, k) => {
                const g = gateOf(n.chars);
                return [ids![k]!, g.lo, g.hi, n.lacks];
              }),
            );
      selected.push({
        ...base,
        detector: VALUE_DETECTORS[r.detector],
        lits: -1,
        ...(valueNeeds !== undefined ? { valueNeeds } : {}),
      });
    } else if (r.detector !== undefined && REQUEST_DETECTORS[r.detector])
      selected.push({
        ...base,
        request: REQUEST_DETECTORS[r.detector],
        bodyAware: BODY_AWARE_DETECTORS.has(r.detector),
        needs: REQUEST_NEEDS[r.detector] ?? 0,
      });
  }
  // one object shape for every rule: the walk reads their fields without polymorphic lookups
  for (let i = 0; i < selected.length; i++) selected[i] = uniformRule(selected[i]!);
  const byKind = new Map<Kind, Full[]>();
  const headerAll: Full[] = [];
  const headerNamed = new Map<string, Full[]>();
  const requestRules: CompiledRule[] = [];
  for (const r of selected) {
    if (r.request) {
      requestRules.push(r);
      continue;
    }
    const kinds = new Set<Kind>();
    for (const t of r.targets) {
      if (t === 'request') continue;
      if (t.startsWith('headers:')) {
        const h = t.slice(8);
        const list = headerNamed.get(h) ?? [];
        list.push(r);
        headerNamed.set(h, list);
        continue;
      }
      for (const k of SELECTOR_KINDS[t] ?? []) kinds.add(k);
    }
    for (const k of kinds) {
      if (k === 'header') headerAll.push(r);
      else {
        const list = byKind.get(k) ?? [];
        list.push(r);
        byKind.set(k, list);
      }
    }
  }
  const plansByKind = new Map<Kind, PlanSet>();
  for (const [k, list] of byKind)
    plansByKind.set(k, buildPlanSet(list, lits, k === 'path' ? LONG_MEMO_SLOTS : MEMO_SLOTS));
  const headerPlans = new Map<string, PlanSet>();
  headerPlans.set('*', buildPlanSet(headerAll, lits, LONG_MEMO_SLOTS));
  for (const [h, list] of headerNamed)
    headerPlans.set(
      h,
      buildPlanSet([...headerAll, ...list.filter((r) => !headerAll.includes(r))], lits, LONG_MEMO_SLOTS),
    );
  const literals = buildScanner(lits.reqs);
  for (const set of [...plansByKind.values(), ...headerPlans.values()]) finishPlanSet(set, literals.size);
  if (litScan.hit.length < literals.size * 8) {
    litScan.hit = new Int32Array(literals.size * 8);
    litScan.confirmed = new Int32Array(literals.size * 8);
  }
  const { rules: _rules, ...rest } = opts;
  void _rules;
  const skipHeaders = new Set(opts.skipHeaders.map((h) => h.toLowerCase()));
  const headerSets = new Map<string, PlanSet | null>();
  for (const h of skipHeaders) headerSets.set(h, null);
  for (const [h, set] of headerPlans) if (h !== '*') headerSets.set(h, set);
  return {
    options: rest,
    ruleCount: selected.length,
    plansByKind,
    head: {
      path: plansByKind.get('path'),
      query: plansByKind.get('query'),
      queryName: plansByKind.get('query_name'),
      headerName: plansByKind.get('header_name'),
      cookie: plansByKind.get('cookie'),
      cookieName: plansByKind.get('cookie_name'),
      allHeaders: headerPlans.get('*')!,
      headerSets,
    },
    requestRules,
    unconditionalRules: requestRules.filter((r) => r.needs === 0),
    headNeeds: requestRules.reduce((n, r) => n | r.needs!, 0),
    exclusions: opts.exclusions.map(compileExclusion),
    protocol: {
      // tokens only: a request method found here needs no token test (protocol.ts method_allowlist)
      allowedMethods: new Set(opts.allowedMethods.map((m) => m.toUpperCase()).filter((m) => TOKEN.test(m))),
      allowedContentTypes: contentTypeMatcher(opts.allowedContentTypes),
      allowedCharsets: new Set(opts.allowedCharsets.map((c) => c.toLowerCase())),
      maxHeaders: opts.maxHeaders,
      maxArgs: opts.maxArgs,
      maxRanges: opts.maxRanges,
    },
    freeText: new Set(opts.freeTextFields.map((f) => f.toLowerCase())),
    familyThresholds: new Map(Object.entries(opts.familyThresholds) as [Family, number][]),
    literals,
    confirms: lits.confirms,
    cleanPairs: new CleanMemo(MEMO_SLOTS),
    headerNames: new Map(),
  };
}

/** `r` with every field of {@link Full} present (undefined when absent), always in the same order. */
function uniformRule(r: Full): Full {
  return {
    id: r.id,
    pack: r.pack,
    family: r.family,
    score: r.score,
    monitor: r.monitor,
    names: r.names,
    regex: r.regex,
    detector: r.detector,
    request: r.request,
    bodyAware: r.bodyAware,
    needs: r.needs,
    gate: r.gate,
    gateKey: r.gateKey,
    gateSubs: r.gateSubs,
    lits: r.lits,
    alts: r.alts,
    subsLits: r.subsLits,
    valueNeeds: r.valueNeeds,
    transforms: r.transforms,
    flags: r.flags,
    targets: r.targets,
    litList: r.litList,
    subsList: r.subsList,
  };
}

/**
 * The alternatives of a rule's regex with their requirement ids (see {@link CompiledRule.alts}),
 * when the prefilter is on and they are worth running apart: at least two requirements.
 */
function alternativesOf(source: string, flags: string, lits: LiteralRegistry): Alternative[] | undefined {
  const parts = alternativeLiterals(source, flags);
  if (parts === undefined) return undefined;
  const alts = parts.map((p) => ({ regex: new RegExp(p.source, flags), lits: lits.add(p.literals) }));
  if (alts.some((a) => a.lits < 0) || new Set(alts.map((a) => a.lits)).size < 2) return undefined;
  return alts;
}

/** Alternatives run apart at most: a value holding the literals of more gets the whole regex once. */
const MAX_ALTERNATIVES_APART = 3;

function foldLiteral(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) out += String.fromCharCode(foldCode(s.charCodeAt(i)));
  return out;
}

/** What the request walk needs to know about the request (besides the values). */
export interface RequestScope {
  readonly method: string;
  /** normalised path, for path-scoped exclusions */
  readonly path: string;
  readonly route: string;
}

function excerptOf(value: string, at: number, name: string, leaf: string): string {
  // the audit line's `path` redacts the same names: a value redacted there is not written here
  if (SECRET_NAME.test(leaf) || name.startsWith('cookie:')) return '[redacted]';
  const start = Math.max(0, Math.min(at, value.length - 40));
  // eslint-disable-next-line no-control-regex
  return value.slice(start, start + 40).replace(/[\x00-\x1f\x7f]/g, ' ');
}

/**
 * Scratch space for the transformed values of the value being inspected, one slot per node
 * of the plan set's transform trie; a slot is valid while its stamp equals the current
 * generation. Module-level: inspection is synchronous and never re-entered.
 */
const scratch = {
  gen: 0,
  stamp: new Int32Array(64),
  vals: new Array<string>(64).fill(''),
  lo: new Int32Array(64),
  hi: new Int32Array(64),
};
/**
 * Literal-prefilter scans of the value being inspected: the scan in slot `k` (one slot per
 * distinct transformed string) of an engine with `size` requirements holds requirement `r`'s
 * literals when `hit[k * size + r]` equals the slot's stamp. Each scan takes a fresh stamp, so
 * nothing is cleared between values. `confirmed[k * size + r]` is the stamp when the slot's
 * string was found to hold one with its word boundaries (Engine.confirms), minus the stamp when
 * not.
 */
const litScan = { hit: new Int32Array(0), confirmed: new Int32Array(0), stamp: 0 };

/** signature of a transformed value being computed */
const nodeMask: CharMask = { lo: 0, hi: 0 };
/**
 * Transform calls of the current value: chains that differ only in identity steps (a
 * `js_decode` without a backslash …) reach the same transform with the same input, and the
 * transforms are pure, so each (transform, input) pair runs once per value.
 */
const calls = {
  n: 0,
  fn: new Array<Transform | undefined>(64).fill(undefined),
  input: new Array<string>(64).fill(''),
  out: new Array<string>(64).fill(''),
  lo: new Int32Array(64),
  hi: new Int32Array(64),
};

function beginValue(nodes: number): void {
  if (scratch.stamp.length < nodes) {
    scratch.stamp = new Int32Array(nodes * 2);
    scratch.vals = new Array<string>(nodes * 2).fill('');
    scratch.lo = new Int32Array(nodes * 2);
    scratch.hi = new Int32Array(nodes * 2);
  }
  if (calls.fn.length < nodes) {
    calls.fn = new Array<Transform | undefined>(nodes * 2).fill(undefined);
    calls.input = new Array<string>(nodes * 2).fill('');
    calls.out = new Array<string>(nodes * 2).fill('');
    calls.lo = new Int32Array(nodes * 2);
    calls.hi = new Int32Array(nodes * 2);
  }
  calls.n = 0;
  scratch.gen = (scratch.gen + 1) | 0;
  if (scratch.gen === 0) {
    scratch.stamp.fill(-1);
    scratch.gen = 1;
  }
}

/**
 * The value of trie node `i` for the value `v` (signature `vm`), with its signature in
 * `scratch.lo[i]`/`scratch.hi[i]`: a transform that returned its input unchanged keeps its
 * parent's signature, so each distinct string is scanned once.
 */
function nodeValue(set: PlanSet, i: number, v: string, vm: CharMask): string {
  if (scratch.stamp[i] === scratch.gen) return scratch.vals[i]!;
  const p = set.parent[i]!;
  const input = p < 0 ? v : nodeValue(set, p, v, vm);
  const f = set.fn[i]!;
  scratch.stamp[i] = scratch.gen;
  for (let k = 0; k < calls.n; k++) {
    if (calls.fn[k] === f && calls.input[k] === input) {
      scratch.vals[i] = calls.out[k]!;
      scratch.lo[i] = calls.lo[k]!;
      scratch.hi[i] = calls.hi[k]!;
      return calls.out[k]!;
    }
  }
  const r = f(input);
  scratch.vals[i] = r;
  if (r === input) {
    scratch.lo[i] = p < 0 ? vm.lo : scratch.lo[p]!;
    scratch.hi[i] = p < 0 ? vm.hi : scratch.hi[p]!;
  } else {
    charMask(r, nodeMask);
    scratch.lo[i] = nodeMask.lo;
    scratch.hi[i] = nodeMask.hi;
  }
  const k = calls.n++;
  calls.fn[k] = f;
  calls.input[k] = input;
  calls.out[k] = r;
  calls.lo[k] = scratch.lo[i]!;
  calls.hi[k] = scratch.hi[i]!;
  return r;
}

/**
 * `lowercase(v)` for a value of signature `vm`: an ASCII value without upper case is its own
 * lower case, and one with upper case needs no test for it.
 */
function lowerOf(v: string, vm: CharMask): string {
  if ((vm.hi & HI_NON_ASCII) !== 0) return lowercase(v);
  return (vm.hi & HI_UPPER) === 0 ? v : v.toLowerCase();
}

/** Overlap of the windows a long value is judged in (see {@link execIn}). */
const MAX_WINDOW_OVERLAP = 1024;

/**
 * `re.exec(t)`, where a `t` longer than `max` (`max_value_length`) is judged in windows of
 * `max` characters that overlap by an eighth of it (at most {@link MAX_WINDOW_OVERLAP}): a
 * regex never sees more than `max` characters, and a match shorter than the overlap lies in
 * one window wherever it is. The match index is into `t`.
 */
function execIn(re: RegExp, t: string, max: number): RegExpExecArray | null {
  if (t.length <= max) return re.exec(t);
  const m = firstInWindows(t, max, (w, at) => {
    const r = re.exec(w);
    if (r === null) return undefined;
    r.index += at;
    return r;
  });
  return m ?? null;
}

/** A value detector on `t` the way {@link execIn} runs a regex; the evidence offset is into `t`. */
function detectIn(d: ValueDetector, t: string, max: number, lacks = 0): Evidence | undefined {
  // (what the whole value lacks, each window lacks)
  if (t.length <= max) return d(t, lacks);
  return firstInWindows(t, max, (w, at) => {
    const ev = d(w, lacks);
    return ev === undefined || at === 0 ? ev : { at: ev.at + at, note: ev.note };
  });
}

/** The first verdict of `judge` over the windows of `t` (see {@link execIn}), from the start. */
function firstInWindows<T>(
  t: string,
  max: number,
  judge: (w: string, at: number) => T | undefined,
): T | undefined {
  const step = max - Math.min(MAX_WINDOW_OVERLAP, max >> 3);
  for (let at = 0; ; at += step) {
    const r = judge(t.slice(at, at + max), at);
    if (r !== undefined || at + max >= t.length) return r;
  }
}

/** Names and values up to this length are remembered when clean. */
const CLEAN_MEMO_MAX_LENGTH = 64;
/** Header values and paths up to this length are remembered when clean. */
const CLEAN_MEMO_MAX_HEADER = 256;
/** Field names whose `names` tests are remembered per plan set before they are cleared. */
const CLEAN_MEMO_ENTRIES = 1024;
/**
 * Slots of a clean-value memo of names and values, and of header values and paths (bounds
 * memory: 4096 × 64 or 1024 × 256 characters per memo at worst).
 */
const MEMO_SLOTS = 4096;
const LONG_MEMO_SLOTS = 1024;

/**
 * Values sliced from a string up to this long are remembered as they are: a slot then holds
 * at most this many characters.
 */
const COPY_ABOVE = 4 * CLEAN_MEMO_MAX_LENGTH;

/**
 * Values found clean, in a two-way set-associative cache: a value has two neighbouring
 * slots, by a hash of its length and five of its code units, and the pair keeps the two
 * values last put there (the newer first), each with its hash. Looking a value up is two
 * comparisons and remembering one two stores: no growth, no clearing. A value that never
 * repeats (an id, free text) only evicts the older value of its own pair, so values that do
 * recur, only less often than a memo of a bounded size cleared when full would keep them
 * (dates, categories, enum values), mostly stay. The comparison is of the whole value, after
 * the hashes: values of a pair mostly have the same length (`merchant=…%20123`), and V8
 * compares a slice of a longer string (every query value of 13 characters or more) with
 * another string in a runtime call, several times the cost of comparing two numbers. A
 * collision only costs a miss.
 */
class CleanMemo {
  private readonly slots: string[];
  private readonly hashes: Int32Array;
  /** 32 minus the bits of a slot number */
  private readonly shift: number;

  /** `size`: a power of two */
  constructor(size: number) {
    this.slots = new Array<string>(size).fill('');
    this.hashes = new Int32Array(size);
    this.shift = Math.clz32(size) + 1;
  }

  /**
   * The hash of `v` (not empty), whose top bits pick its pair: a multiplicative hash of its
   * length and five of its code units (the first and the last four, where ids, counters and
   * dates differ: `2025-01-05` and `2025-01-15`, `meals-12` and `meals-42`, `page=1123` and
   * `page=2123` then mostly land in different pairs instead of evicting each other). Values
   * that differ in a code unit the hash reads do not make the memo compare them: with the
   * last two units only, the values of a query pair that end in a counter (`…%20123`) matched
   * by hash about three times per request of the bench, each a string comparison.
   */
  hashOf(v: string): number {
    const n = v.length;
    const key =
      n ^
      (v.charCodeAt(0) << 7) ^
      (v.charCodeAt(n - 1) << 21) ^
      (n > 1 ? v.charCodeAt(n - 2) * 0x10001 : 0) ^
      (n > 3 ? Math.imul(v.charCodeAt(n - 3), 0x2c1b3c6d) ^ Math.imul(v.charCodeAt(n - 4), 0x297a2d39) : 0);
    return Math.imul(key, 0x9e3779b1);
  }

  /** Whether `v`, of hash `h` ({@link hashOf}), is remembered. */
  holds(h: number, v: string): boolean {
    const slot = (h >>> this.shift) & ~1;
    return (
      (this.hashes[slot] === h && this.slots[slot] === v) ||
      (this.hashes[slot + 1] === h && this.slots[slot + 1] === v)
    );
  }

  /**
   * Remember `v`, of hash `h`, in its pair (the older value of the pair goes). With `copy`,
   * a copy is kept: `v` may be a slice of a much longer string (a value of a 16 KB query
   * string or of a form body), which V8 keeps whole while the slice lives, so remembering
   * slices would let a memo hold megabytes instead of its short strings. (Values from
   * `JSON.parse` are strings of their own.)
   */
  put(h: number, v: string, copy: boolean): void {
    const slot = (h >>> this.shift) & ~1;
    this.slots[slot + 1] = this.slots[slot]!;
    this.hashes[slot + 1] = this.hashes[slot]!;
    this.slots[slot] = copy ? ownString(v) : v;
    this.hashes[slot] = h;
  }
}

/**
 * The memo of a plan set whose rules depend on the field name, for the field `leaf`: the one
 * of the values judged with the same `names` patterns matching (rules only see the name
 * through `names.test(leaf)`).
 */
function cleanForName(set: PlanSet, tests: readonly RegExp[], leaf: string, copy: boolean): CleanMemo {
  // field names repeat (and were just hashed by the name memo): test each once
  const cache = leaf.length <= CLEAN_MEMO_MAX_LENGTH;
  let bits = cache ? set.nameBits.get(leaf) : undefined;
  if (bits === undefined) {
    bits = 0;
    for (let i = 0; i < tests.length; i++) if (tests[i]!.test(leaf)) bits |= 1 << i;
    if (cache) {
      if (set.nameBits.size >= CLEAN_MEMO_ENTRIES) set.nameBits.clear();
      // (a copy of a slice: see CleanMemo.put)
      set.nameBits.set(copy ? ownString(leaf) : leaf, bits);
    }
  }
  return (set.cleanByNames[bits] ??= new CleanMemo(set.memoSlots));
}

/** A target's path: a field name or path, none (`undefined`), or the current JSON path (`null`). */
type Path = string | undefined | null;

/** Scratch space of {@link Walk}: per value, so one set serves every walk. */
const walkScratch = {
  mask: { lo: 0, hi: 0 } as CharMask,
  tmask: { lo: 0, hi: 0 } as CharMask,
  variants: ['', '', '', '', '', ''],
  scanStr: [] as string[],
  scanMode: [] as number[],
  scanStamp: [] as number[],
  jsonSegs: [] as (string | number)[],
};

/** Accumulates matches for one request. */
class Walk {
  readonly matches: Match[] = [];
  /** rule and target pairs already matched (created on the first match) */
  private seen: Set<string> | undefined;
  /** findings so far, before exclusions (a value that added none is clean) */
  found = 0;
  // scratch of the value being inspected, shared by every walk (inspection is synchronous
  // and never re-entered)
  readonly mask = walkScratch.mask;
  readonly tmask = walkScratch.tmask;
  /** the four variants of a stable value (see {@link STABLE_EXCLUDE}) */
  readonly variants = walkScratch.variants;
  /** strings of the current value scanned by the literal prefilter (slot k), with their stamps */
  private readonly scanStr = walkScratch.scanStr;
  /** how slot k scanned its string: as it is, without whitespace, or with whitespace runs compressed (SCAN_*) */
  private readonly scanMode = walkScratch.scanMode;
  readonly scanStamp = walkScratch.scanStamp;
  private nScan = 0;
  /**
   * The values being inspected may be slices of a string longer than {@link COPY_ABOVE} (a
   * query string, a cookie header, a form body): the memos keep copies of them (see
   * {@link CleanMemo.put}). JSON strings and header fields are strings of their own.
   */
  copyClean = false;
  /** the JSON body nests deeper than {@link MAX_JSON_DEPTH} (see {@link walkJson}) */
  jsonTooDeep = false;
  /** a JSON object member `prototype` of a member `constructor` (see {@link walkMembers}) */
  prototypePath = false;
  /** the body held more values than `max_args`: the rest was not inspected (proto-151) */
  truncated = false;
  /** every `%` of the target starts a valid escape (see {@link walkHead}, RequestFacts.targetEscapesValid) */
  targetEscapesValid = false;
  /** the path (before `?`) holds a `%`, when {@link walkHead} read it (RequestFacts.pathPercent) */
  pathPercent: boolean | undefined = undefined;
  /** the parts of the query, as {@link countArgs} counts them, when {@link walkHead} read them all (else -1) */
  queryArgs = -1;
  /** the path of the JSON value being inspected (see {@link walkJson}) */
  readonly jsonSegs = walkScratch.jsonSegs;
  jsonLen = 0;
  /** what the literal prefilter scans for the plan being run: its value, or one equal to it but for case */
  private scanned = '';

  /** `max_value_length`: what a regex or detector sees at a time (see {@link execIn}) */
  private readonly max: number;

  constructor(
    readonly engine: Engine,
    readonly scope: RequestScope,
  ) {
    this.max = engine.options.maxValueLength;
  }

  /** The target name: `kind`, or `kind:path` (for {@link JSON_PATH}, the current JSON path). */
  nameOf(kind: string, path: Path): string {
    if (path === undefined) return kind;
    return `${kind}:${path === JSON_PATH ? this.jsonPath() : path}`;
  }

  /** `items[0].name`: keys joined by `.` (none before the first), indexes in brackets. */
  jsonPath(): string {
    let p = '';
    for (let i = 0; i < this.jsonLen; i++) {
      const seg = this.jsonSegs[i]!;
      if (typeof seg === 'number') p = `${p}[${seg}]`;
      else p = p === '' ? seg : `${p}.${seg}`;
    }
    return p;
  }

  excluded(ruleId: string, family: Family, name: string, leaf: string): boolean {
    for (const e of this.engine.exclusions) {
      if (e.routes && !e.routes.has(this.scope.route)) continue;
      if (e.methods && !e.methods.has(this.scope.method)) continue;
      if (e.paths && !e.paths.some((p) => p(this.scope.path))) continue;
      if (e.rule && !e.rule(ruleId, family)) continue;
      if (e.target && !e.target(name, leaf)) continue;
      return true;
    }
    return false;
  }

  /**
   * Whether values of the field `src` are judged more leniently than those of `dst` on this
   * request: `src` is a free-text field and `dst` is not, or an exclusion that applies here
   * names `src` (as `json:src` or by field name) but not `dst`.
   */
  laxerField(src: string, dst: string): boolean {
    const e = this.engine;
    if (e.freeText.has(src.toLowerCase()) && !e.freeText.has(dst.toLowerCase())) return true;
    for (const x of e.exclusions) {
      if (!x.target) continue;
      if (x.routes && !x.routes.has(this.scope.route)) continue;
      if (x.methods && !x.methods.has(this.scope.method)) continue;
      if (x.paths && !x.paths.some((p) => p(this.scope.path))) continue;
      if (x.target(`json:${src}`, src) && !x.target(`json:${dst}`, dst)) return true;
    }
    return false;
  }

  /**
   * Whether a JSON value judged under the field `from` could fare worse under the field `to`:
   * `from` is laxer (see {@link laxerField}), or a rule that depends on the field name
   * (`names:`) runs on `to` and not on `from`.
   */
  judgedMoreStrictly(from: string, to: string): boolean {
    if (from === to) return false;
    if (this.laxerField(from, to)) return true;
    const set = this.engine.plansByKind.get('json');
    if (set === undefined || set.memoOk) return false;
    const tests = set.nameTests;
    return tests === undefined || tests.some((rx) => rx.test(to) && !rx.test(from));
  }

  add(rule: CompiledRule, name: string, leaf: string, excerpt: string): void {
    this.found++;
    // one match per rule and target
    const key = `${rule.id}\u0000${name}`;
    if (this.seen?.has(key) === true) return;
    if (this.excluded(rule.id, rule.family, name, leaf)) return;
    (this.seen ??= new Set<string>()).add(key);
    if (this.matches.length >= 64) return;
    this.matches.push({
      ruleId: rule.id,
      family: rule.family,
      score: rule.score,
      pack: rule.pack,
      monitor: rule.monitor,
      target: name.length > 80 ? `${name.slice(0, 77)}...` : name,
      freeText: this.engine.freeText.has(leaf.toLowerCase()),
      excerpt,
    });
  }

  /**
   * A name/value pair. A name that itself holds `=` (an encoded `%3D` that some parsers
   * decode before splitting) is also inspected as `name=value`, split at its first `=`.
   * Without `rememberValue`, the value is inspected without the clean-value memo (the caller
   * remembers the pair as a whole).
   */
  pair(
    namePlans: PlanSet | undefined,
    valuePlans: PlanSet | undefined,
    kind: string,
    nameKind: string,
    k: string,
    v: string,
    rememberValue = true,
  ): void {
    this.value(namePlans, nameKind, k, k, k);
    if (rememberValue) this.value(valuePlans, kind, k, k, v);
    else this.fresh(valuePlans, kind, k, k, v);
    const eq = v === '' ? k.indexOf('=') : -1;
    if (eq > 0) {
      const sk = k.slice(0, eq);
      this.value(valuePlans, kind, sk, sk, k.slice(eq + 1));
    }
  }

  /**
   * Inspect one value. The target name (`kind:path`, e.g. `json:items[0].name`) is only
   * built when a rule matches.
   */
  value(set: PlanSet | undefined, kind: string, path: Path, leaf: string, raw: string): void {
    if (set === undefined || raw.length === 0) return;
    // names (JSON keys, parameter, cookie and header names), header values (User-Agent,
    // Referer, Accept …), paths and short values (page=2, currency codes, enum values, tags)
    // repeat across requests; long body and query values mostly do not
    const clean =
      raw.length <= (kind === 'header' || kind === 'path' ? CLEAN_MEMO_MAX_HEADER : CLEAN_MEMO_MAX_LENGTH)
        ? set.memoOk
          ? set.clean
          : set.nameTests !== undefined
            ? cleanForName(set, set.nameTests, leaf, this.copyClean)
            : undefined
        : undefined;
    const h = clean !== undefined ? clean.hashOf(raw) : 0;
    if (clean !== undefined && clean.holds(h, raw)) return;
    const before = this.found;
    this.inspect(set, kind, path, leaf, raw);
    if (clean !== undefined && this.found === before) clean.put(h, raw, this.copyClean);
  }

  /** {@link value} without the clean-value memo (the caller remembers what it found clean). */
  fresh(set: PlanSet | undefined, kind: string, path: Path, leaf: string, raw: string): void {
    if (set !== undefined && raw.length > 0) this.inspect(set, kind, path, leaf, raw);
  }

  /**
   * The slot of the literal scan of `t` read in `mode` (see {@link litScan}): as it is
   * ({@link SCAN_PLAIN}), without its whitespace ({@link SCAN_SKIPPING}: what scanning
   * `removeWhitespace(t)` gives), or with each run of whitespace read as one space
   * ({@link SCAN_COMPRESSING}: what scanning `compressWhitespaceRuns(t)` gives), scanning it on
   * first use for the current value; neither variant is built.
   */
  private scanOf(t: string, mode = SCAN_PLAIN): number {
    const n = this.nScan;
    for (let k = 0; k < n; k++) if (this.scanStr[k] === t && this.scanMode[k] === mode) return k;
    return this.scanInto(t, mode);
  }

  private scanInto(t: string, mode: number): number {
    const n = this.nScan;
    const size = this.engine.literals.size;
    if ((n + 1) * size > litScan.hit.length) {
      const grown = new Int32Array(Math.max((n + 1) * size, litScan.hit.length * 2));
      grown.set(litScan.hit);
      litScan.hit = grown;
      const confirmed = new Int32Array(grown.length);
      confirmed.set(litScan.confirmed);
      litScan.confirmed = confirmed;
    }
    const stamp = ++litScan.stamp;
    if (mode === SCAN_SKIPPING)
      scanLiteralsSkipping(this.engine.literals, t, litScan.hit, stamp, n * size, WS_UNIT);
    else if (mode === SCAN_COMPRESSING)
      scanLiteralsCompressing(this.engine.literals, t, litScan.hit, stamp, n * size, WS_UNIT);
    else scanLiterals(this.engine.literals, t, litScan.hit, stamp, n * size);
    this.scanMode[n] = mode;
    this.scanStr[n] = t;
    this.scanStamp[n] = stamp;
    this.nScan = n + 1;
    return n;
  }

  /**
   * The `lacks` bits of a detector's needs (see CompiledRule.valueNeeds) on a value whose
   * literal scan is in `slot` and whose signature is `m`: the bits of the groups it holds
   * nothing of, or -1 when it holds nothing of any (the detector cannot fire).
   */
  private lacksOf(needs: Int32Array, slot: number, m: CharMask): number {
    let lacks = 0;
    let held = false;
    for (let i = 0; i < needs.length; i += NEED_STRIDE) {
      const req = needs[i]!;
      if ((m.lo & needs[i + 1]!) !== 0 || (m.hi & needs[i + 2]!) !== 0 || (req >= 0 && this.hits(slot, req)))
        held = true;
      else lacks |= needs[i + 3]!;
    }
    return held ? lacks : -1;
  }

  /**
   * `execIn(whole, t)` for a regex with `alts` (see {@link CompiledRule.alts}), when the scan
   * in `slot` is that of `t` up to case: only the alternatives whose literals `t` holds are
   * run, and on a match of one the whole regex gives the match (the same as without them).
   * More than {@link MAX_ALTERNATIVES_APART} such alternatives: the whole regex, once.
   */
  private execAlternatives(
    whole: RegExp,
    alts: readonly Alternative[] | undefined,
    t: string,
    slot: number,
  ): RegExpExecArray | null {
    if (alts === undefined || slot < 0) return execIn(whole, t, this.max);
    let held = 0;
    for (let i = 0; i < alts.length; i++) if (this.hits(slot, alts[i]!.lits)) held++;
    if (held > MAX_ALTERNATIVES_APART) return execIn(whole, t, this.max);
    for (let i = 0; held > 0 && i < alts.length; i++) {
      const a = alts[i]!;
      if (!this.hits(slot, a.lits)) continue;
      held--;
      if (execIn(a.regex, t, this.max) !== null) return execIn(whole, t, this.max);
    }
    return null;
  }

  /**
   * Whether the scan in `slot` holds a literal of requirement `req`: the automaton's hit alone.
   * What the detectors' needs ask (they carry no boundaries), and what picks the alternatives
   * and fast regexes to run: confirming their boundaries there as well measured 1.03–1.05×
   * slower on bodies (the confirmations mostly confirm).
   */
  private hits(slot: number, req: number): boolean {
    return litScan.hit[slot * this.engine.literals.size + req] === this.scanStamp[slot];
  }

  /**
   * Whether the scan in `slot` holds a literal of requirement `req`, with the word boundaries
   * the requirement's regexes ask for: `\bor\b`, not the `or` of `airport` (Engine.confirms,
   * tested once per slot and requirement; a requirement without boundaries needs the hit
   * alone, as the substrings of `requires_any` and of the detectors' needs do). The
   * boundaries are judged on the string the slot scanned, which a regex sees up to case (a plain
   * scan) or with its whitespace runs compressed (a compressing scan: the boundaries and the
   * literals without whitespace are the same there); not on a whitespace-skipping scan, whose
   * string has lost the whitespace, nor on a string longer than `max_value_length`, which the
   * regexes see in windows whose edges are boundaries of their own.
   */
  private holds(slot: number, req: number): boolean {
    const i = slot * this.engine.literals.size + req;
    const stamp = this.scanStamp[slot]!;
    if (litScan.hit[i] !== stamp) return false;
    const re = this.engine.confirms[req];
    if (re === undefined || this.scanMode[slot] === SCAN_SKIPPING) return true;
    const c = litScan.confirmed[i];
    if (c === stamp) return true;
    if (c === -stamp) return false;
    const s = this.scanStr[slot]!;
    const ok = s.length > this.max || re.test(s);
    litScan.confirmed[i] = ok ? stamp : -stamp;
    return ok;
  }

  /**
   * Whether a group or a detector rule of `plan` may run on a value of signature `m` whose
   * literal scan is in `slot`: the checks {@link runPlan} starts each with (the character
   * gate, then the literals), on flat numbers, so a plan with nothing to run costs a short
   * loop instead of a call.
   */
  private mayRun(plan: Plan, slot: number, m: CharMask): boolean {
    const pre = plan.pre;
    const lo = m.lo;
    const hi = m.hi;
    const hit = litScan.hit;
    const base = slot * this.engine.literals.size;
    const stamp = this.scanStamp[slot]!;
    const confirms = this.engine.confirms;
    for (let i = 0; i < pre.length; i += PRE_STRIDE) {
      if (pre[i] === 0 && (lo & pre[i + 1]!) === 0 && (hi & pre[i + 2]!) === 0) continue;
      const l = pre[i + 3]!;
      if (l >= 0 && (hit[base + l] !== stamp || (confirms[l] !== undefined && !this.holds(slot, l))))
        continue;
      const sl = pre[i + 4]!;
      if (sl >= 0 && hit[base + sl] !== stamp) continue;
      return true;
    }
    return false;
  }

  /**
   * The whole value is transformed and scanned (both linear); each regex and detector then
   * sees at most `max_value_length` characters of its transformed value at a time (see
   * {@link execIn}), so padding, inside an attack or around it, does not hide it.
   */
  private inspect(set: PlanSet, kind: string, path: Path, leaf: string, v: string): void {
    // a value takes a bounded number of scans, so the stamps never wrap within one
    if (litScan.stamp > 0x3fff0000) {
      litScan.hit.fill(0);
      litScan.confirmed.fill(0);
      litScan.stamp = 0;
    }
    // the signature and the literal scan of the value itself (slot 0), in one pass
    const vm = this.mask;
    const stamp = ++litScan.stamp;
    // (compileEngine sized `hit` for this engine's slots 0 and 1 at least)
    const lits = this.engine.literals;
    this.scanStr[0] = v;
    this.scanMode[0] = SCAN_PLAIN;
    this.scanStamp[0] = stamp;
    this.nScan = 1;
    // (and the plans whose literals it holds: see PlanSet.litPlans)
    const planBits = scanLiteralsAndMask(lits, v, litScan.hit, stamp, 0, vm, set.litPlans);
    if (set.skipScan && (set.skipTrigger === undefined || passes(vm, set.skipTrigger))) {
      // slot 1: the scan of `v` without its whitespace (see scanOf, SCAN_SKIPPING), made in a
      // second pass when the value holds a character of one of those plans' gates
      scanLiteralsSkipping(lits, v, litScan.hit, stamp, lits.size, WS_UNIT);
      this.scanStr[1] = v;
      this.scanMode[1] = SCAN_SKIPPING;
      this.scanStamp[1] = stamp;
      this.nScan = 2;
    }
    if (set.fastOk && !passes(vm, set.special)) {
      // (the lower case is made when a regex or detector is to run: most values need none)
      let l: string | undefined;
      let hit = false;
      const fast = set.fast;
      for (let i = 0; i < fast.length; i++) {
        // the literal scan of `v` (slot 0) folds case: it tells what scanning `l` would
        const fl = set.fastLits[i]!;
        if (fl >= 0 && !this.hits(0, fl)) continue;
        if (this.execAlternatives(fast[i]!, set.fastAlts[i], (l ??= lowerOf(v, vm)), 0) !== null) {
          hit = true;
          break;
        }
      }
      if (!hit) {
        const fd = set.fastDetectors;
        for (let i = 0; i < fd.length; i++) {
          const needs = set.fastDetectorNeeds[i];
          const lacks = needs === undefined ? 0 : this.lacksOf(needs, 0, vm);
          if (lacks < 0) continue;
          if (detectIn(fd[i]!, (l ??= lowerOf(v, vm)), this.max, lacks)) {
            hit = true;
            break;
          }
        }
      }
      if (!hit) return;
    }
    const plans = set.plans;
    // without transform triggers, transforms only remove or fold characters: a plan whose
    // every rule is gated and whose gates all fail on the raw value cannot match
    const rawStable = !passes(vm, TRIGGER_MASK);
    const tm = this.tmask;
    const ascii = (vm.hi & HI_NON_ASCII) === 0;
    if (
      set.stableOk &&
      !passes(vm, STABLE_EXCLUDE_PRECISE) &&
      ((vm.hi & HI_WS_RUNS) === 0 || (ascii && (vm.hi & HI_CONTROL_OTHER) === 0)) &&
      (passes(vm, PERCENT_AMP)
        ? ascii && inertPercentAmp(v)
        : ascii || (set.stableNonAsciiOk && nonAsciiStable(v)))
    ) {
      // whitespace runs (controls or double spaces, ASCII values only): variants 4 and 5 are
      // the value with its runs compressed to one space, as is and lower-cased
      const runs = (vm.hi & HI_WS_RUNS) !== 0;
      let slot4 = -1;
      // a stable value: every chain yields one of four variants, computed at most once each;
      // lower-casing ASCII only clears the upper-case bit, removing single spaces changes no bit
      const vals = this.variants;
      vals[0] = v;
      let have = 1;
      // variants 0 and 1 differ only in case, which the literal scan folds, unless the value
      // holds one of the two characters that lower-case to ASCII letters (U+212A, U+0130)
      const folds = ascii || lowerScansAlike(v);
      let slot1 = folds ? 0 : -1;
      let began = false;
      // the plans the value's own scan does not rule out (see PlanSet.litPlans); when the
      // lower case does not scan alike, the lower-cased variant gets a scan of its own
      const open = folds ? planBits | set.openPlans | (runs ? set.compressPlans : 0) : -1;
      for (let pi = 0; pi < plans.length; pi++) {
        if ((open & (1 << pi)) === 0) continue;
        const plan = plans[pi]!;
        if (plan.gateUnion !== undefined && !passes(vm, plan.gateUnion)) continue;
        let variant = plan.stableVariant;
        if (variant < 0) {
          // a stableFallback plan whose gate passed: without the characters its removals act
          // on, it yields a variant like the others; with them, its transforms run
          if (!passes(vm, plan.removalTrigger)) variant = plan.plainVariant;
          else {
            if (!began) {
              beginValue(set.fn.length);
              began = true;
            }
            this.runTransformed(set, plan, v, vm, kind, path, leaf);
            continue;
          }
        }
        const sv = runs || variant < 4 ? variant : variant & 1;
        if (sv >= 4) {
          // compressing removes controls and spaces only (a superset signature is safe for gates);
          // the scan of an ASCII value folds case, so variants 4 and 5 share one, made from
          // the value without building the compressed string: the plan runs only when one of
          // its groups or detectors may match
          tm.lo = vm.lo;
          tm.hi = sv === 4 ? vm.hi : vm.hi & ~HI_UPPER;
          if (slot4 < 0) slot4 = this.scanOf(v, SCAN_COMPRESSING);
          if (!this.mayRun(plan, slot4, tm)) continue;
          if ((have & (1 << sv)) === 0) {
            if ((have & 16) === 0) {
              vals[4] = compressWhitespaceRuns(v);
              have |= 16;
            }
            if (sv === 5) {
              vals[5] = lowerOf(vals[4]!, vm);
              have |= 32;
            }
          }
          this.scanned = vals[sv]!;
          this.runPlan(plan, vals[sv]!, tm, kind, path, leaf, slot4);
          continue;
        }
        // the variant's signature (see above)
        tm.lo = vm.lo;
        tm.hi = (sv & 1) === 0 ? vm.hi : vm.hi & ~HI_UPPER;
        let slotWs = -1;
        if (sv >= 2 && plan.litsOnly) {
          // the variant without whitespace, scanned without building it (removing whitespace
          // is skipping it in the scan): the plan runs only when one of its groups may match
          if (sv === 3 && !folds && (have & 2) === 0) {
            vals[1] = lowerOf(v, vm);
            have |= 2;
          }
          slotWs = this.scanOf(sv === 2 || folds ? v : vals[1]!, SCAN_SKIPPING);
          if (!this.mayRun(plan, slotWs, tm)) continue;
        } else if ((sv === 0 || (sv === 1 && slot1 >= 0)) && !this.mayRun(plan, sv === 0 ? 0 : slot1, tm))
          continue;
        if ((have & (1 << sv)) === 0) {
          if (sv === 1) vals[1] = lowerOf(v, vm);
          else if (sv === 2) vals[2] = removeWhitespace(v);
          else {
            if ((have & 2) === 0) {
              vals[1] = lowerOf(v, vm);
              have |= 2;
            }
            vals[3] = removeWhitespace(vals[1]!);
          }
          have |= 1 << sv;
        }
        this.scanned = vals[sv]!;
        if (sv === 0) this.runPlan(plan, v, tm, kind, path, leaf, 0);
        else if (sv === 1) slot1 = this.runPlan(plan, vals[1]!, tm, kind, path, leaf, slot1);
        else this.runPlan(plan, vals[sv]!, tm, kind, path, leaf, slotWs);
      }
      return;
    }
    beginValue(set.fn.length);
    for (let pi = 0; pi < plans.length; pi++) {
      const plan = plans[pi]!;
      if (rawStable && plan.gateUnion !== undefined && !passes(vm, plan.gateUnion)) continue;
      this.runTransformed(set, plan, v, vm, kind, path, leaf);
    }
  }

  /** `plan` on `v` (signature `vm`) through the transform trie (after {@link beginValue}). */
  private runTransformed(
    set: PlanSet,
    plan: Plan,
    v: string,
    vm: CharMask,
    kind: string,
    path: Path,
    leaf: string,
  ): void {
    const tm = this.tmask;
    let t = v;
    if (plan.node < 0) {
      tm.lo = vm.lo;
      tm.hi = vm.hi;
    } else {
      t = nodeValue(set, plan.node, v, vm);
      tm.lo = scratch.lo[plan.node]!;
      tm.hi = scratch.hi[plan.node]!;
    }
    // nodeValue computed every ancestor of the plan's node for this value. Lower-casing only
    // folds like the scan does when the value before it holds neither U+212A nor U+0130
    // (which lower-case to ASCII letters); otherwise the value is scanned as transformed.
    const sn = plan.scanNode;
    const before = sn < 0 ? v : scratch.vals[sn]!;
    this.scanned =
      ((sn < 0 ? vm.hi : scratch.hi[sn]!) & HI_NON_ASCII) === 0 || lowerScansAlike(before) ? before : t;
    this.runPlan(plan, t, tm, kind, path, leaf, -1);
  }

  /**
   * The rules of one plan on its transformed value `t` (signature `tm`). `slot` is the
   * literal scan of `t` when known (else -1); returns it (-1 when no scan was needed).
   */
  private runPlan(
    plan: Plan,
    t: string,
    tm: CharMask,
    kind: string,
    path: Path,
    leaf: string,
    slot: number,
  ): number {
    for (const g of plan.groups) {
      if (g.gate !== undefined && !passes(tm, g.gate)) continue;
      if (g.lits >= 0 || g.subsLits >= 0) {
        if (slot < 0) slot = this.scanOf(this.scanned);
        if (g.lits >= 0 && !this.holds(slot, g.lits)) continue;
        if (g.subsLits >= 0 && !this.holds(slot, g.subsLits)) continue;
      }
      if (g.gateSubs !== undefined && execIn(g.gateSubs, t, this.max) === null) continue;
      // with literals, each rule's own literals pick the few regexes worth running
      if (g.combined !== undefined && g.lits < 0 && execIn(g.combined, t, this.max) === null) continue;
      for (const r of g.rules) {
        if (r.names !== undefined && !r.names.test(leaf)) continue;
        if (r.lits! >= 0) {
          if (slot < 0) slot = this.scanOf(this.scanned);
          if (!this.holds(slot, r.lits!)) continue;
        }
        const m = this.execAlternatives(r.regex!, r.alts, t, slot);
        if (m) {
          const name = this.nameOf(kind, path);
          this.add(r, name, leaf, excerptOf(t, m.index, name, leaf));
        }
      }
    }
    for (const r of plan.detectorRules) {
      if (r.names !== undefined && !r.names.test(leaf)) continue;
      if (r.gate !== undefined && !passes(tm, r.gate)) continue;
      // (a detector's needs are only read from a scan already made: its own gates cost less
      // than a scan of a transformed value)
      const lacks = r.valueNeeds !== undefined && slot >= 0 ? this.lacksOf(r.valueNeeds, slot, tm) : 0;
      if (lacks < 0) continue;
      if (r.gateSubs !== undefined && execIn(r.gateSubs, t, this.max) === null) continue;
      const ev = detectIn(r.detector!, t, this.max, lacks);
      if (ev) {
        const name = this.nameOf(kind, path);
        this.add(r, name, leaf, excerptOf(t, ev.at, name, leaf));
      }
    }
    return slot;
  }
}

/** A regex matching any of the literal strings. */
function literalAlternation(subs: readonly string[]): RegExp {
  return new RegExp(subs.map(escapeRegex).join('|'));
}

/** Split `a=b&c` into decoded pairs (`+` is a space). */
export function parseQuery(q: string): [string, string][] {
  const out: [string, string][] = [];
  if (q === '') return out;
  for (const part of q.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    const v = eq < 0 ? '' : part.slice(eq + 1);
    out.push([urlDecodeOnce(k, true), urlDecodeOnce(v, true)]);
  }
  return out;
}

/** The head of a request, as the policy sees it (a subset of RequestContext). */
export interface HeadInput {
  readonly method: string;
  readonly target: string;
  readonly rawPath: string;
  readonly query: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly rawHeaders: readonly string[];
  readonly httpVersion: string;
  readonly routeName: string;
}

function headerString(v: string | string[] | undefined): string | undefined {
  return v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : v;
}

/** `m.toUpperCase()`, without a call for a method already in upper case (what clients send). */
function upperMethod(m: string): string {
  for (let i = 0; i < m.length; i++) {
    const c = m.charCodeAt(i);
    if ((c >= 97 && c <= 122) || c >= 128) return m.toUpperCase();
  }
  return m;
}

/**
 * Request phase: inspect path, query, headers and cookies, and run the request-level
 * (protocol) rules with what the head tells (Content-Length, Content-Type).
 */
export function inspectHead(engine: Engine, head: HeadInput): Match[] {
  const walk = new Walk(engine, {
    method: upperMethod(head.method),
    path: head.path,
    route: head.routeName,
  });
  walkHead(walk, head);
  runRequestRules(walk, head, undefined);
  return walk.matches;
}

/**
 * Body phase: inspect the parsed body (JSON keys and leaves, form pairs, multipart fields and
 * filenames), re-run the request-level rules with the body known, and report a body that
 * did not parse as its declared type.
 */
export function inspectBody(engine: Engine, head: HeadInput, body: RequestBody): Match[] {
  const walk = new Walk(engine, {
    method: upperMethod(head.method),
    path: head.path,
    route: head.routeName,
  });
  walkBody(walk, body);
  runRequestRules(walk, head, body);
  if (body.parseError !== undefined && body.raw.length > 0) {
    walk.add(BODY_PARSE_RULE, 'body', 'body', body.parseError.slice(0, 40));
  }
  return walk.matches;
}

/** Pseudo-rule for a body that does not parse as its declared media type. */
const BODY_PARSE_RULE: CompiledRule = {
  id: 'body-parse-error',
  pack: 'protocol',
  family: 'protocol',
  score: 5,
  monitor: false,
};

/**
 * Pseudo-rule for a JSON Patch `copy` or `move` out of a location the patch did not write
 * (a stored value the gateway cannot see) in a field judged more leniently than the target
 * (see {@link walkJsonPatch}).
 */
const PATCH_COPY_RULE: CompiledRule = {
  id: 'json-patch-copy',
  pack: 'protocol',
  family: 'protocol',
  score: 5,
  monitor: false,
};

/** Head matches plus body matches, without repeating a rule on the same target. */
export function mergeMatches(a: readonly Match[], b: readonly Match[]): Match[] {
  if (b.length === 0) return [...a];
  const seen = new Set(a.map((m) => `${m.ruleId}\u0000${m.target}`));
  return [...a, ...b.filter((m) => !seen.has(`${m.ruleId}\u0000${m.target}`))];
}

function walkHead(walk: Walk, head: HeadInput): number {
  const e = walk.engine;
  let args = 0;
  // the path and the query are slices of the target
  walk.copyClean = head.target.length > COPY_ABOVE;
  // Decoding the path and each query name and value, the builtin decoder checks their escapes:
  // when it decodes all of them (no hand decoding), the target's are valid. Pairs judged by
  // the memo are not decoded: it only remembers pairs whose escapes were valid.
  const handDecoded = handDecodings.count;
  const sets = e.head;
  const pathPercent = head.rawPath.indexOf('%') >= 0;
  // (what the protocol checks call the path: the target before its first `?`, all of it without
  // one; the head's rawPath is that unless a fragment came first)
  const rp = head.rawPath.length;
  const t = head.target;
  walk.pathPercent = t.length === rp || t.charCodeAt(rp) === 63 /* ? */ ? pathPercent : undefined;
  walk.value(
    sets.path,
    'path',
    undefined,
    'path',
    pathPercent ? urlDecodeOnce(head.rawPath, false) : head.rawPath,
  );
  const maxArgs = e.options.maxArgs;
  const qPlans = sets.query;
  const qnPlans = sets.queryName;
  // the pairs of parseQuery(), without building the list
  const q = head.query;
  // the next `%` and `+` from the pair being read on (-1: none): a pair with neither decodes
  // to itself, found without a search per part
  let pct = q.indexOf('%');
  let plus = q.indexOf('+');
  // the parts, empty ones included (what countArgs counts), unless the walk stops early
  let parts = 0;
  for (let start = 0; q !== '' && start <= q.length;) {
    let end = q.indexOf('&', start);
    if (end < 0) end = q.length;
    parts++;
    if (end > start) {
      if (++args > maxArgs) {
        walk.truncated = true;
        parts = -1;
        break;
      }
      // a recurring pair found clean before is judged by its raw text (see Engine.cleanPairs)
      const raw = end - start <= CLEAN_MEMO_MAX_LENGTH ? q.slice(start, end) : undefined;
      const h = raw !== undefined ? e.cleanPairs.hashOf(raw) : 0;
      if (raw === undefined || !e.cleanPairs.holds(h, raw)) {
        const before = walk.found;
        if (pct >= 0 && pct < start) pct = q.indexOf('%', start);
        if (plus >= 0 && plus < start) plus = q.indexOf('+', start);
        const plain = (pct < 0 || pct >= end) && (plus < 0 || plus >= end);
        const eq = q.indexOf('=', start);
        const inPart = eq >= 0 && eq < end;
        const keyEnd = inPart ? eq : end;
        const rk = q.slice(start, keyEnd);
        const rv = inPart ? q.slice(eq + 1, end) : '';
        const hand = handDecodings.count;
        // (the name decodes to itself when the pair's first `%` and `+` are past it)
        const keyPlain = (pct < 0 || pct >= keyEnd) && (plus < 0 || plus >= keyEnd);
        const k = keyPlain ? rk : urlDecodeOnce(rk, true);
        const v = plain ? rv : urlDecodeOnce(rv, true);
        // (a pair the pair memo takes: its value is not remembered apart as well)
        walk.pair(qnPlans, qPlans, 'query', 'query_name', k, v, raw === undefined);
        if (raw !== undefined && walk.found === before && handDecodings.count === hand)
          e.cleanPairs.put(h, raw, walk.copyClean);
      }
    }
    start = end + 1;
  }
  walk.copyClean = false;
  walk.queryArgs = parts;
  // the walk read all of the target but for `?` (no fragment, no pair left out)
  walk.targetEscapesValid =
    handDecodings.count === handDecoded &&
    !walk.truncated &&
    (t.length === rp || t.length === rp + 1 + q.length);
  const hnPlans = sets.headerName;
  const all = sets.allHeaders;
  const headers = head.headers;
  const names = e.headerNames;
  for (const name of Object.keys(headers)) {
    const v = headerString(headers[name]);
    if (v === undefined) continue;
    const remember = name.length <= CLEAN_MEMO_MAX_HEADER;
    let hn = remember ? names.get(name) : undefined;
    if (hn === undefined) {
      hn = { own: sets.headerSets.get(name), clean: false };
      if (remember) {
        if (names.size >= CLEAN_MEMO_ENTRIES) names.clear();
        names.set(name, hn);
      }
    }
    if (!hn.clean) {
      const before = walk.found;
      walk.fresh(hnPlans, 'header_name', name, name, name);
      hn.clean = walk.found === before;
    }
    if (name === 'cookie') {
      const cPlans = sets.cookie;
      const cnPlans = sets.cookieName;
      // the pairs of parseCookies(), without building the list
      walk.copyClean = v.length > COPY_ABOVE;
      for (let cs = 0; cs <= v.length;) {
        let ce = v.indexOf(';', cs);
        if (ce < 0) ce = v.length;
        const part = v.slice(cs, ce).trim();
        cs = ce + 1;
        if (part === '') continue;
        if (++args > maxArgs) {
          walk.truncated = true;
          break;
        }
        const eq = part.indexOf('=');
        const ck = eq < 0 ? part : part.slice(0, eq).trim();
        const cv = eq < 0 ? '' : part.slice(eq + 1).trim();
        walk.value(cnPlans, 'cookie_name', ck, ck, ck);
        walk.value(cPlans, 'cookie', ck, ck, cv);
      }
      walk.copyClean = false;
    }
    const own = hn.own;
    if (own === undefined) walk.value(all, 'header', name, name, v);
    else if (own !== null) walk.value(own, 'header', name, name, v);
  }
  return args;
}

/** JSON nested deeper than this is not walked; the request gets a protocol finding (proto-152). */
export const MAX_JSON_DEPTH = 32;

/** The `path` of JSON keys and values: the walk knows it (see {@link walkJson}). */
const JSON_PATH = null;

/** What {@link walkJson} carries down (one object per body). */
interface JsonWalk {
  readonly walk: Walk;
  readonly values: PlanSet | undefined;
  readonly keys: PlanSet | undefined;
  budget: number;
}

/**
 * The JSON walk. The path of the value being inspected is kept as segments in
 * `walk.jsonSegs[0 .. walk.jsonLen)` (keys, and array indexes as numbers); its string is only
 * built when a rule matches ({@link Walk.jsonPath}).
 */
function walkJson(j: JsonWalk, v: unknown, leaf: string, depth: number): void {
  const walk = j.walk;
  if (j.budget <= 0) {
    // something left uninspected: a protocol finding (proto-151), not a way around the rules
    if (typeof v === 'string' || (typeof v === 'object' && v !== null)) walk.truncated = true;
    return;
  }
  if (typeof v === 'string') {
    j.budget--;
    walk.jsonLen = depth;
    walk.value(j.values, 'json', JSON_PATH, leaf, v);
    return;
  }
  if (v === null || typeof v !== 'object') return;
  if (depth > MAX_JSON_DEPTH) {
    // not walked: a protocol finding instead (proto-152), so nothing deeper passes unseen
    walk.jsonTooDeep = true;
    return;
  }
  const segs = walk.jsonSegs;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length && !walk.truncated; i++) {
      segs[depth] = i;
      walkJson(j, v[i], leaf, depth + 1);
    }
    return;
  }
  walkMembers(j, v as Record<string, unknown>, depth, undefined);
}

/**
 * The members of a JSON object at `depth`: each key, then its value under the key as field
 * name, except the member `valueKey` (`value`), which goes under `valueField` when given (see
 * {@link walkJsonPatch}).
 */
function walkMembers(
  j: JsonWalk,
  obj: Record<string, unknown>,
  depth: number,
  valueField: string | undefined,
  valueKey = 'value',
): void {
  const walk = j.walk;
  const segs = walk.jsonSegs;
  for (const k in obj) {
    if (!Object.prototype.hasOwnProperty.call(obj, k)) continue;
    if (j.budget-- <= 0) {
      walk.truncated = true;
      return;
    }
    const x = obj[k];
    // `{"constructor": {"prototype": {…}}}`: what a deep merge (lodash's defaultsDeep,
    // CVE-2019-10744) writes into Object.prototype; each key alone is an ordinary word
    if (k === 'prototype' && depth > 0 && segs[depth - 1] === 'constructor') walk.prototypePath = true;
    segs[depth] = k;
    walk.jsonLen = depth + 1;
    walk.value(j.keys, 'json_key', JSON_PATH, k, k);
    walkJson(j, x, valueField !== undefined && k === valueKey ? valueField : k, depth + 1);
  }
}

/**
 * A value a JSON Patch writes, at the location its pointer names (segments, unescaped), and
 * the field name it was last judged under.
 */
interface PatchWrite {
  readonly at: readonly string[];
  /** the value, when `seen`; else a stored value a copy put there */
  readonly value: unknown;
  readonly field: string;
  readonly seen: boolean;
}

/** The members of an operation; case-insensitive binders read `Path` or `FROM` as well. */
const PATCH_MEMBERS = new Set(['op', 'path', 'from', 'value']);
/** The operations of RFC 6902. */
const PATCH_OPS = new Set(['add', 'remove', 'replace', 'move', 'copy', 'test']);

/**
 * A JSON Patch (RFC 6902): an array of operations. The `value` of an operation is judged as
 * the field its `path` names (the last segment of the JSON pointer that is not an array
 * index), so exclusions and free-text fields apply to `{"op": "replace", "path": "/notes",
 * "value": …}` as to `{"notes": …}`. The target names stay JSON paths (`json:[0].value`).
 *
 * A `copy` or `move` writes the value at `from` into the field `path` names. The values the
 * patch itself wrote there before (`add`, `replace`, an earlier copy) are judged again under
 * their new field (target `json:[i].from`), so a value written under a laxer field (a
 * free-text note) is not laundered into a stricter one. A source the patch did not write is a
 * stored value the gateway cannot see: copying it out of a field judged more leniently than
 * the target (a free-text field, or one an exclusion names that does not name the target)
 * is the finding `json-patch-copy`.
 *
 * Member names are matched whatever their case (ASP.NET Core's JsonPatch and Jackson with
 * case-insensitive properties read `Path` as `path`, and `op` values like `Copy`); an
 * operation naming one of `op`, `path`, `from`, `value` twice in different case is a
 * `body-parse-error`, as a member name twice is in any JSON body.
 */
function walkJsonPatch(j: JsonWalk, ops: readonly unknown[], declared: boolean): void {
  const walk = j.walk;
  const segs = walk.jsonSegs;
  const writes: PatchWrite[] = [];
  for (let i = 0; i < ops.length && !walk.truncated; i++) {
    const op = ops[i];
    segs[0] = i;
    if (op === null || typeof op !== 'object' || Array.isArray(op)) {
      walkJson(j, op, '', 1);
      continue;
    }
    const o = op as Record<string, unknown>;
    const names = new Map<string, string>();
    let twice: string | undefined;
    for (const k in o) {
      if (!Object.prototype.hasOwnProperty.call(o, k)) continue;
      const lower = k.toLowerCase();
      if (!PATCH_MEMBERS.has(lower)) continue;
      if (names.has(lower)) twice ??= `[${i}] ${names.get(lower)!} and ${k}`;
      else names.set(lower, k);
    }
    const opKey = names.get('op');
    const opName = opKey !== undefined ? o[opKey] : undefined;
    const name = typeof opName === 'string' ? opName.toLowerCase() : '';
    // in an array body of another type, only what reads as an operation (see walkBody)
    const isOp = declared || PATCH_OPS.has(name);
    if (twice !== undefined && isOp) walk.add(BODY_PARSE_RULE, 'body', 'body', twice.slice(0, 40));
    const pathKey = names.get('path');
    const path = pathKey !== undefined ? o[pathKey] : undefined;
    const valueKey = names.get('value');
    if (!declared || twice !== undefined || typeof path !== 'string') walkJson(j, op, '', 1);
    else walkMembers(j, o, 1, pointerField(path), valueKey);
    if (!isOp || twice !== undefined || typeof path !== 'string') continue;
    const fromKey = names.get('from');
    const from = fromKey !== undefined ? o[fromKey] : undefined;
    if (name === 'copy' || name === 'move') {
      if (typeof from === 'string')
        relocate(j, writes, i, fromKey!, pointerSegments(from), pointerSegments(path));
    } else if (name !== 'test' && name !== 'remove' && valueKey !== undefined) {
      const field = declared ? (pointerField(path) ?? valueKey) : valueKey;
      writes.push({ at: pointerSegments(path), value: o[valueKey], field, seen: true });
    }
  }
}

/**
 * Operation `i` copies (or moves) what is at `from` to `to`: every value the patch wrote
 * there is judged again under the field it lands in, and a source the patch did not write
 * must not come from a field judged more leniently (see {@link walkJsonPatch}).
 */
function relocate(
  j: JsonWalk,
  writes: PatchWrite[],
  i: number,
  fromKey: string,
  from: readonly string[],
  to: readonly string[],
): void {
  const walk = j.walk;
  const segs = walk.jsonSegs;
  let reported = false;
  /** a value the gateway has not seen, last judged under `field`, lands in `target` */
  const unseen = (field: string, target: string): void => {
    if (reported || !walk.judgedMoreStrictly(field, target)) return;
    reported = true;
    segs[0] = i;
    segs[1] = fromKey;
    walk.jsonLen = 2;
    walk.add(PATCH_COPY_RULE, walk.nameOf('json', JSON_PATH), target, (pointerOf(from) || '/').slice(0, 40));
  };
  // a source the patch did not write (or wrote only in part) is a stored value
  const known = writes.some(
    (w) => w.seen && w.at.length <= from.length && w.at.every((s, k) => s === from[k]),
  );
  if (!known) {
    const src = segmentsField(from) ?? '';
    unseen(src, segmentsField(to) ?? '');
    if (j.budget-- <= 0) {
      walk.truncated = true;
      return;
    }
    writes.push({ at: to, value: undefined, field: src, seen: false });
  }
  // values written at or under `from` move along; a value holding `from` gives its part
  for (let k = 0, n = writes.length; k < n && !walk.truncated; k++) {
    const w = writes[k]!;
    const common = Math.min(w.at.length, from.length);
    let overlaps = true;
    for (let s = 0; s < common && overlaps; s++) overlaps = sameSegment(w.at[s]!, from[s]!);
    if (!overlaps) continue;
    const whole = w.at.length >= from.length;
    const at = whole ? [...to, ...w.at.slice(from.length)] : to;
    const target = segmentsField(at) ?? '';
    // a part of a written object was judged under its own key
    const was = whole ? w.field : (segmentsField(from.slice(w.at.length)) ?? w.field);
    if (!w.seen) {
      // a stored value an earlier copy put there (or a part of it)
      unseen(was, target);
      if (j.budget-- <= 0) {
        walk.truncated = true;
        return;
      }
      writes.push({ at, value: undefined, field: was, seen: false });
      continue;
    }
    // judged again where the new field could fare worse (a value judged as it was is not
    // counted twice: moving a note to another free-text field adds nothing)
    const again = walk.judgedMoreStrictly(was, target);
    for (const value of whole ? [w.value] : partsAt(w.value, from.slice(w.at.length))) {
      if (j.budget-- <= 0) {
        walk.truncated = true;
        return;
      }
      writes.push({ at, value, field: again ? target : was, seen: true });
      if (!again) continue;
      segs[0] = i;
      segs[1] = fromKey;
      walkJson(j, value, target, 2);
    }
  }
}

/** A JSON pointer as it was written, for an excerpt. */
function pointerOf(segs: readonly string[]): string {
  return segs.map((s) => `/${s.replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

/**
 * Two pointer segments that may name the same location: equal but for case (case-insensitive
 * binders), or both array indexes (earlier operations shift the elements).
 */
function sameSegment(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase() || (ARRAY_INDEX.test(a) && ARRAY_INDEX.test(b));
}

/** The parts of `v` that `rest` may name (every element for an array index). */
function partsAt(v: unknown, rest: readonly string[]): unknown[] {
  let cur: unknown[] = [v];
  for (const seg of rest) {
    const next: unknown[] = [];
    for (const x of cur) {
      if (Array.isArray(x)) {
        if (ARRAY_INDEX.test(seg)) next.push(...(x as unknown[]));
      } else if (x !== null && typeof x === 'object') {
        const lower = seg.toLowerCase();
        for (const k of Object.keys(x))
          if (k.toLowerCase() === lower) next.push((x as Record<string, unknown>)[k]);
      }
    }
    cur = next;
  }
  return cur;
}

const ARRAY_INDEX = /^(?:\d+|-)$/;
const POINTER_ESCAPE = /~[01]/g;

/** The segments of a JSON pointer, unescaped (`/a~1b/0` gives `a/b`, `0`; `` gives none). */
function pointerSegments(pointer: string): string[] {
  if (pointer === '') return [];
  const segs = (pointer.startsWith('/') ? pointer.slice(1) : pointer).split('/');
  return segs.map((s) => s.replace(POINTER_ESCAPE, (e) => (e === '~1' ? '/' : '~')));
}

/** The last segment that is not an array index (`-` or digits); undefined when none. */
function segmentsField(segs: readonly string[]): string | undefined {
  for (let k = segs.length - 1; k >= 0; k--) {
    const s = segs[k]!;
    if (s === '' || ARRAY_INDEX.test(s)) continue;
    return s;
  }
  return undefined;
}

/** The last segment of a JSON pointer that is not an array index (`-` or digits), unescaped; undefined when none. */
export function pointerField(pointer: string): string | undefined {
  // (what precedes the first `/` is not a reference token)
  const segs = pointerSegments(pointer);
  return segmentsField(pointer.startsWith('/') ? segs : segs.slice(1));
}

function walkBody(walk: Walk, body: RequestBody): number {
  const e = walk.engine;
  const budget = { n: e.options.maxArgs };
  // a body of another type that is valid JSON is judged as JSON too (see parseBody)
  const json = body.json !== undefined ? body.json : body.jsonSniffed;
  if (json !== undefined) {
    const j: JsonWalk = {
      walk,
      values: e.plansByKind.get('json'),
      keys: e.plansByKind.get('json_key'),
      budget: budget.n,
    };
    // an array is a JSON Patch when declared one; one of another type is walked as plain
    // JSON, but its copy and move operations are checked too (services that take a patch
    // whatever its Content-Type, e.g. ASP.NET Core binding a JsonPatchDocument from
    // application/json, would apply them)
    if (Array.isArray(json)) walkJsonPatch(j, json, body.mediaType === 'application/json-patch+json');
    else walkJson(j, json, '', 0);
    budget.n = j.budget;
  }
  // multipart parts declared as JSON, each under its field name (`json:meta.merchant`)
  for (const part of body.jsonParts ?? []) {
    if (walk.truncated) break;
    const j: JsonWalk = {
      walk,
      values: e.plansByKind.get('json'),
      keys: e.plansByKind.get('json_key'),
      budget: budget.n,
    };
    walk.jsonSegs[0] = part.field;
    walkJson(j, part.json, part.field, 1);
    budget.n = j.budget;
  }
  const pairs: [readonly [string, string][] | undefined, Kind, Kind][] = [
    [body.form, 'form', 'form_name'],
    [body.fields, 'multipart', 'multipart_name'],
  ];
  // form values are slices of the body
  walk.copyClean = body.raw.length > COPY_ABOVE;
  for (const [list, kv, kn] of pairs) {
    if (!list) continue;
    for (const [k, v] of list) {
      if (budget.n-- <= 0) {
        walk.truncated = true;
        break;
      }
      walk.pair(e.plansByKind.get(kn), e.plansByKind.get(kv), kv, kn, k, v);
    }
  }
  for (const f of body.files ?? []) {
    if (budget.n-- <= 0) {
      walk.truncated = true;
      break;
    }
    walk.value(e.plansByKind.get('filename'), 'filename', f.field, f.field, f.filename);
  }
  return e.options.maxArgs - budget.n;
}

function countArgs(head: HeadInput, body: RequestBody | undefined): number {
  // head.query.split('&').length, without the list
  const q = head.query;
  let n = 0;
  if (q !== '') {
    n = 1;
    for (let i = q.indexOf('&'); i >= 0; i = q.indexOf('&', i + 1)) n++;
  }
  if (body?.form) n += body.form.length;
  if (body?.fields) n += body.fields.length;
  const json = body === undefined ? undefined : body.json !== undefined ? body.json : body.jsonSniffed;
  if (json !== undefined && json !== null && typeof json === 'object')
    n += Array.isArray(json) ? json.length : Object.keys(json).length;
  return n;
}

function runRequestRules(walk: Walk, head: HeadInput, body: RequestBody | undefined): void {
  const e = walk.engine;
  if (e.requestRules.length === 0) return;
  const cl = headerString(head.headers['content-length']);
  const facts: RequestFacts = {
    method: head.method,
    target: head.target,
    headers: head.headers,
    rawHeaders: head.rawHeaders,
    httpVersion: head.httpVersion,
    bodyLength: body ? body.raw.length : cl !== undefined && /^\d+$/.test(cl) ? Number(cl) : 0,
    mediaType: body?.mediaType ?? mediaTypeOf(headerString(head.headers['content-type'])),
    rawForm: body && body.form ? body.raw.toString('latin1') : undefined,
    argCount: body === undefined && walk.queryArgs >= 0 ? walk.queryArgs : countArgs(head, body),
    path: head.path,
    jsonTooDeep: walk.jsonTooDeep,
    prototypePath: walk.prototypePath,
    truncated: walk.truncated,
    methodOverride: methodOverrideOf(head, body),
    targetEscapesValid: walk.targetEscapesValid,
    pathPercent: walk.pathPercent,
  };
  // what the request holds that some check looks at: a check that needs none of it is not
  // called. (The body phase runs its few checks as they are: the pass over the header list
  // costs more than it would save there.)
  const features = body === undefined ? requestFeatures(facts, e.protocol, e.headNeeds) : -1;
  for (const r of features === 0 ? e.unconditionalRules : e.requestRules) {
    // in the body phase, only the checks whose verdict can change once the body is known
    if (body !== undefined && !r.bodyAware) continue;
    const needs = r.needs!;
    if (needs !== 0 && (features & needs) === 0) continue;
    const note = r.request!(facts, e.protocol);
    if (note) walk.add(r, 'request', 'request', note.slice(0, 40));
  }
}

/** The name of the method-override parameter (see the `method_override` detector). */
const METHOD_PARAM = '_method';

/**
 * Whether a query or form parameter name is `_method` to a service: PHP (so Laravel and
 * Symfony) also reads `.method`, ` method` and `[method` as `_method`.
 */
function isMethodParam(k: string): boolean {
  if (k.length !== 7 || !k.endsWith('method')) return false;
  const c = k.charCodeAt(0);
  return c === 95 /* _ */ || c === 46 /* . */ || c === 32 || c === 91; /* [ */
}

/**
 * What a POST's `_method` parameters ask for other than POST (see the `method_override`
 * detector): the first such value of the query, the form or multipart fields, or a top-level
 * member of a JSON body; a value that is not a string counts as it is sent, a blank one as
 * none. Undefined for another method or without such a parameter.
 */
function methodOverrideOf(head: HeadInput, body: RequestBody | undefined): string | undefined {
  const m = head.method;
  if (m.length !== 4 || (m !== 'POST' && m.toUpperCase() !== 'POST')) return undefined;
  // the query is decoded only when it holds the word or an escape (`_m%65thod`)
  const q = head.query;
  if (q.indexOf('method') >= 0 || q.indexOf('%') >= 0) {
    const v = overrideIn(parseQuery(q));
    if (v !== undefined) return v;
  }
  if (body === undefined) return undefined;
  return (
    overrideIn(body.form) ?? overrideIn(body.fields) ?? overrideOf(body.json) ?? overrideOf(body.jsonSniffed)
  );
}

/** The first `_method` of `pairs` that asks for another method than POST. */
function overrideIn(pairs: readonly [string, string][] | undefined): string | undefined {
  if (pairs === undefined) return undefined;
  for (const [k, v] of pairs) if (isMethodParam(k) && asksOtherMethod(v) !== undefined) return v;
  return undefined;
}

/** The `_method` member of a JSON object body, when it asks for another method than POST. */
function overrideOf(json: unknown): string | undefined {
  if (json === null || typeof json !== 'object' || Array.isArray(json) || !Object.hasOwn(json, METHOD_PARAM))
    return undefined;
  return asksOtherMethod((json as Record<string, unknown>)[METHOD_PARAM]);
}

/** `v` as sent (JSON text when not a string), unless it is missing, blank or POST. */
function asksOtherMethod(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  const m = typeof v === 'string' ? v : JSON.stringify(v);
  const u = m.trim().toUpperCase();
  return u === '' || u === 'POST' ? undefined : m;
}

/** Request detectors that read the body (length, media type, form bytes, argument count). */
const BODY_AWARE_DETECTORS = new Set([
  'method_override',
  'invalid_percent_encoding',
  'iis_unicode_escape',
  'arg_count',
  'json_depth',
  'prototype_path',
  'body_on_get',
  'content_type',
  'content_type_params',
  'content_encoding',
]);

/** Score matches and decide. Monitor-pack matches only ever make a `monitor` decision. */
export function decide(engine: Engine, matches: readonly Match[]): Verdict {
  const judge = (ms: readonly Match[]) => {
    const fam = new Map<Family, number>();
    let total = 0;
    let free = 0;
    for (const m of ms) {
      if (m.freeText) {
        free += m.score;
        continue;
      }
      fam.set(m.family, (fam.get(m.family) ?? 0) + m.score);
    }
    let over = free >= engine.options.freeTextThreshold;
    for (const [f, s] of fam) {
      const t = engine.familyThresholds.get(f);
      if (t !== undefined) {
        if (s >= t) over = true;
      } else total += s;
    }
    if (total >= engine.options.threshold) over = true;
    return over;
  };
  const families: Partial<Record<Family, number>> = {};
  let score = 0;
  for (const m of matches) {
    families[m.family] = (families[m.family] ?? 0) + m.score;
    score += m.score;
  }
  if (matches.length === 0) return { decision: 'allow', score: 0, families, matches, deny: undefined };
  const enforced = matches.filter((m) => !m.monitor);
  const decision: Decision = judge(enforced) ? 'deny' : judge(matches) ? 'monitor' : 'allow';
  if (decision === 'allow') return { decision, score, families, matches, deny: undefined };
  let top: Family = matches[0]!.family;
  for (const f of FAMILIES) if ((families[f] ?? 0) > (families[top] ?? 0)) top = f;
  const ruleIds = [...new Set(matches.map((m) => m.ruleId))];
  const deny: Deny = {
    code: 'request_blocked',
    reason: FAMILY_REASON[top],
    ruleIds,
    detail: {
      score,
      families,
      ...(decision === 'monitor' ? { monitor: true } : {}),
      matches: matches.slice(0, 16).map((m) => ({ target: m.target, rule: m.ruleId, excerpt: m.excerpt })),
    },
  };
  return { decision, score, families, matches, deny };
}

/** A request for {@link inspectRequest}: what a client sends. */
export interface RawRequest {
  readonly method: string;
  /** the request target (path and query) as on the request line */
  readonly target: string;
  /** header name → value (any case); a missing Content-Length is added for a body, like Node's client */
  readonly headers: Readonly<Record<string, string | string[]>>;
  readonly body?: string | Buffer | null;
  readonly httpVersion?: string;
  /** route name for route-scoped exclusions */
  readonly route?: string;
}

/** Remove dot segments and collapse slashes (RFC 3986 5.2.4), for scoping. */
export function normaliseRequestPath(rawPath: string): string {
  const decoded = urlDecodeOnce(rawPath, false).replace(/\\/g, '/');
  const out: string[] = [];
  for (const seg of decoded.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  return `/${out.join('/')}${decoded.endsWith('/') && out.length ? '/' : ''}`;
}

/** Build the head the gateway would see for a raw request (Node lowercases names, joins duplicates). */
export function headOf(req: RawRequest): { head: HeadInput; body: RequestBody | undefined } {
  const rawHeaders: string[] = [];
  const headers: Record<string, string | string[]> = {};
  let hasCl = false;
  for (const [k, v] of Object.entries(req.headers)) {
    const lk = k.toLowerCase();
    if (lk === 'content-length') {
      if (req.body !== undefined && req.body !== null) continue;
      hasCl = true;
    }
    for (const one of Array.isArray(v) ? v : [v]) {
      rawHeaders.push(k, one);
      const prev = headers[lk];
      if (prev === undefined) headers[lk] = one;
      else headers[lk] = lk === 'cookie' ? `${String(prev)}; ${one}` : `${String(prev)}, ${one}`;
    }
  }
  let body: RequestBody | undefined;
  if (req.body !== undefined && req.body !== null) {
    const buf = typeof req.body === 'string' ? Buffer.from(req.body, 'utf8') : req.body;
    if (!hasCl) {
      rawHeaders.push('Content-Length', String(buf.length));
      headers['content-length'] = String(buf.length);
    }
    if (buf.length > 0) {
      const ct = headerString(headers['content-type']);
      body = parseBody(mediaTypeOf(ct), buf, ct);
    }
  }
  const target = req.target;
  const qi = target.indexOf('?');
  const rawPath = qi < 0 ? target : target.slice(0, qi);
  let query = qi < 0 ? '' : target.slice(qi + 1);
  const hi = query.indexOf('#');
  if (hi >= 0) query = query.slice(0, hi);
  return {
    head: {
      method: req.method,
      target,
      rawPath,
      query,
      path: normaliseRequestPath(rawPath),
      headers,
      rawHeaders,
      httpVersion: req.httpVersion ?? '1.1',
      routeName: req.route ?? 'unmatched',
    },
    body,
  };
}

/**
 * Score a request without a server: the same walk the policy does in onRequest + onBody.
 * The body is parsed by {@link parseBody} from its Content-Type, as the pipeline does.
 */
export function inspectRequest(engine: Engine, req: RawRequest): Verdict {
  const { head, body } = headOf(req);
  const headMatches = inspectHead(engine, head);
  return decide(engine, body ? mergeMatches(headMatches, inspectBody(engine, head, body)) : headMatches);
}
