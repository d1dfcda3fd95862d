import type { Readable, Writable } from 'node:stream';
import {
  hashApiKey,
  MAX_API_KEY_LENGTH,
  MIN_RECOMMENDED_KEY_LENGTH,
  unusableApiKey,
} from '../../policies/auth/api-keys.js';

export { MIN_RECOMMENDED_KEY_LENGTH };

/**
 * The hash of an API key for `policies.auth.api_keys.keys[].hash` in gateway.yaml:
 * `sha256:<64 hex>` of the key's UTF-8 bytes.
 *
 * @example hashKey('k3y') // 'sha256:…'
 */
export function hashKey(key: string): string {
  return hashApiKey(key);
}

const HASH_KEY_USAGE = `usage: printf %s "$KEY" | receipt-gateway hash-key
       openssl rand -base64 32 | tee key.txt | receipt-gateway hash-key
prints sha256:<hex> for policies.auth.api_keys.keys[].hash
`;

/**
 * `receipt-gateway hash-key`: reads one API key on stdin (a trailing newline is not part
 * of the key), prints its hash on stdout, and warns on stderr when the key is short.
 * Resolves to the exit code: 0, or 1 when stdin held no key, an over-long one, or one that
 * could never arrive intact in an X-API-Key header (see `unusableApiKey`). It takes no
 * arguments: `hash-key KEY` is refused before stdin is read (it would otherwise wait on the
 * terminal, or hash whatever stdin holds, with the key left in the shell history and `ps`);
 * `--help` prints the usage.
 *
 * @example
 *   printf %s "$API_KEY" | receipt-gateway hash-key
 *   openssl rand -base64 32 | tee key.txt | receipt-gateway hash-key
 */
export async function runHashKey(
  stdin: Readable,
  stdout: Writable,
  stderr: Writable = process.stderr,
  args: readonly string[] = [],
): Promise<number> {
  if (args.length === 1 && (args[0] === '--help' || args[0] === '-h')) {
    stdout.write(HASH_KEY_USAGE);
    return 0;
  }
  if (args.length > 0) {
    stderr.write(
      'hash-key: takes no arguments; give the key on stdin, not on the command line (shell history, ps)\n' +
        HASH_KEY_USAGE,
    );
    return 1;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stdin) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : (chunk as Buffer);
    size += buf.length;
    if (size > MAX_API_KEY_LENGTH + 2) {
      stderr.write(`hash-key: the key is longer than ${MAX_API_KEY_LENGTH} bytes\n`);
      return 1;
    }
    chunks.push(buf);
  }
  const key = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
  if (key === '' || /^\s+$/.test(key)) {
    stderr.write('hash-key: no key on stdin (usage: printf %s "$KEY" | receipt-gateway hash-key)\n');
    return 1;
  }
  if (key.length > MAX_API_KEY_LENGTH) {
    stderr.write(`hash-key: the key is longer than ${MAX_API_KEY_LENGTH} bytes\n`);
    return 1;
  }
  const unusable = unusableApiKey(key);
  if (unusable !== undefined) {
    stderr.write(`hash-key: this key cannot be sent in an X-API-Key header: ${unusable}\n`);
    return 1;
  }
  if (key.length < MIN_RECOMMENDED_KEY_LENGTH) {
    stderr.write(
      `hash-key: warning: the key has ${key.length} characters; use a random key of at least ${MIN_RECOMMENDED_KEY_LENGTH} (e.g. openssl rand -base64 32)\n`,
    );
  }
  stdout.write(`${hashKey(key)}\n`);
  return 0;
}
