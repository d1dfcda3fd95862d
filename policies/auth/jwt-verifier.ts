import { createPublicKey, webcrypto } from 'node:crypto';
import {
  jwtVerify,
  createLocalJWKSet,
  errors,
  type JWK,
  type JWTVerifyOptions,
  type JWSHeaderParameters,
  type FlattenedJWSInput,
  type CryptoKey,
} from 'jose';
import { AuthFailure, type AuthFailureReason } from './reasons.js';
import { isCanonicalCompactJws } from './compact-jws.js';
import type { JwksClient } from './jwks-client.js';
import type { TokenCache } from './token-cache.js';

/** Every algorithm the gateway can pin. `none` is not among them and never will be. */
export const JWT_ALGORITHMS = [
  'HS256',
  'HS384',
  'HS512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

export const isHmac = (alg: string): boolean => alg.startsWith('HS');

type LocalSet = ReturnType<typeof createLocalJWKSet>;

export interface JwtVerifierOptions {
  /** pinned algorithms; a token's `alg` outside this list is refused before any key lookup */
  readonly algorithms: readonly JwtAlgorithm[];
  /** HMAC keys by algorithm, when HS* algorithms are pinned */
  readonly hmacKeys: ReadonlyMap<string, CryptoKey>;
  /** static public keys (PEM / JWK from the config) */
  readonly staticKeys: LocalSet | undefined;
  readonly jwks: JwksClient | undefined;
  readonly issuer: string | string[] | undefined;
  readonly audience: string | string[] | undefined;
  readonly clockToleranceSec: number;
  readonly requiredClaims: readonly string[];
  readonly maxTokenBytes: number;
  readonly cache: TokenCache | undefined;
  readonly now: () => number;
}

/**
 * Verifies a compact JWT against pinned algorithms and configured keys, with the claim
 * checks of the config, and maps every failure to one reason of the fixed set. A token must
 * be spelt in canonical base64url (one accepted spelling per token) and must not be issued
 * in the future (`iat` beyond the clock tolerance).
 * `verify` returns the claims synchronously on a cache hit (the hot path does not wait
 * for a microtask) and a promise otherwise.
 */
/** The NumericDate claims the verifier reads (RFC 7519 §4.1.4–6). */
const DATE_CLAIMS = ['exp', 'nbf', 'iat'] as const;

export class JwtVerifier {
  private readonly o: JwtVerifierOptions;
  private readonly allowed: ReadonlySet<string>;
  private readonly baseOptions: JWTVerifyOptions;

  constructor(o: JwtVerifierOptions) {
    this.o = o;
    this.allowed = new Set(o.algorithms);
    const base: JWTVerifyOptions = {
      algorithms: [...o.algorithms],
      clockTolerance: o.clockToleranceSec,
      requiredClaims: [...o.requiredClaims],
    };
    if (o.issuer !== undefined) base.issuer = o.issuer;
    if (o.audience !== undefined) base.audience = o.audience;
    this.baseOptions = base;
  }

  /** Claims of a valid token, or an AuthFailure (thrown or as the rejection). */
  verify(token: string): Readonly<Record<string, unknown>> | Promise<Readonly<Record<string, unknown>>> {
    if (token.length > this.o.maxTokenBytes) throw new AuthFailure('oversized');
    // a cached token passed the shape check when it was verified (same string)
    const cached = this.o.cache?.get(token);
    if (cached !== undefined) return cached.claims;
    // One spelling per token: jose (like atob and Buffer) ignores the unused bits of a
    // segment's last character, so `…A` and `…B` could both verify.
    if (!isCanonicalCompactJws(token)) throw new AuthFailure('malformed');
    const header = decodeHeader(token);
    const alg = header.alg;
    if (typeof alg !== 'string' || !this.allowed.has(alg)) throw new AuthFailure('algorithm');
    return this.verifySigned(token, alg);
  }

  private async verifySigned(token: string, alg: string): Promise<Readonly<Record<string, unknown>>> {
    const now = this.o.now();
    const options: JWTVerifyOptions = { ...this.baseOptions, currentDate: new Date(now) };
    let payload: Record<string, unknown>;
    try {
      if (isHmac(alg)) {
        const key = this.o.hmacKeys.get(alg);
        if (key === undefined) throw new AuthFailure('algorithm');
        payload = (await jwtVerify(token, key, options)).payload;
      } else {
        payload = await this.verifyAsymmetric(token, options);
      }
    } catch (err) {
      throw toFailure(err);
    }
    // jose refuses a non-numeric `iat` but checks its value only with maxTokenAge, which
    // would make `iat` required. Compared as jose compares `nbf` (whole seconds, tolerance):
    // a token issued in the future comes from an issuer with a wrong clock or was mis-minted.
    const iat = payload.iat;
    if (typeof iat === 'number' && iat > Math.floor(now / 1000) + this.o.clockToleranceSec)
      throw new AuthFailure('issued_in_future');
    // JSON.parse reads a number beyond the double range (`"exp":1e400`) as Infinity, which
    // jose takes as a NumericDate: a token that never expires, or valid since ever. No date
    // of RFC 7519 §2 is infinite.
    for (const claim of DATE_CLAIMS) {
      const d = payload[claim];
      if (typeof d === 'number' && !Number.isFinite(d)) throw new AuthFailure('claims');
    }
    const exp = typeof payload.exp === 'number' ? payload.exp : undefined;
    this.o.cache?.set(token, payload, exp);
    return payload;
  }

  private async verifyAsymmetric(token: string, options: JWTVerifyOptions): Promise<Record<string, unknown>> {
    const { staticKeys, jwks } = this.o;
    let fromJwks = false;
    // (a refetch that another request made meanwhile counts as one made for this token)
    const keysBefore = jwks?.keySet;
    const resolve = async (header: JWSHeaderParameters, jws?: FlattenedJWSInput): Promise<CryptoKey> => {
      if (staticKeys !== undefined) {
        try {
          return await staticKeys(header, jws);
        } catch (err) {
          if (!(err instanceof errors.JWKSNoMatchingKey) || jwks === undefined) throw err;
        }
      }
      if (jwks === undefined) throw new errors.JWKSNoMatchingKey();
      fromJwks = true;
      return jwks.getKey(header, jws);
    };
    try {
      return (await jwtVerify(token, resolve, options)).payload;
    } catch (err) {
      // a JWKS key of the token's kid that does not verify it: the kid may have been given to
      // a new key; once the keys were refetched (under the cooldown), verify once more
      if (
        err instanceof errors.JWSSignatureVerificationFailed &&
        fromJwks &&
        jwks !== undefined &&
        (jwks.keySet !== keysBefore || (await jwks.refetchAfterBadSignature()))
      )
        return (await jwtVerify(token, resolve, options)).payload;
      // Several keys without a kid can match (static PEMs, a JWKS without kids):
      // try each, as jose's documentation shows.
      if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
      let last: unknown = err;
      for await (const key of err as unknown as AsyncIterable<CryptoKey>) {
        try {
          return (await jwtVerify(token, key, options)).payload;
        } catch (inner) {
          last = inner;
          if (!(inner instanceof errors.JWSSignatureVerificationFailed)) break;
        }
      }
      throw last;
    }
  }
}

function decodeHeader(token: string): Record<string, unknown> {
  const seg = token.slice(0, token.indexOf('.'));
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(seg, 'base64url').toString('utf8'));
  } catch {
    throw new AuthFailure('malformed');
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header))
    throw new AuthFailure('malformed');
  return header as Record<string, unknown>;
}

