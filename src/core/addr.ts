/**
 * Strict IP address and network parsing, canonical formatting, and the
 * checks that decide whether an address may be a reset target.
 * Pure and light: the CLI imports it, so it imports nothing but errors (and
 * the types of model.ts, erased at run time).
 *
 * Strict on purpose: a target is a promise to kill traffic, so anything a
 * reader could take two ways ("010.1.2.3": octal or decimal?, "1.2.3":
 * inet_aton's 1.2.0.3) or that names more than one host (a prefix, a zone)
 * is refused with a reason instead of being guessed at.
 */
import { ValidationError, showValue } from './errors.js';
import type { Family } from './model.js';

export interface ParsedIp {
  family: Family;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
  /** Dotted quad for IPv4; RFC 5952 text for IPv6. */
  canonical: string;
}

declare const PARSED_HOST: unique symbol;

/**
 * A reset target's host as parseHost made it: one unicast address,
 * IPv4-mapped IPv6 turned into IPv4, canonical text. The brand says it was
 * parsed and checked once at a boundary (the protocol's parseRequest, the
 * CLI, a saved job's restore): the layers inside (job manager, Enforcer,
 * protect list) use its fields as they are and parse nothing again.
 */
export type Host = ParsedIp & { readonly [PARSED_HOST]: true };

export interface ParsedCidr {
  family: Family;
  /** The network address (host bits zero), 4 or 16 bytes. */
  bytes: Uint8Array;
  prefixLen: number;
  /** "a.b.c.d/n" or RFC 5952 "x::/n". */
  canonical: string;
}

const DEC_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parse an IPv4 or IPv6 address. `field` names the argument in errors. */
export function parseIp(text: string, field = 'host'): ParsedIp {
  return parseIpWith(text, (reason) => {
    throw new ValidationError(field, text, reason);
  });
}

function parseIpWith(text: string, bad: (reason: string) => never): ParsedIp {
  if (typeof text !== 'string') bad('not a string');
  if (text === '') bad('empty address');
  if (/\s/.test(text)) bad('contains whitespace');
  if (text.includes('/')) bad('a network prefix is not a host address; give one address');
  if (text.includes('%')) bad(`zone ids (${showValue(text.slice(text.indexOf('%')), 40)}) are not accepted; give the address alone`);
  if (text.includes('[') || text.includes(']')) bad('remove the brackets around the IPv6 address');
  if (text.includes(':')) {
    const bytes = parseV6(text, bad);
    return { family: 6, bytes, canonical: formatV6(bytes) };
  }
  const bytes = parseV4(text, bad);
  return { family: 4, bytes, canonical: formatV4(bytes) };
}

function parseV4(text: string, bad: (reason: string) => never): Uint8Array {
  const parts = text.split('.');
  if (parts.length !== 4) bad(`an IPv4 address has 4 dot-separated decimal parts, this has ${parts.length}`);
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (p === '') bad(`part ${i + 1} is empty`);
    if (!/^[0-9]+$/.test(p)) bad(`part ${i + 1} "${p}" is not a decimal number`);
    if (!DEC_OCTET.test(p)) {
      if (p.length > 1 && p[0] === '0') bad(`part ${i + 1} "${p}" has a leading zero (octal or decimal? write it without)`);
      bad(`part ${i + 1} "${p}" is above 255`);
    }
    const v = Number(p);
    if (v > 255) bad(`part ${i + 1} "${p}" is above 255`);
    out[i] = v;
  }
  return out;
}

