/**
 * The data plane's public shapes: what the Enforcer takes (TargetSpec,
 * EnforcerOptions), what it reports (TargetInfo, FlowResetInfo, faults,
 * status), and the logger it writes to. Its units import them from here.
 */
import type { Counters } from '../bpf/contract.js';
import type { TunnelPorts } from './tunnels.js';
import type { InjectMode, Family, IfaceRole, LogSink, JobCounters, EpochMs, SniffTraffic } from '../core/model.js';
import type { Host } from '../core/addr.js';

export interface TargetSpec {
  sniffIf: string;
  resetIf: string;
  /**
   * A Host (core/addr.ts), parsed once at the daemon's boundary: trusted,
   * nothing parsed again. Text (callers outside the daemon: tests, the
   * enforcer agent) is parsed strictly here; an IPv4-mapped IPv6 address
   * becomes its IPv4 form.
   */
  host: Host | string;
  /** Remote TCP port; absent or 0 = the whole host. */
  port?: number;
  mode?: InjectMode;
  /** Wall-clock end, epoch ms. */
  expiresAt: number;
  /** Free text for logs, e.g. "ENGID/jobid". */
  label?: string;
  /**
   * Reset the host's remembered connections at once (issue 9). Default true;
   * false for jobs restored at start: the flow memory starts empty with the
   * daemon, and a scan per restored job (~100 ms each over the default
   * table) would hold READY back for minutes with hundreds of jobs.
   */
  sweep?: boolean;
}

export interface TargetInfo {
  id: number;
  sniffIf: string;
  resetIf: string;
  host: string;
  port: number;
  mode: InjectMode;
  expiresAt: number;
  label: string;
  family: Family;
  counters: JobCounters<EpochMs>;
  /** Set while this target's RSTs are refused by delivery.ts: the reason, which names the fix. */
  deliveryFault?: string;
  /** Set once an MPTCP subflow of this target was reset without the keys (mptcp.ts MPTCP_NO_KEYS). */
  mptcpFault?: string;
}

export interface FlowResetInfo {
  targetId: number;
  label: string;
  family: Family;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** From the segment's arrival in XDP to sendmmsg's return for its RSTs (µs). */
  firstLatencyUs: number;
  /** Reset by the sweep at job create/extend/restore, from the flow memory (no segment seen in the job). */
  atCreate?: boolean;
  /** The tunnel the mirror carried the segment in ("vxlan", "erspan2"...); absent for a plain mirror. */
  encap?: string;
  /** An MPTCP subflow: MPTCP_FASTCLOSE_SENT, or MPTCP_NO_KEYS (mptcp.ts); absent for plain TCP. */
  mptcp?: string;
  /** Other open subflows of its MPTCP connection the flow memory held, reset too (with MP_FASTCLOSE); absent when none. */
  mptcpSubflows?: number;
}

/** An interface the data plane needs that is missing or down. */
export interface InterfaceFault {
  ifname: string;
  role: IfaceRole;
  fault: string;
  /** Epoch ms when the fault was first seen. */
  since: number;
  /**
   * 'parse': the interface is up and attached, but its traffic holds no TCP the program can read.
   * 'undeliverable': RSTs to some destinations cannot leave this reset interface (delivery.ts).
   * 'mptcp': MPTCP connections seen on this sniff interface could only have their subflows reset (mptcp.ts).
   */
  kind?: 'parse' | 'undeliverable' | 'mptcp';
  /** Reset interfaces: the fault is about this sender only (undeliverable: delivery.ts reasonMode); absent: every mode. */
  mode?: InjectMode;
}

/** One create-time sweep of a target (issue 9): what the flow memory held and what was sent. */
export interface SweepInfo {
  targetId: number;
  label: string;
  /** Open connections of the target's host (and port) remembered on its sniff interface. */
  flows: number;
  rsts: number;
  probes: number;
  /** Reading the memory, planning and sending (ms). */
  ms: number;
  why: 'create' | 'extend';
  /**
   * Still sending: a sweep of many connections goes a turn of the event loop
   * at a time, and add()/extend() return after the first (flows counts every
   * connection found; rsts and probes what went so far).
   */
  pending?: boolean;
  /** Turns of the event loop the sweep took, when more than one. */
  turns?: number;
  /**
   * Only when a job with a port found nothing: the host's open connections
   * whose port on the host's own side is that port (sessions), and up to 3
   * of their peers' addresses; the create warns (Sweeper.ownPort).
   */
  ownPort?: { sessions: number; peers: string[] };
  /** The create's warning for ownPort, as logged. */
  warning?: string;
}

