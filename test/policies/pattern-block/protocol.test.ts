import t from 'tap';
import fc from 'fast-check';
import {
  IIS_ESCAPE,
  invalidPercent,
  invalidUtf8Escapes,
  OVERLONG_ESCAPE,
  PERCENT_IIS,
  PERCENT_INVALID,
  PERCENT_OVERLONG,
  percentFindings,
  REQUEST_DETECTORS,
  REQUEST_NEEDS,
  requestFeatures,
  type ProtocolSettings,
  type RequestFacts,
} from '../../../policies/pattern-block/detectors/protocol.js';

const settings: ProtocolSettings = {
  allowedMethods: new Set(['GET', 'POST', 'OPTIONS']),
  allowedContentTypes: (mt) => mt === 'application/json',
  allowedCharsets: new Set(['utf-8']),
  maxHeaders: 100,
  maxArgs: 512,
  maxRanges: 5,
};

/** Facts of a request (GET / unless told) whose raw header list is `raw` (names as sent). */
function facts(raw: string[], method = 'GET', target = '/'): RequestFacts {
  const headers: Record<string, string | string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    const prev = headers[k];
    headers[k] = prev === undefined ? raw[i + 1]! : [prev, raw[i + 1]!].flat();
  }
  return {
    method,
    target,
    headers,
    rawHeaders: raw,
    httpVersion: '1.1',
    bodyLength: 0,
    mediaType: '',
    rawForm: undefined,
    argCount: 0,
    path: '/',
  };
}

t.test('framing_headers reads every raw header line, whatever its case', (t) => {
  const d = REQUEST_DETECTORS.framing_headers!;
  const cases: [string[], string | undefined][] = [
    [['Host', 'a', 'Content-Length', '5'], undefined],
    [
      ['Host', 'a', 'content-length', '5', 'Transfer-Encoding', 'chunked'],
      'Content-Length with Transfer-Encoding',
    ],
    [['Host', 'a', 'Content-Length', '5', 'CONTENT-LENGTH', '5'], 'several or malformed Content-Length'],
    [['Host', 'a', 'Content-Length', ' 5x'], 'several or malformed Content-Length'],
    [['Host', 'a', 'Transfer-Encoding', 'chunked'], undefined],
    [
      ['Host', 'a', 'Transfer-Encoding', 'gzip', 'transfer-encoding', 'chunked'],
      'Transfer-Encoding other than chunked',
    ],
    [['Host', 'a', 'Transfer-Encoding', ' Chunked '], undefined],
    [['Host', 'a', 'HOST', 'b'], 'several Host headers'],
    [['Host', 'a', 'Connection', 'keep-alive'], undefined],
    [['Host', 'a', 'Connection', 'Keep-Alive', 'connection', 'close'], 'Connection close and keep-alive'],
    [['Host', 'a', 'Connection', 'close, CLOSE'], 'duplicate Connection options'],
    [['Host', 'a', 'Connection', '', 'Connection', 'close'], undefined],
    // a name of the right length but another name
    [['Host', 'a', 'Content-Lengthy', '5', 'X-Transfer-Encode', 'gzip'], undefined],
  ];
  for (const [raw, want] of cases) t.equal(d(facts(raw), settings), want, JSON.stringify(raw));
  t.end();
});

t.test('accept_charset only parses an Accept that names a charset', (t) => {
  const d = REQUEST_DETECTORS.accept_charset!;
  t.equal(d(facts(['Host', 'a', 'Accept', 'application/json, */*']), settings), undefined);
  t.equal(
    d(facts(['Host', 'a', 'Accept', 'text/html;q=0.9;charset=utf-16']), settings),
    'Accept charset not allowed',
  );
  t.equal(
    d(facts(['Host', 'a', 'Accept', 'text/html; CHARSET=UTF-7']), settings),
    'Accept charset not allowed',
  );
  t.equal(d(facts(['Host', 'a', 'Accept', 'text/html; charset=UTF-8']), settings), undefined);
  t.end();
});

