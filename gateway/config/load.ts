import fs from 'node:fs/promises';
import { isUtf8 } from 'node:buffer';
import path from 'node:path';
import YAML, {
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Document,
  type Node as YamlNode,
} from 'yaml';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import { isIP } from 'node:net';
import { ConfigSchema, type GatewayConfig } from './schema.js';
import { parseDuration } from './units.js';
import { storeUrlError, withoutCredentials } from '../store/url.js';

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
        const pair = node.items.find(
          (p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg),
        );
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

const VAR_AT = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/y;

/** A value that came from the environment and was typed, with the text it was typed from. */
interface Coerced {
  readonly keyPath: (string | number)[];
  readonly text: string;
}

/**
 * Interpolate `${VAR}` / `${VAR:-default}` in every scalar of the document; `$${` stands for
 * a literal `${`. Any other `${` (unterminated, `${VAR:?msg}`, `${VAR-x}`, a nested reference
 * in a default) is reported: left as it is, it would become the value itself (a JWT secret
 * anyone reading the file knows). A plain (unquoted) scalar that becomes a number or boolean
 * after substitution takes that type, so `port: ${GATEWAY_PORT:-8080}` is the number 8080;
 * so does a quoted scalar that is exactly one reference (`port: "${GATEWAY_PORT:-8080}"`,
 * as flow mappings need). Those typed values are returned, so that one a string is wanted
 * for (an all-digit API_KEY) can be given back as the text it was.
 */
function interpolate(
  doc: Document,
  env: Readonly<Record<string, string | undefined>>,
  onProblem: (message: string, node: YamlNode, keyPath: (string | number)[]) => void,
): Coerced[] {
  const coerced: Coerced[] = [];
  YAML.visit(doc, {
    Scalar(_key, node, ancestors) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      const raw = node.value;
      let replaced = '';
      let malformed = false;
      for (let i = 0; i < raw.length;) {
        if (raw.startsWith('$${', i)) {
          replaced += '${';
          i += 3;
          continue;
        }
        if (!raw.startsWith('${', i)) {
          replaced += raw[i];
          i += 1;
          continue;
        }
        VAR_AT.lastIndex = i;
        const m = VAR_AT.exec(raw);
        const name = m?.[1];
        const dflt = m?.[2];
        if (!m || name === undefined || dflt?.includes('${')) {
          malformed = true;
          break;
        }
        i += m[0].length;
        const v = env[name];
        if (v !== undefined && v !== '') replaced += v;
        else if (dflt !== undefined) replaced += dflt;
        else if (v === undefined)
          onProblem(
            `environment variable ${name} is not set and has no default (write \${${name}:-default})`,
            node,
            keyPathOf(ancestors, node),
          );
      }
      if (malformed) {
        // (the text is not repeated: it may be a secret written in the file)
        onProblem(
          'malformed ${…} reference: write ${VAR} or ${VAR:-default} (a default cannot hold another reference), or $${ for a literal ${',
          node,
          keyPathOf(ancestors, node),
        );
        node.value = '';
        return;
      }
      // A plain scalar, or a quoted one that is exactly one ${VAR} reference (quotes are
      // needed inside `{ … }` flow mappings), takes the type of what it expands to.
      const single = /^\$\{[^}]*\}$/.test(raw);
      if (node.type === 'PLAIN' || single) {
        const typed = coerce(replaced);
        node.value = typed;
        if (typeof typed !== 'string') coerced.push({ keyPath: keyPathOf(ancestors, node), text: replaced });
      } else node.value = replaced;
    },
  });
  return coerced;
}

