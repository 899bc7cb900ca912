import { create, type DescField, type DescMessage, type DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  FieldPathElementSchema,
  FieldPathSchema,
  ViolationSchema,
  ViolationsSchema,
  type FieldPathElement,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { DomainError, type ErrorReason, type FieldViolation } from "../domain/errors.js";
import { wellFormed } from "../domain/text.js";
import type { Logger } from "../log.js";
import { classifyDriverError, isOutOfSpace, isSyncFailure, OutcomeUnknown } from "../store/errors.js";

const CODES: Record<ErrorReason, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  permission_denied: Code.PermissionDenied,
  unauthenticated: Code.Unauthenticated,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
};

// Only these can succeed when the same request is sent again; every other error
// tells the official SDK (which retries 409 and 5xx by default) not to.
const RETRYABLE = new Set<Code>([Code.Unavailable, Code.ResourceExhausted, Code.Internal, Code.DeadlineExceeded]);

/**
 * Where the service's own errors become Connect errors (what connect-node refuses before
 * any of this runs is corrected in framework-errors.ts). Domain errors keep their message and
 * gain field violations as a `buf.validate.Violations` detail; anything unexpected
 * is logged here and answered as an opaque `internal` with the request id, because
 * driver messages can carry SQL and parameters.
 */
export function toConnectError(err: unknown, method: DescMethod, requestId: string, log: Logger): ConnectError {
  let out: ConnectError;
  if (err instanceof DomainError) {
    out = new ConnectError(wellFormed(err.message), CODES[err.reason]);
    if (err.violations.length > 0) {
      out.details.push({
        desc: ViolationsSchema,
        value: create(ViolationsSchema, {
          violations: err.violations.map((v) => toViolation(v, method.input)),
        }),
      });
    }
  } else if (err instanceof ConnectError) {
    // connect-node's own messages may quote request text; keep them sendable over gRPC.
    const message = wellFormed(err.rawMessage);
    out = err;
    if (message !== err.rawMessage) {
      out = new ConnectError(message, err.code, err.metadata, undefined, err.cause);
      out.details.push(...err.details);
    }
  } else if (err instanceof OutcomeUnknown) {
    const code = (err.cause as { code?: unknown } | undefined)?.code;
    log.error("write of unknown outcome", { request_id: requestId, procedure: `/${method.parent.typeName}/${method.name}`, driver_code: code?.toString() });
    const why = isSyncFailure(err.cause)
      ? "a sync to disk failed after it was committed"
      : code === "SQLITE_MISUSE"
        ? "the database was closed before it was on disk"
        : typeof code === "string" && isOutOfSpace(code)
          ? "the disk was full as it was committed"
          : "the storage failed as it was committed";
    // `unknown`, which clients do not retry by themselves (x-should-retry: false below).
    out = new ConnectError(
      `this write's outcome is unknown: ${why}, and it may or may not be stored (it may show only after a restart); check before sending it again (a create sent again with the same Idempotency-Key is safe); request id ${requestId}`,
      Code.Unknown,
    );
  } else {
    const trouble = classifyDriverError(err);
    log.error(trouble ? "database trouble" : "unexpected error", {
      request_id: requestId,
      procedure: `/${method.parent.typeName}/${method.name}`,
      error: err instanceof Error ? err.name : typeof err,
      driver_code: (err as { code?: unknown })?.code?.toString(),
      detail: err instanceof Error ? err.message : undefined,
    });
    // The client hears what happened in our words: driver messages can carry SQL.
    if (trouble) {
      out = new ConnectError(`${trouble.message}; request id ${requestId}`, CODES[trouble.reason]);
    } else {
      out = new ConnectError(`internal error; request id ${requestId}`, Code.Internal);
    }
  }
  if (!RETRYABLE.has(out.code)) out.metadata.set("x-should-retry", "false");
  // The id is not added here: every answer carries it in its headers already (server.ts),
  // and gRPC puts an error's metadata in the trailers, which clients merge with the headers
  // into "id, id".
  return out;
}

function toViolation(v: FieldViolation, input: DescMessage) {
  return create(ViolationSchema, {
    field: create(FieldPathSchema, { elements: fieldPath(v.field, input) }),
    ruleId: v.rule,
    message: v.message,
  });
}

/** Resolves `filter.runner_ids[2]` against the request descriptor into path elements. */
function fieldPath(path: string, input: DescMessage): FieldPathElement[] {
  const elements: FieldPathElement[] = [];
  let message: DescMessage | undefined = input;
  for (const part of path.split(".")) {
    const m = /^([a-z_0-9]+)(?:\[(\d+)\])?$/.exec(part);
    const name = m?.[1] ?? part;
    const field: DescField | undefined = message?.fields.find((f) => f.name === name);
    const element = create(FieldPathElementSchema, {
      fieldName: name,
      fieldNumber: field?.number ?? 0,
    });
    if (m?.[2] !== undefined) element.subscript = { case: "index", value: BigInt(m[2]) };
    elements.push(element);
    message = field?.message;
  }
  return elements;
}
