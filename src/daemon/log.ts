/**
 * The daemon's logger: pino JSON lines on stdout. Under journald (stdout is
 * the stream named by JOURNAL_STREAM) every line is prefixed with its syslog
 * priority `<N>`, which journald strips and stores as PRIORITY, so
 * `journalctl -p warning` filters as expected.
 */
import { fstatSync, writeSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import { JournalStream } from './journal.js';

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
  /** Write out whatever is buffered (before exit). A property: main.ts calls it detached. */
  flush: () => void;
  /** Lines dropped because the reader of stdout fell MAX_LOG_BUFFER_BYTES behind. */
  dropped(): number;
  /** Records the journal socket did not take (written to stdout instead). */
  journalFallbacks(): number;
}

/** Log bytes held while stdout is congested; beyond this lines are dropped (and counted), never waited for. */
export const MAX_LOG_BUFFER_BYTES = 16 * 1024 * 1024;

export interface LoggerOptions {
  level?: LogLevel;
  /** Force or suppress the `<N>` prefix; default: stdoutIsJournal(). */
  journal?: boolean;
  /** File descriptor to write to; default 1 (stdout). */
  fd?: number;
  /**
   * Send each record to journald's native socket (journal.ts) instead of
   * stdout; stdout (with the `<N>` prefix) takes what the socket refuses.
   */
  journalSend?: (datagram: Buffer) => void;
}

export function createLogger(opts: LoggerOptions = {}): DaemonLogger {
  const dest = new LineWriter(opts.fd ?? 1, MAX_LOG_BUFFER_BYTES);
  const journal = opts.journal ?? stdoutIsJournal();
  const prefixed = { write: (line: string) => dest.write(prefixPriority(line)) };
  const native = opts.journalSend ? new JournalStream(opts.journalSend, (line) => prefixed.write(line)) : undefined;
  const stream = native ?? (journal ? prefixed : dest);
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
    dropped: () => dest.dropped,
    journalFallbacks: () => native?.fallbacks ?? 0,
    flush() {
      dest.flushSync();
    },
  };
}

/** How often a congested stdout is tried again. */
const RETRY_MS = 10;
/** How long flush() waits for a congested reader at exit. */
const EXIT_FLUSH_MS = 2000;

/**
 * Log lines to a file descriptor without ever waiting for its reader.
 *
 * Node makes a stdout pipe (or journald's stream socket) non-blocking. The
 * lines of one turn of the event loop are written together with one
 * writeSync when the turn ends (setImmediate), or at once by flush(): one
 * write(2) per line (each waking the reader) was a quarter of a job
 * creation's time with 1,000 creations in flight. A daemon killed with
 * SIGKILL loses at most the lines of its last turn; an exception or a
 * signal exits through flush(). When the reader
 * lags (EAGAIN, or a partial write) the rest is queued, in order, and tried
 * again every RETRY_MS from a timer, up to `maxBytes`; past that, lines are
 * dropped and counted. pino's own sync destination instead slept 100 ms per
 * EAGAIN with the whole thread: a burst of lines (a thousand idle control
 * clients dropped at once) stalled control answers and RSTs for 100-300 ms.
 */
export class LineWriter {
  dropped = 0;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly fd: number,
    private readonly maxBytes: number,
  ) {}

  /** Lines of this turn, written at its end (writeTurn). */
  private turn = '';
  private turnImmediate: NodeJS.Immediate | undefined;

  /** pino's destination interface. */
  write(line: string): boolean {
    this.turn += line;
    this.turnImmediate ??= setImmediate(() => this.writeTurn());
    return true;
  }

  private writeTurn(): void {
    if (this.turnImmediate) clearImmediate(this.turnImmediate);
    this.turnImmediate = undefined;
    const text = this.turn;
    this.turn = '';
    if (text === '') return;
    if (this.queue.length === 0) {
      const n = this.tryWrite(text);
      if (n === Buffer.byteLength(text)) return; // all out: the common case
      this.enqueue(Buffer.from(text).subarray(n));
    } else {
      this.enqueue(Buffer.from(text));
    }
    this.arm();
  }

  /** Bytes written, 0 when the fd would block; other errors drop the line (a log must not kill the daemon). */
  private tryWrite(data: string | Buffer): number {
    try {
      return typeof data === 'string' ? writeSync(this.fd, data) : writeSync(this.fd, data);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return 0;
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      this.dropped += lineCount(buf);
      return buf.length;
    }
  }

  private enqueue(buf: Buffer): void {
    if (buf.length === 0) return;
    if (this.queued + buf.length > this.maxBytes) {
      this.dropped += lineCount(buf); // a turn's lines go together: each of them counts
      return;
    }
    this.queue.push(buf);
    this.queued += buf.length;
  }

  private arm(): void {
    if (this.timer || this.queue.length === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump();
      this.arm();
    }, RETRY_MS);
    this.timer.unref();
  }

  /** Write queued data until the fd would block; true when the queue is empty. */
  private pump(): boolean {
    while (this.queue.length > 0) {
      const head = this.queue[0];
      const n = this.tryWrite(head);
      this.queued -= n;
      if (n < head.length) {
        this.queue[0] = head.subarray(n);
        return false;
      }
      this.queue.shift();
    }
    return true;
  }

  /** Before exit: write everything queued, waiting up to EXIT_FLUSH_MS for a congested reader. */
  flushSync(): void {
    this.writeTurn();
    const deadline = Date.now() + EXIT_FLUSH_MS;
    const nap = new Int32Array(new SharedArrayBuffer(4));
    while (!this.pump() && Date.now() < deadline) Atomics.wait(nap, 0, 0, RETRY_MS);
  }
}

/** Lines in `buf` (a piece without a newline counts as one). */
function lineCount(buf: Buffer): number {
  let n = 0;
  for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) n++;
  return Math.max(1, n);
}