/** The key path of a node from the ancestors YAML.visit passes. */
function keyPathOf(ancestors: readonly unknown[], node: unknown): (string | number)[] {
  const out: (string | number)[] = [];
  for (let i = 0; i < ancestors.length; i++) {
    const a = ancestors[i];
    const child = i + 1 < ancestors.length ? ancestors[i + 1] : node;
    if (isPair(a) && isScalar(a.key) && a.value === child) out.push(String(a.key.value));
    else if (isSeq(a)) {
      const idx = a.items.indexOf(child as never);
      if (idx >= 0) out.push(idx);
    }
  }
  return out;
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
  const doc = YAML.parseDocument(text, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
    strict: true,
  });
  const source = new SourceMap(file, doc, lines);
  const problems: ConfigProblem[] = [];
  for (const err of doc.errors) {
    const pos = lines.linePos(err.pos[0]);
    problems.push({
      file,
      line: pos.line,
      column: pos.col,
      keyPath: '',
      // (the yaml package quotes a stray scalar's text: it could be a secret's value)
      message: err.message
        .split('\n')[0]!
        .replace(/^(Unexpected [\w-]*scalar token in YAML stream): .*$/, '$1'),
    });
  }
  if (problems.length > 0) throw new ConfigLoadError(problems);

  const missingAt = new Set<string>();
  const coerced = interpolate(doc, env, (message, node, keyPath) => {
    const r = rangeOf(node);
    const pos = r ? lines.linePos(r[0]) : { line: 1, col: 1 };
    const key = formatKeyPath(keyPath);
    missingAt.add(key);
    problems.push({ file, line: pos.line, column: pos.col, keyPath: key, message });
  });

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    // the yaml package refuses aliases that expand without bound ("billion laughs")
    problems.push({
      file,
      line: 1,
      column: 1,
      keyPath: '',
      message: `cannot expand the YAML aliases: ${(err as Error).message}`,
    });
    throw new ConfigLoadError(problems);
  }
  if (value === null || value === undefined) {
    // Nothing but blanks and comments: most likely a file caught while it was being
    // written (truncated, not yet filled). Loading it would swap in an empty config
    // (no routes, default policies); a deliberate minimal config is at least `{}`.
    problems.push({
      file,
      line: 1,
      column: 1,
      keyPath: '',
      message: 'the configuration file is empty (write `{}` for a configuration of defaults)',
    });
    throw new ConfigLoadError(problems);
  }
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.push({
      file,
      line: 1,
      column: 1,
      keyPath: '',
      message: 'the configuration must be a mapping of sections',
    });
    throw new ConfigLoadError(problems);
  }
  const withDefaults = Value.Default(ConfigSchema, structuredClone(value));
  // A number or boolean from the environment where a string is wanted (an all-digit API_KEY,
  // AUDIT_LOG_FILE=true) is the text the variable held.
  if (coerced.length > 0) {
    const wrong = new Set(
      [...validator.Errors(withDefaults)].map((e) => formatKeyPath(pointerToPath(e.path))),
    );
    for (const c of coerced) if (wrong.has(formatKeyPath(c.keyPath))) setAt(withDefaults, c.keyPath, c.text);
  }
  // A value emptied by a missing variable is reported once, as the missing variable.
  const seen = new Set<string>(missingAt);
  for (const e of validator.Errors(withDefaults)) {
    const keyPath = pointerToPath(e.path);
    const key = formatKeyPath(keyPath);
    if (seen.has(key)) continue;
    seen.add(key);
    const unknownKey = /additional properties/i.test(e.message) || e.message === 'Unexpected property';
    problems.push(source.problem(keyPath, describe(e.message, e.schema, keyPath, e.value), unknownKey));
  }
  // The core's semantic checks run here too, so that they are reported together with the
  // schema errors (compile repeats them on the values it uses).
  problems.push(...semanticProblems(withDefaults, source, seen));
  problems.sort((a, b) => a.line - b.line || a.column - b.column);
  if (problems.length > 0) throw new ConfigLoadError(problems);
  return { config: withDefaults as GatewayConfig, source, file, text };
}

function validCidr(cidr: string): boolean {
  const [addr, bits, extra] = cidr.split('/');
  const family = isIP(addr ?? '');
  if (family === 0 || extra !== undefined) return false;
  if (bits === undefined) return true;
  if (!/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 6 ? 128 : 32);
}

/**
 * URLs, CIDRs, duplicate route names, workers with the memory store: checked wherever the
 * value has the right type, whatever else is wrong in the file. `skip`: key paths that
 * already have a schema error.
 */
