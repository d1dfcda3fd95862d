/**
 * The audit line serialiser of the hot path: the same bytes as pino's for a flat line of
 * strings, numbers and booleans, without pino's per-line machinery (redaction wrappers,
 * mixins, stream metadata). Lines it cannot take (a nested value, a field pino redacts or
 * serialises itself) are left to pino: `serializeFlatLine` answers undefined.
 *
 * pino 10's rules, which these functions follow (node_modules/pino/lib/tools.js `_asJson`):
 * - keys in `for…in` order, undefined values skipped;
 * - strings through `asString`: on Node < 25 a string of at most 100 characters without a
 *   control character has only `"` and `\` escaped (lone surrogates and U+2028/9 stay raw),
 *   anything else goes through JSON.stringify; on Node >= 25 always JSON.stringify;
 * - numbers as String(n), non-finite ones as null; booleans as true/false;
 * - `,"key":value` appended to the level prefix, then `}` and the end of line.
 * The equivalence is checked against pino itself in test/gateway/observability/audit-json.test.ts.
 */

const NODE_MAJOR = Number(process.versions.node.split('.')[0]);

/** pino's `_asString` (Node < 25): escape `"` and `\` of short strings, JSON.stringify otherwise. */
function shortAsString(str: string): string {
  const l = str.length;
  if (l > 100) return JSON.stringify(str);
  let result = '';
  let last = 0;
  let found = false;
  let point = 255;
  for (let i = 0; i < l && point >= 32; i++) {
    point = str.charCodeAt(i);
    if (point === 34 || point === 92) {
      result += str.slice(last, i) + '\\';
      last = i;
      found = true;
    }
  }
  if (point < 32) return JSON.stringify(str);
  return found ? `"${result}${str.slice(last)}"` : `"${str}"`;
}

/** A JSON string literal exactly as pino writes it (values and keys). */
export const jsonString: (str: string) => string =
  NODE_MAJOR >= 25 ? (str) => JSON.stringify(str) : shortAsString;

// `,"key":` of the keys seen so far (audit lines use a small set of keys)
const keyParts = new Map<string, string>();
const MAX_KEY_PARTS = 512;

function keyPart(key: string): string {
  let part = keyParts.get(key);
  if (part === undefined) {
    part = `,${jsonString(key)}:`;
    if (keyParts.size < MAX_KEY_PARTS) keyParts.set(key, part);
  }
  return part;
}

/**
 * The line as pino would write it with `prefix` (its level prefix, e.g. `{"log":"security_audit"`)
 * and `end` (`}\n`), or undefined when a value is not a string, number, boolean or
 * undefined, or a key is one of `excluded` (fields pino redacts or serialises).
 */
export function serializeFlatLine(
  prefix: string,
  end: string,
  line: Record<string, unknown>,
  excluded: ReadonlySet<string>,
): string | undefined {
  let out = prefix;
  for (const key in line) {
    const value = line[key];
    if (value === undefined) continue;
    if (excluded.has(key)) return undefined;
    let v: string;
    switch (typeof value) {
      case 'string':
        v = jsonString(value);
        break;
      case 'number':
        v = Number.isFinite(value) ? String(value) : 'null';
        break;
      case 'boolean':
        v = value ? 'true' : 'false';
        break;
      default:
        return undefined;
    }
    out += keyPart(key) + v;
  }
  return out + end;
}
