import { domainToASCII } from "node:url";
import { characters, truncate } from "./text.js";
import { hasSpaceOrControl } from "./checks.js";
/** The longest host (with port and path) an integration may name. */
const MAX_HOST_LENGTH = 255;

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6_BODY = /^[0-9a-f:.]+$/;
// Path characters: RFC 3986 unreserved, percent escapes, and the sub-delimiters that
// are harmless in a path. '@', '?', '#' and whitespace are never allowed.
const PATH_SEGMENT = /^(?:[a-z0-9._~!$&'()*+,;=:-]|%[0-9a-f]{2})+$/i;

/** Either the normalized host or why it was refused. */
export type HostCheck = { ok: true; host: string } | { ok: false; reason: string };

/**
 * Checks and normalizes an integration host: `name[:port][/path]`, where name is a DNS
 * name, an IPv4 address or a bracketed IPv6 address. The result is lower case, has no
 * trailing slash, and writes an IPv6 address in its shortest form (as URLs do), so that one
 * address is one host however it was spelled.
 */
export function normalizeHost(input: string): HostCheck {
  if (input.length === 0) return fail("is required");
  if (characters(input) > MAX_HOST_LENGTH) return fail(`must be at most ${MAX_HOST_LENGTH} characters`);
  // Control characters, whitespace and invisible formatting first, so the reason is exact
  // (a zero-width space would otherwise be read as part of an international name).
  if (hasSpaceOrControl(input)) return fail("must not contain whitespace, control characters or invisible formatting (zero-width spaces, direction marks)");
  const value = input.toLowerCase();
  if (value.includes("://") || /^[a-z][a-z0-9+.-]*:\/\//.test(value)) {
    return fail("must not include a scheme such as https://; give the host name alone");
  }
  if (value.includes("@")) return fail("must not include credentials");
  if (value.includes("?")) return fail("must not include a query");
  if (value.includes("#")) return fail("must not include a fragment");
  if (value.includes("\\")) return fail("must not contain backslashes");

  const slash = value.indexOf("/");
  const authority = slash < 0 ? value : value.slice(0, slash);
  const path = slash < 0 ? "" : value.slice(slash).replace(/\/+$/, "");

  const parsed = splitAuthority(authority);
  if (!parsed.ok) return parsed;
  if (path !== "") {
    const segments = path.slice(1).split("/");
    for (const segment of segments) {
      if (segment === "") return fail("must not contain empty path segments");
      if (isDotSegment(segment)) return fail("must not contain . or .. path segments");
      if (!isPathSegment(segment)) return fail(`has an invalid character in path segment "${truncate(segment)}"`);
    }
  }
  return { ok: true, host: parsed.host + path };
}

function splitAuthority(authority: string): HostCheck {
  if (authority === "") return fail("must start with a host name");
  let name: string;
  let port: string | undefined;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close < 0) return fail("has an unclosed [ in an IPv6 address");
    name = authority.slice(0, close + 1);
    const rest = authority.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return fail("has unexpected characters after the IPv6 address");
      port = rest.slice(1);
    }
    if (!isIPv6(name.slice(1, -1))) return fail("has an invalid IPv6 address");
    // The WHATWG serializer: lower case, zeros compressed. isIPv6 should leave it nothing to
    // refuse; should it refuse anyway, that is still the caller's bad address, not our fault.
    try {
      name = new URL(`http://${name}`).hostname;
    } catch {
      return fail("has an invalid IPv6 address");
    }
  } else {
    const colon = authority.indexOf(":");
    if (colon >= 0) {
      name = authority.slice(0, colon);
      port = authority.slice(colon + 1);
    } else {
      name = authority;
    }
    if (!isHostName(name)) {
      // The fully qualified form of a name: the same host, but stored apart it would be a second integration for it.
      if (name.endsWith(".") && isHostName(name.slice(0, -1))) return fail(`must not end with a dot: give "${name.slice(0, -1)}"`);
      // An international name is stored as DNS carries it, in its ASCII form, which is said.
      const ascii = /[^\x00-\x7f]/.test(name) ? domainToASCII(name) : "";
      if (ascii !== "" && isHostName(ascii)) return fail(`"${truncate(name)}" is an international name: write it in its ASCII form (punycode), "${ascii}"`);
      return fail(`"${truncate(name)}" is not a valid host name or IP address`);
    }
  }
  if (port !== undefined) {
    if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
      return fail("port must be a number from 1 to 65535");
    }
    port = String(Number(port));
  }
  return { ok: true, host: port === undefined ? name : `${name}:${port}` };
}

function isHostName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  if (IPV4.test(name)) return true;
  const labels = name.split(".");
  // A name whose last label is a number (decimal or 0x hex) is an IPv4 address to URL
  // parsers and inet_aton (`0x7f.1` is 127.0.0.1), or a typo of one: only the dotted
  // quad above is taken.
  if (/^(?:\d+|0x[0-9a-f]*)$/.test(labels[labels.length - 1]!)) return false;
  return labels.every((l) => LABEL.test(l));
}

function isIPv6(body: string): boolean {
  if (!IPV6_BODY.test(body) || body.length < 2) return false;
  const doubleColons = body.split("::").length - 1;
  if (doubleColons > 1 || body.includes(":::")) return false;
  // A lone colon may not open or close the address; "::" may.
  if ((body.startsWith(":") && !body.startsWith("::")) || (body.endsWith(":") && !body.endsWith("::"))) {
    return false;
  }
  let count = 0;
  const groups = body.split(":");
  for (const [i, g] of groups.entries()) {
    if (g === "") continue;
    if (g.includes(".")) {
      // An embedded IPv4 address can only end the address (`::ffff:1.2.3.4`).
      if (i !== groups.length - 1 || !IPV4.test(g)) return false;
      count += 2;
    } else {
      if (!/^[0-9a-f]{1,4}$/.test(g)) return false;
      count += 1;
    }
  }
  return doubleColons === 1 ? count < 8 : count === 8;
}

/** Whether a path segment holds only the characters allowed above, escapes well formed. */
export function isPathSegment(segment: string): boolean {
  return PATH_SEGMENT.test(segment);
}

/** `.` or `..`, also percent-encoded (`%2e%2E`), as URL parsers read them. */
export function isDotSegment(segment: string): boolean {
  const plain = segment.replace(/%2e/gi, ".");
  return plain === "." || plain === "..";
}

function fail(reason: string): HostCheck {
  return { ok: false, reason };
}
