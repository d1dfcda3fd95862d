import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import type { Test } from 'tap';
import { REPO, TEST_SECRET } from './harness.js';

/**
 * The real CLI (`gateway/cli.ts` through tsx) as a child process, with a minimal environment:
 * PATH, HOME, the test JWT secret, and `env`.
 */
function spawnCliProcess(
  args: readonly string[],
  env: Record<string, string>,
  withoutNodeOptions: boolean,
): ChildProcessByStdio<null, Readable, Readable> {
  const node = [process.execPath, '--import', 'tsx', path.join(REPO, 'gateway', 'cli.ts'), ...args];
  // (`env -u NODE_OPTIONS`: without the test runner's instrumentation, which catches SIGHUP
  // from the first moment and ends the process on it when nothing else listens)
  const [cmd, ...argv] = withoutNodeOptions ? ['env', '-u', 'NODE_OPTIONS', ...node] : node;
  return spawn(cmd!, argv, {
    cwd: REPO,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? os.tmpdir(),
      JWT_SECRET_KEY: TEST_SECRET,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** A finished CLI run. */
export interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run the CLI to its end (killed after 60 s): its exit code and what it printed. */
export function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawnCliProcess(args, env, false);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A CLI process that keeps running (`start`). */
export interface CliProcess {
  readonly child: ChildProcessByStdio<null, Readable, Readable>;
  /** what it printed so far */
  stdout(): string;
  stderr(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
}

/**
 * Start the CLI and leave it running; killed (SIGKILL) when `t` ends if it still runs.
 * `withoutNodeOptions`: without the test runner's NODE_OPTIONS (for tests of signal handling).
 */
export function startCli(
  t: Test,
  args: readonly string[],
  opts: { env?: Record<string, string>; withoutNodeOptions?: boolean } = {},
): CliProcess {
  const child = spawnCliProcess(args, opts.env ?? {}, opts.withoutNodeOptions === true);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const running = () => child.exitCode === null && child.signalCode === null;
  t.teardown(() => {
    if (running()) child.kill('SIGKILL');
  });
  return { child, stdout: () => stdout, stderr: () => stderr, exited, running };
}
