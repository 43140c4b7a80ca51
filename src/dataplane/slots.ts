/**
 * Slots: one BPF targets-map entry per key (sniff ifindex, family, host,
 * port), shared by the targets with that key (e.g. two detection engines
 * raising the same alert). A slot's deadline is the latest of its targets';
 * the event threads are told which senders its events fire on before the
 * entry is written, and the prefilter bit is set before the entry exists
 * and cleared after it is gone, so the program never sees an entry its
 * prefilter hides.
 *
 * Memory (a daemon may hold 100,000 slots): a slot keeps its key as a
 * 24-character binary string (it is also the lookup key), not a typed
 * array with its own buffer plus a hex copy; the key's bytes are made in
 * one scratch buffer for each map call. The sender-key lists handed to the
 * event threads are shared between slots with the same senders.
 */
import { LAYOUT, decodeTargetKey, encodeTargetValue, type TargetKey } from '../bpf/contract.js';
import type { BpfMap } from '../bpf/object.js';
import type { Prefilter } from './prefilter.js';
import type { EventPool } from './event-pool.js';

export interface SlotMember {
  id: number;
  /** Wall-clock end, epoch ms. */
  expiresAt: number;
  senderKey: string;
}

export interface Slot<T extends SlotMember = SlotMember> {
  id: number;
  sniffIf: string;
  /** The tr_target_key's bytes, one character each (keyBytes() makes them a Uint8Array). */
  key: string;
  /** Usually one; an array costs far less than a Set at 100,000 slots. */
  targets: T[];
  expiresAt: number;
}

/** A slot's key decoded (a fresh copy: the host's bytes as the map entry holds them, not parsed again from text). */
export function slotKey(slot: Pick<Slot, 'key'>): TargetKey {
  const b = new Uint8Array(slot.key.length);
  for (let i = 0; i < b.length; i++) b[i] = slot.key.charCodeAt(i);
  return decodeTargetKey(b);
}

export class SlotTable<T extends SlotMember> {
  private readonly byId = new Map<number, Slot<T>>();
  private readonly byKey = new Map<string, Slot<T>>();
  private nextId = 1;
  /** The key of the map call being made (keyBytes). */
  private readonly scratch = new Uint8Array(LAYOUT.tr_target_key.size);
  /** Sender-key lists by their keys joined: one array for all the slots that fire the same senders. */
  private readonly senderLists = new Map<string, readonly string[]>();

  constructor(
    private readonly map: BpfMap,
    private readonly prefilter: Prefilter,
    private readonly events: EventPool,
  ) {}

  get(id: number): Slot<T> | undefined {
    return this.byId.get(id);
  }

  /** The slot of `key`, made (prefilter bit first) if new. The map entry is written by sync(). */
  join(key: Uint8Array, sniffIf: string): Slot<T> {
    const text = keyString(key);
    let slot = this.byKey.get(text);
    if (!slot) {
      slot = { id: this.nextId++, sniffIf, key: text, targets: [], expiresAt: 0 };
      this.prefilter.add(decodeTargetKey(key));
      this.byKey.set(text, slot);
      this.byId.set(slot.id, slot);
    }
    return slot;
  }

  /** The slot's key as bytes, in the scratch buffer: valid until the next call. */
  private keyBytes(slot: Slot<T>): Uint8Array {
    const b = this.scratch;
    for (let i = 0; i < b.length; i++) b[i] = slot.key.charCodeAt(i);
    return b;
  }

  /** Take target `id` out; the last one takes the entry (map first: enforcement stops at once), then the bit. */
  leave(slot: Slot<T>, id: number): void {
    slot.targets = slot.targets.filter((t) => t.id !== id);
    if (slot.targets.length === 0) {
      const key = this.keyBytes(slot);
      this.map.delete(key);
      this.events.deleteSlot(slot.id);
      this.prefilter.remove(decodeTargetKey(key));
      this.byKey.delete(slot.key);
      this.byId.delete(slot.id);
    } else {
      this.sync(slot);
    }
  }

  /** Write the slot's entry with the latest deadline of its targets. */
  sync(slot: Slot<T>): void {
    let expiresAt = 0;
    for (const t of slot.targets) expiresAt = Math.max(expiresAt, t.expiresAt);
    slot.expiresAt = expiresAt;
    const key = this.keyBytes(slot);
    // Before the map entry: the event thread must know a slot before its first segment.
    // The host too, so the event threads check where its RSTs can go before its first segment.
    this.events.setSlot(slot.id, this.sendersOf(slot) as string[], decodeTargetKey(key).addr);
    this.map.update(key, encodeTargetValue({ targetId: slot.id, expiresNs: wallToMonotonicNs(expiresAt) }));
  }

  /** The distinct sender keys of the slot's targets, as a list shared with every slot that has the same. */
  private sendersOf(slot: Slot<T>): readonly string[] {
    const t = slot.targets;
    const keys = t.length === 1 ? [t[0]!.senderKey] : [...new Set(t.map((x) => x.senderKey))];
    const joined = keys.join('\n');
    let list = this.senderLists.get(joined);
    if (!list) {
      list = keys;
      // Bounded by the distinct (interface, mode) sets in use; a few in practice.
      if (this.senderLists.size >= 1024) this.senderLists.clear();
      this.senderLists.set(joined, list);
    }
    return list;
  }

  /** Move every slot of `ifname` to its new ifindex (the key's first field). */
  rekey(ifname: string, ifindex: number): void {
    for (const slot of this.byId.values()) {
      if (slot.sniffIf !== ifname) continue;
      const old = this.keyBytes(slot);
      this.map.delete(old);
      this.prefilter.remove(decodeTargetKey(old));
      this.byKey.delete(slot.key);
      const key = new Uint8Array(old);
      new DataView(key.buffer).setUint32(LAYOUT.tr_target_key.fields.ifindex, ifindex, true);
      this.prefilter.add(decodeTargetKey(key));
      slot.key = keyString(key);
      this.byKey.set(slot.key, slot);
      this.sync(slot);
    }
  }
}

/** bpf_ktime_get_ns() and process.hrtime() both read CLOCK_MONOTONIC. */
function wallToMonotonicNs(epochMs: number): bigint {
  const remainingMs = Math.max(0, epochMs - Date.now());
  return process.hrtime.bigint() + BigInt(Math.round(remainingMs)) * 1_000_000n;
}

/** Key bytes as a string of one character per byte (a compact map key; made in one piece, not as 24 concatenations). */
function keyString(key: Uint8Array): string {
  return String.fromCharCode(...key);
}
