/**
 * The daemon's logger: pino JSON lines on stdout. Under journald (stdout is
 * the stream named by JOURNAL_STREAM) every line is prefixed with its syslog
 * priority `<N>`, which journald strips and stores as PRIORITY, so
 * `journalctl -p warning` filters as expected.
 */
import { fstatSync } from 'node:fs';
import pino, { type Logger } from 'pino';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** pino numeric level -> syslog priority (sd-daemon(3) prefixes). */
export function syslogPriority(pinoLevel: number): number {
  if (pinoLevel >= 60) return 2; // fatal -> crit
  if (pinoLevel >= 50) return 3; // error -> err
  if (pinoLevel >= 40) return 4; // warn -> warning
  if (pinoLevel >= 30) return 6; // info -> info
  return 7; // debug, trace -> debug
}

/** pino always writes the level first: `{"level":30,...`. */
const LEVEL_RE = /^\{"level":(\d+)/;

/** Prefix a pino line with `<N>`; lines without a level (never from pino) get info. */
export function prefixPriority(line: string): string {
  const m = LEVEL_RE.exec(line);
  return `<${syslogPriority(m ? Number(m[1]) : 30)}>${line}`;
}

/**
 * True when stdout is the journal stream systemd connected: JOURNAL_STREAM
 * holds "device:inode" of that stream, and a child whose stdout was
 * redirected elsewhere inherits the variable, so it is compared, not just
 * tested for presence.
 */
export function stdoutIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const js = env.JOURNAL_STREAM;
  if (!js) return false;
  const [dev, ino] = js.split(':');
  try {
    const st = fstatSync(1, { bigint: true });
    return String(st.dev) === dev && String(st.ino) === ino;
  } catch {
    return true;
  }
}

export interface DaemonLogger {
  logger: Logger;
  /** Write out whatever is buffered (before exit). */
  flush(): void;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Force or suppress the `<N>` prefix; default: stdoutIsJournal(). */
  journal?: boolean;
  /** File descriptor to write to; default 1 (stdout). */
  fd?: number;
}

export function createLogger(opts: LoggerOptions = {}): DaemonLogger {
  // Synchronous writes: a daemon that is killed or crashes must not lose the
  // lines explaining why; log volume is bounded (flows are rate-limited).
  const dest = pino.destination({ fd: opts.fd ?? 1, sync: true });
  const journal = opts.journal ?? stdoutIsJournal();
  const stream = journal ? { write: (line: string) => dest.write(prefixPriority(line)) } : dest;
  const logger = pino(
    {
      level: opts.level ?? 'info',
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    stream,
  );
  return {
    logger,
    flush() {
      try {
        dest.flushSync();
      } catch {
        // Nothing buffered or stdout gone: nothing more to do.
      }
    },
  };
}
