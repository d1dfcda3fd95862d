import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';

/**
 * Request buffering for uploads, after NGINX's `client_body_buffer_size` /
 * `client_body_temp_path`: each part is held in memory while the request's (and the
 * process's) memory budget allows, and written to a per-request temp directory past it.
 * Every live spool is in a module-level set so that shutdown can remove them all
 * (`cleanupAll`). Nothing here does synchronous I/O except `sweepStaleSpools`, which runs
 * at config load.
 */

/** Prefix of every spool directory: `rg-upload-<pid>-XXXXXX`. */
export const SPOOL_PREFIX = 'rg-upload-';

const live = new Set<Spool>();
/** Directories made by live spools, for the synchronous last-chance removal at exit. */
const liveDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // process.exit() after a graceful shutdown that skipped cleanupAll, or an uncaught error
  process.once('exit', () => {
    for (const dir of liveDirs) {
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch {
        // nothing more can be done while exiting
      }
    }
  });
}
/** Bytes of upload data held in memory by every spool of this process. */
let processMemory = 0;

/** How many spools exist now (tests, metrics). */
export function liveSpoolCount(): number {
  return live.size;
}

/** Upload bytes held in memory across the process. */
export function spooledMemoryBytes(): number {
  return processMemory;
}

/**
 * Remove every spool of this process (graceful shutdown). Safe to call more than once;
 * requests still running see their spool disposed and fail.
 */
export async function cleanupAll(): Promise<void> {
  await Promise.all([...live].map((s) => s.dispose()));
}

/**
 * Remove spool directories left by gateway processes that are no longer running (a
 * crash or SIGKILL skips cleanup). Runs at config load; directories of live processes,
 * including this one, are kept.
 */
export function sweepStaleSpools(base: string): number {
  let removed = 0;
  let entries: string[];
  try {
    entries = fs.readdirSync(base);
  } catch {
    return 0;
  }
  for (const name of entries) {
    if (!name.startsWith(SPOOL_PREFIX)) continue;
    const pid = Number.parseInt(name.slice(SPOOL_PREFIX.length), 10);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || processAlive(pid)) continue;
    try {
      fs.rmSync(path.join(base, name), { recursive: true, force: true });
      removed++;
    } catch {
      // another process removed it, or it is not ours to remove
    }
  }
  return removed;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface SpoolOptions {
  /** directory under which per-request spool directories are made */
  readonly dir: string;
  /** bytes this request may hold in memory before parts go to disk */
  readonly memoryPerRequest: number;
  /** bytes all requests of the process may hold in memory together */
  readonly memoryPerProcess: number;
}

/** One request's spool: its parts and, once a part spilled, its temp directory. */
export class Spool {
  readonly opts: SpoolOptions;
  private dirPromise: Promise<string> | undefined;
  private memory = 0;
  private readonly handles = new Set<fsp.FileHandle>();
  private disposing: Promise<void> | undefined;
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(opts: SpoolOptions) {
    this.opts = opts;
    live.add(this);
  }

  get disposed(): boolean {
    return this.disposing !== undefined;
  }

  /** Whether `n` more bytes may stay in memory; reserves them when so. */
  reserveMemory(n: number): boolean {
    if (this.memory + n > this.opts.memoryPerRequest || processMemory + n > this.opts.memoryPerProcess)
      return false;
    this.memory += n;
    processMemory += n;
    return true;
  }

  releaseMemory(n: number): void {
    const k = Math.min(n, this.memory);
    this.memory -= k;
    processMemory -= k;
  }

  /** Run a file operation that dispose() must wait for before removing the directory. */
  track<T>(op: () => Promise<T>): Promise<T> {
    if (this.disposed) return Promise.reject(new Error('spool disposed'));
    const p = op();
    this.inflight.add(p);
    const forget = () => this.inflight.delete(p);
    p.then(forget, forget);
    return p;
  }

  /** Open a new temp file in this request's directory (made on first use). */
  async openFile(): Promise<{ file: string; handle: fsp.FileHandle }> {
    if (this.disposed) throw new Error('spool disposed');
    this.dirPromise ??= fsp.mkdtemp(path.join(this.opts.dir, `${SPOOL_PREFIX}${process.pid}-`)).then((d) => {
      installExitHook();
      liveDirs.add(d);
      return d;
    });
    const dir = await this.dirPromise;
    if (this.disposed) throw new Error('spool disposed');
    const file = path.join(dir, `part-${this.handles.size}-${Math.random().toString(36).slice(2, 10)}`);
    const handle = await fsp.open(file, 'wx', 0o600);
    if (this.disposed) {
      await handle.close().catch(() => {});
      throw new Error('spool disposed');
    }
    this.handles.add(handle);
    return { file, handle };
  }

  /** Close a part's file once written (it stays on disk until dispose). */
  async closeFile(handle: fsp.FileHandle): Promise<void> {
    if (!this.handles.delete(handle)) return;
    await handle.close();
  }

