/**
 * The terms every layer shares: the CLI, the control protocol, the daemon,
 * the data plane and the packet code all speak of address families,
 * injection modes, interface roles, a job's identity and its counters, a
 * sniff interface's traffic, and write to a logger. Each is defined once,
 * here; no layer re-exports another's.
 *
 * Types only (erased at run time), so any module may import it, the light
 * CLI included.
 */

/** IP version of an address: 4 or 6, as the BPF contract's FAMILY_V4/FAMILY_V6 (bpf/tcpreset.h). */
export type Family = 4 | 6;

/**
 * How RSTs leave the reset interface: l3, routed IP packets on a raw IP
 * socket (the kernel picks the next hop); l2, whole Ethernet frames on a
 * packet socket (src/net/sender.ts).
 */
export type InjectMode = 'l3' | 'l2';

/** What an interface is to a job: where the mirror is watched (sniff) or where RSTs leave (reset). */
export type IfaceRole = 'sniff' | 'reset';

/** Wall-clock time as milliseconds since the epoch (Date.now()). */
export type EpochMs = number;
/** Wall-clock time as ISO 8601 text in UTC (Date.prototype.toISOString()), as the control protocol carries it. */
export type IsoTime = string;

/**
 * What a job's enforcement did. One shape in two time representations:
 * JobCounters<EpochMs> inside the daemon (the data plane's targets, the job
 * manager, the state file), JobCounters<IsoTime> on the wire (the control
 * protocol's Job).
 */
export interface JobCounters<Time extends EpochMs | IsoTime> {
  /** TCP segments of the job's host (and port) the XDP program matched. */
  matched: number;
  /** RSTs sent, both directions counted. */
  rstsSent: number;
  /** Distinct connections reset. */
  flows: number;
  firstHitAt: Time | null;
  lastHitAt: Time | null;
  /** RSTs that could not leave the reset interface (no route through it, failed neighbour, l2 without MACs); live, not saved across restarts; absent when none. */
  undeliverable?: number;
  /** Open connections the create-time sweeps found in the flow memory (each was reset at once, and counts in flows too); absent when none. */
  known?: number;
  /** Of those, verified dead: both ends answered a probe with a RST (src/dataplane/flow-sweep.ts); absent when none. */
  verified?: number;
  /** MPTCP subflows reset without their connection's keys (src/dataplane/mptcp.ts MPTCP_NO_KEYS): the connection outlives them; absent when none. */
  mptcpNoKeys?: number;
}

/**
 * What names a job: a second create with the same key extends it, and a
 * cancel by ENGID finds it by this key. The reset interface and the mode
 * are not part of it (a re-create may move them).
 */
export interface JobKey {
  /** The detection engine's label, 1-64 printable characters (src/core/validate.ts). */
  engid: string;
  sniffIf: string;
  /** Canonical text (dotted quad / RFC 5952; IPv4-mapped IPv6 as IPv4). */
  host: string;
  /** Remote TCP port; null: every port of the host. */
  port: number | null;
}

/** A job's identity and placement: its id (made by the daemon), its key, where its RSTs leave and how. */
export interface JobFields extends JobKey {
  id: string;
  resetIf: string;
  mode: InjectMode;
}

/**
 * Traffic of one attached sniff interface as the XDP program counted it
 * (the if_counters map of bpf/encap.h, this interface's slot): what the data
 * plane's parse watch reports (dataplane/tunnels.ts) and what `status`
 * carries on the wire (control/protocol.ts StatusResponse.sniff).
 */
export interface SniffTraffic {
  ifname: string;
  ifindex: number;
  /** Totals since the program was loaded: packets seen, TCP segments parsed, frames decapsulated (tunnelled mirrors). */
  packets: number;
  tcp: number;
  decap: number;
  /** Windows that ended with traffic but no parsable TCP segment. */
  unparsableWindows: number;
  /** Another attached interface shares this one's counter slot: the parse check cannot run on it. */
  sharedSlot?: boolean;
}

/**
 * The structured logger every layer writes to: pino's call shape (fields
 * first, then the message), so the daemon passes its pino logger and tests
 * a memory sink.
 */
export interface LogSink {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}
