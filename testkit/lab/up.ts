/**
 * Brings a lab up and keeps it until Ctrl-C / SIGTERM, for
 * demos and manual exploration:
 *
 *   node dist/testkit/lab/up.js [--vlan 100|200] [--reset-access-vlan]
 *
 * Prints one JSON line describing the lab (namespaces, interfaces,
 * addresses), e.g. to run `ip netns exec <sensor ns> tcpresetd ...`, then
 * removes everything on exit.
 */
import { createLab, type LabOptions } from './lab.js';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opts: LabOptions = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--vlan') opts.vlanMirror = Number(args[++i]);
    else if (a === '--reset-access-vlan') opts.resetAccessVlan = true;
    else {
      process.stderr.write('usage: up.js [--vlan 100|200] [--reset-access-vlan]\n');
      process.exit(64);
    }
  }
  const lab = await createLab(opts);
  const { name, ns, hosts, sensor, sw, prefix, vlanMirror, resetAccessVlan } = lab;
  process.stdout.write(JSON.stringify({ name, ns, hosts, sensor, sw, prefix, vlanMirror, resetAccessVlan }) + '\n');
  const down = async (): Promise<void> => {
    await lab.destroy();
    process.exit(0);
  };
  process.on('SIGINT', () => void down());
  process.on('SIGTERM', () => void down());
  setInterval(() => {}, 1 << 30); // hold until a signal
}

main().catch((err: unknown) => {
  process.stderr.write(`lab: ${(err as Error)?.message ?? String(err)}\n`);
  process.exit(1);
});
