/**
 * User space's view of the XDP program's flow memory (bpf/flowmem.h): the
 * "flowmem" array mapped read-only into this process (BPF_F_MMAPABLE), so
 * finding a host's connections is a scan of memory, no syscall per entry.
 * 262,144 slots (48 MiB) scan in a few ms when most are empty or another
 * host's: the address is compared on the raw bytes before anything is decoded.
 */
import { FAMILY_V4, LAYOUT, MP_CAPABLE, MP_JOIN, TCP_RST, decodeFlowEntry, flowClosed, type FlowEntry } from '../bpf/contract.js';
import { TcpresetError } from '../core/errors.js';
import type { BpfMap } from '../bpf/object.js';
import { PROT_READ, mmap, munmap, pageSize, type Pointer } from '../native/libc.js';
import type { Family } from '../core/model.js';

const ENTRY = LAYOUT.tr_fm_entry.size;
const K = LAYOUT.tr_fm_key.fields;
const KEY = LAYOUT.tr_fm_entry.fields.key;
const KEY_SIZE = LAYOUT.tr_fm_key.size;
const STATE = LAYOUT.tr_fm_entry.fields.state;
const DIR = LAYOUT.tr_fm_entry.fields.dir;
const DIR_SIZE = LAYOUT.tr_fm_dir.size;
const D = LAYOUT.tr_fm_dir.fields;
const MP_FLAGS = LAYOUT.tr_fm_entry.fields.mp + LAYOUT.tr_fm_mptcp.fields.flags;

export interface FlowQuery {
  ifindex: number;
  family: Family;
  /** 4 or 16 bytes, network order: one end of the connection. */
  addr: Uint8Array;
  /** The other end's port (as a job's -p); undefined or 0 = any. */
  port?: number;
  /** Include connections marked closed (FIN both ways, or RST); default false. */
  closed?: boolean;
}

/** A remembered connection, with which end is the queried host. */
export interface FlowMatch extends FlowEntry {
  /** 0 when the host is endpoint A (key.addrA), 1 when it is B. */
  hostEnd: 0 | 1;
  /** Slot index in the table (for tests and logs). */
  slot: number;
}

export class FlowMemoryView {
  readonly slots: number;
  private readonly ptr: Pointer;
  private readonly length: number;
  private readonly bytes: Uint8Array;
  private readonly dv: DataView;
  private closed = false;

  constructor(map: BpfMap) {
    if (map.valueSize !== ENTRY) throw new TcpresetError('E_INTERNAL', `map "${map.name}" has ${map.valueSize}-byte values, tr_fm_entry is ${ENTRY}`);
    this.slots = map.maxEntries;
    const page = pageSize();
    this.length = Math.ceil((this.slots * ENTRY) / page) * page;
    const m = mmap(this.length, PROT_READ, map.fd, 0, `flow memory map fd ${map.fd}`);
    this.ptr = m.ptr;
    this.bytes = new Uint8Array(m.buffer);
    this.dv = new DataView(m.buffer);
  }

  /** Every entry that decodes (not empty, not torn), closed ones included. */
  all(): FlowMatch[] {
    this.check();
    const out: FlowMatch[] = [];
    for (let i = 0, off = 0; i < this.slots; i++, off += ENTRY) {
      if (this.bytes[off + KEY + K.family] === 0) continue;
      const e = decodeFlowEntry(this.bytes, off);
      if (e) out.push({ ...e, hostEnd: 0, slot: i });
    }
    return out;
  }

  /** Slots in use (a key written), torn ones included. */
  used(): number {
    this.check();
    let n = 0;
    for (let off = KEY + K.family; off < this.slots * ENTRY; off += ENTRY) if (this.bytes[off] !== 0) n++;
    return n;
  }

  /** The remembered connections of one host (and remote port) on one interface. */
  find(q: FlowQuery): FlowMatch[] {
    const out: FlowMatch[] = [];
    for (const slot of this.findSlots(q)) {
      const m = this.match(slot, q);
      if (m) out.push(m);
    }
    return out;
  }

