import t from 'tap';
import v8 from 'node:v8';
import vm from 'node:vm';
import { auth } from '../../../policies/auth/index.js';
import { compilePolicy, makeContext, makeServices } from '../../helpers/context.js';
import { SECRET, NOW_S, hmacToken } from './tokens.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/**
 * The verified-token cache (10 000 entries by default) is keyed by the token. A session
 * token read from the Cookie header is, in V8, a slice that keeps the whole header alive
 * (browsers send kilobytes of other cookies with it): 6000 sessions with 8 KB Cookie
 * headers left 50 MB of old headers live (measured), 3 MB once the cache keeps copies.
 * Stated bound: the live heap after the flood grows by less than 12 MB.
 */
const HEAP_GROWTH_LIMIT = 12 * 1024 * 1024;

t.test('the token cache does not keep Cookie headers alive', async (t) => {
  const services = makeServices();
  const p = await compilePolicy(auth, { jwt: { secret: SECRET, cookie: 'session' } }, services);
  t.teardown(() => p.close?.());
  const N = 6000;
  const token = (i: number) =>
    hmacToken({ alg: 'HS256', typ: 'JWT' }, { sub: `user-${i}`, iat: NOW_S, exp: NOW_S + 3600 });
  const tokens = Array.from({ length: N }, (_, i) => token(i));
  const others = Array.from({ length: 290 }, (_, j) => `_ga${j}=GA1.2.${j}.1700000000`).join('; ');
  gc();
  const before = process.memoryUsage().heapUsed;
  let accepted = 0;
  for (let i = 0; i < N; i++) {
    const ctx = makeContext({ headers: { cookie: `${others}; n=${i}; session=${tokens[i]}` } });
    const v = await p.onRequest!(ctx);
    if (v === undefined && ctx.identity?.subject === `user-${i}`) accepted++;
  }
  gc();
  const growth = process.memoryUsage().heapUsed - before;
  t.equal(accepted, N, 'every session is verified (and cached)');
  t.ok(growth < HEAP_GROWTH_LIMIT, `live heap grew by ${Math.round(growth / 1048576)} MB (limit 12 MB)`);
  // the cache is still in use after the measurement: a cached token is answered synchronously
  const again = makeContext({ headers: { cookie: `session=${tokens[0]}` } });
  const v = p.onRequest!(again);
  t.notOk(v instanceof Promise, 'a cache hit');
  t.equal(again.identity?.subject, 'user-0');
});
