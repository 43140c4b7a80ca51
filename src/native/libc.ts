/**
 * libc through koffi: the only module that declares libc functions and the
 * C structs they take. Wrappers are typed and throw NativeError(step, errno,
 * strerror, target) on failure, except where a hot path needs the errno as a
 * value (sendmmsg: returns -errno, see there).
 *
 * Layouts are x86_64/aarch64 Linux (LP64); offsets come from koffi's own
 * struct definitions below, never from hand-counted numbers.
 */
import koffi from 'koffi';
import { NativeError, ValidationError } from '../core/errors.js';

const lib = koffi.load('libc.so.6');

// ---- constants (Linux) ----------------------------------------------------
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_PACKET = 17;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_PEERCRED = 17;
export const SO_BINDTODEVICE = 25;
export const SO_SNDBUFFORCE = 32;
export const IPPROTO_IP = 0;
export const IPPROTO_IPV6 = 41;
export const IPPROTO_RAW = 255;
export const IP_HDRINCL = 3;
export const IPV6_HDRINCL = 36;
export const SOL_PACKET = 263;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
/** Fault the whole mapping in at mmap time (mmap(2)), not on first touch. */
export const MAP_POPULATE = 0x8000;
export const EPOLL_CLOEXEC = 0o2000000;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLLIN = 0x001;
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;
const _SC_PAGESIZE = 30;

export const E = {
  EPERM: 1, ENOENT: 2, EINTR: 4, EBADF: 9, EAGAIN: 11, ENOMEM: 12, EACCES: 13, EINVAL: 22,
  EMSGSIZE: 90, ENOBUFS: 105, ENETUNREACH: 101, EHOSTUNREACH: 113, ENODEV: 19, ENXIO: 6,
} as const;

// ---- structs --------------------------------------------------------------
export const iovec = koffi.struct('tr_iovec', { iov_base: 'void *', iov_len: 'size_t' });
export const msghdr = koffi.struct('tr_msghdr', {
  msg_name: 'void *',
  msg_namelen: 'uint32_t',
  msg_iov: 'void *',
  msg_iovlen: 'size_t',
  msg_control: 'void *',
  msg_controllen: 'size_t',
  msg_flags: 'int',
});
export const mmsghdr = koffi.struct('tr_mmsghdr', { msg_hdr: msghdr, msg_len: 'uint32_t' });
export const sockaddr_in = koffi.struct('tr_sockaddr_in', {
  sin_family: 'uint16_t',
  sin_port: 'uint16_t', // network order
  sin_addr: koffi.array('uint8_t', 4),
  sin_zero: koffi.array('uint8_t', 8),
});
export const sockaddr_in6 = koffi.struct('tr_sockaddr_in6', {
  sin6_family: 'uint16_t',
  sin6_port: 'uint16_t',
  sin6_flowinfo: 'uint32_t',
  sin6_addr: koffi.array('uint8_t', 16),
  sin6_scope_id: 'uint32_t',
});
export const sockaddr_ll = koffi.struct('tr_sockaddr_ll', {
  sll_family: 'uint16_t',
  sll_protocol: 'uint16_t', // network order
  sll_ifindex: 'int',
  sll_hatype: 'uint16_t',
  sll_pkttype: 'uint8_t',
  sll_halen: 'uint8_t',
  sll_addr: koffi.array('uint8_t', 8),
});
export const sockaddr_un = koffi.struct('tr_sockaddr_un', {
  sun_family: 'uint16_t',
  sun_path: koffi.array('uint8_t', 108),
});
/** struct epoll_event is packed on x86_64 (12 bytes). */
export const epoll_event = koffi.pack('tr_epoll_event', { events: 'uint32_t', data: 'uint64_t' });
export const ucred = koffi.struct('tr_ucred', { pid: 'int32_t', uid: 'uint32_t', gid: 'uint32_t' });

