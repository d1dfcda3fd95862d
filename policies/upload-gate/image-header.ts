/**
 * Reads the pixel dimensions an image header declares, with random access to the
 * spooled bytes, so that decompression bombs (a few KB declaring 100000×100000 pixels)
 * are refused before anything decodes them. A header that cannot be read is reported as
 * invalid: a file that claims to be an image must have a readable image header.
 */

export type ReadAt = (offset: number, length: number) => Promise<Buffer>;

export type HeaderResult =
  | { readonly ok: true; readonly width: number; readonly height: number; readonly frames: number }
  | { readonly ok: false; readonly why: string };

const bad = (why: string): HeaderResult => ({ ok: false, why });

/** Dimensions of an image of kind `sniffed` (file-type's ext), or why they cannot be read. */
export async function imageDimensions(
  sniffed: string,
  read: ReadAt,
  size: number,
): Promise<HeaderResult | undefined> {
  switch (sniffed) {
    case 'png':
      return png(read);
    case 'gif':
      return gif(read);
    case 'jpg':
      return jpeg(read, size);
    case 'bmp':
      return bmp(read);
    case 'tif':
      return tiff(read, size);
    default:
      return undefined;
  }
}

async function png(read: ReadAt): Promise<HeaderResult> {
  const h = await read(0, 33);
  if (h.length < 33 || h.toString('latin1', 12, 16) !== 'IHDR' || h.readUInt32BE(8) !== 13)
    return bad('PNG without a valid IHDR chunk');
  return { ok: true, width: h.readUInt32BE(16), height: h.readUInt32BE(20), frames: 1 };
}

async function gif(read: ReadAt): Promise<HeaderResult> {
  const h = await read(0, 13);
  if (h.length < 13) return bad('GIF header truncated');
  // file-type sniffs any "GIF" prefix as a GIF; the signature is GIF87a or GIF89a
  const signature = h.toString('latin1', 0, 6);
  if (signature !== 'GIF87a' && signature !== 'GIF89a') return bad('GIF with an unknown version');
  return { ok: true, width: h.readUInt16LE(6), height: h.readUInt16LE(8), frames: 1 };
}

/** Walk the JPEG segments up to the first SOFn (frame header). */
async function jpeg(read: ReadAt, size: number): Promise<HeaderResult> {
  let off = 2;
  for (let segments = 0; segments < 4096 && off + 4 <= size; segments++) {
    const h = await read(off, 10);
    if (h.length < 4) break;
    if (h[0] !== 0xff) return bad('JPEG segment without a marker');
    let marker = h[1]!;
    let skip = 1;
    // fill bytes: FF FF … FF xx
    while (marker === 0xff && skip < h.length - 1) marker = h[++skip]!;
    if (marker === 0xff) {
      off += skip;
      continue;
    }
    const at = off + skip + 1;
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      off = at;
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) break; // EOI or SOS before any frame header
    const seg = await read(at, 7);
    if (seg.length < 2) break;
    const len = seg.readUInt16BE(0);
    if (len < 2) return bad('JPEG segment with an invalid length');
    const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isSof) {
      if (seg.length < 7) break;
      return { ok: true, height: seg.readUInt16BE(3), width: seg.readUInt16BE(5), frames: 1 };
    }
    off = at + len;
  }
  return bad('JPEG without a frame header');
}

async function bmp(read: ReadAt): Promise<HeaderResult> {
  const h = await read(0, 26);
  if (h.length < 18) return bad('BMP header truncated');
  const dib = h.readUInt32LE(14);
  if (dib === 12) {
    if (h.length < 22) return bad('BMP header truncated');
    return { ok: true, width: h.readUInt16LE(18), height: h.readUInt16LE(20), frames: 1 };
  }
  if (![40, 52, 56, 64, 108, 124].includes(dib) || h.length < 26) return bad('BMP with an unknown header');
  const width = h.readInt32LE(18);
  const height = h.readInt32LE(22);
  if (width <= 0 || height === 0 || height === -2147483648) return bad('BMP with invalid dimensions');
  return { ok: true, width, height: Math.abs(height), frames: 1 };
}

/** Every IFD (page) of a TIFF or BigTIFF; the largest page's dimensions and the page count. */
async function tiff(read: ReadAt, size: number): Promise<HeaderResult> {
  const h = await read(0, 16);
  if (h.length < 8) return bad('TIFF header truncated');
  const le = h[0] === 0x49;
  if (!(le ? h[1] === 0x49 : h[0] === 0x4d && h[1] === 0x4d)) return bad('TIFF with an unknown byte order');
  const u16 = (b: Buffer, o: number) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
  const u32 = (b: Buffer, o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const u64 = (b: Buffer, o: number) => Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));
  const version = u16(h, 2);
  const big = version === 43;
  if (version !== 42 && !big) return bad('TIFF with an unknown version');
  if (big && h.length < 16) return bad('TIFF header truncated');
  let ifd = big ? u64(h, 8) : u32(h, 4);
  const seen = new Set<number>();
  let width = 0;
  let height = 0;
  let pages = 0;
  while (ifd !== 0) {
    if (seen.has(ifd) || ifd >= size || pages >= 256) return bad('TIFF with an invalid or looping page list');
    seen.add(ifd);
    pages++;
    const cnt = await read(ifd, big ? 8 : 2);
    const n = big ? (cnt.length === 8 ? u64(cnt, 0) : 0) : cnt.length === 2 ? u16(cnt, 0) : 0;
    if (n === 0 || n > 4096) return bad('TIFF page without entries');
    const entrySize = big ? 20 : 12;
    const base = ifd + (big ? 8 : 2);
    const entries = await read(base, n * entrySize + (big ? 8 : 4));
    if (entries.length < n * entrySize) return bad('TIFF page truncated');
    let w = 0;
    let hgt = 0;
    for (let k = 0; k < n; k++) {
      const e = k * entrySize;
      const tag = u16(entries, e);
      if (tag !== 256 && tag !== 257) continue;
      const type = u16(entries, e + 2);
      const vo = e + (big ? 12 : 8);
      const v =
        type === 3
          ? u16(entries, vo)
          : type === 4
            ? u32(entries, vo)
            : type === 16 && big
              ? u64(entries, vo)
              : -1;
      if (v < 0) return bad('TIFF with an invalid dimension entry');
      if (tag === 256) w = v;
      else hgt = v;
    }
    if (w === 0 || hgt === 0) return bad('TIFF page without dimensions');
    if (w * hgt > width * height) {
      width = w;
      height = hgt;
    }
    const next = n * entrySize;
    ifd = entries.length >= next + (big ? 8 : 4) ? (big ? u64(entries, next) : u32(entries, next)) : 0;
  }
  if (pages === 0) return bad('TIFF without pages');
  return { ok: true, width, height, frames: pages };
}
