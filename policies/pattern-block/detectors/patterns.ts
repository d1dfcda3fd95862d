import { SCRIPT_URL, CSS_SCRIPT, CSS_PROPERTY, EVENT_ATTR } from './xss.js';
import { CACHE_DIRECTIVE, IP_HOST, TOKEN } from './protocol.js';
import { ENTITY, WS } from '../transforms.js';

/** Module-level regexes of the detectors and transforms, for the ReDoS test. */
export const INTERNAL_PATTERNS: readonly { readonly name: string; readonly re: RegExp }[] = [
  { name: 'xss SCRIPT_URL', re: SCRIPT_URL },
  { name: 'xss CSS_SCRIPT', re: CSS_SCRIPT },
  { name: 'xss CSS_PROPERTY', re: CSS_PROPERTY },
  { name: 'xss EVENT_ATTR', re: EVENT_ATTR },
  { name: 'protocol CACHE_DIRECTIVE', re: CACHE_DIRECTIVE },
  { name: 'protocol TOKEN', re: TOKEN },
  { name: 'protocol IP_HOST', re: IP_HOST },
  { name: 'transforms ENTITY', re: ENTITY },
  { name: 'transforms WS', re: WS },
];
