import type { PolicyFactory } from '../gateway/policy.js';
import { securityHeaders } from './security-headers/index.js';
import { cors } from './cors/index.js';
import { sizeLimit } from './size-limit/index.js';
import { userAgent } from './user-agent/index.js';
import { auth } from './auth/index.js';
import { cookieHardening } from './cookie-hardening/index.js';
import { passwordPolicy } from './password-policy/index.js';
import { csrf } from './csrf/index.js';
import { ipBan } from './ip-ban/index.js';
import { patternBlock } from './pattern-block/index.js';
import { rateLimit } from './rate-limit/index.js';
import { loginLockout } from './login-lockout/index.js';
import { uploadGate } from './upload-gate/index.js';

/**
 * Every policy, by hand (no dynamic import). The order is the execution order within
 * each stage: cheap checks first, authentication before per-identity limits, uploads last.
 */
export const FACTORIES: readonly PolicyFactory[] = [
  sizeLimit,
  userAgent,
  // ip-ban
  ipBan,
  cors,
  // pattern-block
  patternBlock,
  // rate-limit: before auth, so per-IP rules also count requests that fail authentication
  // (rules keyed by api_key/subject run in onIdentified, after auth, wherever this line is)
  rateLimit,
  // auth
  auth,
  // login-lockout
  loginLockout,
  // password-policy, csrf
  passwordPolicy,
  csrf,
  // upload-gate
  uploadGate,
  cookieHardening,
  securityHeaders,
] as PolicyFactory[];
