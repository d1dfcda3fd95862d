/** Token-making helpers shared by the auth tests (not a test file itself). */
import { SignJWT, generateKeyPair, exportJWK, exportSPKI, type JWTPayload, type CryptoKey } from 'jose';
import { createHmac } from 'node:crypto';
import { CLOCK_START } from '../../helpers/context.js';

export const SECRET = 'test-secret-0123456789-abcdefghijklmnop';
export const NOW_S = Math.floor(CLOCK_START / 1000);

export const b64 = (v: unknown): string =>
  Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A token signed with HS256 by the shared secret (or the given one), claims relative to the fake clock. */
export async function hs(
  claims: JWTPayload & Record<string, unknown> = {},
  secret = SECRET,
  header: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT({ sub: 'alice', role: 'user', iat: NOW_S, exp: NOW_S + 3600, ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT', ...header } as never)
    .sign(new TextEncoder().encode(secret));
}

export interface KeyPair {
  readonly alg: string;
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  readonly jwk: Record<string, unknown>;
  readonly pem: string;
}

export async function keyPair(alg: 'RS256' | 'ES256' | 'EdDSA', kid: string): Promise<KeyPair> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, privateKey, publicKey, jwk, pem: await exportSPKI(publicKey) };
}

/** A token signed by a key pair (kid in the header unless `kid: null`). */
export async function signed(
  pair: KeyPair,
  claims: JWTPayload & Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const h: Record<string, unknown> = { alg: pair.alg, typ: 'JWT', kid: pair.kid, ...header };
  if (h.kid === null) delete h.kid;
  return new SignJWT({ sub: 'alice', role: 'user', iat: NOW_S, exp: NOW_S + 3600, ...claims })
    .setProtectedHeader(h as never)
    .sign(pair.privateKey);
}

/** Replace the payload segment, keeping header and signature (a tampered token). */
export function tamper(token: string, claims: Record<string, unknown>): string {
  const [h, , s] = token.split('.');
  return `${h}.${b64(claims)}.${s}`;
}

/** An HS256 token built by hand (header and payload taken as given, even if not objects). */
export function hmacToken(header: unknown, payload: unknown, secret = SECRET): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** An HS256 token over segments taken as spelt (signed exactly as they are, canonical or not). */
export function hmacOverSegments(headerSegment: string, payloadSegment: string, secret = SECRET): string {
  const input = `${headerSegment}.${payloadSegment}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * The other spellings of a canonical base64url segment that decode to the same bytes: its
 * last character with some of the unused low bits set (3 for a length of 4n + 3, 15 for
 * 4n + 2, none for 4n). Lenient decoders (atob, Buffer, jose on Node 20) accept them all.
 */
export function respellings(segment: string): string[] {
  const unused = segment.length % 4 === 2 ? 0b1111 : segment.length % 4 === 3 ? 0b11 : 0;
  const last = B64URL.indexOf(segment.at(-1)!);
  const out: string[] = [];
  for (let bits = 1; bits <= unused; bits++) out.push(segment.slice(0, -1) + B64URL[last | bits]!);
  return out;
}

/** The token with segment `index` (0 header, 1 payload, 2 signature) spelt otherwise, each way. */
export function respelledTokens(token: string, index: 0 | 1 | 2): string[] {
  const parts = token.split('.');
  return respellings(parts[index]!).map((seg) => parts.map((p, i) => (i === index ? seg : p)).join('.'));
}

// Run directly (as tap does with every file under test/), this module checks its own helpers.
if (
  process.argv[1] !== undefined &&
  import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href
) {
  const { default: t } = await import('tap');
  const { jwtVerify, decodeProtectedHeader } = await import('jose');
  const at = new Date(CLOCK_START);
  t.test('hs() and hmacToken() verify with the shared secret', async (t) => {
    const key = new TextEncoder().encode(SECRET);
    t.match((await jwtVerify(await hs({ role: 'admin' }), key, { currentDate: at })).payload, {
      sub: 'alice',
      role: 'admin',
      exp: NOW_S + 3600,
    });
    t.match((await jwtVerify(hmacToken({ alg: 'HS256' }, { sub: 'x' }), key)).payload, { sub: 'x' });
  });
  t.test('signed() uses the pair and its kid; kid: null leaves it out', async (t) => {
    const pair = await keyPair('ES256', 'e1');
    const token = await signed(pair);
    t.equal(decodeProtectedHeader(token).kid, 'e1');
    t.match((await jwtVerify(token, pair.publicKey, { currentDate: at })).payload, { sub: 'alice' });
    t.equal(decodeProtectedHeader(await signed(pair, {}, { kid: null })).kid, undefined);
  });
  t.test('respellings() decode to the same bytes and differ as strings', async (t) => {
    for (const n of [1, 2, 3, 32, 64]) {
      const seg = Buffer.alloc(n, 0xa5).toString('base64url');
      const others = respellings(seg);
      t.equal(others.length, [0, 15, 3][n % 3], `${n} bytes`);
      for (const o of others) {
        t.not(o, seg);
        t.same(Buffer.from(o, 'base64url'), Buffer.from(seg, 'base64url'));
      }
    }
  });
  t.test('tamper() swaps the payload only', async (t) => {
    const token = await hs();
    const forged = tamper(token, { sub: 'eve' });
    t.equal(forged.split('.')[0], token.split('.')[0]);
    t.equal(forged.split('.')[2], token.split('.')[2]);
    t.equal(Buffer.from(forged.split('.')[1]!, 'base64url').toString(), '{"sub":"eve"}');
  });
}
