/**
 * The namespace lab: a small switched LAN with a mirror port, built from
 * network namespaces, veth pairs and a Linux bridge, for the end-to-end
 * tests, `make demo` and `make bench`.
 *
 *   client ─eth0──p-client─┐                ┌─p-mirror──sniff0─ sensor
 *   server ─eth0──p-server─┤  br0 (ns "sw") │  (not on the bridge:
 *   bystander ─eth0──p-bys─┤                │   mirror copies only)
 *   sensor ─reset0──p-reset┘                │
 *        p-client, p-bystander: tc mirred ingress+egress ─┘
 *
 * The sensor sees both directions of the client's and the bystander's
 * traffic on sniff0 (the bystander's too, so a test that its sessions
 * survive means something) and sends RSTs from reset0, which has an IPv4
 * and an IPv6 address on the LAN. Optionally the mirror copies carry an
 * 802.1Q tag (tc BPF vlan_push on p-mirror), and the reset port can act as
 * an access port of that VLAN (strips the tag of frames from reset0, drops
 * untagged ones) for layer-2 injection that must re-tag.
 *
 * With tunnelMirror, the copies reach sniff0 inside VXLAN instead, as cloud
 * mirrors deliver them (AWS VPC Traffic Mirroring, Azure vTAP): the mirror
 * actions send them to a real vxlan device in the switch whose underlay is
 * p-mirror -> sniff0 (172.31.N.1 -> 172.31.N.2; sniff0 keeps no address,
 * the switch has a static neighbour entry for it, so the sensor's own stack
 * never takes the tunnel).
 *
 * Every interface lives in namespaces this lab created; destroy() (or process
 * exit, or a failure half-way through createLab) removes them all.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ValidationError } from '../../src/core/errors.js';
import { LabCommandError, Resources, assertIfName, nsArgv, run, sweepStale, type RunOptions, type RunResult } from './netns.js';

/** VIDs the lab's tc programs (bpf/lab_vlan.bpf.c) can push, by section name. */
export const VLAN_PUSH_SECTIONS: Readonly<Record<number, string>> = { 100: 'vlan_push', 200: 'vlan_push_200' };
/** The access-port program: pops an 802.1Q tag of VID 100, drops everything else. */
export const VLAN_POP_STRICT_SECTION = 'vlan_pop_strict';
export const VLAN_POP_STRICT_VID = 100;

export type HostRole = 'client' | 'server' | 'bystander';
export type NsRole = HostRole | 'sensor' | 'sw';

export interface LabOptions {
  /** Tag the mirror copies with this 802.1Q VID (100 or 200). */
  vlanMirror?: number;
  /**
   * Make the sensor's reset port an access port of the mirror VLAN: frames
   * from reset0 must carry that tag (it is stripped before the bridge);
   * untagged ones are dropped. For layer-2 injection. Needs vlanMirror 100.
   */
  resetAccessVlan?: boolean;
  /** Third octet of 10.77.N.0/24 and the N of fd77:N::/64; default: per-lab sequence. */
  subnet?: number;
  /** The tc BPF object; default build/lab_vlan.bpf.o (env TCPRESET_LAB_VLAN_OBJ overrides). */
  vlanObjectPath?: string;
  /** Turn off checksum/segmentation offloads on every veth (default true; see below). */
  disableOffloads?: boolean;
  /**
   * Put the server behind a router (issue 10 §1): the router has
   * 10.77.N.253 on the LAN and 10.78.N.1 toward the server, which becomes
   * 10.78.N.2 (fd78:N::2); the client and bystander route 10.78.N.0/24 via
   * the router, the sensor does not (add one to test the fix). The bridge
   * port p-server then leads to the router.
   */
  routedServer?: boolean;
  /** Deliver the mirror copies inside VXLAN (a kernel vxlan device) to this UDP port (4789 is the IANA one). */
  tunnelMirror?: { kind: 'vxlan'; port?: number };
  /**
   * Mirror the server's port too (a SPAN of both ends, or of an uplink):
   * then what the sensor sends toward the server also crosses the mirror.
   * Default: the client's and the bystander's ports only.
   */
  mirrorServer?: boolean;
}

