import type http from 'node:http';

/** A settled promise: no request before this one on its connection. */
const DECIDED: Promise<void> = Promise.resolve();

/** One request's place on its connection (see {@link ConnectionState.read}). */
export interface Turn {
  /** its index among the requests read on the connection */
  readonly index: number;
  /** settled once every request read before it has decided whether its answer closes the connection */
  readonly before: Promise<void>;
  /** this request has decided (idempotent) */
  readonly decide: () => void;
}

/**
 * What the gateway keeps per client connection, for pipelined HTTP/1.1 requests.
 *
 * - Requests read after one whose answer closes the connection (a refusal that left the body
 *   unread, a framing error) are never processed (RFC 9112 §9.6), so a smuggled or queued
 *   request cannot reach the upstream; the ones read before it are answered first.
 * - A request is forwarded only after the ones before it have decided whether they close the
 *   connection, so one refused behind an asynchronous check (a JWT) still stops the requests
 *   pipelined after it.
 * - Node queues the response of a pipelined request until the ones before it are written, and
 *   such a queued response emits no 'close' when the client goes away: the connection's
 *   'close' cancels every request still in flight (else each would hold an upstream
 *   connection, its body unread, until the body timeout).
 */
export class ConnectionState {
  private count = 0;
  private closingAt: number | undefined;
  private decidedAll: Promise<void> = DECIDED;
  /** the requests in flight (see the class comment) */
  readonly inflight = new Set<AbortController>();
  /** the responses not yet closed, in request order (see Gateway.onClientError) */
  readonly responses: http.ServerResponse[] = [];

  /** A request was read: its index, and (when `ordered`) its turn in the decisions. */
  read(ordered: boolean): Turn {
    const index = this.count++;
    if (!ordered) return { index, before: DECIDED, decide: () => {} };
    const before = this.decidedAll;
    let decide!: () => void;
    const mine = new Promise<void>((r) => (decide = r));
    this.decidedAll = before.then(() => mine);
    return { index, before, decide };
  }

  /** The answer to request `index` closes the connection. */
  markClosing(index: number): void {
    if (this.closingAt === undefined || index < this.closingAt) this.closingAt = index;
  }

  /** Whether request `index` was read after one whose answer closes the connection. */
  behindClosing(index: number): boolean {
    return this.closingAt !== undefined && index > this.closingAt;
  }

  /** Track `res` (in flight, cancelled by `ac`) until it closes; the connection's close cancels it. */
  track(res: http.ServerResponse, ac: AbortController): void {
    this.inflight.add(ac);
    this.responses.push(res);
    res.once('close', () => {
      this.inflight.delete(ac);
      const i = this.responses.indexOf(res);
      if (i >= 0) this.responses.splice(i, 1);
    });
  }
}
