import t from 'tap';
import fc from 'fast-check';
import {
  FrameBoundary,
  closeFrame,
  isWebSocketUpgrade,
  upgradeProblem,
  serializeHead,
} from '../../gateway/websocket.js';
import { redirectLocation } from '../../gateway/redirect.js';

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const good = {
  connection: 'keep-alive, Upgrade',
  upgrade: 'websocket',
  'sec-websocket-key': KEY,
  'sec-websocket-version': '13',
};

t.test('isWebSocketUpgrade', async (t) => {
  t.equal(isWebSocketUpgrade({ upgrade: 'websocket' }), true);
  t.equal(isWebSocketUpgrade({ upgrade: 'WebSocket' }), true);
  t.equal(isWebSocketUpgrade({ upgrade: 'h2c, websocket' }), true);
  t.equal(isWebSocketUpgrade({ upgrade: 'h2c' }), false);
  t.equal(isWebSocketUpgrade({}), false);
});

t.test('upgradeProblem (RFC 6455 §4.2.1)', async (t) => {
  t.equal(upgradeProblem('GET', '1.1', good), undefined);
  const rule = (m: string, v: string, h: Record<string, string>) => upgradeProblem(m, v, h)?.ruleId;
  t.equal(rule('POST', '1.1', good), 'websocket-method');
  t.equal(rule('GET', '1.0', good), 'websocket-version');
  t.equal(rule('GET', '1.1', { ...good, 'content-length': '3' }), 'websocket-body');
  t.equal(rule('GET', '1.1', { ...good, 'content-length': '0' }), undefined, 'an empty body is no body');
  t.equal(rule('GET', '1.1', { ...good, 'transfer-encoding': 'chunked' }), 'websocket-body');
  t.equal(rule('GET', '1.1', { ...good, connection: 'keep-alive' }), 'websocket-connection');
  t.equal(rule('GET', '1.1', { ...good, 'sec-websocket-key': 'abc' }), 'websocket-key');
  t.equal(rule('GET', '1.1', { ...good, 'sec-websocket-key': `${'A'.repeat(21)}===` }), 'websocket-key');
  t.equal(
    rule('GET', '1.1', { ...good, 'sec-websocket-key': Buffer.alloc(17).toString('base64') }),
    'websocket-key',
    '17 bytes',
  );
  const { 'sec-websocket-key': _k, ...noKey } = good;
  t.equal(rule('GET', '1.1', noKey), 'websocket-key');
  const v = upgradeProblem('GET', '1.1', { ...good, 'sec-websocket-version': '8' });
  t.same(v?.headers, { 'Sec-WebSocket-Version': '13' });
});

/** A frame with `len` payload bytes (header forms for 7-bit, 16-bit and 64-bit lengths). */
function frameOf(len: number, masked: boolean, opcode = 0x2): Buffer {
  let head: number[];
  if (len < 126) head = [0x80 | opcode, (masked ? 0x80 : 0) | len];
  else if (len < 65536) head = [0x80 | opcode, (masked ? 0x80 : 0) | 126, len >> 8, len & 0xff];
  else
    head = [
      0x80 | opcode,
      (masked ? 0x80 : 0) | 127,
      0,
      0,
      0,
      0,
      (len >>> 24) & 0xff,
      (len >> 16) & 0xff,
      (len >> 8) & 0xff,
      len & 0xff,
    ];
  return Buffer.concat([
    Buffer.from(head),
    masked ? Buffer.from([1, 2, 3, 4]) : Buffer.alloc(0),
    Buffer.alloc(len, 0x61),
  ]);
}

