/**
 * `new Date(ms).toISOString()` for a stream of times that mostly repeat or move forward a
 * little (log lines, decisions): each caller keeps its own cache of the last second's
 * text, so a Date is formatted about once per second instead of once per line.
 */
export function isoFormatter(): (ms: number) => string {
  let lastMs = NaN;
  let lastIso = '';
  let lastSecond = NaN;
  let secondPrefix = '';
  return (ms) => {
    if (ms === lastMs) return lastIso;
    let iso: string;
    const second = Math.floor(ms / 1000);
    if (second === lastSecond && Number.isInteger(ms)) {
      const frac = ms - second * 1000;
      iso = `${secondPrefix}${frac < 10 ? '00' : frac < 100 ? '0' : ''}${frac}Z`;
    } else {
      iso = new Date(ms).toISOString();
      if (Number.isInteger(ms)) {
        lastSecond = second;
        // "…:SS." of "…:SS.mmmZ"
        secondPrefix = iso.slice(0, -4);
      }
    }
    lastMs = ms;
    lastIso = iso;
    return iso;
  };
}
