/**
 * The daemon's configuration file (default /etc/tcpreset/config.json).
 * Absent: defaults. Present but unreadable or invalid: the daemon refuses
 * to start with a message naming the file and the key, because a typo in
 * "protected" silently ignored would let the sensor reset a host it must not.
 * Unknown keys are errors for the same reason.
 */
import { readFileSync } from 'node:fs';
import { ConfigError, ValidationError } from '../core/errors.js';
import { LOG_LEVELS, type LogLevel } from './log.js';
import { parseProtected, type ProtectedEntry } from './protect.js';
import { validateIfname } from '../core/validate.js';
import { findDuplicateKey, formatKeyPath, lineColumn } from '../core/jsonkeys.js';
import type { InjectMode } from '../core/model.js';

export interface DaemonConfig {
  /** Jobs that may exist at once; creating one more is refused with E_LIMIT. */
  maxJobs: number;
  /** Longest accepted duration in seconds. */
  maxDurationSec: number;
  /** Addresses and networks never reset (besides the sensor's own addresses). */
  protected: string[];
  /** Injection mode of jobs that do not name one. */
  defaultMode: InjectMode;
  /**
   * How the XDP program takes the sniff interface's hook: "libxdp" joins
   * libxdp's multi-program dispatcher (xdp-filter, xdp-loader, bpfman share
   * the port; falls back to exclusive with a warning where libxdp cannot),
   * "exclusive" attaches alone with a bpf_link (issue 11).
   */
  xdpAttach: 'libxdp' | 'exclusive';
  /** A control client idle this long (e.g. half a line, then silence) is disconnected. */
  clientIdleTimeoutMs: number;
  /** Control connections open at once; more are closed at accept. */
  maxClients: number;
  /** Period of the per-job activity summary in the log (only jobs whose counters moved). */
  summaryIntervalMs: number;
  /** Reset flows logged one by one per job per summary period; the rest are counted in the summary. */
  flowLogLimit: number;
  /**
   * Slots of the XDP program's flow memory, in connections (a power of two;
   * 2-way set-associative: when a set is full the connection least recently
   * seen is forgotten, closed ones first). Kernel memory: 192 bytes per slot
   * (FLOWMEM_BYTES_PER_ENTRY), taken when the data plane opens: the default
   * 262,144 is 48 MiB. 0 = off.
   */
  flowMemory: number;
  logLevel: LogLevel;
  /**
   * The event thread keeps polling the ring buffer this long (µs) after the
   * last matching segment before it sleeps in epoll_wait: the segments that
   * follow a SYN come within a round trip, and each sleep costs a wake-up.
   * 0 = sleep at once (least CPU). Costs at most this much CPU per burst.
   */
  eventSpinUs: number;
  /**
   * Nice value of the event thread (-20..19): on a loaded sensor the thread
   * that answers a segment must not queue behind the IDS. Lowering it needs
   * CAP_SYS_NICE or RLIMIT_NICE (the unit sets LimitNICE=); without, a warning.
   */
  eventNice: number;
  /**
   * Event threads, each draining a ring buffer of its own (1..8): events
   * are spread over them by flow, so a flood of many flows is answered on
   * several cores. One is enough for alert-driven jobs; see BENCHMARKS.md §4.
   */
  eventThreads: number;
  /**
   * While idle, each event thread wakes this often (ms) and runs its
   * per-event code on a synthetic record (nothing sent), so the first
   * segment after a quiet spell finds it in the caches. 0 = off; default 2 (without it the ring-overflow recovery test failed, cause not yet found):
   * ~3 % of a core at 2 ms, and the measurements disagree (median 518 -> 375
   * us under load, 645 -> 1,096 us on a quiet machine), so it is opt-in.
   */
  eventKeepWarmMs: number;
  /**
   * SCHED_FIFO priority of the event threads (0..99; 0 = off, the default:
   * nice only): a woken thread then runs at once, ahead of the IDS and
   * everything else on its CPU, ksoftirqd included, so under a flood it can
   * starve the CPU's packet processing (measured: a local flood's offered
   * rate fell to ~5k packets/s); an opt-in for sensors with spare cores. Needs CAP_SYS_NICE or RLIMIT_RTPRIO (the unit sets
   * LimitRTPRIO=10); refused, a warning and eventNice. Not applied with as
   * many event threads as CPUs.
   */
  eventRtPriority: number;
  /** Prometheus HTTP listener "ADDRESS:PORT" (GET /metrics); "" = off. */
  metricsListen: string;
  /** node_exporter textfile-collector file (absolute, *.prom), rewritten atomically; "" = off. */
  metricsTextfile: string;
  /** Period of the textfile's rewrite, seconds. */
  metricsIntervalSec: number;
  /** Job history records kept in STATE_DIR/history.jsonl; 0 = no history. */
  historyMaxRecords: number;
  /**
   * Sniff interfaces the XDP program is attached to from start to stop,
   * job or no job, so their TCP connections are remembered before an alert
   * names a host (tcpresetd --watch adds to these).
   */
  watch: string[];
  /** Extra UDP ports whose traffic is read as VXLAN / Geneve (4789 and 6081 always are). */
  tunnelPorts: { vxlan: number[]; geneve: number[] };
  /** Window of the sniff-interface check "traffic but no parsable TCP" (seconds). */
  parseCheckSec: number;
}

