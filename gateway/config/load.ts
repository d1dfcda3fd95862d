import fs from 'node:fs/promises';
import path from 'node:path';
import YAML, { isMap, isPair, isScalar, isSeq, LineCounter, type Document, type Node as YamlNode } from 'yaml';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import { ConfigSchema, type GatewayConfig } from './schema.js';

/** One problem in a configuration file, with where it is. */
export interface ConfigProblem {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  /** key path, e.g. routes[2].match.path */
  readonly keyPath: string;
  readonly message: string;
}

export class ConfigLoadError extends Error {
  readonly problems: readonly ConfigProblem[];
  constructor(problems: readonly ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigLoadError';
    this.problems = problems;
  }
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}:${p.line}:${p.column}: ${p.keyPath ? `${p.keyPath}: ` : ''}${p.message}`;
}

export function formatKeyPath(p: readonly (string | number)[]): string {
  let out = '';
  for (const seg of p) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** A parsed YAML document that can tell where a key path is. */
export class SourceMap {
  constructor(
    readonly file: string,
    private readonly doc: Document | undefined,
    private readonly lines: LineCounter,
  ) {}

  /** The position of the node at `keyPath` (or of its nearest existing parent). */
  locate(keyPath: readonly (string | number)[], atKey = false): { line: number; column: number } {
    let node: unknown = this.doc?.contents;
    let best: [number, number] | undefined = rangeOf(node);
    for (const seg of keyPath) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
        if (!pair) break;
        best = rangeOf(pair.key) ?? best;
        node = pair.value;
        if (!atKey && rangeOf(node) && !isMap(node) && !isSeq(node)) best = rangeOf(node);
      } else if (isSeq(node) && typeof seg === 'number') {
        node = node.items[seg];
        best = rangeOf(node) ?? best;
      } else break;
    }
    if (!best) return { line: 1, column: 1 };
    const pos = this.lines.linePos(best[0]);
    return { line: pos.line, column: pos.col };
  }

  problem(keyPath: readonly (string | number)[], message: string, atKey = false): ConfigProblem {
    const { line, column } = this.locate(keyPath, atKey);
    return { file: this.file, line, column, keyPath: formatKeyPath(keyPath), message };
  }
}

function rangeOf(node: unknown): [number, number] | undefined {
  const r = (node as YamlNode | undefined)?.range;
  return r ? [r[0], r[1]] : undefined;
}

const VAR_RE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * Interpolate `${VAR}` / `${VAR:-default}` in every scalar of the document. A plain
 * (unquoted) scalar that becomes a number, boolean or null after substitution takes that
 * type, so `port: ${GATEWAY_PORT:-8080}` is the number 8080.
 */
function interpolate(
  doc: Document,
  env: Readonly<Record<string, string | undefined>>,
  onMissing: (name: string, node: YamlNode) => void,
): void {
  YAML.visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      const raw = node.value;
      const replaced = raw.replace(VAR_RE, (_m, name: string, dflt: string | undefined) => {
        const v = env[name];
        if (v !== undefined && v !== '') return v;
        if (dflt !== undefined) return dflt;
        if (v === '') return '';
        onMissing(name, node);
        return '';
      });
      if (node.type === 'PLAIN') {
        const typed = coerce(replaced);
        node.value = typed;
      } else node.value = replaced;
    },
  });
}

function coerce(s: string): unknown {
  const t = s.trim();
  if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t);
  if (/^(true|True|TRUE)$/.test(t)) return true;
  if (/^(false|False|FALSE)$/.test(t)) return false;
  return s;
}

const validator = TypeCompiler.Compile(ConfigSchema);

export interface LoadedConfig {
  readonly config: GatewayConfig;
  readonly source: SourceMap;
  readonly file: string;
  readonly text: string;
}

/**
 * Parse, interpolate, default and validate a configuration text. Collects every problem
 * and throws one ConfigLoadError listing them all.
 */
export function parseConfig(
  text: string,
  file: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
): LoadedConfig {
  const lines = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, strict: true });
  const source = new SourceMap(file, doc, lines);
  const problems: ConfigProblem[] = [];
  for (const err of doc.errors) {
    const pos = lines.linePos(err.pos[0]);
    problems.push({ file, line: pos.line, column: pos.col, keyPath: '', message: err.message.split('\n')[0]! });
  }
  if (problems.length > 0) throw new ConfigLoadError(problems);

  interpolate(doc, env, (name, node) => {
    const r = rangeOf(node);
    const pos = r ? lines.linePos(r[0]) : { line: 1, col: 1 };
    problems.push({
      file,
      line: pos.line,
      column: pos.col,
      keyPath: '',
      message: `environment variable ${name} is not set and has no default (write \${${name}:-default})`,
    });
  });

  let value: unknown = doc.toJS({ maxAliasCount: 100 });
  if (value === null || value === undefined) value = {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.push({ file, line: 1, column: 1, keyPath: '', message: 'the configuration must be a mapping of sections' });
    throw new ConfigLoadError(problems);
  }
  const withDefaults = Value.Default(ConfigSchema, structuredClone(value));
  const seen = new Set<string>();
  for (const e of validator.Errors(withDefaults)) {
    const keyPath = pointerToPath(e.path);
    const key = formatKeyPath(keyPath);
    if (seen.has(key)) continue;
    seen.add(key);
    const unknownKey = /additional properties/i.test(e.message) || e.message === 'Unexpected property';
    problems.push(source.problem(keyPath, describe(e.message, e.schema, keyPath, e.value), unknownKey));
  }
  problems.sort((a, b) => a.line - b.line || a.column - b.column);
  if (problems.length > 0) throw new ConfigLoadError(problems);
  return { config: withDefaults as GatewayConfig, source, file, text };
}

function describe(message: string, schema: unknown, keyPath: readonly (string | number)[], value: unknown): string {
  const s = schema as { pattern?: string; description?: string; anyOf?: { const?: unknown }[] } | undefined;
  if (/additional properties/i.test(message) || message === 'Unexpected property') {
    return `unknown key "${String(keyPath[keyPath.length - 1])}"`;
  }
  if (s?.anyOf && s.anyOf.every((x) => x.const !== undefined)) {
    return `must be one of ${s.anyOf.map((x) => JSON.stringify(x.const)).join(', ')}`;
  }
  if (s?.pattern && s.description) return `invalid value ${JSON.stringify(value)}: ${s.description}`;
  return message.charAt(0).toLowerCase() + message.slice(1);
}

function pointerToPath(pointer: string): (string | number)[] {
  if (pointer === '' || pointer === '/') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((seg) => seg.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((seg) => (/^\d+$/.test(seg) ? Number(seg) : seg));
}

/** Read and parse a configuration file (async; used at start and on reload). */
export async function loadConfigFile(
  file: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<LoadedConfig> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await fs.readFile(abs, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigLoadError([
      { file, line: 0, column: 0, keyPath: '', message: code === 'ENOENT' ? 'file not found' : `cannot read file (${code})` },
    ]);
  }
  return parseConfig(text, file, env);
}
