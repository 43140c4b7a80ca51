/**
 * The command line of `tcpreset` as data, and what a parsed command line
 * means. One source for the fast parser (fast.ts), the commander parser
 * (main.ts), the help text, the man page tcpreset(8) and the bash
 * completion (doc.ts), so none of them can drift from the others.
 *
 * Light: imports only errors, validate and the protocol's constants (the
 * fast path loads it before it connects).
 */
import { EXIT, UsageError, ValidationError, showValue } from '../core/errors.js';
import { validateDuration, validateEngid, validateHost, validateIfname, validatePort } from '../core/validate.js';
import { DEFAULT_SOCKET_PATH, JOB_ID_RE, MAX_WAIT_S, type RequestBody } from '../control/protocol.js';

/** One option. `arg` set: it takes a value (the placeholder shown in help). */
export interface OptSpec {
  short?: `-${string}`;
  long: `--${string}`;
  /** Property name in the parsed options. */
  key: string;
  arg?: string;
  desc: string;
  /** Words the bash completion offers for the value. */
  complete?: 'interface' | 'file';
}

export type CommandName = 'create' | 'cancel' | 'list' | 'status' | 'version' | 'history' | 'metrics' | 'help';

export interface CommandSpec {
  name: CommandName;
  /** Operand placeholder as in the usage line, e.g. "[ENGID]". */
  operand?: string;
  /** Usage after "tcpreset NAME" (the options part included). */
  usage: string;
  summary: string;
  /** Longer text for `tcpreset help NAME` and the man page. */
  details?: string[];
  opts: OptSpec[];
}

/** Daemon-independent options of every subcommand; accepted before or after the subcommand. */
export const GLOBAL_OPTS: OptSpec[] = [
  { short: '-s', long: '--socket', key: 'socket', arg: 'PATH', desc: `control socket (default: $TCPRESET_SOCKET, else ${DEFAULT_SOCKET_PATH})`, complete: 'file' },
  { long: '--timeout', key: 'timeout', arg: 'SECONDS', desc: 'give up waiting for the daemon after this long (default 10, at most 86400; fractions allowed)' },
  { long: '--json', key: 'json', desc: 'print the result as one JSON line on stdout' },
];

/** Options that only print and exit; commander handles them. */
export const INFO_OPTS: OptSpec[] = [
  { short: '-V', long: '--version', key: 'version', desc: 'print the version of this command and exit (the daemon is not asked)' },
  { long: '--help', key: 'help', desc: 'show help (-h is HOST)' },
];

const SNIFF: OptSpec = { short: '-i', long: '--sniff', key: 'sniff', arg: 'SNIFF_IF', desc: 'interface that sees the mirrored traffic', complete: 'interface' };
const HOST: OptSpec = { short: '-h', long: '--host', key: 'host', arg: 'HOST', desc: 'IPv4 or IPv6 address whose TCP sessions are reset' };
const PORT: OptSpec = { short: '-p', long: '--port', key: 'port', arg: 'DSTPORT', desc: 'only traffic between HOST and this remote port' };

export const CREATE_USAGE = 'ENGID -i SNIFF_IF -o RESET_IF -h HOST [-p DSTPORT] -d SECONDS [--l2] [--wait SECONDS]';

