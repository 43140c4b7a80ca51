/**
 * The fast parser (src/cli/fast.ts) against commander (src/cli/commander.ts)
 * on a corpus of valid and invalid command lines, hand-written and random:
 * wherever the fast parser answers, commander must give the same plan (the
 * request, socket, timeout, --json) or an error with the same exit status
 * and message. The fast parser may decline (null) and leave a line to
 * commander; the common lines must not be declined, or the fast path would
 * silently stop being used.
 */
import test from 'ava';
import { commanderParse } from '../src/cli/commander.js';
import { fastPlan } from '../src/cli/fast.js';
import { TcpresetError, exitCodeFor } from '../src/core/errors.js';
import { Rng } from '../testkit/rng.js';

const ENV = { TCPRESET_SOCKET: '/run/test.sock' };
type Outcome = { plan: unknown } | { exit: number; message: string } | { declined: true } | { printed: string };

function errorOutcome(err: unknown): Outcome {
  if (err instanceof TcpresetError) return { exit: exitCodeFor(err.code), message: err.message };
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && code.startsWith('commander.')) return { exit: 64, message: (err as Error).message };
  throw err;
}

function fast(argv: string[]): Outcome {
  try {
    const p = fastPlan(argv, ENV);
    return p === null ? { declined: true } : { plan: p };
  } catch (err) {
    return errorOutcome(err);
  }
}

async function full(argv: string[]): Promise<Outcome> {
  try {
    const p = await commanderParse(argv, ENV, { write: () => undefined });
    return 'printed' in p ? { printed: p.printed } : { plan: p };
  } catch (err) {
    return errorOutcome(err);
  }
}

