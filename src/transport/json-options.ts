import type { DescField, DescMessage, DescMethod } from "@bufbuild/protobuf";
import { truncate } from "../domain/text.js";

/**
 * How request JSON is read (Connect JSON and gRPC with JSON).
 *
 * Fields this slice leaves out are ignored: clients built against the full public API may
 * send them. protobuf-es ties one more thing to that option, though: an enum *name* it
 * does not know is dropped as if the field were absent, so `"provider": "RUNNER_PROVIDER_AWS_EC"`
 * would read as no provider at all, where the same mistake as a number is refused. Methods
 * whose request holds an enum therefore read their JSON once more, before protobuf-es,
 * to refuse unknown names (invalid_argument, naming the field).
 *
 * A JSON body that is not UTF-8 is refused instead of decoded with U+FFFD in place of the
 * bad bytes, which would store (and seal) altered text. connect-node hands these options
 * to its JSON serialization, whose options (unlike the adapter's declared type) include
 * the decoder, which sees each body just before protobuf-es parses it.
 */
export const jsonOptions = { ignoreUnknownFields: true, textDecoder: { decode: decodeUtf8 } };

/** Per-method options for methods whose request holds an enum; undefined for the others. */
export function jsonOptionsFor(method: DescMethod): typeof jsonOptions | undefined {
  if (!holdsEnum(method.input)) return undefined;
  const input = method.input;
  return {
    ignoreUnknownFields: true,
    textDecoder: {
      decode(bytes?: Uint8Array): string {
        const text = decodeUtf8(bytes);
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          return text; // protobuf-es reports the syntax error
        }
        const problem = unknownEnumName(input, json, "");
        if (problem) throw new Error(problem);
        return text;
      },
    },
  };
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function decodeUtf8(bytes?: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new Error("request body: JSON must be UTF-8, and this body holds bytes that are not");
  }
}

const enumBearing = new Map<string, boolean>();

/** Whether a message of this type can carry an enum anywhere inside it. */
function holdsEnum(desc: DescMessage): boolean {
  let known = enumBearing.get(desc.typeName);
  if (known === undefined) enumBearing.set(desc.typeName, (known = reachesEnum(desc, new Set())));
  return known;
}

function reachesEnum(desc: DescMessage, seen: Set<string>): boolean {
  if (seen.has(desc.typeName)) return false;
  seen.add(desc.typeName);
  return desc.fields.some((f) => {
    if (f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum") || (f.fieldKind === "map" && f.mapKind === "enum")) return true;
    const inner = f.fieldKind === "message" || ((f.fieldKind === "list" || f.fieldKind === "map") && f.message) ? f.message : undefined;
    return inner !== undefined && reachesEnum(inner, seen);
  });
}

/** The first enum name in `json` that its field's enum does not define, as an error message. */
function unknownEnumName(desc: DescMessage, json: unknown, at: string): string | null {
  if (!holdsEnum(desc)) return null;
  if (json === null || typeof json !== "object" || Array.isArray(json)) return null;
  const object = json as Record<string, unknown>;
  for (const field of desc.fields) {
    const value = object[field.jsonName] ?? object[field.name];
    if (value === undefined || value === null) continue;
    const path = at + field.name;
    const problem = checkField(field, value, path);
    if (problem) return problem;
  }
  return null;
}

function checkField(field: DescField, value: unknown, path: string): string | null {
  switch (field.fieldKind) {
    case "enum":
      return checkName(field.enum.values, field.enum.typeName, value, path);
    case "message":
      return unknownEnumName(field.message, value, `${path}.`);
    case "list":
      if (!Array.isArray(value)) return null;
      for (const [i, item] of value.entries()) {
        const problem =
          field.listKind === "enum"
            ? checkName(field.enum.values, field.enum.typeName, item, `${path}[${i}]`)
            : field.listKind === "message"
              ? unknownEnumName(field.message, item, `${path}[${i}].`)
              : null;
        if (problem) return problem;
      }
      return null;
    case "map":
      if (typeof value !== "object" || Array.isArray(value)) return null;
      for (const [key, item] of Object.entries(value as object)) {
        const problem =
          field.mapKind === "enum"
            ? checkName(field.enum.values, field.enum.typeName, item, `${path}[${truncate(key)}]`)
            : field.mapKind === "message"
              ? unknownEnumName(field.message, item, `${path}[${truncate(key)}].`)
              : null;
        if (problem) return problem;
      }
      return null;
    default:
      return null;
  }
}

function checkName(values: readonly { name: string }[], typeName: string, value: unknown, path: string): string | null {
  if (typeof value !== "string" || values.some((v) => v.name === value)) return null;
  return `${path}: "${truncate(value)}" is not a value of ${typeName}`;
}
