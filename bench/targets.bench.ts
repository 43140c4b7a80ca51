/**
 * The per-packet cost of 1 target against 100,000 (bench/targets.ts), alone:
 *
 *   node dist/bench/targets.bench.js [--rounds N] [--targets N] [--bits LOG2 --object PATH]...
 *
 * --bits gives the prefilter size (log2 of TR_PREFILTER_BITS) of the
 * objects that follow it (default this tree's); no --object: this tree's
 * build. Prints one JSON line per object. Root.
 */
import { defaultObjectPath } from '../src/bpf/object.js';
import { PREFILTER_BITS } from '../src/bpf/contract.js';
import { measureTargets } from './targets.js';

const a = process.argv.slice(2);
let rounds = 9;
let targets = 100_000;
let bits = Math.log2(PREFILTER_BITS);
const objects: { path: string; bits: number }[] = [];
for (let i = 0; i < a.length; i++) {
  if (a[i] === '--rounds') rounds = Number(a[++i]);
  else if (a[i] === '--targets') targets = Number(a[++i]);
  else if (a[i] === '--bits') bits = Number(a[++i]);
  else if (a[i] === '--object') objects.push({ path: a[++i]!, bits });
  else throw new Error(`unknown argument ${a[i]}`);
}
if (!objects.length) objects.push({ path: defaultObjectPath(), bits });
const r = measureTargets({ objects, rounds, targets, log: (m) => process.stderr.write(m + '\n') });
for (const o of r.objects) process.stdout.write(JSON.stringify(o) + '\n');
