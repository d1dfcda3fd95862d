import process from 'node:process';

/**
 * SIGHUP and SIGUSR2 held while `receipt-gateway start` starts. Until the gateway handles them
 * itself (once the config is loaded, the store connected and the listeners open), either
 * signal would end the process: their default action. A logrotate postrotate or a config
 * deployment that sends one at the wrong moment must not kill a starting gateway, so both are
 * caught from the first moment and acted on once it is up: the audit log is reopened, and a
 * SIGHUP reloads the file (it may have changed after the start read it).
 *
 * cli.ts imports this module before it loads anything else, so that the handlers exist while the
 * rest of the gateway is still being loaded.
 */
export interface HeldSignals {
  /** a SIGHUP came: reload the config (and reopen the audit log) */
  readonly reload: boolean;
  /** a SIGHUP or SIGUSR2 came: reopen the audit log */
  readonly reopen: boolean;
}

let reload = false;
let reopen = false;
let holding = false;

const onHangup = (): void => {
  reload = true;
  reopen = true;
};
const onUsr2 = (): void => {
  reopen = true;
};

/** Catch SIGHUP and SIGUSR2 from now on, remembering that they came. */
export function holdSignals(): void {
  if (holding) return;
  holding = true;
  process.on('SIGHUP', onHangup);
  process.on('SIGUSR2', onUsr2);
}

/**
 * Stop holding the signals (the caller installs its own handlers in the same tick) and say
 * which came meanwhile; several of one kind count once.
 */
export function releaseSignals(): HeldSignals {
  process.off('SIGHUP', onHangup);
  process.off('SIGUSR2', onUsr2);
  holding = false;
  const held = { reload, reopen };
  reload = false;
  reopen = false;
  return held;
}

// (only `start` runs long enough to be signalled: the other commands keep the default action)
if (process.argv[2] === 'start') holdSignals();
