import { ScalarType, type DescEnum, type DescField, type DescMessage, type DescMethod } from "@bufbuild/protobuf";
import { truncate } from "../domain/text.js";

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
 * An integer may come as a string; protobuf-es reads it with `Number()`, which also takes
 * "0x10", "0b11", "+5" or "5.". The protobuf JSON mapping allows only a JSON number in the
 * string, so methods whose request holds an integer refuse any other string there, as
 * protobuf-es refuses "ten": a decode error naming the field.
 *
 * A message field given something other than an object (`"pagination": 5`) makes
 * protobuf-es name the message type but not the field; those methods refuse it here
 * instead, naming the field as protobuf-es does for a wrong scalar.
 *
 * A secret given as something other than a string (`"oauthPlaintextClientSecret": 1234`)
 * is refused without the value: protobuf-es would repeat a number or boolean in its message.
 * Bodies of methods that take a secret are parsed here in any case, so that one that is not
 * JSON at all is refused without the excerpt V8 puts in its syntax errors.
 *
 * A JSON body that is not UTF-8 is refused instead of decoded with U+FFFD in place of the
 * bad bytes, which would store (and seal) altered text. connect-node hands these options
 * to its JSON serialization, whose options (unlike the adapter's declared type) include
 * the decoder, which sees each body just before protobuf-es parses it.
 */
export const jsonOptions = { ignoreUnknownFields: true, textDecoder: { decode: decodeUtf8 } };

/** Per-method options for methods whose request holds an enum, a secret, an integer or a message; undefined for the others. */
export function jsonOptionsFor(method: DescMethod): typeof jsonOptions | undefined {
  const input = method.input;
  const enums = holdsEnum(input);
  const secrets = holdsSecret(input);
  const hint = oddValueHint(input);
  if (!enums && !secrets && !hint) return undefined;
  return {
    ignoreUnknownFields: true,
    textDecoder: {
      decode(bytes?: Uint8Array): string {
        const text = decodeUtf8(bytes);
        // Most bodies hold neither an enum nor a value that might be odd: spare them the parse.
        const odd = hint?.test(text) === true;
        if (!enums && !secrets && !odd) return text;
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch (err) {
          // V8's message quotes the text around the fault, which may be a secret sent unquoted.
          if (!secrets) return text; // protobuf-es reports the syntax error
          const at = /at position \d+(?: \(line \d+ column \d+\))?/.exec(String((err as Error).message))?.[0];
          throw new Error(`cannot decode message ${input.typeName} from JSON: the body is not valid JSON${at ? ` (${at})` : ""}; the text there is not repeated, as it may be a secret`);
        }
        if (odd || secrets) refuseOddValues(input, json);
        return enums && replaceUnknownNames(input, json) ? JSON.stringify(json) : text;
      },
    },
  };
}

/**
 * A test a body must pass for it to be worth parsing for `refuseOddValues`: a string that
 * opens like a number (only such a string can be an odd integer; where no list holds
 * integers, only a member's own value), a message field's name followed by anything but
 * an object or null, or a list or map of messages at all. A backslash in a string may be
 * an escape that spells a number's first character. (A key spelled with escapes is missed:
 * protobuf-es then refuses its value itself, without naming the field.) Undefined when the
 * request holds none of these. Bodies of methods with a secret are walked in any case.
 */
function oddValueHint(desc: DescMessage): RegExp | undefined {
  const parts: string[] = [];
  if (holdsInteger(desc)) parts.push(reaches(desc, (f) => f.fieldKind === "list" && isIntegerField(f), new Set()) ? '[:,[]\\s*"\\s*[-+.\\d\\\\]' : ':\\s*"\\s*[-+.\\d\\\\]');
  const messages = new Set<string>();
  const collections = new Set<string>();
  reaches(desc, (f) => {
    if (isMessageField(f)) (f.fieldKind === "message" ? messages : collections).add(f.jsonName).add(f.name);
    return false;
  }, new Set());
  const followedBy = (keys: Set<string>, value: string) => keys.size > 0 && parts.push(`"(?:${[...keys].join("|")})"\\s*:${value}`);
  followedBy(messages, "\\s*[^\\s{n]");
  followedBy(collections, "");
  return parts.length > 0 ? new RegExp(parts.join("|")) : undefined;
}

/** A JSON number, which is all the JSON mapping allows inside a string for an integer field. */
const JSON_NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?$/;
const INTEGER_TYPES = new Set([
  ScalarType.INT32, ScalarType.SINT32, ScalarType.SFIXED32, ScalarType.UINT32, ScalarType.FIXED32,
  ScalarType.INT64, ScalarType.SINT64, ScalarType.SFIXED64, ScalarType.UINT64, ScalarType.FIXED64,
]);

const isIntegerField = (f: DescField) => (f.fieldKind === "scalar" || (f.fieldKind === "list" && f.listKind === "scalar")) && INTEGER_TYPES.has(f.scalar!);

/** Whether a message of this type can carry an integer field (maps aside) anywhere inside it. */
const holdsInteger = remembered(isIntegerField);

/** A string field whose value must never be repeated back, not even when it is of the wrong type. */
const isSecretField = (f: DescField) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING && f.name.includes("secret");

/** Whether a message of this type can carry a secret anywhere inside it. */
const holdsSecret = remembered(isSecretField);

/** A field holding messages that have no JSON form of their own (well-known types do). */
const isMessageField = (f: DescField) => f.message !== undefined && (f.fieldKind === "message" || f.fieldKind === "list" || f.fieldKind === "map") && !f.message.typeName.startsWith("google.protobuf.");

/**
 * Throws, as protobuf-es does for a value it cannot read, on an integer given as a string
 * that is not a JSON number, on a message given as anything but an object, and (without
 * repeating it) on a secret given as anything but a string.
 */
function refuseOddValues(desc: DescMessage, json: unknown): void {
  if (json === null || typeof json !== "object" || Array.isArray(json)) return;
  const object = json as Record<string, unknown>;
  for (const { field, keys, kind } of checksOf(desc)) {
    for (const key of keys) {
      const value = object[key];
      if (value === undefined || value === null) continue;
      const odd = (reason: string) => new Error(`cannot decode field ${desc.typeName}.${field.name} from JSON: ${reason}`);
      if (kind === "secret") {
        if (typeof value !== "string") throw odd(`expected string, got ${Array.isArray(value) ? "an array" : typeof value === "object" ? "an object" : `a ${typeof value}`} (the value is not shown)`);
      } else if (kind === "integer") {
        for (const item of Array.isArray(value) ? value : [value]) {
          // Cut to its first characters: the message echoes it, and a 1 MB value made a 1 MB answer.
          if (typeof item === "string" && !JSON_NUMBER.test(item)) throw odd(JSON.stringify(truncate(item)));
        }
      } else if (field.fieldKind === "message") {
        if (!isObject(value)) throw odd(`expected object, got ${describe(value)}`);
        refuseOddValues(field.message, value);
      } else {
        // protobuf-es itself names the field when the list or map is not one.
        if (typeof value !== "object" || Array.isArray(value) !== (field.fieldKind === "list")) continue;
        const items = value as Record<string, unknown>;
        for (const [i, k] of Object.keys(items).entries()) {
          const item = items[k];
          if (item === null) continue; // protobuf-es: "list item must not be null"
          if (!isObject(item)) throw odd(`${field.fieldKind === "list" ? `list item #${i + 1}` : `map value for key "${k}"`}: expected object, got ${describe(item)}`);
          refuseOddValues(field.message!, item);
        }
      }
    }
  }
}

/** The fields of a message type that refuseOddValues looks at, with the keys JSON may give each (worked out once per type). */
function checksOf(desc: DescMessage): { field: DescField; keys: string[]; kind: "secret" | "integer" | "messages" }[] {
  let checks = checkLists.get(desc.typeName);
  if (checks === undefined) {
    checks = desc.fields.flatMap((field) => {
      const kind = isSecretField(field) ? "secret" : isIntegerField(field) ? "integer" : isMessageField(field) ? "messages" : undefined;
      return kind ? [{ field, keys: field.jsonName === field.name ? [field.name] : [field.jsonName, field.name], kind }] : [];
    });
    checkLists.set(desc.typeName, checks);
  }
  return checks;
}
const checkLists = new Map<string, ReturnType<typeof checksOf>>();

const isObject = (value: unknown) => typeof value === "object" && value !== null && !Array.isArray(value);

/** A value as protobuf-es shows one in its messages. */
function describe(value: unknown): string {
  if (Array.isArray(value)) return `Array(${value.length})`;
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function decodeUtf8(bytes?: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new Error("request body: JSON must be UTF-8, and this body holds bytes that are not");
  }
}

const isEnumField = (f: DescField) => f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum") || (f.fieldKind === "map" && f.mapKind === "enum");

/** Whether a message of this type can carry an enum anywhere inside it. */
const holdsEnum = remembered(isEnumField);

/** `reaches` for one kind of field, remembered per message type (the decoders ask per body). */
function remembered(is: (f: DescField) => boolean): (desc: DescMessage) => boolean {
  const known = new Map<string, boolean>();
  return (desc) => {
    let answer = known.get(desc.typeName);
    if (answer === undefined) known.set(desc.typeName, (answer = reaches(desc, is, new Set())));
    return answer;
  };
}

/** Whether a field that `is` can be found in this message or any it holds. */
function reaches(desc: DescMessage, is: (f: DescField) => boolean, seen: Set<string>): boolean {
  // Well-known types have JSON forms of their own (Struct's NullValue is no enum name).
  if (seen.has(desc.typeName) || desc.typeName.startsWith("google.protobuf.")) return false;
  seen.add(desc.typeName);
  return desc.fields.some((f) => {
    if (is(f)) return true;
    const inner = f.fieldKind === "message" || ((f.fieldKind === "list" || f.fieldKind === "map") && f.message) ? f.message : undefined;
    return inner !== undefined && reaches(inner, is, seen);
  });
}

/**
 * Puts an undefined number in place of every enum name in `json` that its enum lacks; whether
 * any was. An enum value that is neither a name nor a whole number (`true`, `1.5`, `{}`) is
 * refused here, naming the field: protobuf-es would name only the enum type.
 */
function replaceUnknownNames(desc: DescMessage, json: unknown): boolean {
  if (!holdsEnum(desc) || json === null || typeof json !== "object" || Array.isArray(json)) return false;
  const object = json as Record<string, unknown>;
  let replaced = false;
  for (const field of desc.fields) {
    for (const key of new Set([field.jsonName, field.name])) {
      if (object[key] !== undefined && object[key] !== null && replaceInField(desc, field, object, key)) replaced = true;
    }
  }
  return replaced;
}

function replaceInField(desc: DescMessage, field: DescField, holder: Record<string, unknown>, key: string): boolean {
  const value = holder[key];
  const where = (item: string) => `cannot decode field ${desc.typeName}.${field.name} from JSON: ${item}`;
  switch (field.fieldKind) {
    case "enum":
      return replaceName(field.enum, holder, key, () => where(""));
    case "message":
      return replaceUnknownNames(field.message, value);
    case "list":
    case "map": {
      if (typeof value !== "object" || value === null || Array.isArray(value) !== (field.fieldKind === "list")) return false;
      const items = value as Record<string, unknown>;
      const kind = field.fieldKind === "list" ? field.listKind : field.mapKind;
      let replaced = false;
      for (const [i, k] of Object.keys(items).entries()) {
        const at = () => where(field.fieldKind === "list" ? `list item #${i + 1}: ` : `map value for key "${truncate(k)}": `);
        if (kind === "enum" ? items[k] !== null && replaceName(field.enum!, items, k, at) : kind === "message" && replaceUnknownNames(field.message!, items[k])) replaced = true;
      }
      return replaced;
    }
    default:
      return false;
  }
}

function replaceName(e: DescEnum, holder: Record<string, unknown>, key: string, refusal: () => string): boolean {
  const value = holder[key];
  if (typeof value !== "string") {
    if (typeof value === "number" && Number.isInteger(value)) return false;
    throw new Error(`${refusal()}expected an enum name or number, got ${Array.isArray(value) ? describe(value) : typeof value === "object" ? "an object" : String(value)}`);
  }
  if (e.values.some((v) => v.name === value)) return false;
  holder[key] = undefinedNumber(e);
  return true;
}

/** A number the enum does not define: one below its lowest value (and below zero). */
function undefinedNumber(e: DescEnum): number {
  return Math.min(0, ...e.values.map((v) => v.number)) - 1;
}
