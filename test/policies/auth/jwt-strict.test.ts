/**
 * The verifier's strict checks: one spelling per token (canonical base64url in all three
 * segments) and no token issued in the future (`iat` beyond the clock tolerance), with
 * `nbf` at its tolerance boundary for comparison.
 */
import t from 'tap';
import { jwtVerify, type CryptoKey } from 'jose';
import { isCanonicalCompactJws } from '../../../policies/auth/compact-jws.js';
import { JwtVerifier, buildStaticKeySet, importHmacKeys } from '../../../policies/auth/jwt-verifier.js';
import { AuthFailure } from '../../../policies/auth/reasons.js';
import { TokenCache } from '../../../policies/auth/token-cache.js';
import { CLOCK_START, makeClock, type FakeClock } from '../../helpers/context.js';
import { SECRET, NOW_S, b64, hs, keyPair, signed, respelledTokens, hmacOverSegments } from './tokens.js';

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const secretKey = new TextEncoder().encode(SECRET);
const at = new Date(CLOCK_START);
const es = await keyPair('ES256', 'e1');
const rsa = await keyPair('RS256', 'r1');
const hmacKeys = await importHmacKeys(SECRET, ['HS256']);

function verifier(
  o: {
    clock?: FakeClock;
    toleranceSec?: number;
    cache?: TokenCache;
    algorithms?: ('HS256' | 'ES256' | 'RS256')[];
  } = {},
): JwtVerifier {
  const clock = o.clock ?? makeClock();
  return new JwtVerifier({
    algorithms: o.algorithms ?? ['HS256', 'ES256', 'RS256'],
    hmacKeys,
    staticKeys: buildStaticKeySet([
      { kid: es.kid, pem: es.pem },
      { kid: rsa.kid, pem: rsa.pem },
    ]),
    jwks: undefined,
    issuer: undefined,
    audience: undefined,
    clockToleranceSec: o.toleranceSec ?? 30,
    requiredClaims: ['exp'],
    maxTokenBytes: 8192,
    cache: o.cache,
    now: () => clock.now(),
  });
}

/** 'ok' or the failure reason (verify may throw synchronously or reject). */
async function outcome(v: JwtVerifier, token: string): Promise<string> {
  try {
    await (async () => v.verify(token))();
    return 'ok';
  } catch (err) {
    return err instanceof AuthFailure ? err.reason : `unexpected ${String(err)}`;
  }
}

t.test(
  'isCanonicalCompactJws: a segment is accepted exactly when it is the re-encoding of its bytes',
  async (t) => {
    const disagreements: string[] = [];
    const canonicalLastChars = new Map<number, number>();
    for (let n = 1; n <= 9; n++) {
      const seg = Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff)).toString('base64url');
      let canonical = 0;
      for (const c of B64URL) {
        const s = seg.slice(0, -1) + c;
        const expected = Buffer.from(s, 'base64url').toString('base64url') === s;
        if (expected) canonical += 1;
        const tokens = [`${s}.e30.AAAA`, `e30.${s}.AAAA`, `e30.e30.${s}`];
        tokens.forEach((tok, i) => {
          if (isCanonicalCompactJws(tok) !== expected) disagreements.push(`${n} bytes, segment ${i}: ${s}`);
        });
      }
      canonicalLastChars.set(n, canonical);
    }
    t.same(disagreements, [], 'no segment judged otherwise than by re-encoding');
    // 2 unused bits: 16 of 64 last characters; 4 unused bits: 4 of 64; none unused: all
    t.same([...canonicalLastChars.values()], [4, 16, 64, 4, 16, 64, 4, 16, 64]);
    t.equal(
      isCanonicalCompactJws('e30.e30.'),
      true,
      'an empty signature is canonical (alg none is refused later)',
    );
    for (const bad of [
      'AAAAA.e30.AAAA',
      'e30.AAAAA.AAAA',
      'e30.e30.AAAAA',
      'e30=.e30.AAAA',
      'e30.e30.AA==',
      'e3+.e30.AAAA',
      'e30.e3/.AAAA',
      'e30.e30',
      '.e30.AAAA',
      'e30.e30.AAAA.',
    ]) {
      t.equal(isCanonicalCompactJws(bad), false, bad);
    }
  },
);

