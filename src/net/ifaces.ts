/**
 * Interface facts and the checks the seed demands ("must be active",
 * "must be active and have a valid IP address"), read from sysfs, procfs
 * and os.networkInterfaces(): light (no koffi), so anything may import it.
 *
 * All sources show the network namespace of the process (sysfs: the one
 * it was mounted in; `ip netns exec` remounts it).
 *
 * Decisions (documented in --help and the report):
 *  - "Active" = administratively up (IFF_UP) AND operstate "up" or
 *    "unknown" (drivers without carrier reporting: dummy, tun, some
 *    virtual NICs). IFF_UP with operstate "down", "lowerlayerdown" (a veth
 *    whose peer is down), "dormant", "notpresent" or "testing" is NOT
 *    active: such an interface sees and sends nothing, and accepting a job
 *    on it would promise enforcement that cannot happen.
 *  - Reset interface, layer 3 (default): needs an address of HOST's
 *    family the kernel can route from. IPv4: any non-loopback address.
 *    IPv6: a global-scope (not link-local, not loopback), non-tentative,
 *    non-DAD-failed address, because a link-local address alone gives no
 *    route to a global peer; when HOST is itself link-local (fe80::/10) a
 *    link-local address is enough.
 *  - Reset interface, layer 2: frames are addressed by MAC, so no IP
 *    address is needed; the interface must be Ethernet with a MAC.
 */
import os from 'node:os';
import { readFileSync, readdirSync } from 'node:fs';
import { TcpresetError } from '../core/errors.js';
import { formatIp, parseIp, type ParsedIp } from '../core/addr.js';
import { validateIfname } from '../core/validate.js';
import type { Family, IfaceRole, InjectMode } from '../core/model.js';

export const IFF_UP = 0x1;
export const IFF_LOOPBACK = 0x8;
const ARPHRD_ETHER = 1;
/** IFA_F_* flags of /proc/net/if_inet6. */
const IFA_F_DADFAILED = 0x08;
const IFA_F_TENTATIVE = 0x40;

const SYS_NET = '/sys/class/net';
const ACTIVE_OPERSTATES = new Set(['up', 'unknown']);

export type AddrScope = 'global' | 'link' | 'host' | 'site';

export interface IfaceState {
  name: string;
  ifindex: number;
  /** dev->flags as sysfs shows it (IFF_RUNNING is not among them; see operstate). */
  flags: number;
  /** IFF_UP: administratively up. */
  up: boolean;
  loopback: boolean;
  /** RFC 2863 state from sysfs: up, down, lowerlayerdown, dormant, unknown, ... */
  operstate: string;
  /** up and operstate up|unknown: the seed's "active". */
  active: boolean;
  /** ARPHRD_* (1 = Ethernet). */
  type: number;
  /** "aa:bb:cc:dd:ee:ff" or "" when the device has none. */
  mac: string;
}

export interface IfaceAddress {
  family: Family;
  /** Canonical text (dotted quad / RFC 5952), the same form as a job's host. */
  address: string;
  prefixLen: number;
  scope: AddrScope;
  /** IPv6 only: still in duplicate address detection, or DAD failed: not usable yet. */
  tentative: boolean;
}

export interface LocalAddress {
  family: Family;
  address: string;
  /** null when the source (the IPv4 local routing table) does not say. */
  ifname: string | null;
}

function readSys(name: string, attr: string): string | null {
  try {
    return readFileSync(`${SYS_NET}/${name}/${attr}`, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Names of all interfaces in this network namespace. */
export function listInterfaces(): string[] {
  try {
    return readdirSync(SYS_NET).sort();
  } catch {
    return [];
  }
}

/** State of interface `name`, or null if it does not exist. `name` must be syntactically valid. */
export function readInterface(name: string): IfaceState | null {
  validateIfname(name);
  const ifindexText = readSys(name, 'ifindex');
  if (ifindexText === null) return null;
  const flags = Number.parseInt(readSys(name, 'flags') ?? '0', 16) || 0;
  const operstate = readSys(name, 'operstate') ?? 'unknown';
  const up = (flags & IFF_UP) !== 0;
  const mac = readSys(name, 'address') ?? '';
  return {
    name,
    ifindex: Number(ifindexText),
    flags,
    up,
    loopback: (flags & IFF_LOOPBACK) !== 0,
    operstate,
    active: up && ACTIVE_OPERSTATES.has(operstate),
    type: Number(readSys(name, 'type') ?? '0'),
    mac: /^0?0(:00)+$/.test(mac) ? '' : mac,
  };
}

function v4Scope(bytes: Uint8Array): AddrScope {
  if (bytes[0] === 127) return 'host';
  if (bytes[0] === 169 && bytes[1] === 254) return 'link';
  return 'global';
}

function v6Scope(bytes: Uint8Array): AddrScope {
  if (bytes[0] === 0xfe && (bytes[1] & 0xc0) === 0x80) return 'link';
  if (bytes[0] === 0xfe && (bytes[1] & 0xc0) === 0xc0) return 'site';
  if (bytes.every((b, i) => b === (i === 15 ? 1 : 0))) return 'host';
  return 'global';
}

function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

interface Inet6Entry extends IfaceAddress {
  ifname: string;
}

/** Every IPv6 address of the namespace, with DAD state (interfaces without carrier included). */
function readIfInet6(): Inet6Entry[] {
  let text: string;
  try {
    text = readFileSync('/proc/net/if_inet6', 'utf8');
  } catch {
    return []; // IPv6 disabled
  }
  const out: Inet6Entry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || !/^[0-9a-f]{32}$/.test(f[0])) continue;
    const bytes = hexToBytes(f[0]);
    const flags = Number.parseInt(f[4], 16);
    out.push({
      ifname: f[5],
      family: 6,
      address: formatIp(bytes),
      prefixLen: Number.parseInt(f[2], 16),
      scope: v6Scope(bytes),
      tentative: (flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)) !== 0,
    });
  }
  return out;
}

