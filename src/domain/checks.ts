import type { Violations } from "./errors.js";
import { isUuid } from "../crypto/ids.js";
import { characters, truncate } from "./text.js";

/** Why `name` cannot name an organization (1 to 63 letters, digits, '.', '_' or '-'), or null. */
export function organizationNameProblem(name: string): string | null {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name) ? null : "must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit";
}

/** The most ids a List filter takes. */
export const MAX_FILTER_IDS = 25;

/** Adds a violation when `value` is not a uuid; answers it in the lower case ids are stored in. */
export function checkUuid(v: Violations, field: string, value: string): string {
  if (value === "") v.add(field, "required", "is required");
  else if (!isUuid(value)) v.add(field, "string.uuid", `must be a uuid, got "${truncate(value)}"`);
  return value.toLowerCase();
}

/** Checks a filter's id list (at most 25 uuids) and answers it in lower case, without repeats. */
export function checkUuidList(v: Violations, field: string, values: readonly string[]): string[] {
  if (values.length > MAX_FILTER_IDS) {
    v.add(field, "repeated.max_items", `must have at most ${MAX_FILTER_IDS} items, got ${values.length}`);
    return [];
  }
  return [...new Set(values.map((value, i) => checkUuid(v, `${field}[${i}]`, value)))];
}

/** What a name or label holding what hasControlOrHidden finds is told. */
export const HIDDEN_TEXT = "must not contain control characters or invisible formatting (direction overrides or marks, zero-width spaces)";

/**
 * Whether `s` has control characters, or characters that change how the text around them
 * is shown, or are not shown at all: every format character (direction overrides, embeddings,
 * isolates and marks, zero-width spaces, word joiners, byte-order marks, soft hyphens, tag
 * characters), line and paragraph separators, the blank Hangul fillers, and lone surrogates.
 * Text a runner publishes for admins to read may hold none: a right-to-left override makes
 * it read as something else, and tag characters spell ASCII no one sees. What writing needs
 * stays allowed, where it needs it: the zero-width joiner and non-joiner after a letter of a
 * script that uses them (Persian, Indic), the joiner before an emoji (👩‍💻), and the flags of
 * England, Scotland and Wales, the only ones spelled in tags.
 */
export function hasControlOrHidden(s: string): boolean {
  return HIDDEN.test(s.includes("\u{1f3f4}") ? s.replace(TAG_FLAGS, "") : s) || STRAY_JOINER.test(s) || STRAY_SELECTOR.test(s);
}

/** What a name that isBlank finds is told. */
export const BLANK_TEXT = "must not be blank (it needs a letter, digit, punctuation mark or symbol)";

/**
 * Whether `s` shows nothing: no letter, digit, punctuation mark or symbol, only spaces,
 * Braille blanks (a symbol that draws no dots) or marks with nothing to mark.
 */
export function isBlank(s: string): boolean {
  return !/[\p{L}\p{N}\p{P}\p{S}]/u.test(s.replace(/\u2800/g, ""));
}

const HIDDEN = /[\p{Cc}\p{Cs}\u2028\u2029\u115f\u1160\u3164\uffa0]|(?![\u200c\u200d])\p{Cf}/u;
// A joiner not after a letter (and its marks) of a script other than Latin, unless it is a zero-width joiner before an emoji.
const STRAY_JOINER = /(?<!(?!\p{Script=Latin})\p{L}\p{M}*)(?:\u200c|\u200d(?!\p{Extended_Pictographic}))/u;
// The subdivision flags in emoji's recommended set: gbeng, gbsct, gbwls in tag letters, then a cancel tag.
// A variation selector picks how the character before it is drawn, and only where a sequence
// of the two is defined; anywhere else it draws nothing (after a Latin letter, a space, a
// mark, another selector), and two names that differ by one look alike. Taken: the emoji and
// text styles after a pictograph (or before a keycap), the ideographic variants after a Han
// ideograph, the standardized variants after the scripts and math symbols that have them,
// and Mongolian's free variation selectors after Mongolian.
const STRAY_SELECTOR = new RegExp(
  [
    "(?<!\\p{Extended_Pictographic})[\\ufe0e\\ufe0f](?!\\u20e3)",
    "(?<![\\p{Ideographic}\\p{Sm}\\p{Script=Myanmar}\\p{Script=Phags_Pa}\\p{Script=Manichaean}\\p{Script=Egyptian_Hieroglyphs}])[\\ufe00-\\ufe0d]",
    "(?<!\\p{Ideographic})[\\u{e0100}-\\u{e01ef}]",
    "(?<!\\p{Script=Mongolian})[\\u180b-\\u180d\\u180f]",
  ].join("|"),
  "u",
);
const TAG_FLAGS = /\u{1f3f4}\u{e0067}\u{e0062}(?:\u{e0065}\u{e006e}\u{e0067}|\u{e0073}\u{e0063}\u{e0074}|\u{e0077}\u{e006c}\u{e0073})\u{e007f}/gu;
/**
 * Whether `s` has whitespace (any Unicode space, not only ASCII), control characters, or
 * invisible format characters (zero-width spaces, direction marks), which no identifier-like
 * field may hold: an OAuth client id with a no-break space in it looks right to an admin and
 * never matches the app.
 */
export function hasSpaceOrControl(s: string): boolean {
  return /[\u0000-\u0020\u007f-\u009f\p{White_Space}\p{Cf}]/u.test(s);
}

/** The longest URL taken (issuer, docs and public URLs). */
const MAX_URL_LENGTH = 2048;

/**
 * Why `value` is not an absolute https URL without credentials or fragment, or null when it
 * is. The text is stored and handed to runners as sent, so it must read as such a URL to any
 * parser, not only to the WHATWG one, which quietly repairs `https:host`, `https:///host` and
 * backslashes for slashes.
 */
export function httpsUrlProblem(value: string): string | null {
  return plainUrlProblem(value, ["https"], "https://login.example.com/");
}

/**
 * Why `value` is not an absolute URL of one of `schemes`, written plainly (as any parser
 * reads it: "scheme://" and the host as written, no backslash, whitespace, credentials or
 * fragment), or null when it is. `example` is shown in the messages. No message repeats
 * the text before the host, where credentials would be.
 */
export function plainUrlProblem(value: string, schemes: readonly ("http" | "https")[], example: string): string | null {
  const named = schemes.join(" or ");
  if (characters(value) > MAX_URL_LENGTH) return `must be at most ${MAX_URL_LENGTH} characters`;
  if (hasSpaceOrControl(value)) return "must not contain whitespace or control characters";
  if (value.includes("\\")) return "must not contain backslashes";
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `must be an absolute ${named} URL, such as ${example}`;
  }
  const scheme = url.protocol.replace(/:$/, "");
  if (!(schemes as readonly string[]).includes(scheme)) return `must be an ${named} URL, got scheme ${scheme}`;
  if (!new RegExp(`^${scheme}://[^/]`, "i").test(value)) return `must begin with ${scheme}:// and a host name, such as ${example}`;
  if (value.includes("#")) return "must not include a fragment";
  // What comes between "scheme://" and the path or query, as written.
  const written = value.slice(scheme.length + 3).split(/[/?]/)[0]!.toLowerCase();
  if (written.includes("@")) return "must not include credentials";
  // The host as written must be the host the parser found: no escapes, numeric shorthands
  // or Unicode it maps to something else (international names go in punycode).
  const defaultPort = scheme === "https" ? 443 : 80;
  if (written !== url.host && written !== `${url.host}:${defaultPort}`) return `must name its host as written plainly (ASCII, punycode for international names), got "${truncate(written)}"`;
  return null;
}
