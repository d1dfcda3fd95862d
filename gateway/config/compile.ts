import path from 'node:path';
import { BlockList, isIP } from 'node:net';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import type { TObject } from '@sinclair/typebox';
import { FACTORIES } from '../../policies/registry.js';
import type { Policy, PolicyFactory, Services } from '../policy.js';
import { ConfigError } from '../errors.js';
import { Router } from '../router.js';
import type { GatewayConfig } from './schema.js';
import { ConfigLoadError, type ConfigProblem, type LoadedConfig } from './load.js';
import { parseDuration, parseSize } from './units.js';
import { storeUrlError } from '../store/url.js';
import { compileTls, TlsConfigError, type TlsSettings } from '../tls.js';

/** A route with its policies compiled, split by stage in registry order. */
export interface CompiledRoute {
  readonly name: string;
  readonly index: number;
  readonly adminApi: boolean;
  readonly stripPrefix: string | undefined;
  readonly policies: readonly Policy[];
  readonly onRequest: readonly Policy[];
  readonly onIdentified: readonly Policy[];
  readonly readBody: readonly Policy[];
  readonly onBody: readonly Policy[];
  readonly onResponse: readonly Policy[];
  readonly onDone: readonly Policy[];
  /** buffer the body before onBody (some policy asked for it) */
  readonly needsBody: boolean;
  /** body size limit in bytes (Infinity when no size-limit policy) */
  readonly bodyLimit: number;
  /** WebSocket upgrades are accepted (route key `websocket: true`) */
  readonly websocket: boolean;
}

/** `listen.redirect` compiled: the plain-HTTP listener that answers 308 to https. */
export interface RedirectSettings {
  readonly host: string;
  readonly port: number;
  /** port written in the Location; undefined = the main listener's port */
  readonly httpsPort: number | undefined;
  readonly exemptPaths: ReadonlySet<string>;
}

export interface ListenerSettings {
  readonly host: string;
  readonly port: number;
  readonly maxConnections: number;
  readonly maxHeaderSize: number;
  readonly maxHeaders: number;
  readonly headerTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly maxRequestsPerSocket: number;
  readonly shutdownTimeoutMs: number;
  /** TLS termination (edge mode); undefined = plain HTTP */
  readonly tls?: TlsSettings | undefined;
  /** the HTTP→HTTPS redirect listener, when configured */
  readonly redirect?: RedirectSettings | undefined;
}

export interface UpstreamSettings {
  readonly origin: string;
  readonly basePath: string;
  readonly connections: number;
  readonly connectTimeoutMs: number;
  readonly responseTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
}

/** An immutable compiled configuration. Requests pick one at arrival and keep it. */
export interface Generation {
  readonly id: number;
  readonly loadedAt: number;
  readonly file: string;
  readonly config: GatewayConfig;
  readonly router: Router<CompiledRoute>;
  readonly routes: readonly CompiledRoute[];
  /** runs the request-inspection policies for paths no route matches, then 404 */
  readonly unmatched: CompiledRoute;
  readonly listen: ListenerSettings;
  readonly upstream: UpstreamSettings;
  readonly trustedProxies: BlockList | undefined;
  readonly requestIdHeader: string;
  readonly trustRequestId: boolean;
  /** every distinct compiled policy, for close() */
  readonly allPolicies: readonly Policy[];
}

const checkers = new Map<PolicyFactory, TypeCheck<TObject>>();
function checker(f: PolicyFactory): TypeCheck<TObject> {
  let c = checkers.get(f);
  if (!c) {
    c = TypeCompiler.Compile(f.schema);
    checkers.set(f, c);
  }
  return c;
}

/** Keys of the policies run for requests that match no route (then 404). */
const UNMATCHED_EXTRA = new Set(['ip_ban', 'cors', 'rate_limit', 'security_headers']);

let generationCounter = 0;

/**
 * Compile a validated configuration into a generation: merge route blocks over the
 * global ones, validate each effective block, compile each distinct block once.
 * Collects every problem and throws ConfigLoadError.
 */
