import t from 'tap';
import {
  REQUEST_DETECTORS,
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

/** Facts of a GET / whose raw header list is `raw` (names as sent). */
function facts(raw: string[], method = 'GET'): RequestFacts {
  const headers: Record<string, string | string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    const prev = headers[k];
    headers[k] = prev === undefined ? raw[i + 1]! : [prev, raw[i + 1]!].flat();
  }
  return {
    method,
    target: '/',
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