function semanticProblems(value: unknown, source: SourceMap, skip: ReadonlySet<string>): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const add = (keyPath: (string | number)[], message: string) => {
    if (!skip.has(formatKeyPath(keyPath))) out.push(source.problem(keyPath, message));
  };
  const obj = (v: unknown): Record<string, unknown> =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  const cfg = obj(value);
  const proxies = obj(cfg.listen).trusted_proxies;
  if (Array.isArray(proxies)) {
    proxies.forEach((c, i) => {
      if (typeof c === 'string' && !validCidr(c))
        add(['listen', 'trusted_proxies', i], `invalid CIDR "${c}"`);
    });
  }
  const url = obj(cfg.upstream).url;
  if (typeof url === 'string') {
    let ok = false;
    try {
      const u = new URL(url);
      ok =
        (u.protocol === 'http:' || u.protocol === 'https:') &&
        !u.search &&
        !u.hash &&
        !u.username &&
        !u.password;
    } catch {
      ok = false;
    }
    if (!ok)
      add(
        ['upstream', 'url'],
        url.includes('@')
          ? `invalid upstream URL "${withoutCredentials(url)}": credentials in the URL are not supported (use http://host:port[/base])`
          : `invalid upstream URL "${url}" (use http://host:port[/base])`,
      );
  }
  const hook = obj(cfg.monitoring).webhook_url;
  if (typeof hook === 'string' && hook !== '') {
    let ok = false;
    try {
      const u = new URL(hook);
      ok = u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      ok = false;
    }
    // the URL is not repeated: chat and paging webhooks carry their secret in it
    if (!ok) add(['monitoring', 'webhook_url'], 'invalid alert webhook URL (use http(s)://host[:port]/path)');
  }
  const store = obj(cfg.store).url;
  const storeError = typeof store === 'string' ? storeUrlError(store) : undefined;
  if (storeError !== undefined) add(['store', 'url'], storeError);
  if (
    typeof cfg.workers === 'number' &&
    cfg.workers > 1 &&
    typeof store === 'string' &&
    store.startsWith('memory:')
  ) {
    add(
      ['workers'],
      `workers: ${cfg.workers} with the memory:// store would enforce rate limits, lockouts and bans per worker, not together; use a redis:// store (REDIS_URL) or workers: 1`,
    );
  }
  if (Array.isArray(cfg.routes)) {
    const names = new Set<string>();
    cfg.routes.forEach((r, i) => {
      const name = obj(r).name;
      if (typeof name !== 'string') return;
      if (names.has(name)) add(['routes', i, 'name'], `duplicate route name "${name}"`);
      names.add(name);
    });
  }
  const listen = obj(cfg.listen);
  if (typeof listen.header_timeout === 'string' && typeof listen.request_timeout === 'string') {
    try {
      const hdr = parseDuration(listen.header_timeout);
      const req = parseDuration(listen.request_timeout);
      if (req > 0 && hdr > req)
        add(
          ['listen', 'header_timeout'],
          `must not be longer than listen.request_timeout (${listen.request_timeout})`,
        );
    } catch {
      // the schema reports malformed durations
    }
  }
  return out;
}

/** Keys whose values are secrets, or sit next to them: an error about their value does not quote it. */
const SECRET_KEY = /secret|hash|password|passwd|token|api_keys|credential/i;

function describe(
  message: string,
  schema: unknown,
  keyPath: readonly (string | number)[],
  value: unknown,
): string {
  const s = schema as
    | {
        pattern?: string;
        description?: string;
        anyOf?: { const?: unknown; pattern?: string; description?: string }[];
      }
    | undefined;
  if (/additional properties/i.test(message) || message === 'Unexpected property') {
    return `unknown key "${String(keyPath[keyPath.length - 1])}"`;
  }
  if (s?.anyOf && s.anyOf.every((x) => x.const !== undefined)) {
    return `must be one of ${s.anyOf.map((x) => JSON.stringify(x.const)).join(', ')}`;
  }
  // (a secret's value, or a plain API key pasted where its hash belongs, is not repeated:
  // reload errors go to the ops log, the audit log, the dashboard and the admin API)
  const shown = keyPath.some((seg) => typeof seg === 'string' && SECRET_KEY.test(seg))
    ? 'invalid value'
    : `invalid value ${JSON.stringify(value)}`;
  if (s?.pattern && s.description) return `${shown}: ${s.description}`;
  // a string against a union such as "a pattern or null": say what the string must be
  // (or, where the member says nothing, what the union says: LOGIN_LOCKOUT_DURATION=abc)
  const member = typeof value === 'string' ? s?.anyOf?.find((x) => x.pattern !== undefined) : undefined;
  const said = member?.description ?? s?.description;
  if (member && said !== undefined) return `${shown}: ${said}`;
  return message.charAt(0).toLowerCase() + message.slice(1);
}

