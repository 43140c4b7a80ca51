/**
 * tcpresetd: the long-running service behind `tcpreset`. Parses its flags,
 * loads the configuration (refusing to start on a bad one), starts the
 * Daemon and turns SIGTERM/SIGINT into an orderly stop with exit status 0.
 */
import { Command, Option } from 'commander';
import { EXIT, TcpresetError, showValue, ConfigError } from '../core/errors.js';
import { DEFAULT_SOCKET_PATH } from '../control/protocol.js';
import { loadConfig, validateWatch, DEFAULT_CONFIG } from './config.js';
import { CONFIG_DOC } from './config-doc.js';
import { createLogger, LOG_LEVELS, stdoutIsJournal, type LogLevel } from './log.js';
import { Daemon, packageVersion } from './service.js';
import { LIVE_KEYS } from './reload.js';
import { JOURNAL_SOCKET } from './journal.js';
import { existsSync } from 'node:fs';

/** sysexits(3) codes from the shared catalog (core/errors.ts). */
export const EXIT_CONFIG = EXIT.CONFIG;
const EXIT_UNAVAILABLE = EXIT.UNAVAILABLE;
const EXIT_SOFTWARE = EXIT.SOFTWARE;
const DEFAULT_STATE_DIR = '/var/lib/tcpreset';
const DEFAULT_CONFIG_PATH = '/etc/tcpreset/config.json';
/** A shutdown that has not finished by then is cut short (systemd would SIGKILL later anyway). */
const SHUTDOWN_LIMIT_MS = 15_000;

function configHelp(): string {
  // One source with tcpreset.conf(5): src/daemon/config-doc.ts.
  const rows = (Object.keys(CONFIG_DOC) as (keyof typeof CONFIG_DOC)[]).map((k) => [`${k} (${JSON.stringify(DEFAULT_CONFIG[k])})`, CONFIG_DOC[k].summary]);
  const w = Math.max(...rows.map((r) => r[0].length)) + 2;
  return rows.map(([k, v]) => `  ${k.padEnd(w)}${v}`).join('\n');
}

/** `text` broken at spaces into lines of at most `width`, continued at `indent` spaces. */
function wrap(text: string, indent: number, width: number): string {
  const lines: string[] = [];
  let cur = '';
  for (const w of text.split(' ')) {
    if (cur && cur.length + 1 + w.length > width) {
      lines.push(cur);
      cur = w;
    } else cur = cur ? `${cur} ${w}` : w;
  }
  if (cur) lines.push(cur);
  return lines.join(`\n${' '.repeat(indent)}`);
}

const HELP_AFTER = `
What it does:
  Keeps the reset jobs that \`tcpreset\` creates: for each job, every TCP
  packet of HOST[:PORT] seen on the sniff interface (XDP) is answered with
  exact-sequence RSTs to both endpoints out of the reset interface, until
  the job ends. Jobs survive restarts (STATE_DIR/jobs.json).

State directory:
  Held with flock(2) on STATE_DIR/tcpresetd.lock for the daemon's life (the
  file holds its pid). A second daemon given the same --state-dir exits
  ${EXIT_UNAVAILABLE} naming that pid, even on another socket.

Control socket:
  Newline-delimited JSON (protocol v1), one response per request. Created
  with mode 0660 and group "tcpreset" when that group exists; a stale socket
  file is removed only if nothing answers on it. Under systemd socket
  activation (LISTEN_FDS/LISTEN_PID) the passed socket is used and --socket
  only names it in logs.

Configuration (JSON; every key optional, unknown keys refused):
${configHelp()}
  An absent file at the default path, or an empty file, means defaults; a
  file given with --config must exist. An invalid file stops the daemon
  (exit ${EXIT_CONFIG}) with one line naming the file, the key and the value.
  --test-config checks the file and exits: 0 valid, ${EXIT_CONFIG} invalid.

Logs:
  pino JSON lines on stdout. Under systemd (JOURNAL_STREAM is stdout) each
  record goes to the journal's native socket instead: MESSAGE is the human
  message, PRIORITY its syslog level, and the facts are fields of their own
  (JOB_ID, ENGID, HOST, PORT, OP, ERROR, ...; the whole record in
  TCPRESET_JSON), so \`journalctl -u tcpreset -p warning\` and
  \`journalctl -u tcpreset ENGID=...\` work. What the socket refuses is
  written to stdout with its \`<N>\` priority prefix. Answered read-only
  requests (version, list, status) are logged at debug.

systemd:
  Type=notify: READY=1 once listening, STATUS=<n jobs active>, WATCHDOG=1 at
  half of WatchdogSec, STOPPING=1 on shutdown.

Signals:
  SIGTERM, SIGINT  stop accepting, save jobs, detach XDP, exit 0
  SIGHUP           re-read the configuration file (systemctl reload). Applied
                   at once: ${wrap([...LIVE_KEYS].join(', '), 19, 58)}
                   (limits apply to new jobs and connections; running jobs whose
                   host becomes protected are ended). Other keys are logged,
                   one warning per key, as needing a restart. A file that does
                   not validate is refused with an error log and the running
                   configuration stays (so is a file found gone or empty when
                   the running configuration came from one with content:
                   write {} to return to the defaults on purpose); tcpreset
                   status shows a config FAULT
                   (reason, file, time) until a reload applies, and
                   tcpreset_config_reloads_total{result="refused"} counts it.
                   The unit's ExecReload runs tcpresetd --test-config before
                   the signal, so systemctl reload of a bad file fails and
                   the daemon is not signalled.

Exit status:
  0 stopped on a signal (or --test-config: valid); ${EXIT.USAGE} bad flags; ${EXIT_UNAVAILABLE} control socket or state directory in use, or unusable;
  ${EXIT_SOFTWARE} internal error; ${EXIT_CONFIG} invalid configuration.

Environment:
  TCPRESET_SOCKET   default for --socket
  TCPRESET_BPF_OBJ  path of the BPF object (default: build/tcpreset.bpf.o of the install)
`;

