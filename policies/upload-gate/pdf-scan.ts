import zlib from 'node:zlib';
import { promisify } from 'node:util';

const inflate = promisify(zlib.inflate);

/**
 * A streaming PDF lexer that looks for action names (`/JavaScript`, `/JS`, `/Launch`,
 * `/OpenAction` by default) wherever a PDF reader would see them: names outside strings
 * and comments, with `#xx` escapes decoded (`/J#61vaScript`), across chunk boundaries.
 * Stream data is skipped (binary image data would otherwise match short names such as
 * `/JS` by chance), except object streams (`/Type /ObjStm`), whose objects a reader does
 * parse: those are collected (bounded), inflated when FlateDecode, and lexed too. An
 * object stream that cannot be inspected (other filters, predictors, indirect filter,
 * over the bounds) is reported as such. Long names are also looked for in the raw bytes
 * (strings, comments and streams included), against parser differentials.
 */

const WS = new Uint8Array(256);
for (const c of [0, 9, 10, 12, 13, 32]) WS[c] = 1;
const DELIM = new Uint8Array(256);
for (const c of '()<>[]{}/%') DELIM[c.charCodeAt(0)] = 1;
const isRegular = (c: number) => WS[c] === 0 && DELIM[c] === 0;

const ENDSTREAM = Buffer.from('endstream', 'latin1');
const MAX_NAME = 127;

export interface PdfScanLimits {
  /** largest object stream collected for inspection (compressed bytes) */
  readonly maxObjectStream: number;
  /** largest inflated object stream */
  readonly maxInflated: number;
}

export interface PdfFindings {
  /** action names found, in order of first sight */
  readonly names: string[];
  /** why some object stream could not be inspected (undefined when all were) */
  readonly uninspectable: string | undefined;
}

const enum S {
  Normal,
  Comment,
  LitString,
  LitEscape,
  HexOrDict,
  HexString,
  Name,
  Keyword,
  Stream,
}

class Lexer {
  private state = S.Normal;
  private depth = 0;
  private tok: number[] = [];
  // flags of the object being read, for the stream that may follow
  private objStm = false;
  private flate = false;
  private otherFilter = false;
  private filterIndirect = false;
  private decodeParms = false;
  private afterFilter = 0; // 0 none, 1 just saw /Filter, 2 inside [ after /Filter
  // stream skipping
  private matched = 0;
  private collecting: Buffer[] | undefined;
  private collected = 0;
  private collectOverflow = false;

  constructor(
    private readonly wanted: ReadonlySet<string>,
    private readonly found: Set<string>,
    private readonly allowStreams: boolean,
    private readonly limits: PdfScanLimits,
    private readonly onObjectStream: (
      data: Buffer | undefined,
      why: string | undefined,
      flate: boolean,
    ) => void,
  ) {}