export interface LabHost {
  role: HostRole;
  ns: string;
  ifname: string;
  v4: string;
  v6: string;
  /** MAC of the host's interface, lower-case colon form. */
  mac: string;
}

export interface LabSensor {
  ns: string;
  /** Receives the mirror copies; no address. */
  sniffIf: string;
  /** On the LAN, with addresses (layer-3 injection needs them). */
  resetIf: string;
  v4: string;
  v6: string;
  mac: string;
}

export interface LabSwitch {
  ns: string;
  bridge: string;
  ports: Record<HostRole | 'reset' | 'mirror', string>;
}

export interface Lab {
  /** Unique stem of every namespace name of this lab. */
  readonly name: string;
  readonly ns: Readonly<Record<NsRole, string>>;
  readonly hosts: Readonly<Record<HostRole, LabHost>>;
  readonly sensor: LabSensor;
  readonly sw: LabSwitch;
  readonly prefix: { v4: string; v6: string };
  readonly vlanMirror: number | undefined;
  readonly resetAccessVlan: boolean;
  /** With routedServer: the router's namespace and its LAN addresses (the server's gateway as seen from the LAN). */
  readonly router: { ns: string; v4: string; v6: string; serverPrefix: { v4: string; v6: string } } | undefined;
  /** The tunnel the mirror copies travel in, and its outer addresses. */
  readonly tunnel: { kind: 'vxlan'; port: number; outerSrc: string; outerDst: string; device: string } | undefined;
  /** Runs argv inside namespace `ns` (no shell); rejects on a non-zero exit. */
  exec(ns: string, argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Starts a long-running process inside `ns`; it is killed by destroy(). */
  spawn(ns: string, argv: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** Kills every process the lab started and deletes every namespace it made. Idempotent. */
  destroy(): Promise<void>;
  readonly destroyed: boolean;
}

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url)); // from dist/testkit/lab/

export function defaultVlanObjectPath(): string {
  return process.env.TCPRESET_LAB_VLAN_OBJ ?? `${REPO_ROOT}build/lab_vlan.bpf.o`;
}

let subnetSeq = 0;
let swept = false;

/**
 * Builds a lab. On any failure everything created so far is removed and the
 * error is rethrown.
 */