function setAt(root: unknown, keyPath: readonly (string | number)[], v: unknown): void {
  let node = root as Record<string | number, unknown> | undefined;
  for (const seg of keyPath.slice(0, -1)) {
    const next = node?.[seg];
    if (next === null || typeof next !== 'object') return;
    node = next as Record<string | number, unknown>;
  }
  const last = keyPath[keyPath.length - 1];
  if (node && last !== undefined && Object.hasOwn(node, last)) node[last] = v;
}

function pointerToPath(pointer: string): (string | number)[] {
  if (pointer === '' || pointer === '/') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((seg) => seg.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((seg) => (/^\d+$/.test(seg) ? Number(seg) : seg));
}

/**
 * Largest configuration file read: a gateway.yaml with hundreds of routes, keys and
 * exclusions is far below it, and a file that is not one (a log, a dump) is refused before
 * it is parsed.
 */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

function tooLarge(size: number): string {
  return `the file is ${size} bytes; a configuration is at most ${MAX_CONFIG_BYTES} bytes (4 MiB)`;
}

/**
 * The bytes of a configuration file: a regular file of at most {@link MAX_CONFIG_BYTES}
 * (checked before it is read); a ConfigLoadError otherwise.
 */
export async function readConfigBytes(file: string): Promise<Buffer> {
  const fileProblem = (message: string) =>
    new ConfigLoadError([{ file, line: 0, column: 0, keyPath: '', message }]);
  let handle: fs.FileHandle | undefined;
  try {
    // (non-blocking: a FIFO without a writer would otherwise hold the open forever)
    handle = await fs.open(path.resolve(file), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const st = await handle.stat();
    // (a FIFO or a device such as /dev/zero would be read without end)
    if (!st.isFile()) throw fileProblem('not a regular file');
    if (st.size > MAX_CONFIG_BYTES) throw fileProblem(tooLarge(st.size));
    const bytes = await handle.readFile();
    if (bytes.length > MAX_CONFIG_BYTES) throw fileProblem(tooLarge(bytes.length));
    return bytes;
  } catch (err) {
    if (err instanceof ConfigLoadError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw fileProblem(code === 'ENOENT' ? 'file not found' : `cannot read file (${code})`);
  } finally {
    await handle?.close();
  }
}

/** Read and parse a configuration file (async; used at start and on reload). */
export async function loadConfigFile(
  file: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<LoadedConfig> {
  const bytes = await readConfigBytes(file);
  if (!isUtf8(bytes)) {
    // decoded leniently, the bytes would become U+FFFD in a host, a secret or a pattern
    const at = firstInvalidUtf8(bytes);
    const lineStart = bytes.lastIndexOf(0x0a, at - 1) + 1;
    throw new ConfigLoadError([
      {
        file,
        line: bytes.subarray(0, lineStart).filter((b) => b === 0x0a).length + 1,
        column: bytes.subarray(lineStart, at).toString('utf8').length + 1,
        keyPath: '',
        message: 'the file is not valid UTF-8 (save it as UTF-8)',
      },
    ]);
  }
  return parseConfig(bytes.toString('utf8'), file, env);
}

/** The offset of the first byte of the first sequence that is not UTF-8 (the error path only). */
function firstInvalidUtf8(bytes: Buffer): number {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  // where the last multi-byte sequence began, and how many continuation bytes it still needs
  let lead = 0;
  let need = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    try {
      decoder.decode(bytes.subarray(i, i + 1), { stream: true });
    } catch {
      return need > 0 ? lead : i;
    }
    if (b >= 0x80 && b < 0xc0) need -= 1;
    else {
      lead = i;
      need = b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : b >= 0xc0 ? 1 : 0;
    }
  }
  // a sequence cut short by the end of the file
  return lead;
}
