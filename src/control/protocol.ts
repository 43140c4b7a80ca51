/**
 * The control protocol between `tcpreset` and `tcpresetd`: one JSON object
 * per '\n'-terminated UTF-8 line on a Unix stream socket, one response line
 * per request line (docs/design.md, "Control protocol"). Pure: no I/O, imports only errors and
 * validate, jsonkeys (and the shared types of core/model.ts), so both the light CLI and the daemon use it.
 *
 * Error codes of parse failures:
 *  - E_PROTOCOL: the line is not a protocol message at all (too long, not
 *    JSON, not an object, wrong or missing "v").
 *  - E_USAGE: a well-formed message asks for something malformed (unknown
 *    op, missing, unknown or repeated field, a field of the wrong JSON type).
 *  - E_INVALID: a field has the right type but a bad value (core/validate.ts).
 * Every message names the field.
 */
import { TcpresetError, UsageError, ValidationError, showValue, type ErrorCode, type ErrorDetails } from '../core/errors.js';
import { validateDuration, validateEngid, validateHost, validateIfname, validatePort } from '../core/validate.js';
import type { IfaceRole, InjectMode, IsoTime, JobCounters, JobFields, SniffTraffic } from '../core/model.js';
import type { Host } from '../core/addr.js';
import { findDuplicateKey, formatKeyPath } from '../core/jsonkeys.js';

export const PROTOCOL_VERSION = 1 as const;
/** Longest request line, '\n' excluded. */
export const MAX_LINE_BYTES = 65536;
/**
 * Longest response line a client accepts: a list of many jobs outgrows
 * 64 KiB (a job is ~400 bytes), and the client trusts its daemon.
 */
export const MAX_RESPONSE_LINE_BYTES = 16 * 1024 * 1024;
export const DEFAULT_SOCKET_PATH = '/run/tcpreset.sock';

export const OPS = ['create', 'cancel', 'list', 'status', 'version', 'history', 'metrics'] as const;
export type Op = (typeof OPS)[number];
export type RequestId = string | number;

/** Job ids are made by the daemon; this is the syntax it promises. */
export const JOB_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** Longest request id (string form) echoed back. */
export const MAX_REQUEST_ID_CHARS = 128;

interface Base {
  v: typeof PROTOCOL_VERSION;
  id?: RequestId;
}

/** A create as a client sends it (the wire); parseRequest returns it as a CreateRequest. */
export interface CreateArgs {
  engid: string;
  sniffIf: string;
  resetIf: string;
  /** IPv4 or IPv6 text; parseRequest parses it once into a Host. */
  host: string;
  port?: number;
  /** Seconds. parseRequest checks syntax (positive integer); the daemon checks its maximum. */
  duration: number;
  mode?: InjectMode;
  /**
   * Seconds (> 0, at most MAX_WAIT_S): answer once every connection the
   * create-time sweep reset is verified dead, or after this long.
   */
  wait?: number;
}
/** Longest create wait (s): the daemon stops watching a sweep after 5 s anyway. */
export const MAX_WAIT_S = 60;
/** A create as parseRequest returns it: every field checked, the host parsed (canonical text, family, bytes). */
export interface CreateRequest extends Base, Omit<CreateArgs, 'host'> {
  op: 'create';
  host: Host;
}
export interface CancelByIdRequest extends Base {
  op: 'cancel';
  jobId: string;
}
export interface CancelByKeyRequest extends Base {
  op: 'cancel';
  engid: string;
  sniffIf: string;
  /** Parsed by parseRequest (as CreateRequest's). */
  host: Host;
  port?: number;
}
export type CancelRequest = CancelByIdRequest | CancelByKeyRequest;
export interface ListRequest extends Base {
  op: 'list';
}
export interface StatusRequest extends Base {
  op: 'status';
}
export interface VersionRequest extends Base {
  op: 'version';
}
/** Ended and created jobs, oldest first, from `since` (epoch ms) on. */
export interface HistoryRequest extends Base {
  op: 'history';
  since?: number;
}
/** The Prometheus text exposition, as GET /metrics would serve it. */
export interface MetricsRequest extends Base {
  op: 'metrics';
}
export type Request = CreateRequest | CancelRequest | ListRequest | StatusRequest | VersionRequest | HistoryRequest | MetricsRequest;