/** Map anything verification threw to one reason of the fixed set. */
export function toFailure(err: unknown): AuthFailure {
  if (err instanceof AuthFailure) return err;
  const code = (err as { code?: string } | null)?.code;
  let reason: AuthFailureReason;
  switch (code) {
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      reason = 'algorithm';
      break;
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
    case 'ERR_JWKS_INVALID':
    case 'ERR_JWK_INVALID':
      reason = 'signature';
      break;
    case 'ERR_JWT_EXPIRED':
      reason = 'expired';
      break;
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': {
      // jose's `reason` is 'check_failed' for a time in the future, 'invalid' for a non-number
      const { claim, reason: why } = err as { claim?: string; reason?: string };
      reason = claim === 'nbf' && why === 'check_failed' ? 'not_yet_valid' : 'claims';
      break;
    }
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      reason = 'unknown_key';
      break;
    case 'ERR_JWKS_TIMEOUT':
      reason = 'key_unavailable';
      break;
    // ERR_JOSE_NOT_SUPPORTED: the alg was checked against the pinned list before, so
    // what is left is an unrecognised `crit` extension
    case 'ERR_JOSE_NOT_SUPPORTED':
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      reason = 'malformed';
      break;
    default:
      // jose throws TypeError when a key cannot be used with the token's alg (e.g. an
      // RSA key for an ES256 token): the token is not signed by a key we trust.
      reason = err instanceof TypeError ? 'signature' : 'malformed';
  }
  return new AuthFailure(reason);
}

