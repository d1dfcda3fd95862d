/**
 * The mock receipt service (SPEC section 3): a small but faithful stand-in for the receipt
 * processor the gateway protects, on plain node:http. Used by `npm start`, the tests and
 * the benchmark.
 *
 * Settings (from `opts.env`, falling back to `process.env`):
 * - `JWT_SECRET_KEY`: HS256 secret; when unset a random 48-character one is generated and
 *   exposed as `secret` on the handle.
 * - `MOCK_JWT_ALG`: `HS256` (default), `RS256` or `ES256`. With RS256/ES256 the mock
 *   generates a key pair, signs with a `kid` and serves `GET /.well-known/jwks.json`.
 * - `MOCK_RECORD=1`: record every request (bounded to the last 10,000) and enable the
 *   test-only routes under `/__mock/` (otherwise they are 404) and the `x-mock-delay-ms`
 *   request header (per-request artificial latency, ≤ 30 s).
 * - `MOCK_DELAY_MS`: artificial latency added to every response (not to `/__mock/`).
 *
 * Key rotation (`POST /__mock/rotate-key` or `rotateKey()`): a new pair with a new `kid`
 * replaces the old one and the JWKS lists only the new key, so tokens signed before the
 * rotation stop verifying once a verifier refetches the JWKS.
 *
 * Every response carries `Server: receipt-mock` and `X-Powered-By: mock` (the gateway must
 * strip them). The hot routes (`GET /api/health`, `GET /api/receipts`) answer from
 * precomputed buffers and log nothing.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse, OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';
import type { JWTPayload } from 'jose';
import { createSigner, parseAlg, randomSecret } from './keys.js';
import type { MockJwtAlg, Signer } from './keys.js';
import { ReceiptStore } from './receipts.js';
import { EMPTY_SHA256, RecordLog, hasBody, headerObject, readBody } from './record.js';
import type { BodyResult, MockRecord } from './record.js';

export type { MockRecord, RecordedPart, UploadedFile } from './record.js';
export type { MockJwtAlg } from './keys.js';

/** Options of {@link startMock}. */
export interface MockOptions {
  /** TCP port; 0 (the default) picks an ephemeral one. */
  port?: number;
  /** Interface to bind; default 127.0.0.1. */
  host?: string;
  /** Settings (see the module comment); each key falls back to `process.env`. */
  env?: Record<string, string | undefined>;
}

/** A running mock, as returned by {@link startMock}. */
export interface MockHandle {
  /** Base URL, e.g. `http://127.0.0.1:9000`. */
  url: string;
  port: number;
  /** The HS256 secret (from JWT_SECRET_KEY, or generated when it was unset). */
  secret: string;
  /** Whether the secret was generated because JWT_SECRET_KEY was unset. */
  secretGenerated: boolean;
  /** The signing algorithm. */
  alg: MockJwtAlg;
  /** Whether requests are recorded (MOCK_RECORD=1). */
  recording: boolean;
  /** The current signing key id (RS256/ES256 only). */
  kid(): string | undefined;
  /** Signs a token like the login route does; claims override the defaults (iat, exp = 1h, iss). */
  sign(claims: JWTPayload & Record<string, unknown>): Promise<string>;
  /** Stops listening, ends WebSockets and connections (in-flight requests get `graceMs`, default 0). */
  close(opts?: { graceMs?: number }): Promise<void>;
  /** Rotates the RS256/ES256 key (throws for HS256). */
  rotateKey(): Promise<void>;
  /** The recorded requests, oldest first (empty unless MOCK_RECORD=1). */
  records(): MockRecord[];
  /** Forgets the recorded requests. */
  clear(): void;
}

/** Fixture users. Passwords are the SPEC's; roles `user` and `admin`. */
export const FIXTURE_USERS: Readonly<Record<string, { password: string; role: 'user' | 'admin' }>> = {
  alice: { password: 'alice-secret-pw', role: 'user' },
  admin: { password: 'admin-secret-pw', role: 'admin' },
};

/** Largest JSON request body the mock accepts (bigger: 413). */
export const MAX_JSON_BODY = 1024 * 1024;
/** Upper bound of `/api/slow?ms=` and of `x-mock-delay-ms`. */
export const MAX_SLOW_MS = 30_000;
/** Upper bound of `/api/big?kb=`. */
export const MAX_BIG_KB = 32 * 1024;