export const COMMANDS: CommandSpec[] = [
  {
    name: 'create',
    operand: '[ENGID]',
    usage: CREATE_USAGE,
    summary: 'create or extend a job (the default: "create" may be left out)',
    details: [
      'For SECONDS, every TCP packet seen on SNIFF_IF that involves HOST (with -p, only traffic between HOST and remote port DSTPORT) triggers RSTs to both endpoints, sent out of RESET_IF. Running the same command again (same ENGID, SNIFF_IF, HOST, DSTPORT) extends the job to the later end time.',
      'The word "create" is needed only when ENGID is a subcommand name: tcpreset create list -i ...',
      `With --wait, the command reports what became of the sessions of HOST the daemon remembered (tcpresetd --watch) and reset at creation: "3 sessions of 10.0.0.5 reset, 3 confirmed dead". A session is confirmed dead when each end answered the out-of-window ACK probe sent after the RSTs with a RST carrying the probe's acknowledgment number, the answer of a socket that no longer exists (RFC 793 section 3.4); a live socket answers it with an ACK. Sessions not confirmed within SECONDS (above 0, fractions allowed) are named on stderr as a warning; the job stands and the exit status is 0 (--json: flows.unverified lists them).`,
    ],
    opts: [
      { ...SNIFF, desc: `${SNIFF.desc} (required)` },
      { short: '-o', long: '--reset', key: 'reset', arg: 'RESET_IF', desc: 'interface the RSTs are sent from (required)', complete: 'interface' },
      { ...HOST, desc: `${HOST.desc} (required)` },
      PORT,
      { short: '-d', long: '--duration', key: 'duration', arg: 'SECONDS', desc: 'how long the job lasts, whole seconds (required)' },
      { long: '--l2', key: 'l2', desc: 'inject Ethernet frames instead of routed packets' },
      {
        long: '--wait', key: 'wait', arg: 'SECONDS',
        desc: `answer once the sessions reset at creation are confirmed dead, or after SECONDS (at most ${MAX_WAIT_S}); unconfirmed ones are named on stderr as a warning (exit status 0)`,
      },
    ],
  },
  {
    name: 'cancel',
    operand: '[JOBID|ENGID]',
    usage: 'JOBID | cancel ENGID -i SNIFF_IF -h HOST [-p DSTPORT]',
    summary: 'end a job now: by its id, or by ENGID -i SNIFF_IF -h HOST [-p DSTPORT]',
    details: ['The job\'s counters are printed. A job is identified by the id that create and list print, or by what was given to create (the reset interface is not part of a job\'s identity).'],
    opts: [
      { ...SNIFF, desc: "with ENGID: the job's sniff interface" },
      { ...HOST, desc: "with ENGID: the job's host" },
      { ...PORT, desc: "with ENGID: the job's port, if it has one" },
    ],
  },
  { name: 'list', usage: '', summary: 'list the jobs with remaining time and counters', opts: [] },
  { name: 'status', usage: '', summary: 'daemon version, uptime, interfaces, faults and counters', opts: [] },
  { name: 'version', usage: '', summary: 'versions of this command and of the daemon (asks the daemon; -V does not)', opts: [] },
  {
    name: 'history',
    usage: '[--since DURATION]',
    summary: 'what was cut and when: jobs created (and by which uid) and ended (how, final counters)',
    details: [
      'One line per event, oldest first: the time, the event, the job id, ENGID, HOST[:DSTPORT], the interfaces, the uid that asked (for an end: the uid that created the job) and, for an end, the packets matched, RSTs sent and flows reset. Events: "created"; a create naming a running job (same ENGID, interface, host and port) is "extended" (its end moved later), "kept" (it already ended later) or "switched" (-o or --l2 moved it to another reset interface or mode); an end is how the job ended: "expired" (also while the daemon was stopped), "cancelled", "protected" (a configuration reload protected its host), or "restart" (a restarted daemon did not restore it: its host is protected now, or its saved record is invalid). For incident reports; --json gives the records whole. The daemon keeps the newest historyMaxRecords events (tcpreset.conf(5)).',
    ],
    opts: [{ long: '--since', key: 'since', arg: 'DURATION', desc: 'only the events of the last DURATION: a number with s, m, h or d (90s, 30m, 12h, 7d), or plain seconds' }],
  },
  {
    name: 'metrics',
    usage: '',
    summary: 'the daemon\'s Prometheus metrics, in the text format a scrape of /metrics returns',
    details: [
      'The same metrics the daemon serves at metricsListen and writes to metricsTextfile (tcpreset.conf(5)), asked over the control socket, so they can be read without either.',
      'tcpreset_reaction_latency_seconds is a histogram of the time from the XDP program\'s timestamp of a matching segment to the return of the sendmmsg that sent its RSTs; tcpreset_flows_reset_total counts the connections reset (as list\'s FLOWS) and tcpreset_flows_verified_total those a create-time sweep verified dead (as list\'s VERIFIED). Counters count since the daemon started and keep their value when jobs end.',
    ],
    opts: [],
  },
  { name: 'help', operand: '[SUBCOMMAND]', usage: '[SUBCOMMAND]', summary: 'show help, for one subcommand if named', opts: [] },
];

