import type { PolicyFactory } from '../gateway/policy.js';
import { securityHeaders } from './security-headers/index.js';
import { cors } from './cors/index.js';
import { sizeLimit } from './size-limit/index.js';
import { userAgent } from './user-agent/index.js';
import { auth } from './auth/index.js';
import { uploadGate } from './upload-gate/index.js';

/**
 * Every policy, by hand (no dynamic import). The order is the execution order within
 * each stage: cheap checks first, authentication before per-identity limits, uploads last.
 */
export const FACTORIES: readonly PolicyFactory[] = [
  sizeLimit,
  userAgent,
  // ip-ban
  cors,
  // pattern-block
  // auth
  auth,
  // rate-limit
  // login-lockout
  // password-policy, csrf
  // upload-gate
  uploadGate,
  securityHeaders,
] as PolicyFactory[];