const SIZE = {
  iovec: koffi.sizeof(iovec),
  mmsghdr: koffi.sizeof(mmsghdr),
  sockaddr_in: koffi.sizeof(sockaddr_in),
  sockaddr_in6: koffi.sizeof(sockaddr_in6),
  sockaddr_ll: koffi.sizeof(sockaddr_ll),
  sockaddr_un: koffi.sizeof(sockaddr_un),
  epoll_event: koffi.sizeof(epoll_event),
  ucred: koffi.sizeof(ucred),
};
const OFF = {
  msg_name: koffi.offsetof(msghdr, 'msg_name'),
  msg_namelen: koffi.offsetof(msghdr, 'msg_namelen'),
  msg_iov: koffi.offsetof(msghdr, 'msg_iov'),
  msg_iovlen: koffi.offsetof(msghdr, 'msg_iovlen'),
  msg_len: koffi.offsetof(mmsghdr, 'msg_len'),
  iov_base: koffi.offsetof(iovec, 'iov_base'),
  iov_len: koffi.offsetof(iovec, 'iov_len'),
  sin_addr: koffi.offsetof(sockaddr_in, 'sin_addr'),
  sin6_addr: koffi.offsetof(sockaddr_in6, 'sin6_addr'),
  sin6_scope_id: koffi.offsetof(sockaddr_in6, 'sin6_scope_id'),
  sll_protocol: koffi.offsetof(sockaddr_ll, 'sll_protocol'),
  sll_ifindex: koffi.offsetof(sockaddr_ll, 'sll_ifindex'),
  sun_path: koffi.offsetof(sockaddr_un, 'sun_path'),
  ep_data: koffi.offsetof(epoll_event, 'data'),
};

// ---- functions ------------------------------------------------------------
const c = {
  close: lib.func('int close(int fd)'),
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  setsockopt: lib.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)'),
  getsockopt: lib.func('int getsockopt(int fd, int level, int optname, void *optval, void *optlen)'),
  bind: lib.func('int bind(int fd, const void *addr, uint32_t addrlen)'),
  sendto: lib.func('long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
  recv: lib.func('long recv(int fd, void *buf, size_t len, int flags)'),
  // The message vector is passed as a plain address so a batch can start mid-array without pointer objects.
  sendmmsg: lib.func('int sendmmsg(int fd, uintptr_t msgvec, unsigned int vlen, int flags)'),
  if_nametoindex: lib.func('unsigned int if_nametoindex(const char *ifname)'),
  mmap: lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
  munmap: lib.func('int munmap(void *addr, size_t length)'),
  sysconf: lib.func('long sysconf(int name)'),
  epoll_create1: lib.func('int epoll_create1(int flags)'),
  epoll_ctl: lib.func('int epoll_ctl(int epfd, int op, int fd, void *event)'),
  epoll_wait: lib.func('int epoll_wait(int epfd, void *events, int maxevents, int timeout)'),
  strerror: lib.func('const char *strerror(int errnum)'),
  flock: lib.func('int flock(int fd, int operation)'),
  vsnprintf: lib.func('int vsnprintf(void *buf, size_t size, const char *fmt, void *ap)'),
  eventfd: lib.func('int eventfd(unsigned int initval, int flags)'),
  gettid: lib.func('int gettid(void)'),
  setpriority: lib.func('int setpriority(int which, unsigned int who, int prio)'),
  sched_setscheduler: lib.func('int sched_setscheduler(int pid, int policy, const void *param)'),
  prctl: lib.func('int prctl(int option, const char *arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)'),
  write: lib.func('long write(int fd, const void *buf, size_t count)'),
  read: lib.func('long read(int fd, void *buf, size_t count)'),
};

/** Opaque native pointer as koffi hands it out. */
export type Pointer = object;

export function errno(): number {
  return koffi.errno();
}

export function strerror(n: number): string {
  return (c.strerror(n) as string | null) ?? `errno ${n}`;
}

/** Build the NativeError for the errno the last call left (read it first thing). */
export function lastError(step: string, target?: string, err: number = koffi.errno()): NativeError {
  return new NativeError(step, err, strerror(err), target);
}

/**
 * vsnprintf(3) of a va_list received by a native callback (e.g. libbpf's
 * print hook), valid only during that callback. Output is cut at `max` bytes.
 */
export function vformat(fmt: string, ap: unknown, max = 4096): string {
  const buf = Buffer.alloc(max);
  const n = c.vsnprintf(buf, max, fmt, ap) as number;
  if (n < 0) return fmt;
  return buf.subarray(0, Math.min(n, max - 1)).toString('utf8');
}

