import t from 'tap';
import { parseBody, mediaTypeOf, parseForm, boundaryOf, isJsonMediaType } from '../../gateway/body.js';

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