  feed(buf: Buffer): void {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      switch (this.state) {
        case S.Stream:
          i = this.inStream(buf, i);
          break;
        case S.Comment: {
          for (; i < n; i++) {
            const c = buf[i]!;
            if (c === 10 || c === 13) {
              this.state = S.Normal;
              i++;
              break;
            }
          }
          break;
        }
        case S.LitString: {
          for (; i < n; i++) {
            const c = buf[i]!;
            if (c === 92 /* \ */) {
              this.state = S.LitEscape;
              i++;
              break;
            }
            if (c === 40) this.depth++;
            else if (c === 41 && --this.depth === 0) {
              this.state = S.Normal;
              i++;
              break;
            }
          }
          break;
        }
        case S.LitEscape:
          this.state = S.LitString;
          i++;
          break;
        case S.HexOrDict:
          if (buf[i] === 60) {
            // '<<' opens a dictionary
            this.state = S.Normal;
            i++;
          } else this.state = S.HexString;
          break;
        case S.HexString: {
          for (; i < n; i++) {
            if (buf[i] === 62) {
              this.state = S.Normal;
              i++;
              break;
            }
          }
          break;
        }
        case S.Name: {
          for (; i < n; i++) {
            const c = buf[i]!;
            if (!isRegular(c)) break;
            if (this.tok.length <= MAX_NAME) this.tok.push(c);
          }
          if (i < n) {
            this.endName();
            this.state = S.Normal;
          }
          break;
        }
        case S.Keyword: {
          for (; i < n; i++) {
            const c = buf[i]!;
            if (!isRegular(c)) break;
            if (this.tok.length <= 16) this.tok.push(c);
          }
          if (i < n) {
            this.state = S.Normal;
            this.endKeyword(buf[i]!);
          }
          break;
        }
        default: {
          // Normal
          const c = buf[i]!;
          i++;
          if (WS[c] === 1) continue;
          switch (c) {
            case 37: // %
              this.state = S.Comment;
              break;
            case 40: // (
              this.state = S.LitString;
              this.depth = 1;
              this.sawValue();
              break;
            case 60: // <
              this.state = S.HexOrDict;
              break;
            case 47: // /
              this.state = S.Name;
              this.tok.length = 0;
              break;
            case 91: // [
              if (this.afterFilter === 1) this.afterFilter = 2;
              break;
            case 93: // ]
              this.afterFilter = 0;
              break;
            case 62:
            case 41:
            case 123:
            case 125:
              break;
            default:
              this.state = S.Keyword;
              this.tok.length = 0;
              this.tok.push(c);
          }
        }
      }
    }
  }

  /** The input ended: close a pending token. */
  end(): void {
    if (this.state === S.Name) this.endName();
    if (this.state === S.Stream && this.collecting !== undefined) this.finishObjectStream(this.collecting);
    this.state = S.Normal;
  }

  private sawValue(): void {
    if (this.afterFilter === 1) {
      this.filterIndirect = true;
      this.afterFilter = 0;
    }
  }

  private endName(): void {
    const name = decodeName(this.tok);
    this.tok.length = 0;
    if (this.wanted.has(name)) this.found.add(name);
    if (name === 'ObjStm') this.objStm = true;
    if (this.afterFilter > 0) {
      if (name === 'FlateDecode' || name === 'Fl') this.flate = true;
      else this.otherFilter = true;
      if (this.afterFilter === 1) this.afterFilter = 0;
    }
    if (name === 'Filter') this.afterFilter = 1;
    if (name === 'DecodeParms' || name === 'DP') this.decodeParms = true;
  }

  private endKeyword(next: number): void {
    const word = String.fromCharCode(...this.tok);
    this.tok.length = 0;
    if (word === 'obj' || word === 'endobj') {
      this.objStm = this.flate = this.otherFilter = this.filterIndirect = this.decodeParms = false;
      this.afterFilter = 0;
      return;
    }
    this.sawValue();
    if (word === 'stream' && this.allowStreams && (next === 10 || next === 13 || next === 32)) {
      this.state = S.Stream;
      this.matched = 0;
      this.collecting = undefined;
      this.collected = 0;
      this.collectOverflow = false;
      if (this.objStm) {
        if (this.otherFilter || this.filterIndirect || this.decodeParms) {
          this.onObjectStream(undefined, 'object stream with an unsupported filter', false);
        } else this.collecting = [];
      }
    }
  }

  /** Skip stream data up to `endstream`; returns the index after it (or the end). */
  private inStream(buf: Buffer, start: number): number {
    let i = start;
    // finish a match begun in the previous chunk
    if (this.matched > 0) {
      while (i < buf.length && this.matched < ENDSTREAM.length && buf[i] === ENDSTREAM[this.matched]) {
        this.matched++;
        i++;
      }
      if (this.matched === ENDSTREAM.length) {
        this.streamEnded(buf, start, start);
        return i;
      }
      if (i === buf.length) return i;
      // false start: the bytes matched so far were data
      this.collect(ENDSTREAM.subarray(0, this.matched));
      this.matched = 0;
      i = start;
    }
    const at = buf.indexOf(ENDSTREAM, i);
    if (at >= 0) {
      this.streamEnded(buf, i, at);
      return at + ENDSTREAM.length;
    }
    // keep a partial match at the end of the chunk
    let keep = 0;
    for (let k = Math.min(ENDSTREAM.length - 1, buf.length - i); k > 0; k--) {
      if (buf.subarray(buf.length - k).equals(ENDSTREAM.subarray(0, k))) {
        keep = k;
        break;
      }
    }
    this.collect(buf.subarray(i, buf.length - keep));
    this.matched = keep;
    return buf.length;
  }

  private streamEnded(buf: Buffer, from: number, at: number): void {
    this.collect(buf.subarray(from, at));
    this.state = S.Normal;
    this.matched = 0;
    if (this.collecting !== undefined) {
      const data = this.collecting;
      this.collecting = undefined;
      this.finishObjectStream(data);
    }
    this.objStm = false;
  }

  private collect(part: Buffer): void {
    if (this.collecting === undefined || part.length === 0) return;
    if (this.collected + part.length > this.limits.maxObjectStream) {
      this.collectOverflow = true;
      return;
    }
    this.collecting.push(Buffer.from(part));
    this.collected += part.length;
  }

  private finishObjectStream(chunks: Buffer[]): void {
    if (this.collectOverflow) {
      this.onObjectStream(undefined, 'object stream larger than the inspection limit', false);
      return;
    }
    let data = Buffer.concat(chunks);
    // the EOL before `endstream` is not data
    let end = data.length;
    if (end > 0 && data[end - 1] === 10) end--;
    if (end > 0 && data[end - 1] === 13) end--;
    let begin = 0;
    while (data[begin] === 32) begin++;
    if (data[begin] === 13) begin++;
    if (data[begin] === 10) begin++;
    data = data.subarray(begin, end);
    this.onObjectStream(data, undefined, this.flate);
  }
}

