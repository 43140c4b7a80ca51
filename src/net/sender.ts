/**
 * Sends forged packets out of the reset interface, in batches.
 *
 * l3 (default): raw IPPROTO_RAW sockets, one IPv4 and one IPv6 (both imply
 * "header included": our bytes go out as they are, the kernel only routes
 * and resolves the neighbour), bound to the interface with SO_BINDTODEVICE.
 * l2: one AF_PACKET SOCK_RAW socket bound to the interface; whole Ethernet
 * frames (our MAC as source, VLAN tags in-band) go out unchanged. Protocol 0:
 * the socket receives nothing.
 *
 * Packets are copied into fixed native slots (MsgBatch) and sent with
 * sendmmsg, up to `batch` per system call; nothing is allocated per packet.
 * The sockets are non-blocking: a full queue or a busy link drops and counts,
 * it never stalls the event loop or throws from flush(). Only open() throws.
 */
import { readFileSync } from 'node:fs';
import { NativeError, TcpresetError, ValidationError } from '../core/errors.js';
import type { Family, InjectMode } from '../core/model.js';
import {
  AF_INET, AF_INET6, AF_PACKET, E, IPPROTO_IPV6, IPPROTO_RAW, IPV6_HDRINCL, MSG_DONTWAIT, MsgBatch, SOCK_CLOEXEC, SOCK_RAW,
  bindPacket, bindToDevice, close as closeFd, getsockoptInt, ifNameToIndex, setSendBuffer, setsockoptInt, socket, strerror,
} from '../native/libc.js';

export interface OutPacket {
  family: Family;
  /** The full IPv4/IPv6 packet (l3 sends it; its destination address routes it). */
  packet: Uint8Array;
  /** The full Ethernet frame (l2 sends it). */
  frame?: Uint8Array;
}

export interface SenderStats {
  /** Packets the kernel accepted. */
  sent: number;
  /** Packets not sent: refused by the kernel (unreachable, no buffer, not permitted) or too big for a slot. */
  errors: number;
  /** The last failure, as "<what>: <strerror> (errno N)". */
  lastError?: string;
}

export interface SenderOptions {
  /** Packets held per socket before enqueue() flushes by itself. Default 256. */
  slots?: number;
  /** Largest packet or frame, bytes. Default 1600. */
  slotSize?: number;
  /** Most messages per sendmmsg call. Default 64. */
  batch?: number;
  /** Socket send buffer to ask for (bytes). Default 1 MiB. */
  sndbuf?: number;
}

/** One socket and its queue of filled slots. */
class Lane {
  count = 0;
  constructor(
    readonly fd: number,
    readonly slots: MsgBatch,
  ) {}
}

export class Sender {
  readonly ifname: string;
  readonly ifindex: number;
  readonly mode: InjectMode;
  /** The interface's own MAC (the l2 source MAC). */
  readonly mac: Uint8Array;
  /** All three fields from the start: one map whether or not a send has failed yet (the event thread's warm-up fails every send, and a stats object that gained lastError later had another map). */
  readonly stats: SenderStats = { sent: 0, errors: 0, lastError: undefined };

  private readonly batch: number;
  /** l3: [IPv4, IPv6]; l2: [packet socket]. */
  private readonly lanes: Lane[];
  private closed = false;
  private ownsSockets = true;

  private constructor(ifname: string, ifindex: number, mode: InjectMode, mac: Uint8Array, lanes: Lane[], batch: number) {
    this.ifname = ifname;
    this.ifindex = ifindex;
    this.mode = mode;
    this.mac = mac;
    this.lanes = lanes;
    this.batch = batch;
  }

  /** Open the sockets on `ifname`. Throws NativeError naming the interface and the step that failed. */
  static open(ifname: string, mode: InjectMode, opts: SenderOptions = {}): Sender {
    const sockets = openSenderSockets(ifname, mode, opts.sndbuf);
    try {
      return Sender.adopt(sockets, opts, true);
    } catch (err) {
      closeSenderSockets(sockets);
      throw err;
    }
  }