/** HMAC CryptoKeys for each pinned HS algorithm, from the UTF-8 bytes of the secret. */
export async function importHmacKeys(
  secret: string,
  algorithms: readonly string[],
): Promise<Map<string, CryptoKey>> {
  // Imported once here: jose would otherwise import raw secret bytes on every verification.
  const keys = new Map<string, CryptoKey>();
  const raw = Buffer.from(secret, 'utf8');
  for (const alg of algorithms) {
    if (!isHmac(alg)) continue;
    const hash = `SHA-${alg.slice(2)}`;
    keys.set(alg, await webcrypto.subtle.importKey('raw', raw, { name: 'HMAC', hash }, false, ['verify']));
  }
  return keys;
}

/** A static public key from the config, as PEM (SPKI or certificate) or JWK. */
export interface StaticKeySpec {
  readonly kid?: string | undefined;
  readonly alg?: string | undefined;
  readonly pem?: string | undefined;
  readonly jwk?: Record<string, unknown> | undefined;
}

/**
 * Turn configured public keys into a local JWKS (so key selection by kid/alg works as
 * for a remote JWKS). Throws an Error naming the problem (the caller wraps it in a
 * ConfigError with the key path).
 */
export function buildStaticKeySet(specs: readonly StaticKeySpec[]): LocalSet | undefined {
  if (specs.length === 0) return undefined;
  const keys: JWK[] = specs.map((spec, i) => {
    let jwk: JWK;
    if (spec.pem !== undefined) {
      if (/PRIVATE KEY/.test(spec.pem))
        throw new Error(`public_keys[${i}]: a private key was given; configure the public key`);
      try {
        jwk = createPublicKey(spec.pem).export({ format: 'jwk' }) as JWK;
      } catch (err) {
        throw new Error(`public_keys[${i}]: not a PEM public key or certificate (${(err as Error).message})`);
      }
    } else if (spec.jwk !== undefined) {
      const given = spec.jwk as JWK;
      if ('d' in given || given.kty === 'oct') {
        throw new Error(`public_keys[${i}]: the JWK is a private or symmetric key; configure a public key`);
      }
      try {
        createPublicKey({ key: given as never, format: 'jwk' });
      } catch (err) {
        throw new Error(`public_keys[${i}]: not a valid public JWK (${(err as Error).message})`);
      }
      jwk = { ...given };
    } else {
      throw new Error(`public_keys[${i}]: give either pem, pem_file or jwk`);
    }
    if (spec.kid !== undefined) jwk.kid = spec.kid;
    if (spec.alg !== undefined) jwk.alg = spec.alg;
    return jwk;
  });
  return createLocalJWKSet({ keys });
}