t.test('content_encoding refuses a body sent with any coding but identity', (t) => {
  const d = REQUEST_DETECTORS.content_encoding!;
  const withBody = (raw: string[]): RequestFacts => ({ ...facts(raw, 'POST'), bodyLength: 10 });
  t.equal(d(withBody(['Host', 'a', 'Content-Encoding', 'gzip']), settings), 'body with content coding gzip');
  t.equal(d(withBody(['Host', 'a', 'Content-Encoding', ' BR ']), settings), 'body with content coding br');
  t.equal(
    d(withBody(['Host', 'a', 'Content-Encoding', 'identity, deflate']), settings),
    'body with content coding deflate',
    'every coding of the list counts',
  );
  t.equal(d(withBody(['Host', 'a', 'Content-Encoding', 'identity']), settings), undefined);
  t.equal(d(withBody(['Host', 'a', 'Content-Encoding', '']), settings), undefined);
  t.equal(d(withBody(['Host', 'a']), settings), undefined);
  t.equal(d(facts(['Host', 'a', 'Content-Encoding', 'gzip'], 'GET'), settings), undefined, 'no body');
  t.equal(
    d(facts(['Host', 'a', 'Content-Encoding', 'gzip', 'Transfer-Encoding', 'chunked'], 'POST'), settings),
    'body with content coding gzip',
    'a chunked body, its length not known yet',
  );
  t.end();
});

t.test('empty_accept spares OPTIONS and the clients known to send it', (t) => {
  const d = REQUEST_DETECTORS.empty_accept!;
  t.equal(d(facts(['Host', 'a', 'Accept', '']), settings), 'empty Accept');
  t.equal(d(facts(['Host', 'a', 'Accept', '', 'User-Agent', 'curl/8.5.0']), settings), 'empty Accept');
  t.equal(
    d(facts(['Host', 'a', 'Accept', '', 'User-Agent', 'Mozilla/5.0 AppleWebKit/537.36']), settings),
    undefined,
  );
  t.equal(d(facts(['Host', 'a', 'Accept', ''], 'OPTIONS'), settings), undefined);
  t.equal(d(facts(['Host', 'a']), settings), undefined);
  t.end();
});

/**
 * The plain definition: the escapes' bytes (a double-encoded `%25XX` giving byte XX, other
 * characters as themselves) do not decode as strict UTF-8.
 */
function plainInvalidUtf8(path: string): boolean {
  const bytes: number[] = [];
  for (let i = 0; i < path.length; i++) {
    const m = /^%(?:25([0-9a-fA-F]{2})|([0-9a-fA-F]{2}))/.exec(path.slice(i));
    if (m) {
      bytes.push(parseInt(m[1] ?? m[2]!, 16));
      i += m[0].length - 1;
    } else bytes.push(path.charCodeAt(i) & 0x7f);
  }
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes));
    return false;
  } catch {
    return true;
  }
}

t.test('invalidUtf8Escapes agrees with a strict UTF-8 decoder', (t) => {
  const named: [string, boolean][] = [
    ['/i%FFndex.html', true],
    ['/%c0%ae%c0%ae/etc/passwd', true],
    ['/%e0%80%af', true],
    ['/%ed%a0%80', true],
    ['/%f4%90%80%80', true],
    ['/a%e2%82', true],
    ['/a%e2%82x', true],
    ['/%99', true],
    ['/caf%C3%A9', false],
    ['/%E6%9D%B1%E4%BA%AC', false],
    ['/%F0%9F%8D%95', false],
    ['/%41%2F%zz%', false],
    ['/i%25FFndex.html', true],
    ['/%25c0%25ae%25c0%25ae/etc', true],
    ['/caf%25C3%25A9', false],
    ['/100%25', false],
    ['/100%25%20off', false],
  ];
  for (const [p, want] of named) {
    t.equal(invalidUtf8Escapes(p, p.length), want, p);
    t.equal(plainInvalidUtf8(p), want, `plain ${p}`);
  }
  // only the part before `end` counts (the query is not judged)
  t.equal(invalidUtf8Escapes('/a?x=%FF', 2), false);
  t.equal(invalidUtf8Escapes('/a%E2%82?%AC', 8), true, 'a sequence cut by the end of the path');
  // random escape sequences, biased towards the byte ranges that matter
  const pool = [
    0x41, 0x2f, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xee, 0xef,
    0xf0, 0xf4, 0xf5, 0xff,
  ];
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let k = 0; k < 5000; k++) {
    let p = '/';
    const n = 1 + rnd(6);
    for (let j = 0; j < n; j++) {
      const b = pool[rnd(pool.length)]!;
      const hex = b.toString(16).padStart(2, '0');
      const r = rnd(8);
      p += r === 0 ? 'x' : r === 1 ? `%25${hex}` : r === 2 ? '%25' : `%${hex}`;
    }
    if (invalidUtf8Escapes(p, p.length) !== plainInvalidUtf8(p)) {
      t.fail(`disagrees on ${p}`);
      break;
    }
  }
  t.end();
});