export const DEFAULT_CONFIG: Readonly<DaemonConfig> = Object.freeze({
  maxJobs: 1024,
  maxDurationSec: 86400,
  protected: [],
  defaultMode: 'l3',
  xdpAttach: 'exclusive',
  clientIdleTimeoutMs: 10_000,
  maxClients: 1024,
  summaryIntervalMs: 10_000,
  flowLogLimit: 100,
  flowMemory: 262144,
  logLevel: 'info',
  eventSpinUs: 200,
  eventNice: -10,
  eventThreads: 1,
  eventKeepWarmMs: 2,
  eventRtPriority: 10,
  metricsListen: '',
  metricsTextfile: '',
  metricsIntervalSec: 15,
  historyMaxRecords: 100_000,
  watch: [],
  tunnelPorts: Object.freeze({ vxlan: [] as number[], geneve: [] as number[] }),
  parseCheckSec: 10,
}) as Readonly<DaemonConfig>;

export interface LoadedConfig {
  config: DaemonConfig;
  protectedEntries: ProtectedEntry[];
  /** The file read, or null when it was absent and defaults apply. */
  source: string | null;
  /** The file holds nothing but whitespace: defaults apply (as for `{}`). */
  empty?: boolean;
}

function intIn(o: Record<string, unknown>, key: keyof DaemonConfig, min: number, max: number): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ValidationError(key, v, `must be an integer ${min}..${max}`);
  }
  return v;
}

/** "" (off), or "ADDRESS:PORT" with an IPv4 address, "[IPv6]" or "localhost", and a port 1..65535. */
function parseListen(v: unknown): string {
  const reason = 'must be "" (off) or "ADDRESS:PORT", e.g. "127.0.0.1:9477" or "[::1]:9477"';
  if (v === '') return '';
  if (typeof v !== 'string') throw new ValidationError('metricsListen', v, reason);
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]|localhost):(\d{1,5})$/.exec(v);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535 || (m[1].includes('.') && !m[1].startsWith('[') && m[1].split('.').some((o) => Number(o) > 255))) {
    throw new ValidationError('metricsListen', v, reason);
  }
  return v;
}

