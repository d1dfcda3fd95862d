import type { Harness } from './harness.js';

/** Shared by the concurrent-login integration tests (memory store and Redis). */

export const IN_PROGRESS = 'Another login attempt for this account is in progress; retry in a moment.';

/** The login route of these tests: the lockout (max 3, from MAX_LOGIN_ATTEMPTS) lasts 4 s. */
export const LOGIN_ROUTE = `
routes:
  - name: login
    methods: [POST]
    path: /api/auth/login
    policies:
      auth: { require: [none] }
      login_lockout:
        enabled: true
        max_attempts: \${MAX_LOGIN_ATTEMPTS:-3}
        lockout: 4s
`;

export interface LoginResult {
  readonly status: number;
  readonly error: string | undefined;
  readonly message: string | undefined;
  readonly retryAfter: string | null;
}

/** One POST /api/auth/login; `delayMs` makes the mock upstream answer that much later. */
export async function login(
  h: Harness,
  username: string,
  password: string,
  delayMs = 0,
): Promise<LoginResult> {
  const r = await fetch(`${h.url}/api/auth/login`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(delayMs > 0 ? { 'x-mock-delay-ms': String(delayMs) } : {}),
    },
    body: JSON.stringify({ username, password }),
  });
  const text = await r.text();
  let body: { error?: string; message?: string } = {};
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    // an upstream body that is not JSON
  }
  return {
    status: r.status,
    error: body.error,
    message: body.message,
    retryAfter: r.headers.get('retry-after'),
  };
}

export interface GuessOutcome {
  /** the last answer: the upstream's 401, or the lock */
  readonly final: LoginResult;
  /** how many "in progress" refusals this guesser met and retried after */
  readonly waits: number;
}

/**
 * A password guesser as a botnet runs it: it sends its wrong guess and, whenever the gateway
 * says another attempt for the account is in progress, sends it again (without honouring
 * Retry-After, to press as hard as it can). It stops at the first other answer.
 */
export async function guess(h: Harness, username: string, n: number, delayMs: number): Promise<GuessOutcome> {
  let waits = 0;
  for (let i = 0; i < 1000; i++) {
    const r = await login(h, username, `wrong-guess-${n}`, delayMs);
    if (r.status !== 429 || r.message !== IN_PROGRESS) return { final: r, waits };
    waits++;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error('the guesser never got an answer');
}

/** Requests the mock upstream received for the login path. */
export async function upstreamLogins(h: Harness): Promise<number> {
  return (await h.mockRequests()).filter((r) => r.path === '/api/auth/login').length;
}