t.test('percentFindings: one pass finds what invalidPercent and the two escape patterns find', (t) => {
  const definition = (s: string): number =>
    (invalidPercent(s) ? PERCENT_INVALID : 0) |
    (IIS_ESCAPE.test(s) ? PERCENT_IIS : 0) |
    (OVERLONG_ESCAPE.test(s) ? PERCENT_OVERLONG : 0);
  const named: [string, number][] = [
    ['/a?q=Trader%20Joe%27s%205&sort=-date%2Cmerchant', 0],
    ['/?test=%u0F', PERCENT_INVALID],
    ['/%u002e%u002e/', PERCENT_IIS],
    ['/%U2215etc', PERCENT_IIS | PERCENT_OVERLONG],
    ['/%C0%AE%c1%9c', PERCENT_OVERLONG],
    ['/%c0%aZ', PERCENT_OVERLONG | PERCENT_INVALID],
    ['/%F0%80%80%af', PERCENT_OVERLONG],
    ['/100%', PERCENT_INVALID],
    ['/%zz%e0%80%af%uFF0e', PERCENT_INVALID | PERCENT_IIS | PERCENT_OVERLONG],
  ];
  for (const [s, want] of named) {
    t.equal(percentFindings(s), want, s);
    t.equal(definition(s), want, `definition ${s}`);
  }
  const unit = fc.constantFrom(
    // the pieces of the overlong forms, whole and in either case
    ...['%c0%', '%C1%', '%e0%80%', '%F0%80%80', '%f8%80%', '%fC%80%', '%u22', '%Uff', '%u'],
    ...['%', '%', '%', 'u', 'U', 'c', 'C', 'e', 'E', 'f', 'F', '0', '1', '2', '5', '6', '8', '9', 'a', 'A'],
    ...[
      'b',
      'B',
      'z',
      'Z',
      'x',
      '/',
      '\u0010',
      '\u212a',
      'é',
      'c0',
      '80',
      'ff',
      '22',
      '15',
      '0f',
      '3c',
      '0e',
    ],
  );
  fc.assert(
    fc.property(fc.array(unit, { maxLength: 16 }), (parts) => {
      const s = parts.join('');
      return percentFindings(s) === definition(s) && percentFindings(`/${s}`) === definition(`/${s}`);
    }),
    { numRuns: 20000 },
  );
  t.end();
});

t.test('ip_host flags a bare IP address and nothing with a port or a name', (t) => {
  const d = REQUEST_DETECTORS.ip_host!;
  const cases: [string, boolean][] = [
    ['127.0.0.1', true],
    ['203.0.113.9', true],
    ['[::1]', true],
    ['[2001:db8::1]', true],
    ['2130706433', true],
    ['0x7f000001', true],
    ['127.0.0.1:8080', false],
    ['[::1]:8443', false],
    ['receipts.example.com', false],
    ['localhost', false],
    ['1password.example', false],
  ];
  for (const [host, want] of cases) t.equal(d(facts(['Host', host]), settings) !== undefined, want, host);
  t.equal(d(facts([]), settings), undefined, "no Host is host_header's business");
  t.end();
});

t.test('header_escapes flags encoded metacharacters outside the URL-carrying headers', (t) => {
  const d = REQUEST_DETECTORS.header_escapes!;
  t.equal(d(facts(['Host', 'a', 'Test', 'ThisIsATest%60']), settings), 'encoded metacharacter in test');
  t.equal(
    d(facts(['Host', 'a', 'X-Api-Version', '%24%7bjndi:ldap://x/a%7d']), settings),
    'encoded metacharacter in x-api-version',
  );
  t.equal(
    d(facts(['Host', 'a', 'User-Agent', 'x %3cscript%3E']), settings),
    'encoded metacharacter in user-agent',
  );
  t.equal(d(facts(['Host', 'a', 'X-Note', '%7C']), settings), 'encoded metacharacter in x-note');
  t.equal(
    d(facts(['Host', 'a', 'X-Note', 'a%2560b']), settings),
    'encoded metacharacter in x-note',
    'double-encoded',
  );
  // escapes of other characters, and the headers that carry URL-encoded data
  t.equal(
    d(facts(['Host', 'a', 'User-Agent', 'My%20Receipts/2.1 CFNetwork/1408 Darwin/22.5']), settings),
    undefined,
  );
  t.equal(d(facts(['Host', 'a', 'X-File-Name', 'O%27Brien%20receipt.pdf']), settings), undefined);
  t.equal(d(facts(['Host', 'a', 'Referer', 'https://app/?q=%3Cb%3E%24']), settings), undefined);
  t.equal(d(facts(['Host', 'a', 'COOKIE', 'prefs=%7B%22a%22%3A%24%7D']), settings), undefined);
  t.equal(d(facts(['Host', 'a', 'baggage', 'k=a%7Cb']), settings), undefined);
  t.equal(d(facts(['Host', 'a', 'X-Odd', '100% %6', 'X-Other', '%']), settings), undefined);
  t.end();
});

