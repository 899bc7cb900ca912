import type { DescEnum, DescField, DescMessage, DescMethod } from "@bufbuild/protobuf";

/**
 * How request JSON is read (Connect JSON; gRPC with a JSON codec is refused earlier).
 *
 * Fields this slice leaves out are ignored: clients built against the full public API may
 * send them. protobuf-es ties one more thing to that option, though: an enum *name* it
 * does not know is dropped as if the field were absent, so `"provider": "RUNNER_PROVIDER_AWS_EC"`
 * would read as no provider at all, where the same mistake as a number is refused. Methods
 * whose request holds an enum therefore read their JSON once more, before protobuf-es, and
 * put a number the enum does not define in place of each unknown name. The handler then
 * refuses it as it refuses an unknown number from a binary client: after authentication,
 * with the field named in a Violations detail.
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
        return replaceUnknownNames(input, json) ? JSON.stringify(json) : text;
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
  // Well-known types have JSON forms of their own (Struct's NullValue is no enum name).
  if (seen.has(desc.typeName) || desc.typeName.startsWith("google.protobuf.")) return false;
  seen.add(desc.typeName);
  return desc.fields.some((f) => {
    if (f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum") || (f.fieldKind === "map" && f.mapKind === "enum")) return true;
    const inner = f.fieldKind === "message" || ((f.fieldKind === "list" || f.fieldKind === "map") && f.message) ? f.message : undefined;
    return inner !== undefined && reachesEnum(inner, seen);
  });
}

/** Puts an undefined number in place of every enum name in `json` that its enum lacks; whether any was. */
function replaceUnknownNames(desc: DescMessage, json: unknown): boolean {
  if (!holdsEnum(desc) || json === null || typeof json !== "object" || Array.isArray(json)) return false;
  const object = json as Record<string, unknown>;
  let replaced = false;
  for (const field of desc.fields) {
    for (const key of new Set([field.jsonName, field.name])) {
      if (object[key] !== undefined && object[key] !== null && replaceInField(field, object, key)) replaced = true;
    }
  }
  return replaced;
}

function replaceInField(field: DescField, holder: Record<string, unknown>, key: string): boolean {
  const value = holder[key];
  switch (field.fieldKind) {
    case "enum":
      return replaceName(field.enum, holder, key);
    case "message":
      return replaceUnknownNames(field.message, value);
    case "list":
    case "map": {
      if (typeof value !== "object" || value === null || Array.isArray(value) !== (field.fieldKind === "list")) return false;
      const items = value as Record<string, unknown>;
      const kind = field.fieldKind === "list" ? field.listKind : field.mapKind;
      let replaced = false;
      for (const k of Object.keys(items)) {
        if (kind === "enum" ? replaceName(field.enum!, items, k) : kind === "message" && replaceUnknownNames(field.message!, items[k])) replaced = true;
      }
      return replaced;
    }
    default:
      return false;
  }
}

function replaceName(e: DescEnum, holder: Record<string, unknown>, key: string): boolean {
  const value = holder[key];
  if (typeof value !== "string" || e.values.some((v) => v.name === value)) return false;
  holder[key] = undefinedNumber(e);
  return true;
}

/** A number the enum does not define: one below its lowest value (and below zero). */
function undefinedNumber(e: DescEnum): number {
  return Math.min(0, ...e.values.map((v) => v.number)) - 1;
}
