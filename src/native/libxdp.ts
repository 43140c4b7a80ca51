/**
 * koffi declarations for libxdp (Debian libxdp1 1.3.1, libxdp.so.1): the
 * multi-program dispatcher of xdp-tools and bpfman (issue 11). Only the
 * LIBXDP_1.0.0 symbols of lib/libxdp/libxdp.map are used.
 *
 * libxdp links the system libbpf.so.1, the same one src/native/libbpf.ts
 * loads, so a `struct bpf_object *` from there is one libxdp understands
 * (xdp_program__from_bpf_obj).
 *
 * Loaded lazily: a machine without libxdp1 keeps working, tcpreset then
 * attaches as before (exclusively) and says why (src/bpf/object.ts).
 *
 * Error conventions of libxdp 1.3: int calls return -errno; pointer calls
 * return NULL or an ERR_PTR-encoded pointer and set errno, so every pointer
 * is checked with libxdp_get_error().
 */
import koffi from 'koffi';
import { fstatSync, readdirSync, readFileSync } from 'node:fs';
import { close as closeFd } from './libc.js';
import { vformat } from './libc.js';
// Declares the opaque bpf_object type the prototypes below name.
import './libbpf.js';

export type XdpProgramPtr = unknown;
export type XdpMultiprogPtr = unknown;

/** enum xdp_attach_mode (xdp/libxdp.h). */
export const XDP_MODE_UNSPEC = 0;
export const XDP_MODE_NATIVE = 1;
export const XDP_MODE_SKB = 2;
export const XDP_MODE_HW = 3;

export interface Libxdp {
  xdp_program__from_bpf_obj(obj: unknown, section: string | null): XdpProgramPtr | null;
  xdp_program__from_fd(fd: number): XdpProgramPtr | null;
  xdp_program__attach(prog: XdpProgramPtr, ifindex: number, mode: number, flags: number): number;
  xdp_program__detach(prog: XdpProgramPtr, ifindex: number, mode: number, flags: number): number;
  xdp_program__close(prog: XdpProgramPtr): void;
  xdp_program__id(prog: XdpProgramPtr): number;
  xdp_program__fd(prog: XdpProgramPtr): number;
  xdp_program__name(prog: XdpProgramPtr): string | null;
  xdp_program__run_prio(prog: XdpProgramPtr): number;
  xdp_program__chain_call_enabled(prog: XdpProgramPtr, action: number): boolean;
  xdp_multiprog__get_from_ifindex(ifindex: number): XdpMultiprogPtr | null;
  xdp_multiprog__next_prog(prog: XdpProgramPtr | null, mp: XdpMultiprogPtr): XdpProgramPtr | null;
  xdp_multiprog__main_prog(mp: XdpMultiprogPtr): XdpProgramPtr | null;
  xdp_multiprog__is_legacy(mp: XdpMultiprogPtr): boolean;
  xdp_multiprog__attach_mode(mp: XdpMultiprogPtr): number;
  xdp_multiprog__close(mp: XdpMultiprogPtr): void;
  libxdp_get_error(ptr: unknown): number;
  libxdp_strerror(err: number, buf: Uint8Array, size: number): number;
}

let cached: { lib: Libxdp } | { error: string } | undefined;

/** libxdp, or why it cannot be had (the library is missing or lacks a symbol). */
export function libxdp(): { lib: Libxdp } | { error: string } {
  if (cached) return cached;
  try {
    const so = koffi.load('libxdp.so.1');
    koffi.opaque('xdp_program');
    koffi.opaque('xdp_multiprog');
    const lib: Libxdp = {
      xdp_program__from_bpf_obj: so.func('xdp_program *xdp_program__from_bpf_obj(bpf_object *obj, const char *section_name)'),
      xdp_program__from_fd: so.func('xdp_program *xdp_program__from_fd(int fd)'),
      xdp_program__attach: so.func('int xdp_program__attach(xdp_program *prog, int ifindex, int mode, unsigned int flags)'),
      xdp_program__detach: so.func('int xdp_program__detach(xdp_program *prog, int ifindex, int mode, unsigned int flags)'),
      xdp_program__close: so.func('void xdp_program__close(xdp_program *prog)'),
      xdp_program__id: so.func('uint32_t xdp_program__id(const xdp_program *prog)'),
      xdp_program__fd: so.func('int xdp_program__fd(const xdp_program *prog)'),
      xdp_program__name: so.func('const char *xdp_program__name(const xdp_program *prog)'),
      xdp_program__run_prio: so.func('unsigned int xdp_program__run_prio(const xdp_program *prog)'),
      xdp_program__chain_call_enabled: so.func('bool xdp_program__chain_call_enabled(const xdp_program *prog, int action)'),
      xdp_multiprog__get_from_ifindex: so.func('xdp_multiprog *xdp_multiprog__get_from_ifindex(int ifindex)'),
      xdp_multiprog__next_prog: so.func('xdp_program *xdp_multiprog__next_prog(const xdp_program *prog, const xdp_multiprog *mp)'),
      xdp_multiprog__main_prog: so.func('xdp_program *xdp_multiprog__main_prog(const xdp_multiprog *mp)'),
      xdp_multiprog__is_legacy: so.func('bool xdp_multiprog__is_legacy(const xdp_multiprog *mp)'),
      xdp_multiprog__attach_mode: so.func('int xdp_multiprog__attach_mode(const xdp_multiprog *mp)'),
      xdp_multiprog__close: so.func('void xdp_multiprog__close(xdp_multiprog *mp)'),
      libxdp_get_error: so.func('long libxdp_get_error(const void *ptr)'),
      libxdp_strerror: so.func('int libxdp_strerror(int err, void *buf, size_t size)'),
    } as unknown as Libxdp;
    hookPrint(so);
    return (cached = { lib });
  } catch (err) {
    return (cached = { error: `libxdp.so.1 could not be loaded (${(err as Error).message}; Debian package libxdp1)` });
  }
}

