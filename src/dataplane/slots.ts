/**
 * Slots: one BPF targets-map entry per key (sniff ifindex, family, host,
 * port), shared by the targets with that key (e.g. two detection engines
 * raising the same alert). A slot's deadline is the latest of its targets';
 * the event threads are told which senders its events fire on before the
 * entry is written, and the prefilter bit is set before the entry exists
 * and cleared after it is gone, so the program never sees an entry its
 * prefilter hides.
 */
import { LAYOUT, decodeTargetKey, encodeTargetValue } from '../contract.js';
import type { BpfMap } from '../bpf/object.js';
import type { Prefilter } from './prefilter.js';
import type { EventPool } from './event-pool.js';
import type { TargetInfo } from './types.js';

export interface SlotMember {
  info: TargetInfo;
  senderKey: string;
}

export interface Slot<T extends SlotMember = SlotMember> {
  id: number;
  sniffIf: string;
  key: Uint8Array;
  keyText: string;
  /** Usually one; an array costs far less than a Set at 100,000 slots. */
  targets: T[];
  expiresAt: number;
}

export class SlotTable<T extends SlotMember> {
  private readonly byId = new Map<number, Slot<T>>();
  private readonly byKey = new Map<string, Slot<T>>();
  private nextId = 1;

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
    const keyText = Buffer.from(key).toString('hex');
    let slot = this.byKey.get(keyText);
    if (!slot) {
      slot = { id: this.nextId++, sniffIf, key, keyText, targets: [], expiresAt: 0 };
      this.prefilter.add(decodeTargetKey(key));
      this.byKey.set(keyText, slot);
      this.byId.set(slot.id, slot);
    }
    return slot;
  }

  /** Take target `id` out; the last one takes the entry (map first: enforcement stops at once), then the bit. */
  leave(slot: Slot<T>, id: number): void {
    slot.targets = slot.targets.filter((t) => t.info.id !== id);
    if (slot.targets.length === 0) {
      this.map.delete(slot.key);
      this.events.deleteSlot(slot.id);
      this.prefilter.remove(decodeTargetKey(slot.key));
      this.byKey.delete(slot.keyText);
      this.byId.delete(slot.id);
    } else {
      this.sync(slot);
    }
  }

  /** Write the slot's entry with the latest deadline of its targets. */
  sync(slot: Slot<T>): void {
    let expiresAt = 0;
    for (const t of slot.targets) expiresAt = Math.max(expiresAt, t.info.expiresAt);
    slot.expiresAt = expiresAt;
    // Before the map entry: the event thread must know a slot before its first segment.
    // The host too, so the event threads check where its RSTs can go before its first segment.
    this.events.setSlot(slot.id, [...new Set(slot.targets.map((t) => t.senderKey))], decodeTargetKey(slot.key).addr);
    this.map.update(slot.key, encodeTargetValue({ targetId: slot.id, expiresNs: wallToMonotonicNs(expiresAt) }));
  }

  /** Move every slot of `ifname` to its new ifindex (the key's first field). */
  rekey(ifname: string, ifindex: number): void {
    for (const slot of this.byId.values()) {
      if (slot.sniffIf !== ifname) continue;
      this.map.delete(slot.key);
      this.prefilter.remove(decodeTargetKey(slot.key));
      this.byKey.delete(slot.keyText);
      const key = new Uint8Array(slot.key);
      new DataView(key.buffer).setUint32(LAYOUT.tr_target_key.fields.ifindex, ifindex, true);
      this.prefilter.add(decodeTargetKey(key));
      slot.key = key;
      slot.keyText = Buffer.from(key).toString('hex');
      this.byKey.set(slot.keyText, slot);
      this.sync(slot);
    }
  }
}

/** bpf_ktime_get_ns() and process.hrtime() both read CLOCK_MONOTONIC. */
function wallToMonotonicNs(epochMs: number): bigint {
  const remainingMs = Math.max(0, epochMs - Date.now());
  return process.hrtime.bigint() + BigInt(Math.round(remainingMs)) * 1_000_000n;
}
