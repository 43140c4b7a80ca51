/**
 * Build step (make): the CLI as one CommonJS file, dist/tcpreset.cjs, and
 * V8's code cache for it, dist/tcpreset.cjs.cache, which bin/tcpreset
 * loads. One file instead of a dozen ES modules spares Node's ESM loader
 * and a file read per module; the code cache, made after running the
 * common command lines once, spares compiling the functions they use.
 *
 * V8 checks a code cache only against the source's length, so the bundle
 * ends with a build id and the cache starts with the same id; bin/tcpreset
 * uses a cache only when the two match (and V8 may still reject it, e.g.
 * for another Node version: then it compiles, as without a cache).
 *
 * Usage: node dist/src/cli/bundle.js   (from the repository root)
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import type { StatusResult } from '../control/protocol.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const BUNDLE = join(ROOT, 'dist/tcpreset.cjs');
/** The bundle's last line; the cache file starts with the same text and a newline. */
const ID_RE = /\n\/\/ tcpreset-build-id: ([0-9a-f]{32})\n$/;

/** The function wrapper bin/tcpreset compiles the bundle in (as Node's CommonJS loader does). */
export function wrapBundle(source: string): string {
  return `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
}

interface RunFn {
  run(argv: string[], io: { stdout: { write(s: string): unknown }; stderr: { write(s: string): unknown }; env: Record<string, string> }): Promise<number>;
}

/** A status as the daemon sends it (typed: a field the protocol adds must be filled here too). */
const TRAINING_STATUS: StatusResult = {
  version: '0', pid: 1, uptimeMs: 1,
  interfaces: [{ ifname: 'eth1', role: 'sniff', mode: 'native', up: true, watched: false, jobs: 1 }, { ifname: 'eth0', role: 'reset', mode: 'l3', up: true }],
  counters: { packets: 1 }, ring: { records: 2, wakeups: 1, stale: 0 },
  senders: [{ ifname: 'eth0', mode: 'l3', sent: 2, errors: 0 }],
  resetTotals: [{ ifname: 'eth0', mode: 'l3', sent: 2, errors: 0, rsts: 0, probes: 0, sweepErrors: 0, refused: 0 }],
  sweep: { sent: 0, errors: 0, known: 0, verified: 0 },
  flowsReset: 1,
  sniff: [{ ifname: 'eth1', ifindex: 2, packets: 1, tcp: 1, decap: 0, unparsableWindows: 0 }],
  jobs: 1, targets: 1, faultyJobs: 0, dataPlane: 'open', dataPlaneFailures: 0,
  memory: { rss: 1, heapUsed: 1, heapTotal: 1, external: 1, arrayBuffers: 1 },
  state: { path: '/var/lib/tcpreset/jobs.json', journalRecords: 1, snapshotJobs: 0, compactions: 0, appends: 1, saveFailures: 0, droppedAtLoad: 0 },
  config: { file: '/etc/tcpreset/config.json', reloads: { applied: 0, refused: 1 }, fault: { message: 'config /etc/tcpreset/config.json: x', file: '/etc/tcpreset/config.json', at: '1970-01-01T00:00:00.000Z' } },
  connections: 1, requests: 1,
};

/** A daemon stand-in that answers every op, for the training run. */
async function trainingPeer(path: string): Promise<net.Server> {
  const job = {
    id: 'train',
    engid: 'train',
    sniffIf: 'eth1',
    resetIf: 'eth0',
    host: '192.0.2.1',
    port: 443,
    mode: 'l3',
    createdAt: '2026-01-01T00:00:00.000Z',
    expiresAt: '2026-01-01T00:10:00.000Z',
    remainingMs: 600_000,
    counters: { matched: 1, rstsSent: 2, flows: 1, firstHitAt: null, lastHitAt: null },
  };
  const results: Record<string, unknown> = {
    create: { action: 'created', job },
    cancel: { job },
    list: { jobs: [job] },
    status: TRAINING_STATUS,
    version: { version: '0' },
  };
  const server = net.createServer((s) => {
    s.once('data', (d) => {
      const req = JSON.parse(d.toString('utf8')) as { op: string };
      s.end(`${JSON.stringify({ v: 1, ok: true, result: results[req.op] })}\n`);
    });
  });
  await new Promise<void>((ok) => server.listen(path, ok));
  return server;
}

async function main(): Promise<void> {
  const esbuild = await import('esbuild');
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const out = await esbuild.build({
    entryPoints: [join(ROOT, 'dist/src/cli/main.js')],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    write: false,
    // commander loads only on the help/unusual path, from node_modules.
    external: ['commander'],
    define: { TCPRESET_VERSION: JSON.stringify(version) },
    // import() left in the output would need an ESM loader callback under vm.Script.
    supported: { 'dynamic-import': false },
    logOverride: { 'empty-import-meta': 'silent' },
    logLevel: 'warning',
  });
  const id = randomBytes(16).toString('hex');
  const source = `${out.outputFiles[0].text}\n// tcpreset-build-id: ${id}\n`;
  writeFileSync(BUNDLE, source);

  // Run the common lines once inside the same Script, then save what V8 compiled.
  const script = new Script(wrapBundle(source), { filename: BUNDLE });
  const mod = { exports: {} as RunFn };
  (script.runInThisContext() as (...a: unknown[]) => void)(mod.exports, createRequire(BUNDLE), mod, BUNDLE, dirname(BUNDLE));
  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-bundle-'));
  const sock = join(dir, 's.sock');
  const server = await trainingPeer(sock);
  const sink = { write: () => undefined };
  const io = { stdout: sink, stderr: sink, env: { TCPRESET_SOCKET: sock } };
  try {
    for (const argv of [
      ['ids-1', '-i', 'eth1', '-o', 'eth0', '-h', '192.0.2.1', '-p', '443', '-d', '600'],
      ['create', 'ids-1', '--sniff', 'eth1', '--reset=eth0', '-h', '2001:db8::1', '-d', '60', '--l2', '--json'],
      ['list'],
      ['list', '--json'],
      ['status'],
      ['version'],
      ['cancel', 'train'],
      ['cancel', 'ids-1', '-i', 'eth1', '-h', '192.0.2.1', '-p', '443'],
    ]) {
      const code = await mod.exports.run(argv, io);
      if (code !== 0) throw new Error(`training run of "${argv.join(' ')}" exited ${code}`);
    }
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
  writeFileSync(`${BUNDLE}.cache`, Buffer.concat([Buffer.from(`${id}\n`), script.createCachedData()]));
}

/** The build id at the end of a bundle's source, if any. */
export function bundleId(source: string): string | undefined {
  return ID_RE.exec(source)?.[1];
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`bundle: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}
