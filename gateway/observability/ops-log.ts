import pino from 'pino';
import type { OpsLogger } from '../policy.js';

/** Operational messages (not the audit log) as JSON lines on stderr. */
export function createOpsLogger(level: string = process.env.LOG_LEVEL ?? 'info'): OpsLogger {
  const logger = pino(
    { level, base: { component: 'receipt-gateway' } },
    pino.destination({ dest: 2, sync: false }),
  );
  return {
    info: (obj, msg) => logger.info(obj, msg),
    warn: (obj, msg) => logger.warn(obj, msg),
    error: (obj, msg) => logger.error(obj, msg),
  };
}

/** A logger that keeps nothing (tests). */
export const silentLogger: OpsLogger = { info() {}, warn() {}, error() {} };