const C = ['ids-1', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3', '-d', '180'];

/** Lines an operator or a playbook writes: the fast parser must take every one. */
const COMMON: string[][] = [
  C,
  [...C, '-p', '443'],
  [...C, '-p', '443', '--l2', '--json'],
  ['create', ...C],
  ['create', 'list', ...C.slice(1)],
  ['ids-1', '--sniff', 'eth1', '--reset', 'eth0', '--host', '2001:db8::1', '--duration', '60', '--port', '22'],
  ['ids-1', '--sniff=eth1', '--reset=eth0', '--host=::ffff:10.1.2.3', '--duration=60'],
  ['ids-1', '-ieth1', '-oeth0', '-h10.1.2.3', '-d60', '-p80'],
  ['-d', '60', '-h', '10.1.2.3', '-o', 'eth0', '-i', 'eth1', 'ids-1'],
  ['-s', '/x.sock', ...C],
  [...C, '-s', '/x.sock', '--timeout', '2.5'],
  ['--json', '--socket=/x.sock', ...C],
  ['list'],
  ['list', '--json'],
  ['--json', 'list'],
  ['-s', '/x.sock', 'list'],
  ['list', '-s', '/x.sock', '--timeout', '1'],
  ['-s/x.sock', 'status'],
  ['status', '--json', '--json'],
  ['version'],
  ['version', '--json', '--socket', '/x.sock'],
  ['cancel', '3f2a9c01bd4e'],
  ['cancel', '3f2a9c01bd4e', '--json'],
  ['cancel', 'ids-1', '-i', 'eth1', '-h', '10.1.2.3'],
  ['cancel', 'ids-1', '-i', 'eth1', '-h', '10.1.2.3', '-p', '443', '-s', '/x.sock'],
];

/** Refused lines: the values are wrong (65) or the words are (64). */
const REFUSED: string[][] = [
  [],
  ['ids-1'],
  ['ids-1', '-i', 'eth1'],
  [...C.slice(0, 8), '0'],
  [...C.slice(0, 8), '1.5'],
  [...C.slice(0, 6), '127.0.0.1', '-d', '5'],
  [...C.slice(0, 6), '10.0.0.0/8', '-d', '5'],
  [...C, '-p', '0'],
  [...C, '-p', '080'],
  [...C, '--timeout', 'soon'],
  [...C, '--timeout', '99999999'],
  [...C, '--socket', ''],
  ['ids 1', ...C.slice(1)],
  ['list', ...C.slice(1)],
  ['-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3', '-d', '9', 'list'],
  ['cancel'],
  ['cancel', 'a b'],
  ['cancel', 'ids-1', '-i', 'eth1'],
  ['cancel', 'ids-1', '-h', '10.1.2.3', '-p', '80'],
  ['cancel', 'ids-1', '-i', 'eth1', '-h', '::1'],
  ['cancel', 'ids-1', '-i', 'eth1', '-o', 'eth0', '-h', '10.1.2.3'],
  [...C, '--jsn'],
  [...C, 'extra'],
  [...C, '-h', '10.9.9.9'],
  [...C, '-d'],
  ['list', 'x'],
  ['list', '-i', 'eth1'],
  ['list', '-s'],
  ['-s', 'a', 'list', '-s', 'b'],
  ['status', '--l2'],
  ['status', '--json=yes'],
  ['ids-1', '-i', '-o', 'eth0', '-h', '10.1.2.3', '-d', '9'],
  ['ids-1', '-h', '--json', '-i', 'eth1', '-o', 'eth0', '-d', '9'],
  [...C.slice(0, 8), '-5'],
  ['-5', ...C.slice(1)],
  ['-', ...C.slice(1)],
  ['--', ...C],
  ['--', 'list'],
  ['help'],
  ['help', 'list'],
  ['help', 'nope'],
  ['help', ...C.slice(1)],
  ['--help'],
  ['list', '--help'],
  ['-V'],
  ['list', '--version'],
  ['-s', '/x', '--version'],
  ['ids-1', '-i', '--', '-o', 'eth0', '-h', '10.1.2.3', '-d', '9', '--socket', '/x'],
  ['--json', '-s', '/a', 'list', '--json', '-s', '/b'],
];

async function compare(argv: string[]): Promise<{ same: boolean; f: Outcome; c: Outcome }> {
  const f = fast(argv);
  const c = await full(argv);
  const same = 'declined' in f || JSON.stringify(f) === JSON.stringify(c);
  return { same, f, c };
}

test('every common command line is taken by the fast parser, and commander makes the same plan of it', async (t) => {
  for (const argv of COMMON) {
    const { same, f, c } = await compare(argv);
    t.true('plan' in f, `fast parser declined ${JSON.stringify(argv)}`);
    t.true(same, `${JSON.stringify(argv)}: fast ${JSON.stringify(f)} vs commander ${JSON.stringify(c)}`);
  }
  // The plan is the real thing, not two copies of one mistake: spot-check one.
  t.deepEqual(fast(['-s', '/x.sock', ...C, '-p', '443', '--l2', '--timeout', '2.5']), {
    plan: {
      command: 'create',
      body: { op: 'create', engid: 'ids-1', sniffIf: 'eth1', resetIf: 'eth0', host: '10.1.2.3', duration: 180, port: 443, mode: 'l2' },
      json: false,
      socket: '/x.sock',
      timeoutMs: 2500,
    },
  });
});

test('refused lines: wherever the fast parser answers, commander gives the same exit status and message', async (t) => {
  let answered = 0;
  for (const argv of REFUSED) {
    const { same, f, c } = await compare(argv);
    t.true(same, `${JSON.stringify(argv)}: fast ${JSON.stringify(f)} vs commander ${JSON.stringify(c)}`);
    t.false('plan' in c && !argv.includes('--') && argv[0] !== '-', `${JSON.stringify(argv)} was meant to be refused: ${JSON.stringify(c)}`);
    if ('exit' in f) answered++;
  }
  // Value errors are the fast parser's own (no commander load for a typo in a playbook).
  t.true(answered >= 15, `fast parser answered ${answered} refused lines`);
  // The comparison can fail: a plan that differs in one field is told apart.
  const f = fast(C) as { plan: { body: { duration: number } } };
  const c = (await full(C)) as { plan: { body: { duration: number } } };
  c.plan.body.duration += 1;
  t.not(JSON.stringify(f), JSON.stringify(c));
});

test('3000 random command lines (word soup, and common lines with a few words dropped, repeated, inserted, swapped or replaced): the fast parser never disagrees with commander', async (t) => {
  const POOL = [
    'ids-1', 'create', 'cancel', 'list', 'status', 'version', 'help', 'x y', '',
    '-i', '-o', '-h', '-p', '-d', '-s', '-V', '--l2', '--json', '--help', '--timeout', '--socket', '--sniff', '--reset', '--host',
    '--port', '--duration', '--socket=/y', '--sniff=eth1', '--json=1', '--', '-', '-x', '--nope', '-ieth1', '-seth0', '-d9',
    'eth1', 'eth0', '10.1.2.3', '2001:db8::1', '127.0.0.1', '443', '0', '9', '-5', '1.5', '/x.sock', '3f2a9c01bd4e',
  ];
  const r = new Rng(0x5eed);
  const next = (): number => r.u32();
  const pick = <T>(a: readonly T[]): T => a[next() % a.length];
  /** A common line with 1-3 edits: a word dropped, repeated, inserted, swapped or replaced. */
  const mutate = (line: string[]): string[] => {
    const a = [...line];
    for (let k = 1 + (next() % 3); k > 0; k--) {
      const i = next() % (a.length + 1);
      switch (next() % 5) {
        case 0:
          a.splice(i, 1);
          break;
        case 1:
          if (i < a.length) a.splice(i, 0, a[i]);
          break;
        case 2:
          a.splice(i, 0, pick(POOL));
          break;
        case 3: {
          const j = next() % a.length;
          if (i < a.length) [a[i], a[j]] = [a[j], a[i]];
          break;
        }
        default:
          if (i < a.length) a[i] = pick(POOL);
      }
    }
    return a;
  };
  const counts = { plan: 0, error: 0, declined: 0 };
  for (let i = 0; i < 3000; i++) {
    // Half word soup, half near-misses of real lines.
    const argv = i % 2 === 0 ? Array.from({ length: next() % 12 }, () => pick(POOL)) : mutate(pick(COMMON));
    const { same, f, c } = await compare(argv);
    if (!same) return t.fail(`${JSON.stringify(argv)}: fast ${JSON.stringify(f)} vs commander ${JSON.stringify(c)}`);
    if ('plan' in f) counts.plan++;
    else if ('exit' in f) counts.error++;
    else counts.declined++;
  }
  t.log(`3000 random lines: ${JSON.stringify(counts)}`);
  // Each kind of answer really occurred, so the agreement covered all of them.
  t.true(counts.plan > 200 && counts.error > 200 && counts.declined > 200, JSON.stringify(counts));
});