export function close(fd: number, target?: string): void {
  if (c.close(fd) < 0) throw lastError('close', target);
}

export function socket(domain: number, type: number, protocol: number, target?: string): number {
  const fd = c.socket(domain, type, protocol) as number;
  if (fd < 0) throw lastError('socket', target);
  return fd;
}

export function setsockopt(fd: number, level: number, name: number, value: Uint8Array, step = 'setsockopt', target?: string): void {
  if (c.setsockopt(fd, level, name, value, value.byteLength) < 0) throw lastError(step, target);
}

export function setsockoptInt(fd: number, level: number, name: number, value: number, step = 'setsockopt', target?: string): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value);
  setsockopt(fd, level, name, b, step, target);
}

export function getsockoptInt(fd: number, level: number, name: number, step = 'getsockopt', target?: string): number {
  const b = Buffer.alloc(4);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  if (c.getsockopt(fd, level, name, b, len) < 0) throw lastError(step, target);
  return b.readInt32LE();
}

/** SO_BINDTODEVICE: the socket sends (and routes) only through `ifname`. */
export function bindToDevice(fd: number, ifname: string): void {
  setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, Buffer.from(ifname + '\0'), 'SO_BINDTODEVICE', ifname);
}

/** Ask for at least `bytes` of send buffer; as root past wmem_max (SO_SNDBUFFORCE), else as much as allowed. */
export function setSendBuffer(fd: number, bytes: number, target?: string): void {
  try {
    setsockoptInt(fd, SOL_SOCKET, SO_SNDBUFFORCE, bytes, 'SO_SNDBUFFORCE', target);
  } catch {
    setsockoptInt(fd, SOL_SOCKET, SO_SNDBUF, bytes, 'SO_SNDBUF', target);
  }
}

/** bind(2) an AF_PACKET socket to an interface (sockaddr_ll). `protocol` in host order; 0 = receive nothing. */
export function bindPacket(fd: number, ifindex: number, protocol: number, target?: string): void {
  const sa = Buffer.alloc(SIZE.sockaddr_ll);
  sa.writeUInt16LE(AF_PACKET, 0);
  sa.writeUInt16BE(protocol, OFF.sll_protocol);
  sa.writeInt32LE(ifindex, OFF.sll_ifindex);
  if (c.bind(fd, sa, sa.length) < 0) throw lastError('bind AF_PACKET', target);
}

/** sendto(2); returns bytes sent. */
export function sendto(fd: number, data: Uint8Array, flags: number, addr: Uint8Array | null, target?: string): number {
  const n = Number(c.sendto(fd, data, data.byteLength, flags, addr, addr?.byteLength ?? 0));
  if (n < 0) throw lastError('sendto', target);
  return n;
}

/** recv(2) into `buf`; returns the bytes received, or -errno (EAGAIN with MSG_DONTWAIT and nothing queued). */
export function recv(fd: number, buf: Uint8Array, flags: number): number {
  const n = Number(c.recv(fd, buf, buf.byteLength, flags));
  return n < 0 ? -koffi.errno() : n;
}

/**
 * sendmmsg(2) on `vlen` messages starting at native address `msgvec`.
 * Returns the number sent (>= 0), or -errno when the first message failed:
 * the caller is a send loop that counts failures and goes on, so the errno
 * is a value here rather than an exception.
 */
export function sendmmsg(fd: number, msgvec: number, vlen: number, flags: number): number {
  const n = c.sendmmsg(fd, msgvec, vlen, flags) as number;
  return n < 0 ? -koffi.errno() : n;
}

/** if_nametoindex(3); 0 when there is no such interface. */
export function ifNameToIndex(name: string): number {
  return c.if_nametoindex(name) as number;
}

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

/**
 * flock(fd, LOCK_EX | LOCK_NB) (flock(2)): true when this open file
 * description now holds the exclusive lock, false when another holds it.
 * The kernel drops the lock when the last descriptor of it closes, so also
 * when its process dies, however it dies.
 */