  /**
   * The slots that hold a connection of the query's host (and remote port),
   * open unless `q.closed`: the scan of find() without decoding anything, so
   * a host with many connections costs one pass over the raw bytes. What a
   * slot holds may change before it is read: match() reads it and checks.
   */
  findSlots(q: FlowQuery): number[] {
    this.check();
    const alen = q.family === FAMILY_V4 ? 4 : 16;
    if (q.addr.length !== alen) throw new RangeError(`flow query address has ${q.addr.length} bytes, family ${q.family} needs ${alen}`);
    const b = this.bytes;
    const a0 = q.addr[0];
    const out: number[] = [];
    for (let i = 0, off = 0; i < this.slots; i++, off += ENTRY) {
      const k = off + KEY;
      if (b[k + K.family] !== q.family) continue;
      if (!(b[k + K.addr_a] === a0 && sameBytes(b, k + K.addr_a, q.addr)) && !(b[k + K.addr_b] === a0 && sameBytes(b, k + K.addr_b, q.addr))) continue;
      if (this.matches(off, q) < 0) continue;
      out.push(i);
    }
    return out;
  }

  /** The connection in `slot` now, if it is one of the query's (open unless `q.closed`, not torn); else null. */
  match(slot: number, q: FlowQuery): FlowMatch | null {
    this.check();
    const off = slot * ENTRY;
    const end = this.matches(off, q);
    if (end < 0) return null;
    const e = decodeFlowEntry(this.bytes, off);
    if (!e) return null;
    if (!q.closed && flowClosed(e.state)) return null;
    return { ...e, hostEnd: end as 0 | 1, slot };
  }

  /** Which end of the entry at byte `off` is the query's host (0 = A, 1 = B), or -1: not a connection of the query. */
  private matches(off: number, q: FlowQuery): number {
    const b = this.bytes;
    const k = off + KEY;
    if (b[k + K.family] !== q.family) return -1;
    let end = -1;
    if (sameBytes(b, k + K.addr_a, q.addr)) end = 0;
    else if (sameBytes(b, k + K.addr_b, q.addr)) end = 1;
    if (end < 0) return -1;
    if (this.dv.getUint32(k + K.ifindex, true) !== q.ifindex) return -1;
    const port = q.port ?? 0;
    if (port !== 0 && this.dv.getUint16(k + (end === 0 ? K.port_b : K.port_a), true) !== port) return -1;
    if (!q.closed && flowClosed(b[off + STATE])) return -1;
    return end;
  }

  /**
   * The seq of the RST that end `end` (0 = A, 1 = B) of the connection with
   * raw key `key` (encodeFlowKey, and its fmHash) last sent, or null: the
   * slot holds another connection, that end's last segment is not a RST, it
   * is torn, or it came from the MAC `notFrom` (ours: the reset interface's,
   * so a RST we forged "from" that end, not its answer). A few bytes read,
   * nothing decoded: the sweep's verification asks this for every watched end.
   */
  rstSeq(slot: number, key: { bytes: Uint8Array; hash: number }, end: 0 | 1, notFrom?: Uint8Array): number | null {
    this.check();
    const off = slot * ENTRY;
    const b = this.bytes;
    for (let i = 0; i < KEY_SIZE; i++) if (b[off + KEY + i] !== key.bytes[i]) return null;
    const d = off + DIR + end * DIR_SIZE;
    if (!(b[d + D.tcp_flags] & TCP_RST)) return null;
    if (this.dv.getUint32(d + D.key_hash, true) !== key.hash) return null;
    if (notFrom && sameBytes(b, d + D.smac, notFrom)) return null;
    return this.dv.getUint32(d + D.seq, true);
  }

  /**
   * MPTCP subflows whose handshake was seen (MP_CAPABLE or MP_JOIN,
   * tr_fm_mptcp.flags), closed ones included, decoded: one pass reading a
   * byte per slot, for tying a subflow to the others of its connection
   * (mptcp.ts).
   */
  mptcpSubflows(): FlowMatch[] {
    this.check();
    const out: FlowMatch[] = [];
    const b = this.bytes;
    for (let i = 0, off = 0; i < this.slots; i++, off += ENTRY) {
      if (!(b[off + MP_FLAGS] & (MP_CAPABLE | MP_JOIN)) || b[off + KEY + K.family] === 0) continue;
      const e = decodeFlowEntry(b, off);
      if (e) out.push({ ...e, hostEnd: 0, slot: i });
    }
    return out;
  }

  /** The entry in `slot` now (null: empty or torn), for watching a known connection. */
  at(slot: number): FlowEntry | null {
    this.check();
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slots) throw new RangeError(`flow memory slot ${slot} outside 0..${this.slots - 1}`);
    return decodeFlowEntry(this.bytes, slot * ENTRY);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    munmap(this.ptr, this.length, 'flow memory');
  }

  private check(): void {
    if (this.closed) throw new TcpresetError('E_INTERNAL', 'flow memory view used after close');
  }
}

function sameBytes(b: Uint8Array, off: number, a: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (b[off + i] !== a[i]) return false;
  return true;
}
