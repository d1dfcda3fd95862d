import { isIP } from 'node:net';
import type { Store } from '../../gateway/store/types.js';

/**
 * IP address helpers shared by the abuse-control policies: one canonical text per
 * address (so `::FFFF:10.0.0.1`, `10.0.0.1` and `0:0::ffff:a00:1` are one key), and the
 * IPv6 prefix a client is keyed by (a subscriber usually holds a whole /64).
 */

/** Parse an IPv6 address into 8 groups; undefined when it is not one. */
function v6Groups(addr: string): number[] | undefined {
  let s = addr;
  const zone = s.indexOf('%');
  if (zone !== -1) s = s.slice(0, zone);
  // embedded IPv4 in the last 32 bits (::ffff:1.2.3.4, ::1.2.3.4): rewrite as two groups
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) !== -1) {
    const v4 = s.slice(lastColon + 1);
    if (isIP(v4) !== 4) return undefined;
    const o = v4.split('.').map(Number);
    s = `${s.slice(0, lastColon + 1)}${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const parse = (part: string): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const head = parse(halves[0]!);
  if (head === undefined) return undefined;
  if (halves.length === 1) return head.length === 8 ? head : undefined;
  const rest = parse(halves[1]!);
  if (rest === undefined) return undefined;
  const known = head.length + rest.length;
  if (known > 7) return undefined;
  return [...head, ...new Array<number>(8 - known).fill(0), ...rest];
}

/** RFC 5952 text of 8 groups: lowercase, no leading zeros, longest zero run (≥ 2) as `::`. */
function v6Text(g: readonly number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/**
 * The canonical text of an address: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 in
 * RFC 5952 form (zone dropped). Anything else is returned unchanged (lowercased).
 */
export function canonicalIp(addr: string): string {
  // ip_ban, rate_limit and login_lockout each ask for the same client address in turn
  if (addr === lastAddr) return lastCanonical;
  const c = computeCanonicalIp(addr);
  lastAddr = addr;
  lastCanonical = c;
  return c;
}
let lastAddr: string | undefined;
let lastCanonical = '';

function computeCanonicalIp(addr: string): string {
  const family = isIP(addr);
  if (family === 4) return addr;
  const g = family === 6 || addr.includes(':') ? v6Groups(addr) : undefined;
  if (g === undefined) return addr.toLowerCase();
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`;
  }
  return v6Text(g);
}

/** 4 or 6 for a canonical address, 0 otherwise. */
export function ipFamily(canonical: string): 0 | 4 | 6 {
  return isIP(canonical) as 0 | 4 | 6;
}

/**
 * The key a client is counted under: the canonical IPv4 address, or for IPv6 the
 * network of `v6Prefix` bits (`2001:db8:1:2::/64`); 128 keeps the full address.
 */
export function clientKey(addr: string, v6Prefix: number): string {
  if (addr === lastKeyAddr && v6Prefix === lastKeyPrefix) return lastKey;
  const k = computeClientKey(addr, v6Prefix);
  lastKeyAddr = addr;
  lastKeyPrefix = v6Prefix;
  lastKey = k;
  return k;
}
let lastKeyAddr: string | undefined;
let lastKeyPrefix = NaN;
let lastKey = '';

function computeClientKey(addr: string, v6Prefix: number): string {
  const c = canonicalIp(addr);
  if (v6Prefix >= 128 || !c.includes(':')) return c;
  const g = v6Groups(c);
  if (g === undefined) return c;
  for (let i = 0; i < 8; i++) {
    const bits = Math.max(0, Math.min(16, v6Prefix - i * 16));
    g[i] = bits === 0 ? 0 : g[i]! & ((0xffff << (16 - bits)) & 0xffff);
  }
  return `${v6Text(g)}/${v6Prefix}`;
}

/** `o[k]` when `o` is an object, else undefined. */
function field(o: unknown, k: string): unknown {
  return o !== null && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined;
}

/**
 * Every `ipv6_prefix` the policy `policy` (`ip_ban`, `login_lockout`) keys IPv6 clients by
 * in this config: `own` first, the global block's (64 unless set), each route's override. A
 * ban or lock is stored under the prefix of the route that set it and must hold on every
 * route: a route keyed by another prefix checks each.
 */
export function configuredPrefixes(
  config: Readonly<Record<string, unknown>>,
  policy: string,
  own: number,
): number[] {
  const out = new Set<number>([own]);
  const global = field(field(config.policies, policy), 'ipv6_prefix');
  out.add(typeof global === 'number' ? global : 64);
  const routes = config.routes;
  if (Array.isArray(routes))
    for (const r of routes) {
      const p = field(field(field(r, 'policies'), policy), 'ipv6_prefix');
      if (typeof p === 'number') out.add(p);
    }
  return [...out];
}

/**
 * The longest block left (ms, 0 for none) on the client `ip` under `key(clientKey(ip, p))`
 * for each prefix `p` of `prefixes` ({@link configuredPrefixes}: the route's own first). An
 * IPv4 client, or a config with one prefix, takes one lookup; synchronous with the
 * in-process store, so the hot path waits for no promise there.
 */
export function blockedAtAnyPrefix(
  store: Pick<Store, 'blockedFor' | 'blockedForSync'>,
  ip: string,
  prefixes: readonly number[],
  key: (client: string) => string,
): number | Promise<number> {
  const sync = store.blockedForSync;
  if (prefixes.length === 1 || !ip.includes(':')) {
    const k = key(clientKey(ip, prefixes[0]!));
    return sync !== undefined ? sync.call(store, k) : store.blockedFor(k);
  }
  const keys = prefixes.map((p) => key(clientKey(ip, p)));
  if (sync !== undefined) return Math.max(...keys.map((k) => sync.call(store, k)));
  return Promise.all(keys.map((k) => store.blockedFor(k))).then((left) => Math.max(...left));
}
