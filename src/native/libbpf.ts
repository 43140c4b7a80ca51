/**
 * The only koffi declarations for libbpf (Debian libbpf1 1.1.2, libbpf.so.1).
 * Only API present in that version's /usr/include/bpf/*.h is used.
 *
 * Conventions of libbpf 1.x: functions returning int return -errno on
 * failure (and also set errno); functions returning a pointer return NULL
 * and set errno. Wrappers here stay thin: they return what libbpf returns
 * and leave error policy to src/bpf/object.ts, except `failure()` which
 * turns a failed call into a NativeError with libbpf's own error text.
 */
import koffi from 'koffi';
import { NativeError } from '../core/errors.js';
import { close as closeFd, vformat } from './libc.js';

const lib = koffi.load('libbpf.so.1');

/** Opaque libbpf handles: JS sees them as koffi externals. */
export type BpfObjectPtr = unknown;
export type BpfProgramPtr = unknown;
export type BpfMapPtr = unknown;

koffi.opaque('bpf_object');
koffi.opaque('bpf_program');
koffi.opaque('bpf_map');

/* enum bpf_attach_type (linux/bpf.h): BPF_XDP. */
export const BPF_XDP = 37;
/* linux/if_link.h */
export const XDP_FLAGS_UPDATE_IF_NOEXIST = 1;
export const XDP_FLAGS_SKB_MODE = 2;
export const XDP_FLAGS_DRV_MODE = 4;
/* bpf_map_update_elem flags (linux/bpf.h) */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

/* enum bpf_map_type values we care about (linux/bpf.h). */
export const BPF_MAP_TYPE = {
  HASH: 1,
  ARRAY: 2,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  PERCPU_CGROUP_STORAGE: 21,
  RINGBUF: 27,
} as const;

export function isPerCpuMapType(type: number): boolean {
  return (
    type === BPF_MAP_TYPE.PERCPU_HASH ||
    type === BPF_MAP_TYPE.PERCPU_ARRAY ||
    type === BPF_MAP_TYPE.LRU_PERCPU_HASH ||
    type === BPF_MAP_TYPE.PERCPU_CGROUP_STORAGE
  );
}

/*
 * struct bpf_link_create_opts (bpf.h, libbpf 1.1.2): 64 bytes on x86_64.
 * Only sz and flags are set for XDP; the rest is declared so sizeof and
 * offsets match the C layout (checked against the C compiler by
 * test/object.test.ts).
 */
export const LinkCreateOpts = koffi.struct('bpf_link_create_opts', {
  sz: 'size_t',
  flags: 'uint32_t',
  iter_info: 'void *',
  iter_info_len: 'uint32_t',
  target_btf_id: 'uint32_t',
  u: koffi.union('bpf_link_create_opts_u', {
    perf_event: koffi.struct({ bpf_cookie: 'uint64_t' }),
    kprobe_multi: koffi.struct({ flags: 'uint32_t', cnt: 'uint32_t', syms: 'void *', addrs: 'void *', cookies: 'void *' }),
    tracing: koffi.struct({ cookie: 'uint64_t' }),
  }),
});
export const LINK_CREATE_OPTS_SIZE = 64;

/* struct bpf_test_run_opts (bpf.h, libbpf 1.1.2): 80 bytes on x86_64. */
export const TestRunOpts = koffi.struct('bpf_test_run_opts', {
  sz: 'size_t',
  data_in: 'void *',
  data_out: 'void *',
  data_size_in: 'uint32_t',
  data_size_out: 'uint32_t',
  ctx_in: 'void *',
  ctx_out: 'void *',
  ctx_size_in: 'uint32_t',
  ctx_size_out: 'uint32_t',
  retval: 'uint32_t',
  repeat: 'int',
  duration: 'uint32_t',
  flags: 'uint32_t',
  cpu: 'uint32_t',
  batch_size: 'uint32_t',
});
export const TEST_RUN_OPTS_SIZE = 80;

for (const [t, size] of [
  [LinkCreateOpts, LINK_CREATE_OPTS_SIZE],
  [TestRunOpts, TEST_RUN_OPTS_SIZE],
] as const) {
  // A mismatch would make libbpf read garbage or reject opts (E2BIG): fail at import instead.
  if (koffi.sizeof(t) !== size) throw new Error(`koffi layout of ${koffi.introspect(t).name} is ${koffi.sizeof(t)} bytes, C has ${size}`);
}

