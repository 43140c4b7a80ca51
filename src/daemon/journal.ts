/**
 * Log records to journald through its native protocol (one datagram per
 * record to /run/systemd/journal/socket; systemd.io/JOURNAL_NATIVE_PROTOCOL,
 * systemd.journal-fields(7)), so that MESSAGE is the human message and the
 * record's facts are fields of their own: `journalctl -u tcpreset
 * JOB_ID=…`, `ENGID=…`, `HOST=…`, `-p warning`. Through the stdout stream,
 * journald could only store the JSON line as MESSAGE.
 *
 * The whole record stays available as TCPRESET_JSON. A record the socket
 * does not take (journald restarting, its queue full, a datagram over the
 * socket's size limit) goes to stdout with its `<N>` priority prefix
 * instead, so nothing is lost; such fallbacks are counted.
 */
import type { DestinationStream } from 'pino';
import { syslogPriority } from './log.js';

export const JOURNAL_SOCKET = '/run/systemd/journal/socket';
export const SYSLOG_IDENTIFIER = 'tcpresetd';

/** Record keys that become the well-known fields (also looked up inside `job`). */
const ALIASES: [string, string][] = [['id', 'JOB_ID'], ['jobId', 'JOB_ID'], ['engid', 'ENGID'], ['host', 'HOST'], ['port', 'PORT']];
/** pino's own keys, or ones carried by MESSAGE/PRIORITY and journald's trusted _PID. */
const SKIP = new Set(['level', 'time', 'pid', 'msg', 'hostname']);

/** camelCase or any text -> a journal field name: A-Z 0-9 _, not starting with _ or a digit, at most 64 bytes. */
export function fieldName(key: string): string {
  let n = key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase().replace(/[^A-Z0-9_]/g, '_').replace(/^[_0-9]+/, '');
  if (n === '') n = 'FIELD';
  return n.slice(0, 64);
}

const text = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v) ?? String(v));

/**
 * The journal fields of one pino record: MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER, JOB_ID/ENGID/HOST/PORT (from the record or its `job`),
 * ERRNO when an error carries one, every other top-level key as its own
 * field (objects as JSON), and TCPRESET_JSON (the whole record).
 */
export function journalFields(rec: Record<string, unknown>, line?: string): [string, string][] {
  const out: [string, string][] = [
    ['MESSAGE', typeof rec.msg === 'string' ? rec.msg : ''],
    ['PRIORITY', String(syslogPriority(typeof rec.level === 'number' ? rec.level : 30))],
    ['SYSLOG_IDENTIFIER', SYSLOG_IDENTIFIER],
  ];
  const seen = new Set(out.map((f) => f[0]));
  const add = (name: string, v: unknown): void => {
    if (v === undefined || v === null || seen.has(name)) return;
    seen.add(name);
    out.push([name, text(v)]);
  };
  const job = typeof rec.job === 'object' && rec.job !== null ? (rec.job as Record<string, unknown>) : undefined;
  for (const [k, name] of ALIASES) {
    if (k === 'id') add(name, job?.id);
    else add(name, job?.[k] ?? rec[k]);
  }
  const err = rec.err as { errno?: unknown; details?: { errno?: unknown } } | undefined;
  const errno = err?.errno ?? err?.details?.errno ?? (rec.details as { errno?: unknown } | undefined)?.errno;
  if (typeof errno === 'number') add('ERRNO', Math.abs(errno));
  for (const [k, v] of Object.entries(rec)) {
    if (SKIP.has(k)) continue;
    add(fieldName(k), v);
  }
  out.push(['TCPRESET_JSON', line ?? JSON.stringify(rec)]);
  return out;
}

/**
 * One native-protocol datagram: `NAME=value\n` per field, or for a value
 * holding a newline `NAME\n`, its length as 64-bit little endian, the
 * value, `\n`.
 */
export function encodeJournalEntry(fields: readonly [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const v = Buffer.from(value, 'utf8');
    if (v.includes(0x0a)) {
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(v.length));
      parts.push(Buffer.from(`${name}\n`), len, v, Buffer.from('\n'));
    } else {
      parts.push(Buffer.from(`${name}=`), v, Buffer.from('\n'));
    }
  }
  return Buffer.concat(parts);
}

/** pino destination: each record as one journal datagram, else (see above) to `fallback`. */
export class JournalStream implements DestinationStream {
  /** Records that went to the fallback stream instead. */
  fallbacks = 0;

  constructor(
    private readonly send: (data: Buffer) => void,
    private readonly fallback: (line: string) => void,
  ) {}

  write(line: string): void {
    let datagram: Buffer;
    try {
      datagram = encodeJournalEntry(journalFields(JSON.parse(line) as Record<string, unknown>, line.trimEnd()));
    } catch {
      this.fallbacks++;
      this.fallback(line);
      return;
    }
    try {
      this.send(datagram);
    } catch {
      this.fallbacks++;
      this.fallback(line);
    }
  }
}