export async function compileGeneration(loaded: LoadedConfig, services: Services): Promise<Generation> {
  const { config, source } = loaded;
  const problems: ConfigProblem[] = [];
  const problem = (keyPath: readonly (string | number)[], message: string) =>
    problems.push(source.problem(keyPath, message));
  const configDir = path.dirname(path.resolve(loaded.file));
  const cache = new Map<string, Policy>();
  const compileMessages = new Set<string>();
  const all: Policy[] = [];

  const compileBlock = async (
    f: PolicyFactory,
    block: Record<string, unknown>,
    at: readonly (string | number)[],
    override?: Record<string, unknown>,
  ): Promise<Policy | undefined> => {
    if (block.enabled === false) return undefined;
    const cacheKey = `${f.key}\u0000${JSON.stringify(block)}`;
    const hit = cache.get(cacheKey);
    if (hit) return hit;
    try {
      const policy = await f.compile(block as never, {
        services,
        path: at,
        config: config as unknown as Record<string, unknown>,
        configDir,
      });
      cache.set(cacheKey, policy);
      all.push(policy);
      return policy;
    } catch (err) {
      // a policy with several problems throws them together (an AggregateError of ConfigErrors)
      const list =
        err instanceof AggregateError &&
        err.errors.length > 0 &&
        err.errors.every((e) => e instanceof ConfigError)
          ? (err.errors as ConfigError[])
          : [err];
      for (const e of list) {
        const message = e instanceof ConfigError ? e.message : `cannot compile: ${(e as Error).message}`;
        let where = e instanceof ConfigError && e.path.length > 0 ? e.path : at;
        // A key the route did not write was inherited: point at the global block.
        if (override !== undefined && where.length > at.length && at.every((seg, i) => where[i] === seg)) {
          const key = where[at.length];
          if (typeof key === 'string' && !(key in override))
            where = ['policies', f.key, ...where.slice(at.length)];
        }
        // The same global setting fails on every route that inherits it: report it once. An
        // error that names its key is told apart by it too (the same typo in two places).
        const seenKey =
          e instanceof ConfigError && e.path.length > 0 ? `${where.join('\u0000')}\u0001${message}` : message;
        if (!compileMessages.has(seenKey)) {
          compileMessages.add(seenKey);
          problem(where, message);
        }
      }
      return undefined;
    }
  };

  const buildRoute = async (
    name: string,
    index: number,
    overrides: Record<string, Record<string, unknown>> | undefined,
    at: readonly (string | number)[],
    include: (f: PolicyFactory) => boolean,
    extra: { adminApi?: boolean; stripPrefix?: string | undefined; websocket?: boolean },
  ): Promise<CompiledRoute> => {
    const policies: Policy[] = [];
    for (const f of FACTORIES) {
      if (!include(f)) continue;
      const global = (config.policies[f.key] ?? {}) as Record<string, unknown>;
      const override = overrides?.[f.key];
      let block = global;
      let blockPath: readonly (string | number)[] = ['policies', f.key];
      if (override !== undefined) {
        block = Value.Default(f.schema, structuredClone({ ...global, ...override })) as Record<
          string,
          unknown
        >;
        blockPath = [...at, 'policies', f.key];
        const seen = new Set<string>();
        let bad = false;
        for (const e of checker(f).Errors(block)) {
          if (seen.has(e.path)) continue;
          seen.add(e.path);
          bad = true;
          const sub = e.path.slice(1).split('/');
          problem([...blockPath, ...sub], e.message);
        }
        if (bad) continue;
      }
      const p = await compileBlock(f, block, blockPath, override);
      if (p) policies.push(p);
    }
    const bodyLimit = policies.reduce(
      (n, p) => (p.bodyLimit !== undefined ? Math.min(n, p.bodyLimit) : n),
      Infinity,
    );
    return {
      name,
      index,
      adminApi: extra.adminApi ?? false,
      stripPrefix: extra.stripPrefix,
      policies,
      onRequest: policies.filter((p) => p.onRequest),
      onIdentified: policies.filter((p) => p.onIdentified),
      readBody: policies.filter((p) => p.readBody),
      onBody: policies.filter((p) => p.onBody),
      onResponse: policies.filter((p) => p.onResponse),
      onDone: policies.filter((p) => p.onDone),
      needsBody: policies.some((p) => p.needsBody),
      bodyLimit,
      websocket: extra.websocket ?? false,
    };
  };

  // With TLS on the listener, HSTS is sent only over TLS (RFC 6797 §7.2) unless the file
  // says otherwise; every main-listener connection is TLS then, and the redirect listener
  // never sends it.
  const sh = config.policies.security_headers as Record<string, unknown> | undefined;
  if (
    config.listen.tls !== undefined &&
    sh !== undefined &&
    !isSet(source, ['policies', 'security_headers', 'hsts_only_over_tls'])
  ) {
    sh.hsts_only_over_tls = true;
  }

  // Global blocks are validated by the config schema already; compile them once so that
  // semantic errors in a global block are reported at the global block.
  const routes: CompiledRoute[] = [];
  const names = new Set<string>();
  for (let i = 0; i < config.routes.length; i++) {
    const r = config.routes[i]!;
    if (names.has(r.name)) problem(['routes', i, 'name'], `duplicate route name "${r.name}"`);
    names.add(r.name);
    routes.push(
      await buildRoute(
        r.name,
        i,
        r.policies as Record<string, Record<string, unknown>> | undefined,
        ['routes', i],
        () => true,
        {
          adminApi: r.listener === 'admin-api',
          stripPrefix: r.strip_prefix,
          websocket: r.websocket === true,
        },
      ),
    );
  }
  const unmatched = await buildRoute(
    'unmatched',
    -1,
    undefined,
    ['policies'],
    (f) => f.waf === true || UNMATCHED_EXTRA.has(f.key),
    {},
  );

  let router: Router<CompiledRoute> | undefined;
  // Check each route's pattern on its own first, so that every bad pattern is reported.
  let patternsOk = true;
  config.routes.forEach((r, i) => {
    try {
      new Router([{ name: r.name, methods: undefined, path: r.path, value: null }], () => ['routes', i]);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      patternsOk = false;
      problem(err.path, err.message);
    }
  });
  if (patternsOk)
    try {
      router = new Router(
        config.routes.map((r, i) => ({
          name: r.name,
          methods: r.methods ? new Set<string>(r.methods) : undefined,
          path: r.path,
          value: routes[i]!,
        })),
        (i) => ['routes', i],
      );
    } catch (err) {
      if (err instanceof ConfigError) problem(err.path, err.message);
      else throw err;
    }

  let trustedProxies: BlockList | undefined;
  if (config.listen.trusted_proxies.length > 0) {
    trustedProxies = new BlockList();
    config.listen.trusted_proxies.forEach((cidr, i) => {
      const [addr, bits] = cidr.split('/');
      const family = isIP(addr ?? '');
      const prefix = bits === undefined ? (family === 6 ? 128 : 32) : Number(bits);
      if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32)) {
        problem(['listen', 'trusted_proxies', i], `invalid CIDR "${cidr}"`);
        return;
      }
      trustedProxies!.addSubnet(addr!, prefix, family === 6 ? 'ipv6' : 'ipv4');
      if (family === 4) trustedProxies!.addSubnet(`::ffff:${addr}`, 96 + prefix, 'ipv6');
    });
  }

  let upstreamUrl: URL | undefined;
  try {
    upstreamUrl = new URL(config.upstream.url);
    if (upstreamUrl.protocol !== 'http:' && upstreamUrl.protocol !== 'https:') throw new Error('scheme');
    if (upstreamUrl.search || upstreamUrl.hash || upstreamUrl.username) throw new Error('extra');
  } catch {
    problem(
      ['upstream', 'url'],
      `invalid upstream URL "${config.upstream.url}" (use http://host:port[/base])`,
    );
  }
  if (config.workers > 1 && config.store.url.startsWith('memory:')) {
    problem(
      ['workers'],
      `workers: ${config.workers} with the memory:// store would enforce rate limits, lockouts and bans per worker, not together; use a redis:// store (REDIS_URL) or workers: 1`,
    );
  }
  const storeError = storeUrlError(config.store.url);
  if (storeError !== undefined) problem(['store', 'url'], storeError);
  if (!/^[A-Za-z0-9-]+$/.test(config.request_id.header))
    problem(['request_id', 'header'], 'invalid header name');

  let tlsSettings: TlsSettings | undefined;
  if (config.listen.tls !== undefined) {
    try {
      tlsSettings = await compileTls(config.listen.tls, configDir, services.now(), parseDuration);
    } catch (err) {
      const list = err instanceof AggregateError ? (err.errors as Error[]) : [err as Error];
      for (const e of list) problem(e instanceof TlsConfigError ? e.at : ['listen', 'tls'], e.message);
    }
  }
  const rd = config.listen.redirect;
  if (rd !== undefined && config.listen.tls === undefined) {
    problem(['listen', 'redirect'], 'the redirect listener needs listen.tls (it sends clients to https)');
  }
  config.routes.forEach((r, i) => {
    if (r.websocket === true && r.listener === 'admin-api')
      problem(['routes', i, 'websocket'], 'an admin-api route cannot accept WebSocket upgrades');
  });

  if (problems.length > 0 || !router || !upstreamUrl) {
    await Promise.allSettled(all.map((p) => p.close?.()));
    problems.sort((a, b) => a.line - b.line || a.column - b.column);
    throw new ConfigLoadError(problems);
  }

  const l = config.listen;
  const u = config.upstream;
  return {
    id: ++generationCounter,
    loadedAt: services.now(),
    file: loaded.file,
    config,
    router,
    routes,
    unmatched,
    listen: {
      host: l.host,
      port: l.port,
      maxConnections: l.max_connections,
      maxHeaderSize: parseSize(l.max_header_size),
      maxHeaders: l.max_headers,
      headerTimeoutMs: parseDuration(l.header_timeout),
      requestTimeoutMs: parseDuration(l.request_timeout),
      keepAliveTimeoutMs: parseDuration(l.keep_alive_timeout),
      maxRequestsPerSocket: l.max_requests_per_socket,
      shutdownTimeoutMs: parseDuration(l.shutdown_timeout),
      tls: tlsSettings,
      redirect:
        rd === undefined
          ? undefined
          : { host: rd.host, port: rd.port, httpsPort: rd.https_port, exemptPaths: new Set(rd.exempt_paths) },
    },
    upstream: {
      origin: upstreamUrl.origin,
      basePath: upstreamUrl.pathname.replace(/\/+$/, ''),
      connections: u.connections,
      connectTimeoutMs: parseDuration(u.connect_timeout),
      responseTimeoutMs: parseDuration(u.response_timeout),
      bodyTimeoutMs: parseDuration(u.body_timeout),
      keepAliveTimeoutMs: parseDuration(u.keep_alive_timeout),
    },
    trustedProxies,
    requestIdHeader: config.request_id.header.toLowerCase(),
    trustRequestId: config.request_id.trust_incoming,
    allPolicies: all,
  };
}

/** Release what a retired generation's policies hold (timers, clients). */
export async function closeGeneration(gen: Generation): Promise<void> {
  await Promise.allSettled(gen.allPolicies.map((p) => p.close?.()));
}

/** Whether the file itself writes a key (rather than it coming from a schema default). */
function isSet(source: LoadedConfig['source'], keyPath: readonly (string | number)[]): boolean {
  const at = source.locate(keyPath);
  const parent = source.locate(keyPath.slice(0, -1));
  return at.line !== parent.line || at.column !== parent.column;
}