const BASE_HEADERS = { server: 'receipt-mock', 'x-powered-by': 'mock' } as const;
const JSON_TYPE = 'application/json; charset=utf-8';
const HEALTH_BODY = Buffer.from('{"status":"ok"}');
const ADMIN_USERS_BODY = Buffer.from(
  JSON.stringify({
    users: Object.entries(FIXTURE_USERS).map(([username, u]) => ({ username, role: u.role })),
    count: Object.keys(FIXTURE_USERS).length,
  }),
);
const WS_PATH = '/api/ws/echo';

/** Allowed methods per static path (used for 405 + Allow and OPTIONS). */
const STATIC_ROUTES: Readonly<Record<string, string>> = {
  '/api/auth/login': 'POST',
  '/api/auth/register': 'POST',
  '/api/auth/password': 'POST',
  '/api/receipts': 'GET, HEAD, POST',
  '/api/receipts/upload': 'POST',
  '/api/admin/users': 'GET, HEAD',
  '/api/health': 'GET, HEAD',
  '/api/whoami': 'GET, HEAD',
  '/api/echo-headers': 'GET, HEAD, POST, PUT, PATCH, DELETE',
  '/api/slow': 'GET, HEAD',
  '/api/big': 'GET, HEAD',
  '/api/set-cookie': 'GET, HEAD',
  '/.well-known/jwks.json': 'GET, HEAD',
};
const ITEM_ALLOW = 'GET, HEAD, DELETE';

function errorBody(error: string, message: string): Buffer {
  return Buffer.from(JSON.stringify({ error, message }));
}
const NOT_FOUND_BODY = errorBody('not_found', 'no such resource');

function envFlag(v: string | undefined): boolean {
  return v === '1' || v === 'true' || v === 'yes';
}

function parseDelay(v: string | undefined): number {
  if (v === undefined || v === '') return 0;
  if (!/^\d+$/.test(v))
    throw new Error(`MOCK_DELAY_MS must be a non-negative integer (milliseconds), got "${v}"`);
  return Number(v);
}

/** Parses a non-negative integer query/header value; undefined when malformed. */
function intParam(v: string | null | undefined): number | undefined {
  if (v == null || !/^\d{1,9}$/.test(v)) return undefined;
  return Number(v);
}

/**
 * Starts the mock receipt service and resolves once it listens.
 *
 * @example
 * const mock = await startMock({ port: 0, env: { MOCK_RECORD: '1', MOCK_JWT_ALG: 'RS256' } });
 * await fetch(`${mock.url}/api/health`);
 * await mock.close();
 */
export async function startMock(opts: MockOptions = {}): Promise<MockHandle> {
  const env = (name: string): string | undefined =>
    opts.env !== undefined && name in opts.env ? opts.env[name] : process.env[name];
  const configuredSecret = env('JWT_SECRET_KEY');
  const secretGenerated = configuredSecret === undefined || configuredSecret === '';
  const secret = secretGenerated ? randomSecret(48) : configuredSecret;
  const alg = parseAlg(env('MOCK_JWT_ALG'));
  const recording = envFlag(env('MOCK_RECORD'));
  const baseDelay = parseDelay(env('MOCK_DELAY_MS'));
  const signer = await createSigner(alg, secret);
  const mock = new MockService(signer, recording, baseDelay);

  const port = opts.port ?? 0;
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    mock.server.once('error', onError);
    mock.server.listen(port, host, () => {
      mock.server.off('error', onError);
      resolve();
    });
  });
  const addr = mock.server.address();
  if (addr === null || typeof addr === 'string') throw new Error('mock: unexpected listen address');
  const urlHost =
    host === '0.0.0.0' || host === ''
      ? '127.0.0.1'
      : host === '::'
        ? '[::1]'
        : host.includes(':')
          ? `[${host}]`
          : host;

  return {
    url: `http://${urlHost}:${addr.port}`,
    port: addr.port,
    secret,
    secretGenerated,
    alg,
    recording,
    kid: () => signer.kid,
    sign: (claims) => signer.sign(claims),
    close: (o) => mock.close(o?.graceMs ?? 0),
    rotateKey: async () => {
      await signer.rotate();
    },
    records: () => mock.log.toArray(),
    clear: () => mock.log.clear(),
  };
}

/** Per-request state passed to the route handlers. */
interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  path: string;
  query: string;
  record: MockRecord | undefined;
  body: BodyResult | undefined;
}

