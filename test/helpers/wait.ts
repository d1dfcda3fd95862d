/**
 * Poll until `check` is true; fails (throws) after a generous deadline. For waiting on
 * something that happens in another process or on another connection, never as a timing
 * assertion.
 */
export async function eventually(
  what: string,
  check: () => Promise<boolean> | boolean,
  deadlineMs = 30_000,
): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`gave up waiting: ${what}`);
}
