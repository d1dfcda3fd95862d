/**
 * Table of forged and broken tokens: each must be refused with 401 `unauthorized`, an
 * RFC 6750 `invalid_token` challenge, the right failure reason and one count in
 * gateway_auth_failures_total{method="jwt"}; none may set an identity or X-Auth-* headers.
 */
import t from 'tap';
import { SignJWT } from 'jose';
import type { Deny } from '../../../gateway/policy.js';
import { auth } from '../../../policies/auth/index.js';
import { compilePolicy, makeContext, makeServices } from '../../helpers/context.js';
import {
  SECRET,
  NOW_S,
  b64,
  hs,
  hmacToken,
  keyPair,
  signed,
  tamper,
  respelledTokens,
  hmacOverSegments,
} from './tokens.js';

const rsa = await keyPair('RS256', 'k1');
const other = await keyPair('RS256', 'k2');

interface Case {
  name: string;
  token?: () => Promise<string> | string;
  /** raw headers instead of a single Authorization: Bearer */
  headers?: () => Promise<Record<string, string | string[]>>;
  /** 'hs' = secret config, 'rs' = static RSA public key config */
  setup: 'hs' | 'rs';
  reason: string;
}

const hsConfig = {
  jwt: { secret: SECRET, issuer: 'receipt-auth', audience: 'receipt-api', cache: { max_entries: 0 } },
};
const rsConfig = {
  jwt: {
    public_keys: [{ kid: 'k1', pem: rsa.pem }],
    algorithms: ['RS256'],
    issuer: 'receipt-auth',
    audience: 'receipt-api',
    cache: { max_entries: 0 },
  },
};
const good = { iss: 'receipt-auth', aud: 'receipt-api' };