  /**
   * A sender over sockets opened elsewhere (e.g. by another thread of this
   * process: file descriptors are process-wide). With `owner` false, close()
   * frees only this sender's slots and leaves the sockets to their owner.
   */
  static adopt(sockets: SenderSockets, opts: SenderOptions = {}, owner = false): Sender {
    const slots = opts.slots ?? 256;
    const slotSize = opts.slotSize ?? 1600;
    const batch = Math.max(1, Math.min(opts.batch ?? 64, 1024)); // UIO_MAXIOV caps vlen
    const lanes: Lane[] = [];
    try {
      for (const fd of sockets.fds) lanes.push(new Lane(fd, new MsgBatch(slots, slotSize)));
    } catch (err) {
      for (const l of lanes) l.slots.free();
      throw err;
    }
    const s = new Sender(sockets.ifname, sockets.ifindex, sockets.mode, sockets.mac, lanes, batch);
    s.ownsSockets = owner;
    return s;
  }

  /** Packets waiting for flush(). */
  get queued(): number {
    let n = 0;
    for (const l of this.lanes) n += l.count;
    return n;
  }

  /**
   * Queue a packet (a copy is taken). When a socket's slots are all full
   * they are flushed first. A packet too big for a slot is counted as an
   * error. A packet that is not what the mode needs is a bug and throws.
   */
  enqueue(pkt: OutPacket): void {
    if (this.closed) throw new TcpresetError('E_INTERNAL', `sender on ${this.ifname} used after close`);
    let lane: Lane;
    let data: Uint8Array;
    if (this.mode === 'l2') {
      if (!pkt.frame) throw new TcpresetError('E_INTERNAL', `l2 sender on ${this.ifname} needs an Ethernet frame`);
      lane = this.lanes[0];
      data = pkt.frame;
    } else {
      data = pkt.packet;
      const version = data.length > 0 ? data[0] >> 4 : 0;
      if (version !== pkt.family || data.length < (pkt.family === 4 ? 20 : 40)) {
        throw new TcpresetError('E_INTERNAL', `l3 sender on ${this.ifname}: not an IPv${pkt.family} packet`);
      }
      lane = this.lanes[pkt.family === 4 ? 0 : 1];
    }
    if (lane.count === lane.slots.capacity) this.flushLane(lane);
    const i = lane.count;
    if (!lane.slots.setData(i, data)) {
      this.fail(`packet of ${data.length} bytes exceeds the ${lane.slots.slotSize}-byte slot`);
      return;
    }
    if (this.mode === 'l3') {
      if (pkt.family === 4) lane.slots.setDestV4(i, data, 16);
      else lane.slots.setDestV6(i, data, 24, this.ifindex);
    }
    lane.count = i + 1;
  }

  /** Send everything queued. Returns how many the kernel accepted; failures go to stats, never thrown. */
  flush(): number {
    if (this.closed) return 0;
    let sent = 0;
    for (const lane of this.lanes) sent += this.flushLane(lane);
    return sent;
  }

  private flushLane(lane: Lane): number {
    const n = lane.count;
    lane.count = 0;
    let sent = 0;
    let i = 0;
    while (i < n) {
      const r = lane.slots.send(lane.fd, i, Math.min(this.batch, n - i), MSG_DONTWAIT);
      // The same operations on success and failure: the event thread's warm-up sends on fd -1
      // (EBADF), and an addition only ever run with a real send deoptimized on the first one.
      const accepted = Math.max(r, 0);
      sent += accepted;
      i += accepted;
      if (accepted > 0) continue;
      const err = -r;
      if (err === E.EAGAIN || err === E.ENOBUFS) {
        // Queue or device full: the rest would fail the same way. Drop them; the next
        // observed segment fires again.
        this.fail(`sendmmsg: ${strerror(err)} (errno ${err})`, n - i);
        break;
      }
      // This destination is refused (unreachable, filtered, too big): skip it, send the rest.
      this.fail(r === 0 ? 'sendmmsg sent nothing' : `sendmmsg: ${strerror(err)} (errno ${err})`);
      i++;
    }
    this.stats.sent += sent;
    return sent;
  }