t.test('FrameBoundary finds every frame end, however the stream is cut', async (t) => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          len: fc.oneof(fc.integer({ min: 0, max: 130 }), fc.integer({ min: 65530, max: 70000 })),
          masked: fc.boolean(),
        }),
        { minLength: 1, maxLength: 6 },
      ),
      fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 30 }),
      (frames, cuts) => {
        const bufs = frames.map((f) => frameOf(f.len, f.masked));
        const stream = Buffer.concat(bufs);
        const ends: number[] = [];
        let at = 0;
        for (const b of bufs) ends.push((at += b.length));
        // cut the stream into chunks
        const chunks: Buffer[] = [];
        let pos = 0;
        for (let i = 0; pos < stream.length; i++) {
          const n = cuts[i % cuts.length]!;
          chunks.push(stream.subarray(pos, pos + n));
          pos += n;
        }
        const fb = new FrameBoundary();
        const found: number[] = [];
        let base = 0;
        for (const c of chunks) {
          let i = 0;
          while (i < c.length) {
            i = fb.advance(c, i, true);
            if (i < c.length) {
              // stopped at a frame boundary: note it, then step over one byte
              found.push(base + i);
              i = fb.advance(c.subarray(0, i + 1), i, false);
            }
          }
          base += c.length;
        }
        if (fb.atBoundary) found.push(base);
        return JSON.stringify([...new Set(found)]) === JSON.stringify([0, ...ends]);
      },
    ),
    { numRuns: 200 },
  );
  // direct cases
  const fb = new FrameBoundary();
  const two = Buffer.concat([frameOf(3, false), frameOf(200, true)]);
  t.equal(fb.advance(two, 0, true), 0, 'at a boundary before anything');
  t.equal(fb.advance(two, 0, false), two.length, 'without stop, everything is consumed');
  t.equal(fb.atBoundary, true);
  const fb2 = new FrameBoundary();
  fb2.advance(two.subarray(0, 1), 0, false);
  t.equal(fb2.advance(two, 1, true), 5, 'the first frame (2 + 3 bytes) ends at 5');
  t.equal(fb2.atBoundary, true);
  const fb3 = new FrameBoundary();
  const big = frameOf(70000, false);
  t.equal(fb3.advance(big.subarray(0, 5), 0, false), 5);
  t.equal(fb3.atBoundary, false, 'inside a 64-bit-length header');
  t.equal(fb3.advance(big, 5, true), big.length);
  t.equal(fb3.atBoundary, true);
});

t.test('closeFrame', async (t) => {
  const plain = closeFrame(1001, 'gateway shutting down', false);
  t.same([...plain.subarray(0, 4)], [0x88, 23, 0x03, 0xe9]);
  t.equal(plain.subarray(4).toString(), 'gateway shutting down');
  const masked = closeFrame(1001, 'bye', true);
  t.equal(masked[0], 0x88);
  t.equal(masked[1], 0x80 | 5);
  const key = masked.subarray(2, 6);
  const payload = Buffer.from(masked.subarray(6).map((b, i) => b ^ key[i & 3]!));
  t.same([...payload], [0x03, 0xe9, ...Buffer.from('bye')]);
  t.equal(
    closeFrame(1000, 'x'.repeat(200), false).length,
    2 + 125,
    'a control frame payload stays within 125 bytes',
  );
});

t.test('serializeHead drops values with CR/LF', async (t) => {
  t.equal(
    serializeHead(101, { upgrade: 'websocket', 'x-bad': 'a\r\nset-cookie: x', 'x-list': ['1', '2'] }),
    'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nx-list: 1\r\nx-list: 2\r\n\r\n',
  );
});

t.test('redirectLocation', async (t) => {
  t.equal(redirectLocation('/a?b=1', 'shop.example.com', 443), 'https://shop.example.com/a?b=1');
  t.equal(redirectLocation('/a', 'Shop.Example.com:80', 8443), 'https://shop.example.com:8443/a');
  t.equal(redirectLocation('/a', '[::1]:8080', 443), 'https://[::1]/a');
  t.equal(
    redirectLocation('http://other.example/x?y', 'shop.example.com', 443),
    'https://shop.example.com/x?y',
    'absolute-form: the path only',
  );
  t.equal(
    redirectLocation('//evil.example/x', 'shop.example.com', 443),
    'https://shop.example.com/evil.example/x',
  );
  t.equal(redirectLocation('/a', undefined, 443), undefined);
  t.equal(redirectLocation('/a', 'evil.example/x', 443), undefined);
  t.equal(redirectLocation('/a', 'user@evil.example', 443), undefined);
  t.equal(redirectLocation('*', 'shop.example.com', 443), undefined);
  t.equal(redirectLocation('/a b', 'shop.example.com', 443), undefined);
});
