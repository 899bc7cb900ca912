// Text from requests that the service quotes back, in error messages.

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

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
