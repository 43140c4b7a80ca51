/**
 * tcpkill (dsniff) as the baseline, set up so it can work and the
 * comparison is fair:
 * - it runs in the sensor namespace on the same sniff interface (sniff0);
 * - it refuses an interface without an IPv4 address, so sniff0 gets a /32
 *   from TEST-NET-2 that routes nowhere (ensureSniffAddress);
 * - it injects through libnet's raw IPv4 socket without binding it to a
 *   device, so the kernel routes its RSTs like ours: out of reset0, the
 *   sensor's interface on the LAN (checked by the reaction benchmark, whose
 *   reset-interface capture sees tcpkill's RSTs);
 * - one process per target, with the pcap filter `host X` (its only way to
 *   express a target), default severity (3 RSTs per packet).
 * Its stderr (one line per RST) goes to a file, as a service would log it.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from '../../testkit/lab/lab.js';

export const TCPKILL_SNIFF_ADDR = '198.51.100.1/32';

export async function ensureSniffAddress(lab: Lab): Promise<void> {
  const { stdout } = await lab.exec(lab.sensor.ns, ['ip', '-j', '-4', 'addr', 'show', 'dev', lab.sensor.sniffIf]);
  const has = (JSON.parse(stdout) as { addr_info?: unknown[] }[])[0]?.addr_info?.length;
  if (!has) await lab.exec(lab.sensor.ns, ['ip', 'addr', 'add', TCPKILL_SNIFF_ADDR, 'dev', lab.sensor.sniffIf]);
}

export interface TcpkillProc {
  child: ChildProcess;
  host: string;
  logPath: string;
}

/** Spawns `tcpkill -i sniff0 host HOST`; does not wait. */
export function spawnTcpkill(lab: Lab, host: string, logPath: string): TcpkillProc {
  const fd = openSync(logPath, 'w');
  try {
    const child = lab.spawn(lab.sensor.ns, ['tcpkill', '-i', lab.sensor.sniffIf, 'host', host], { stdio: ['ignore', 'ignore', fd] });
    return { child, host, logPath };
  } finally {
    closeSync(fd);
  }
}

/** Waits until tcpkill printed "listening on" (pcap open, filter set, libnet ready). */
export async function waitListening(p: TcpkillProc, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let text = '';
    try {
      text = readFileSync(p.logPath, 'utf8');
    } catch {
      /* not yet created */
    }
    if (/listening on/.test(text)) return;
    if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`tcpkill for ${p.host} exited: ${text.trim()}`);
    if (Date.now() > deadline) throw new Error(`tcpkill for ${p.host} not listening after ${timeoutMs} ms: ${text.trim()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export async function stopTcpkill(procs: Iterable<TcpkillProc>): Promise<void> {
  await Promise.all(
    [...procs].map(
      (p) =>
        new Promise<void>((resolve) => {
          if (p.child.exitCode !== null || p.child.signalCode !== null) return resolve();
          const t = setTimeout(() => p.child.kill('SIGKILL'), 2000);
          p.child.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          p.child.kill('SIGTERM');
        }),
    ),
  );
}