/** What a client sends: "v" is added by the client; the host is text (the daemon parses it). */
export type RequestBody =
  | (Omit<CreateRequest, 'v' | 'host'> & { host: string })
  | (Omit<CancelByIdRequest, 'v'>)
  | (Omit<CancelByKeyRequest, 'v' | 'host'> & { host: string })
  | (Omit<ListRequest, 'v'>)
  | (Omit<StatusRequest, 'v'>)
  | (Omit<VersionRequest, 'v'>)
  | (Omit<HistoryRequest, 'v'>)
  | (Omit<MetricsRequest, 'v'>);

export interface Job extends JobFields {
  createdAt: string;
  expiresAt: string;
  remainingMs: number;
  counters: JobCounters<IsoTime>;
  /** Set while the job cannot be enforced (e.g. its target could not be re-added after a restart). */
  fault?: string;
}

export interface CreateResult {
  /** kept: the job existed and already ended later than asked (its end is unchanged). */
  action: 'created' | 'extended' | 'kept';
  /** The re-create moved the job to another reset interface or mode: what it was before. */
  switched?: { resetIf: string; mode: InjectMode };
  job: Job;
  /**
   * What the flow memory held for the job's host (and port) when it was
   * created or extended: open connections found, and reset at once (RST pair
   * and probes sent). Absent when no sweep ran (interface away).
   */
  flows?: {
    known: number;
    reset: number;
    /** With wait: connections whose both ends answered a probe with a RST (verified dead). */
    verified?: number;
    /** With wait: the connections not verified when the answer was sent, "addr:port-addr:port". */
    unverified?: string[];
  };
  /** Accepted and enforced, but something is wrong (e.g. the state file could not be saved). */
  warnings?: string[];
}
export interface CancelResult {
  job: Job;
  warnings?: string[];
}
export interface ListResult {
  jobs: Job[];
}
export interface InterfaceStatus {
  ifname: string;
  role: IfaceRole;
  mode: string;
  up: boolean;
  fault?: string;
  /** ISO time the data plane first saw the fault. */
  since?: string;
  /** Sniff interfaces: attached from start by --watch / config watch. */
  watched?: boolean;
  /** Sniff interfaces: jobs on it now (it stays attached with none once it had one). */
  jobs?: number;
}
/** Per reset interface and mode ever used since the daemon started (closed senders included): never decreasing. */
export interface ResetTotals {
  ifname: string;
  mode: InjectMode;
  /** The event threads' packets sent and send failures. */
  sent: number;
  errors: number;
  /** The create-time sweeps' RSTs, out-of-window ACK probes and send failures. */
  rsts: number;
  probes: number;
  sweepErrors: number;
  /**
   * RSTs not sent because the reset interface cannot deliver them: no route
   * (l3), a next hop that fails address resolution, or no MACs (l2 of a
   * bare-IP mirror); delivery.ts. The jobs' UNDELIVERABLE in list, summed,
   * and kept after they end.
   */
  refused: number;
}
/** The event threads' ring buffers; only records, wakeups and stale before the data plane opens. */
export interface RingStatus {
  /** Records read, wakeups of the threads, records about targets already gone. */
  records: number;
  wakeups: number;
  stale: number;
  /** Records that failed to be handled. */
  errors?: number;
  /** Event threads, and records each handled. */
  threads?: number;
  perThread?: number[];
  /** Times a SCHED_FIFO event thread went back to SCHED_OTHER because a flood kept it busy. */
  fifoDemotions?: number;
  /**
   * l2 RSTs not built because they would have gone to the reset interface's
   * own MAC: answers to the sensor's own frames (its probes, spoofed from one
   * end) seen again through the mirror. Not a failure: the end gets its RSTs
   * from its own segments.
   */
  selfAddressed?: number;
}
/** The saved jobs, STATE_DIR/jobs.json (daemon/state.ts). */
export interface StateStatus {
  path: string;
  /** Records appended since the last snapshot; jobs in the last snapshot; snapshots written. */
  journalRecords: number;
  snapshotJobs: number;
  compactions: number;
  /** Batches appended (one write and one fdatasync each). */
  appends: number;
  /** Failed writes since start. */
  saveFailures: number;
  /** Torn or corrupt records dropped from the file's tail at start. */
  droppedAtLoad: number;
  /** Set while the jobs on disk are behind the jobs in force. */
  fault?: string;
}
/** The metrics exporter, when configured: its listener and textfile, and the last failure of either (error). */
export interface MetricsStatus {
  listen?: string;
  listening?: boolean;
  scrapes?: number;
  textfile?: string;
  writes?: number;
  textfileFailures?: number;
  error?: string;
}
/**
 * The configuration file and its reloads (SIGHUP, systemctl reload): the
 * daemon's main.ts counts them and keeps the last refusal.
 */
