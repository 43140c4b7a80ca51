/**
 * Loads the XDP object and exposes its program, maps and XDP links.
 *
 * Lifecycle as in libbpf-bootstrap: open, configure (max_entries), load,
 * attach; close in reverse order (links, then the object). XDP is attached
 * with a bpf_link, so the kernel detaches it when the last fd closes, which
 * includes the process dying: a crashed daemon never leaves a filter behind.
 */
import { fileURLToPath } from 'node:url';
import { release } from 'node:os';
import { FLOWMEM_MASK_SECTION, MAP_FLOWMEM, MAP_TARGETS, PROG_NAME } from '../contract.js';
import { NativeError, TcpresetError, ValidationError } from '../errors.js';
import * as L from '../native/libbpf.js';
import { close as closeFd, ifNameToIndex } from '../native/libc.js';

/**
 * <root>/build/tcpreset.bpf.o, where root is the repo or install root (the
 * directory holding dist/ and build/); TCPRESET_BPF_OBJ overrides.
 */
export function defaultObjectPath(): string {
  const env = process.env.TCPRESET_BPF_OBJ;
  if (env) return env;
  // This file runs as <root>/dist/src/bpf/object.js.
  return fileURLToPath(new URL('../../../build/tcpreset.bpf.o', import.meta.url));
}

let ncpuCache = 0;
/** Possible CPUs: the number of slots in a per-CPU map value. */
export function numPossibleCpus(): number {
  if (ncpuCache > 0) return ncpuCache;
  const n = L.libbpf_num_possible_cpus();
  if (n <= 0) throw L.failure('count possible CPUs', n);
  return (ncpuCache = n);
}

const EPERM = 1;
const EACCES = 13;
const EBUSY = 16;
const EEXIST = 17;
const NO_FALLBACK_ERRNOS = new Set([EPERM, EACCES, EBUSY, EEXIST]);

export type XdpMode = 'native' | 'generic';

/** One XDP attachment (a bpf_link). close() detaches; so does process death. */
export class XdpLink {
  readonly ifname: string;
  readonly ifindex: number;
  readonly mode: XdpMode;
  /** The bpf_link fd; -1 once closed. */
  private fd: number;
  private readonly onClose: (link: XdpLink) => void;

  /** @internal made by BpfObject.attachXdp */
  constructor(ifname: string, ifindex: number, mode: XdpMode, fd: number, onClose: (link: XdpLink) => void) {
    this.ifname = ifname;
    this.ifindex = ifindex;
    this.mode = mode;
    this.fd = fd;
    this.onClose = onClose;
  }

  get closed(): boolean {
    return this.fd < 0;
  }

  /** Detach: closing the only fd of the link releases it. Idempotent. */
  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    this.onClose(this);
    closeFd(fd, `XDP link on ${this.ifname}`);
  }
}

/** A map of a loaded object, accessed by fd. Keys and values are raw bytes in the contract's layout. */
export class BpfMap {
  readonly fd: number;
  readonly name: string;
  /** enum bpf_map_type */
  readonly type: number;
  readonly keySize: number;
  /** Size of one value (one CPU's slot for per-CPU maps). */
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly perCpu: boolean;
  /** Bytes a lookup returns and an update takes: ncpu * roundup(valueSize, 8) for per-CPU maps. */
  readonly valueBytes: number;
  private readonly isOpen: () => boolean;

  /** @internal made by BpfObject.map */
  constructor(ptr: L.BpfMapPtr, name: string, isOpen: () => boolean) {
    this.name = name;
    this.fd = L.bpf_map__fd(ptr);
    this.type = L.bpf_map__type(ptr);
    this.keySize = L.bpf_map__key_size(ptr);
    this.valueSize = L.bpf_map__value_size(ptr);
    this.maxEntries = L.bpf_map__max_entries(ptr);
    this.perCpu = L.isPerCpuMapType(this.type);
    this.valueBytes = this.perCpu ? numPossibleCpus() * ((this.valueSize + 7) & ~7) : this.valueSize;
    this.isOpen = isOpen;
  }

  private check(): void {
    if (!this.isOpen()) throw new TcpresetError('E_INTERNAL', `map "${this.name}" used after its BPF object was closed`);
  }

