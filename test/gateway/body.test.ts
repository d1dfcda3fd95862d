import t from 'tap';
import fc from 'fast-check';
import {
  parseBody,
  mediaTypeOf,
  parseForm,
  boundaryOf,
  isJsonMediaType,
  hasDuplicateKeys,
} from '../../gateway/body.js';

t.test('mediaTypeOf lowercases and drops parameters', async (t) => {
  t.equal(mediaTypeOf('Application/JSON; charset=utf-8'), 'application/json');
  t.equal(mediaTypeOf(undefined), '');
  t.ok(isJsonMediaType('application/merge-patch+json'));
  t.ok(isJsonMediaType('application/json-patch+json'));
  t.notOk(isJsonMediaType('text/plain'));
});

t.test('JSON bodies (json and +json), invalid JSON and UTF-8', async (t) => {
  t.same(parseBody('application/json', Buffer.from('{"a":[1,"x"]}')).json, { a: [1, 'x'] });
  t.same(parseBody('application/merge-patch+json', '{"b":null}').json, { b: null });
  const bad = parseBody('application/json', '{"a":');
  t.equal(bad.parseError, 'invalid JSON');
  t.equal(bad.json, undefined);
  t.equal(parseBody('application/json', Buffer.from([0x7b, 0xff, 0x7d])).parseError, 'invalid UTF-8');
  t.equal(parseBody('application/json', '').parseError, undefined);
});

t.test('JSON with a member name twice is refused as ambiguous', async (t) => {
  for (const text of [
    '{"a":1,"a":2}',
    '{"merchant":"<script>","total":1,"merchant":"ok"}',
    '{"x":{"a":1,"b":{"c":[1,{"d":1,"d":2}]}}}',
    '[{"op":"replace","path":"/merchant","value":"x","path":"/notes"}]',
    '{"a":1,"\\u0061":2}',
    '{"a\\"b":1,"a\\u0022b":2}',
  ]) {
    t.equal(hasDuplicateKeys(text), true, text);
    const b = parseBody('application/json', text);
    t.equal(b.parseError, 'duplicate key in a JSON object', text);
    t.equal(b.json, undefined);
  }
  for (const text of [
    '{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}',
    '{"a":"a","b":"a,\\"a\\":"}',
    '[{},{"a":{}},{"a":[]}]',
    '{"a":{},"b":1,"c":[{}],"d":"}{"}',
    '"a"',
    '[1,"a","a"]',
  ])
    t.equal(hasDuplicateKeys(text), false, text);
  // property: what JSON.stringify writes never has a duplicate, and adding a member that
  // repeats a name at any object makes one
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      const text = JSON.stringify(v);
      if (hasDuplicateKeys(text)) return false;
      const withDup = JSON.stringify(v, (_k, x: unknown) => {
        if (x === null || typeof x !== 'object' || Array.isArray(x)) return x;
        const keys = Object.keys(x);
        return keys.length === 0 ? x : { ...x, [`${keys[0]}\u0000dup`]: 1 };
      }).replaceAll('\\u0000dup', '');
      return keys(v) === 0 || hasDuplicateKeys(withDup);
    }),
    { numRuns: 500 },
  );
});

/** How many objects with members `v` holds. */
function keys(v: unknown): number {
  if (v === null || typeof v !== 'object') return 0;
  if (Array.isArray(v)) return v.reduce((n: number, x) => n + keys(x), 0);
  const own = Object.values(v as Record<string, unknown>);
  return (own.length > 0 ? 1 : 0) + own.reduce((n: number, x) => n + keys(x), 0);
}

t.test('urlencoded forms: + is a space, invalid escapes stay literal, names may hold =', async (t) => {
  t.same(parseBody('application/x-www-form-urlencoded', 'a=b+c&d=%41%42&e').form, [
    ['a', 'b c'],
    ['d', 'AB'],
    ['e', ''],
  ]);
  t.same(parseForm('p=%1G&q=100%'), [
    ['p', '%1G'],
    ['q', '100%'],
  ]);
  t.same(parseForm('pay%3D%3Bdrop'), [['pay=;drop', '']]);
});

t.test('multipart: text fields and file names, boundary from the Content-Type', async (t) => {
  const ct = 'multipart/form-data; boundary=XyZ';
  t.equal(boundaryOf(ct), 'XyZ');
  t.equal(boundaryOf('multipart/form-data; boundary="a b"'), 'a b');
  const raw =
    '--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name="file"; filename="r.pdf"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n--XyZ--\r\n';
  const b = parseBody('multipart/form-data', raw, ct);
  t.same(b.fields, [['note', 'hello']]);
  t.same(b.files, [{ field: 'file', filename: 'r.pdf' }]);
  t.equal(parseBody('multipart/form-data', raw).parseError, 'multipart without boundary');
});

t.test('other media types keep only the raw bytes', async (t) => {
  const b = parseBody('text/plain', 'x');
  t.equal(b.raw.toString(), 'x');
  t.equal(b.json, undefined);
  t.equal(b.form, undefined);
});
