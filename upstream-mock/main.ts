/**
 * CLI entry of the mock receipt service (`npm run mock`).
 *
 * Listens on `MOCK_PORT` (default 9000) at `MOCK_HOST` (default 127.0.0.1), prints its
 * address, and stops cleanly on SIGINT/SIGTERM (in-flight requests get up to 2 s).
 * Other settings (JWT_SECRET_KEY, MOCK_JWT_ALG, MOCK_RECORD, MOCK_DELAY_MS) are read by
 * {@link startMock}; see upstream-mock/server.ts.
 */
import { startMock } from './server.js';

function parsePort(v: string | undefined): number {
  if (v === undefined || v === '') return 9000;
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535)
    throw new Error(`MOCK_PORT must be a port number 0-65535, got "${v}"`);
  return Number(v);
}

async function main(): Promise<void> {
  const port = parsePort(process.env.MOCK_PORT);
  const host =
    process.env.MOCK_HOST !== undefined && process.env.MOCK_HOST !== '' ? process.env.MOCK_HOST : '127.0.0.1';
  const mock = await startMock({ port, host });
  const extras = [`alg ${mock.alg}`, mock.recording ? 'recording on' : 'recording off'];
  console.log(`receipt-mock listening on ${mock.url} (${extras.join(', ')})`);
  if (mock.secretGenerated) {
    console.log(
      'receipt-mock: JWT_SECRET_KEY is not set; signing with a random secret generated for this run',
    );
  }
  if (mock.alg !== 'HS256') console.log(`receipt-mock: JWKS at ${mock.url}/.well-known/jwks.json`);

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      console.log(`receipt-mock: ${signal} again, exiting now`);
      process.exit(1);
    }
    stopping = true;
    console.log(`receipt-mock: ${signal}, stopping`);
    mock.close({ graceMs: 2000 }).then(
      () => process.exit(0),
      (err: unknown) => {
        console.error('receipt-mock: error while stopping:', err);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  console.error('receipt-mock: failed to start:', err instanceof Error ? err.message : err);
  process.exit(1);
});
