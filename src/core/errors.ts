/**
 * Errors with stable codes and a `cause`. Codes are part of the control
 * protocol and of the CLI's exit status, so they never change meaning.
 * This module imports nothing: the CLI loads it.
 */

/** sysexits(3) values the CLI exits with. */
export const EXIT = {
  OK: 0,
  USAGE: 64, // EX_USAGE: bad command line
  DATAERR: 65, // EX_DATAERR: a value is wrong (address, port, interface state, protected host)
  UNAVAILABLE: 69, // EX_UNAVAILABLE: daemon not reachable, resource exhausted
  SOFTWARE: 70, // EX_SOFTWARE: internal error
  TEMPFAIL: 75, // EX_TEMPFAIL: daemon busy or timed out, try again
  NOPERM: 77, // EX_NOPERM: permission denied
  CONFIG: 78, // EX_CONFIG: the daemon's configuration is invalid (systemd does not restart on it)
} as const;

export type ErrorCode =
  | 'E_USAGE' // malformed command or request
  | 'E_INVALID' // a value is out of range or malformed
  | 'E_IFACE' // interface missing, down, or lacking an address
  | 'E_PROTECTED' // the host is protected and never reset
  | 'E_LIMIT' // too many jobs / targets
  | 'E_NOT_FOUND' // no such job
  | 'E_PROTOCOL' // control-protocol violation (bad JSON, version, size)
  | 'E_UNAVAILABLE' // daemon not reachable
  | 'E_TIMEOUT' // no answer in time
  | 'E_PERM' // permission denied
  | 'E_NATIVE' // a system or libbpf call failed
  | 'E_STATE' // state directory problem
  | 'E_CONFIG' // the daemon's configuration file is invalid
  | 'E_DATAPLANE' // the daemon cannot load or attach its BPF program: the daemon's problem, not the caller's
  | 'E_INTERNAL'; // a bug

const EXIT_BY_CODE: Record<ErrorCode, number> = {
  E_USAGE: EXIT.USAGE,
  E_INVALID: EXIT.DATAERR,
  E_IFACE: EXIT.DATAERR,
  E_PROTECTED: EXIT.DATAERR,
  E_LIMIT: EXIT.UNAVAILABLE,
  E_NOT_FOUND: EXIT.DATAERR,
  E_PROTOCOL: EXIT.SOFTWARE,
  E_UNAVAILABLE: EXIT.UNAVAILABLE,
  E_TIMEOUT: EXIT.TEMPFAIL,
  E_PERM: EXIT.NOPERM,
  E_NATIVE: EXIT.SOFTWARE,
  E_STATE: EXIT.SOFTWARE,
  E_CONFIG: EXIT.CONFIG,
  // A service the daemon needs is missing (its sandbox refuses bpf(), no libbpf):
  // EX_UNAVAILABLE, never EX_NOPERM, which would tell the caller they lack a permission.
  E_DATAPLANE: EXIT.UNAVAILABLE,
  E_INTERNAL: EXIT.SOFTWARE,
};

export function exitCodeFor(code: string): number {
  return (EXIT_BY_CODE as Record<string, number>)[code] ?? EXIT.SOFTWARE;
}

export interface ErrorDetails {
  [key: string]: unknown;
}

export class TcpresetError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;
  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: ErrorDetails } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details ?? {};
  }
  get exitCode(): number {
    return exitCodeFor(this.code);
  }
  toJSON(): { code: ErrorCode; message: string; details?: ErrorDetails } {
    return Object.keys(this.details).length
      ? { code: this.code, message: this.message, details: this.details }
      : { code: this.code, message: this.message };
  }
}

export class UsageError extends TcpresetError {
  constructor(message: string, options: { cause?: unknown; details?: ErrorDetails } = {}) {
    super('E_USAGE', message, options);
  }
}

/** Longest rendering of a value inside an error message. */
export const MAX_SHOWN_VALUE_CHARS = 200;

/**
 * A value as JSON-like text for an error message: bounded, cheap, and never
 * throws. A request may carry a value nested too deeply for JSON.stringify
 * (a RangeError, after milliseconds of recursion, that turned a client's
 * mistake into an internal error) or megabytes long; the message names it
 * without echoing all of it. Containers are rendered to a few levels only.
 */
