/**
 * The `tcpreset` command. Spawned once per alert by a playbook, so what
 * runs before the request is on the socket is kept small: the fast parser
 * (fast.ts), validation, the protocol and the socket client. commander,
 * the help text and the man page data load only for help, -V and lines the
 * fast parser passes on (commander.ts). Never koffi or pino (a test walks
 * the import graph). bin/tcpreset runs this as one CommonJS bundle
 * (dist/tcpreset.cjs, made by esbuild) so Node reads and compiles one file.
 *
 * Output contract: results on stdout (human lines, or the response's
 * result as JSON with --json); any failure is exactly one line
 * "tcpreset: <message>" on stderr and a sysexits code (core/errors.ts).
 */
import { readFileSync, writeSync } from 'node:fs';
import { EXIT, TcpresetError, UsageError, exitCodeFor, type ErrorCode } from '../core/errors.js';
import { request } from '../control/client.js';
import { fastPlan } from './fast.js';
import { formatCancel, formatCreate, formatHistory, formatList, formatStatus } from './format.js';
import { clientVersion, type Plan } from './spec.js';

export interface Writable {
  write(chunk: string): unknown;
}
export interface RunIo {
  stdout?: Writable;
  stderr?: Writable;
  env?: Record<string, string | undefined>;
}

export { MAX_TIMEOUT_S, SUBCOMMANDS } from './spec.js';

/** Commander quotes an offending argument whole: a 100,000-character one made a 100 KB error line. */
function shortenQuoted(msg: string): string {
  return msg.replace(/'([^']{201,})'/g, (_m, v: string) => `'${v.slice(0, 200)}…' (${[...v].length} characters)`);
}

function oneLine(msg: string): string {
  return msg.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ').trim();
}

/** commander's errors, recognised without loading commander. */
function isCommanderError(err: unknown): err is Error & { code: string } {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('commander.');
}

/** Where a subcommand writes: results on stdout, warnings on stderr. */
interface Out {
  stdout: Writable;
  stderr: Writable;
}

/** Send the plan's request; the result, or the daemon's error as a thrown TcpresetError. */
async function ask(plan: Plan): Promise<Record<string, unknown>> {
  const res = await request(plan.socket, plan.body, { timeoutMs: plan.timeoutMs });
  if (!res.ok) {
    throw new TcpresetError(res.error.code as ErrorCode, res.error.message, { details: res.error.details ?? {} });
  }
  return res.result as Record<string, unknown>;
}

/** The result as one JSON line (--json), or its warnings on stderr and `human` of it on stdout. */
function show<R>(plan: Plan, out: Out, result: Record<string, unknown>, human: (r: R) => string): void {
  if (plan.json) {
    out.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  // Accepted with a caveat (e.g. not persisted): the job stands, the operator must know.
  if (Array.isArray(result.warnings)) for (const w of result.warnings) out.stderr.write(`tcpreset: warning: ${String(w)}\n`);
  out.stdout.write(human(result as R));
}

/** A subcommand that asks once and prints the result with `human`. */
function simple<R>(human: (r: R) => string): (plan: Plan, out: Out) => Promise<number> {
  return async (plan, out) => {
    show(plan, out, await ask(plan), human);
    return EXIT.OK;
  };
}

/**
 * create: the job line, and with --wait the sessions reset at creation. Those not confirmed dead in
 * time are a warning on stderr, exit 0 (issue 9: the job stands and the command did what was asked);
 * --json's flows.unverified is what a playbook tests.
 */
async function create(plan: Plan, out: Out): Promise<number> {
  const result = await ask(plan);
  show(plan, out, result, formatCreate);
  const unverified = (result.flows as { unverified?: unknown } | undefined)?.unverified;
  if (Array.isArray(unverified) && unverified.length > 0) {
    const n = unverified.length;
    out.stderr.write(`tcpreset: warning: ${n} session${n === 1 ? '' : 's'} reset but not confirmed dead in time: ${unverified.map(String).join(', ')}\n`);
  }
  return EXIT.OK;
}

/** version: this command's version, said before asking (an unreachable daemon still leaves it), then the daemon's. */
async function version(plan: Plan, out: Out): Promise<number> {
  const client = clientVersion((u) => readFileSync(u, 'utf8'));
  if (!plan.json) out.stdout.write(`tcpreset ${client}\n`);
  const result = await ask(plan);
  show(plan, out, { ...result, client }, (r: { version: string }) => `tcpresetd ${r.version}\n`);
  return EXIT.OK;
}

/** One function per subcommand that asks the daemon (help and -V are commander's: commander.ts). */
const SUBCOMMAND: Record<Plan['command'], (plan: Plan, out: Out) => Promise<number>> = {
  create,
  cancel: simple(formatCancel),
  list: simple(formatList),
  status: simple(formatStatus),
  history: simple(formatHistory),
  metrics: simple((r: { text: string }) => r.text),
  version,
};

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
  try {
    if (argv.length === 0) throw new UsageError('missing ENGID or subcommand; see tcpreset --help');
    let plan = fastPlan(argv, env);
    if (plan === null) {
      const { commanderParse } = await import('./commander.js');
      const parsed = await commanderParse(argv, env, stdout);
      if ('printed' in parsed) return EXIT.OK;
      plan = parsed;
    }
    return await SUBCOMMAND[plan.command](plan, { stdout, stderr });
  } catch (err) {
    if (isCommanderError(err)) return fail(shortenQuoted(err.message), EXIT.USAGE);
    if (err instanceof TcpresetError) return fail(err.message, exitCodeFor(err.code));
    const msg = err instanceof Error ? err.message : String(err);
    return fail(`internal error: ${msg}`, EXIT.SOFTWARE);
  }
}

/**
 * Writes straight to a file descriptor: process.stdout would load the
 * stream machinery (a tty or pipe stdout is a net.Socket) just to print a
 * line. Waits out EAGAIN (a non-blocking pipe that is full); a reader that
 * went away (`tcpreset list | head -1`) is not an error of ours.
 */
export function fdWriter(fd: number): Writable {
  return {
    write(chunk: string): void {
      const buf = Buffer.from(chunk, 'utf8');
      let off = 0;
      while (off < buf.length) {
        try {
          off += writeSync(fd, buf, off);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'EAGAIN') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
          else if (code === 'EPIPE') return;
          else throw err;
        }
      }
    },
  };
}

/** Entry point of bin/tcpreset. */
export async function main(): Promise<void> {
  const code = await run(process.argv.slice(2), { stdout: fdWriter(1), stderr: fdWriter(2) });
  process.exit(code);
}