export interface ConfigStatus {
  /** The file the daemon reads (--config; absent: defaults apply). */
  file: string;
  /** Reloads since start: applied (the file validated) and refused (it did not; the running configuration stayed). */
  reloads: { applied: number; refused: number };
  /**
   * Set while the running configuration is older than a file a reload
   * refused: why (the text of the "configuration reload refused" log line),
   * the file, and when (ISO) the last refusal was. The next applied reload
   * clears it.
   */
  fault?: { message: string; file: string; at: string };
}
/** The job history (daemon/history.ts). */
export interface HistoryStatus {
  path: string;
  /** Records waiting in memory for the disk; failed writes and records lost, since start. */
  unwritten: number;
  writeFailures: number;
  lost: number;
  /** Set while records wait: why, and since when. */
  fault?: string;
}

/**
 * The answer to `status` (daemon/status.ts builds it). Counts are since the
 * daemon started unless said otherwise; times are ISO 8601 UTC strings.
 */
export interface StatusResult {
  version: string;
  pid: number;
  uptimeMs: number;
  interfaces: InterfaceStatus[];
  /** The data plane's counters (bpf/contract.ts COUNTER_NAMES), all 0 before it opens. */
  counters: Record<string, number>;
  ring: RingStatus;
  /** The RST senders open now (a reset interface in one mode): packets sent and failures since it opened, the last failure's message. */
  senders: { ifname: string; mode: InjectMode; sent: number; errors: number; lastError?: string }[];
  /** The metrics' RST counters. */
  resetTotals: ResetTotals[];
  /** Create-time sweeps: packets sent from the flow memory, failures, connections found open (known) and verified dead. */
  sweep: { sent: number; errors: number; known: number; verified: number };
  /** Flows reset since start, by the event path and the sweeps (each job's connections counted once, as its counters.flows). */
  flowsReset: number;
  /** Per attached sniff interface. */
  sniff: SniffTraffic[];
  jobs: number;
  /** Targets the data plane holds (one per enforced job). */
  targets: number;
  /** Jobs not enforced now: their own fault, or a data-plane fault of an interface they need (as `list` marks them). */
  faultyJobs: number;
  /** open | idle (not needed yet) | fault (it could not be loaded; see dataPlaneFault). */
  dataPlane: 'open' | 'idle' | 'fault';
  /** The data plane's last failure, while it lasts (the daemon's problem, not a caller's). */
  dataPlaneFault?: { step: 'load' | 'enforce'; message: string; since: string; failures: number; libbpf: string[] };
  /** Failed loads of the data plane and failed target changes (E_DATAPLANE), since start. */
  dataPlaneFailures: number;
  /** The daemon's process.memoryUsage(), MiB with one decimal. */
  memory: { rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number };
  state: StateStatus;
  config: ConfigStatus;
  /** Absent when historyMaxRecords is 0. */
  history?: HistoryStatus;
  /** Control connections open now. */
  connections: number;
  metrics?: MetricsStatus;
  /** Control requests received (lines, oversize ones included). */
  requests: number;
}
export interface VersionResult {
  version: string;
}
export interface ResultByOp {
  create: CreateResult;
  cancel: CancelResult;
  list: ListResult;
  status: StatusResult;
  version: VersionResult;
}

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: ErrorDetails;
}
export interface OkResponse<R = unknown> {
  v: typeof PROTOCOL_VERSION;
  id?: RequestId;
  ok: true;
  result: R;
}
export interface ErrorResponse {
  v: typeof PROTOCOL_VERSION;
  id?: RequestId;
  ok: false;
  error: ErrorBody;
}
export type Response<R = unknown> = OkResponse<R> | ErrorResponse;