const cases: Case[] = [
  {
    name: 'alg none, empty signature',
    setup: 'hs',
    token: () =>
      `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'admin', role: 'admin', exp: NOW_S + 60, ...good })}.`,
    reason: 'algorithm',
  },
  {
    name: 'alg none against public keys',
    setup: 'rs',
    token: () => `${b64({ alg: 'none' })}.${b64({ sub: 'admin', role: 'admin', exp: NOW_S + 60, ...good })}.`,
    reason: 'algorithm',
  },
  {
    name: 'alg confusion: HS256 signed with the RSA public key as secret',
    setup: 'rs',
    token: () => hs({ ...good, role: 'admin' }, rsa.pem, { kid: 'k1' }),
    reason: 'algorithm',
  },
  {
    name: 'unlisted algorithm HS512 with the right secret',
    setup: 'hs',
    token: () =>
      new SignJWT({ sub: 'alice', exp: NOW_S + 60, ...good })
        .setProtectedHeader({ alg: 'HS512' })
        .sign(new TextEncoder().encode(SECRET)),
    reason: 'algorithm',
  },
  {
    name: 'wrong secret',
    setup: 'hs',
    token: () => hs(good, 'another-secret-of-sufficient-length-123'),
    reason: 'signature',
  },
  {
    name: 'tampered payload (role raised to admin)',
    setup: 'hs',
    token: async () => tamper(await hs(good), { sub: 'alice', role: 'admin', exp: NOW_S + 3600, ...good }),
    reason: 'signature',
  },
  {
    name: 'tampered payload on an RS256 token',
    setup: 'rs',
    token: async () =>
      tamper(await signed(rsa, good), { sub: 'admin', role: 'admin', exp: NOW_S + 3600, ...good }),
    reason: 'signature',
  },
  {
    name: 'signed by another RSA key under the known kid',
    setup: 'rs',
    token: () => signed(other, good, { kid: 'k1' }),
    reason: 'signature',
  },
  {
    name: 'expired an hour ago',
    setup: 'hs',
    token: () => hs({ ...good, iat: NOW_S - 7200, exp: NOW_S - 3600 }),
    reason: 'expired',
  },
  {
    name: 'expired beyond the 30s tolerance',
    setup: 'hs',
    token: () => hs({ ...good, exp: NOW_S - 31 }),
    reason: 'expired',
  },
  {
    name: 'not yet valid (nbf in an hour)',
    setup: 'hs',
    token: () => hs({ ...good, nbf: NOW_S + 3600 }),
    reason: 'not_yet_valid',
  },
  {
    name: 'nbf 31 s ahead (just beyond the tolerance)',
    setup: 'hs',
    token: () => hs({ ...good, nbf: NOW_S + 31 }),
    reason: 'not_yet_valid',
  },
  {
    name: 'nbf is a string',
    setup: 'hs',
    token: () => hs({ ...good, nbf: `${NOW_S}` as never }),
    reason: 'claims',
  },
  {
    name: 'issued tomorrow (iat)',
    setup: 'hs',
    token: () => hs({ ...good, iat: NOW_S + 86400 }),
    reason: 'issued_in_future',
  },
  {
    name: 'iat 31 s ahead on an RS256 token',
    setup: 'rs',
    token: () => signed(rsa, { ...good, iat: NOW_S + 31 }),
    reason: 'issued_in_future',
  },
  {
    name: 'iat is a string',
    setup: 'hs',
    token: () => hs({ ...good, iat: `${NOW_S}` as never }),
    reason: 'claims',
  },
  {
    name: 'signature respelled: last character with unused bits set (HS256, same bytes)',
    setup: 'hs',
    token: async () => respelledTokens(await hs(good), 2)[0]!,
    reason: 'malformed',
  },
  {
    name: 'signature respelled (RS256, same bytes)',
    setup: 'rs',
    token: async () => respelledTokens(await signed(rsa, good), 2)[14]!,
    reason: 'malformed',
  },
  {
    name: 'payload respelled and signed as spelt (HS256)',
    setup: 'hs',
    token: () => {
      const payload = b64({ sub: 'alice', exp: NOW_S + 60, ...good, x: 1 });
      const [header, spelt] = respelledTokens(`${b64({ alg: 'HS256' })}.${payload}.`, 1)[0]!.split('.');
      return hmacOverSegments(header!, spelt!);
    },
    reason: 'malformed',
  },
  { name: 'wrong issuer', setup: 'hs', token: () => hs({ ...good, iss: 'evil-idp' }), reason: 'claims' },
  { name: 'wrong audience', setup: 'hs', token: () => hs({ ...good, aud: 'other-api' }), reason: 'claims' },
  {
    name: 'missing exp (required by default)',
    setup: 'hs',
    token: () => hs({ ...good, exp: undefined }),
    reason: 'claims',
  },
  { name: 'missing subject', setup: 'hs', token: () => hs({ ...good, sub: undefined }), reason: 'claims' },
  {
    name: 'subject with control characters',
    setup: 'hs',
    token: () => hs({ ...good, sub: 'alice\r\nx-auth-roles: admin' }),
    reason: 'claims',
  },
  {
    name: 'exp is a string',
    setup: 'hs',
    token: () => hs({ ...good, exp: `${NOW_S + 60}` as never }),
    reason: 'claims',
  },
  { name: 'unknown kid (static keys)', setup: 'rs', token: () => signed(other, good), reason: 'unknown_key' },
  {
    name: 'oversized token',
    setup: 'hs',
    token: () => hs({ ...good, pad: 'x'.repeat(9000) }),
    reason: 'oversized',
  },
  {
    name: 'non-base64url characters in a segment',
    setup: 'hs',
    token: async () => (await hs(good)).replace('.', '+.'),
    reason: 'malformed',
  },
  {
    name: 'base64 padding',
    setup: 'hs',
    token: async () => `${(await hs(good)).split('.')[0]}==.e30.sig`,
    reason: 'malformed',
  },
  {
    name: 'two segments',
    setup: 'hs',
    token: async () => (await hs(good)).split('.').slice(0, 2).join('.'),
    reason: 'malformed',
  },
  { name: 'four segments', setup: 'hs', token: async () => `${await hs(good)}.x`, reason: 'malformed' },
  {
    name: 'header is not JSON',
    setup: 'hs',
    token: () => `${b64('not json')}.${b64({ sub: 'a' })}.sig`,
    reason: 'malformed',
  },
  {
    name: 'header JSON is an array',
    setup: 'hs',
    token: () => `${b64([{ alg: 'HS256' }])}.${b64({ sub: 'a' })}.sig`,
    reason: 'malformed',
  },
  {
    name: 'header JSON is null',
    setup: 'hs',
    token: () => `${b64('null')}.${b64({ sub: 'a' })}.sig`,
    reason: 'malformed',
  },
  {
    name: 'payload JSON is an array (validly signed)',
    setup: 'hs',
    token: () => hmacToken({ alg: 'HS256' }, [1, 2]),
    reason: 'malformed',
  },
  {
    name: 'payload JSON is a string (validly signed)',
    setup: 'hs',
    token: () => hmacToken({ alg: 'HS256' }, '"admin"'),
    reason: 'malformed',
  },
  {
    name: 'payload is not JSON (validly signed)',
    setup: 'hs',
    token: () => hmacToken({ alg: 'HS256' }, '{"sub":"alice",'),
    reason: 'malformed',
  },
  {
    name: 'unknown critical header (validly signed)',
    setup: 'hs',
    token: () =>
      hmacToken(
        { alg: 'HS256', crit: ['x-unknown'], 'x-unknown': 1 },
        { sub: 'alice', exp: NOW_S + 60, ...good },
      ),
    reason: 'malformed',
  },
  {
    name: 'duplicate Authorization headers (second one valid)',
    setup: 'hs',
    headers: async () => ({ Authorization: ['Bearer garbage', `Bearer ${await hs(good)}`] }),
    reason: 'malformed',
  },
  {
    name: 'Bearer without a token',
    setup: 'hs',
    headers: async () => ({ authorization: 'Bearer ' }),
    reason: 'malformed',
  },
  {
    name: 'Bearer with two tokens',
    setup: 'hs',
    headers: async () => ({ authorization: `Bearer a.b.c ${await hs(good)}` }),
    reason: 'malformed',
  },
];

