/**
 * The fast parser: the common command lines (the seed syntax, create,
 * cancel, list, status, version, with the global options anywhere) turned
 * into a Plan without loading commander, so that the request is on the
 * socket a few milliseconds after Node starts.
 *
 * It only has to be right, not complete: anything it does not recognise
 * plainly (help, -V, "--", an unknown option, an option given twice, a
 * value that starts with "-", a missing value) returns
 * null and commander parses the line instead, with its full error messages.
 * What it does accept goes through the same planFor() as commander's
 * actions, and test/cli-parse.test.ts checks on a corpus that both parsers
 * give the same plan or the same error.
 */
import { COMMANDS, GLOBAL_OPTS, commandIndex, planFor, type CommandName, type OptSpec, type ParsedOpts, type Plan } from './spec.js';

/** Options of each subcommand (its own and the global ones), by spelling. */
const TABLES = new Map<CommandName, Map<string, OptSpec>>();
for (const c of COMMANDS) {
  const m = new Map<string, OptSpec>();
  for (const o of [...GLOBAL_OPTS, ...c.opts]) {
    m.set(o.long, o);
    if (o.short) m.set(o.short, o);
  }
  TABLES.set(c.name, m);
}

/**
 * A Plan for `argv`, or null when commander must decide (including every
 * line that is a usage error commander words better). Throws the same
 * TcpresetError as planFor() for a line whose words are fine but whose
 * values are not.
 */
export function fastPlan(argv: readonly string[], env: Record<string, string | undefined>): Plan | null {
  const at = commandIndex(argv);
  const first = argv[at];
  let command: CommandName = 'create';
  let explicit = false;
  if (first !== undefined && TABLES.has(first as CommandName)) {
    command = first as CommandName;
    explicit = true;
  }
  if (command === 'help') return null;
  const table = TABLES.get(command)!;
  const opts: Record<string, string | boolean> = {};
  const operands: string[] = [];
  const set = (o: OptSpec, v: string | boolean): boolean => {
    // A second value is commander's "given more than once" error; a flag may repeat.
    if (o.arg !== undefined && o.key in opts) return false;
    opts[o.key] = v;
    return true;
  };
  for (let i = 0; i < argv.length; i++) {
    if (explicit && i === at) continue;
    const a = argv[i];
    if (a.length > 1 && a[0] === '-') {
      let o: OptSpec | undefined;
      let value: string | undefined;
      if (a[1] === '-') {
        const eq = a.indexOf('=');
        o = table.get(eq < 0 ? a : a.slice(0, eq));
        if (o === undefined) return null;
        if (eq >= 0) {
          if (o.arg === undefined) return null;
          value = a.slice(eq + 1);
        }
      } else {
        o = table.get(a.slice(0, 2));
        if (o === undefined) return null;
        if (a.length > 2) {
          if (o.arg === undefined) return null;
          value = a.slice(2);
        }
      }
      if (o.arg === undefined) {
        set(o, true);
        continue;
      }
      if (value === undefined) {
        value = argv[++i];
        if (value === undefined) return null;
      }
      // commander's program-level pass may read such a word as a global option: let it decide.
      if (value.startsWith('-')) return null;
      if (!set(o, value)) return null;
      continue;
    }
    if (a === '-' || a === '--') return null;
    operands.push(a);
  }
  return planFor(command as Plan['command'], operands, opts as ParsedOpts, env, explicit);
}
