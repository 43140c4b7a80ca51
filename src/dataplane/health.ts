/**
 * Interfaces going down, away and back. A deleted device takes its XDP link
 * with it, and a raw or packet socket stays bound to the old ifindex; a
 * re-created device has a new ifindex, which is part of every target key.
 * So on each tick: compare what the data plane holds with what the kernel
 * has (sysfs, net/ifaces.ts), report the difference as a fault, and rebuild
 * (re-attach, re-key, reopen) as soon as the interface is back.
 */
import { readInterface } from '../net/ifaces.js';
import type { Attachment, Attachments } from './attachments.js';
import type { ResetSenders, SenderRef } from './senders.js';
import type { InterfaceFault } from './types.js';
import type { LogSink, IfaceRole } from '../core/model.js';

export interface HealthHooks {
  /** The sniff interface came back with a new ifindex: move its slots. */
  rekey(ifname: string, ifindex: number): void;
  fault(f: InterfaceFault): void;
  recovered(f: { ifname: string; role: IfaceRole; since: number }): void;
}

export class InterfaceHealth {
  private readonly faults = new Map<string, InterfaceFault>();

  constructor(
    private readonly attachments: Attachments,
    private readonly senders: ResetSenders,
    private readonly log: LogSink,
    private readonly hooks: HealthHooks,
  ) {}

  /** One pass over every attachment and sender; a failed rebuild is a fault, never a throw. */
  check(): void {
    for (const att of this.attachments.values()) {
      try {
        this.checkAttachment(att);
      } catch (err) {
        this.set(att.ifname, 'sniff', `recovery failed: ${(err as Error).message}`);
      }
    }
    for (const ref of this.senders.values()) {
      try {
        this.checkSender(ref);
      } catch (err) {
        this.set(ref.ifname, 'reset', `recovery failed: ${(err as Error).message}`);
      }
    }
  }

  list(): InterfaceFault[] {
    return [...this.faults.values()].map((f) => ({ ...f }));
  }

  /** Nothing needs the interface in this role any more: its fault goes with it. */
  forget(ifname: string, role: IfaceRole): void {
    this.faults.delete(`${role}/${ifname}`);
  }

  private checkAttachment(att: Attachment): void {
    const state = readInterface(att.ifname);
    if (!state) {
      this.attachments.lost(att);
      return this.set(att.ifname, 'sniff', 'interface is gone');
    }
    if (!att.link || state.ifindex !== att.ifindex) {
      this.attachments.reattach(att);
      this.hooks.rekey(att.ifname, att.ifindex);
    }
    if (!state.active) return this.set(att.ifname, 'sniff', inactiveReason(state));
    this.clear(att.ifname, 'sniff');
  }

  private checkSender(ref: SenderRef): void {
    const state = readInterface(ref.ifname);
    if (!state) {
      this.senders.retire(ref);
      return this.set(ref.ifname, 'reset', 'interface is gone');
    }
    if (!ref.sockets || ref.sockets.ifindex !== state.ifindex) {
      this.senders.reopen(ref);
      this.log.warn({ ifname: ref.ifname, mode: ref.mode, ifindex: state.ifindex }, 'reset sender reopened on re-created interface');
    }
    if (!state.active) return this.set(ref.ifname, 'reset', inactiveReason(state));
    this.clear(ref.ifname, 'reset');
  }

  private set(ifname: string, role: IfaceRole, fault: string): void {
    const id = `${role}/${ifname}`;
    const have = this.faults.get(id);
    if (have?.fault === fault) return;
    const f: InterfaceFault = { ifname, role, fault, since: have?.since ?? Date.now() };
    this.faults.set(id, f);
    this.log.warn({ ifname, role, fault }, 'interface fault: enforcement on it is suspended');
    this.hooks.fault({ ...f });
  }

  private clear(ifname: string, role: IfaceRole): void {
    const id = `${role}/${ifname}`;
    const have = this.faults.get(id);
    if (!have) return;
    this.faults.delete(id);
    this.log.info({ ifname, role, downMs: Date.now() - have.since }, 'interface recovered: enforcement resumed');
    this.hooks.recovered({ ifname, role, since: have.since });
  }
}

/** Admin-down, or up without carrier (e.g. a veth whose peer is down): either way nothing flows. */
function inactiveReason(state: { up: boolean; operstate: string }): string {
  return state.up ? `interface has no carrier (operstate ${state.operstate})` : 'interface is down';
}