export async function createLab(opts: LabOptions = {}): Promise<Lab> {
  const vid = opts.vlanMirror;
  if (vid !== undefined && VLAN_PUSH_SECTIONS[vid] === undefined) {
    throw new ValidationError('vlanMirror', vid, `the lab can tag with VID ${Object.keys(VLAN_PUSH_SECTIONS).join(' or ')}`);
  }
  if (opts.resetAccessVlan && vid !== VLAN_POP_STRICT_VID) {
    throw new ValidationError('resetAccessVlan', true, `needs vlanMirror ${VLAN_POP_STRICT_VID}`);
  }
  const subnet = opts.subnet ?? (subnetSeq++ % 250) + 1;
  if (!Number.isInteger(subnet) || subnet < 0 || subnet > 255) throw new ValidationError('subnet', subnet, 'must be 0..255');
  const vlanObj = opts.vlanObjectPath ?? defaultVlanObjectPath();
  const tun = opts.tunnelMirror;
  if (tun && (tun.kind !== 'vxlan' || (tun.port !== undefined && (!Number.isInteger(tun.port) || tun.port < 1 || tun.port > 65535)))) {
    throw new ValidationError('tunnelMirror', tun, 'must be { kind: "vxlan", port?: 1..65535 }');
  }
  if (tun && vid !== undefined) throw new ValidationError('tunnelMirror', tun, 'and vlanMirror cannot be combined');

  if (!swept) {
    swept = true;
    await sweepStale();
  }

  const res = new Resources();
  const stem = res.stem;
  let tunnel: Lab['tunnel'];
  let router: Lab['router'];
  const ns: Record<NsRole, string> = {
    client: `${stem}-client`,
    server: `${stem}-server`,
    bystander: `${stem}-bystander`,
    sensor: `${stem}-sensor`,
    sw: `${stem}-sw`,
  };
  const sw: LabSwitch = {
    ns: ns.sw,
    bridge: 'br0',
    ports: { client: 'p-client', server: 'p-server', bystander: 'p-bystander', reset: 'p-reset', mirror: 'p-mirror' },
  };
  const v4 = (host: number): string => `10.77.${subnet}.${host}`;
  const v6 = (host: number): string => `fd77:${subnet.toString(16)}::${host}`;
  const hostNums: Record<HostRole, number> = { client: 10, server: 20, bystander: 30 };
  const hosts = {} as Record<HostRole, LabHost>;
  for (const role of ['client', 'server', 'bystander'] as const) {
    hosts[role] = { role, ns: ns[role], ifname: 'eth0', v4: v4(hostNums[role]), v6: v6(hostNums[role]), mac: '' };
  }
  const sensor: LabSensor = { ns: ns.sensor, sniffIf: 'sniff0', resetIf: 'reset0', v4: v4(40), v6: v6(40), mac: '' };
  for (const name of [...Object.values(sw.ports), sw.bridge, sensor.sniffIf, sensor.resetIf, 'eth0']) assertIfName(name);

  try {
    for (const name of Object.values(ns)) await res.addNetns(name);

    // No DAD in the hosts (addresses usable at once, link-local too); no IPv6
    // at all in the switch, so the mirror carries only the hosts' traffic.
    await Promise.all([
      ...(['client', 'server', 'bystander', 'sensor'] as const).map((r) =>
        run(nsArgv(ns[r], ['sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0'])),
      ),
      run(nsArgv(ns.sw, ['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'])),
    ]);

    // The switch: veth pairs made from inside it, the far end placed straight
    // into its namespace, so no name ever exists in the root namespace.
    // STP off, no forward delay, no multicast snooping: ports forward at once
    // and ND multicast is flooded.
    const swBatch = [
      `link add ${sw.bridge} type bridge stp_state 0 forward_delay 0 mcast_snooping 0`,
      ...(['client', 'server', 'bystander'] as const).map(
        (r) => `link add ${sw.ports[r]} type veth peer name ${hosts[r].ifname} netns ${ns[r]}`,
      ),
      `link add ${sw.ports.mirror} type veth peer name ${sensor.sniffIf} netns ${ns.sensor}`,
      `link add ${sw.ports.reset} type veth peer name ${sensor.resetIf} netns ${ns.sensor}`,
      ...(['client', 'server', 'bystander', 'reset'] as const).map((p) => `link set ${sw.ports[p]} master ${sw.bridge}`),
      ...Object.values(sw.ports).map((p) => `link set ${p} up`),
      `link set ${sw.bridge} up`,
    ];
    await ipBatch(ns.sw, swBatch);

    await Promise.all([
      ...(['client', 'server', 'bystander'] as const).map((r) =>
        ipBatch(ns[r], [
          `addr add ${hosts[r].v4}/24 dev ${hosts[r].ifname}`,
          `addr add ${hosts[r].v6}/64 dev ${hosts[r].ifname} nodad`,
          `link set ${hosts[r].ifname} up`,
        ]),
      ),
      ipBatch(ns.sensor, [
        `addr add ${sensor.v4}/24 dev ${sensor.resetIf}`,
        `addr add ${sensor.v6}/64 dev ${sensor.resetIf} nodad`,
        `link set ${sensor.resetIf} up`,
        `link set ${sensor.sniffIf} up`,
      ]),
    ]);

    // Mirrored frames of a veth carry partial checksums (left to an "offload"
    // that never happens) and GSO super-frames; with offloads off the hosts
    // compute checksums in software and send MTU-sized segments, so the
    // sensor and tcpdump see frames as a real mirror port would deliver them.
    if (opts.disableOffloads !== false) {
      const offload = ['tx', 'off', 'rx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off'];
      await Promise.all([
        ...(['client', 'server', 'bystander'] as const).map((r) => ethtoolK(ns[r], hosts[r].ifname, offload)),
        ethtoolK(ns.sensor, sensor.sniffIf, offload),
        ethtoolK(ns.sensor, sensor.resetIf, offload),
        ...Object.values(sw.ports).map((p) => ethtoolK(ns.sw, p, offload)),
      ]);
    }

    let mirrorDev = sw.ports.mirror;
    if (tun) {
      // Room for the 50 bytes of outer headers around a full 1514-byte frame.
      const sniffMac = await readMac(ns.sensor, sensor.sniffIf);
      tunnel = { kind: 'vxlan', port: tun.port ?? 4789, outerSrc: `172.31.${subnet}.1`, outerDst: `172.31.${subnet}.2`, device: 'vxm0' };
      await ipBatch(ns.sensor, [`link set ${sensor.sniffIf} mtu 9000`]);
      await ipBatch(ns.sw, [
        `link set ${sw.ports.mirror} mtu 9000`,
        `addr add ${tunnel.outerSrc}/24 dev ${sw.ports.mirror}`,
        `neigh add ${tunnel.outerDst} lladdr ${sniffMac} dev ${sw.ports.mirror} nud permanent`,
        `link add ${tunnel.device} type vxlan id 42 local ${tunnel.outerSrc} remote ${tunnel.outerDst} dstport ${tunnel.port} dev ${sw.ports.mirror}`,
        `link set ${tunnel.device} up`,
      ]);
      mirrorDev = tunnel.device;
    }

    // The mirror: both directions of the client's and the bystander's ports (and the server's, with mirrorServer).
    const tcBatch: string[] = [];
    for (const port of [sw.ports.client, sw.ports.bystander, ...(opts.mirrorServer ? [sw.ports.server] : [])]) {
      tcBatch.push(`qdisc add dev ${port} clsact`);
      for (const dir of ['ingress', 'egress']) {
        tcBatch.push(`filter add dev ${port} ${dir} protocol all u32 match u32 0 0 action mirred egress mirror dev ${mirrorDev}`);
      }
    }
    await run(['tc', '-n', ns.sw, '-batch', '-'], { input: tcBatch.join('\n') + '\n' });

    if (vid !== undefined) {
      if (!existsSync(vlanObj)) throw new ValidationError('vlanObjectPath', vlanObj, 'does not exist (run make)');
      // Tags must be in-band in the frame, not in skb metadata, or XDP on sniff0 never sees them.
      await ethtoolK(ns.sw, sw.ports.mirror, ['txvlan', 'off', 'tx-vlan-stag-hw-insert', 'off']);
      await tc(ns.sw, ['qdisc', 'add', 'dev', sw.ports.mirror, 'clsact']);
      await tcBpf(ns.sw, sw.ports.mirror, 'egress', vlanObj, VLAN_PUSH_SECTIONS[vid]!);
      if (opts.resetAccessVlan) {
        await tc(ns.sw, ['qdisc', 'add', 'dev', sw.ports.reset, 'clsact']);
        await tcBpf(ns.sw, sw.ports.reset, 'ingress', vlanObj, VLAN_POP_STRICT_SECTION);
      }
    }

    if (opts.routedServer) {
      const rns = `${stem}-router`;
      const far = (h: number): { v4: string; v6: string } => ({ v4: `10.78.${subnet}.${h}`, v6: `fd78:${subnet.toString(16)}::${h}` });
      router = { ns: rns, v4: v4(253), v6: v6(253), serverPrefix: { v4: `10.78.${subnet}.0/24`, v6: `fd78:${subnet.toString(16)}::/64` } };
      await res.addNetns(rns);
      await run(nsArgv(rns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']));
      // The server's LAN port now leads to the router; the server hangs off the router's eth1.
      await ipBatch(ns.sw, [
        `link del ${sw.ports.server}`,
        `link add ${sw.ports.server} type veth peer name eth0 netns ${rns}`,
        `link set ${sw.ports.server} master ${sw.bridge}`,
        `link set ${sw.ports.server} up`,
      ]);
      await ipBatch(rns, [
        `addr add ${router.v4}/24 dev eth0`,
        `addr add ${router.v6}/64 dev eth0 nodad`,
        'link set eth0 up',
        `link add eth1 type veth peer name ${hosts.server.ifname} netns ${ns.server}`,
        `addr add ${far(1).v4}/24 dev eth1`,
        `addr add ${far(1).v6}/64 dev eth1 nodad`,
        'link set eth1 up',
      ]);
      hosts.server.v4 = far(2).v4;
      hosts.server.v6 = far(2).v6;
      await Promise.all([
        ipBatch(ns.server, [
          `addr add ${hosts.server.v4}/24 dev ${hosts.server.ifname}`,
          `addr add ${hosts.server.v6}/64 dev ${hosts.server.ifname} nodad`,
          `link set ${hosts.server.ifname} up`,
          `route add default via ${far(1).v4}`,
          `route add default via ${far(1).v6}`,
        ]),
        ...(['client', 'bystander'] as const).map((r) =>
          ipBatch(ns[r], [`route add ${router!.serverPrefix.v4} via ${router!.v4}`, `route add ${router!.serverPrefix.v6} via ${router!.v6}`]),
        ),
      ]);
      if (opts.disableOffloads !== false) {
        const offload = ['tx', 'off', 'rx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off'];
        await Promise.all([
          ethtoolK(ns.server, hosts.server.ifname, offload), ethtoolK(rns, 'eth0', offload), ethtoolK(rns, 'eth1', offload),
          ethtoolK(ns.sw, sw.ports.server, offload),
        ]);
      }
    }

    const macs = await Promise.all([
      ...(['client', 'server', 'bystander'] as const).map((r) => readMac(ns[r], hosts[r].ifname)),
      readMac(ns.sensor, sensor.resetIf),
    ]);
    hosts.client.mac = macs[0]!;
    hosts.server.mac = macs[1]!;
    hosts.bystander.mac = macs[2]!;
    sensor.mac = macs[3]!;

    await waitIpv6Ready([ns.client, ns.server, ns.bystander, ns.sensor]);
  } catch (err) {
    await res.destroy();
    throw err;
  }

  const lab: Lab = {
    name: stem,
    ns,
    hosts,
    sensor,
    sw,
    prefix: { v4: `10.77.${subnet}.0/24`, v6: `fd77:${subnet.toString(16)}::/64` },
    vlanMirror: vid,
    resetAccessVlan: opts.resetAccessVlan === true,
    tunnel,
    router,
    exec: (inNs, argv, runOpts) => run(nsArgv(inNs, argv), runOpts),
    spawn: (inNs, argv, spawnOpts) => {
      const [file, ...args] = nsArgv(inNs, argv);
      const child = spawn(file!, args, { stdio: ['pipe', 'pipe', 'pipe'], ...spawnOpts });
      res.trackChild(child);
      return child;
    },
    destroy: () => res.destroy(),
    get destroyed() {
      return res.isDestroyed;
    },
  };
  return lab;
}

function ipBatch(ns: string, lines: string[]): Promise<RunResult> {
  return run(['ip', '-n', ns, '-batch', '-'], { input: lines.join('\n') + '\n' });
}

function tc(ns: string, args: string[]): Promise<RunResult> {
  return run(['tc', '-n', ns, ...args]);
}

/**
 * Attaches program `name` of the lab object in direct-action mode. iproute2
 * 6.1 selects by ELF section only; the object names them "tc/<name>" (libbpf
 * convention) — a plain "<name>" section is accepted too.
 */
async function tcBpf(ns: string, dev: string, dir: 'ingress' | 'egress', obj: string, name: string): Promise<void> {
  const attach = (sec: string): Promise<RunResult> => tc(ns, ['filter', 'add', 'dev', dev, dir, 'bpf', 'da', 'obj', obj, 'sec', sec]);
  try {
    await attach(`tc/${name}`);
  } catch (err) {
    if (!(err instanceof LabCommandError) || !/doesn't contain sec/.test(err.stderr)) throw err;
    await attach(name);
  }
}

function ethtoolK(ns: string, ifname: string, features: string[]): Promise<RunResult> {
  return run(nsArgv(ns, ['ethtool', '-K', ifname, ...features]));
}

async function readMac(ns: string, ifname: string): Promise<string> {
  const { stdout } = await run(['ip', '-n', ns, '-j', 'link', 'show', 'dev', ifname]);
  const info = JSON.parse(stdout) as { address?: string }[];
  const mac = info[0]?.address;
  if (!mac) throw new Error(`no MAC for ${ifname} in ${ns}`);
  return mac;
}

/** IPv6 is usable once no address is tentative (DAD is off, so this is quick). */
async function waitIpv6Ready(namespaces: string[], timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const outs = await Promise.all(namespaces.map((n) => run(['ip', '-n', n, '-6', 'addr', 'show', 'tentative'])));
    if (outs.every((o) => o.stdout.trim() === '')) return;
    if (Date.now() > deadline) throw new Error(`IPv6 addresses still tentative after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
