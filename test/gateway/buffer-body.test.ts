import t from 'tap';
import { bufferBody } from '../../gateway/pipeline.js';
import { makeContext } from '../helpers/context.js';

/**
 * bufferBody reads a request body for the policies that inspect it. A request whose
 * connection closed while an asynchronous check ran (a JWT, a store call) has a destroyed
 * body stream that emits nothing more: the read must end at once, not wait for ever (each
 * such request would hold its context and handler until the process exits).
 */

/** The promise's value, or 'pending' when it has not settled after `ms`. */
function within<T>(p: Promise<T>, ms = 1000): Promise<T | 'pending'> {
  return Promise.race([p, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);
}

t.test('a body stream destroyed before the read: aborted', async (t) => {
  const ctx = makeContext({ method: 'POST', headers: { 'content-length': '5' }, bodyBytes: 'hello' });
  ctx.bodySource.destroy();
  t.equal(await within(bufferBody(ctx, 1024)), 'aborted');
});

t.test('a request cancelled before the read (its signal aborted): aborted', async (t) => {
  const ac = new AbortController();
  ac.abort();
  const ctx = makeContext({
    method: 'POST',
    headers: { 'content-length': '5' },
    bodyBytes: 'hello',
    signal: ac.signal,
  });
  t.equal(await within(bufferBody(ctx, 1024)), 'aborted');
});

t.test(
  'a body that ends after its request was aborted (an HTTP/2 stream reset): aborted, never a whole body',
  async (t) => {
    // an Http2ServerRequest whose stream was reset with its data ends quietly, aborted flag set
    const before = makeContext({ method: 'POST', headers: { 'content-length': '5' }, bodyBytes: 'hel' });
    (before.bodySource as unknown as { aborted: boolean }).aborted = true;
    t.equal(await within(bufferBody(before, 1024)), 'aborted', 'flag set before the read');
    const during = makeContext({ method: 'POST', headers: { 'content-length': '5' }, bodyBytes: 'hel' });
    const read = bufferBody(during, 1024);
    (during.bodySource as unknown as { aborted: boolean }).aborted = true;
    t.equal(await within(read), 'aborted', 'flag set while the body was read');
  },
);

t.test('control: a whole body is read', async (t) => {
  const ctx = makeContext({ method: 'POST', headers: { 'content-length': '5' }, bodyBytes: 'hello' });
  const v = await within(bufferBody(ctx, 1024));
  t.ok(Buffer.isBuffer(v));
  t.equal(Buffer.isBuffer(v) ? v.toString() : v, 'hello');
  const big = makeContext({ method: 'POST', headers: { 'content-length': '5' }, bodyBytes: 'hello' });
  t.equal(await within(bufferBody(big, 3)), undefined, 'over the limit');
});
