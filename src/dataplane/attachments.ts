/**
 * XDP attachments of the sniff interfaces, refcounted: the program is
 * attached while some target needs the interface, and detached with the
 * last one. An attachment outlives its device only as a record: the kernel
 * detaches the link when the device goes, and check() re-attaches once a
 * device of that name is back (with a new ifindex, which the caller re-keys).
 */
import type { BpfObject, XdpLink } from '../bpf/object.js';
import type { LoggerLike } from './types.js';

export interface Attachment {
  ifname: string;
  /** Null while the interface is away. */
  link: XdpLink | null;
  ifindex: number;
  mode: 'native' | 'generic';
  refs: number;
}

export class Attachments {
  private readonly byName = new Map<string, Attachment>();

  constructor(
    private readonly obj: BpfObject,
    private readonly log: LoggerLike,
  ) {}

  /** Attach (or take one more reference). Throws NativeError when the program cannot be attached. */
  acquire(ifname: string): Attachment {
    const have = this.byName.get(ifname);
    if (have) {
      have.refs++;
      return have;
    }
    const link = this.obj.attachXdp(ifname, 'auto');
    const att: Attachment = { ifname, link, ifindex: link.ifindex, mode: link.mode, refs: 1 };
    this.byName.set(ifname, att);
    this.log.info({ ifname, ifindex: link.ifindex, mode: link.mode }, 'XDP attached');
    return att;
  }

  /** Drop a reference; true when it was the last and the program was detached. */
  release(ifname: string): boolean {
    const have = this.byName.get(ifname);
    if (!have || --have.refs > 0) return false;
    this.byName.delete(ifname);
    have.link?.close();
    this.log.info({ ifname }, 'XDP detached');
    return true;
  }

  values(): IterableIterator<Attachment> {
    return this.byName.values();
  }

  /** What is attached now (not the records of interfaces that are away). */
  live(): { ifname: string; ifindex: number; mode: 'native' | 'generic' }[] {
    return [...this.byName.values()].filter((a) => a.link).map((a) => ({ ifname: a.ifname, ifindex: a.ifindex, mode: a.mode }));
  }

  /** The device is gone: the kernel took the link with it. */
  lost(att: Attachment): void {
    att.link?.close();
    att.link = null;
  }

  /** Attach again to the device now called att.ifname; returns the ifindex it had. */
  reattach(att: Attachment): number {
    att.link?.close();
    att.link = null;
    const link = this.obj.attachXdp(att.ifname, 'auto');
    const old = att.ifindex;
    att.link = link;
    att.ifindex = link.ifindex;
    att.mode = link.mode;
    this.log.warn({ ifname: att.ifname, oldIfindex: old, ifindex: link.ifindex, mode: link.mode }, 'XDP re-attached to re-created interface');
    return old;
  }

  closeAll(): void {
    for (const { link } of this.byName.values()) link?.close();
    this.byName.clear();
  }
}