/** {"vxlan": [ports], "geneve": [ports]}: each key optional, ports 1..65535, none in both lists. */
function tunnelPortsIn(v: unknown): DaemonConfig['tunnelPorts'] {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ValidationError('tunnelPorts', v, 'must be an object like {"vxlan": [8472], "geneve": []}');
  const o = v as Record<string, unknown>;
  const out: DaemonConfig['tunnelPorts'] = { vxlan: [], geneve: [] };
  for (const k of Object.keys(o)) {
    if (k !== 'vxlan' && k !== 'geneve') throw new ValidationError(`tunnelPorts.${k}`, o[k], 'unknown tunnel (known: vxlan, geneve)');
    const ports = o[k];
    if (!Array.isArray(ports)) throw new ValidationError(`tunnelPorts.${k}`, ports, 'must be an array of UDP ports');
    for (const p of ports) {
      if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535) throw new ValidationError(`tunnelPorts.${k}`, p, 'must be a UDP port 1..65535');
    }
    out[k] = [...new Set(ports as number[])];
  }
  const both = out.vxlan.find((p) => out.geneve.includes(p));
  if (both !== undefined) throw new ValidationError('tunnelPorts', both, 'is listed under both vxlan and geneve');
  return out;
}

/** Validate a parsed configuration object (missing keys take defaults). */
export function validateConfig(raw: unknown): { config: DaemonConfig; protectedEntries: ProtectedEntry[] } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ValidationError('config', raw, 'must be a JSON object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    // Own keys only: "__proto__", "toString" and the like are found "in" any object.
    if (!Object.hasOwn(DEFAULT_CONFIG, k) && !k.startsWith('//')) {
      throw new ValidationError(k, o[k], `unknown key (known: ${Object.keys(DEFAULT_CONFIG).join(', ')}; keys starting with "//" are comments)`);
    }
  }
  const c: DaemonConfig = { ...DEFAULT_CONFIG, protected: [...DEFAULT_CONFIG.protected], watch: [...DEFAULT_CONFIG.watch], tunnelPorts: { vxlan: [], geneve: [] } };
  if ('maxJobs' in o) c.maxJobs = intIn(o, 'maxJobs', 1, 131072);
  // 30 days: a longer "temporary" block is a firewall rule, not a reset job.
  if ('maxDurationSec' in o) c.maxDurationSec = intIn(o, 'maxDurationSec', 1, 30 * 86400);
  if ('clientIdleTimeoutMs' in o) c.clientIdleTimeoutMs = intIn(o, 'clientIdleTimeoutMs', 100, 3_600_000);
  if ('maxClients' in o) c.maxClients = intIn(o, 'maxClients', 1, 65536);
  if ('summaryIntervalMs' in o) c.summaryIntervalMs = intIn(o, 'summaryIntervalMs', 100, 3_600_000);
  if ('eventThreads' in o) c.eventThreads = intIn(o, 'eventThreads', 1, 8);
  if ('eventRtPriority' in o) c.eventRtPriority = intIn(o, 'eventRtPriority', 0, 99);
  if ('eventKeepWarmMs' in o) c.eventKeepWarmMs = intIn(o, 'eventKeepWarmMs', 0, 1000);
  if ('metricsListen' in o) c.metricsListen = parseListen(o.metricsListen);
  if ('metricsTextfile' in o) {
    const v = o.metricsTextfile;
    if (typeof v !== 'string' || (v !== '' && !/^\/.*\.prom$/.test(v))) {
      throw new ValidationError('metricsTextfile', v, 'must be "" (off) or an absolute path ending in .prom (node_exporter\'s textfile collector reads *.prom)');
    }
    c.metricsTextfile = v;
  }
  if ('metricsIntervalSec' in o) c.metricsIntervalSec = intIn(o, 'metricsIntervalSec', 1, 3600);
  if ('historyMaxRecords' in o) c.historyMaxRecords = intIn(o, 'historyMaxRecords', 0, 10_000_000);
  if ('eventNice' in o) c.eventNice = intIn(o, 'eventNice', -20, 19);
  if ('eventSpinUs' in o) c.eventSpinUs = intIn(o, 'eventSpinUs', 0, 100_000);
  if ('flowLogLimit' in o) c.flowLogLimit = intIn(o, 'flowLogLimit', 0, 1_000_000);
  // 16 Mi slots = 2.6 GiB of kernel memory: past that, a typo.
  if ('flowMemory' in o) {
    c.flowMemory = intIn(o, 'flowMemory', 0, 16_777_216);
    // The program indexes the table with a mask; 0 turns the memory off.
    if (c.flowMemory !== 0 && (c.flowMemory < 16 || (c.flowMemory & (c.flowMemory - 1)) !== 0)) {
      throw new ValidationError('flowMemory', c.flowMemory, 'must be 0 (off) or a power of two from 16 to 16777216');
    }
  }
  if ('parseCheckSec' in o) c.parseCheckSec = intIn(o, 'parseCheckSec', 1, 3600);
  if ('tunnelPorts' in o) c.tunnelPorts = tunnelPortsIn(o.tunnelPorts);
  if ('defaultMode' in o) {
    if (o.defaultMode !== 'l3' && o.defaultMode !== 'l2') throw new ValidationError('defaultMode', o.defaultMode, 'must be "l3" or "l2"');
    c.defaultMode = o.defaultMode;
  }
  if ('xdpAttach' in o) {
    if (o.xdpAttach !== 'libxdp' && o.xdpAttach !== 'exclusive') throw new ValidationError('xdpAttach', o.xdpAttach, 'must be "libxdp" or "exclusive"');
    c.xdpAttach = o.xdpAttach;
  }
  if ('logLevel' in o) {
    if (typeof o.logLevel !== 'string' || !(LOG_LEVELS as readonly string[]).includes(o.logLevel)) {
      throw new ValidationError('logLevel', o.logLevel, `must be one of ${LOG_LEVELS.join(', ')}`);
    }
    c.logLevel = o.logLevel as LogLevel;
  }
  if ('protected' in o) {
    if (!Array.isArray(o.protected) || o.protected.some((e) => typeof e !== 'string')) {
      throw new ValidationError('protected', o.protected, 'must be an array of address or network strings');
    }
    c.protected = [...(o.protected as string[])];
  }
  if ('watch' in o) c.watch = validateWatch(o.watch);
  const protectedEntries = parseProtected(c.protected);
  return { config: c, protectedEntries };
}