const hsServices = makeServices();
const rsServices = makeServices();
const policies = {
  hs: await compilePolicy(auth, hsConfig, hsServices),
  rs: await compilePolicy(auth, rsConfig, rsServices),
};
const servicesOf = { hs: hsServices, rs: rsServices };

async function failures(setup: 'hs' | 'rs', reason: string): Promise<number> {
  const m = await servicesOf[setup].metrics.authFailures.get();
  return m.values.find((v) => v.labels.method === 'jwt' && v.labels.reason === reason)?.value ?? 0;
}

for (const c of cases) {
  t.test(c.name, async (t) => {
    const headers = c.headers ? await c.headers() : { authorization: `Bearer ${await c.token!()}` };
    const ctx = makeContext({ method: 'GET', target: '/api/receipts', headers });
    const before = await failures(c.setup, c.reason);
    const v = (await policies[c.setup].onRequest!(ctx)) as Deny | undefined;
    t.equal(v?.code, 'unauthorized');
    t.equal(v?.headers?.['www-authenticate'], 'Bearer realm="receipt-gateway", error="invalid_token"');
    t.same(v?.detail, { reason: c.reason, method: 'jwt' });
    t.notMatch(v?.message ?? '', /eyJ|secret|alice|admin/, 'the message names the failure kind only');
    t.equal(ctx.identity, undefined);
    t.same(ctx.upstreamHeaders, {});
    t.equal(await failures(c.setup, c.reason), before + 1);
  });
}

t.test('the valid tokens of both setups pass (the table is not vacuous)', async (t) => {
  const a = makeContext({ headers: { authorization: `Bearer ${await hs(good)}` } });
  t.equal(await policies.hs.onRequest!(a), undefined);
  t.equal(a.identity?.subject, 'alice');
  const b = makeContext({ headers: { authorization: `Bearer ${await signed(rsa, good)}` } });
  t.equal(await policies.rs.onRequest!(b), undefined);
  t.equal(b.identity?.subject, 'alice');
  // within the 30 s clock tolerance
  const c = makeContext({ headers: { authorization: `Bearer ${await hs({ ...good, exp: NOW_S - 10 })}` } });
  t.equal(await policies.hs.onRequest!(c), undefined);
  for (const claims of [{ iat: NOW_S + 30 }, { nbf: NOW_S + 30 }, { iat: undefined }]) {
    const d = makeContext({ headers: { authorization: `Bearer ${await hs({ ...good, ...claims })}` } });
    t.equal(await policies.hs.onRequest!(d), undefined, JSON.stringify(claims));
  }
});

t.test('a forged token is never served from the verified-token cache', async (t) => {
  const services = makeServices();
  const p = await compilePolicy(auth, { jwt: { secret: SECRET } }, services);
  const token = await hs({});
  t.equal(await p.onRequest!(makeContext({ headers: { authorization: `Bearer ${token}` } })), undefined);
  const forged = tamper(token, { sub: 'alice', role: 'admin', exp: NOW_S + 3600 });
  const v = (await p.onRequest!(makeContext({ headers: { authorization: `Bearer ${forged}` } }))) as Deny;
  t.equal(v.code, 'unauthorized');
  t.equal(v.detail?.reason, 'signature');
});
