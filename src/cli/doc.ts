/**
 * The help text of `tcpreset`, rendered from spec.ts. The man page
 * tcpreset(8) is rendered from the same data by docgen.ts, so the two say
 * the same thing. Only the commander path loads this.
 */
import { COMMANDS, DESCRIPTION, GLOBAL_OPTS, INFO_OPTS, SECTIONS, USAGE_LINES, commandSpec, type Block, type CommandName, type OptSpec } from './spec.js';

export const HELP_WIDTH = 80;

/** Words of `text` in lines of at most `width` characters (a longer word stands alone). */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const w of text.split(/\s+/).filter(Boolean)) {
    if (line !== '' && line.length + 1 + w.length > width) {
      lines.push(line);
      line = w;
    } else {
      line = line === '' ? w : `${line} ${w}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

/** "-i, --sniff SNIFF_IF" */
export function optTerm(o: OptSpec): string {
  return `${o.short ? `${o.short}, ` : ''}${o.long}${o.arg ? ` ${o.arg}` : ''}`;
}

function paragraph(text: string, indent = 2): string {
  return wrap(text, HELP_WIDTH - indent)
    .map((l) => ' '.repeat(indent) + l)
    .join('\n');
}

/** Two columns; a term too wide for the first column puts its text on the next line. */
function rows(items: Array<[string, string]>, indent = 2): string {
  const col = Math.min(Math.max(...items.map(([t]) => t.length)), 24) + 2;
  const out: string[] = [];
  for (const [term, text] of items) {
    const body = wrap(text, HELP_WIDTH - indent - col);
    if (term.length > col - 2) {
      out.push(' '.repeat(indent) + term);
      for (const l of body) out.push(' '.repeat(indent + col) + l);
    } else {
      body.forEach((l, i) => out.push(' '.repeat(indent) + (i === 0 ? term.padEnd(col) : ' '.repeat(col)) + l));
    }
  }
  return out.join('\n');
}

function block(b: Block): string {
  return typeof b === 'string' ? paragraph(b) : rows(b.rows);
}

const optRows = (opts: OptSpec[]): Array<[string, string]> => opts.map((o) => [optTerm(o), o.desc]);

/** Usage line of one subcommand, after "tcpreset ". */
export function commandUsage(name: CommandName): string {
  const c = commandSpec(name);
  if (name === 'create') return `[create] ${c.usage} [-s PATH] [--timeout SECONDS] [--json]`;
  if (name === 'help') return `help ${c.usage}`;
  return `${name}${c.usage ? ` ${c.usage}` : ''} [-s PATH] [--timeout SECONDS] [--json]`;
}

/** `tcpreset --help` (no name) or `tcpreset help NAME`. */
export function renderHelp(name?: CommandName): string {
  const parts: string[] = [];
  if (name === undefined) {
    parts.push(USAGE_LINES.map((u, i) => `${i === 0 ? 'Usage: ' : '       '}tcpreset ${u}`).join('\n'));
    parts.push(wrap(DESCRIPTION, HELP_WIDTH).join('\n'));
    parts.push(`Subcommands:\n${rows(COMMANDS.map((c) => [`${c.name}${c.operand ? ` ${c.operand}` : ''}`, c.summary]))}`);
    parts.push(`Create options (tcpreset [create] ENGID ...):\n${rows(optRows(commandSpec('create').opts))}`);
    parts.push(`Options of every subcommand, before or after it:\n${rows(optRows([...GLOBAL_OPTS, ...INFO_OPTS]))}`);
    for (const s of SECTIONS) parts.push(`${s.title}:\n${s.blocks.map(block).join('\n\n')}`);
    parts.push('"tcpreset help SUBCOMMAND" shows one subcommand; "man tcpreset" has it all.');
  } else {
    const c = commandSpec(name);
    parts.push(`Usage: tcpreset ${commandUsage(name)}`);
    parts.push([c.summary, ...(c.details ?? [])].map((p) => wrap(p, HELP_WIDTH).join('\n')).join('\n\n'));
    if (c.opts.length > 0) parts.push(`Options:\n${rows(optRows(c.opts))}`);
    if (name !== 'help') parts.push(`Options of every subcommand:\n${rows(optRows([...GLOBAL_OPTS, INFO_OPTS.find((o) => o.key === 'help')!]))}`);
  }
  return `${parts.join('\n\n')}\n`;
}
