import { create, toBinary, type DescEnum, type DescFile, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import * as v1 from "../../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** gRPC status codes an ErrorResponse carries. */
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;

/** Both reflection services, answering from the same index. */
export const REFLECTION_SERVICES = [v1.ServerReflection, v1alpha.ServerReflection] as const;

/** What a question is answered with, in either version's shape. */
type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/**
 * The files of `served` (and every file they import), indexed for reflection: each file's
 * serialized descriptor, computed once, and the file that defines each fully qualified name.
 */
class SchemaIndex {
  readonly services: string[];
  private readonly files = new Map<string, { file: DescFile; bytes: Uint8Array }>();
  private readonly symbols = new Map<string, string>();
  private readonly messages = new Set<string>();

  constructor(served: readonly DescService[]) {
    this.services = served.map((s) => s.typeName);
    for (const s of served) this.add(s.file);
  }

  private add(file: DescFile): void {
    const name = file.proto.name;
    if (this.files.has(name)) return;
    this.files.set(name, { file, bytes: toBinary(FileDescriptorProtoSchema, file.proto) });
    file.dependencies.forEach((d) => this.add(d));
    // An enum's values are named in the enum's own scope, beside it (protobuf's rule).
    const enumeration = (e: DescEnum): void => {
      this.symbols.set(e.typeName, name);
      const scope = e.typeName.slice(0, e.typeName.lastIndexOf("."));
      for (const v of e.values) this.symbols.set(`${scope}.${v.name}`, name);
    };
    const message = (m: DescMessage): void => {
      this.symbols.set(m.typeName, name);
      this.messages.add(m.typeName);
      for (const f of m.fields) this.symbols.set(`${m.typeName}.${f.name}`, name);
      // As declared, the synthetic oneofs of proto3 `optional` fields (_oauth) too.
      for (const o of m.proto.oneofDecl) this.symbols.set(`${m.typeName}.${o.name}`, name);
      m.nestedMessages.forEach(message);
      m.nestedEnums.forEach(enumeration);
    };
    file.messages.forEach(message);
    file.enums.forEach(enumeration);
    for (const s of file.services) {
      this.symbols.set(s.typeName, name);
      for (const m of s.methods) this.symbols.set(`${s.typeName}.${m.name}`, name);
    }
  }

  /**
   * The file named, then the files it imports (transitively) that this stream has not been
   * sent yet: a client keeps what it was given, and every descriptor it is given can be
   * built from what it has.
   */
  fileAndImports(name: string, sent: Set<string>): Answer {
    const entry = this.files.get(name)!;
    const out = [entry.bytes];
    sent.add(name);
    const walk = (file: DescFile) => {
      for (const d of file.dependencies) {
        if (sent.has(d.proto.name)) continue;
        sent.add(d.proto.name);
        out.push(this.files.get(d.proto.name)!.bytes);
        walk(d);
      }
    };
    walk(entry.file);
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
  }

  answer(asked: v1.ServerReflectionRequest["messageRequest"], sent: Set<string>): Answer {
    switch (asked.case) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: this.services.map((name) => ({ name })) } };
      case "fileByFilename":
        return this.files.has(asked.value) ? this.fileAndImports(asked.value, sent) : notFound(`no file named ${shown(asked.value)} in this service's schema`);
      case "fileContainingSymbol": {
        // Some clients write the name with a leading dot, as descriptors refer to types.
        const file = this.symbols.get(asked.value.replace(/^\./, ""));
        return file === undefined ? notFound(`no symbol ${shown(asked.value)} in this service's schema`) : this.fileAndImports(file, sent);
      }
      case "fileContainingExtension":
        return notFound(`no extension ${asked.value.extensionNumber} of ${shown(asked.value.containingType)}: this service's schema declares no extensions`);
      case "allExtensionNumbersOfType": {
        const type = asked.value.replace(/^\./, "");
        return this.messages.has(type)
          ? { case: "allExtensionNumbersResponse", value: { baseTypeName: type, extensionNumber: [] } }
          : notFound(`no message type ${shown(asked.value)} in this service's schema`);
      }
      default:
        return { case: "errorResponse", value: { errorCode: INVALID_ARGUMENT, errorMessage: "the request asks nothing: set one of its message_request fields" } };
    }
  }
}

const notFound = (errorMessage: string): Answer => ({ case: "errorResponse", value: { errorCode: NOT_FOUND, errorMessage } });

/** A name from the request, quoted and cut short: it comes from anyone, and goes back to them only. */
const shown = (name: string) => JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);

/**
 * Questions one stream may ask. A tool asks a handful (a call's file and its imports, a
 * listing); the bound keeps what a stream without a token costs small: the bytes it holds of
 * the body budget until it ends (at most this many questions of 1 KiB), and the answers it draws.
 */
export const MAX_QUESTIONS = 32;

/**
 * A stream's questions, each with its answer; the one past MAX_QUESTIONS is refused. Both
 * versions' requests have the same fields, so one index answers them.
 */
async function* answered<Q extends { messageRequest: unknown }>(index: SchemaIndex, requests: AsyncIterable<Q>, signal: AbortSignal): AsyncGenerator<[Q, Answer]> {
  const sent = new Set<string>();
  let asked = 0;
  const questions = requests[Symbol.asyncIterator]();
  try {
    for (;;) {
      // Waiting for the next question ends with the call: at its deadline (grpc-timeout), which a
      // stream otherwise outlived up to REFLECTION_STREAM_MS, or when its client goes.
      const next = await untilAborted(questions.next(), signal);
      if (next.done) return;
      const req = next.value;
      if (++asked > MAX_QUESTIONS) throw new ConnectError(`at most ${MAX_QUESTIONS} questions a stream; open another stream for more`, Code.ResourceExhausted);
      yield [req, index.answer(req.messageRequest as v1.ServerReflectionRequest["messageRequest"], sent)];
    }
  } finally {
    // Let go of the questions, as a for-await leaving early would; not waited for, as a
    // question still pending may settle only when the stream goes.
    questions.return?.().catch(() => {});
  }
}

/** `promise`, or the signal's reason should it abort first. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const abort = () => reject(signal.reason);
    signal.addEventListener("abort", abort, { once: true });
    promise.then(
      (value) => (signal.removeEventListener("abort", abort), resolve(value)),
      (err) => (signal.removeEventListener("abort", abort), reject(err)),
    );
  });
}

/**
 * gRPC server reflection (grpc.reflection.v1, and v1alpha for older tools) over `served`:
 * one stream, up to MAX_QUESTIONS questions, each answered in turn. It takes no token, as
 * health checks do: what it tells is this service's public .proto files, never data.
 */
export function reflectionServices(served: readonly DescService[]): [ServiceImpl<typeof v1.ServerReflection>, ServiceImpl<typeof v1alpha.ServerReflection>] {
  const index = new SchemaIndex(served);
  return [
    {
      async *serverReflectionInfo(requests, context) {
        for await (const [req, answer] of answered(index, requests, context.signal)) {
          yield create(v1.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse: answer });
        }
      },
    },
    {
      async *serverReflectionInfo(requests, context) {
        for await (const [req, answer] of answered(index, requests, context.signal)) {
          yield create(v1alpha.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse: answer });
        }
      },
    },
  ];
}