export interface TestRunOptsValue {
  sz: number;
  data_in?: Uint8Array | null;
  data_out?: Uint8Array | null;
  data_size_in?: number;
  data_size_out?: number;
  retval?: number;
  repeat?: number;
  duration?: number;
  flags?: number;
  cpu?: number;
}

/* Object lifecycle. */
export const bpf_object__open_file = lib.func('bpf_object *bpf_object__open_file(const char *path, const void *opts)') as (
  path: string,
  opts: null,
) => BpfObjectPtr | null;
export const bpf_object__load = lib.func('int bpf_object__load(bpf_object *obj)') as (obj: BpfObjectPtr) => number;
export const bpf_object__close = lib.func('void bpf_object__close(bpf_object *obj)') as (obj: BpfObjectPtr) => void;
export const bpf_object__find_program_by_name = lib.func(
  'bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)',
) as (obj: BpfObjectPtr, name: string) => BpfProgramPtr | null;
export const bpf_program__flags = lib.func('uint32_t bpf_program__flags(const bpf_program *prog)') as (prog: BpfProgramPtr) => number;
export const bpf_program__set_flags = lib.func('int bpf_program__set_flags(bpf_program *prog, uint32_t flags)') as (
  prog: BpfProgramPtr,
  flags: number,
) => number;
/** BPF_F_XDP_HAS_FRAGS (linux/bpf.h): the program is multi-buffer aware; kernels before 5.18 reject it. */
export const BPF_F_XDP_HAS_FRAGS = 1 << 5;
export const bpf_object__find_map_by_name = lib.func(
  'bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)',
) as (obj: BpfObjectPtr, name: string) => BpfMapPtr | null;

/* Used to open a second copy of the object for libxdp's dispatcher, sharing the first one's maps. */
export const bpf_object__next_map = lib.func('bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)') as (
  obj: BpfObjectPtr,
  map: BpfMapPtr | null,
) => BpfMapPtr | null;
export const bpf_map__name = lib.func('const char *bpf_map__name(const bpf_map *map)') as (map: BpfMapPtr) => string;
export const bpf_map__reuse_fd = lib.func('int bpf_map__reuse_fd(bpf_map *map, int fd)') as (map: BpfMapPtr, fd: number) => number;
export const bpf_program__section_name = lib.func('const char *bpf_program__section_name(const bpf_program *prog)') as (
  prog: BpfProgramPtr,
) => string;
/** fd of a pinned object (bpffs path), or -errno. */
export const bpf_obj_get = lib.func('int bpf_obj_get(const char *pathname)') as (path: string) => number;

/* Programs and maps of an object. */
export const bpf_program__fd = lib.func('int bpf_program__fd(const bpf_program *prog)') as (prog: BpfProgramPtr) => number;
export const bpf_map__fd = lib.func('int bpf_map__fd(const bpf_map *map)') as (map: BpfMapPtr) => number;
export const bpf_map__set_max_entries = lib.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)') as (
  map: BpfMapPtr,
  maxEntries: number,
) => number;
/** Initial contents of a global-data map (.rodata.*, .data.*), copied in at load; size must be the section's. */
export const bpf_map__set_initial_value = lib.func('int bpf_map__set_initial_value(bpf_map *map, const void *data, size_t size)') as (
  map: BpfMapPtr,
  data: Uint8Array,
  size: number,
) => number;
export const bpf_map__max_entries = lib.func('uint32_t bpf_map__max_entries(const bpf_map *map)') as (map: BpfMapPtr) => number;
export const bpf_map__key_size = lib.func('uint32_t bpf_map__key_size(const bpf_map *map)') as (map: BpfMapPtr) => number;
export const bpf_map__value_size = lib.func('uint32_t bpf_map__value_size(const bpf_map *map)') as (map: BpfMapPtr) => number;
/* Returns enum bpf_map_type. */
export const bpf_map__type = lib.func('int bpf_map__type(const bpf_map *map)') as (map: BpfMapPtr) => number;

/*
 * Map element syscalls by fd. Keys and values are Uint8Array/Buffer passed
 * in place as pointers (no copy), so lookup writes straight into `value`.
 */