/** Words that are subcommands; an ENGID equal to one needs `tcpreset create ENGID ...`. */
export const SUBCOMMANDS: readonly CommandName[] = COMMANDS.map((c) => c.name);

export function commandSpec(name: CommandName): CommandSpec {
  return COMMANDS.find((c) => c.name === name)!;
}

/** Usage lines of the whole command (help and SYNOPSIS). */
export const USAGE_LINES = [
  CREATE_USAGE,
  'create ENGID ...   (the same; needed when ENGID is a subcommand name)',
  'cancel JOBID | cancel ENGID -i SNIFF_IF -h HOST [-p DSTPORT]',
  'list | status | version | metrics | history [--since DURATION]',
  'help [SUBCOMMAND] | --help | -V',
];

export const DESCRIPTION =
  'Reset the TCP connections of HOST seen on a mirror port, for SECONDS. tcpreset asks the daemon tcpresetd over its control socket; the daemon watches SNIFF_IF with XDP and answers each packet of HOST with exact-sequence RSTs to both endpoints.';

/** A paragraph, or a two-column table. */
export type Block = string | { rows: Array<[string, string]> };
export interface Section {
  title: string;
  blocks: Block[];
}

/** Exit status of the command: sysexits(3). */
export const EXIT_ROWS: Array<[string, string]> = [
  [String(EXIT.OK), 'success'],
  [String(EXIT.USAGE), 'usage: bad command line (EX_USAGE)'],
  [String(EXIT.DATAERR), 'a value is wrong: address, port, duration, interface missing or down, protected host, no such job (EX_DATAERR)'],
  [String(EXIT.UNAVAILABLE), 'the daemon is not reachable, the job limit is reached, or the daemon cannot run its data plane (its problem: see its log) (EX_UNAVAILABLE)'],
  [String(EXIT.SOFTWARE), 'internal error, in this command or the daemon (EX_SOFTWARE)'],
  [String(EXIT.TEMPFAIL), 'no answer in time, or the daemon is busy: try again (EX_TEMPFAIL)'],
  [String(EXIT.NOPERM), 'permission denied on the control socket (EX_NOPERM)'],
];

export const SECTIONS: Section[] = [
  {
    title: 'Values',
    blocks: [
      {
        rows: [
          ['ENGID', '1-64 printable characters, no whitespace, not starting with "-". It labels the job and is part of its identity.'],
          ['HOST', 'one unicast IPv4 or IPv6 address; no leading zeros, zone ids or prefixes; loopback, multicast, broadcast and unspecified are refused, and so are the protected hosts of the daemon and its own addresses.'],
          ['DSTPORT', 'decimal 1-65535, no sign or leading zeros.'],
          ['SECONDS', 'whole seconds, at least 1; the daemon enforces its configured maximum (maxDurationSec).'],
          ['SNIFF_IF', 'must exist and be active: up, and operstate up or unknown (no carrier is not active). Checked by the daemon.'],
          ['RESET_IF', "must be active and have an address of HOST's family (IPv6: a global one unless HOST is link-local); with --l2, an Ethernet interface, no address needed."],
        ],
      },
    ],
  },
  {
    title: 'Output',
    blocks: [
      'Results go to stdout: one line per created, extended (or kept: a shorter -d never shortens a job) or cancelled job, a table for list, a summary for status; with --json the daemon\'s result as one JSON line. Any failure is one line "tcpreset: MESSAGE" on stderr naming the value at fault, and a non-zero exit status. A job accepted with a caveat (e.g. not saved to disk) prints "tcpreset: warning: ..." on stderr and exits 0.',
    ],
  },
  { title: 'Exit status', blocks: [{ rows: EXIT_ROWS }] },
  {
    title: 'Environment',
    blocks: [{ rows: [['TCPRESET_SOCKET', `control socket when -s/--socket is not given (default ${DEFAULT_SOCKET_PATH})`]] }],
  },
  {
    title: 'Examples',
    blocks: [
      {
        rows: [
          ['tcpreset ids-4711 -i eth1 -o eth0 -h 192.0.2.7 -p 443 -d 300', 'reset every session between 192.0.2.7 and remote port 443 seen on eth1, for 5 minutes'],
          ['tcpreset list -s /run/tcpreset.sock', 'the jobs, their remaining time and counters'],
          ['tcpreset cancel ids-4711 -i eth1 -h 192.0.2.7 -p 443', 'end that job now'],
        ],
      },
    ],
  },
];

