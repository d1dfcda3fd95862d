/**
 * In-memory receipts of the mock receipt service: a deterministic seed, filtering by
 * `?merchant=&from=&to=&sort=`, creation and deletion. Serialized bodies are cached so the
 * benchmark's hot path (`GET /api/receipts`) does no JSON work per request.
 */

/** One line of a receipt. */
export interface ReceiptItem {
  name: string;
  quantity: number;
  price: number;
}

/** A receipt as the service stores and returns it. */
export interface Receipt {
  id: number;
  merchant: string;
  /** Purchase date, `YYYY-MM-DD`. */
  date: string;
  total: number;
  currency: string;
  category: string;
  items: ReceiptItem[];
}

/** Result of a listing or validation: a body to send, or a client error message. */
export type ListResult = { ok: true; body: Buffer } | { ok: false; message: string };
export type CreateResult = { ok: true; receipt: Receipt; body: Buffer } | { ok: false; message: string };

/** Accepted values of `?sort=` (a leading `-` sorts descending). */
export const SORT_KEYS = ['id', 'date', 'total', 'merchant'] as const;
type SortKey = (typeof SORT_KEYS)[number];

/** Created receipts kept at most (the oldest created ones are dropped past it). */
export const MAX_CREATED = 1000;
const MAX_QUERY_CACHE = 256;
const DATE_RE = /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/;

const SEED_MERCHANTS: readonly [string, string][] = [
  ['Whole Foods Market', 'groceries'],
  ['Shell', 'fuel'],
  ['Starbucks', 'dining'],
  ['Target', 'household'],
  ['Home Depot', 'hardware'],
  ['Amazon', 'online'],
  ["Trader Joe's", 'groceries'],
  ['Uber', 'travel'],
];

/** The deterministic seed: 24 receipts over 2024, ids 1..24. */
export function seedReceipts(): Receipt[] {
  const out: Receipt[] = [];
  for (let i = 0; i < 24; i++) {
    const [merchant, category] = SEED_MERCHANTS[i % SEED_MERCHANTS.length]!;
    const month = (i % 12) + 1;
    const day = ((i * 7) % 28) + 1;
    const items: ReceiptItem[] = [
      { name: `item-${i + 1}-a`, quantity: (i % 3) + 1, price: round2(3.5 + i * 1.25) },
      { name: `item-${i + 1}-b`, quantity: 1, price: round2(9.99 + (i % 5) * 2.5) },
    ];
    const total = round2(items.reduce((s, it) => s + it.quantity * it.price, 0));
    out.push({
      id: i + 1,
      merchant,
      date: `2024-${pad2(month)}-${pad2(day)}`,
      total,
      currency: 'USD',
      category,
      items,
    });
  }
  return out;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}

/** The receipt collection with cached serializations. */
export class ReceiptStore {
  private readonly byId = new Map<number, { receipt: Receipt; body: Buffer }>();
  private readonly created: number[] = [];
  private nextId: number;
  private fullList: Buffer | undefined;
  private readonly queryCache = new Map<string, Buffer>();

  constructor(seed: Receipt[] = seedReceipts()) {
    for (const r of seed) this.byId.set(r.id, { receipt: r, body: Buffer.from(JSON.stringify(r)) });
    this.nextId = seed.reduce((m, r) => Math.max(m, r.id), 0) + 1;
  }

  /** Number of receipts held. */
  get size(): number {
    return this.byId.size;
  }

  /** The body of `GET /api/receipts` without a query: `{receipts:[...], count}` by id. */
  listAll(): Buffer {
    if (this.fullList === undefined)
      this.fullList = serializeList([...this.byId.values()].map((e) => e.receipt));
    return this.fullList;
  }

  /**
   * The body of `GET /api/receipts?<query>`. `merchant` matches a case-insensitive substring,
   * `from`/`to` are inclusive `YYYY-MM-DD` bounds, `sort` is one of {@link SORT_KEYS}
   * optionally prefixed with `-`. Other parameters are ignored.
   */
  list(query: string): ListResult {
    if (query === '') return { ok: true, body: this.listAll() };
    const cached = this.queryCache.get(query);
    if (cached !== undefined) return { ok: true, body: cached };
    const params = new URLSearchParams(query);
    const merchant = params.get('merchant');
    const from = params.get('from');
    const to = params.get('to');
    const sort = params.get('sort');
    if (from !== null && from !== '' && !DATE_RE.test(from))
      return { ok: false, message: 'from must be a date YYYY-MM-DD' };
    if (to !== null && to !== '' && !DATE_RE.test(to))
      return { ok: false, message: 'to must be a date YYYY-MM-DD' };
    let key: SortKey = 'id';
    let desc = false;
    if (sort !== null && sort !== '') {
      desc = sort.startsWith('-');
      const name = desc ? sort.slice(1) : sort;
      const found = SORT_KEYS.find((k) => k === name);
      if (found === undefined)
        return {
          ok: false,
          message: `sort must be one of ${SORT_KEYS.join(', ')} (prefix - for descending)`,
        };
      key = found;
    }
    const needle = merchant === null || merchant === '' ? undefined : merchant.toLowerCase();
    const rows: Receipt[] = [];
    for (const { receipt } of this.byId.values()) {
      if (needle !== undefined && !receipt.merchant.toLowerCase().includes(needle)) continue;
      if (from !== null && from !== '' && receipt.date < from) continue;
      if (to !== null && to !== '' && receipt.date > to) continue;
      rows.push(receipt);
    }
    rows.sort((a, b) => {
      const av = a[key];
      const bv = b[key];
      const c = av < bv ? -1 : av > bv ? 1 : a.id - b.id;
      return desc ? -c : c;
    });
    const body = serializeList(rows);
    if (this.queryCache.size >= MAX_QUERY_CACHE) this.queryCache.clear();
    this.queryCache.set(query, body);
    return { ok: true, body };
  }