  /** The temp directory, when one was made. */
  async directory(): Promise<string | undefined> {
    if (this.dirPromise === undefined) return undefined;
    return this.dirPromise.catch(() => undefined);
  }

  /** Free memory, close files, remove the temp directory. Idempotent. */
  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      this.releaseMemory(this.memory);
      // let running opens and writes finish (they fail fast now), so none lands after the rm
      while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
      const handles = [...this.handles];
      this.handles.clear();
      await Promise.all(handles.map((h) => h.close().catch(() => {})));
      const dir = await this.directory();
      if (dir !== undefined) {
        await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
        liveDirs.delete(dir);
      }
      live.delete(this);
    })();
    return this.disposing;
  }
}

/**
 * One part's bytes: in memory while the spool's budget allows, then in a temp file.
 * Writes must be awaited one at a time (the part's Writable does so).
 */
export class SpoolPart {
  private readonly spool: Spool;
  private chunks: Buffer[] = [];
  private memBytes = 0;
  private file: string | undefined;
  private handle: fsp.FileHandle | undefined;
  size = 0;

  constructor(spool: Spool) {
    this.spool = spool;
  }

  get onDisk(): boolean {
    return this.file !== undefined;
  }

  write(chunk: Buffer): Promise<void> {
    return this.spool.track(() => this.writeNow(chunk));
  }

  private async writeNow(chunk: Buffer): Promise<void> {
    this.size += chunk.length;
    if (this.handle === undefined && this.spool.reserveMemory(chunk.length)) {
      // copy: busboy hands out views of the socket's chunk, which would pin it
      this.chunks.push(Buffer.from(chunk));
      this.memBytes += chunk.length;
      return;
    }
    if (this.handle === undefined) {
      const { file, handle } = await this.spool.openFile();
      this.file = file;
      this.handle = handle;
      if (this.chunks.length > 0) {
        await writeAll(handle, this.chunks);
        this.chunks = [];
        this.spool.releaseMemory(this.memBytes);
        this.memBytes = 0;
      }
    }
    await writeAll(this.handle, [chunk]);
  }

  /** No more bytes: close the file (if any). */
  async finish(): Promise<void> {
    if (this.handle !== undefined) {
      const h = this.handle;
      this.handle = undefined;
      await this.spool.track(() => this.spool.closeFile(h));
    }
  }

  /** Read up to `length` bytes at `offset` (header checks). Shorter at the end. */
  async read(offset: number, length: number): Promise<Buffer> {
    if (offset >= this.size || length <= 0) return Buffer.alloc(0);
    const n = Math.min(length, this.size - offset);
    if (this.file === undefined) {
      const out = Buffer.allocUnsafe(n);
      let pos = 0;
      let copied = 0;
      for (const c of this.chunks) {
        const end = pos + c.length;
        if (end > offset && copied < n) {
          const from = Math.max(0, offset + copied - pos);
          copied += c.copy(out, copied, from, Math.min(c.length, from + (n - copied)));
        }
        pos = end;
        if (copied >= n) break;
      }
      return out.subarray(0, copied);
    }
    const fh = await fsp.open(this.file, 'r');
    try {
      const buf = Buffer.alloc(n);
      const { bytesRead } = await fh.read(buf, 0, n, offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  /**
   * A reader for header checks that walk the file (JPEG segments, TIFF pages): reads go
   * through a 64 KB window, so a walk costs a few file reads instead of one per segment.
   */
  windowedReader(): (offset: number, length: number) => Promise<Buffer> {
    const WINDOW = 64 * 1024;
    let winStart = -1;
    let win: Buffer = Buffer.alloc(0);
    return async (offset, length) => {
      if (length > WINDOW || this.file === undefined) return this.read(offset, length);
      if (winStart < 0 || offset < winStart || offset + length > winStart + win.length) {
        winStart = offset;
        win = await this.read(offset, WINDOW);
      }
      return win.subarray(offset - winStart, offset - winStart + length);
    };
  }

  /** The part's bytes as a stream (forwarding). */
  stream(): Readable {
    if (this.file !== undefined) return fs.createReadStream(this.file, { highWaterMark: 64 * 1024 });
    return Readable.from(this.chunks, { objectMode: false });
  }
}

async function writeAll(handle: fsp.FileHandle, chunks: Buffer[]): Promise<void> {
  if (chunks.length === 1) {
    const c = chunks[0]!;
    let off = 0;
    while (off < c.length) {
      const { bytesWritten } = await handle.write(c, off, c.length - off);
      off += bytesWritten;
    }
    return;
  }
  const { bytesWritten } = await handle.writev(chunks);
  const total = chunks.reduce((a, c) => a + c.length, 0);
  if (bytesWritten < total) await writeAll(handle, [Buffer.concat(chunks).subarray(bytesWritten)]);
}
