import { Type } from '@sinclair/typebox';
import type { PolicyFactory, Policy } from '../../gateway/policy.js';
import { policyBlock } from '../../gateway/config/policy-schema.js';
import { ConfigError } from '../../gateway/errors.js';
import { escapeRegex } from '../../gateway/regex-escape.js';

/** Tools that announce themselves; matched as case-insensitive substrings. */
export const SCANNER_AGENTS = [
  'sqlmap',
  'nikto',
  'nessus',
  'arachni',
  'nmap',
  'masscan',
  'zgrab',
  'acunetix',
  'netsparker',
  'dirbuster',
  'gobuster',
  'dirb/',
  'wpscan',
  'w3af',
  'openvas',
  'burpcollaborator',
  'havij',
  'jaeles',
  'nuclei',
  'whatweb',
  'wfuzz',
  'ffuf',
  'hydra',
  'zmeu',
  'morfeus',
  'paros',
  'webinspect',
  'appscan',
  'qualys',
  'commix',
  'skipfish',
  'grabber',
  'fimap',
  'brutus',
  'bsqlbf',
  'pangolin',
  'struts-pwn',
  'absinthe',
  'xsser',
  'vega/',
];

const schema = policyBlock(
  {
    max_length: Type.Integer({
      minimum: 16,
      default: 512,
      description: 'longest accepted User-Agent; 403 beyond',
    }),
    require: Type.Boolean({ default: false, description: 'refuse requests without a User-Agent (400)' }),
    deny: Type.Array(Type.String({ minLength: 2 }), {
      default: SCANNER_AGENTS,
      description: 'substrings (case-insensitive) of scanner User-Agents refused with 403',
    }),
    allow: Type.Array(Type.String({ minLength: 2 }), {
      default: [],
      description: 'substrings that exempt a User-Agent from the deny list (e.g. your own monitoring)',
    }),
  },
  { description: 'User-Agent checks: scanner deny list, length cap, optional presence' },
);

/**
 * `user_agent`: refuses known scanners and over-long User-Agents (403
 * `user_agent_rejected`), and optionally absent ones (400). Example:
 * ```yaml
 * policies:
 *   user_agent: { require: true, allow: [my-uptime-checker] }
 * ```
 */
export const userAgent: PolicyFactory<typeof schema> = {
  name: 'user-agent',
  key: 'user_agent',
  schema,
  waf: true,
  compile(config, ctx): Policy {
    let denyRe: RegExp | undefined;
    let allowRe: RegExp | undefined;
    try {
      if (config.deny.length > 0) denyRe = new RegExp(config.deny.map(escapeRegex).join('|'), 'i');
      if (config.allow.length > 0) allowRe = new RegExp(config.allow.map(escapeRegex).join('|'), 'i');
    } catch (err) {
      throw new ConfigError(`cannot compile the User-Agent lists: ${(err as Error).message}`, ctx.path);
    }
    const maxLen = config.max_length;
    const required = config.require;
    return {
      name: 'user-agent',
      mode: config.mode,
      failure: 'open',
      onRequest(rc) {
        const ua = rc.headers['user-agent'];
        if (ua === undefined || ua === '') {
          return required
            ? {
                code: 'user_agent_rejected',
                status: 400,
                message: 'A User-Agent header is required.',
                detail: { ua: 'absent' },
              }
            : undefined;
        }
        if (ua.length > maxLen) {
          return { code: 'user_agent_rejected', detail: { ua: 'too_long', length: ua.length } };
        }
        if (denyRe !== undefined && denyRe.test(ua) && !(allowRe !== undefined && allowRe.test(ua))) {
          const m = denyRe.exec(ua);
          return {
            code: 'user_agent_rejected',
            ruleIds: ['ua-scanner'],
            detail: { ua: 'scanner', tool: m?.[0]?.toLowerCase() },
          };
        }
        return undefined;
      },
    };
  },
};
