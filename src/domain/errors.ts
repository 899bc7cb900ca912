/** Why a request was refused, independent of any transport. */
export type ErrorReason =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "permission_denied"
  | "unauthenticated"
  | "resource_exhausted"
  | "unavailable";

/** One field that failed a rule: `field` is the path in the request, e.g. `filter.runner_ids[2]`. */
export interface FieldViolation {
  field: string;
  rule: string;
  message: string;
}

/** The one error type services throw; the transport maps it to a Connect code in one place. */
export class DomainError extends Error {
  override readonly name = "DomainError";

  constructor(
    readonly reason: ErrorReason,
    message: string,
    readonly violations: readonly FieldViolation[] = [],
  ) {
    super(message);
  }
}

/**
 * The most violations one answer reports. A published schema can break a rule in well over
 * a thousand places; all of them made an answer of about 1 MB from a 100 KB request, and
 * over gRPC, where the message travels in a header, one no client could receive.
 */
export const MAX_REPORTED_VIOLATIONS = 20;

/**
 * The most bytes the violations of one answer may take in a gRPC answer's trailers, as
 * `trailerBytes` reckons them (the first is reported whatever its size). Over gRPC the
 * message goes in the grpc-message trailer, percent-escaped, and again with each
 * violation's own message in grpc-status-details-bin, in base64: 20 violations quoting 64
 * characters of non-Latin text each came to 26 KB of trailers, which gRPC's C core (Python,
 * C++, Ruby clients) refuses past 16 KiB, and at random past 8 KiB, telling its caller
 * `resource_exhausted`, which reads as worth retrying. 6 KiB leaves room for the rest.
 */
const MAX_REPORTED_BYTES = 6144;

/** About what a violation adds to a gRPC answer's trailers: its text escaped in grpc-message, and twice over (with its field path and rule) in the base64 of grpc-status-details-bin. */
function trailerBytes(v: FieldViolation): number {
  const text = `${v.field}: ${v.message}; `;
  return escapedSize(text) + Math.ceil(((2 * Buffer.byteLength(text) + Buffer.byteLength(v.rule) + 24) * 4) / 3);
}

/** The length of `text` percent-escaped as gRPC writes a message: printable ASCII as it is, any other byte (and `%`) as three characters. */
function escapedSize(text: string): number {
  let n = 0;
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    n += c >= 0x20 && c <= 0x7e && c !== 0x25 ? 1 : 3 * Buffer.byteLength(ch);
  }
  return n;
}

/** An invalid_argument error for the given violations, its message naming each field (the first MAX_REPORTED_VIOLATIONS, within MAX_REPORTED_BYTES). */
export function invalidArgument(violations: readonly FieldViolation[]): DomainError {
  const shown: FieldViolation[] = [];
  let bytes = 0;
  for (const v of violations.slice(0, MAX_REPORTED_VIOLATIONS)) {
    bytes += trailerBytes(v);
    if (shown.length > 0 && bytes > MAX_REPORTED_BYTES) break;
    shown.push(v);
  }
  const more = violations.length - shown.length;
  const message = shown.map((v) => `${v.field}: ${v.message}`).join("; ") + (more > 0 ? `; and ${more} more` : "");
  return new DomainError("invalid_argument", message, shown);
}

/** Collects violations while a request is checked, so the problems are reported at once (as many as invalidArgument reports). */
export class Violations {
  readonly list: FieldViolation[] = [];

  add(field: string, rule: string, message: string): void {
    this.list.push({ field, rule, message });
  }

  has(field: string): boolean {
    return this.list.some((v) => v.field === field);
  }

  /** Throws invalid_argument when anything was collected. */
  throwIfAny(): void {
    if (this.list.length > 0) throw invalidArgument(this.list);
  }
}

export function notFound(what: string, id: string): DomainError {
  return new DomainError("not_found", `${what} ${id} not found`);
}