const signers: [string, () => Promise<string>, () => Promise<CryptoKey | Uint8Array>, number][] = [
  ['HS256', () => hs(), async () => secretKey, 3],
  ['ES256', () => signed(es), async () => es.publicKey, 15],
  ['RS256', () => signed(rsa), async () => rsa.publicKey, 15],
];

for (const [alg, make, keyOf, count] of signers) {
  t.test(`${alg}: every other spelling of the signature verifies with jose, and is refused`, async (t) => {
    const token = await make();
    const v = verifier();
    t.equal(await outcome(v, token), 'ok', 'the token as signed');
    const others = respelledTokens(token, 2);
    t.equal(others.length, count, 'spellings with the unused bits of the last character set');
    for (const other of others) {
      t.same(
        (await jwtVerify(other, await keyOf(), { currentDate: at })).payload.sub,
        'alice',
        'jose alone accepts this spelling',
      );
      t.equal(await outcome(v, other), 'malformed');
    }
  });
}

t.test('a header or payload spelt non-canonically and signed as spelt is refused', async (t) => {
  // lengths of 4n + 2 and 4n + 3 characters, so the last character has unused bits
  const header = b64({ alg: 'HS256', kid: 'k' });
  const payload = b64({ sub: 'alice', exp: NOW_S + 60 });
  t.equal(header.length % 4, 2);
  t.equal(payload.length % 4, 3);
  const v = verifier();
  t.equal(await outcome(v, hmacOverSegments(header, payload)), 'ok', 'canonical spelling');
  const variants = [
    ...respelledTokens(`${header}.${payload}.x`, 0).map((tok) => tok.split('.')),
    ...respelledTokens(`${header}.${payload}.x`, 1).map((tok) => tok.split('.')),
  ];
  t.equal(variants.length, 15 + 3);
  for (const [h, p] of variants) {
    const token = hmacOverSegments(h!, p!);
    t.equal(
      (await jwtVerify(token, secretKey, { currentDate: at })).payload.sub,
      'alice',
      'jose alone accepts it',
    );
    t.equal(await outcome(v, token), 'malformed');
  }
});

t.test('a respelled token is not a second cache entry of a cached token', async (t) => {
  const clock = makeClock();
  const cache = new TokenCache({
    maxEntries: 100,
    maxBytes: 1 << 20,
    maxTtlMs: 60_000,
    now: () => clock.now(),
  });
  const v = verifier({ clock, cache });
  const token = await hs();
  t.equal(await outcome(v, token), 'ok');
  t.equal(cache.size, 1);
  for (const other of respelledTokens(token, 2)) t.equal(await outcome(v, other), 'malformed');
  t.equal(cache.size, 1, 'only the canonical token was cached');
  t.equal(await outcome(v, token), 'ok');
  t.equal(cache.hits, 1);
});

t.test('iat: optional, numeric, not in the future beyond the clock tolerance', async (t) => {
  const v = verifier();
  const cases: [string, string, string][] = [
    ['no iat', await hs({ iat: undefined }), 'ok'],
    ['iat now', await hs({ iat: NOW_S }), 'ok'],
    ['iat a day ago', await hs({ iat: NOW_S - 86400 }), 'ok'],
    ['iat 30 s ahead (the tolerance)', await hs({ iat: NOW_S + 30 }), 'ok'],
    ['iat 31 s ahead', await hs({ iat: NOW_S + 31 }), 'issued_in_future'],
    ['iat tomorrow', await hs({ iat: NOW_S + 86400 }), 'issued_in_future'],
    ['iat tomorrow, ES256', await signed(es, { iat: NOW_S + 86400 }), 'issued_in_future'],
    ['iat tomorrow, RS256', await signed(rsa, { iat: NOW_S + 86400 }), 'issued_in_future'],
    // JSON.parse reads 1e400 as Infinity
    [
      'iat 1e400',
      hmacOverSegments(b64({ alg: 'HS256' }), b64(`{"sub":"alice","exp":${NOW_S + 60},"iat":1e400}`)),
      'issued_in_future',
    ],
    ['iat a string', await hs({ iat: `${NOW_S}` as never }), 'claims'],
    ['iat null', await hs({ iat: null as never }), 'claims'],
    ['iat a string in the future', await hs({ iat: `${NOW_S + 86400}` as never }), 'claims'],
    ['expired and iat in the future', await hs({ iat: NOW_S + 86400, exp: NOW_S - 3600 }), 'expired'],
  ];
  for (const [name, token, expected] of cases) t.equal(await outcome(v, token), expected, name);
});

