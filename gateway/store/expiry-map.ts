/** A value of an ExpiryMap. Values are replaced, never changed in place. */
export interface Expiring {
  /** ms since epoch */
  readonly expiresAt: number;
}

interface Node<V> {
  readonly key: string;
  readonly value: V;
}

/**
 * A map of at most `max` entries that, when a new key comes and it is full, drops the entry
 * ending soonest (an expired one first) rather than the least recently used: only adding
 * entries pushes entries out, those pushed out are the ones that had the least time left, and
 * reading (a blocked client retrying) never changes which entry goes. Every operation is O(log n)
 * amortised: a min-heap on `expiresAt` whose nodes go stale when their key is given another
 * value or deleted; stale nodes are skipped when they surface and the heap is rebuilt from the
 * map when they outnumber the live ones.
 */
export class ExpiryMap<V extends Expiring> {
  readonly #max: number;
  readonly #map = new Map<string, V>();
  #heap: Node<V>[] = [];

  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1) throw new Error(`max must be a positive integer (got ${max})`);
    this.#max = max;
  }

  get size(): number {
    return this.#map.size;
  }

  get(key: string): V | undefined {
    return this.#map.get(key);
  }

  set(key: string, value: V): void {
    if (!this.#map.has(key) && this.#map.size >= this.#max) this.#evict();
    this.#map.set(key, value);
    this.#push({ key, value });
    if (this.#heap.length > 2 * this.#map.size + 64) this.#rebuild();
  }

  delete(key: string): boolean {
    return this.#map.delete(key);
  }

  entries(): IterableIterator<[string, V]> {
    return this.#map.entries();
  }

  clear(): void {
    this.#map.clear();
    this.#heap = [];
  }

  /** Drop the live entry ending soonest. */
  #evict(): void {
    while (this.#heap.length > 0) {
      const n = this.#pop();
      if (this.#map.get(n.key) === n.value) {
        this.#map.delete(n.key);
        return;
      }
    }
  }

  #rebuild(): void {
    this.#heap = [];
    for (const [key, value] of this.#map) this.#heap.push({ key, value });
    for (let i = (this.#heap.length >>> 1) - 1; i >= 0; i--) this.#down(i);
  }

  #push(n: Node<V>): void {
    const h = this.#heap;
    h.push(n);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >>> 1;
      if (h[p]!.value.expiresAt <= n.value.expiresAt) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = n;
  }

  #pop(): Node<V> {
    const h = this.#heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      this.#down(0);
    }
    return top;
  }

  #down(i: number): void {
    const h = this.#heap;
    const n = h[i]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= h.length) break;
      if (c + 1 < h.length && h[c + 1]!.value.expiresAt < h[c]!.value.expiresAt) c++;
      if (h[c]!.value.expiresAt >= n.value.expiresAt) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = n;
  }
}
