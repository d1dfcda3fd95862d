/**
 * V8 heap flags the gateway is launched with: by the `receipt-gateway` bin (its shebang), by
 * `npm start`, by the Docker image and by the benchmarks. A test keeps those places in step
 * with this list.
 *
 * With V8's defaults a busy Node server lets its heap grow to several times its live data
 * before a full collection: under 1,000 concurrent keep-alive clients the gateway's live heap
 * is about 40 MB while its heap reached 180 MB and its RSS 240 MB. A gateway is a sidecar whose
 * footprint should stay bounded, so:
 * - `--max-semi-space-size` caps the young generation (V8's default lets it grow to 16 MB
 *   per semi-space, resident even when idle);
 * - `--heap-growing-percent` makes the old generation grow by 20 % over the live data between
 *   full collections instead of up to 4×.
 * Both cost some CPU under load (more frequent collections); `npm run bench` reports RSS and
 * throughput with these flags. Operators running `node dist/gateway/cli.js` directly should
 * pass the same flags (`node --max-semi-space-size=8 --heap-growing-percent=20 …`).
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8', '--heap-growing-percent=20'];