t.test(
  'exp, nbf and iat beyond the range of a number (JSON.parse reads 1e400 as Infinity) are refused',
  async (t) => {
    const v = verifier();
    const raw = (payload: string) => hmacOverSegments(b64({ alg: 'HS256' }), b64(payload));
    const cases: [string, string, string][] = [
      ['exp 1e400 (never expiring)', raw('{"sub":"alice","exp":1e400}'), 'claims'],
      ['exp 1e400 and iat now', raw(`{"sub":"alice","exp":1e400,"iat":${NOW_S}}`), 'claims'],
      ['nbf -1e400', raw(`{"sub":"alice","exp":${NOW_S + 60},"nbf":-1e400}`), 'claims'],
      ['iat -1e400', raw(`{"sub":"alice","exp":${NOW_S + 60},"iat":-1e400}`), 'claims'],
      ['exp -1e400 (expired since ever)', raw('{"sub":"alice","exp":-1e400}'), 'expired'],
      ['exp a year ahead', raw(`{"sub":"alice","exp":${NOW_S + 365 * 86400}}`), 'ok'],
      ['exp 1e15 (far, finite)', raw('{"sub":"alice","exp":1e15}'), 'ok'],
    ];
    for (const [name, token, expected] of cases) t.equal(await outcome(v, token), expected, name);
  },
);

t.test('iat: the configured tolerance is the one used', async (t) => {
  t.equal(await outcome(verifier({ toleranceSec: 0 }), await hs({ iat: NOW_S })), 'ok');
  t.equal(await outcome(verifier({ toleranceSec: 0 }), await hs({ iat: NOW_S + 1 })), 'issued_in_future');
  t.equal(await outcome(verifier({ toleranceSec: 300 }), await hs({ iat: NOW_S + 300 })), 'ok');
  t.equal(await outcome(verifier({ toleranceSec: 300 }), await hs({ iat: NOW_S + 301 })), 'issued_in_future');
});

t.test(
  'iat: a refused token is not cached, and is accepted once its iat is within the tolerance',
  async (t) => {
    const clock = makeClock();
    const cache = new TokenCache({
      maxEntries: 100,
      maxBytes: 1 << 20,
      maxTtlMs: 60_000,
      now: () => clock.now(),
    });
    const v = verifier({ clock, cache });
    const token = await hs({ iat: NOW_S + 600, exp: NOW_S + 3600 });
    t.equal(await outcome(v, token), 'issued_in_future');
    t.equal(cache.size, 0);
    clock.advance(569_000);
    t.equal(await outcome(v, token), 'issued_in_future', '31 s ahead');
    clock.advance(1_000);
    t.equal(await outcome(v, token), 'ok', '30 s ahead');
    t.equal(cache.size, 1);
  },
);

t.test('nbf: refused beyond the clock tolerance, accepted within it', async (t) => {
  const v = verifier();
  t.equal(await outcome(v, await hs({ nbf: NOW_S + 30 })), 'ok');
  t.equal(await outcome(v, await hs({ nbf: NOW_S + 31 })), 'not_yet_valid');
  t.equal(await outcome(v, await hs({ nbf: NOW_S - 3600 })), 'ok');
  t.equal(await outcome(v, await hs({ nbf: `${NOW_S}` as never })), 'claims');
  t.equal(await outcome(verifier({ toleranceSec: 0 }), await hs({ nbf: NOW_S + 1 })), 'not_yet_valid');
});