function netmaskBits(mask: string): number {
  return parseIp(mask, 'netmask').bytes.reduce((n, b) => n + popcount(b), 0);
}
function popcount(b: number): number {
  let n = 0;
  for (; b; b &= b - 1) n++;
  return n;
}

/**
 * Addresses of `name`. IPv4 comes from os.networkInterfaces(), which
 * (libuv) lists only interfaces that are up and running; IPv6 from
 * /proc/net/if_inet6, which lists all. Callers check "active" first.
 */
export function interfaceAddresses(name: string): IfaceAddress[] {
  validateIfname(name);
  const out: IfaceAddress[] = [];
  for (const a of os.networkInterfaces()[name] ?? []) {
    if (a.family !== 'IPv4') continue;
    const ip = parseIp(a.address, 'address');
    out.push({ family: 4, address: ip.canonical, prefixLen: netmaskBits(a.netmask), scope: v4Scope(ip.bytes), tentative: false });
  }
  for (const e of readIfInet6()) {
    if (e.ifname !== name) continue;
    const { ifname: _drop, ...addr } = e;
    out.push(addr);
  }
  return out;
}

/** IPv4 addresses in the kernel's local routing table ("/32 host LOCAL"): every address of every interface not down. */
function readFibLocal(): string[] {
  let text: string;
  try {
    text = readFileSync('/proc/net/fib_trie', 'utf8');
  } catch {
    return [];
  }
  const out = new Set<string>();
  let leaf: string | null = null;
  for (const line of text.split('\n')) {
    const m = /^\s*\|-- (\d+\.\d+\.\d+\.\d+)$/.exec(line);
    if (m) {
      leaf = m[1];
      continue;
    }
    if (leaf !== null && /^\s*\/32 host LOCAL$/.test(line)) out.add(leaf);
  }
  return [...out];
}

/**
 * Every address this host owns, in this namespace: the daemon refuses to
 * target them (resetting the sensor's own sessions, e.g. its management
 * SSH, would cut the branch it sits on). Union of os.networkInterfaces(),
 * /proc/net/if_inet6 and the IPv4 local routing table, so addresses on
 * interfaces without carrier count too. Deduplicated by (family, address).
 */
export function allLocalAddresses(): LocalAddress[] {
  const seen = new Map<string, LocalAddress>();
  const add = (a: LocalAddress): void => {
    const key = `${a.family}/${a.address}`;
    const prev = seen.get(key);
    if (!prev || (prev.ifname === null && a.ifname !== null)) seen.set(key, a);
  };
  for (const [ifname, list] of Object.entries(os.networkInterfaces())) {
    for (const a of list ?? []) {
      const ip = parseIp(a.address.split('%')[0], 'address');
      add({ family: ip.family, address: ip.canonical, ifname });
    }
  }
  for (const e of readIfInet6()) add({ family: 6, address: e.address, ifname: e.ifname });
  for (const a of readFibLocal()) add({ family: 4, address: a, ifname: null });
  return [...seen.values()];
}

/**
 * An IPv4 HOST that is the network or the directed broadcast address of one
 * of the reset interface's networks (`addrs`, prefixes up to /30; /31 and
 * /32 have no such addresses, RFC 3021): the reason, else null. Both pass
 * every address check (only the interface knows its networks); RSTs to them
 * would go to every host of the segment, or nowhere.
 */
