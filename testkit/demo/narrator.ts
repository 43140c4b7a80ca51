/**
 * How the demo talks: numbered phases stamped with the time since the
 * start, indented details, a ✓/✗ per verified step (the exit status is
 * derived from them), and one live line (download progress, countdown) that
 * is redrawn in place on a terminal and printed every so often otherwise,
 * so a log file stays short.
 */

export interface StepResult {
  ok: boolean;
  text: string;
}

export class Narrator {
  readonly steps: StepResult[] = [];
  private readonly t0 = Date.now();
  private readonly tty: boolean;
  private readonly color: boolean;
  private liveShown = false;
  private lastLivePrint = 0;

  constructor(private readonly out: NodeJS.WriteStream = process.stdout) {
    this.tty = out.isTTY === true;
    this.color = this.tty && !process.env.NO_COLOR && process.env.TERM !== 'dumb';
  }

  private paint(code: string, s: string): string {
    return this.color ? `\x1b[${code}m${s}\x1b[0m` : s;
  }

  private write(line: string): void {
    this.clearLive();
    this.out.write(line + '\n');
  }

  elapsed(): string {
    return `${((Date.now() - this.t0) / 1000).toFixed(1)}s`.padStart(5);
  }

  /** A plain line, not indented. */
  line(text: string): void {
    this.write(text);
  }

  title(text: string): void {
    this.write(this.paint('1', text));
  }

  /** A new phase: "[ 4.5s] text". */
  phase(text: string): void {
    this.write('');
    this.write(`${this.paint('2', `[${this.elapsed()}]`)} ${this.paint('1', text)}`);
  }

  /** An indented detail line. */
  info(text: string): void {
    this.write(`        ${text}`);
  }

  /** A command as the operator types it, and its output. */
  command(cmdline: string, output: string): void {
    this.write(`        ${this.paint('36', `$ ${cmdline}`)}`);
    for (const line of output.trimEnd().split('\n')) if (line) this.write(`        ${line}`);
  }

  /** A verified step; `detail` is right of the text (times, codes). */
  check(ok: boolean, text: string, detail = ''): boolean {
    this.steps.push({ ok, text });
    const mark = ok ? this.paint('32', '✓') : this.paint('31', '✗');
    this.write(`      ${mark} ${detail ? `${text.padEnd(46)} ${this.paint('2', detail)}` : text}`);
    return ok;
  }

  /** Redrawn on a terminal; otherwise printed at most every `everyMs`. */
  live(text: string, everyMs = 1000): void {
    if (this.tty) {
      this.out.write(`\r\x1b[K        ${text}`);
      this.liveShown = true;
    } else if (Date.now() - this.lastLivePrint >= everyMs) {
      this.lastLivePrint = Date.now();
      this.out.write(`        ${text}\n`);
    }
  }

  /** Ends the live line, leaving its last text on screen. */
  endLive(): void {
    if (this.liveShown) {
      this.out.write('\n');
      this.liveShown = false;
    }
    this.lastLivePrint = 0;
  }

  private clearLive(): void {
    if (this.liveShown) {
      this.out.write('\r\x1b[K');
      this.liveShown = false;
    }
  }

  get allOk(): boolean {
    return this.steps.length > 0 && this.steps.every((s) => s.ok);
  }

  get failed(): StepResult[] {
    return this.steps.filter((s) => !s.ok);
  }
}

export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '?';
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function fmtBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}