  private fail(text: string, count = 1): void {
    this.stats.errors += count;
    this.stats.lastError = text;
  }

  /** Close the sockets; anything still queued is dropped. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const lane of this.lanes) {
      lane.count = 0;
      if (this.ownsSockets) closeFd(lane.fd, this.ifname);
      lane.slots.free();
    }
  }
}

/**
 * The sockets of one reset interface and mode, without send slots: what the
 * main thread holds (and closes) while the event thread sends on them.
 * l3: [IPv4 raw, IPv6 raw]; l2: [packet socket].
 */
export interface SenderSockets {
  ifname: string;
  ifindex: number;
  mode: InjectMode;
  /** The interface's own MAC (the l2 source MAC). */
  mac: Uint8Array;
  fds: number[];
}

/** Open the sockets on `ifname`. Throws NativeError naming the interface and the step that failed. */
export function openSenderSockets(ifname: string, mode: InjectMode, sndbuf?: number): SenderSockets {
  const ifindex = ifNameToIndex(ifname);
  if (ifindex === 0) throw new NativeError('open sender: find interface', E.ENODEV, strerror(E.ENODEV), ifname);
  const mac = readMac(ifname);
  const fds: number[] = [];
  try {
    if (mode === 'l3') {
      const fd4 = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW, ifname);
      fds.push(fd4);
      const fd6 = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW, ifname);
      fds.push(fd6);
      // IPPROTO_RAW implies header-included for IPv6 too on Linux; make sure rather than assume.
      if (getsockoptInt(fd6, IPPROTO_IPV6, IPV6_HDRINCL, 'getsockopt IPV6_HDRINCL', ifname) !== 1) {
        setsockoptInt(fd6, IPPROTO_IPV6, IPV6_HDRINCL, 1, 'IPV6_HDRINCL', ifname);
      }
      for (const fd of fds) {
        bindToDevice(fd, ifname);
        trySendBuffer(fd, sndbuf, ifname);
      }
    } else if (mode === 'l2') {
      const fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0, ifname);
      fds.push(fd);
      bindPacket(fd, ifindex, 0, ifname);
      trySendBuffer(fd, sndbuf, ifname);
    } else {
      throw new ValidationError('mode', mode, 'injection mode must be l3 or l2');
    }
  } catch (err) {
    for (const fd of fds) closeFd(fd);
    throw err;
  }
  return { ifname, ifindex, mode, mac, fds };
}

export function closeSenderSockets(sockets: SenderSockets): void {
  for (const fd of sockets.fds) closeFd(fd, sockets.ifname);
}

/** The interface's MAC from sysfs (all zero for interfaces without one). */
function readMac(ifname: string): Uint8Array {
  let text: string;
  try {
    text = readFileSync(`/sys/class/net/${ifname}/address`, 'utf8').trim();
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).errno;
    const n = typeof errno === 'number' ? Math.abs(errno) : E.ENODEV;
    throw new NativeError('open sender: read MAC address', n, strerror(n), ifname, { cause: err });
  }
  const mac = new Uint8Array(6);
  const parts = text.split(':');
  if (parts.length === 6) parts.forEach((p, i) => (mac[i] = parseInt(p, 16) || 0));
  return mac;
}

function trySendBuffer(fd: number, bytes = 1 << 20, ifname: string): void {
  try {
    setSendBuffer(fd, bytes, ifname);
  } catch {
    // The default buffer still works; a bigger one only absorbs larger bursts.
  }
}
