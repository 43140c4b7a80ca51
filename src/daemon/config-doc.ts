/**
 * What each key of the daemon's configuration file means: one source for
 * `tcpresetd --help` (its Configuration section) and the manual page
 * tcpreset.conf(5). Typed by DaemonConfig, so a key added to the config
 * without a line here does not compile; test/man.test.ts checks the ranges
 * stated here against what validateConfig() accepts, and that every key is
 * in the manual page. Defaults come from DEFAULT_CONFIG itself.
 */
import type { DaemonConfig } from './config.js';

export interface KeyDoc {
  /** JSON type as the manual states it. */
  type: 'integer' | 'string' | 'array of strings' | 'object';
  /** Inclusive bounds of an integer, as validateConfig() enforces them. */
  range?: [number, number];
  /** Accepted values of a string. */
  choices?: readonly string[];
  /** One line for --help. */
  summary: string;
  /** The manual's paragraph (the summary is not repeated there). */
  text: string;
}

export const CONFIG_DOC: Record<keyof DaemonConfig, KeyDoc> = {
  maxJobs: {
    type: 'integer',
    range: [1, 131072],
    summary: 'jobs at once; more are refused (E_LIMIT)',
    text: 'Jobs that may exist at once. Creating one more is refused with E_LIMIT and the CLI exits 69; extending an existing job is always accepted.',
  },
  maxDurationSec: {
    type: 'integer',
    range: [1, 30 * 86400],
    summary: 'longest accepted -d, seconds',
    text: 'Longest duration a job may be created or extended with, in seconds. A longer -d is refused with E_INVALID (the CLI exits 65) naming this key. 30 days at most: a longer "temporary" block is a firewall rule, not a reset job.',
  },
  protected: {
    type: 'array of strings',
    summary: 'addresses/CIDRs never reset, e.g. ["10.0.0.0/8", "2001:db8::1"]; the sensor\'s own addresses always are',
    text: 'Addresses and networks (CIDR) whose sessions are never reset, e.g. ["10.0.0.0/8", "2001:db8::1"]: a job for such a HOST is refused with E_PROTECTED (the CLI exits 65). The addresses of the sensor itself are always protected, whether listed or not.',
  },
  defaultMode: {
    type: 'string',
    choices: ['l3', 'l2'],
    summary: 'injection mode of jobs that do not name one: l3 | l2',
    text: 'How RSTs are sent for a job created without --l2: "l3" routes them as IP packets out of the reset interface; "l2" writes Ethernet frames to it.',
  },
  xdpAttach: {
    type: 'string',
    choices: ['libxdp', 'exclusive'],
    summary: 'how XDP takes the sniff port: exclusive | libxdp (share it with xdp-filter, bpfman)',
    text: 'How the XDP program takes the hook of a sniff interface. "exclusive" (the default) attaches it alone with a bpf_link: another XDP program on the port (xdp-filter, xdp-loader, bpfman) makes the job fail with E_DATAPLANE, and a killed daemon leaves nothing behind. "libxdp" joins libxdp\'s multi-program dispatcher (Debian libxdp1) as one entry at priority 5, ahead of xdp-filter\'s 10, passing every frame on, so those tools and tcpreset share the port in either order and a stop takes out only tcpreset\'s entry; libxdp keeps the dispatcher in bpffs (/sys/fs/bpf/xdp, or $LIBXDP_BPFFS), so a killed daemon\'s entry stays until the next daemon takes it out. Where libxdp cannot (the library is missing, no bpffs, a program attached without the dispatcher, a kernel that refuses extension programs) the attach is exclusive and a warning says why.',
  },
  clientIdleTimeoutMs: {
    type: 'integer',
    range: [100, 3_600_000],
    summary: 'idle or stalled control clients are dropped after this, ms',
    text: 'A control-socket client that sends nothing, or part of a line and then nothing, for this many milliseconds is disconnected, so stalled clients cannot hold connections.',
  },
  maxClients: {
    type: 'integer',
    range: [1, 65536],
    summary: 'control connections at once',
    text: 'Control-socket connections open at once. At the limit a newcomer takes the place of the longest idle connection; when every connection is working, the newcomer is refused with E_LIMIT.',
  },
  watch: {
    type: 'array of strings',
    summary: 'sniff interfaces kept attached from start, e.g. ["eth1"] (adds to --watch)',
    text: 'Sniff interfaces the XDP program is attached to when the daemon starts and kept attached until it stops, with or without jobs, so that their TCP connections are remembered (flowMemory) before an alert names a host: a job then resets that host\'s sessions at once, idle ones included. An interface that has had a job stays attached too. A watched interface that is missing or cannot be attached is a fault in status and is attached when it appears. Attaching once also spares the port: on many NIC drivers each attach and detach of native XDP reconfigures the rings under whatever else reads the mirror. --watch IF adds to this list.',
  },
  flowMemory: {
    type: 'integer',
    range: [0, 16_777_216],
    summary: 'TCP connections the sniff interfaces remember: a power of two (192 bytes of kernel memory each), or 0 = off',
    text: 'Slots of the XDP program\'s flow memory: the TCP connections seen on the sniff interfaces, with the last segment each end sent, so that a job can reset a host\'s sessions at once, idle ones included. A power of two; 192 bytes of kernel memory each (the default 262144 is 48 MiB, taken when the data plane opens). 2-way set-associative: when a set is full the connection least recently seen is forgotten, closed ones first, and the displacement of an open one is counted (counters.fmEvicted). 0 turns the flow memory off: the XDP program then costs what it did without it, and jobs reset a session only when it next sends.',
  },
  summaryIntervalMs: {
    type: 'integer',
    range: [100, 3_600_000],
    summary: 'period of the per-job activity lines in the log, ms',
    text: 'Period of the per-job activity summary in the log, in milliseconds. Only jobs whose counters moved are logged. Each summary also appends one counters checkpoint of those jobs to the state journal (jobs.json, fdatasync\'d), so a kill -9 loses at most one period of the jobs\' counters.',
  },
  flowLogLimit: {
    type: 'integer',
    range: [0, 1_000_000],
    summary: 'reset flows logged one by one per job per period',
    text: 'Reset flows logged one by one per job in each summary period; the rest are only counted in the summary line.',
  },
  logLevel: {
    type: 'string',
    choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    summary: 'log level; --log-level overrides it',
    text: 'Least severe level logged. The --log-level option of tcpresetd overrides it.',
  },
  eventThreads: {
    type: 'integer',
    range: [1, 8],
    summary: 'threads answering segments, each with its own ring buffer (1..8)',
    text: 'Event threads, each draining a ring buffer of its own. Events are spread over them by flow, so a flood of many flows is answered on several cores; one is enough for alert-driven jobs.',
  },
  eventRtPriority: {
    type: 'integer',
    range: [0, 99],
    summary: 'SCHED_FIFO priority of the threads that answer segments (0 = off, nice only)',
    text: 'Real-time (SCHED_FIFO) priority of the event threads: a woken thread runs at once, ahead of the IDS and every normal task on its CPU. Measured on a loaded 2-vCPU machine (make bench-split): from the wake-up to the thread on a CPU 110-124 µs at nice -10, 11-15 µs at FIFO; earlier, first-RST p90 3.6 ms -> 0.9 ms. A thread that a flood keeps busy (2 ms without sleeping, or more than half of 10 ms) goes back to SCHED_OTHER at eventNice until 10 ms pass without a segment (counted as ring.fifoDemotions in status), so a flood cannot keep ksoftirqd off its CPU. Needs CAP_SYS_NICE or RLIMIT_RTPRIO (the unit sets LimitRTPRIO=10) and a real-time budget in the cgroup of the daemon; where refused, eventNice applies and an info line says why. Not applied when eventThreads is not below the CPU count. 0 turns it off.',
  },
  eventKeepWarmMs: {
    type: 'integer',
    range: [0, 1000],
    summary: 'idle wake-up period that keeps the event path warm, ms (0 = off)',
    text: 'While idle, each event thread wakes this often and runs its per-event code on a synthetic record (nothing is sent), so the first segment after a quiet spell may find code and data in the caches. 0 sleeps until a segment comes. Default 2: ~3 % of a core while the data plane is open; without it a flood-overflow test stopped recovering (not yet understood). Measured on this 2-vCPU machine the effect on the first RST was not consistent (median 518 -> 375 µs under load, 645 -> 1,096 µs when quiet), so it is an opt-in to measure on the sensor itself.',
  },
  eventNice: {
    type: 'integer',
    range: [-20, 19],
    summary: 'nice value of the thread that answers segments (-20..19)',
    text: 'Nice value of the event threads: on a loaded sensor the thread that answers a segment must not queue behind the IDS. Lowering it needs CAP_SYS_NICE or RLIMIT_NICE (the unit sets LimitNICE=); without either, a warning is logged and the default priority stays.',
  },
  tunnelPorts: {
    type: 'object',
    summary: 'extra UDP ports of VXLAN/Geneve mirrors, e.g. {"vxlan": [8472]}; 4789 and 6081 are always read',
    text: 'Extra UDP destination ports whose traffic the XDP program decapsulates: {"vxlan": [ports], "geneve": [ports]}, each list optional, ports 1 to 65535, none in both lists. VXLAN on 4789 and Geneve on 6081 (their IANA ports) are always read; Linux vxlan devices default to 8472. A restart applies a change.',
  },
  parseCheckSec: {
    type: 'integer',
    range: [1, 3600],
    summary: 'window of the "traffic but no parsable TCP" check of sniff interfaces, seconds',
    text: 'A sniff interface that receives at least 100 packets in this many seconds without one TCP segment the XDP program can parse gets a warning and a fault in status and list (e.g. a mirror in a tunnel on a port not listed in tunnelPorts), until a window shows one again.',
  },
  eventSpinUs: {
    type: 'integer',
    range: [0, 100_000],
    summary: 'µs the event thread keeps polling after a segment before it sleeps (0 = sleep at once)',
    text: 'Microseconds an event thread keeps polling its ring buffer after the last matching segment before it sleeps in epoll_wait: the segments that follow a SYN come within a round trip, and each sleep costs a wake-up. 0 sleeps at once (least CPU); at most this much CPU is spent per burst. Only while the thread runs at SCHED_OTHER (eventRtPriority 0, refused, or demoted by a flood): a SCHED_FIFO thread wakes in ~11 µs, and a FIFO thread spinning after every segment held the CPU from a local flood (8k packets/s in CI, 200k without).',
  },
  metricsListen: {
    type: 'string',
    summary: 'Prometheus listener "ADDRESS:PORT" for GET /metrics ("" = off)',
    text: 'Address and port of an HTTP listener serving the Prometheus metrics at /metrics, e.g. "127.0.0.1:9477" or "[::1]:9477"; "" (the default) serves none. Bind it to a management address: the metrics name the hosts being reset. A listener that cannot be opened is logged as an error and shown by status; the daemon runs on.',
  },
  metricsTextfile: {
    type: 'string',
    summary: 'node_exporter textfile-collector file, absolute, *.prom ("" = off)',
    text: 'Path of a file the metrics are written to every metricsIntervalSec seconds, atomically (a temporary file renamed over it), for node_exporter\'s textfile collector, e.g. "/var/lib/node_exporter/textfile_collector/tcpreset.prom". "" (the default) writes none. Under the systemd unit, the directory must be writable by the tcpreset user and listed in ReadWritePaths=.',
  },
  metricsIntervalSec: {
    type: 'integer',
    range: [1, 3600],
    summary: 'period of the metrics textfile rewrite, seconds',
    text: 'How often the metrics textfile is rewritten, in seconds.',
  },
  historyMaxRecords: {
    type: 'integer',
    range: [0, 10_000_000],
    summary: 'job history records kept in STATE_DIR/history.jsonl (0 = none)',
    text: 'Records of job creations (with the uid that asked) and ends (how, with the final counters) kept in STATE_DIR/history.jsonl for `tcpreset history`; about 400 bytes each. Past twice this many the oldest are dropped. 0 keeps no history.',
  },
};