interface Flags {
  watch?: string[];
  socket: string;
  stateDir: string;
  config: string;
  logLevel?: LogLevel;
  testConfig?: boolean;
}

/** Fields a refusal is logged with: code and details of an expected error, the stack only of a bug. */
function failureFields(err: unknown): object {
  if (err === undefined) return {};
  if (err instanceof TcpresetError) return { code: err.code, details: err.details };
  return { err };
}

export async function main(argv: string[] = process.argv): Promise<void> {
  const program = new Command('tcpresetd')
    .description('tcpreset daemon: keeps timed TCP reset jobs, enforced with XDP and forged RSTs')
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .addOption(new Option('--socket <path>', 'control socket path').env('TCPRESET_SOCKET').default(DEFAULT_SOCKET_PATH))
    .addOption(new Option('--state-dir <dir>', 'directory of the saved jobs (jobs.json)').default(DEFAULT_STATE_DIR))
    .addOption(new Option('--config <file>', 'configuration file (JSON)').default(DEFAULT_CONFIG_PATH))
    .addOption(new Option('--log-level <level>', 'log level (overrides the configuration)').choices(LOG_LEVELS as string[]))
    .addOption(new Option('--watch <interface>', 'attach to this sniff interface from start to stop and remember its connections (repeatable; adds to config "watch")')
      .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]))
    .addOption(new Option('--test-config', `check the configuration file and exit (0 valid, ${EXIT_CONFIG} invalid)`))
    .helpOption('-h, --help', 'show this help')
    .addHelpText('after', HELP_AFTER)
    .showHelpAfterError()
    .exitOverride((err) => {
      process.exit(err.exitCode === 0 ? 0 : EXIT.USAGE);
    })
    // Operands are refused below, naming them: commander's own error ("too many arguments.
    // Expected 0 arguments but got 1.") named nothing.
    .allowExcessArguments(true);
  program.parse(argv);
  if (program.args.length > 0) {
    program.error(`error: unexpected operand${program.args.length > 1 ? 's' : ''} ${program.args.map((a) => showValue(a)).join(', ')}: tcpresetd takes options only`, {
      code: 'commander.excessArguments',
    });
  }
  const flags = program.opts<Flags>();
  const configGiven = program.getOptionValueSource('config') === 'cli';

  if (flags.testConfig) {
    // No logger: the answer is one line, for a person or a deployment script.
    try {
      const l = loadConfig(flags.config, configGiven);
      process.stdout.write(l.source === null
        ? `tcpresetd: no config file at ${flags.config}: defaults apply\n`
        : `tcpresetd: config ${l.source}: valid${l.empty ? ' (empty: defaults apply)' : ''}\n`);
      process.exit(EXIT.OK);
    } catch (err) {
      process.stderr.write(`tcpresetd: ${(err as Error).message}\n`);
      process.exit(err instanceof TcpresetError ? err.exitCode : EXIT_SOFTWARE);
    }
  }

  const journal = stdoutIsJournal();
  // Under systemd, records go to the journal's native socket with their fields (journal.ts);
  // TCPRESET_JOURNAL_SOCKET names another socket (tests) and forces it.
  const journalPath = process.env.TCPRESET_JOURNAL_SOCKET || (journal && existsSync(JOURNAL_SOCKET) ? JOURNAL_SOCKET : undefined);
  let journalSend: ((d: Buffer) => void) | undefined;
  if (journalPath) {
    try {
      journalSend = (await import('../native/libc.js')).unixDatagramSender(journalPath);
    } catch (err) {
      process.stderr.write(`tcpresetd: cannot open the journal socket ${journalPath}: ${(err as Error).message}; logging to stdout\n`);
    }
  }
  const { logger, flush } = createLogger({ level: flags.logLevel ?? 'info', journalSend });
  /**
   * Report a refusal once per reader: under journald stdout and stderr are
   * the same journal, so only the log line (with its priority); on a
   * terminal only the stderr line; to a pipe or file (a supervisor's log)
   * both, each on its own channel.
   */
  const die = (code: number, msg: string, err?: unknown): never => {
    if (!process.stdout.isTTY) logger.fatal(failureFields(err), msg);
    flush();
    if (!journal) process.stderr.write(`tcpresetd: ${msg}\n`);
    process.exit(code);
  };

  let loaded;
  try {
    loaded = loadConfig(flags.config, configGiven);
  } catch (err) {
    return die(err instanceof TcpresetError ? err.exitCode : EXIT_CONFIG, `refusing to start: ${(err as Error).message}`, err);
  }
  if (flags.watch) {
    try {
      loaded.config.watch = validateWatch([...loaded.config.watch, ...flags.watch], '--watch');
    } catch (err) {
      // A bad flag is a usage error (64), as commander's own are.
      return die(EXIT.USAGE, `refusing to start: ${(err as Error).message}`, err);
    }
  }
  if (!flags.logLevel) logger.level = loaded.config.logLevel;
  logger.info({ config: loaded.source ?? '(defaults: no file)', settings: loaded.config, ...(loaded.empty ? { empty: true } : {}) },
    loaded.empty ? 'configuration file is empty: defaults apply' : 'configuration loaded');

  const daemon = new Daemon({
    socketPath: flags.socket,
    stateDir: flags.stateDir,
    config: loaded.config,
    protectedEntries: loaded.protectedEntries,
    log: logger,
    configFile: flags.config,
  });

  const stop = (reason: string, code: number): void => {
    const limit = setTimeout(() => die(EXIT_SOFTWARE, `shutdown did not finish within ${SHUTDOWN_LIMIT_MS} ms`), SHUTDOWN_LIMIT_MS);
    void daemon.shutdown(reason).then(
      () => {
        clearTimeout(limit);
        flush();
        process.exit(code);
      },
      (err: unknown) => die(EXIT_SOFTWARE, 'shutdown failed', err),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM', 0));
  process.on('SIGINT', () => stop('SIGINT', 0));
  // Whether the running configuration came from a file with content: a reload that finds that file
  // gone or emptied (moved aside to edit, truncated by a config tool mid-write) must not fall back to
  // the defaults, which would drop every protected network at once (fresh-user-5 F2).
  let runningFromContent = loaded.source !== null && loaded.empty !== true;
  process.on('SIGHUP', () => {
    let next;
    try {
      next = loadConfig(flags.config, configGiven);
      if (runningFromContent && (next.source === null || next.empty === true)) {
        throw new ConfigError(
          flags.config,
          `the file is ${next.source === null ? 'gone' : 'empty'}; a reload does not fall back to the defaults (that would drop protected networks and limits): restore the file, or write {} to load the defaults on purpose`,
        );
      }
    } catch (err) {
      logger.error(failureFields(err), `configuration reload refused: ${(err as Error).message}; the running configuration stays`);
      daemon.reloadRefused((err as Error).message);
      return;
    }
    // --watch adds to the file's list on reload as at start: without it, every SIGHUP warned that "watch changed".
    if (flags.watch) {
      try {
        next.config.watch = validateWatch([...next.config.watch, ...flags.watch], '--watch');
      } catch (err) {
        logger.error(failureFields(err), `configuration reload refused: ${(err as Error).message}; the running configuration stays`);
        daemon.reloadRefused((err as Error).message);
        return;
      }
    }
    // --log-level on the command line wins over the file, on reload as at start.
    daemon.reload(next, flags.logLevel ? undefined : (level) => void (logger.level = level));
    runningFromContent = next.source !== null && next.empty !== true;
  });
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled promise rejection (daemon continues)'));
  process.on('uncaughtException', (err) => {
    // State is saved on every change, so a restart by systemd loses nothing.
    logger.fatal({ err }, 'uncaught exception: exiting');
    flush();
    process.exit(EXIT_SOFTWARE);
  });

  try {
    await daemon.start();
  } catch (err) {
    const code = err instanceof TcpresetError && (err.code === 'E_UNAVAILABLE' || err.code === 'E_USAGE') ? EXIT_UNAVAILABLE : EXIT_SOFTWARE;
    const e = err as NodeJS.ErrnoException;
    const unusable = e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'ENOENT' || e.code === 'EPERM';
    await daemon.shutdown('start failed').catch(() => {});
    die(unusable ? EXIT_UNAVAILABLE : code, `cannot start: ${(err as Error).message}`, err);
  }
}

await main();
