// The reference point of the benchmark: a bare Node reverse proxy on an undici Pool,
// with no policy at all (issue 8's "Node bare proxy, undici Pool" row).
import http from 'node:http';
import { pipeline } from 'node:stream';
import { Pool } from 'undici';

const upstream = process.env.UPSTREAM_URL ?? 'http://127.0.0.1:9000';
const port = Number(process.env.PORT ?? 0);
const pool = new Pool(upstream, { connections: 128, pipelining: 1 });
const HOP = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'proxy-connection',
]);

const server = http.createServer((req, res) => {
  const headers: Record<string, string> = {};
  for (const k in req.headers) {
    if (HOP.has(k)) continue;
    const v = req.headers[k];
    if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  const hasBody =
    req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool
    .request({ method: req.method as 'GET', path: req.url ?? '/', headers, body: hasBody ? req : null })
    .then((r) => {
      const out: Record<string, string | string[]> = {};
      for (const k in r.headers) if (!HOP.has(k)) out[k] = r.headers[k] as string | string[];
      res.writeHead(r.statusCode, out);
      pipeline(r.body, res, () => {});
    })
    .catch(() => {
      res.writeHead(502);
      res.end();
    });
});
server.keepAliveTimeout = 5000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(
    `bare-proxy listening on http://127.0.0.1:${(server.address() as { port: number }).port}\n`,
  );
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