/** A list of interface names to watch (config `watch`, or the --watch flags); duplicates dropped. */
export function validateWatch(v: unknown, field = 'watch'): string[] {
  if (!Array.isArray(v)) throw new ValidationError(field, v, 'must be an array of interface names');
  return [...new Set(v.map((name, i) => validateIfname(name, `${field}[${i}]`)))];
}

/**
 * Read and validate the configuration. `required` (the path was given
 * explicitly) makes an absent file an error too.
 */
export function loadConfig(path: string, required = false): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !required) {
      return { ...validateConfig({}), source: null };
    }
    throw new ConfigError(path, `cannot read: ${(err as Error).message}`, { cause: err });
  }
  // An empty file is what `touch` or a config-management tool's placeholder leaves: defaults, as for {}.
  if (text.trim() === '') return { ...validateConfig({}), source: path, empty: true };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    // V8 quotes the text around the error, newlines and all: one line.
    const msg = (err as Error).message.replace(/\s*\n\s*/g, ' ');
    const pos = /at position (\d+)/.exec(msg);
    const where = pos && !/\(line \d+/.test(msg) ? ` (${lineColumn(text, Number(pos[1]))})` : '';
    throw new ConfigError(path, `not valid JSON: ${msg}${where}`, { cause: err });
  }
  // JSON.parse keeps the last of two equal keys: a second "protected" would drop the first list
  // without a word. Comment keys ("//...") may repeat: a second comment loses nothing.
  const dup = findDuplicateKey(text, (k) => k.startsWith('//'));
  if (dup) {
    const key = formatKeyPath(dup.path);
    throw new ConfigError(path, `duplicate key ${key} at ${lineColumn(text, dup.offset)} (first at ${lineColumn(text, dup.firstOffset)}): JSON would keep only the last value; write the key once`, { key });
  }
  try {
    return { ...validateConfig(raw), source: path };
  } catch (err) {
    if (err instanceof ValidationError) throw new ConfigError(path, err.message, { cause: err, key: err.field, value: err.value });
    throw new ConfigError(path, (err as Error).message, { cause: err });
  }
}
