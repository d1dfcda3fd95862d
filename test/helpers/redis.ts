import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';

/** A throwaway redis-server for one test file. */
export interface TestRedis {
  /** redis://127.0.0.1:PORT/0 */
  readonly url: string;
  readonly port: number;
  /** shut it down cleanly (SIGTERM) and wait for the exit */
  stop(): Promise<void>;
  /** kill it hard (SIGKILL), as a crash would, and wait for the exit */
  kill(): Promise<void>;
  /** start it again on the same port (after stop or kill), empty */
  restart(): Promise<void>;
}

/** A port nothing listens on now (a listener on port 0, closed again). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function findBinary(): string {
  const bin = process.env.REDIS_SERVER_BIN ?? 'redis-server';
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(
      `redis-server is required for this test and was not found (${bin}); install it (apt-get install -y redis-server) or set REDIS_SERVER_BIN`,
    );
  }
  return bin;
}

async function waitForPing(port: number, child: ChildProcess, deadlineMs: number): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with code ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      let buf = '';
      sock.setTimeout(500, () => {
        sock.destroy();
        resolve(false);
      });
      sock.on('error', () => resolve(false));
      sock.on('connect', () => sock.write('PING\r\n'));
      sock.on('data', (d) => {
        buf += d.toString();
        if (buf.includes('\r\n')) {
          sock.destroy();
          resolve(buf.startsWith('+PONG'));
        }
      });
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`redis-server did not answer on port ${port}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Start redis-server on a free loopback port, without persistence. Throws (the test
 * fails, it is not skipped) when the binary is missing. Call stop() in teardown.
 */
export async function startRedis(): Promise<TestRedis> {
  const bin = findBinary();
  const port = await freePort();
  let child: ChildProcess | undefined;

  const launch = async () => {
    const c = spawn(
      bin,
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--protected-mode',
        'no',
        '--loglevel',
        'warning',
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    child = c;
    await waitForPing(port, c, 10_000);
  };
  const exit = (signal: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return resolve();
      c.once('exit', () => resolve());
      c.kill(signal);
    });

  await launch();
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    stop: () => exit('SIGTERM'),
    kill: () => exit('SIGKILL'),
    restart: async () => {
      await exit('SIGKILL');
      await launch();
    },
  };
}
