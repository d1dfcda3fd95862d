/**
 * The error of a store URL (`store.url`, REDIS_URL in the shipped gateway.yaml) the store
 * cannot be built from, with the credentials hidden; undefined when it is usable. Checked
 * when the config is loaded, so that a URL the Redis client would refuse is a configuration
 * error naming the key rather than a bare "Invalid URL" when the gateway starts.
 */
export function storeUrlError(url: string): string | undefined {
  if (/^memory:\/\//.test(url)) return undefined;
  const quoted = `invalid store URL "${withoutCredentials(url)}"`;
  if (!/^rediss?:\/\//.test(url)) return `${quoted} (memory:// or redis://host:port/db)`;
  const problem = redisUrlProblem(url);
  return problem === undefined ? undefined : `${quoted}: ${problem} (redis://[user:password@]host:port/db)`;
}

function redisUrlProblem(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'not a valid URL (a bad port or host, or a password with an unencoded /, ? or #)';
  }
  if (u.hostname === '') return 'no host';
  try {
    decodeURIComponent(u.username);
    decodeURIComponent(u.password);
  } catch {
    return 'bad %-encoding in the user or password';
  }
  if (!/^(\/(\d{1,9})?)?$/.test(u.pathname)) return 'the path must be a database index (/0, /1, …)';
  return undefined;
}

/**
 * A URL as an error message may repeat it: whatever stands between the scheme and the last
 * `@` (a user and password, a Redis AUTH token, well-formed or not) is replaced by `***`. Reload errors go to the ops log, the
 * audit log, the dashboard and the admin API.
 */
export function withoutCredentials(url: string): string {
  return url.replace(
    /^([A-Za-z][A-Za-z0-9+.-]*:\/*)?.*@/,
    (_m, scheme: string | undefined) => `${scheme ?? ''}***@`,
  );
}