type BodyMode = 'json' | 'multipart' | 'drain';

class MockService {
  readonly server: Server;
  readonly log = new RecordLog();
  private readonly receipts = new ReceiptStore();
  private readonly wss: WebSocketServer;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly sockets = new Set<Socket>();
  private closing = false;

  constructor(
    private readonly signer: Signer,
    private readonly recording: boolean,
    private readonly baseDelay: number,
  ) {
    // Permissive on header size (64 KB) so that the gateway's own limits are what tests see;
    // long keep-alive so the gateway's pooled connections are not closed under it.
    this.server = createServer(
      { keepAliveTimeout: 65_000, headersTimeout: 66_000, maxHeaderSize: 64 * 1024 },
      (req, res) => this.onRequest(req, res),
    );
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024 });
    this.wss.on('connection', (ws: WebSocket) => {
      ws.on('message', (data, isBinary) => {
        ws.send(data, { binary: isBinary });
      });
      ws.on('error', () => ws.terminate());
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
  }

  async close(graceMs: number): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    for (const ws of this.wss.clients) ws.terminate();
    if (graceMs > 0) {
      const deadline = Date.now() + graceMs;
      while (this.sockets.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
        this.server.closeIdleConnections();
      }
    }
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.server.closeAllConnections();
    for (const s of this.sockets) s.destroy();
    await closed;
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  // ---------------------------------------------------------------- request entry

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const query = q === -1 ? '' : url.slice(q + 1);
    const method = req.method ?? 'GET';

    // Test-only control routes: never recorded, never delayed, absent without MOCK_RECORD=1.
    if (path.startsWith('/__mock/')) {
      if (!this.recording) {
        req.resume();
        this.send(res, 404, NOT_FOUND_BODY);
        return;
      }
      req.resume();
      this.control(method, path, res);
      return;
    }

    const record = this.recording ? this.newRecord(req, method, url) : undefined;
    if (record !== undefined) res.once('finish', () => (record.status = res.statusCode));
    const ctx: Ctx = { req, res, method, path, query, record, body: undefined };
    const mode = bodyMode(method, path);

    if (!hasBody(req)) {
      if (record !== undefined) {
        record.body_sha256 = EMPTY_SHA256;
        if (mode === 'multipart' || isMultipart(req)) record.parts = [];
        this.log.push(record);
      }
      if (mode === 'multipart')
        ctx.body = { size: 0, sha256: EMPTY_SHA256, tooLarge: false, aborted: false, files: [] };
      else if (mode === 'json')
        ctx.body = {
          size: 0,
          sha256: EMPTY_SHA256,
          tooLarge: false,
          aborted: false,
          buffer: Buffer.alloc(0),
        };
      req.resume();
      this.afterBody(ctx);
      return;
    }

    const multipart = mode === 'multipart' || (record !== undefined && isMultipart(req));
    void readBody(req, {
      collect: mode === 'json',
      limit: MAX_JSON_BODY,
      multipart,
      hash: record !== undefined,
    }).then((body) => {
      ctx.body = body;
      if (record !== undefined) {
        record.body_size = body.size;
        record.body_sha256 = body.sha256;
        if (body.files !== undefined) {
          record.parts = body.files.map((f) => ({
            field: f.field,
            filename: f.filename,
            size: f.size,
            content_type: f.content_type,
          }));
        }
        if (body.aborted) record.body_error = 'aborted';
        else if (body.multipartError !== undefined) record.body_error = body.multipartError;
        this.log.push(record);
      }
      if (body.aborted) {
        res.destroy();
        return;
      }
      this.afterBody(ctx);
    });
  }

  private newRecord(req: IncomingMessage, method: string, url: string): MockRecord {
    return {
      time: new Date().toISOString(),
      method,
      path: url,
      headers: headerObject(req.rawHeaders),
      raw_headers: req.rawHeaders.slice(),
      body_size: 0,
      body_sha256: '',
    };
  }

  /** Applies the artificial latency (MOCK_DELAY_MS, or x-mock-delay-ms when recording), then routes. */
  private afterBody(ctx: Ctx): void {
    let delay = this.baseDelay;
    if (this.recording) {
      const h = ctx.req.headers['x-mock-delay-ms'];
      const d = intParam(typeof h === 'string' ? h : undefined);
      if (d !== undefined) delay = Math.min(d, MAX_SLOW_MS);
    }
    if (delay <= 0) {
      this.route(ctx);
      return;
    }
    this.later(ctx.res, delay, () => this.route(ctx));
  }

  /** Runs fn after ms unless the connection closes first or the mock shuts down. */
  private later(res: ServerResponse, ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      res.off('close', cancel);
      fn();
    }, ms);
    const cancel = (): void => {
      clearTimeout(t);
      this.timers.delete(t);
    };
    this.timers.add(t);
    res.once('close', cancel);
  }

  // ---------------------------------------------------------------- routing

  private route(ctx: Ctx): void {
    try {
      this.dispatch(ctx);
    } catch {
      if (!ctx.res.headersSent) this.send(ctx.res, 500, errorBody('internal_error', 'internal error'));
      else ctx.res.destroy();
    }
  }

  private dispatch(ctx: Ctx): void {
    const { method, path, res } = ctx;
    const get = method === 'GET' || method === 'HEAD';

    if (path.startsWith('/api/receipts/') && path !== '/api/receipts/upload') {
      const id = path.slice('/api/receipts/'.length);
      if (id === '' || id.includes('/')) return this.send(res, 404, NOT_FOUND_BODY);
      if (get) {
        const body = this.receipts.get(id);
        return body === undefined
          ? this.send(res, 404, errorBody('not_found', 'receipt not found'))
          : this.send(res, 200, body);
      }
      if (method === 'DELETE') {
        this.receipts.delete(id);
        return this.sendEmpty(res, 204);
      }
      return this.methodNotAllowed(ctx, ITEM_ALLOW);
    }

    const allow = STATIC_ROUTES[path];
    if (allow === undefined) return this.send(res, 404, NOT_FOUND_BODY);

    switch (path) {
      case '/api/health':
        if (get) return this.send(res, 200, HEALTH_BODY);
        break;
      case '/api/receipts':
        if (get) {
          const r = this.receipts.list(ctx.query);
          return r.ok
            ? this.send(res, 200, r.body)
            : this.send(res, 400, errorBody('bad_request', r.message));
        }
        if (method === 'POST') return this.createReceipt(ctx);
        break;
      case '/api/receipts/upload':
        if (method === 'POST') return this.upload(ctx);
        break;
      case '/api/auth/login':
        if (method === 'POST') return void this.login(ctx);
        break;
      case '/api/auth/register':
        if (method === 'POST') return this.register(ctx);
        break;
      case '/api/auth/password':
        if (method === 'POST') return this.password(ctx);
        break;
      case '/api/admin/users':
        if (get) return this.send(res, 200, ADMIN_USERS_BODY);
        break;
      case '/api/whoami':
        if (get) return this.whoami(ctx);
        break;
      case '/api/echo-headers':
        if (method !== 'OPTIONS') return this.sendJson(res, 200, headerObject(ctx.req.rawHeaders));
        break;
      case '/api/slow':
        if (get) return this.slow(ctx);
        break;
      case '/api/big':
        if (get) return this.big(ctx);
        break;
      case '/api/set-cookie':
        if (get) {
          res.setHeader('set-cookie', [
            'session=abc; Path=/',
            'theme=dark; Path=/; HttpOnly; Secure; SameSite=Strict',
          ]);
          return this.sendJson(res, 200, { ok: true });
        }
        break;
      case '/.well-known/jwks.json': {
        const jwks = this.signer.jwksBody;
        if (jwks === undefined)
          return this.send(res, 404, errorBody('not_found', 'no JWKS: the mock signs with HS256'));
        if (get) return this.send(res, 200, jwks, 'application/json');
        break;
      }
    }
    return this.methodNotAllowed(ctx, allow);
  }

  private methodNotAllowed(ctx: Ctx, allow: string): void {
    if (ctx.method === 'OPTIONS') {
      ctx.res.writeHead(204, { ...BASE_HEADERS, allow: `${allow}, OPTIONS` });
      ctx.res.end();
      return;
    }
    ctx.res.setHeader('allow', `${allow}, OPTIONS`);
    this.send(ctx.res, 405, errorBody('method_not_allowed', `method ${ctx.method} not allowed`));
  }

  // ---------------------------------------------------------------- handlers

  /** Parses the JSON (or, where `form` is set, urlencoded) body; sends 4xx and returns undefined on failure. */
  private parseBody(ctx: Ctx, form: boolean): Record<string, unknown> | undefined {
    const body = ctx.body;
    if (body === undefined || body.tooLarge) {
      this.send(ctx.res, 413, errorBody('payload_too_large', `body over ${MAX_JSON_BODY} bytes`));
      return undefined;
    }
    const text = (body.buffer ?? Buffer.alloc(0)).toString('utf8');
    const type = (ctx.req.headers['content-type'] ?? '').toLowerCase();
    if (form && type.startsWith('application/x-www-form-urlencoded')) {
      return Object.fromEntries(new URLSearchParams(text));
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      this.send(ctx.res, 400, errorBody('bad_request', 'body is not valid JSON'));
      return undefined;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      this.send(ctx.res, 400, errorBody('bad_request', 'body must be a JSON object'));
      return undefined;
    }
    return parsed as Record<string, unknown>;
  }

  private async login(ctx: Ctx): Promise<void> {
    const body = this.parseBody(ctx, true);
    if (body === undefined) return;
    const { username, password } = body;
    if (typeof username !== 'string' || typeof password !== 'string') {
      return this.send(ctx.res, 400, errorBody('bad_request', 'username and password are required'));
    }
    const user = Object.hasOwn(FIXTURE_USERS, username) ? FIXTURE_USERS[username] : undefined;
    if (user === undefined || user.password !== password) {
      return this.send(ctx.res, 401, errorBody('invalid_credentials', 'invalid username or password'));
    }
    try {
      const token = await this.signer.sign({ sub: username, role: user.role });
      this.sendJson(ctx.res, 200, { token });
    } catch {
      this.send(ctx.res, 500, errorBody('internal_error', 'internal error'));
    }
  }

  private register(ctx: Ctx): void {
    const body = this.parseBody(ctx, true);
    if (body === undefined) return;
    const { username, password } = body;
    if (typeof username !== 'string' || typeof password !== 'string' || username === '' || password === '') {
      return this.send(ctx.res, 400, errorBody('bad_request', 'username and password are required'));
    }
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(username)) {
      return this.send(
        ctx.res,
        400,
        errorBody('bad_request', 'username must be 1-64 letters, digits, _ . -'),
      );
    }
    if (Object.hasOwn(FIXTURE_USERS, username)) {
      return this.send(ctx.res, 409, errorBody('conflict', 'username already taken'));
    }
    this.sendJson(ctx.res, 201, { username, role: 'user' });
  }

  private password(ctx: Ctx): void {
    const body = this.parseBody(ctx, true);
    if (body === undefined) return;
    const { old_password: oldPw, new_password: newPw } = body;
    if (typeof oldPw !== 'string' || typeof newPw !== 'string' || oldPw === '' || newPw === '') {
      return this.send(ctx.res, 400, errorBody('bad_request', 'old_password and new_password are required'));
    }
    this.sendEmpty(ctx.res, 204);
  }

  private createReceipt(ctx: Ctx): void {
    const body = this.parseBody(ctx, false);
    if (body === undefined) return;
    const r = this.receipts.create(body);
    if (!r.ok) return this.send(ctx.res, 400, errorBody('bad_request', r.message));
    ctx.res.setHeader('location', `/api/receipts/${r.receipt.id}`);
    this.send(ctx.res, 201, r.body);
  }

  private upload(ctx: Ctx): void {
    const body = ctx.body;
    if (body === undefined || body.multipartError !== undefined) {
      return this.send(
        ctx.res,
        400,
        errorBody('bad_request', `malformed multipart/form-data body: ${body?.multipartError ?? 'missing'}`),
      );
    }
    const files = body.files ?? [];
    if (files.length === 0)
      return this.send(ctx.res, 400, errorBody('bad_request', 'no file part in the form'));
    this.sendJson(ctx.res, 201, { files });
  }

  private whoami(ctx: Ctx): void {
    const h = ctx.req.headers;
    const one = (name: string): string | null => {
      const v = h[name];
      return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
    };
    const rolesHeader = one('x-auth-roles');
    this.sendJson(ctx.res, 200, {
      subject: one('x-auth-subject'),
      roles:
        rolesHeader === null
          ? []
          : rolesHeader
              .split(',')
              .map((s) => s.trim())
              .filter((s) => s !== ''),
      roles_header: rolesHeader,
      method: one('x-auth-method'),
      key_id: one('x-auth-key-id'),
      authorization_present: h.authorization !== undefined,
    });
  }

  private slow(ctx: Ctx): void {
    const raw = new URLSearchParams(ctx.query).get('ms');
    const ms = raw === null ? 1000 : intParam(raw);
    if (ms === undefined)
      return this.send(ctx.res, 400, errorBody('bad_request', 'ms must be a non-negative integer'));
    const wait = Math.min(ms, MAX_SLOW_MS);
    this.later(ctx.res, wait, () => this.sendJson(ctx.res, 200, { slept_ms: wait }));
  }

  private big(ctx: Ctx): void {
    const raw = new URLSearchParams(ctx.query).get('kb');
    const kb = raw === null ? 64 : intParam(raw);
    if (kb === undefined || kb < 1)
      return this.send(ctx.res, 400, errorBody('bad_request', 'kb must be a positive integer'));
    const n = Math.min(kb, MAX_BIG_KB) * 1024;
    // {"data":"xxx…"} padded to exactly n bytes.
    const prefix = '{"data":"';
    const buf = Buffer.alloc(n, 'x');
    buf.write(prefix, 0, 'latin1');
    buf.write('"}', n - 2, 'latin1');
    this.send(ctx.res, 200, buf);
  }

  // ---------------------------------------------------------------- /__mock/*

  private control(method: string, path: string, res: ServerResponse): void {
    if (path === '/__mock/requests') {
      if (method === 'GET') return this.sendJson(res, 200, this.log.toArray());
      if (method === 'DELETE') {
        this.log.clear();
        return this.sendEmpty(res, 204);
      }
      res.setHeader('allow', 'GET, DELETE');
      return this.send(res, 405, errorBody('method_not_allowed', `method ${method} not allowed`));
    }
    if (path === '/__mock/rotate-key') {
      if (method !== 'POST') {
        res.setHeader('allow', 'POST');
        return this.send(res, 405, errorBody('method_not_allowed', `method ${method} not allowed`));
      }
      if (!this.signer.asymmetric)
        return this.send(
          res,
          409,
          errorBody('not_supported', 'key rotation needs MOCK_JWT_ALG=RS256 or ES256'),
        );
      this.signer.rotate().then(
        (kid) => this.sendJson(res, 200, { kid, alg: this.signer.alg }),
        () => this.send(res, 500, errorBody('internal_error', 'key rotation failed')),
      );
      return;
    }
    this.send(res, 404, NOT_FOUND_BODY);
  }

  // ---------------------------------------------------------------- WebSocket

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (this.recording && !path.startsWith('/__mock/')) {
      const rec = this.newRecord(req, req.method ?? 'GET', url);
      rec.body_sha256 = EMPTY_SHA256;
      rec.websocket = true;
      rec.status = path === WS_PATH ? 101 : 404;
      this.log.push(rec);
    }
    if (path !== WS_PATH || this.closing) {
      const body = NOT_FOUND_BODY;
      socket.end(
        `HTTP/1.1 404 Not Found\r\nServer: receipt-mock\r\nX-Powered-By: mock\r\nContent-Type: ${JSON_TYPE}\r\n` +
          `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body.toString('latin1')}`,
      );
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.wss.emit('connection', ws, req));
  }

  // ---------------------------------------------------------------- response helpers

  private send(res: ServerResponse, status: number, body: Buffer, type: string = JSON_TYPE): void {
    const headers: OutgoingHttpHeaders = {
      server: 'receipt-mock',
      'x-powered-by': 'mock',
      'content-type': type,
      'content-length': body.length,
    };
    res.writeHead(status, headers);
    res.end(body);
  }

  private sendJson(res: ServerResponse, status: number, value: unknown): void {
    this.send(res, status, Buffer.from(JSON.stringify(value)));
  }

  private sendEmpty(res: ServerResponse, status: number): void {
    res.writeHead(status, BASE_HEADERS);
    res.end();
  }
}

/** How a route consumes its body. */
function bodyMode(method: string, path: string): BodyMode {
  if (method === 'POST') {
    if (path === '/api/receipts/upload') return 'multipart';
    if (
      path === '/api/receipts' ||
      path === '/api/auth/login' ||
      path === '/api/auth/register' ||
      path === '/api/auth/password'
    )
      return 'json';
  }
  return 'drain';
}

function isMultipart(req: IncomingMessage): boolean {
  const t = req.headers['content-type'];
  return t !== undefined && t.toLowerCase().startsWith('multipart/form-data');
}
