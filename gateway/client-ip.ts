import { isIP, type BlockList } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import { ownString } from './own-string.js';

/** X-Forwarded-For headers up to this long: an address cut out of one is kept as it is. */
const SHORT_HEADER = 64;

/** The socket's address in one canonical form (IPv4-mapped IPv6 → IPv4, IPv6 lowercased). */
export function clientAddress(addr: string | undefined): string {
  if (addr === undefined) return '0.0.0.0';
  if (addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4) return addr.slice(7);
  return addr.includes(':') ? addr.toLowerCase() : addr;
}

/**
 * The client IP behind trusted proxies: the right-most X-Forwarded-For entry that is not
 * itself a trusted proxy (entries left of it can be forged by the client). Malformed
 * entries stop the walk: the peer's own address is used then.
 *
 * The address is returned as a string of its own, not as the slice of the header it was
 * cut from: it outlives the request as a key (rate-limit buckets, auto-ban counters and
 * lockouts in the memory store, the alerts' per-IP counts, the decision log), and a slice
 * would keep the whole header (up to the max header size) alive with it.
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
    let entry = list[i]!.trim();
    // allow "[v6]:port" and "v4:port" forms some proxies write
    if (entry.startsWith('[')) entry = entry.slice(1, entry.indexOf(']'));
    else if (isIP(entry) === 0 && /^[\d.]+:\d+$/.test(entry)) entry = entry.slice(0, entry.indexOf(':'));
    const family = isIP(entry);
    if (family === 0) return copy ? ownString(candidate) : candidate;
    const ip = clientAddress(entry);
    candidate = ip;
    if (!trusted.check(ip, family === 6 && ip.includes(':') ? 'ipv6' : 'ipv4'))
      return copy ? ownString(ip) : ip;
  }
  return copy ? ownString(candidate) : candidate;
}

/** A trusted proxy said the client connection was https. */
export function isTrustedHttps(headers: IncomingHttpHeaders): boolean {
  const p = headers['x-forwarded-proto'];
  return typeof p === 'string' && p.split(',')[0]!.trim().toLowerCase() === 'https';
}