export function tryLockExclusive(fd: number, target?: string): boolean {
  if ((c.flock(fd, LOCK_EX | LOCK_NB) as number) === 0) return true;
  const err = koffi.errno();
  if (err === EWOULDBLOCK) return false;
  throw lastError('flock', target, err);
}

let pageSizeCache = 0;
export function pageSize(): number {
  if (!pageSizeCache) pageSizeCache = Number(c.sysconf(_SC_PAGESIZE));
  return pageSizeCache;
}

/** mmap(2) of a file descriptor (MAP_SHARED); returns the mapping and an ArrayBuffer over it (no copy). */
export function mmap(length: number, prot: number, fd: number, offset: number, target?: string, extraFlags = 0): { ptr: Pointer; buffer: ArrayBuffer } {
  const ptr = c.mmap(null, length, prot, MAP_SHARED | extraFlags, fd, offset) as Pointer | null;
  // MAP_FAILED is (void *)-1.
  if (ptr === null || koffi.address(ptr) === 0xffffffffffffffffn) throw lastError('mmap', target);
  return { ptr, buffer: koffi.view(ptr, length) };
}

export function munmap(ptr: Pointer, length: number, target?: string): void {
  if (c.munmap(ptr, length) < 0) throw lastError('munmap', target);
}

/** Native memory that lives until free(): for buffers a worker thread or the kernel reads. */
export class NativeBuffer {
  readonly ptr: Pointer;
  readonly address: number;
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  private freed = false;
  constructor(readonly size: number) {
    this.ptr = koffi.alloc('uint8_t', size) as Pointer;
    // User-space addresses are below 2^47: a Number holds them exactly.
    this.address = Number(koffi.address(this.ptr));
    const ab = koffi.view(this.ptr, size);
    this.bytes = new Uint8Array(ab);
    this.bytes.fill(0);
    this.dv = new DataView(ab);
  }
  /** Store a native pointer value (address) at byte offset `off`. */
  setPointer(off: number, address: number): void {
    this.dv.setBigUint64(off, BigInt(address), true);
  }
  free(): void {
    if (this.freed) return;
    this.freed = true;
    koffi.free(this.ptr);
  }
}

// ---- epoll ----------------------------------------------------------------

export function epollCreate(target?: string): number {
  const fd = c.epoll_create1(EPOLL_CLOEXEC) as number;
  if (fd < 0) throw lastError('epoll_create1', target);
  return fd;
}

export function epollCtl(epfd: number, op: number, fd: number, events: number, data = 0, target?: string): void {
  const ev = Buffer.alloc(SIZE.epoll_event);
  ev.writeUInt32LE(events >>> 0, 0);
  ev.writeBigUInt64LE(BigInt(data), OFF.ep_data);
  if (c.epoll_ctl(epfd, op, fd, op === EPOLL_CTL_DEL ? null : ev) < 0) throw lastError('epoll_ctl', target);
}

/** A reusable native array of struct epoll_event (native, so an async wait on a worker thread can fill it). */
export class EpollEvents {
  readonly capacity: number;
  private readonly mem: NativeBuffer;
  constructor(capacity = 8) {
    this.capacity = capacity;
    this.mem = new NativeBuffer(capacity * SIZE.epoll_event);
  }
  get ptr(): Pointer {
    return this.mem.ptr;
  }
  events(i: number): number {
    return this.mem.dv.getUint32(i * SIZE.epoll_event, true);
  }
  /** Low 32 bits of epoll_event.data (what epollCtl stored). */
  data(i: number): number {
    return this.mem.dv.getUint32(i * SIZE.epoll_event + OFF.ep_data, true);
  }
  free(): void {
    this.mem.free();
  }
}

/** epoll_wait(2) on the calling thread; EINTR counts as a timeout (0). */
export function epollWait(epfd: number, events: EpollEvents, timeoutMs: number, target?: string): number {
  const n = c.epoll_wait(epfd, events.ptr, events.capacity, timeoutMs) as number;
  if (n >= 0) return n;
  const err = koffi.errno();
  if (err === E.EINTR) return 0;
  throw lastError('epoll_wait', target, err);
}

