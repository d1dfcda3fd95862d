import t from 'tap';
import v8 from 'node:v8';
import vm from 'node:vm';
import { BlockList } from 'node:net';
import { forwardedFor } from '../../gateway/client-ip.js';
import { MemoryStore } from '../../gateway/store/memory.js';
import { createDecisionLog } from '../../gateway/observability/decisions.js';
import { rateLimit } from '../../policies/rate-limit/index.js';
import { compilePolicy, makeClock, makeContext, makeServices } from '../helpers/context.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/**
 * Behind a trusted proxy the client address is an entry of X-Forwarded-For, whose left
 * part the client writes (up to the max header size). The address outlives the request as
 * a key: the rate-limit buckets of the memory store, the decision log (and the alerts'
 * per-IP counts, the auto-ban counters and the lockouts, all keyed by the same string). In
 * V8 an address of 13 characters or more cut out of the header is a slice that keeps the
 * whole header alive: 6000 clients sending 8 KB headers left 33 MB of old headers live
 * (measured; the IPv6 third of them only in the decision log, as the store keys an IPv6
 * client by a /64 text of its own), 2 MB once the address is a copy. Stated bound: the
 * live heap after the flood grows by less than 12 MB.
 */
const HEAP_GROWTH_LIMIT = 12 * 1024 * 1024;

t.test('client addresses from X-Forwarded-For do not keep the header alive', async (t) => {
  const clock = makeClock();
  const store = new MemoryStore({ maxKeys: 100_000, now: clock.now });
  const services = makeServices({ store, clock });
  const policy = await compilePolicy(rateLimit, { default: '100/minute' }, services);
  const decisions = createDecisionLog({ size: 100 });
  const trusted = new BlockList();
  trusted.addSubnet('10.0.0.0', 8);
  const pad = 'x'.repeat(8000);
  // 14 to 19 characters: IPv4, IPv4 with a port, IPv6 (each a slice when cut out)
  const address = (i: number) => {
    const a = 100 + ((i >> 7) & 127);
    const b = 100 + (i & 127);
    return i % 3 === 0 ? `198.51.${a}.${b}` : i % 3 === 1 ? `203.0.${a}.${b}:4711` : `2001:db8:${a}:${b}::1`;
  };
  gc();
  const before = process.memoryUsage().heapUsed;
  let limited = 0;
  let wrong = 0;
  for (let i = 0; i < 6000; i++) {
    const xff = `${pad}${i}, ${address(i)}, 10.1.2.3`;
    const clientIp = forwardedFor(xff, trusted, '10.0.0.1');
    if (clientIp !== address(i).replace(':4711', '')) wrong++;
    const ctx = makeContext({ target: `/api/receipts/${i}`, clientIp });
    if ((await policy.onRequest!(ctx)) !== undefined) limited++;
    decisions.recordContext(ctx, { status: 200, decision: 'allow' });
  }
  gc();
  const growth = process.memoryUsage().heapUsed - before;
  t.equal(wrong, 0, 'the right-most untrusted entry is the client');
  t.equal(limited, 0, 'every client is new');
  t.equal(store.size, 6000, 'a bucket per client');
  t.ok(growth < HEAP_GROWTH_LIMIT, `live heap grew by ${Math.round(growth / 1048576)} MB (limit 12 MB)`);
  // the store and the decision log are still in use: the measurement is not of collected ones
  const again = makeContext({ clientIp: address(5999) });
  t.equal(await policy.onRequest!(again), undefined);
  t.equal(store.size, 6000);
  t.equal(decisions.recent({ limit: 1 })[0]?.client_ip, address(5999));
});