  /** Insert or replace (flags: BPF_ANY 0, BPF_NOEXIST 1, BPF_EXIST 2). The hot path: one FFI call, no copies. */
  update(key: Uint8Array, value: Uint8Array, flags = 0): void {
    this.check();
    const ret = L.bpf_map_update_elem(this.fd, key, value, flags);
    if (ret < 0) {
      // E2BIG from a hash map means it is full: say so, the errno text alone misleads.
      const full = ret === -7 ? ` (full: ${this.maxEntries} entries)` : '';
      throw L.failure(`update map "${this.name}"${full}`, ret);
    }
  }

  /** Remove a key; false when it was absent. */
  delete(key: Uint8Array): boolean {
    this.check();
    const ret = L.bpf_map_delete_elem(this.fd, key);
    if (ret === 0) return true;
    if (ret === -2 /* ENOENT */) return false;
    throw L.failure(`delete from map "${this.name}"`, ret);
  }

  /** The value for key (a fresh copy), or null when absent. Per-CPU maps: valueBytes (ncpu 8-byte-aligned slots). */
  lookup(key: Uint8Array, out: Uint8Array = new Uint8Array(this.valueBytes)): Uint8Array | null {
    this.check();
    if (out.byteLength < this.valueBytes) throw new RangeError(`lookup buffer of ${out.byteLength} bytes, map "${this.name}" needs ${this.valueBytes}`);
    const ret = L.bpf_map_lookup_elem(this.fd, key, out);
    if (ret === 0) return out;
    if (ret === -2 /* ENOENT */) return null;
    throw L.failure(`look up map "${this.name}"`, ret);
  }

  /** Every key, by walking bpf_map_get_next_key (a key deleted meanwhile may restart the walk in the kernel; fine for inspection). */
  keys(): Uint8Array[] {
    this.check();
    const keys: Uint8Array[] = [];
    let prev: Uint8Array | null = null;
    for (;;) {
      const next = new Uint8Array(this.keySize);
      const ret = L.bpf_map_get_next_key(this.fd, prev, next);
      if (ret === -2 /* ENOENT: past the last key */) return keys;
      if (ret < 0) throw L.failure(`walk keys of map "${this.name}"`, ret);
      keys.push(next);
      prev = next;
    }
  }
}

/** Multi-buffer XDP (BPF_F_XDP_HAS_FRAGS) arrived in Linux 5.18. */
export function kernelKnowsXdpFrags(kernelRelease: string = release()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(kernelRelease);
  if (!m) return true;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 5 || (major === 5 && minor >= 18);
}

export interface LoadOptions {
  /** Capacity of the targets map (bpf_map__set_max_entries before load). */
  maxTargets?: number;
  /** Slots of the flow memory (connections; a power of two, at least 2; 0 = off); default FLOWMEM_DEFAULT. */
  flowMemory?: number;
  /** Program to expose as progFd; default the contract's PROG_NAME. */
  program?: string;
}

export interface TestRunResult {
  /** The program's return value (XDP_PASS = 2). */
  retval: number;
  /** Average kernel time per repetition. */
  durationNs: number;
  /** The frame after the program ran, when opts.dataOut was given (a subarray of it). */
  dataOut?: Uint8Array;
}

/** A loaded BPF object: its program fd, its maps, the XDP links it made. */
export class BpfObject {
  readonly path: string;
  readonly progFd: number;
  readonly progName: string;
  private obj: L.BpfObjectPtr | null;
  private readonly maps = new Map<string, BpfMap>();
  private readonly links = new Set<XdpLink>();
  /** Maps made after load (extra ring buffers), closed with the object. */
  private readonly extraFds: number[] = [];

  private constructor(path: string, obj: L.BpfObjectPtr, progName: string, progFd: number) {
    this.path = path;
    this.obj = obj;
    this.progName = progName;
    this.progFd = progFd;
  }