t.test('the detectors answer the common requests by their shortcuts, and the rest as before', (t) => {
  const cc = REQUEST_DETECTORS.cache_control!;
  for (const v of ['no-cache', 'max-age=0', 'no-store', 'no-cache, no-store', 'max-stale'])
    t.equal(cc(facts(['Cache-Control', v]), settings), undefined, v);
  for (const v of ['no-cachex', 'max-age=abc', 'no-cache, private', ''])
    t.equal(cc(facts(['Cache-Control', v]), settings), 'invalid Cache-Control directive', v);
  const m = REQUEST_DETECTORS.method_allowlist!;
  t.equal(m(facts([], 'GET'), settings), undefined);
  t.equal(m(facts([], 'get'), settings), undefined, 'a lower-case method is judged upper-cased');
  t.equal(m(facts([], 'PUT'), settings), 'method PUT not allowed');
  t.equal(m(facts([], '|GET'), settings), 'method |GET not allowed', '| is a token character');
  t.equal(m(facts([], 'G ET'), settings), 'method is not a token');
  const ac = REQUEST_DETECTORS.accept_charset!;
  t.equal(ac(facts(['Accept', 'text/html; charset utf-7']), settings), undefined, 'no = : no parameter');
  t.equal(ac(facts(['Accept', 'text/html;charset=utf-7']), settings), 'Accept charset not allowed');
  const iis = REQUEST_DETECTORS.iis_unicode_escape!;
  t.equal(iis(facts([], 'GET', '/a?x=%u003c'), settings), '%u escape');
  t.equal(iis({ ...facts([], 'POST', '/a'), rawForm: 'x=%U003C' }, settings), '%u escape', 'in a form body');
  t.equal(iis(facts([], 'GET', '/a?x=u003c'), settings), undefined);
  const ov = REQUEST_DETECTORS.overlong_target!;
  t.equal(ov(facts([], 'GET', '/%c0%ae%c0%ae/'), settings), 'overlong or %u-escaped separator');
  t.equal(ov(facts([], 'GET', '/c0ae/'), settings), undefined);
  t.end();
});

