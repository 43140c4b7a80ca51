/**
 * The full parser, with commander: help, -V, and every line the fast
 * parser (fast.ts) passes on, including all usage errors. Built from the
 * same option tables (spec.ts), ends in the same planFor(), and prints the
 * same help text the man page is made from (doc.ts).
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { UsageError } from '../core/errors.js';
import { renderHelp } from './doc.js';
import {
  COMMANDS,
  GLOBAL_OPTS,
  INFO_OPTS,
  SUBCOMMANDS,
  clientVersion,
  commandIndex,
  planFor,
  type CommandName,
  type OptSpec,
  type ParsedOpts,
  type Plan,
} from './spec.js';
import type { Writable } from './main.js';

/** What a command line asks for: a request, or something already printed (help, version). */
export type Parsed = Plan | { printed: 'help' | 'version' };

/** An argParser that refuses a second occurrence of the option. */
function once(value: string, previous: unknown): string {
  if (previous !== undefined) throw new InvalidArgumentError('the option is given more than once');
  return value;
}

function flags(o: OptSpec): string {
  return `${o.short ? `${o.short}, ` : ''}${o.long}${o.arg ? ` <${o.arg}>` : ''}`;
}

function addOpts(cmd: Command, opts: OptSpec[]): Command {
  for (const o of opts) {
    if (o.arg) cmd.option(flags(o), o.desc, once);
    else cmd.option(flags(o), o.desc);
  }
  return cmd;
}

/**
 * The help subcommand: `tcpreset help` (everything) or `tcpreset help SUBCOMMAND`, on `stdout`.
 * Anything else is a UsageError: an unknown subcommand is named; an option or a second word means
 * "help" was probably meant as an ENGID, and the error says how to write that.
 */
function help(words: readonly string[], stdout: Writable): void {
  if (words.length === 0) {
    stdout.write(renderHelp());
  } else if (words.length === 1 && (SUBCOMMANDS as readonly string[]).includes(words[0])) {
    stdout.write(renderHelp(words[0] as CommandName));
  } else if (words.length === 1 && !words[0].startsWith('-')) {
    throw new UsageError(`no subcommand "${words[0]}" (subcommands: ${SUBCOMMANDS.join(', ')})`);
  } else {
    throw new UsageError(
      '"help" is a subcommand name: "tcpreset help [SUBCOMMAND]" shows help, ' +
        'or create a job for ENGID "help" with "tcpreset create help -i ..."',
    );
  }
}

/**
 * Parse `argv` (without node and script) with commander. Help and -V are
 * written to `stdout` here; errors are thrown (CommanderError for the
 * words, TcpresetError for the values), never printed.
 */
export async function commanderParse(argv: readonly string[], env: Record<string, string | undefined>, stdout: Writable): Promise<Parsed> {
  let result: Parsed | undefined;
  const program = new Command('tcpreset');
  program
    .helpOption('--help', INFO_OPTS.find((o) => o.key === 'help')!.desc) // -h is HOST
    .helpCommand(false) // our own "help" subcommand, which refuses what it does not know
    .version(`tcpreset ${clientVersion((u) => readFileSync(u, 'utf8'))}`, '-V, --version', INFO_OPTS.find((o) => o.key === 'version')!.desc)
    // Global options before the subcommand are the program's; after it, the subcommand's own
    // (each subcommand has them too), read in one pass with its options, so that "-i --json"
    // gives -i the value "--json" as it always did, instead of the program taking --json.
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({
      writeOut: (s) => void stdout.write(s),
      writeErr: () => {}, // errors are thrown and reported once, as one line, by run()
      outputError: () => {},
    })
    .configureHelp({ formatHelp: (cmd) => renderHelp(cmd === program ? undefined : (cmd.name() as CommandName)) });
  addOpts(program, GLOBAL_OPTS);

  // The "create" word counts only where a subcommand stands (after any global options).
  const explicit = argv[commandIndex(argv)] === 'create';
  /** The subcommand's options and the global ones given before it; a value given at both places is given twice. */
  const opts = (cmd: Command): ParsedOpts => {
    const before = program.opts<Record<string, string | boolean | undefined>>();
    const after = cmd.opts<Record<string, string | boolean | undefined>>();
    for (const o of GLOBAL_OPTS) {
      if (o.arg && before[o.key] !== undefined && after[o.key] !== undefined) {
        throw new UsageError(`option '${flags(o)}' argument '${String(after[o.key])}' is invalid. the option is given more than once`);
      }
    }
    const merged: Record<string, string | boolean | undefined> = { ...after };
    for (const [k, v] of Object.entries(before)) if (v !== undefined) merged[k] = merged[k] === undefined ? v : merged[k];
    return merged as ParsedOpts;
  };

  for (const spec of COMMANDS) {
    const cmd = program.command(spec.name, { isDefault: spec.name === 'create' }).description(spec.summary);
    if (spec.operand) cmd.argument(spec.operand);
    addOpts(cmd, [...spec.opts, ...GLOBAL_OPTS]);
    if (spec.name === 'help') {
      cmd.allowUnknownOption().allowExcessArguments().action((_what: string | undefined, _o: unknown, self: Command) => {
        help(self.args, stdout);
        result = { printed: 'help' };
      });
      continue;
    }
    // Excess operands reach planFor, which names them (commander's own error does not).
    // The command is the action's last argument; self.args holds every operand.
    cmd.allowExcessArguments().action((...args: unknown[]) => {
      const self = args[args.length - 1] as Command;
      result = planFor(spec.name as Plan['command'], self.args, opts(self), env, explicit);
    });
  }

  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError && err.exitCode === 0) {
      if (err.code === 'commander.version') return { printed: 'version' };
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help') return { printed: 'help' };
    }
    throw err;
  }
  if (result === undefined) throw new Error('commander finished without a plan');
  return result;
}
