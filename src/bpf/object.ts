/**
 * Loads the XDP object and exposes its program, maps and XDP links.
 *
 * Lifecycle as in libbpf-bootstrap: open, configure (max_entries), load,
 * attach; close in reverse order (links, then the object). XDP is attached
 * with a bpf_link, so the kernel detaches it when the last fd closes, which
 * includes the process dying: a crashed daemon never leaves a filter behind.
 */
import { fileURLToPath } from 'node:url';
import { readdirSync, readFileSync, rmdirSync, rmSync, statfsSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { FLOWMEM_MASK_SECTION, MAP_FLOWMEM, MAP_TARGETS, PROG_NAME } from './contract.js';
import { NativeError, TcpresetError, ValidationError } from '../core/errors.js';
import * as L from '../native/libbpf.js';
import * as X from '../native/libxdp.js';
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
const ENOENT = 2;
const EINVAL = 22;
const EOPNOTSUPP = 95;
const NO_FALLBACK_ERRNOS = new Set([EPERM, EACCES, EBUSY, EEXIST]);

export type XdpMode = 'native' | 'generic';

/** How an XDP attachment holds the hook. */
export type XdpVia = 'libxdp' | 'exclusive';

/**
 * One XDP attachment: an exclusive bpf_link (close() detaches; so does
 * process death), or one entry of libxdp's multi-program dispatcher
 * (close() takes out only this program; libxdp pins the entry in bpffs, so
 * it outlives a killed process until the next attach cleans it up).
 */
export class XdpLink {
  readonly ifname: string;
  readonly ifindex: number;
  readonly mode: XdpMode;
  readonly via: XdpVia;
  /** Why libxdp's dispatcher was not used, when it was asked for and the attach fell back to exclusive. */
  readonly libxdpRefused: string | undefined;
  /** The id of the attached program (the dispatcher's entry under libxdp). */
  readonly progId: number;
  private detach: (() => void) | null;
  private readonly onClose: (link: XdpLink) => void;

  /** @internal made by BpfObject.attachXdp */
  constructor(
    a: { ifname: string; ifindex: number; mode: XdpMode; via: XdpVia; progId: number; libxdpRefused?: string },
    detach: () => void,
    onClose: (link: XdpLink) => void,
  ) {
    this.ifname = a.ifname;
    this.ifindex = a.ifindex;
    this.mode = a.mode;
    this.via = a.via;
    this.progId = a.progId;
    this.libxdpRefused = a.libxdpRefused;
    this.detach = detach;
    this.onClose = onClose;
  }

  get closed(): boolean {
    return this.detach === null;
  }

  /** Detach. Idempotent; a device that is gone took the attachment with it, which is no error. */
  close(): void {
    if (this.detach === null) return;
    const detach = this.detach;
    this.detach = null;
    this.onClose(this);
    detach();
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
  /** Messages of libxdp attaches and detaches (warnings that are not errors); set by the owner. */
  onLibxdpNote: ((level: 'warn' | 'info', msg: string, details: Record<string, unknown>) => void) | null = null;

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
   * Attach the program to an interface's XDP hook. 'auto' tries native
   * (driver) mode, then generic (skb) mode.
   *
   * With opts.libxdp the program joins libxdp's multi-program dispatcher
   * (xdp-filter, xdp-loader, bpfman share the hook that way): a second copy
   * of the object, sharing every map of this one, is loaded by libxdp as an
   * extension of the dispatcher. When libxdp is missing or cannot do that
   * (no bpffs, a program attached exclusively by someone else, an old
   * kernel), the link is made exclusively as without the option, and
   * link.libxdpRefused says why.
   */
  attachXdp(ifname: string, mode: 'auto' | XdpMode = 'auto', opts: { libxdp?: boolean } = {}): XdpLink {
    this.handle();
    const ifindex = ifNameToIndex(ifname);
    if (ifindex === 0) throw new TcpresetError('E_IFACE', `interface "${ifname}" does not exist`, { details: { ifname } });
    let refused: string | undefined;
    if (opts.libxdp) {
      const r = this.attachLibxdp(ifname, ifindex, mode);
      if (r instanceof XdpLink) return r;
      refused = r.refused;
    }
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
      const busy = -fd === EBUSY || -fd === EEXIST ? ` (${xdpHolder(ifindex, ifname, refused)})` : '';
      throw L.failure(`attach XDP in ${used} mode${busy}`, fd, ifname);
    }
    const progId = L.progIdOfFd(this.progFd);
    const link = new XdpLink(
      { ifname, ifindex, mode: used, via: 'exclusive', progId, ...(refused !== undefined ? { libxdpRefused: refused } : {}) },
      () => closeFd(fd, `XDP link on ${ifname}`),
      (l) => this.links.delete(l),
    );
    this.links.add(link);
    return link;
  }

  /**
   * The program as one entry of libxdp's dispatcher on ifindex, or why not
   * (then nothing of it is left attached). Errors that the exclusive attach
   * would meet just the same (a missing privilege, a driver that refuses
   * both modes) are thrown.
   */
  private attachLibxdp(ifname: string, ifindex: number, mode: 'auto' | XdpMode): XdpLink | { refused: string } {
    const got = X.libxdp();
    if (!('lib' in got)) return { refused: got.error };
    const x = got.lib;
    const bpffs = process.env.LIBXDP_BPFFS || '/sys/fs/bpf';
    if (!isBpffs(bpffs)) {
      return { refused: `no BPF filesystem at ${bpffs}, where libxdp keeps the dispatcher's state (mount -t bpf bpf ${bpffs}; under systemd it is mounted, and the unit must let the daemon write there)` };
    }
    if (dispatcherRefused !== undefined) return { refused: dispatcherRefused };
    const before = X.multiprogOn(x, ifindex);
    if (before?.legacy) {
      return { refused: `${ifname} has XDP program "${before.main?.name || '?'}" (id ${before.main?.id ?? '?'}) attached without libxdp's dispatcher` };
    }
    // Join the dispatcher in the mode it runs in; else native first, as without libxdp.
    const modes: XdpMode[] = before ? [before.mode === X.XDP_MODE_SKB ? 'generic' : 'native'] : mode === 'auto' ? ['native', 'generic'] : [mode];
    this.reapStale(x, ifname, ifindex, before);
    let lastErr = 0;
    let said: string[] = [];
    for (const m of modes) {
      const copy = this.openShared();
      let prog: X.XdpProgramPtr | null = null;
      let kept = false;
      try {
        const p = L.bpf_object__find_program_by_name(copy, this.progName);
        if (p === null) throw new TcpresetError('E_INTERNAL', `BPF object ${this.path} has no program "${this.progName}"`);
        prog = x.xdp_program__from_bpf_obj(copy, L.bpf_program__section_name(p));
        const perr = X.ptrError(x, prog);
        if (perr !== 0) {
          prog = null;
          return { refused: `libxdp could not use the program (${X.errText(x, perr)})` };
        }
        const xmode = m === 'native' ? X.XDP_MODE_NATIVE : X.XDP_MODE_SKB;
        const copyProg = p;
        const held0 = prog;
        const attached = X.withLibxdpLines(() =>
          X.withoutLeakedProgFds(() => x.xdp_program__attach(held0, ifindex, xmode, 0), () => [x.xdp_program__fd(held0), L.bpf_program__fd(copyProg)]),
        );
        const ret = attached.result;
        said = attached.lines;
        if (ret < 0) {
          lastErr = ret;
          if (-ret === EPERM || -ret === EACCES) throw new NativeError(`attach XDP through libxdp's dispatcher in ${m} mode`, -ret, X.errText(x, ret), ifname);
          continue;
        }
        const id = x.xdp_program__id(prog);
        const after = X.multiprogOn(x, ifindex);
        if (!after || after.legacy || !after.programs.some((q) => q.id === id)) {
          // libxdp fell back to attaching the program alone (old kernel, no freplace): that is
          // the exclusive attach without its bpf_link, so undo it and make the link instead.
          X.withoutLeakedProgFds(() => x.xdp_program__detach(held0, ifindex, xmode, 0), () => [x.xdp_program__fd(held0), L.bpf_program__fd(copyProg)]);
          // The kernel does not change under a running daemon: do not load and verify the copy again.
          dispatcherRefused = `libxdp cannot build its dispatcher on this kernel (${said.join('; ') || 'it attached the program alone'})`;
          return { refused: dispatcherRefused };
        }
        const held = prog;
        kept = true;
        const link = new XdpLink(
          { ifname, ifindex, mode: m, via: 'libxdp', progId: id },
          () => {
            // Only while a dispatcher is there: the device may be gone (taking it along) or
            // someone may have unloaded everything (xdp-loader unload --all).
            const now = X.multiprogOn(x, ifindex);
            if (now && !now.legacy && now.programs.some((q) => q.id === id)) {
              const dret = X.withoutLeakedProgFds(() => x.xdp_program__detach(held, ifindex, xmode, 0), () => [x.xdp_program__fd(held), L.bpf_program__fd(copyProg)]);
              if (dret < 0) this.onLibxdpNote?.('warn', 'XDP detach from libxdp\'s dispatcher failed', { ifname, progId: id, error: X.errText(x, dret) });
            } else {
              this.unpinGone(ifindex, id);
            }
            x.xdp_program__close(held);
            L.bpf_object__close(copy);
          },
          (l) => this.links.delete(l),
        );
        this.links.add(link);
        return link;
      } finally {
        if (!kept) {
          if (prog !== null) x.xdp_program__close(prog);
          L.bpf_object__close(copy);
        }
      }
    }
    const errno = -lastErr;
    const saidText = said.length ? `; libxdp: ${said.join('; ')}` : '';
    if (errno === EBUSY || errno === EEXIST || errno === EOPNOTSUPP || errno === ENOENT || errno === EINVAL) {
      return { refused: `libxdp's attach failed: ${X.errText(x, lastErr)} (errno ${errno})${saidText}` };
    }
    // The driver refused every mode: so would the exclusive attach; say what libxdp said.
    return { refused: `libxdp's attach in ${modes.join(', then ')} mode failed: ${X.errText(x, lastErr)} (errno ${errno})${saidText}` };
  }

  /**
   * A second copy of the object, unloaded, whose maps are this one's (so
   * the targets, flow memory, rings and counters are one set whichever copy
   * runs): libxdp loads it as an extension program of its dispatcher.
   */
  private openShared(): L.BpfObjectPtr {
    const obj = this.handle();
    const copy = L.bpf_object__open_file(this.path, null);
    if (copy === null) throw L.failure(`open BPF object ${this.path}`, undefined, undefined, L.failureErrno());
    try {
      for (let m = L.bpf_object__next_map(copy, null); m !== null; m = L.bpf_object__next_map(copy, m)) {
        const name = L.bpf_map__name(m);
        const mine = L.bpf_object__find_map_by_name(obj, name);
        if (mine === null) throw new TcpresetError('E_INTERNAL', `BPF object ${this.path} has no map "${name}" to share`);
        const ret = L.bpf_map__reuse_fd(m, L.bpf_map__fd(mine));
        if (ret < 0) throw L.failure(`share map "${name}" with libxdp's copy of the program`, ret);
      }
      if (!kernelKnowsXdpFrags()) {
        const p = L.bpf_object__find_program_by_name(copy, this.progName);
        if (p !== null) L.bpf_program__set_flags(p, L.bpf_program__flags(p) & ~L.BPF_F_XDP_HAS_FRAGS);
      }
      return copy;
    } catch (err) {
      L.bpf_object__close(copy);
      throw err;
    }
  }

  /**
   * Take out entries of a program of ours that no process holds any more: a
   * daemon killed without its stop leaves its entry pinned in bpffs (libxdp
   * keeps the dispatcher that way), where it would go on running beside the
   * new one. An entry some process still has open (another daemon on the
   * same port) is left alone.
   */
  private reapStale(x: X.Libxdp, ifname: string, ifindex: number, mp: X.MultiprogView | null): void {
    if (!mp || mp.legacy) return;
    const stale = mp.programs.filter((p) => p.name === this.progName);
    if (stale.length === 0) return;
    const held = heldProgIds();
    for (const p of stale) {
      if (held.has(p.id)) continue;
      const fd = L.bpf_prog_get_fd_by_id(p.id);
      if (fd < 0) continue;
      const prog = x.xdp_program__from_fd(fd);
      closeFd(fd);
      if (X.ptrError(x, prog) !== 0) continue;
      try {
        const ret = X.withoutLeakedProgFds(() => x.xdp_program__detach(prog, ifindex, mp.mode, 0), () => [x.xdp_program__fd(prog)]);
        this.onLibxdpNote?.(ret < 0 ? 'warn' : 'info', ret < 0 ? 'could not take out a stale tcpreset program from libxdp\'s dispatcher' : 'took out a stale tcpreset program (of a daemon that did not stop) from libxdp\'s dispatcher', { ifname, progId: p.id, ...(ret < 0 ? { error: X.errText(x, ret) } : {}) });
      } finally {
        x.xdp_program__close(prog);
      }
    }
  }

  /**
   * The device went away with the dispatcher: its pins (links holding our
   * program and through it our maps) stay in bpffs. Remove the pin
   * directory of that ifindex that holds our program id (only ours: an
   * ifindex is per network namespace, a program id is not).
   */
  private unpinGone(ifindex: number, progId: number): void {
    const dir = join(process.env.LIBXDP_BPFFS || '/sys/fs/bpf', 'xdp');
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => n.startsWith(`dispatch-${ifindex}-`));
    } catch {
      return;
    }
    for (const n of names) {
      const sub = join(dir, n);
      try {
        const files = readdirSync(sub);
        const ours = files.some((f) => {
          if (!f.endsWith('-prog')) return false;
          const fd = L.bpf_obj_get(join(sub, f));
          if (fd < 0) return false;
          try {
            return L.progIdOfFd(fd) === progId;
          } finally {
            closeFd(fd);
          }
        });
        if (!ours) continue;
        for (const f of files) rmSync(join(sub, f), { force: true });
        rmdirSync(sub);
        this.onLibxdpNote?.('info', 'removed the libxdp pins of a dispatcher whose device is gone', { ifindex, dir: sub });
      } catch (err) {
        this.onLibxdpNote?.('warn', 'could not remove the libxdp pins of a dispatcher whose device is gone', { ifindex, dir: sub, error: (err as Error).message });
      }
    }
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

/** Set once libxdp fell back to attaching alone: its dispatcher cannot work on this kernel. */
let dispatcherRefused: string | undefined;

/** statfs type of a BPF filesystem (linux/magic.h BPF_FS_MAGIC). */
const BPF_FS_MAGIC = 0xcafe4a11;
function isBpffs(dir: string): boolean {
  try {
    return statfsSync(dir).type === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/** Program ids some process has open (any fd of a program or of a link to it: /proc/PID/fdinfo "prog_id:"). */
function heldProgIds(): Set<number> {
  const ids = new Set<number>();
  let pids: string[];
  try {
    // Not this process: it holds no entry on a port it is attaching to (one attachment per interface).
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid);
  } catch {
    return ids;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fdinfo`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^prog_id:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
        if (m) ids.add(Number(m[1]));
      } catch {
        // gone meanwhile
      }
    }
  }
  return ids;
}

/**
 * Why the XDP hook is taken, and what to do: names the program there. XDP
 * has one program per hook, unless everyone attaches through libxdp's
 * dispatcher (xdp-filter, xdp-loader, bpfman); tcpreset joins it when it
 * can, and `refused` says why it could not.
 */
function xdpHolder(ifindex: number, ifname: string, refused?: string): string {
  const p = L.xdpProgramOn(ifindex);
  const which = p === null ? 'an XDP program' : `XDP program "${p.name || '?'}" (id ${p.id}${p.name === 'xdp_dispatcher' ? ", libxdp's dispatcher: xdp-filter, xdp-loader or bpfman" : ''})`;
  const undo = p?.name === 'xdp_dispatcher' ? `xdp-loader unload ${ifname} --all` : `ip link set dev ${ifname} xdp off`;
  const why = refused ? `; tcpreset could not join it through libxdp: ${refused}` : '';
  const hint = p?.name === 'xdp_dispatcher' && refused === undefined ? ', or set xdpAttach "libxdp" in the configuration to join the dispatcher' : '';
  return `${ifname} already has ${which}${why}; tcpreset needs the XDP hook of its sniff interface to itself: remove that program (${undo}) or mirror to another port${hint}`;
}