// ---------------------------------------------------------------- meaning of a parsed line

/** Option values as either parser collects them (strings; booleans for flags). */
export interface ParsedOpts {
  json?: boolean;
  socket?: string;
  timeout?: string;
  sniff?: string;
  reset?: string;
  host?: string;
  port?: string;
  duration?: string;
  l2?: boolean;
  wait?: string;
  since?: string;
}

/** What the command will do: one request to the daemon, printed one way. */
export interface Plan {
  command: 'create' | 'cancel' | 'list' | 'status' | 'version' | 'history' | 'metrics';
  body: RequestBody;
  json: boolean;
  socket: string;
  timeoutMs?: number;
}

/** --since DURATION in ms: "90s", "30m", "12h", "7d" or plain seconds; at most 100 years. */
export function parseSince(text: string): number {
  const m = /^(\d{1,9})([smhd]?)$/.exec(text);
  if (!m || Number(m[1]) === 0) {
    throw new ValidationError('since (--since)', text, 'must be a duration: a whole number >= 1 with s, m, h or d (90s, 30m, 12h, 7d), or plain seconds');
  }
  const ms = Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'] * 1000;
  if (ms > 100 * 365 * 86400_000) throw new ValidationError('since (--since)', text, 'must be at most 100 years');
  return ms;
}

/** Longest --timeout: a day is already far past any useful wait, and well inside setTimeout's range. */
export const MAX_TIMEOUT_S = 86400;

export const CREATE_HINT = 'usage: tcpreset ENGID -i SNIFF_IF -o RESET_IF -h HOST [-p DSTPORT] -d SECONDS';

/**
 * Index in `argv` of the first word that is neither a global option nor a
 * global option's value: where the subcommand (or the implicit create's
 * ENGID or first option) begins. Mirrors commander's rules for the global
 * options: a value is the next word whatever it is, or glued ("-sPATH",
 * "--socket=PATH").
 */
export function commandIndex(argv: readonly string[]): number {
  let i = 0;
  while (i < argv.length) {
    const a = argv[i];
    const opt = GLOBAL_OPTS.find((o) => a === o.long || a === o.short);
    if (opt) {
      i += opt.arg ? 2 : 1;
      continue;
    }
    if (GLOBAL_OPTS.some((o) => o.arg && (a.startsWith(`${o.long}=`) || (o.short !== undefined && a.length > 2 && a.startsWith(o.short))))) {
      i += 1;
      continue;
    }
    break;
  }
  return i;
}

/**
 * The usage error for operands past the ones `command` takes, naming them.
 * Commander's own ("too many arguments for 'create'. Expected 1 argument
 * but got 2.") named nothing, and its commonest cause was a subcommand
 * written after an option ("tcpreset -d 5 create x ..."): only the global
 * options may stand before a subcommand, so there the word is an ENGID of
 * the implicit create.
 */
function excessOperands(command: Plan['command'], operands: readonly string[], explicit: boolean): UsageError {
  const takes = command === 'create' || command === 'cancel' ? 1 : 0;
  const extra = operands.slice(takes);
  const named = `unexpected operand${extra.length > 1 ? 's' : ''} ${extra.map((w) => showValue(w)).join(', ')}`;
  const first = operands[0];
  if (command === 'create' && !explicit && (SUBCOMMANDS as readonly string[]).includes(first)) {
    return new UsageError(
      `${named}: the word "${first}" stands after an option, where it is read as the ENGID; ` +
        `put the subcommand first ("tcpreset ${first} ..."): only -s, --timeout and --json may come before it`,
    );
  }
  if (takes === 0) return new UsageError(`${named}: "${command}" takes none`);
  return new UsageError(`${named}: "${command}" takes one, the ${command === 'create' ? 'ENGID' : 'JOBID or ENGID'} (here ${showValue(first)})`);
}