  /** bpf_object__open_file, set_max_entries (targets, flowmem), bpf_object__load. Needs CAP_BPF (root). */
  static load(path: string = defaultObjectPath(), opts: LoadOptions = {}): BpfObject {
    const { maxTargets, flowMemory, program = PROG_NAME } = opts;
    if (maxTargets !== undefined && (!Number.isSafeInteger(maxTargets) || maxTargets < 1 || maxTargets > 0xffffffff)) {
      throw new ValidationError('maxTargets', maxTargets, 'must be an integer from 1 to 4294967295');
    }
    if (flowMemory !== undefined && flowMemory !== 0 && (!Number.isSafeInteger(flowMemory) || flowMemory < 2 || flowMemory > 2 ** 31 || (flowMemory & (flowMemory - 1)) !== 0)) {
      throw new ValidationError('flowMemory', flowMemory, 'must be 0 (off) or a power of two from 2 to 2147483648');
    }
    const obj = L.bpf_object__open_file(path, null);
    if (obj === null) {
      const errno = L.failureErrno();
      // libbpf says only ENOENT; name the missing file so the cause is obvious.
      throw L.failure(`open BPF object ${path}`, undefined, undefined, errno);
    }
    try {
      // Off: one slot the program never touches (an array cannot be empty).
      const fmSlots = flowMemory === 0 ? 1 : flowMemory;
      for (const [name, n] of [[MAP_TARGETS, maxTargets], [MAP_FLOWMEM, fmSlots]] as const) {
        if (n === undefined) continue;
        const m = L.bpf_object__find_map_by_name(obj, name);
        if (m === null) throw new TcpresetError('E_INTERNAL', `BPF object ${path} has no map "${name}" to size`);
        const ret = L.bpf_map__set_max_entries(m, n);
        if (ret < 0) throw L.failure(`set max_entries of map "${name}" to ${n}`, ret);
      }
      if (flowMemory !== undefined) {
        // The program indexes the table with hash & tr_fm_mask: it must match the size.
        const m = L.bpf_object__find_map_by_name(obj, FLOWMEM_MASK_SECTION);
        if (m === null) throw new TcpresetError('E_INTERNAL', `BPF object ${path} has no section "${FLOWMEM_MASK_SECTION}" for the flow memory mask`);
        const mask = new Uint8Array(4);
        new DataView(mask.buffer).setUint32(0, flowMemory === 0 ? 0 : flowMemory - 1, true);
        const ret = L.bpf_map__set_initial_value(m, mask, 4);
        if (ret < 0) throw L.failure(`set the flow memory mask in "${FLOWMEM_MASK_SECTION}"`, ret);
      }
      if (!kernelKnowsXdpFrags()) {
        // The object is built "xdp.frags" (needed for native XDP behind a 9000-byte MTU peer);
        // 5.8-5.17 kernels refuse the flag, and without it the program is what they expect.
        const p = L.bpf_object__find_program_by_name(obj, program);
        if (p !== null) L.bpf_program__set_flags(p, L.bpf_program__flags(p) & ~L.BPF_F_XDP_HAS_FRAGS);
      }
      const ret = L.bpf_object__load(obj);
      if (ret < 0) throw L.failure(`load BPF object ${path}`, ret);
      const prog = L.bpf_object__find_program_by_name(obj, program);
      if (prog === null) throw new TcpresetError('E_INTERNAL', `BPF object ${path} has no program "${program}"`);
      const fd = L.bpf_program__fd(prog);
      if (fd < 0) throw L.failure(`get fd of program "${program}"`, fd);
      return new BpfObject(path, obj, program, fd);
    } catch (err) {
      L.bpf_object__close(obj);
      throw err;
    }
  }

  get closed(): boolean {
    return this.obj === null;
  }

  private handle(): L.BpfObjectPtr {
    if (this.obj === null) throw new TcpresetError('E_INTERNAL', `BPF object ${this.path} used after close`);
    return this.obj;
  }

  /** A map by name (cached); TcpresetError E_INTERNAL when the object has none by that name. */
  map(name: string): BpfMap {
    const cached = this.maps.get(name);
    if (cached) return cached;
    const ptr = L.bpf_object__find_map_by_name(this.handle(), name);
    if (ptr === null) throw new TcpresetError('E_INTERNAL', `BPF object ${this.path} has no map "${name}"`, { details: { map: name } });
    const m = new BpfMap(ptr, name, () => this.obj !== null);
    this.maps.set(name, m);
    return m;
  }

  /**
   * Run the program once per repetition on `frame` (BPF_PROG_TEST_RUN).
   * With opts.dataOut, the frame as the program left it is copied there.
   */
  testRun(frame: Uint8Array, opts: { repeat?: number; dataOut?: Uint8Array } = {}): TestRunResult {
    this.handle();
    const repeat = opts.repeat ?? 1;
    if (!Number.isSafeInteger(repeat) || repeat < 1 || repeat > 0x7fffffff) throw new ValidationError('repeat', repeat, 'must be an integer from 1 to 2147483647');
    const o: L.TestRunOptsValue = {
      sz: L.TEST_RUN_OPTS_SIZE,
      data_in: frame,
      data_size_in: frame.byteLength,
      data_out: opts.dataOut ?? null,
      data_size_out: opts.dataOut?.byteLength ?? 0,
      repeat,
    };
    const ret = L.bpf_prog_test_run_opts(this.progFd, o);
    if (ret < 0) throw L.failure(`test run of program "${this.progName}"`, ret);
    const res: TestRunResult = { retval: o.retval ?? 0, durationNs: o.duration ?? 0 };
    if (opts.dataOut) res.dataOut = opts.dataOut.subarray(0, Math.min(o.data_size_out ?? 0, opts.dataOut.byteLength));
    return res;
  }