/**
 * epoll_wait(2) on a libuv worker thread (koffi async call): the event loop
 * keeps running while it blocks. Keep the timeout short so a stop is
 * prompt. errno of the worker thread is not visible here, so a failure is
 * re-checked with a zero-timeout wait on this thread, which either succeeds
 * (a transient EINTR) or throws the real error.
 */
export function epollWaitAsync(epfd: number, events: EpollEvents, timeoutMs: number, target?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    c.epoll_wait.async(epfd, events.ptr, events.capacity, timeoutMs, (err: unknown, n: number) => {
      if (err) return reject(err);
      if (n >= 0) return resolve(n);
      try {
        resolve(epollWait(epfd, events, 0, target));
      } catch (e) {
        reject(e);
      }
    });
  });
}

// ---- thread priority -----------------------------------------------------------

const PRIO_PROCESS = 0;

/**
 * Set the nice value of the CALLING thread only (on Linux, setpriority(2)
 * with a thread id applies to that thread: see sched(7), "the nice value is
 * a per-thread attribute"). Lowering it needs CAP_SYS_NICE or an RLIMIT_NICE
 * that allows it (systemd: LimitNICE=). Throws NativeError (EACCES/EPERM).
 */
export function setThreadNice(nice: number): void {
  const tid = c.gettid() as number;
  if (c.setpriority(PRIO_PROCESS, tid, nice) < 0) throw lastError('setpriority', `thread ${tid} nice ${nice}`);
}

const SCHED_FIFO = 1;

/**
 * Make the CALLING thread SCHED_FIFO at `priority` (1..99): it then runs
 * the moment it wakes, ahead of every normal task on its CPU (sched(7)).
 * Needs CAP_SYS_NICE or RLIMIT_RTPRIO >= priority (systemd: LimitRTPRIO=).
 * The kernel's RT throttling (sched_rt_runtime_us) still leaves normal
 * tasks 5 % of a CPU should the thread never sleep. Throws NativeError.
 */
export function setThreadFifo(priority: number): void {
  const tid = c.gettid() as number;
  if (c.sched_setscheduler(tid, SCHED_FIFO, new Int32Array([priority])) < 0) throw lastError('sched_setscheduler', `thread ${tid} SCHED_FIFO ${priority}`);
}

const SCHED_OTHER = 0;

/**
 * Put the CALLING thread back to SCHED_OTHER (always allowed, sched(7)) and
 * set its nice value again (`nice`, null: leave it). Throws NativeError.
 */
export function setThreadOther(nice: number | null): void {
  const tid = c.gettid() as number;
  if (c.sched_setscheduler(tid, SCHED_OTHER, new Int32Array([0])) < 0) throw lastError('sched_setscheduler', `thread ${tid} SCHED_OTHER`);
  if (nice !== null && c.setpriority(PRIO_PROCESS, tid, nice) < 0) throw lastError('setpriority', `thread ${tid} nice ${nice}`);
}

const PR_SET_NAME = 15;

/** Name the calling thread (comm, 15 bytes at most) for top -H, ps -L and perf. Best effort. */
export function setThreadName(name: string): void {
  c.prctl(PR_SET_NAME, name.slice(0, 15), 0, 0, 0);
}

// ---- eventfd doorbell ------------------------------------------------------

const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;

/**
 * An eventfd(2) used as a doorbell between threads: ring() adds 1 to its
 * counter (making it readable), clear() reads the counter back to 0. The
 * event thread watches it in the same epoll set as the ring buffer, so a
 * command from the main thread wakes a thread blocked in epoll_wait.
 * Non-blocking: clear() on a zero counter is a no-op (EAGAIN).
 */
export class EventFd {
  readonly fd: number;
  private readonly one = new BigUint64Array([1n]);
  private readonly sink = new BigUint64Array(1);
  constructor(fd?: number) {
    if (fd !== undefined) {
      this.fd = fd;
      return;
    }
    const n = c.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) as number;
    if (n < 0) throw lastError('eventfd');
    this.fd = n;
  }
  /** Wake the waiter. Never throws: a full counter (2^64-2) is already readable. */
  ring(): void {
    c.write(this.fd, this.one, 8);
  }
  clear(): void {
    c.read(this.fd, this.sink, 8);
  }
  close(): void {
    close(this.fd);
  }
}