/**
 * getopt and commander read `-i=sniff0` as the value "=sniff0" (the short
 * option's value starts right after its letter), which only then fails as
 * an interface that does not exist, or passes for a name Linux allows.
 * No value of ours starts with "=", so such a word is refused as the
 * spelling mistake it is, naming it and the spellings that work.
 */
function refuseEqualsAfterShort(command: CommandName, opts: ParsedOpts): void {
  const spec = COMMANDS.find((c) => c.name === command);
  for (const o of [...GLOBAL_OPTS, ...(spec?.opts ?? [])]) {
    const v = (opts as Record<string, unknown>)[o.key];
    if (o.short === undefined || typeof v !== 'string' || !v.startsWith('=')) continue;
    const rest = v.slice(1);
    throw new UsageError(
      `${showValue(o.short + v)}: a short option's value follows it directly or after a space, so this reads as ${showValue(v)}; ` +
        `write ${o.short} ${rest}, ${o.short}${rest} or ${o.long}=${rest}`,
    );
  }
}

/** create ENGID -i SNIFF_IF -o RESET_IF -h HOST [-p DSTPORT] -d SECONDS [--l2] [--wait SECONDS]. */
function createBody(what: string | undefined, opts: ParsedOpts, explicit: boolean): RequestBody {
  if (what === undefined) throw new UsageError(`missing ENGID; ${CREATE_HINT}`);
  if (!explicit && (SUBCOMMANDS as readonly string[]).includes(what)) {
    throw new UsageError(
      `"${what}" is a subcommand name: put a subcommand first ("tcpreset ${what} ..."), ` +
        `or create a job for ENGID "${what}" with "tcpreset create ${what} -i ..."`,
    );
  }
  const missing = [
    opts.sniff === undefined && '-i SNIFF_IF',
    opts.reset === undefined && '-o RESET_IF',
    opts.host === undefined && '-h HOST',
    opts.duration === undefined && '-d SECONDS',
  ].filter((x): x is string => x !== false);
  if (missing.length > 0) throw new UsageError(`missing required option${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);
  const create: RequestBody = {
    op: 'create',
    engid: validateEngid(what, 'ENGID'),
    sniffIf: validateIfname(opts.sniff, 'sniff interface (-i)'),
    resetIf: validateIfname(opts.reset, 'reset interface (-o)'),
    host: validateHost(opts.host, 'host (-h)').canonical,
    // Syntax only: the daemon applies its configured maximum.
    duration: validateDuration(opts.duration, Number.MAX_SAFE_INTEGER, 'duration (-d)'),
  };
  if (opts.port !== undefined) create.port = validatePort(opts.port, 'port (-p)');
  if (opts.l2) create.mode = 'l2';
  if (opts.wait !== undefined) {
    if (!/^(?:\d+(?:\.\d+)?|\.\d+)$/.test(opts.wait) || Number(opts.wait) <= 0 || Number(opts.wait) > MAX_WAIT_S) {
      throw new ValidationError('wait (--wait)', opts.wait, `must be a number of seconds above 0 and at most ${MAX_WAIT_S}`);
    }
    create.wait = Number(opts.wait);
  }
  return create;
}

/** cancel JOBID, or cancel ENGID -i SNIFF_IF -h HOST [-p DSTPORT] (what create was given, less the reset interface). */
function cancelBody(what: string | undefined, opts: ParsedOpts): RequestBody {
  if (what === undefined) throw new UsageError('missing JOBID or ENGID; usage: tcpreset cancel JOBID | tcpreset cancel ENGID -i SNIFF_IF -h HOST [-p DSTPORT]');
  if (opts.sniff !== undefined || opts.host !== undefined || opts.port !== undefined) {
    const missing = [opts.sniff === undefined && '-i SNIFF_IF', opts.host === undefined && '-h HOST'].filter((x): x is string => x !== false);
    if (missing.length > 0) throw new UsageError(`cancel by ENGID needs ${missing.join(' and ')}`);
    const byKey: RequestBody = {
      op: 'cancel',
      engid: validateEngid(what, 'ENGID'),
      sniffIf: validateIfname(opts.sniff, 'sniff interface (-i)'),
      host: validateHost(opts.host, 'host (-h)').canonical,
    };
    if (opts.port !== undefined) byKey.port = validatePort(opts.port, 'port (-p)');
    return byKey;
  }
  if (!JOB_ID_RE.test(what)) {
    throw new ValidationError('job id', what, 'is not a job id (1-64 of A-Z a-z 0-9 _ -); to cancel by ENGID add -i SNIFF_IF -h HOST');
  }
  return { op: 'cancel', jobId: what };
}

/** history [--since DURATION]: since is sent as epoch ms. */
function historyBody(opts: ParsedOpts): RequestBody {
  const h: RequestBody = { op: 'history' };
  if (opts.since !== undefined) h.since = Math.max(0, Date.now() - parseSince(opts.since));
  return h;
}

/** Each subcommand's request, from its operand (create and cancel take one) and options. */
const BODIES: Record<Plan['command'], (what: string | undefined, opts: ParsedOpts, explicit: boolean) => RequestBody> = {
  create: createBody,
  cancel: cancelBody,
  history: (_what, opts) => historyBody(opts),
  list: () => ({ op: 'list' }),
  status: () => ({ op: 'status' }),
  version: () => ({ op: 'version' }),
  metrics: () => ({ op: 'metrics' }),
};

/**
 * The plan for a parsed command line, or a TcpresetError (usage 64, value 65).
 * Both parsers end here, so they give the same answer for the same words.
 * `explicit`: the word "create" was given.
 */
export function planFor(
  command: Plan['command'],
  operands: readonly string[],
  opts: ParsedOpts,
  env: Record<string, string | undefined>,
  explicit: boolean,
): Plan {
  if (operands.length > (command === 'create' || command === 'cancel' ? 1 : 0)) throw excessOperands(command, operands, explicit);
  refuseEqualsAfterShort(command, opts);
  const body = BODIES[command](operands[0], opts, explicit);
  const socket = opts.socket ?? env.TCPRESET_SOCKET ?? DEFAULT_SOCKET_PATH;
  if (socket === '') throw new ValidationError('socket (-s/--socket)', socket, 'must not be empty');
  const plan: Plan = { command, body, json: opts.json === true, socket };
  const timeoutMs = timeoutOf(opts, command === 'create' ? opts.wait : undefined);
  if (timeoutMs !== undefined) plan.timeoutMs = timeoutMs;
  return plan;
}

/** --timeout in ms; without it, create --wait's bound plus the default 10 s (the daemon answers after up to --wait); else undefined (the client's default). */
function timeoutOf(opts: ParsedOpts, wait: string | undefined): number | undefined {
  if (opts.timeout !== undefined) {
    // The upper bound: past setTimeout's range Node fires at once (and warns on stderr).
    // One message for every refusal, so "1e9" (a number, but not in the plain decimal form
    // accepted) is not told that it is not positive.
    if (!/^(?:\d+(?:\.\d+)?|\.\d+)$/.test(opts.timeout) || Number(opts.timeout) <= 0 || Number(opts.timeout) > MAX_TIMEOUT_S) {
      throw new ValidationError('timeout (--timeout)', opts.timeout, `must be seconds in plain decimal (like 10 or 2.5), above 0 and at most ${MAX_TIMEOUT_S}`);
    }
    return Math.ceil(Number(opts.timeout) * 1000);
  }
  return wait === undefined ? undefined : Math.ceil((Number(wait) + 10) * 1000);
}

declare const TCPRESET_VERSION: string | undefined;

/** This command's version: inlined by the bundle, else read from package.json. */
export function clientVersion(readFile: (url: URL) => string): string {
  if (typeof TCPRESET_VERSION === 'string') return TCPRESET_VERSION;
  try {
    const pkg = JSON.parse(readFile(new URL('../../../package.json', import.meta.url))) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