export const bpf_map_update_elem = lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)') as (
  fd: number,
  key: Uint8Array,
  value: Uint8Array,
  flags: number,
) => number;
export const bpf_map_delete_elem = lib.func('int bpf_map_delete_elem(int fd, const void *key)') as (fd: number, key: Uint8Array) => number;
export const bpf_map_lookup_elem = lib.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)') as (
  fd: number,
  key: Uint8Array,
  value: Uint8Array,
) => number;
export const bpf_map_get_next_key = lib.func('int bpf_map_get_next_key(int fd, const void *key, void *next_key)') as (
  fd: number,
  key: Uint8Array | null,
  nextKey: Uint8Array,
) => number;

/* Links and test runs. */
export const bpf_link_create = lib.func(
  'int bpf_link_create(int prog_fd, int target_fd, int attach_type, const bpf_link_create_opts *opts)',
) as (progFd: number, targetFd: number, attachType: number, opts: { sz: number; flags: number }) => number;
export const bpf_prog_test_run_opts = lib.func('int bpf_prog_test_run_opts(int prog_fd, _Inout_ bpf_test_run_opts *opts)') as (
  progFd: number,
  opts: TestRunOptsValue,
) => number;

/** Returns a new map's fd, or a negative errno. */
export const bpf_map_create = lib.func(
  'int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, const void *opts)',
) as (type: number, name: string, keySize: number, valueSize: number, maxEntries: number, opts: null) => number;
/**
 * Whether bpf() serves this process: a BPF_MAP_CREATE of a 1-entry array
 * (4-byte key and value), closed at once. Returns 0, or the negative errno of
 * the refusal: -EPERM without CAP_BPF/CAP_SYS_ADMIN (kernel/bpf/syscall.c,
 * bpf_capable() and sysctl kernel.unprivileged_bpf_disabled), the same
 * refusal the BPF object's load meets later. The daemon's start-up check
 * (service.ts): cheaper than loading a program, and needs no BPF object.
 */
export function probeBpfMapCreate(): number {
  const fd = bpf_map_create(BPF_MAP_TYPE.ARRAY, 'tr_probe', 4, 4, 1, null);
  if (fd < 0) return fd;
  closeFd(fd);
  return 0;
}
const bpf_xdp_query_id = lib.func('int bpf_xdp_query_id(int ifindex, int flags, _Out_ uint32_t *prog_id)') as (ifindex: number, flags: number, id: number[]) => number;
export const bpf_prog_get_fd_by_id = lib.func('int bpf_prog_get_fd_by_id(uint32_t id)') as (id: number) => number;
// bpf_obj_get_info_by_fd, not bpf_prog_get_info_by_fd: Debian 12's libbpf is 1.1.
const bpf_obj_get_info_by_fd = lib.func('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *len)') as (fd: number, info: Uint8Array, len: number[]) => number;

/** The id of the program behind `fd` (struct bpf_prog_info.id, offset 4), or 0 when it cannot be read. */
export function progIdOfFd(fd: number): number {
  const info = new Uint8Array(256);
  const len = [info.length];
  if (bpf_obj_get_info_by_fd(fd, info, len) < 0) return 0;
  return new DataView(info.buffer).getUint32(4, true);
}

/** offsetof(struct bpf_prog_info, name) (include/uapi/linux/bpf.h; stable UAPI), BPF_OBJ_NAME_LEN 16. */
const PROG_INFO_NAME_OFF = 64;
const BPF_OBJ_NAME_LEN = 16;

/**
 * The XDP program attached to `ifindex` (any mode), or null when none or
 * when it cannot be read: its id and name, e.g. "xdp_dispatcher" for
 * libxdp's dispatcher (xdp-tools, bpfman). For an error message, so it
 * never throws.
 */
export function xdpProgramOn(ifindex: number): { id: number; name: string } | null {
  const id = [0];
  if (bpf_xdp_query_id(ifindex, 0, id) < 0 || id[0] === 0) return null;
  const fd = bpf_prog_get_fd_by_id(id[0]!);
  if (fd < 0) return { id: id[0]!, name: '' };
  try {
    const info = new Uint8Array(256);
    const len = [info.length];
    if (bpf_obj_get_info_by_fd(fd, info, len) < 0) return { id: id[0]!, name: '' };
    const raw = info.subarray(PROG_INFO_NAME_OFF, PROG_INFO_NAME_OFF + BPF_OBJ_NAME_LEN);
    const end = raw.indexOf(0);
    return { id: id[0]!, name: Buffer.from(raw.subarray(0, end < 0 ? raw.length : end)).toString('utf8') };
  } finally {
    try {
      closeFd(fd);
    } catch {
      // only an error message depends on it
    }
  }
}