// ---- readiness on the event loop --------------------------------------------

/** What watchReadable returns: stop watching (idempotent). */
export interface FdWatch {
  close(): void;
}

interface KoffiPollHandle {
  close(): void;
}
type KoffiPoll = (fd: number, opts: { readable: boolean }, cb: (status: number) => void) => KoffiPollHandle;

const koffiPoll: KoffiPoll | undefined = (koffi as unknown as { node?: { poll?: KoffiPoll } }).node?.poll;

/** Whether watchReadable is available (koffi's libuv poll integration, koffi >= 2.13). */
export const canWatchFds = typeof koffiPoll === 'function';

/**
 * Call `onReadable` from the event loop whenever `fd` is readable (libuv
 * uv_poll: level-triggered, no extra thread). koffi marks this API as not
 * yet documented; callers keep the epoll path as a fallback (canWatchFds).
 * `status` < 0 is a libuv error (e.g. the fd went bad). libuv puts the fd in
 * non-blocking mode. Close the watch before closing the fd.
 */
export function watchReadable(fd: number, onReadable: (status: number) => void): FdWatch {
  if (!koffiPoll) throw new NativeError('watch fd (koffi.node.poll missing)', E.EINVAL, strerror(E.EINVAL), `fd ${fd}`);
  const h = koffiPoll(fd, { readable: true }, (status) => onReadable(status));
  let open = true;
  return {
    close() {
      if (!open) return;
      open = false;
      h.close();
    },
  };
}

// ---- Unix sockets ---------------------------------------------------------

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** SO_PEERCRED of a connected Unix socket: who is on the other end (kernel-verified). */
export function getPeerCred(fd: number): PeerCred {
  const buf = Buffer.alloc(SIZE.ucred);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(SIZE.ucred);
  if (c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, len) < 0) throw lastError('getsockopt SO_PEERCRED', `fd ${fd}`);
  return { pid: buf.readInt32LE(0), uid: buf.readUInt32LE(4), gid: buf.readUInt32LE(8) };
}

/** sockaddr_un for `path`; a leading '@' names the abstract namespace (first byte 0, no terminator). */
export function unixAddress(path: string): Buffer {
  const abstract = path.startsWith('@');
  const name = Buffer.from(abstract ? path.slice(1) : path);
  const max = SIZE.sockaddr_un - OFF.sun_path - 1; // abstract: the leading 0; a path: its terminating 0
  if (name.length === 0 || name.length > max) throw new ValidationError('socket path', path, `must be 1..${max} bytes`);
  const sa = Buffer.alloc(SIZE.sockaddr_un);
  sa.writeUInt16LE(AF_UNIX, 0);
  if (abstract) {
    name.copy(sa, OFF.sun_path + 1);
    return sa.subarray(0, OFF.sun_path + 1 + name.length);
  }
  name.copy(sa, OFF.sun_path);
  return sa.subarray(0, OFF.sun_path + name.length + 1);
}

/**
 * A Unix datagram socket kept open for repeated sends to `path` (the
 * journal's native socket). Sends never block (MSG_DONTWAIT): a full
 * receiver throws NativeError EAGAIN and the caller falls back.
 */
export function unixDatagramSender(path: string): (data: Buffer) => void {
  const addr = unixAddress(path);
  const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, path);
  return (data) => void sendto(fd, data, MSG_DONTWAIT | MSG_NOSIGNAL, addr, path);
}

/** Send one datagram to a Unix datagram socket (sd_notify's NOTIFY_SOCKET). */
export function unixDatagramSend(path: string, data: Buffer): void {
  const addr = unixAddress(path);
  const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, path);
  try {
    sendto(fd, data, MSG_NOSIGNAL, addr, path);
  } finally {
    c.close(fd);
  }
}

// ---- sendmmsg batches -----------------------------------------------------

/**
 * A fixed set of message slots in native memory for sendmmsg: per slot an
 * mmsghdr, one iovec, a destination sockaddr (room for sockaddr_in6) and a
 * data buffer of `slotSize` bytes. Pointers are wired once; filling a slot
 * is a byte copy plus a couple of integer stores, no allocation.
 */