/**
 * What became of a sweep's connections (Enforcer.verification): known =
 * open connections found, reset = those sent the RST pair and probes,
 * verified = those whose both ends answered their probe with a RST (the
 * answer of a socket that is gone); unverified names the others as
 * "addr:port-addr:port". settled: verified all, or the window is over.
 */
export interface SweepOutcome {
  targetId: number;
  label: string;
  known: number;
  reset: number;
  verified: number;
  unverified: string[];
  settled: boolean;
  /** From the sweep to the last verification, or to settling (ms). */
  ms: number;
}

/**
 * The reaction latency histogram of the event threads since the data plane
 * opened (event-wire.ts LATENCY_BOUNDS_US says what is measured): counts[i]
 * events above boundsUs[i-1] and at most boundsUs[i] µs, not cumulative;
 * counts[boundsUs.length] those above the last bound; sumUs their sum, µs.
 */
export interface LatencyHistogram {
  boundsUs: readonly number[];
  counts: number[];
  sumUs: number;
}

export interface EnforcerStatus {
  /**
   * XDP attachments. jobs: targets on it now; watched: named by --watch /
   * config watch; kept: it stays attached with no job (it had one, or is
   * watched) until the daemon stops.
   */
  attached: { ifname: string; ifindex: number; mode: 'native' | 'generic'; jobs: number; watched: boolean; kept: boolean }[];
  /** Create-time sweeps (issue 9): packets sent from the flow memory, failures, connections found open (known) and verified dead (both ends answered a probe with a RST), since start. */
  sweep: { sent: number; errors: number; known: number; verified: number };
  /**
   * Flows reset since the data plane opened: every (job, connection) counted
   * once, by the event path or a sweep, as each job's counters.flows counts
   * them (past MAX_FLOWS_PER_TARGET per job, no more); never decreases.
   */
  flowsReset: number;
  senders: { ifname: string; mode: InjectMode; sent: number; errors: number; lastError?: string }[];
  /**
   * Per reset interface and mode ever used, since the daemon started (closed senders included; never
   * decreases): the event threads' RSTs sent and send errors, the sweeps' RSTs, probes and send errors.
   */
  /** `refused`: RSTs the route check kept from leaving (no route, no address resolution, no MACs: delivery.ts). */
  resetTotals: { ifname: string; mode: InjectMode; sent: number; errors: number; rsts: number; probes: number; sweepErrors: number; refused: number }[];
  counters: Counters;
  /** perThread: records each event thread handled. */
  /** fifoDemotions: times a SCHED_FIFO event thread went back to SCHED_OTHER because a flood kept it busy (event-worker.ts). */
  ring: { records: number; wakeups: number; stale: number; errors: number; threads: number; perThread: number[]; fifoDemotions: number; selfAddressed: number };
  targets: number;
  faults: InterfaceFault[];
  /** Traffic per attached sniff interface, as the XDP program counted it. */
  sniff: SniffTraffic[];
}

export interface EnforcerOptions {
  objectPath?: string;
  logger?: LogSink;
  maxTargets?: number;
  /** Capacity of the flow memory, connections (default FLOWMEM_DEFAULT). */
  flowMemory?: number;
  /** How often interfaces are checked for going down, away and back (ms). */
  healthIntervalMs?: number;
  /** The event thread busy-polls the ring this long after the last record before sleeping (µs). */
  eventSpinUs?: number;
  /** Nice value of the event thread (null: inherited). Default -10. */
  eventNice?: number | null;
  /** Event threads, each with a ring buffer of its own (1..RING_SLOTS). Default 1. */
  eventThreads?: number;
  /**
   * SCHED_FIFO priority of the event threads (1..99; 0 = off). Applied only
   * while the threads are fewer than the CPUs, so a flood that keeps them
   * busy cannot take every CPU from the control thread.
   */
  eventRtPriority?: number;
  /** Idle wake-up period of the event threads that keeps their code warm (ms); 0 = off. */
  eventKeepWarmMs?: number;
  /** Extra UDP ports read as VXLAN / Geneve. */
  tunnelPorts?: TunnelPorts;
  /** Join libxdp's dispatcher ('libxdp') or take the XDP hook alone ('exclusive', the default). */
  xdpAttach?: 'libxdp' | 'exclusive';
  /** Window of the "no parsable TCP" check on sniff interfaces (ms). Default 10 s. */
  parseWindowMs?: number;
}
