/**
 * Token signing for the mock receipt service (SPEC section 3).
 *
 * HS256 (default) signs with the shared `JWT_SECRET_KEY`. RS256 and ES256 sign with a key
 * pair the mock generates itself; the public half is published as a JWKS and every token
 * carries the key's `kid`. `rotate()` replaces the pair: the JWKS then lists ONLY the new
 * key, so tokens signed with the old key stop verifying as soon as a verifier refetches the
 * JWKS (that is what the gateway's key-rotation tests rely on).
 */
import { randomBytes } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { JWTPayload, CryptoKey } from 'jose';

/** Signing algorithms the mock supports (`MOCK_JWT_ALG`). */
export type MockJwtAlg = 'HS256' | 'RS256' | 'ES256';

/** Issuer claim of every token the mock signs. */
export const MOCK_ISSUER = 'receipt-mock';

/** Default token lifetime: 1 hour, in seconds. */
export const TOKEN_TTL_SECONDS = 3600;

const ALGS: readonly MockJwtAlg[] = ['HS256', 'RS256', 'ES256'];

/** Parses `MOCK_JWT_ALG` (case-insensitive, default HS256); throws on an unknown value. */
export function parseAlg(value: string | undefined): MockJwtAlg {
  if (value === undefined || value === '') return 'HS256';
  const upper = value.toUpperCase();
  const found = ALGS.find((a) => a === upper);
  if (found === undefined) {
    throw new Error(`MOCK_JWT_ALG must be one of ${ALGS.join(', ')}, got "${value}"`);
  }
  return found;
}

/** A random secret of `length` URL-safe characters (used when JWT_SECRET_KEY is unset). */
export function randomSecret(length = 48): string {
  return randomBytes(length).toString('base64url').slice(0, length);
}

interface AsymmetricKey {
  kid: string;
  privateKey: CryptoKey;
  jwksBody: Buffer;
}

/** Signs the mock's tokens and publishes its public keys. Create with {@link createSigner}. */
export class Signer {
  readonly alg: MockJwtAlg;
  readonly secret: string;
  private readonly hmacKey: Uint8Array;
  private key: AsymmetricKey | undefined;

  private constructor(alg: MockJwtAlg, secret: string, key: AsymmetricKey | undefined) {
    this.alg = alg;
    this.secret = secret;
    this.hmacKey = new TextEncoder().encode(secret);
    this.key = key;
  }

  /** @internal use {@link createSigner} */
  static async create(alg: MockJwtAlg, secret: string): Promise<Signer> {
    const key = alg === 'HS256' ? undefined : await newKey(alg);
    return new Signer(alg, secret, key);
  }

  /** Whether the mock signs with a key pair (RS256/ES256) and so serves a JWKS. */
  get asymmetric(): boolean {
    return this.key !== undefined;
  }

  /** The `kid` of the current signing key (undefined for HS256). */
  get kid(): string | undefined {
    return this.key?.kid;
  }

  /** The serialized JWKS `{keys:[...]}` (undefined for HS256). */
  get jwksBody(): Buffer | undefined {
    return this.key?.jwksBody;
  }

  /**
   * Signs a token. Defaults: `iat` now, `exp` now + 1h, `iss` "receipt-mock"; any claim in
   * `claims` overrides its default (e.g. a past `exp` for expired-token tests).
   */
  async sign(claims: JWTPayload & Record<string, unknown>): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const payload: JWTPayload = { iat: now, exp: now + TOKEN_TTL_SECONDS, iss: MOCK_ISSUER, ...claims };
    const header =
      this.key === undefined
        ? { alg: this.alg, typ: 'JWT' }
        : { alg: this.alg, typ: 'JWT', kid: this.key.kid };
    const jwt = new SignJWT(payload).setProtectedHeader(header);
    return this.key === undefined ? jwt.sign(this.hmacKey) : jwt.sign(this.key.privateKey);
  }

  /** Replaces the key pair with a new one (new kid); the JWKS then lists only the new key. */
  async rotate(): Promise<string> {
    if (this.alg === 'HS256') {
      throw new Error('key rotation needs MOCK_JWT_ALG=RS256 or ES256 (HS256 uses the shared secret)');
    }
    this.key = await newKey(this.alg);
    return this.key.kid;
  }
}

async function newKey(alg: Exclude<MockJwtAlg, 'HS256'>): Promise<AsymmetricKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg);
  const kid = randomBytes(12).toString('base64url');
  const jwk = await exportJWK(publicKey);
  const jwksBody = Buffer.from(JSON.stringify({ keys: [{ ...jwk, kid, alg, use: 'sig' }] }));
  return { kid, privateKey, jwksBody };
}

/** Builds the signer for an algorithm and secret. */
export function createSigner(alg: MockJwtAlg, secret: string): Promise<Signer> {
  return Signer.create(alg, secret);
}