// ---------------------------------------------------------------- parsing

const FIELDS: Record<string, readonly string[]> = {
  create: ['engid', 'sniffIf', 'resetIf', 'host', 'port', 'duration', 'mode', 'wait'],
  cancelById: ['jobId'],
  cancelByKey: ['engid', 'sniffIf', 'host', 'port'],
  list: [],
  status: [],
  version: [],
  history: ['since'],
  metrics: [],
};
const ENVELOPE = ['v', 'id', 'op'];

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function protocolError(message: string, details?: ErrorDetails): TcpresetError {
  return new TcpresetError('E_PROTOCOL', message, details ? { details } : {});
}

/**
 * A request with a key written twice in one object: E_USAGE, details
 * {field: the key path, column}. JSON.parse keeps the last value, so
 * {"host":"A",...,"host":"B"} would act on B while a log or proxy that reads
 * the first one shows A. Requests only (the client trusts its daemon), and
 * kept out of parseJsonObject so the CLI bundle, which parses responses only,
 * does not carry the scanner.
 */
function rejectDuplicateKeys(text: string, what: string): void {
  const dup = findDuplicateKey(text);
  if (dup) {
    const field = formatKeyPath(dup.path);
    throw new UsageError(`field "${field}" appears twice in the ${what} (columns ${dup.firstOffset + 1} and ${dup.offset + 1}); send each field once`, {
      details: { field, column: dup.offset + 1 },
    });
  }
}

