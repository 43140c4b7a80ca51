/**
 * Syntax validation of the values a job is made of. Pure: the CLI checks
 * them first (fast, clear errors before any socket is opened) and the
 * daemon checks them again (authoritative). Imports only errors and addr,
 * so the CLI stays light.
 *
 * Each check accepts the text form (argv) and, where the protocol carries
 * numbers, the number form; text forms are strict so that what a playbook
 * substitutes is either exactly meant or refused.
 */
import { ValidationError } from './errors.js';
import { parseHost, type Host } from './addr.js';

export const ENGID_MAX_CHARS = 64;
export const DEFAULT_MAX_DURATION_S = 86400;
/** Linux IFNAMSIZ is 16 including the terminating NUL. */
export const IFNAME_MAX_BYTES = 15;

/**
 * ENGID labels the job (logs, lists, metrics) and is part of its identity.
 * Rules: 1..64 characters (code points); no whitespace of any kind (a
 * playbook substitutes it into a shell line, where a space would split it
 * into two arguments, and a table column must stay one token); no control,
 * format (zero-width, bidi override), surrogate, private-use or unassigned
 * characters (they make logs lie); must not start with "-" (it would read
 * as an option). Any other printable Unicode is fine.
 */
export function validateEngid(value: unknown, field = 'engid'): string {
  if (typeof value !== 'string') throw new ValidationError(field, value, 'must be a string');
  if (value === '') throw new ValidationError(field, value, 'must not be empty');
  const chars = [...value];
  if (chars.length > ENGID_MAX_CHARS) {
    throw new ValidationError(field, value, `is ${chars.length} characters long; at most ${ENGID_MAX_CHARS} allowed`);
  }
  const ws = chars.findIndex((c) => /[\s\p{Z}]/u.test(c));
  if (ws >= 0) throw new ValidationError(field, value, `contains whitespace at position ${ws + 1}; an ENGID is one token`);
  const ctl = chars.findIndex((c) => /\p{C}/u.test(c));
  if (ctl >= 0) {
    const cp = chars[ctl].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    throw new ValidationError(field, value, `contains a non-printable character U+${cp} at position ${ctl + 1}`);
  }
  if (value.startsWith('-')) throw new ValidationError(field, value, 'must not start with "-" (it would read as an option)');
  return value;
}

/**
 * HOST: one unicast IPv4 or IPv6 address, strictly spelled (no leading
 * zeros, no zone id, no prefix). Refuses unspecified, loopback, multicast,
 * broadcast. An IPv4-mapped IPv6 address stands for its IPv4 address.
 * Returns the parsed address; `.canonical` is the job's identity form.
 */
export function validateHost(value: unknown, field = 'host'): Host {
  if (typeof value !== 'string') throw new ValidationError(field, value, 'must be a string holding an IP address');
  return parseHost(value, field);
}

/**
 * DSTPORT: an integer 1..65535. Text form: plain decimal digits, no sign,
 * no leading zero, no exponent or hex ("+1", "080", "1e3", "0x50" are all
 * refused: a playbook that substitutes something odd should fail loudly).
 */
export function validatePort(value: unknown, field = 'port'): number {
  let n: number;
  if (typeof value === 'string') {
    if (value === '') throw new ValidationError(field, value, 'must not be empty');
    if (!/^[0-9]+$/.test(value)) throw new ValidationError(field, value, 'must be a decimal integer 1..65535 (digits only)');
    if (value.length > 1 && value.startsWith('0')) throw new ValidationError(field, value, 'must not have leading zeros');
    if (value.length > 5) throw new ValidationError(field, value, 'is above 65535');
    n = Number(value);
  } else if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new ValidationError(field, value, 'must be an integer 1..65535');
    n = value;
  } else {
    throw new ValidationError(field, value, 'must be an integer 1..65535');
  }
  if (n < 1) throw new ValidationError(field, value, 'must be at least 1 (0 is not a port)');
  if (n > 65535) throw new ValidationError(field, value, 'is above 65535');
  return n;
}

/**
 * SECONDS: a positive integer of seconds, at most `max` (the daemon passes
 * its configured maximum; the CLI passes Infinity and checks syntax only).
 * Text form: plain decimal digits, no leading zero, no sign, no unit.
 */
export function validateDuration(value: unknown, max: number = DEFAULT_MAX_DURATION_S, field = 'duration'): number {
  let n: number;
  if (typeof value === 'string') {
    if (value === '') throw new ValidationError(field, value, 'must not be empty');
    if (!/^[0-9]+$/.test(value)) {
      throw new ValidationError(field, value, 'must be a whole number of seconds (digits only, no unit or sign)');
    }
    if (value.length > 1 && value.startsWith('0')) throw new ValidationError(field, value, 'must not have leading zeros');
    n = Number(value);
  } else if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new ValidationError(field, value, 'must be a whole number of seconds');
    n = value;
  } else {
    throw new ValidationError(field, value, 'must be a whole number of seconds');
  }
  if (n < 1) throw new ValidationError(field, value, 'must be at least 1 second');
  if (!Number.isSafeInteger(n)) throw new ValidationError(field, value, 'is too large');
  if (n > max) throw new ValidationError(field, value, `is above the maximum of ${max} seconds`);
  return n;
}

/**
 * Interface NAME syntax as Linux accepts it (dev_valid_name): 1..15 bytes,
 * not "." or "..", no "/", ":" (an address label, not a device) or
 * whitespace. Also refused: control and invisible formatting characters
 * (zero-width, bidi overrides: they make lists and logs lie) and "%" (a name
 * template the kernel expands, never an existing name). Existence and state are
 * checked by src/net/ifaces.ts in the daemon.
 */
export function validateIfname(value: unknown, field = 'interface'): string {
  if (typeof value !== 'string') throw new ValidationError(field, value, 'must be a string naming an interface');
  if (value === '') throw new ValidationError(field, value, 'must not be empty');
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > IFNAME_MAX_BYTES) {
    throw new ValidationError(field, value, `is ${bytes} bytes long; Linux interface names have at most ${IFNAME_MAX_BYTES}`);
  }
  if (value === '.' || value === '..') throw new ValidationError(field, value, 'is not a valid interface name');
  if (value.includes('/')) throw new ValidationError(field, value, 'must not contain "/"');
  if (value.includes(':')) throw new ValidationError(field, value, 'must not contain ":" (that names an address label, not an interface)');
  if (value.includes('%')) throw new ValidationError(field, value, 'must not contain "%"');
  if (/\s/u.test(value)) throw new ValidationError(field, value, 'must not contain whitespace');
  // Control characters, and the invisible ones too (zero-width, bidi overrides: "\u202eeth0"
  // prints as "0hte"): a name in a list or a log must read as what it is. Linux itself
  // would take them, but no interface worth resetting from is named so.
  const ctl = [...value].findIndex((c) => /\p{C}/u.test(c));
  if (ctl >= 0) {
    const cp = [...value][ctl].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    throw new ValidationError(field, value, `must not contain control characters or invisible formatting characters (U+${cp} at position ${ctl + 1})`);
  }
  return value;
}