export function subnetEdgeProblem(hostOrText: string | ParsedIp, addrs: readonly IfaceAddress[]): string | null {
  // A parsed host (the daemon's create, core/addr.ts Host) is used as it is; text is parsed.
  const { bytes: h, canonical: host } = typeof hostOrText === 'string' ? { bytes: parseIp(hostOrText, 'host').bytes, canonical: hostOrText } : hostOrText;
  if (h.length !== 4) return null;
  for (const a of addrs) {
    if (a.family !== 4 || a.prefixLen > 30) continue;
    const net = parseIp(a.address, 'address').bytes.slice();
    const bcast = net.slice();
    for (let i = 0; i < 4; i++) {
      const hostBits = Math.min(8, Math.max(0, 32 - a.prefixLen - 8 * (3 - i)));
      net[i] &= ~((1 << hostBits) - 1) & 0xff;
      bcast[i] |= (1 << hostBits) - 1;
    }
    const what = h.every((x, i) => x === bcast[i]) ? 'broadcast' : h.every((x, i) => x === net[i]) ? 'network' : null;
    if (what) return `has ${a.address}/${a.prefixLen}, whose ${what} address is ${host}: HOST must be one host`;
  }
  return null;
}

function ifaceError(role: IfaceRole, state: IfaceState | null, name: string, problem: string, extra: object = {}): TcpresetError {
  return new TcpresetError('E_IFACE', `${role} interface "${name}" ${problem}`, {
    details: {
      ifname: name,
      role,
      ...(state ? { ifindex: state.ifindex, up: state.up, operstate: state.operstate, flags: state.flags } : { exists: false }),
      ...extra,
    },
  });
}

function checkActive(name: string, role: IfaceRole): IfaceState {
  validateIfname(name, role === 'sniff' ? 'sniffIf' : 'resetIf');
  const state = readInterface(name);
  if (state === null) {
    const known = listInterfaces();
    const shown = known.length > 20 ? `${known.slice(0, 20).join(', ')}, ...` : known.join(', ') || 'none';
    throw ifaceError(role, null, name, `does not exist (interfaces here: ${shown})`);
  }
  if (!state.up) {
    throw ifaceError(role, state, name, `is administratively down (operstate ${state.operstate})`);
  }
  if (!state.active) {
    const why = state.operstate === 'lowerlayerdown' || state.operstate === 'down' ? ', no carrier' : '';
    throw ifaceError(role, state, name, `is up but not active (operstate ${state.operstate}${why})`);
  }
  return state;
}

/** The sniff interface must exist and be active. Throws E_IFACE. */
export function checkSniffInterface(name: string): IfaceState {
  return checkActive(name, 'sniff');
}

export interface ResetCheck {
  state: IfaceState;
  /** The addresses that qualified (layer 3), empty in layer 2 mode. */
  usable: IfaceAddress[];
}

/**
 * The reset interface must exist, be active and (layer 3) have a usable
 * address of HOST's family; see the header for what "usable" means.
 * `host` (canonical) lets a link-local IPv6 HOST accept a link-local
 * address. Throws E_IFACE naming what is missing.
 */
export function checkResetInterface(
  name: string,
  family: Family,
  opts: { mode?: InjectMode; host?: string } = {},
): ResetCheck {
  const state = checkActive(name, 'reset');
  if (opts.mode === 'l2') {
    if (state.type !== ARPHRD_ETHER || state.mac === '') {
      throw ifaceError('reset', state, name, 'is not an Ethernet interface with a MAC address (layer 2 injection needs one)', { type: state.type });
    }
    return { state, usable: [] };
  }
  const all = interfaceAddresses(name).filter((a) => a.family === family);
  if (family === 4 && opts.host !== undefined) {
    const edge = subnetEdgeProblem(opts.host, all);
    if (edge) throw ifaceError('reset', state, name, edge, { host: opts.host });
  }
  const hostLinkLocal = family === 6 && opts.host !== undefined && v6Scope(parseIp(opts.host, 'host').bytes) === 'link';
  const usable = all.filter((a) => {
    if (a.scope === 'host' || a.tentative) return false;
    if (family === 6 && a.scope === 'link') return hostLinkLocal;
    return true;
  });
  if (usable.length === 0) {
    const have = all.map((a) => `${a.address}/${a.prefixLen} (${a.tentative ? 'tentative' : a.scope === 'host' ? 'loopback' : a.scope === 'link' ? 'link-local' : a.scope})`);
    const need = family === 6 && !hostLinkLocal ? 'a global IPv6 address' : `a usable IPv${family} address`;
    const only = have.length ? `; it has only ${have.join(', ')}` : `; it has no IPv${family} address`;
    throw ifaceError('reset', state, name, `needs ${need} to route resets to the host${only}`, {
      family,
      addresses: all.map((a) => a.address),
    });
  }
  return { state, usable };
}

/**
 * The problem with an interface in its role as a message, or null when the
 * check passes: for the daemon's status and periodic health reporting.
 */
export function interfaceFault(name: string, role: IfaceRole, family?: Family, opts: { mode?: InjectMode } = {}): string | null {
  try {
    if (role === 'sniff' || family === undefined) checkActive(name, role);
    else checkResetInterface(name, family, opts);
    return null;
  } catch (err) {
    if (err instanceof TcpresetError) return err.message;
    throw err;
  }
}
