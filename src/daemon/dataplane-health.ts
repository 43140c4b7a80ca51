/**
 * Whether the daemon's data plane (BPF object, XDP attach, sender sockets)
 * can run, and how its failures are reported.
 *
 * A data plane that cannot load is the daemon's problem, never the
 * caller's: under a sandbox that refuses bpf() every create used to fail
 * with E_PERM (the CLI's exit 77 "permission denied", which tells the
 * analyst that *they* lack a permission), logged at info with libbpf's own
 * lines on stderr (journald stores those at info too), so nothing showed in
 * `journalctl -p warning`. Here such failures become E_DATAPLANE (exit 69,
 * EX_UNAVAILABLE), are logged at error with libbpf's lines attached, are
 * counted, and show in `status` until the next success.
 */
import { NativeError, TcpresetError } from '../core/errors.js';
import type { TargetBackend } from './jobs.js';
import type { LogSink } from '../core/model.js';

/** The same failure is logged at error at most this often (restored jobs retry every few seconds). */
const RELOG_MS = 60_000;
/** libbpf lines kept per failed step. */
const LIBBPF_KEEP = 20;

export type DataPlaneStep = 'load' | 'enforce';

/** As shown by `status` (dataPlaneFault). */
export interface DataPlaneFaultView {
  step: DataPlaneStep;
  message: string;
  /** ISO time of the first failure of this streak. */
  since: string;
  /** Failures in this streak. */
  failures: number;
  /** libbpf's lines of the last failure. */
  libbpf: string[];
}

interface Fault {
  step: DataPlaneStep;
  message: string;
  since: number;
  failures: number;
  libbpf: string[];
  loggedAt: number;
}

export class DataPlaneHealth {
  /** Failures since start (all steps): a counter for status and metrics. */
  failures = 0;
  private fault: Fault | null = null;
  /** libbpf lines of the step running now; null outside a guarded step. */
  private capture: string[] | null = null;

  constructor(private readonly log: LogSink) {}

  /**
   * libbpf's print hook. Inside a guarded step the lines are kept and logged
   * with its outcome (a failure's error record carries them; a success logs
   * its warnings); outside, a warning is logged at once.
   */
  libbpfLine(level: 'warn' | 'info' | 'debug', line: string): void {
    if (this.capture) {
      if (this.capture.length < LIBBPF_KEEP) this.capture.push(line);
    } else if (level === 'warn') {
      this.log.warn({ libbpf: line }, 'libbpf warning');
    } else {
      this.log.debug({ libbpf: line }, 'libbpf');
    }
  }

  /**
   * Run `fn` (opening the data plane: 'load'; adding or extending a target:
   * 'enforce'). Throws TcpresetError E_DATAPLANE "the daemon cannot load its
   * BPF program: <cause>" (load: any failure) or "the daemon cannot enforce
   * the job: <cause>" (enforce: native failures; a value or interface
   * problem, e.g. E_IFACE or E_LIMIT, passes through unchanged).
   */
  guard<T>(step: DataPlaneStep, fn: () => T): T {
    const outer = this.capture;
    this.capture = [];
    let lines: string[] = [];
    try {
      const r = fn();
      lines = this.capture;
      for (const l of lines) this.log.warn({ libbpf: l }, 'libbpf warning');
      if (this.fault?.step === step) {
        this.log.info({ step, failures: this.fault.failures, since: new Date(this.fault.since).toISOString() }, 'data plane works again');
        this.fault = null;
      }
      return r;
    } catch (err) {
      lines = this.capture ?? [];
      if (step === 'enforce' && !(err instanceof NativeError)) throw err;
      throw this.failed(step, err, lines);
    } finally {
      this.capture = outer;
    }
  }

  /**
   * The start-up check found bpf() refused (`err`, e.g. EPERM when started
   * as an unprivileged user): the 'load' fault of a failed create, set
   * before any job so status shows it and the log says it at start; the
   * daemon still serves. The first load that works clears it (guard()).
   */
  refusedAtStart(err: unknown): void {
    this.failed('load', err, []);
  }

  /** A backend whose opening and target changes go through guard(). */
  backend(open: () => TargetBackend): TargetBackend {
    const b = this.guard('load', open);
    return {
      add: (spec) => this.guard('enforce', () => b.add(spec)),
      extend: (id, at) => this.guard('enforce', () => b.extend(id, at)),
      remove: (id) => b.remove(id),
      get: (id) => b.get(id),
    };
  }

  /** The current fault, or null when the last attempt of each step worked. */
  view(): DataPlaneFaultView | null {
    const f = this.fault;
    return f ? { step: f.step, message: f.message, since: new Date(f.since).toISOString(), failures: f.failures, libbpf: [...f.libbpf] } : null;
  }

  get faulty(): boolean {
    return this.fault !== null;
  }

  private failed(step: DataPlaneStep, err: unknown, lines: string[]): TcpresetError {
    const cause = err instanceof Error ? err.message : String(err);
    const message = step === 'load' ? `the daemon cannot load its BPF program: ${cause}` : `the daemon cannot enforce the job: ${cause}`;
    const now = Date.now();
    this.failures++;
    const same = this.fault !== null && this.fault.step === step && this.fault.message === message;
    if (same) {
      this.fault!.failures++;
      this.fault!.libbpf = lines;
    } else {
      this.fault = { step, message, since: now, failures: 1, libbpf: lines, loggedAt: -Infinity };
    }
    const f = this.fault!;
    const fields = {
      step, cause, failures: f.failures, ...(lines.length ? { libbpf: lines } : {}),
      ...(err instanceof TcpresetError ? { code: err.code, details: err.details } : { err }),
    };
    if (now - f.loggedAt >= RELOG_MS) {
      f.loggedAt = now;
      this.log.error(fields, message);
    } else {
      this.log.debug(fields, message);
    }
    return new TcpresetError('E_DATAPLANE', `${message} (a problem of the daemon, not of this request: see the daemon's log)`, {
      cause: err,
      details: { step, ...(err instanceof TcpresetError ? { causeCode: err.code, causeDetails: err.details } : {}) },
    });
  }
}