  /** The serialized receipt with this id (the path segment as sent), or undefined. */
  get(idText: string): Buffer | undefined {
    if (!/^[1-9]\d{0,9}$/.test(idText)) return undefined;
    return this.byId.get(Number(idText))?.body;
  }

  /**
   * Validates and stores a receipt from a parsed JSON body. Required: `merchant` (non-empty
   * string ≤ 200 chars) and `total` (finite number ≥ 0). Optional: `date` (`YYYY-MM-DD`,
   * default today), `currency` (3 letters, default USD), `category` (string), `items`
   * (array of `{name, quantity, price}`). The id is assigned by the store.
   */
  create(input: unknown): CreateResult {
    if (typeof input !== 'object' || input === null || Array.isArray(input))
      return { ok: false, message: 'receipt must be a JSON object' };
    const o = input as Record<string, unknown>;
    if (typeof o.merchant !== 'string' || o.merchant.trim() === '' || o.merchant.length > 200) {
      return { ok: false, message: 'merchant must be a non-empty string of at most 200 characters' };
    }
    if (typeof o.total !== 'number' || !Number.isFinite(o.total) || o.total < 0)
      return { ok: false, message: 'total must be a number >= 0' };
    let date = new Date().toISOString().slice(0, 10);
    if (o.date !== undefined) {
      if (typeof o.date !== 'string' || !DATE_RE.test(o.date))
        return { ok: false, message: 'date must be a date YYYY-MM-DD' };
      date = o.date;
    }
    let currency = 'USD';
    if (o.currency !== undefined) {
      if (typeof o.currency !== 'string' || !/^[A-Za-z]{3}$/.test(o.currency))
        return { ok: false, message: 'currency must be a 3-letter code' };
      currency = o.currency.toUpperCase();
    }
    let category = 'uncategorized';
    if (o.category !== undefined) {
      if (typeof o.category !== 'string' || o.category.length > 100)
        return { ok: false, message: 'category must be a string of at most 100 characters' };
      category = o.category;
    }
    const items: ReceiptItem[] = [];
    if (o.items !== undefined) {
      if (!Array.isArray(o.items) || o.items.length > 500)
        return { ok: false, message: 'items must be an array of at most 500 entries' };
      for (const it of o.items as unknown[]) {
        const item = it as Record<string, unknown> | null;
        if (
          typeof item !== 'object' ||
          item === null ||
          typeof item.name !== 'string' ||
          typeof item.quantity !== 'number' ||
          !Number.isFinite(item.quantity) ||
          typeof item.price !== 'number' ||
          !Number.isFinite(item.price)
        ) {
          return { ok: false, message: 'each item needs name (string), quantity and price (numbers)' };
        }
        items.push({ name: item.name, quantity: item.quantity, price: item.price });
      }
    }
    const receipt: Receipt = {
      id: this.nextId++,
      merchant: o.merchant,
      date,
      total: o.total,
      currency,
      category,
      items,
    };
    const body = Buffer.from(JSON.stringify(receipt));
    this.byId.set(receipt.id, { receipt, body });
    this.created.push(receipt.id);
    if (this.created.length > MAX_CREATED) this.byId.delete(this.created.shift()!);
    this.invalidate();
    return { ok: true, receipt, body };
  }

  /** Deletes a receipt; true when it existed. */
  delete(idText: string): boolean {
    if (!/^[1-9]\d{0,9}$/.test(idText)) return false;
    const existed = this.byId.delete(Number(idText));
    if (existed) this.invalidate();
    return existed;
  }

  private invalidate(): void {
    this.fullList = undefined;
    this.queryCache.clear();
  }
}

function serializeList(rows: Receipt[]): Buffer {
  return Buffer.from(JSON.stringify({ receipts: rows, count: rows.length }));
}