function parseV6(text: string, bad: (reason: string) => never): Uint8Array {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) bad('an IPv6 address holds only hex digits, ":" and an optional trailing dotted IPv4 part');
  if (text.includes(':::')) bad('":::" is not valid; "::" stands for the zero groups');
  const halves = text.split('::');
  if (halves.length > 2) bad('"::" may appear only once');
  const compressed = halves.length === 2;
  const head = compressed ? splitGroups(halves[0], bad) : splitGroups(text, bad);
  const tail = compressed ? splitGroups(halves[1], bad) : [];
  const words: number[] = [];
  const toWords = (groups: string[], isLastList: boolean, out: number[]): void => {
    groups.forEach((g, i) => {
      if (g.includes('.')) {
        if (!(isLastList && i === groups.length - 1)) bad(`the dotted IPv4 part "${g}" may only end the address`);
        const v4 = parseV4(g, (r) => bad(`embedded IPv4 "${g}": ${r}`));
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!HEX_GROUP.test(g)) bad(`group "${g}" is not 1 to 4 hex digits`);
        out.push(parseInt(g, 16));
      }
    });
  };
  const headWords: number[] = [];
  const tailWords: number[] = [];
  if (compressed) {
    toWords(head, false, headWords); // "::" follows the head, so a dotted part there is not last
    toWords(tail, true, tailWords);
    // "::" stands for at least one zero group (RFC 4291 2.2).
    if (headWords.length + tailWords.length > 7) bad(`${headWords.length + tailWords.length} groups leave nothing for "::" to stand for`);
    words.push(...headWords, ...new Array<number>(8 - headWords.length - tailWords.length).fill(0), ...tailWords);
  } else {
    toWords(head, true, headWords);
    if (headWords.length !== 8) bad(`an IPv6 address has 8 groups (or "::"), this has ${headWords.length}`);
    words.push(...headWords);
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = words[i] >>> 8;
    out[2 * i + 1] = words[i] & 0xff;
  }
  return out;
}

/** Split a colon-separated run of groups; '' (one side of "::") is no groups. */
function splitGroups(s: string, bad: (reason: string) => never): string[] {
  if (s === '') return [];
  const groups = s.split(':');
  if (groups.some((g) => g === '')) bad('an empty group (a lone leading or trailing ":"?)');
  return groups;
}

function formatV4(b: Uint8Array): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/**
 * RFC 5952: lowercase, no leading zeros, the longest run of two or more
 * zero groups becomes "::" (the leftmost on a tie), and IPv4-mapped
 * addresses end in a dotted quad (section 5).
 */
function formatV6(b: Uint8Array): string {
  if (isV4Mapped(b)) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push((b[2 * i] << 8) | b[2 * i + 1]);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]): string => ws.map((x) => x.toString(16)).join(':');
  if (bestLen < 2) return hex(w);
  return `${hex(w.slice(0, bestStart))}::${hex(w.slice(bestStart + bestLen))}`;
}

/** Canonical text of 4 (dotted quad) or 16 (RFC 5952) address bytes. */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return formatV4(bytes);
  if (bytes.length === 16) return formatV6(bytes);
  throw new RangeError(`an address has 4 or 16 bytes, not ${bytes.length}`);
}

function fromBytes(bytes: Uint8Array): ParsedIp {
  return { family: bytes.length === 4 ? 4 : 6, bytes, canonical: formatIp(bytes) };
}

