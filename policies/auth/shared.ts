import type { Services } from '../../gateway/policy.js';

/**
 * Objects that outlive one config generation (JWKS clients, verified-token caches)
 * live in `services.persistent`, keyed by their settings, so routes with the same
 * settings share one instance and a reload with unchanged settings keeps it (and its
 * warm keys/tokens). Each compiled policy holds a reference; the last `release()`
 * (from Policy.close when a generation is retired) drops the entry, so a reload that
 * changed the settings does not leak the old object.
 */
interface Slot<T> {
  readonly value: T;
  refs: number;
}

/** Take (or create) the shared object under `key` and count one reference to it. */
export function acquire<T>(services: Services, key: string, create: () => T): T {
  const existing = services.persistent.get(key) as Slot<T> | undefined;
  if (existing !== undefined) {
    existing.refs += 1;
    return existing.value;
  }
  const slot: Slot<T> = { value: create(), refs: 1 };
  services.persistent.set(key, slot);
  return slot.value;
}

/**
 * Drop one reference; the entry is removed when nobody holds it any more, and its
 * `dispose()` (when it has one) is called, e.g. to abort a JWKS fetch in flight so that
 * `receipt-gateway validate` does not wait for it.
 */
export function release(services: Services, key: string): void {
  const slot = services.persistent.get(key) as Slot<{ dispose?: () => void }> | undefined;
  if (slot === undefined) return;
  slot.refs -= 1;
  if (slot.refs <= 0) {
    services.persistent.delete(key);
    slot.value.dispose?.();
  }
}

/** Every shared object whose key starts with `prefix` (readiness). */
export function sharedWithPrefix<T>(services: Services, prefix: string): T[] {
  const out: T[] = [];
  for (const [key, slot] of services.persistent) {
    if (key.startsWith(prefix)) out.push((slot as Slot<T>).value);
  }
  return out;
}
