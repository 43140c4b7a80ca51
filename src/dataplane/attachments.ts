/**
 * XDP attachments of the sniff interfaces, refcounted. The program is
 * attached when a target first needs the interface, or at start for a
 * watched one (--watch, config watch), and stays attached until the daemon
 * stops: the flow memory keeps learning the interface's connections, and
 * on many NIC drivers each attach or detach of native XDP reconfigures the
 * rings under whatever else reads the mirror (issue 9). Only an attachment
 * made for a target that never came to be is undone. An attachment outlives its device only as a record: the kernel
 * detaches the link when the device goes, and check() re-attaches once a
 * device of that name is back (with a new ifindex, which the caller re-keys).
 *
 * The program joins libxdp's multi-program dispatcher (issue 11), so
 * xdp-filter, xdp-loader or bpfman programs run on the same port in either
 * order, and a stop takes out only tcpreset's entry. Where libxdp is
 * missing or cannot (no bpffs, a program attached without the dispatcher,
 * an old kernel) the attach is exclusive as before, with a warning naming why.
 */
import type { BpfObject, XdpLink } from '../bpf/object.js';
import { setLibxdpSink } from '../native/libxdp.js';
import type { LogSink } from '../core/model.js';

export interface Attachment {
  ifname: string;
  /** Null while the interface is away. */
  link: XdpLink | null;
  ifindex: number;
  mode: 'native' | 'generic';
  /** One entry of libxdp's dispatcher, or the hook to itself. */
  via: 'libxdp' | 'exclusive';
  /** Targets on it now. */
  refs: number;
  /** Named by --watch / config watch. */
  watched: boolean;
  /** Stays attached with no target (it had one, or is watched). */
  kept: boolean;
}

export class Attachments {
  private readonly byName = new Map<string, Attachment>();

  constructor(
    private readonly obj: BpfObject,
    private readonly log: LogSink,
    private readonly opts: { libxdp?: boolean } = {},
  ) {
    // libxdp's reasons go to the log, as libbpf's do (not to stderr).
    setLibxdpSink((level, line) => (level === 'warn' ? log.warn({ libxdp: line }, 'libxdp warning') : log.debug({ libxdp: line }, 'libxdp')));
    obj.onLibxdpNote = (level, msg, details) => (level === 'warn' ? log.warn(details, msg) : log.info(details, msg));
  }

  /** Attach through libxdp's dispatcher when it can; a fallback to the exclusive attach is a warning naming why. */
  private attach(ifname: string, extra: Record<string, unknown> = {}): XdpLink {
    const link = this.obj.attachXdp(ifname, 'auto', { libxdp: this.opts.libxdp === true });
    if (link.libxdpRefused !== undefined) {
      this.log.warn({ ifname, reason: link.libxdpRefused }, `XDP attached exclusively, not through libxdp's dispatcher: ${link.libxdpRefused}; other XDP programs (xdp-filter, xdp-loader, bpfman) cannot share ${ifname} meanwhile`);
    }
    this.log.info({ ifname, ifindex: link.ifindex, mode: link.mode, via: link.via, progId: link.progId, ...extra }, 'XDP attached');
    return link;
  }

  /** Attach (or take one more reference). Throws NativeError when the program cannot be attached. */
  acquire(ifname: string): Attachment {
    const have = this.byName.get(ifname);
    if (have) {
      have.refs++;
      return have;
    }
    const link = this.attach(ifname);
    const att: Attachment = { ifname, link, ifindex: link.ifindex, mode: link.mode, via: link.via, refs: 1, watched: false, kept: false };
    this.byName.set(ifname, att);
    return att;
  }

  /** The target that acquired it is in force: from now on the interface stays attached. */
  keep(att: Attachment): void {
    att.kept = true;
  }

  /**
   * Drop a reference. The program stays attached unless the attachment was
   * made for a target that never came to be (not kept, not watched); true
   * when it was detached.
   */
  release(ifname: string): boolean {
    const have = this.byName.get(ifname);
    if (!have || --have.refs > 0) return false;
    if (have.kept || have.watched) return false;
    this.byName.delete(ifname);
    have.link?.close();
    this.log.info({ ifname }, 'XDP detached');
    return true;
  }

  /**
   * Attach for the daemon's life. When that fails (the interface is missing,
   * or refuses) the record stays with no link, for the health check to
   * attach when it can; the error is returned, not thrown.
   */
  watch(ifname: string): { att: Attachment; error?: Error } {
    const have = this.byName.get(ifname);
    if (have) {
      have.watched = true;
      return { att: have };
    }
    try {
      const link = this.attach(ifname, { watched: true });
      const att: Attachment = { ifname, link, ifindex: link.ifindex, mode: link.mode, via: link.via, refs: 0, watched: true, kept: true };
      this.byName.set(ifname, att);
      return { att };
    } catch (err) {
      const att: Attachment = { ifname, link: null, ifindex: 0, mode: 'native', via: 'exclusive', refs: 0, watched: true, kept: true };
      this.byName.set(ifname, att);
      return { att, error: err as Error };
    }
  }

  get(ifname: string): Attachment | undefined {
    return this.byName.get(ifname);
  }

  values(): IterableIterator<Attachment> {
    return this.byName.values();
  }

  /** What is attached now (not the records of interfaces that are away). */
  live(): { ifname: string; ifindex: number; mode: 'native' | 'generic'; via: 'libxdp' | 'exclusive'; jobs: number; watched: boolean; kept: boolean }[] {
    return [...this.byName.values()].filter((a) => a.link).map((a) => ({
      ifname: a.ifname, ifindex: a.ifindex, mode: a.mode, via: a.via, jobs: a.refs, watched: a.watched, kept: a.kept,
    }));
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
    const link = this.obj.attachXdp(att.ifname, 'auto', { libxdp: this.opts.libxdp === true });
    const old = att.ifindex;
    att.link = link;
    att.ifindex = link.ifindex;
    att.mode = link.mode;
    att.via = link.via;
    if (link.libxdpRefused !== undefined) this.log.warn({ ifname: att.ifname, reason: link.libxdpRefused }, `XDP attached exclusively, not through libxdp's dispatcher: ${link.libxdpRefused}`);
    this.log.warn({ ifname: att.ifname, oldIfindex: old, ifindex: link.ifindex, mode: link.mode, via: link.via }, 'XDP re-attached to re-created interface');
    return old;
  }

  closeAll(): void {
    for (const { link } of this.byName.values()) link?.close();
    this.byName.clear();
  }
}