  /**
   * Attach the program to an interface's XDP hook with a bpf_link.
   * 'auto' tries native (driver) mode, then generic (skb) mode.
   */
  attachXdp(ifname: string, mode: 'auto' | XdpMode = 'auto'): XdpLink {
    this.handle();
    const ifindex = ifNameToIndex(ifname);
    if (ifindex === 0) throw new TcpresetError('E_IFACE', `interface "${ifname}" does not exist`, { details: { ifname } });
    const tryMode = (m: XdpMode): number =>
      L.bpf_link_create(this.progFd, ifindex, L.BPF_XDP, {
        sz: L.LINK_CREATE_OPTS_SIZE,
        flags: m === 'native' ? L.XDP_FLAGS_DRV_MODE : L.XDP_FLAGS_SKB_MODE,
      });
    let used: XdpMode = mode === 'generic' ? 'generic' : 'native';
    let fd = tryMode(used);
    // Fall back only when native mode itself is the problem (driver lacks XDP, MTU, ...):
    // a busy hook or missing privilege fails the same way in generic mode.
    if (fd < 0 && mode === 'auto' && !NO_FALLBACK_ERRNOS.has(-fd)) {
      const nativeErr = L.failure('attach XDP in native mode', fd, ifname);
      used = 'generic';
      fd = tryMode(used);
      if (fd < 0) {
        const errno = -fd;
        throw new NativeError(
          `attach XDP (native mode: ${L.errnoText(nativeErr.errno)} (errno ${nativeErr.errno}); generic mode)`,
          errno,
          L.errnoText(errno),
          ifname,
          { cause: nativeErr },
        );
      }
    }
    if (fd < 0) {
      const busy = -fd === EBUSY || -fd === EEXIST ? ` (${xdpHolder(ifindex, ifname)})` : '';
      throw L.failure(`attach XDP in ${used} mode${busy}`, fd, ifname);
    }
    const link = new XdpLink(ifname, ifindex, used, fd, (l) => this.links.delete(l));
    this.links.add(link);
    return link;
  }

  /** Links made by this object that are still attached. */
  get attached(): readonly XdpLink[] {
    return [...this.links];
  }

  /**
   * A further BPF_MAP_TYPE_RINGBUF of `bytes` (a power of two, at least a
   * page), owned by this object and closed with it: one per extra event
   * consumer, placed in an ARRAY_OF_MAPS slot by the caller. Returns its fd.
   */
  createRingBuffer(name: string, bytes: number): number {
    this.handle();
    const fd = L.bpf_map_create(L.BPF_MAP_TYPE.RINGBUF, name, 0, 0, bytes, null);
    if (fd < 0) throw L.failure(`create ring buffer "${name}" of ${bytes} bytes`, fd);
    this.extraFds.push(fd);
    return fd;
  }

  /** Detach every link it made, then free the object (program and maps). Idempotent. */
  close(): void {
    if (this.obj === null) return;
    for (const link of [...this.links]) link.close();
    for (const fd of this.extraFds.splice(0)) closeFd(fd);
    const obj = this.obj;
    this.obj = null;
    this.maps.clear();
    L.bpf_object__close(obj);
  }
}

/**
 * Why the XDP hook is taken, and what to do: names the program there. XDP
 * has one program per hook; other tools (xdp-filter, bpfman) attach through
 * libxdp's dispatcher, which tcpreset does not join (yet).
 */
function xdpHolder(ifindex: number, ifname: string): string {
  const p = L.xdpProgramOn(ifindex);
  const which = p === null ? 'an XDP program' : `XDP program "${p.name || '?'}" (id ${p.id}${p.name === 'xdp_dispatcher' ? ", libxdp's dispatcher: xdp-filter, xdp-loader or bpfman" : ''})`;
  const undo = p?.name === 'xdp_dispatcher' ? `xdp-loader unload ${ifname} --all` : `ip link set dev ${ifname} xdp off`;
  return `${ifname} already has ${which}; tcpreset needs the XDP hook of its sniff interface to itself: remove that program (${undo}) or mirror to another port`;
}