export class MsgBatch {
  readonly capacity: number;
  readonly slotSize: number;
  private readonly mem: NativeBuffer;
  private readonly hdrOff = 0;
  private readonly iovOff: number;
  private readonly nameOff: number;
  private readonly dataOff: number;
  private readonly slotStride: number;
  private static readonly NAME_SIZE = 32; // >= sizeof(sockaddr_in6), 8-aligned

  constructor(capacity: number, slotSize: number) {
    this.capacity = capacity;
    this.slotSize = slotSize;
    this.iovOff = this.hdrOff + capacity * SIZE.mmsghdr;
    this.nameOff = this.iovOff + capacity * SIZE.iovec;
    this.dataOff = this.nameOff + capacity * MsgBatch.NAME_SIZE;
    const slot = (slotSize + 63) & ~63;
    this.mem = new NativeBuffer(this.dataOff + capacity * slot);
    const base = this.mem.address;
    for (let i = 0; i < capacity; i++) {
      const h = this.hdrOff + i * SIZE.mmsghdr;
      const iov = this.iovOff + i * SIZE.iovec;
      this.mem.setPointer(h + OFF.msg_name, base + this.nameOff + i * MsgBatch.NAME_SIZE);
      this.mem.setPointer(h + OFF.msg_iov, base + iov);
      this.mem.dv.setUint32(h + OFF.msg_iovlen, 1, true);
      this.mem.setPointer(iov + OFF.iov_base, base + this.dataOff + i * slot);
    }
    this.slotStride = slot;
  }

  /** Copy `data` into slot i; false when it does not fit. Clears the destination (bound sockets need none). */
  setData(i: number, data: Uint8Array): boolean {
    if (data.length > this.slotSize) return false;
    this.mem.bytes.set(data, this.dataOff + i * this.slotStride);
    // size_t: low word is the length, high word stays 0 from the initial fill.
    this.mem.dv.setUint32(this.iovOff + i * SIZE.iovec + OFF.iov_len, data.length, true);
    this.mem.dv.setUint32(this.hdrOff + i * SIZE.mmsghdr + OFF.msg_namelen, 0, true);
    return true;
  }

  /** Destination of slot i: sockaddr_in with the 4 bytes at src[off..off+4). */
  setDestV4(i: number, src: Uint8Array, off: number): void {
    const n = this.nameOff + i * MsgBatch.NAME_SIZE;
    const b = this.mem.bytes;
    this.mem.dv.setUint32(n, AF_INET, true); // family + port 0
    for (let k = 0; k < 4; k++) b[n + OFF.sin_addr + k] = src[off + k];
    this.mem.dv.setUint32(this.hdrOff + i * SIZE.mmsghdr + OFF.msg_namelen, SIZE.sockaddr_in, true);
  }

  /** Destination of slot i: sockaddr_in6 with the 16 bytes at src[off..off+16), scope = ifindex (for link-local). */
  setDestV6(i: number, src: Uint8Array, off: number, scopeId: number): void {
    const n = this.nameOff + i * MsgBatch.NAME_SIZE;
    const b = this.mem.bytes;
    this.mem.dv.setUint32(n, AF_INET6, true);
    this.mem.dv.setUint32(n + 4, 0, true); // flowinfo
    for (let k = 0; k < 16; k++) b[n + OFF.sin6_addr + k] = src[off + k];
    this.mem.dv.setUint32(n + OFF.sin6_scope_id, scopeId, true);
    this.mem.dv.setUint32(this.hdrOff + i * SIZE.mmsghdr + OFF.msg_namelen, SIZE.sockaddr_in6, true);
  }

  /** Bytes the kernel reported for slot i after a send. */
  sentLength(i: number): number {
    return this.mem.dv.getUint32(this.hdrOff + i * SIZE.mmsghdr + OFF.msg_len, true);
  }

  /** sendmmsg of slots [start, start+count); count sent or -errno. */
  send(fd: number, start: number, count: number, flags: number): number {
    return sendmmsg(fd, this.mem.address + this.hdrOff + start * SIZE.mmsghdr, count, flags);
  }

  free(): void {
    this.mem.free();
  }
}