export function showValue(value: unknown, maxChars = MAX_SHOWN_VALUE_CHARS): string {
  if (typeof value === 'string') {
    const text = visible(JSON.stringify(value));
    return text.length > maxChars ? `${text.slice(0, maxChars)}… (${text.length} characters)` : text;
  }
  const out = { s: '' };
  render(value, 0, out, maxChars);
  const text = visible(out.s);
  return text.length > maxChars ? `${text.slice(0, maxChars)}…` : text;
}

/**
 * Characters JSON.stringify leaves as they are but a terminal or a log
 * viewer acts on: C1 controls, line/paragraph separators, and format
 * characters (Unicode Cf: bidi overrides such as U+202E, which reorder the
 * rest of the line the analyst reads; zero-width ones). Shown as \uXXXX.
 */
const INVISIBLE = /[\u0080-\u009f\u2028\u2029\p{Cf}]/gu;
function visible(text: string): string {
  return text.replace(INVISIBLE, (c) => {
    const cp = c.codePointAt(0)!;
    return cp > 0xffff ? `\\u{${cp.toString(16)}}` : `\\u${cp.toString(16).padStart(4, '0')}`;
  });
}

const SHOWN_DEPTH = 6;

function render(v: unknown, depth: number, out: { s: string }, max: number): void {
  if (out.s.length > max) return;
  if (Array.isArray(v)) {
    if (depth >= SHOWN_DEPTH) {
      out.s += '[…]';
      return;
    }
    out.s += '[';
    for (let i = 0; i < v.length && out.s.length <= max; i++) {
      if (i > 0) out.s += ',';
      render(v[i], depth + 1, out, max);
    }
    out.s += ']';
  } else if (typeof v === 'object' && v !== null) {
    if (depth >= SHOWN_DEPTH) {
      out.s += '{…}';
      return;
    }
    out.s += '{';
    let first = true;
    for (const k of Object.keys(v)) {
      if (out.s.length > max) break;
      if (!first) out.s += ',';
      first = false;
      out.s += `${JSON.stringify(k.slice(0, max))}:`;
      render((v as Record<string, unknown>)[k], depth + 1, out, max);
    }
    out.s += '}';
  } else if (typeof v === 'string') {
    out.s += JSON.stringify(v.slice(0, max));
  } else if (typeof v === 'number') {
    // JSON would say null for Infinity (a config's 1e400) and NaN: name the value as it is.
    out.s += Number.isFinite(v) ? JSON.stringify(v) : String(v);
  } else if (typeof v === 'boolean' || v === null) {
    out.s += JSON.stringify(v);
  } else {
    out.s += String(v);
  }
}

/** A value that is malformed or out of range; `field` names the argument. */
export class ValidationError extends TcpresetError {
  readonly field: string;
  readonly value: unknown;
  constructor(field: string, value: unknown, reason: string, code: ErrorCode = 'E_INVALID') {
    super(code, `${field} ${showValue(value)}: ${reason}`, { details: { field, value } });
    this.field = field;
    this.value = value;
  }
}

/**
 * A native call failed: `step` says what we were doing (e.g. "attach XDP"),
 * `target` what to (an interface, a map), `errno` the positive errno.
 */
export class NativeError extends TcpresetError {
  readonly step: string;
  readonly errno: number;
  readonly target: string | undefined;
  constructor(step: string, errno: number, errnoText: string, target?: string, options: { cause?: unknown } = {}) {
    const where = target === undefined ? '' : ` on ${target}`;
    super(
      errno === 1 || errno === 13 ? 'E_PERM' : 'E_NATIVE',
      `${step}${where} failed: ${errnoText} (errno ${errno})`,
      { ...options, details: { step, errno, target } },
    );
    this.step = step;
    this.errno = errno;
    this.target = target;
  }
}

/**
 * The daemon's configuration file cannot be used: "config FILE: PROBLEM",
 * where PROBLEM names the key and the bad value when there is one (from a
 * ValidationError cause) or the JSON syntax error with its line and column.
 */
export class ConfigError extends TcpresetError {
  readonly file: string;
  readonly key: string | undefined;
  constructor(file: string, problem: string, options: { cause?: unknown; key?: string; value?: unknown } = {}) {
    const details: ErrorDetails = { file };
    if (options.key !== undefined) details.key = options.key;
    if ('value' in options) details.value = options.value;
    super('E_CONFIG', `config ${file}: ${problem}`, { cause: options.cause, details });
    this.file = file;
    this.key = options.key;
  }
}