export const libbpf_num_possible_cpus = lib.func('int libbpf_num_possible_cpus(void)') as () => number;
const libbpf_strerror_raw = lib.func('int libbpf_strerror(int err, void *buf, size_t size)') as (
  err: number,
  buf: Uint8Array,
  size: number,
) => number;

/* Logging: libbpf prints warnings (and verifier logs) through one global hook. */
const PrintFn = koffi.proto('int libbpf_print_fn(int level, const char *fmt, void *ap)');
// Declared with void * both ways so the previous hook (a plain pointer) can be put back.
const libbpf_set_print = lib.func('libbpf_set_print', 'void *', ['void *']) as (fn: unknown) => unknown;
/** errno of the last libbpf/libc call on this thread (valid only right after a failed call). */
export function lastErrno(): number {
  return koffi.errno();
}

/** Text for a positive errno, libbpf's own codes (4000+, e.g. "Kernel verifier blocks program loading") included. */
export function errnoText(errno: number): string {
  const buf = new Uint8Array(256);
  libbpf_strerror_raw(errno, buf, buf.length);
  const end = buf.indexOf(0);
  return Buffer.from(buf.buffer, 0, end < 0 ? buf.length : end).toString('utf8');
}

/**
 * The errno of a failed call: libbpf 1.x int-returning calls return -errno
 * (more reliable than errno, which later JS-side work may clobber); pointer
 * calls only set errno, so they pass ret = undefined.
 */
export function failureErrno(ret?: number): number {
  if (ret !== undefined && ret < 0) return -ret;
  const e = koffi.errno();
  return e > 0 ? e : 5 /* EIO: libbpf failed without saying why */;
}

/** NativeError for a failed libbpf call, with libbpf's error text. */
export function failure(step: string, ret: number | undefined, target?: string, errno = failureErrno(ret)): NativeError {
  return new NativeError(step, errno, errnoText(errno), target);
}

/** libbpf lines that are expected and say nothing wrong. */
const BENIGN = /skipping unrecognized data section\(\d+\) \.xdp_run_config/;

let silentFn: unknown = null;
let defaultFn: unknown;
let sinkFn: unknown = null;
let sink: ((level: LibbpfLevel, line: string) => void) | null = null;

/** libbpf_print_level (libbpf.h). */
export type LibbpfLevel = 'warn' | 'info' | 'debug';
const LEVELS: LibbpfLevel[] = ['warn', 'info', 'debug'];

/**
 * Send libbpf's messages to `fn`, one call per line, instead of stderr (a
 * daemon's stderr under journald is stored at info: libbpf's reasons for a
 * failed load were invisible to `journalctl -p warning`). Debug lines are
 * dropped unformatted (the verifier log comes through the load call itself).
 * The hook is global to the process; libbpf is called from the main thread
 * only (the event thread reads the ring without libbpf).
 */
export function setLibbpfSink(fn: (level: LibbpfLevel, line: string) => void): void {
  sink = fn;
  if (sinkFn === null) {
    sinkFn = koffi.register((level: number, fmt: string, ap: unknown) => {
      const lvl = LEVELS[level] ?? 'debug';
      if (lvl === 'debug' || sink === null) return 0;
      try {
        for (const line of vformat(fmt, ap).split('\n')) {
          // libxdp's run configuration (bpf/tcpreset.bpf.c) is a section libbpf does not know and
          // says so at warning level on every load: expected, not worth an operator's attention.
          if (line.trim() === '' || BENIGN.test(line)) continue;
          sink(lvl, line.trimEnd());
        }
      } catch {
        // a logging hook must never throw into libbpf
      }
      return 0;
    }, koffi.pointer(PrintFn));
  }
  const old = libbpf_set_print(sinkFn);
  if (defaultFn === undefined) defaultFn = old;
}
/**
 * Where libbpf's own messages go: 'stderr' (libbpf's default printer,
 * warnings and info) or 'silent'. The silent hook is a registered koffi
 * callback kept alive in this module for the life of the process.
 */
export function setLibbpfLogging(mode: 'stderr' | 'silent'): void {
  if (mode === 'silent') {
    silentFn ??= koffi.register(() => 0, koffi.pointer(PrintFn));
    const old = libbpf_set_print(silentFn);
    if (defaultFn === undefined) defaultFn = old;
  } else if (defaultFn !== undefined) {
    libbpf_set_print(defaultFn);
  }
}