function decodeName(bytes: ArrayLike<number>): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (c === 35 /* # */ && i + 2 < bytes.length && isHex(bytes[i + 1]!) && isHex(bytes[i + 2]!)) {
      s += String.fromCharCode(Number.parseInt(String.fromCharCode(bytes[i + 1]!, bytes[i + 2]!), 16));
      i += 2;
    } else s += String.fromCharCode(c);
  }
  return s;
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}

/** Names at least this long are also looked for in the raw bytes (see RawNameScanner). */
export const RAW_NAME_MIN = 6;

/**
 * A second, syntax-blind pass: every `/Name` of at least RAW_NAME_MIN characters in the raw
 * bytes, inside strings, comments and stream data included. A reader that recovers a
 * damaged file from its xref offsets may parse an object that the lexer took for string,
 * comment or stream content (a parser differential); long names such as `/JavaScript`
 * never occur by chance in binary data, so looking for them everywhere costs no false
 * alarms. Short names (`/JS`) are left to the lexer.
 */
class RawNameScanner {
  private carry: Buffer | undefined;
  private readonly longNames: ReadonlySet<string>;

  constructor(
    wanted: ReadonlySet<string>,
    private readonly found: Set<string>,
  ) {
    this.longNames = new Set([...wanted].filter((n) => n.length >= RAW_NAME_MIN));
  }

  feed(chunk: Buffer, last = false): void {
    if (this.longNames.size === 0) return;
    let data = chunk;
    if (this.carry !== undefined) {
      data = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    let i = data.indexOf(47 /* / */);
    while (i >= 0) {
      let j = i + 1;
      while (j < data.length && j - i <= MAX_NAME + 1 && isRegular(data[j]!)) j++;
      if (j === data.length && !last && j - i <= MAX_NAME + 1) {
        // the name may go on in the next chunk
        this.carry = Buffer.from(data.subarray(i));
        return;
      }
      if (j - i - 1 >= RAW_NAME_MIN) {
        const name = decodeName(data.subarray(i + 1, j));
        if (this.longNames.has(name)) this.found.add(name);
      }
      i = data.indexOf(47, j);
    }
  }

  end(): void {
    if (this.carry !== undefined) this.feed(Buffer.alloc(0), true);
  }
}

/** Feed a PDF's bytes in order with `feed`, then `finish()` for the findings. */
export class PdfScanner {
  private readonly found = new Set<string>();
  private readonly lexer: Lexer;
  private readonly raw: RawNameScanner;
  private readonly objectStreams: { data: Buffer; raw: boolean }[] = [];
  private uninspectable: string | undefined;

  constructor(
    private readonly wanted: ReadonlySet<string>,
    private readonly limits: PdfScanLimits,
  ) {
    this.lexer = new Lexer(wanted, this.found, true, limits, (data, why, flate) => {
      if (why !== undefined) this.uninspectable ??= why;
      else if (data !== undefined) this.objectStreams.push({ data, raw: !flate });
    });
    this.raw = new RawNameScanner(wanted, this.found);
  }

  feed(chunk: Buffer): void {
    this.lexer.feed(chunk);
    this.raw.feed(chunk);
  }

  async finish(): Promise<PdfFindings> {
    this.lexer.end();
    this.raw.end();
    for (const os of this.objectStreams) {
      let plain: Buffer;
      if (os.raw) plain = os.data;
      else {
        try {
          plain = await inflate(os.data, {
            maxOutputLength: this.limits.maxInflated,
            finishFlush: zlib.constants.Z_SYNC_FLUSH,
          });
        } catch {
          this.uninspectable ??= 'object stream that does not inflate within the inspection limit';
          continue;
        }
      }
      const inner = new Lexer(this.wanted, this.found, false, this.limits, () => {});
      inner.feed(plain);
      inner.end();
    }
    return { names: [...this.found], uninspectable: this.uninspectable };
  }
}