function isV4Mapped(b: Uint8Array): boolean {
  if (b.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * The IPv4 address an IPv4-mapped IPv6 address (::ffff:a.b.c.d) stands
 * for; any other address unchanged. ::ffff:0:0/96 is not routed on the
 * wire (RFC 4291 2.5.5.2): it is how IPv6 APIs spell IPv4 peers, so the
 * traffic such a target means is IPv4 traffic. Targets and protected
 * addresses go through this so neither can be dodged by spelling.
 */
export function unmapV4(ip: ParsedIp): ParsedIp {
  if (ip.family !== 6 || !isV4Mapped(ip.bytes)) return ip;
  const bytes = ip.bytes.slice(12, 16);
  return { family: 4, bytes, canonical: formatV4(bytes) };
}

/**
 * Why `ip` cannot be a reset target, or null if it is a unicast host.
 * Refused: unspecified, "this network" 0.0.0.0/8, loopback (never crosses
 * a mirror port), multicast and the limited broadcast (not one host; a RST
 * is meaningless there). IPv4-mapped addresses are judged as their IPv4
 * address. Link-local and private ranges are ordinary hosts on a mirror.
 */
export function classify(ip: ParsedIp | Uint8Array): string | null {
  const u = unmapV4(ip instanceof Uint8Array ? fromBytes(ip) : ip);
  const b = u.bytes;
  if (u.family === 4) {
    if (b[0] === 0) return b[1] === 0 && b[2] === 0 && b[3] === 0 ? 'the unspecified address is not a host' : '0.0.0.0/8 ("this network") is not a destination';
    if (b[0] === 127) return 'loopback traffic never reaches a mirror port';
    if (b[0] >= 224 && b[0] <= 239) return 'a multicast address is not one host';
    if (b[0] === 255 && b[1] === 255 && b[2] === 255 && b[3] === 255) return 'the limited broadcast address is not one host';
    return null;
  }
  if (b[0] === 0xff) return 'a multicast address is not one host';
  let zeros = 0;
  while (zeros < 15 && b[zeros] === 0) zeros++;
  if (zeros === 15 && b[15] === 0) return 'the unspecified address is not a host';
  if (zeros === 15 && b[15] === 1) return 'loopback traffic never reaches a mirror port';
  return null;
}

/** Accepts parsed addresses or raw 4/16 bytes (as in events and map keys). */
export function isUnicastHost(ip: ParsedIp | Uint8Array): boolean {
  return classify(ip) === null;
}

/**
 * A reset target as the daemon and CLI take it: strictly parsed, mapped
 * IPv4 turned into IPv4, refused unless a unicast host.
 */
export function parseHost(text: string, field = 'host'): Host {
  const ip = unmapV4(parseIp(text, field));
  const why = classify(ip);
  if (why !== null) throw new ValidationError(field, text, why);
  return ip as Host;
}

/**
 * A Host again from the parts a table kept of one (the job manager keeps
 * its canonical text and bytes in columns, not the object): no parse and
 * no check, so only for parts that came out of parseHost. Throws
 * RangeError when the bytes do not fit the family (a caller's bug).
 */
export function keptHost(family: Family, bytes: Uint8Array, canonical: string): Host {
  if (bytes.length !== (family === 4 ? 4 : 16)) throw new RangeError(`host ${canonical}: ${bytes.length} address bytes for IPv${family}`);
  return { family, bytes, canonical } as Host;
}

/**
 * Parse "addr/len" (a bare address means a single host, /32 or /128).
 * Host bits must be zero: "10.0.0.1/8" is more likely a typo than a wish,
 * and a protected network is no place for guesses. A network written in
 * IPv4-mapped form within ::ffff:0:0/96 is returned as the IPv4 network
 * it spells (see unmapV4); a broader IPv6 network contains only IPv6
 * addresses.
 */
export function parseCidr(text: string, field = 'network'): ParsedCidr {
  if (typeof text !== 'string') throw new ValidationError(field, text, 'not a string');
  const slash = text.indexOf('/');
  const ip = parseIpWith(slash < 0 ? text : text.slice(0, slash), (reason) => {
    throw new ValidationError(field, text, reason);
  });
  const max = ip.family === 4 ? 32 : 128;
  let prefixLen = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(p)) throw new ValidationError(field, text, `prefix length "${p}" is not a decimal number 0..${max}`);
    prefixLen = Number(p);
    if (prefixLen > max) throw new ValidationError(field, text, `prefix length ${prefixLen} is above ${max}`);
  }
  const net = maskBytes(ip.bytes, prefixLen);
  if (!equalBytes(net, ip.bytes)) {
    throw new ValidationError(field, text, `host bits are set; the network is ${formatIp(net)}/${prefixLen}`);
  }
  if (ip.family === 6 && prefixLen >= 96 && isV4Mapped(net)) {
    const v4 = net.slice(12, 16);
    return { family: 4, bytes: v4, prefixLen: prefixLen - 96, canonical: `${formatV4(v4)}/${prefixLen - 96}` };
  }
  return { family: ip.family, bytes: net, prefixLen, canonical: `${formatIp(net)}/${prefixLen}` };
}

/** Whether `cidr` contains `ip` (an IPv4-mapped `ip` is judged as its IPv4 address). */
export function cidrContains(cidr: ParsedCidr, ip: ParsedIp): boolean {
  const u = unmapV4(ip);
  if (u.family !== cidr.family) return false;
  const full = cidr.prefixLen >>> 3;
  for (let i = 0; i < full; i++) if (u.bytes[i] !== cidr.bytes[i]) return false;
  const rest = cidr.prefixLen & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (u.bytes[full] & mask) === cidr.bytes[full];
}

function maskBytes(b: Uint8Array, prefixLen: number): Uint8Array {
  const out = b.slice();
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, prefixLen - 8 * i));
    out[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return out;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