/** A pointer libxdp returned: 0 when usable, else the -errno it encodes (NULL counts as errno). */
export function ptrError(x: Libxdp, ptr: unknown): number {
  if (ptr === null || ptr === undefined) {
    const e = koffi.errno();
    return e > 0 ? -e : -2 /* ENOENT */;
  }
  return Number(x.libxdp_get_error(ptr));
}

export function errText(x: Libxdp, err: number): string {
  const buf = new Uint8Array(256);
  x.libxdp_strerror(err < 0 ? err : -err, buf, buf.length);
  const end = buf.indexOf(0);
  return Buffer.from(buf.buffer, 0, end < 0 ? buf.length : end).toString('utf8');
}

/** The dispatcher's view of an interface: its mode and programs (name, id, priority), or null when none is there. */
export interface MultiprogView {
  legacy: boolean;
  mode: number;
  main: { name: string; id: number } | null;
  programs: { name: string; id: number; priority: number }[];
}

export function multiprogOn(x: Libxdp, ifindex: number): MultiprogView | null {
  return withoutLeakedProgFds(() => readMultiprog(x, ifindex), () => []);
}

function readMultiprog(x: Libxdp, ifindex: number): MultiprogView | null {
  const mp = x.xdp_multiprog__get_from_ifindex(ifindex);
  if (ptrError(x, mp) !== 0) return null;
  try {
    const main = x.xdp_multiprog__main_prog(mp);
    const view: MultiprogView = {
      legacy: x.xdp_multiprog__is_legacy(mp),
      mode: x.xdp_multiprog__attach_mode(mp),
      main: main ? { name: x.xdp_program__name(main) ?? '', id: x.xdp_program__id(main) } : null,
      programs: [],
    };
    if (!view.legacy) {
      for (let p = x.xdp_multiprog__next_prog(null, mp); p; p = x.xdp_multiprog__next_prog(p, mp)) {
        view.programs.push({ name: x.xdp_program__name(p) ?? '', id: x.xdp_program__id(p), priority: x.xdp_program__run_prio(p) });
      }
    }
    return view;
  } finally {
    x.xdp_multiprog__close(mp);
  }
}

/* libxdp prints through its own hook (enum libxdp_print_level is libbpf's: warn, info, debug). */
let printFn: unknown = null;
let printSink: ((level: 'warn' | 'info', line: string) => void) | null = null;
let capture: string[] | null = null;

function hookPrint(so: koffi.IKoffiLib): void {
  const Proto = koffi.proto('int libxdp_print_fn(int level, const char *fmt, void *ap)');
  const setPrint = so.func('libxdp_set_print', 'void *', ['void *']) as (fn: unknown) => unknown;
  printFn = koffi.register((level: number, fmt: string, ap: unknown) => {
    if (level > 1) return 0;
    try {
      for (const raw of vformat(fmt, ap).split('\n')) {
        const line = raw.trimEnd();
        if (line.trim() === '') continue;
        capture?.push(line);
        if (printSink) printSink(level === 0 ? 'warn' : 'info', line);
        else if (level === 0) process.stderr.write(`libxdp: ${line}\n`);
      }
    } catch {
      // never throw into libxdp
    }
    return 0;
  }, koffi.pointer(Proto));
  setPrint(printFn);
}

/** Send libxdp's warnings and info lines to `fn` (default: warnings to stderr); debug lines are dropped. */
export function setLibxdpSink(fn: (level: 'warn' | 'info', line: string) => void): void {
  printSink = fn;
}

/** Run fn and return what libxdp printed meanwhile (warnings and info), to name a reason. */
export function withLibxdpLines<T>(fn: () => T): { result: T; lines: string[] } {
  const lines: string[] = [];
  const prev = capture;
  capture = lines;
  try {
    return { result: fn(), lines };
  } finally {
    capture = prev;
  }
}

/** Open fds, less the one readdir had on /proc/self/fd itself (closed again; the next open reuses its number). */
function openFds(): Set<number> {
  return new Set(
    readdirSync('/proc/self/fd').map(Number).filter((fd) => {
      try {
        fstatSync(fd);
        return true;
      } catch {
        return false;
      }
    }),
  );
}

/**
 * Run a libxdp call and close the program fds it left open. libxdp 1.3.1's
 * xdp_program__from_pin keeps the fd it got from bpf_obj_get after
 * xdp_program__from_fd has duplicated it (fixed upstream later: "duplicated
 * fd already in prog, close original"), and every reading of a dispatcher
 * (xdp_multiprog__get_from_ifindex, also inside attach and detach) goes
 * through it: in a daemon each attach or detach would leak one fd per
 * program on the port, and with it keep that program (xdp-filter's too)
 * loaded after it is unloaded. New fds of a BPF program (fdinfo "prog_id:")
 * that are not in keep() are closed; this process opens no others meanwhile
 * (libbpf and libxdp run on the main thread only).
 */
export function withoutLeakedProgFds<T>(fn: () => T, keep: (result: T) => number[]): T {
  const before = openFds();
  const result = fn();
  const kept = new Set(keep(result));
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (before.has(fd) || kept.has(fd)) continue;
    let info: string;
    try {
      info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // the directory's own fd, closed meanwhile
    }
    if (/^prog_id:/m.test(info) && !/^link_id:/m.test(info)) closeFd(fd);
  }
  return result;
}