t.test('a check is only skipped when it could not have fired: requestFeatures holds what each needs', (t) => {
  // names in several cases (and with the Kelvin sign, which lower-cases to k), values that make
  // each check fire and values that do not
  const names = [
    'Host',
    'HOST',
    'host',
    'Content-Length',
    'content-length',
    'Transfer-Encoding',
    'Connection',
    'Accept',
    'ACCEPT',
    'Range',
    'Request-Range',
    'Cache-Control',
    'Content-Type',
    'Content-Encoding',
    'User-Agent',
    'Cookie',
    'Referer',
    'X-Note',
    'Origin',
    'Accept-Charset',
    'Authorization',
    'Sec-Fetch-Mode',
    'Hos\u212a',
    'Ran\u212ae',
  ];
  const values = [
    '',
    ' ',
    'a',
    'example.com',
    'example.com:8080',
    '1.2.3.4',
    ' 1.2.3.4',
    '[::1]',
    '0x7f000001',
    '12',
    '1, 2',
    'chunked',
    'gzip',
    'identity',
    'close',
    'keep-alive',
    'close, keep-alive',
    'a=b',
    'text/html; charset=utf-7',
    'text/html;q=0.9',
    '*/*',
    'application/json',
    'application/json; charset=utf-16',
    'multipart/form-data; boundary=x',
    'text/plain; boundary=x',
    'bytes=1-2',
    'bytes=5-1',
    '1-2',
    'no-cache',
    'no-cachex',
    'max-age=0',
    '%60id%60',
    '%3Cx',
    '100%',
    'Mozilla/5.0 AppleWebKit',
    'k=a%7Cb',
  ];
  const targets = [
    '/',
    '/a?b=c',
    '/a%2e?x',
    '/%c0%ae%c0%ae/',
    '/a?x=%u003c',
    '/%FF',
    '*',
    'http://x/y',
    '/a b',
    '/a?%zz',
  ];
  const arb = fc.record({
    method: fc.constantFrom('GET', 'POST', 'HEAD', 'OPTIONS', 'get', 'PUT', 'G ET', 'DELETE'),
    target: fc.constantFrom(...targets),
    raw: fc.array(fc.tuple(fc.constantFrom(...names), fc.constantFrom(...values)), { maxLength: 8 }),
    bodyLength: fc.constantFrom(0, 0, 7),
    mediaType: fc.constantFrom('', 'application/json', 'text/html'),
    rawForm: fc.constantFrom(undefined, undefined, 'a=b', 'a=%zz', 'a=%u003c'),
    argCount: fc.constantFrom(0, 3, 600),
    truncated: fc.boolean(),
    jsonTooDeep: fc.boolean(),
    prototypePath: fc.boolean(),
    methodOverride: fc.constantFrom(undefined, undefined, 'PUT'),
    targetEscapesValid: fc.boolean(),
    httpVersion: fc.constantFrom('1.1', '1.0'),
  });
  const fired = new Set<string>();
  const skipped = new Set<string>();
  let wrong = 0;
  fc.assert(
    fc.property(arb, (g) => {
      const base = facts(g.raw.flat(), g.method, g.target);
      // the walk only knows a target's escapes valid when they are
      const valid = g.targetEscapesValid && percentFindings(g.target) === 0;
      const f: RequestFacts = {
        ...base,
        httpVersion: g.httpVersion,
        bodyLength: g.bodyLength,
        mediaType: g.mediaType,
        rawForm: g.rawForm,
        argCount: g.argCount,
        truncated: g.truncated,
        jsonTooDeep: g.jsonTooDeep,
        prototypePath: g.prototypePath,
        methodOverride: g.methodOverride,
        targetEscapesValid: valid,
      };
      const features = requestFeatures(f, settings, -1);
      for (const [name, d] of Object.entries(REQUEST_DETECTORS)) {
        const needs = REQUEST_NEEDS[name] ?? 0;
        const note = d(f, settings);
        if (note !== undefined) fired.add(name);
        if (needs !== 0 && (features & needs) === 0) {
          skipped.add(name);
          if (note !== undefined) wrong++;
        }
      }
      return wrong === 0;
    }),
    { numRuns: 20000, seed: 14 },
  );
  t.equal(wrong, 0, 'no skipped check would have fired');
  // every check with needs fired on some request, and was skipped on another
  for (const name of Object.keys(REQUEST_NEEDS)) {
    t.ok(fired.has(name), `${name} fired`);
    t.ok(skipped.has(name), `${name} skipped`);
  }
  t.end();
});

t.test('header names match in any ASCII case, as toLowerCase() reads them, and no look-alike', (t) => {
  const fr = REQUEST_DETECTORS.framing_headers!;
  t.equal(fr(facts(['hOsT', 'a', 'HOST', 'b']), settings), 'several Host headers');
  t.equal(
    fr(facts(['Content-Length', '1', 'TRANSFER-ENCODING', 'chunked']), settings),
    'Content-Length with Transfer-Encoding',
  );
  t.equal(fr(facts(['cONNECTION', 'close, Keep-Alive']), settings), 'Connection close and keep-alive');
  // U+0130 lower-cases to two code units, U+212A to k: neither spells these names
  t.equal(fr(facts(['Connect\u0130on', 'close, keep-alive']), settings), undefined);
  t.equal(fr(facts(['Hos\u212a', 'a', 'Host', 'b']), settings), undefined);
  t.equal(
    fr(facts(['Content-Length', '1', 'Content-Length', '1']), settings),
    'several or malformed Content-Length',
  );
  t.end();
});

t.test('host_header judges each Host, in any order (the last verdict is remembered)', (t) => {
  const d = REQUEST_DETECTORS.host_header!;
  const cases: [string, string | undefined][] = [
    ['receipts.example.com', undefined],
    ['bad host!', 'malformed Host'],
    ['receipts.example.com', undefined],
    ['  ', 'empty Host'],
    ['  ', 'empty Host'],
    ['receipts.example.com:8443', undefined],
    ['bad host!', 'malformed Host'],
    ['bad host!', 'malformed Host'],
    ['[::1]:80', undefined],
  ];
  for (const [host, note] of cases) t.equal(d(facts(['Host', host]), settings), note, JSON.stringify(host));
  t.equal(d(facts([]), settings), 'missing Host');
  t.end();
});
