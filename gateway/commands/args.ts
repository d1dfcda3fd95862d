import { parseArgs } from 'node:util';

export type ParsedOptions =
  | { readonly ok: true; readonly values: Readonly<Record<string, string | undefined>> }
  | { readonly ok: false; readonly error: string };

/**
 * A command's `--name VALUE` / `--name=VALUE` options, strictly: an unknown option (a typo
 * such as `--conifg` would otherwise leave ./gateway.yaml in use), a missing or empty value,
 * or a stray argument is a usage error (exit 2), never ignored.
 */
export function parseOptions(args: readonly string[], names: readonly string[]): ParsedOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: Object.fromEntries(names.map((n) => [n, { type: 'string' as const }])),
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    // node's messages go on about `--` and positionals: the first sentence says it
    return { ok: false, error: (err as Error).message.split(/\.\s/)[0]! };
  }
  for (const n of names) {
    if (values[n] === '') return { ok: false, error: `Option '--${n}' needs a value` };
  }
  return { ok: true, values: values as Record<string, string | undefined> };
}
