// Text from requests that the service quotes back, in error messages and warnings.

/**
 * Shortens user input quoted in an error message, without cutting a character in half.
 * The result is well-formed UTF-16 (see wellFormed).
 */
export function truncate(s: string, max = 64): string {
  const clean = wellFormed(s);
  if (clean.length <= max) return clean;
  const end = /[\ud800-\udbff]/.test(clean[max - 1]!) ? max - 1 : max;
  return `${clean.slice(0, end)}…`;
}

/**
 * `s` with every lone surrogate replaced by U+FFFD. gRPC percent-encodes messages into
 * `grpc-message` with encodeURIComponent, which throws on a lone surrogate, and
 * connect-node then never answers the call.
 */
export function wellFormed(s: string): string {
  return s.replace(LONE_SURROGATE, "\ufffd");
}

/**
 * The characters of `s` (Unicode code points, a lone surrogate one each), which the limits
 * named in characters count, as protovalidate's `string.max_len` does: an emoji is one,
 * where `length` counts it twice.
 */
export function characters(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length - 1; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * Edits (insertions, deletions, changes, and swaps of two neighbours) that turn `a` into `b`,
 * or `cap` once it is clear they are at least that: how near a name given is to one meant,
 * for a "did you mean" (a swap is one slip, as a typist makes it).
 */
export function editDistance(a: string, b: string, cap: number): number {
  if (Math.abs(a.length - b.length) >= cap) return cap;
  let before: number[] = [];
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) next[j] = Math.min(next[j]!, before[j - 2]! + 1);
    }
    if (Math.min(...next) >= cap) return cap;
    [before, row] = [row, next];
  }
  return Math.min(row[b.length]!, cap);
}
