/**
 * User space's view of the XDP program's flow memory (bpf/flowmem.h): the
 * "flowmem" array mapped read-only into this process (BPF_F_MMAPABLE), so
 * finding a host's connections is a scan of memory, no syscall per entry.
 * 262,144 slots (42 MiB) scan in a few ms when most are empty or another
 * host's: the address is compared on the raw bytes before anything is decoded.
 */
import { FAMILY_V4, LAYOUT, decodeFlowEntry, flowClosed, type Family, type FlowEntry } from '../contract.js';
import { TcpresetError } from '../errors.js';
import type { BpfMap } from '../bpf/object.js';
import { PROT_READ, mmap, munmap, pageSize, type Pointer } from '../native/libc.js';

const ENTRY = LAYOUT.tr_fm_entry.size;
const K = LAYOUT.tr_fm_key.fields;
const KEY = LAYOUT.tr_fm_entry.fields.key;

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
    this.check();
    const alen = q.family === FAMILY_V4 ? 4 : 16;
    if (q.addr.length !== alen) throw new RangeError(`flow query address has ${q.addr.length} bytes, family ${q.family} needs ${alen}`);
    const b = this.bytes;
    const dv = this.dv;
    const a0 = q.addr[0];
    const port = q.port ?? 0;
    const out: FlowMatch[] = [];
    for (let i = 0, off = 0; i < this.slots; i++, off += ENTRY) {
      const k = off + KEY;
      if (b[k + K.family] !== q.family) continue;
      let end: 0 | 1 | -1 = -1;
      if (b[k + K.addr_a] === a0 && sameBytes(b, k + K.addr_a, q.addr)) end = 0;
      else if (b[k + K.addr_b] === a0 && sameBytes(b, k + K.addr_b, q.addr)) end = 1;
      if (end < 0) continue;
      if (dv.getUint32(k + K.ifindex, true) !== q.ifindex) continue;
      if (port !== 0 && dv.getUint16(k + (end === 0 ? K.port_b : K.port_a), true) !== port) continue;
      const e = decodeFlowEntry(b, off);
      if (!e) continue;
      if (!q.closed && flowClosed(e.state)) continue;
      out.push({ ...e, hostEnd: end as 0 | 1, slot: i });
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