/** `checkText` runs on the line's text once JSON.parse has accepted it, before any field is looked at. */
function parseJsonObject(line: string, what: string, limit: number, checkText?: (text: string, what: string) => void): Record<string, unknown> {
  if (typeof line !== 'string') throw protocolError(`${what} is not text`);
  const text = line.endsWith('\n') ? line.slice(0, -1) : line;
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > limit) throw protocolError(`${what} is ${bytes} bytes; the limit is ${limit}`);
  if (text.includes('\n')) throw protocolError(`${what} holds more than one line`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new TcpresetError('E_PROTOCOL', `${what} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  // Before any field check: {"v":2,"v":1} is refused for the duplicate, not for version 2.
  checkText?.(text, what);
  if (!isPlainObject(parsed)) throw protocolError(`${what} must be a JSON object`);
  if (!('v' in parsed)) throw protocolError(`${what} lacks the protocol version field "v"`);
  if (parsed.v !== PROTOCOL_VERSION) {
    throw protocolError(`${what} has protocol version ${showValue(parsed.v)}; this side speaks ${PROTOCOL_VERSION}`, {
      field: 'v',
      value: parsed.v,
    });
  }
  return parsed;
}

function checkId(id: unknown): RequestId | undefined {
  if (id === undefined) return undefined;
  if (typeof id === 'string') {
    if (id.length > MAX_REQUEST_ID_CHARS) throw new UsageError(`field "id" is longer than ${MAX_REQUEST_ID_CHARS} characters`, { details: { field: 'id' } });
    return id;
  }
  if (typeof id === 'number' && Number.isFinite(id)) return id;
  throw new UsageError('field "id" must be a string or a finite number', { details: { field: 'id' } });
}

/** The request id in `line`, if it has a usable one: lets the server echo it on parse errors. */
export function extractId(line: string): RequestId | undefined {
  try {
    const o: unknown = JSON.parse(line);
    if (!isPlainObject(o)) return undefined;
    return checkId(o.id);
  } catch {
    return undefined;
  }
}

function requireType(o: Record<string, unknown>, field: string, type: 'string' | 'number', op: string): void {
  if (!(field in o) || o[field] === undefined) {
    throw new UsageError(`${op} request lacks the required field "${field}"`, { details: { field } });
  }
  if (typeof o[field] !== type) {
    throw new UsageError(`field "${field}" must be a ${type}, not ${jsonType(o[field])}`, { details: { field, value: o[field] } });
  }
}

function jsonType(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  if (typeof x === 'object') return 'an object';
  return `a ${typeof x}`;
}

function rejectUnknown(o: Record<string, unknown>, allowed: readonly string[], op: string): void {
  for (const k of Object.keys(o)) {
    if (!ENVELOPE.includes(k) && !allowed.includes(k)) {
      throw new UsageError(`unknown field "${k}" in a ${op} request`, { details: { field: k } });
    }
  }
}

/** port: absent, null (whole host) or an integer 1..65535. */
function optionalPort(o: Record<string, unknown>): number | undefined {
  const p = o.port;
  if (p === undefined || p === null) return undefined;
  if (typeof p !== 'number') throw new UsageError(`field "port" must be a number, not ${jsonType(p)}`, { details: { field: 'port', value: p } });
  return validatePort(p, 'port');
}

/**
 * Parse and strictly check one request line (with or without its '\n').
 * Returns a normalized request: host parsed once (a Host: canonical text,
 * family, bytes; the layers behind trust it), port omitted when absent or null. Duration is checked for syntax only (positive integer);
 * the daemon applies its configured maximum.
 */
export function parseRequest(line: string): Request {
  const o = parseJsonObject(line, 'request', MAX_LINE_BYTES, rejectDuplicateKeys);
  const id = checkId(o.id);
  if (!('op' in o)) throw new UsageError('request lacks the field "op"', { details: { field: 'op' } });
  if (typeof o.op !== 'string' || !(OPS as readonly string[]).includes(o.op)) {
    throw new UsageError(`unknown op ${showValue(o.op)}; expected one of ${OPS.join(', ')}`, { details: { field: 'op', value: o.op } });
  }
  const op = o.op as Op;
  const base: Base = id === undefined ? { v: PROTOCOL_VERSION } : { v: PROTOCOL_VERSION, id };
  switch (op) {
    case 'create': {
      rejectUnknown(o, FIELDS.create, op);
      for (const f of ['engid', 'sniffIf', 'resetIf', 'host'] as const) requireType(o, f, 'string', op);
      requireType(o, 'duration', 'number', op);
      const req: CreateRequest = {
        ...base,
        op,
        engid: validateEngid(o.engid, 'engid'),
        sniffIf: validateIfname(o.sniffIf, 'sniffIf'),
        resetIf: validateIfname(o.resetIf, 'resetIf'),
        host: validateHost(o.host, 'host'),
        duration: validateDuration(o.duration, Number.MAX_SAFE_INTEGER, 'duration'),
      };
      const port = optionalPort(o);
      if (port !== undefined) req.port = port;
      if (o.mode !== undefined) {
        if (o.mode !== 'l3' && o.mode !== 'l2') {
          throw new ValidationError('mode', o.mode, 'must be "l3" or "l2"');
        }
        req.mode = o.mode;
      }
      if (o.wait !== undefined) {
        if (typeof o.wait !== 'number' || !Number.isFinite(o.wait) || o.wait <= 0 || o.wait > MAX_WAIT_S) {
          throw new ValidationError('wait', o.wait, `must be a number of seconds above 0 and at most ${MAX_WAIT_S}`);
        }
        req.wait = o.wait;
      }
      return req;
    }
    case 'cancel': {
      if ('jobId' in o) {
        rejectUnknown(o, FIELDS.cancelById, 'cancel-by-id');
        requireType(o, 'jobId', 'string', op);
        if (!JOB_ID_RE.test(o.jobId as string)) {
          throw new ValidationError('jobId', o.jobId, 'is not a job id (1..64 of A-Z a-z 0-9 _ -)');
        }
        return { ...base, op, jobId: o.jobId as string };
      }
      rejectUnknown(o, FIELDS.cancelByKey, op);
      if (!('engid' in o) && !('sniffIf' in o) && !('host' in o)) {
        throw new UsageError('cancel request needs either "jobId" or "engid", "sniffIf" and "host"', { details: { field: 'jobId' } });
      }
      for (const f of ['engid', 'sniffIf', 'host'] as const) requireType(o, f, 'string', op);
      const req: CancelByKeyRequest = {
        ...base,
        op,
        engid: validateEngid(o.engid, 'engid'),
        sniffIf: validateIfname(o.sniffIf, 'sniffIf'),
        host: validateHost(o.host, 'host'),
      };
      const port = optionalPort(o);
      if (port !== undefined) req.port = port;
      return req;
    }
    case 'list':
    case 'status':
    case 'version':
    case 'metrics':
      rejectUnknown(o, FIELDS[op], op);
      return { ...base, op };
    case 'history': {
      rejectUnknown(o, FIELDS.history, op);
      if (o.since === undefined) return { ...base, op };
      if (typeof o.since !== 'number' || !Number.isSafeInteger(o.since) || o.since < 0) {
        throw new ValidationError('since', o.since, 'must be a time in milliseconds since the epoch (an integer >= 0)');
      }
      return { ...base, op, since: o.since };
    }
  }
}

/**
 * Parse and check the shape of one response line (client side). Only the
 * envelope is checked strictly; the result's shape is the daemon's promise.
 */
export function parseResponse(line: string): Response {
  const o = parseJsonObject(line, 'response', MAX_RESPONSE_LINE_BYTES);
  const id = o.id === undefined ? undefined : checkIdLoose(o.id);
  if (o.ok === true) {
    if (!('result' in o)) throw protocolError('response has ok=true but no "result"');
    return id === undefined ? { v: PROTOCOL_VERSION, ok: true, result: o.result } : { v: PROTOCOL_VERSION, id, ok: true, result: o.result };
  }
  if (o.ok === false) {
    const e = o.error;
    if (!isPlainObject(e) || typeof e.code !== 'string' || typeof e.message !== 'string') {
      throw protocolError('response has ok=false but no {"code","message"} error');
    }
    const error: ErrorBody = { code: e.code as ErrorCode, message: e.message };
    if (isPlainObject(e.details)) error.details = e.details;
    return id === undefined ? { v: PROTOCOL_VERSION, ok: false, error } : { v: PROTOCOL_VERSION, id, ok: false, error };
  }
  throw protocolError('response lacks a boolean "ok"');
}

function checkIdLoose(id: unknown): RequestId {
  if (typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id))) return id;
  throw protocolError('response "id" must be a string or a number');
}

// ---------------------------------------------------------------- building

export function okResponse<R>(result: R, id?: RequestId): OkResponse<R> {
  return id === undefined ? { v: PROTOCOL_VERSION, ok: true, result } : { v: PROTOCOL_VERSION, id, ok: true, result };
}

/**
 * Error response from anything thrown. TcpresetErrors keep their code,
 * message and details; anything else is a bug (E_INTERNAL) and its message
 * is passed on so the operator sees something actionable.
 */
export function errorResponse(err: unknown, id?: RequestId): ErrorResponse {
  let error: ErrorBody;
  if (err instanceof TcpresetError) {
    error = err.toJSON();
    // Details may echo the client's value; one nested too deeply for JSON
    // would make the response unencodable (an E_INTERNAL): drop them then.
    if (error.details !== undefined && !encodable(error.details)) error = { code: error.code, message: error.message };
  } else {
    const message = err instanceof Error ? err.message : String(err);
    error = { code: 'E_INTERNAL', message: `internal error: ${message}` };
  }
  return id === undefined ? { v: PROTOCOL_VERSION, ok: false, error } : { v: PROTOCOL_VERSION, id, ok: false, error };
}

/** Nesting JSON.stringify handles with room to spare; checked without recursion (a deep value costs nothing). */
const MAX_ENCODED_DEPTH = 64;

function encodable(x: unknown): boolean {
  const stack: [unknown, number][] = [[x, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth >= MAX_ENCODED_DEPTH) return false;
    for (const c of Array.isArray(v) ? v : Object.values(v)) if (typeof c === 'object' && c !== null) stack.push([c, depth + 1]);
  }
  return true;
}

/**
 * One protocol line: compact JSON and '\n'. Throws E_PROTOCOL when the JSON
 * is above `limit` bytes (requests: MAX_LINE_BYTES; responses: pass
 * MAX_RESPONSE_LINE_BYTES).
 */
export function encodeLine(msg: object, limit: number = MAX_LINE_BYTES): string {
  const text = JSON.stringify(msg);
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > limit) throw protocolError(`message is ${bytes} bytes; the limit is ${limit}`);
  return `${text}\n`;
}
