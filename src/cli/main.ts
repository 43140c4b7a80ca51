/**
 * The `tcpreset` command. Spawned once per alert by a playbook, so it is
 * light: commander, errors, validation and the protocol types at load time;
 * the socket client and formatting are imported only by the subcommands
 * that use them. Never koffi or pino (a test walks the import graph).
 *
 * Output contract: results on stdout (human lines, or the response's
 * result as JSON with --json); any failure is exactly one line
 * "tcpreset: <message>" on stderr and a sysexits code (errors.ts).
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { EXIT, TcpresetError, UsageError, ValidationError, exitCodeFor, type ErrorCode } from '../errors.js';
import { validateDuration, validateEngid, validateHost, validateIfname, validatePort } from '../validate.js';
import { DEFAULT_SOCKET_PATH, JOB_ID_RE, type RequestBody } from '../control/protocol.js';

export interface Writable {
  write(chunk: string): unknown;
}
export interface RunIo {
  stdout?: Writable;
  stderr?: Writable;
  env?: Record<string, string | undefined>;
}

/** Longest --timeout: a day is already far past any useful wait, and well inside setTimeout's range. */
export const MAX_TIMEOUT_S = 86400;

/** Words that are subcommands; an ENGID equal to one needs `tcpreset create ENGID ...`. */
export const SUBCOMMANDS = ['create', 'cancel', 'list', 'status', 'version'] as const;

interface CommonOpts {
  json?: boolean;
  socket?: string;
  timeout?: string;
}
interface CreateOpts extends CommonOpts {
  sniff?: string;
  reset?: string;
  host?: string;
  port?: string;
  duration?: string;
  l2?: boolean;
}

const HELP_AFTER = `
Create options (tcpreset [create] ENGID ...):
  -i, --sniff SNIFF_IF     interface that sees the mirrored traffic (required)
  -o, --reset RESET_IF     interface the RSTs are sent from (required)
  -h, --host HOST          address whose TCP sessions are reset (required)
  -p, --port DSTPORT       only traffic between HOST and this remote port
  -d, --duration SECONDS   how long the job lasts (required)
  --l2                     inject Ethernet frames instead of routed packets
  --json                   print the result as JSON on stdout
  --socket PATH            control socket
  --timeout SECONDS        give up waiting for the daemon (default 10, at most 86400)
  Note: -h is HOST; help is --help.

Jobs:
  For SECONDS, every TCP packet seen on SNIFF_IF that involves HOST (with -p,
  only traffic between HOST and remote port DSTPORT) triggers RSTs to both
  endpoints, sent out of RESET_IF. Re-running the same command (same ENGID,
  SNIFF_IF, HOST, DSTPORT) extends the job to the later end time.

Rules:
  ENGID     1-64 printable characters, no whitespace, not starting with "-".
            If ENGID is one of ${SUBCOMMANDS.join(', ')}, write
            "tcpreset create ENGID ..." (a subcommand name must come first).
  HOST      one unicast IPv4 or IPv6 address; no leading zeros, zone ids or
            prefixes; loopback, multicast, broadcast and unspecified refused.
  DSTPORT   decimal 1-65535, no sign or leading zeros.
  SECONDS   whole seconds >= 1; the daemon enforces its configured maximum.
  SNIFF_IF  must exist and be active (up, and operstate up or unknown: no
            carrier = not active). Checked by the daemon.
  RESET_IF  must be active and have an address of HOST's family (IPv6: a
            global address unless HOST is link-local); with --l2, an
            Ethernet interface (no address needed).

Exit status: 0 ok, 64 usage, 65 invalid value / interface / protected host /
no such job, 69 daemon unreachable, job limit, or the daemon cannot run its
data plane (its problem: see its log), 70 internal, 75 timeout, 77 permission
denied (to the control socket). Errors are one line on stderr.
Socket: --socket, else $TCPRESET_SOCKET, else ${DEFAULT_SOCKET_PATH}.`;

/** An argParser that refuses a second occurrence of the option. */
function once(value: string, previous: unknown): string {
  if (previous !== undefined) throw new InvalidArgumentError('the option is given more than once');
  return value;
}

function addCommon(cmd: Command): Command {
  return cmd
    .option('--json', 'print the result as JSON on stdout')
    .option('--socket <path>', `control socket (default $TCPRESET_SOCKET or ${DEFAULT_SOCKET_PATH})`, once)
    .option('--timeout <seconds>', 'give up waiting for the daemon after this long (default 10)', once);
}

/** Commander quotes an offending argument whole: a 100,000-character one made a 100 KB error line. */
function shortenQuoted(msg: string): string {
  return msg.replace(/'([^']{201,})'/g, (_m, v: string) => `'${v.slice(0, 200)}…' (${[...v].length} characters)`);
}

function oneLine(msg: string): string {
  return msg.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ').trim();
}

function clientVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Run the command with `argv` (without node and script). Never throws and
 * never exits the process: returns the exit status.
 */
export async function run(argv: string[], io: RunIo = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const env = io.env ?? process.env;
  const fail = (msg: string, code: number): number => {
    stderr.write(`tcpreset: ${oneLine(msg)}\n`);
    return code;
  };

  let exitCode: number = EXIT.OK;

  /**
   * Send one request and print its result (JSON, or `human(result)`); a
   * daemon error becomes a thrown TcpresetError. `json` adapts the result.
   */
  const call = async <R>(
    body: RequestBody,
    opts: CommonOpts,
    human: (result: R) => string,
    json: (result: R) => unknown = (r) => r,
  ): Promise<void> => {
    const socket = opts.socket ?? env.TCPRESET_SOCKET ?? DEFAULT_SOCKET_PATH;
    if (socket === '') throw new ValidationError('socket (--socket)', socket, 'must not be empty');
    let timeoutMs: number | undefined;
    if (opts.timeout !== undefined) {
      if (!/^(?:\d+(?:\.\d+)?|\.\d+)$/.test(opts.timeout) || Number(opts.timeout) <= 0) {
        throw new ValidationError('timeout (--timeout)', opts.timeout, 'must be a positive number of seconds');
      }
      // Past setTimeout's range Node fires at once (and warns on stderr): refuse instead.
      if (Number(opts.timeout) > MAX_TIMEOUT_S) {
        throw new ValidationError('timeout (--timeout)', opts.timeout, `must be at most ${MAX_TIMEOUT_S} seconds`);
      }
      timeoutMs = Math.ceil(Number(opts.timeout) * 1000);
    }
    const { request } = await import('../control/client.js');
    const res = await request(socket, body, { timeoutMs });
    if (!res.ok) {
      throw new TcpresetError(res.error.code as ErrorCode, res.error.message, { details: res.error.details ?? {} });
    }
    const result = res.result as R;
    // Accepted with a caveat (e.g. not persisted): the job stands, the operator must know.
    const warnings = (result as { warnings?: unknown }).warnings;
    if (!opts.json && Array.isArray(warnings)) for (const w of warnings) stderr.write(`tcpreset: warning: ${String(w)}\n`);
    stdout.write(opts.json ? `${JSON.stringify(json(result))}\n` : human(result));
  };

  const program = new Command('tcpreset');
  program
    .helpOption('--help', 'show help') // -h is HOST
    .helpCommand(false) // "help" stays a possible ENGID
    .exitOverride()
    .configureOutput({
      writeOut: (s) => void stdout.write(s),
      writeErr: (s) => void stderr.write(s),
      outputError: () => {}, // reported once, as one line, by the catch below
    })
    .usage(
      'ENGID -i SNIFF_IF -o RESET_IF -h HOST [-p DSTPORT] -d SECONDS [--l2] [--json] [--socket PATH]\n' +
        '       tcpreset create ENGID ...   (same; needed when ENGID is a subcommand name)\n' +
        '       tcpreset cancel JOBID | cancel ENGID -i SNIFF_IF -h HOST [-p DSTPORT]\n' +
        '       tcpreset list | status | version [--json] [--socket PATH]',
    )
    .description('Reset the TCP connections of HOST seen on a mirror port, for SECONDS.')
    .addHelpText('after', HELP_AFTER);

  // Subcommand names must come first; anything else is the default command (create).
  const explicitCreate = argv[0] === 'create';

  addCommon(
    program
      .command('create', { isDefault: true })
      .description('create or extend a job (the default command)')
      .usage('ENGID -i SNIFF_IF -o RESET_IF -h HOST [-p DSTPORT] -d SECONDS [--l2] [--json] [--socket PATH]')
      .argument('[ENGID]', 'detection engine id; labels the job and is part of its identity')
      .option('-i, --sniff <SNIFF_IF>', 'interface that sees the mirrored traffic (required)', once)
      .option('-o, --reset <RESET_IF>', 'interface the RSTs are sent from (required)', once)
      .option('-h, --host <HOST>', 'IPv4 or IPv6 address whose TCP sessions are reset (required)', once)
      .option('-p, --port <DSTPORT>', 'only traffic between HOST and this remote port', once)
      .option('-d, --duration <SECONDS>', 'how long the job lasts (required)', once)
      .option('--l2', 'inject at layer 2 (Ethernet frames) instead of routing at layer 3'),
  ).action(async (engid: string | undefined, opts: CreateOpts) => {
    if (engid === undefined) throw new UsageError('missing ENGID; usage: tcpreset ENGID -i SNIFF_IF -o RESET_IF -h HOST [-p DSTPORT] -d SECONDS');
    if (!explicitCreate && (SUBCOMMANDS as readonly string[]).includes(engid)) {
      throw new UsageError(
        `"${engid}" is a subcommand name: put a subcommand first ("tcpreset ${engid} ..."), ` +
          `or create a job for ENGID "${engid}" with "tcpreset create ${engid} -i ..."`,
      );
    }
    const missing = [
      opts.sniff === undefined && '-i SNIFF_IF',
      opts.reset === undefined && '-o RESET_IF',
      opts.host === undefined && '-h HOST',
      opts.duration === undefined && '-d SECONDS',
    ].filter((x): x is string => x !== false);
    if (missing.length > 0) throw new UsageError(`missing required option${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);
    const body: RequestBody = {
      op: 'create',
      engid: validateEngid(engid, 'ENGID'),
      sniffIf: validateIfname(opts.sniff, 'sniff interface (-i)'),
      resetIf: validateIfname(opts.reset, 'reset interface (-o)'),
      host: validateHost(opts.host, 'host (-h)').canonical,
      // Syntax only: the daemon applies its configured maximum.
      duration: validateDuration(opts.duration, Number.MAX_SAFE_INTEGER, 'duration (-d)'),
    };
    if (opts.port !== undefined) body.port = validatePort(opts.port, 'port (-p)');
    if (opts.l2) body.mode = 'l2';
    const { formatCreate } = await import('./format.js');
    await call(body, opts, formatCreate);
  });

  addCommon(
    program
      .command('cancel')
      .description('end a job now: by its id, or by ENGID -i SNIFF_IF -h HOST [-p DSTPORT]')
      .usage('JOBID | ENGID -i SNIFF_IF -h HOST [-p DSTPORT] [--json] [--socket PATH]')
      .argument('[JOBID|ENGID]')
      .option('-i, --sniff <SNIFF_IF>', 'with ENGID: the job\'s sniff interface', once)
      .option('-h, --host <HOST>', 'with ENGID: the job\'s host', once)
      .option('-p, --port <DSTPORT>', 'with ENGID: the job\'s port, if it has one', once),
  ).action(async (what: string | undefined, opts: CommonOpts & { sniff?: string; host?: string; port?: string }) => {
    if (what === undefined) throw new UsageError('missing JOBID or ENGID; usage: tcpreset cancel JOBID | tcpreset cancel ENGID -i SNIFF_IF -h HOST [-p DSTPORT]');
    let body: RequestBody;
    if (opts.sniff !== undefined || opts.host !== undefined || opts.port !== undefined) {
      const missing = [opts.sniff === undefined && '-i SNIFF_IF', opts.host === undefined && '-h HOST'].filter((x): x is string => x !== false);
      if (missing.length > 0) throw new UsageError(`cancel by ENGID needs ${missing.join(' and ')}`);
      body = {
        op: 'cancel',
        engid: validateEngid(what, 'ENGID'),
        sniffIf: validateIfname(opts.sniff, 'sniff interface (-i)'),
        host: validateHost(opts.host, 'host (-h)').canonical,
      };
      if (opts.port !== undefined) body.port = validatePort(opts.port, 'port (-p)');
    } else {
      if (!JOB_ID_RE.test(what)) {
        throw new ValidationError('job id', what, 'is not a job id (1-64 of A-Z a-z 0-9 _ -); to cancel by ENGID add -i SNIFF_IF -h HOST');
      }
      body = { op: 'cancel', jobId: what };
    }
    const { formatCancel } = await import('./format.js');
    await call(body, opts, formatCancel);
  });

  addCommon(program.command('list').description('list the jobs with remaining time and counters')).action(async (opts: CommonOpts) => {
    const { formatList } = await import('./format.js');
    await call({ op: 'list' }, opts, formatList);
  });

  addCommon(program.command('status').description('daemon version, uptime, interfaces and counters')).action(async (opts: CommonOpts) => {
    const { formatStatus } = await import('./format.js');
    await call({ op: 'status' }, opts, formatStatus);
  });

  addCommon(program.command('version').description('versions of this command and of the daemon')).action(async (opts: CommonOpts) => {
    const client = clientVersion();
    if (!opts.json) stdout.write(`tcpreset ${client}\n`);
    await call<{ version: string }>(
      { op: 'version' },
      opts,
      (r) => `tcpresetd ${r.version}\n`,
      (r) => ({ ...r, client }),
    );
  });

  try {
    if (argv.length === 0) throw new UsageError('missing ENGID or subcommand; see tcpreset --help');
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version') {
        return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
      }
      return fail(shortenQuoted(err.message), EXIT.USAGE);
    }
    if (err instanceof TcpresetError) return fail(err.message, exitCodeFor(err.code));
    const msg = err instanceof Error ? err.message : String(err);
    return fail(`internal error: ${msg}`, EXIT.SOFTWARE);
  }
}

/** Entry point of bin/tcpreset. */
export async function main(): Promise<void> {
  // A closed pipe on stdout (`tcpreset list | head -1`) is not an error of ours.
  process.stdout.on('error', () => {});
  process.exitCode = await run(process.argv.slice(2));
}
