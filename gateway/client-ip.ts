import { isIP, type BlockList } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import { ownString } from './own-string.js';
import { canonicalIp } from '../policies/ip-ban/ip.js';

/** X-Forwarded-For headers up to this long: an address cut out of one is kept as it is. */
const SHORT_HEADER = 64;

/**
 * The socket's address in the one canonical form every key, audit line and upstream header
 * uses (IPv4-mapped IPv6 → IPv4, IPv6 in RFC 5952 form, zone dropped).
 */
export function clientAddress(addr: string | undefined): string {
  if (addr === undefined) return '0.0.0.0';
  return canonicalIp(addr);
}

/**
 * One X-Forwarded-For entry as a canonical address, or undefined when it is not one.
 * Besides a bare address, the forms proxies write with a port: `[v6]:port`, `[v6]` and
 * `v4:port` (RFC 7239 section 6 brackets IPv6; a bracket must close, and only a port may
 * follow it).
 */
function entryAddress(entry: string, copy: boolean): string | undefined {
  let addr = entry;
  if (entry.startsWith('[')) {
    const close = entry.indexOf(']');
    if (close === -1) return undefined;
    const rest = entry.slice(close + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return undefined;
    addr = entry.slice(1, close);
    if (isIP(addr) !== 6) return undefined;
  } else if (isIP(entry) === 0) {
    const port = /^([\d.]+):\d{1,5}$/.exec(entry);
    if (port === null || isIP(port[1]!) !== 4) return undefined;
    addr = port[1]!;
  }
  // copied before canonicalIp sees it: its one-entry cache would hand the slice on to the
  // next caller asking for the same address (the rate-limit and ban keys)
  return canonicalIp(copy ? ownString(addr) : addr);
}

/**
 * The client IP behind trusted proxies: the right-most X-Forwarded-For entry that is not
 * itself a trusted proxy (entries left of it can be forged by the client), in canonical
 * form, so that `::FFFF:192.0.2.1`, `0:0:0:0:0:ffff:c000:201` and `192.0.2.1` are one
 * client in the audit log, in X-Real-IP and in every key. A malformed entry stops the
 * walk: the last trusted address passed (at first the peer's own) is used then, as
 * NGINX's real_ip_recursive does.
 *
 * The address is returned as a string of its own, not as the slice of the header it was
 * cut from (IPv6 text is built anew, other entries are copied out of a long header): it
 * outlives the request as a key (rate-limit buckets, auto-ban counters and lockouts in the
 * memory store, the alerts' per-IP counts, the decision log), and a slice would keep the
 * whole header (up to the max header size) alive with it.
 */
export function forwardedFor(
  header: string | string[] | undefined,
  trusted: BlockList,
  peer: string,
): string {
  if (header === undefined) return peer;
  const joined = Array.isArray(header) ? header.join(',') : header;
  // a slice of a short header keeps little alive: copy only out of a long one
  const copy = joined.length > SHORT_HEADER;
  const list = joined.split(',');
  let candidate = peer;
  for (let i = list.length - 1; i >= 0; i--) {
    const ip = entryAddress(list[i]!.trim(), copy);
    if (ip === undefined) return candidate;
    candidate = ip;
    if (!trusted.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4')) return ip;
  }
  return candidate;
}

/** A trusted proxy said the client connection was https. */
export function isTrustedHttps(headers: IncomingHttpHeaders): boolean {
  const p = headers['x-forwarded-proto'];
  return typeof p === 'string' && p.split(',')[0]!.trim().toLowerCase() === 'https';
}
