/**
 * The manual pages and the bash completion that `make` generates
 * (src/cli/docgen.ts into build/): they say what the help texts say, every
 * configuration key is documented with the range validateConfig() really
 * enforces, groff renders them without a warning, the completion completes,
 * and `make install` puts them where man and bash-completion look.
 */
import test from 'ava';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bashCompletion, confPage, tcpresetPage, tcpresetdPage } from '../src/cli/docgen.js';
import { renderHelp } from '../src/cli/doc.js';
import { COMMANDS, GLOBAL_OPTS, INFO_OPTS, SECTIONS } from '../src/cli/spec.js';
import { DEFAULT_CONFIG, validateConfig } from '../src/daemon/config.js';
import { CONFIG_DOC } from '../src/daemon/config-doc.js';
import { REPO_ROOT } from '../testkit/daemon.js';

const built = (p: string): string => readFileSync(join(REPO_ROOT, 'build', p), 'utf8');
const daemonHelp = (): string => {
  const env = { ...process.env };
  delete env.TCPRESET_SOCKET;
  return execFileSync(process.execPath, [join(REPO_ROOT, 'bin/tcpresetd'), '--help'], { encoding: 'utf8', env });
};
/** A man page as text, the way man shows it (no hyphenation, wide lines: one option per line). */
const render = (page: string): string =>
  execFileSync('groff', ['-man', '-Tutf8', '-rLL=200n', '-rHY=0', '-P', '-cbou'], { input: page, encoding: 'utf8' }).replace(/‐/g, '-');

test('the built pages and completion are what the current sources make (make regenerates them)', (t) => {
  t.is(built('man/tcpreset.8'), tcpresetPage());
  t.is(built('man/tcpresetd.8'), tcpresetdPage(daemonHelp()));
  t.is(built('man/tcpreset.conf.5'), confPage());
  t.is(built('completion/tcpreset'), bashCompletion());
});

test('tcpreset(8) and tcpreset --help name the same subcommands, options and sections', (t) => {
  const man = render(built('man/tcpreset.8'));
  const help = renderHelp();
  for (const c of COMMANDS) {
    t.regex(man, new RegExp(`\\btcpreset (\\[create\\] )?${c.name === 'create' ? '' : c.name}`), c.name);
    t.true(help.includes(`  ${c.name}`), `help lists ${c.name}`);
    const sub = renderHelp(c.name);
    for (const o of c.opts) {
      const term = `${o.short ? `${o.short}, ` : ''}${o.long}${o.arg ? ` ${o.arg}` : ''}`;
      t.true(man.includes(term), `man: ${c.name} ${term}`);
      t.true(sub.includes(term), `help ${c.name}: ${term}`);
      t.true(man.includes(o.desc.split(' ').slice(0, 4).join(' ')), `man: ${c.name} ${term} described`);
    }
  }
  for (const o of [...GLOBAL_OPTS, ...INFO_OPTS]) {
    const term = `${o.short ? `${o.short}, ` : ''}${o.long}${o.arg ? ` ${o.arg}` : ''}`;
    t.true(man.includes(term) && help.includes(term), term);
  }
  for (const s of SECTIONS) {
    t.true(man.includes(`\n${s.title.toUpperCase()}\n`), `man section ${s.title}`);
    t.true(help.includes(`\n${s.title}:\n`), `help section ${s.title}`);
  }
  // The exit statuses the CLI documents, in both.
  for (const code of ['64', '65', '69', '70', '75', '77']) t.regex(man, new RegExp(`\\n\\s+${code}\\s+\\S`), `exit ${code}`);
});

test('tcpresetd(8) carries every flag and section of tcpresetd --help', (t) => {
  const help = daemonHelp();
  const man = render(built('man/tcpresetd.8'));
  const flags = [...help.matchAll(/^ {2}((?:-\w, )?--[\w-]+)/gm)].map((m) => m[1]);
  t.true(flags.includes('--socket') && flags.includes('--state-dir') && flags.includes('--config'), flags.join(' '));
  for (const f of flags) t.true(man.includes(f), f);
  const sections = [...help.matchAll(/^(\w[^:\n]*?)(?: \(.*\))?:$/gm)].map((m) => m[1]);
  t.true(sections.length >= 5, sections.join(', '));
  for (const s of sections) t.true(man.includes(`\n${s.toUpperCase()}\n`), s);
});

test('every configuration key is documented, in tcpreset.conf(5) and tcpresetd --help, with the range validateConfig enforces', (t) => {
  const keys = Object.keys(DEFAULT_CONFIG).sort();
  t.deepEqual(Object.keys(CONFIG_DOC).sort(), keys);
  const conf = render(built('man/tcpreset.conf.5'));
  const help = daemonHelp();
  for (const k of keys as (keyof typeof CONFIG_DOC)[]) {
    const d = CONFIG_DOC[k];
    t.regex(conf, new RegExp(`\\n {7}${k} \\(`), `tcpreset.conf(5) documents ${k}`);
    t.true(conf.includes(`default ${JSON.stringify(DEFAULT_CONFIG[k])}`), `${k}'s default`);
    t.regex(help, new RegExp(`\\n {2}${k} \\(`), `--help lists ${k}`);
    if (d.range) {
      const [lo, hi] = d.range;
      t.notThrows(() => validateConfig({ [k]: lo }), `${k}=${lo}`);
      t.notThrows(() => validateConfig({ [k]: hi }), `${k}=${hi}`);
      t.throws(() => validateConfig({ [k]: lo - 1 }), undefined, `${k}=${lo - 1} refused`);
      t.throws(() => validateConfig({ [k]: hi + 1 }), undefined, `${k}=${hi + 1} refused`);
      t.true(conf.includes(`${lo} to ${hi}`), `${k}'s range in the page`);
    }
    if (d.choices) {
      for (const c of d.choices) t.notThrows(() => validateConfig({ [k]: c }), `${k}=${c}`);
      t.throws(() => validateConfig({ [k]: 'bogus' }), undefined, `${k}=bogus refused`);
    }
  }
  // A key the code does not know is refused: the page's list is the whole list.
  t.throws(() => validateConfig({ notAKey: 1 }));
});

test('groff renders the pages without a warning; man -l shows them (a broken page does warn: the check can fail)', (t) => {
  const lint = (page: string): string => spawnSync('groff', ['-ww', '-man', '-Tutf8', '-z'], { input: page, encoding: 'utf8' }).stderr;
  for (const p of ['man/tcpreset.8', 'man/tcpresetd.8', 'man/tcpreset.conf.5']) {
    t.is(lint(built(p)), '', p);
    const r = spawnSync('man', ['-l', join(REPO_ROOT, 'build', p)], { encoding: 'utf8', env: { ...process.env, MANPAGER: 'cat', MANWIDTH: '80' } });
    t.is(r.status, 0, r.stderr);
    t.regex(r.stdout, /\nNAME\n/, p);
  }
  t.regex(lint(`${built('man/tcpreset.8')}.XY undefined macro\n\\fQ\n`), /warning/);
});

/** The completion's answer for a command line (the last word is the one being completed). */
function complete(words: string[], env: Record<string, string> = {}): Promise<string[]> {
  const script = `source ${JSON.stringify(join(REPO_ROOT, 'build/completion/tcpreset'))}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}
_tcpreset; printf '%s\\n' "\${COMPREPLY[@]}"`;
  return new Promise((res, rej) => {
    execFile('bash', ['--norc', '-c', script], { env: { PATH: `${join(REPO_ROOT, 'bin')}:${process.env.PATH}`, ...env } }, (err, out) =>
      err ? rej(err) : res(out.split('\n').filter(Boolean).sort()),
    );
  });
}

test('bash completion: subcommands, options per subcommand, interface names, job ids from the daemon', async (t) => {
  t.is(spawnSync('bash', ['-n', join(REPO_ROOT, 'build/completion/tcpreset')]).status, 0);
  t.deepEqual(await complete(['tcpreset', 'li']), ['list']);
  t.deepEqual(await complete(['tcpreset', '-s', '/x', 'st']), ['status']);
  t.deepEqual(await complete(['tcpreset', 'help', 'c']), ['cancel', 'create']);
  const ifs = await complete(['tcpreset', 'ids-1', '-i', '']);
  t.true(ifs.includes('lo'), ifs.join(' '));
  t.deepEqual(await complete(['tcpreset', 'ids-1', '-i', 'eth1', '-o', 'l']), ifs.filter((i) => i.startsWith('l')));
  const createOpts = await complete(['tcpreset', 'ids-1', '--']);
  for (const o of ['--sniff', '--reset', '--host', '--port', '--duration', '--l2', '--socket', '--json', '--timeout']) t.true(createOpts.includes(o), o);
  t.deepEqual(await complete(['tcpreset', 'list', '--']), ['--help', '--json', '--socket', '--timeout']);
  t.deepEqual(await complete(['tcpreset', 'ids-1', '-h', '']), []); // a HOST is not guessed

  // Job ids: asked of the daemon named by -s.
  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-compl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 's.sock');
  const jobs = [{ id: 'aaaa1111' }, { id: 'abcd2222' }, { id: 'zz33' }].map((j) => ({ ...j, engid: 'e', sniffIf: 'x', resetIf: 'y', host: '10.0.0.1', port: null, mode: 'l3', createdAt: '', expiresAt: '', remainingMs: 1, counters: { matched: 0, rstsSent: 0, flows: 0, firstHitAt: null, lastHitAt: null } }));
  const server = net.createServer((s) => s.once('data', () => s.end(`${JSON.stringify({ v: 1, ok: true, result: { jobs } })}\n`)));
  await new Promise<void>((ok) => server.listen(sock, ok));
  t.teardown(() => server.close());
  t.deepEqual(await complete(['tcpreset', '-s', sock, 'cancel', 'a']), ['aaaa1111', 'abcd2222']);
  t.deepEqual(await complete(['tcpreset', 'cancel', ''], { TCPRESET_SOCKET: sock }), ['aaaa1111', 'abcd2222', 'zz33']);
  // No daemon: no words, no error on the terminal.
  t.deepEqual(await complete(['tcpreset', 'cancel', ''], { TCPRESET_SOCKET: join(dir, 'none.sock') }), []);
});

test('make install puts the pages and the completion where man and bash-completion look', (t) => {
  const dry = execFileSync('make', ['-s', '-n', '-C', REPO_ROOT, 'install', 'PREFIX=/usr', 'DESTDIR=/tmp/x'], { encoding: 'utf8' });
  t.regex(dry, /install -m 0644 build\/man\/tcpreset\.8 build\/man\/tcpresetd\.8 \/tmp\/x\/usr\/share\/man\/man8\//);
  t.regex(dry, /install -m 0644 build\/man\/tcpreset\.conf\.5 \/tmp\/x\/usr\/share\/man\/man5\//);
  t.regex(dry, /install -m 0644 build\/completion\/tcpreset \/tmp\/x\/usr\/share\/bash-completion\/completions\/tcpreset/);
  // What man finds for a page that is installed there: MANPATH is the installed share/man.
  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-man-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync('mkdir', ['-p', join(dir, 'man8'), join(dir, 'man5')]);
  writeFileSync(join(dir, 'man8/tcpreset.8'), built('man/tcpreset.8'));
  writeFileSync(join(dir, 'man5/tcpreset.conf.5'), built('man/tcpreset.conf.5'));
  const r = spawnSync('man', ['-M', dir, '5', 'tcpreset.conf'], { encoding: 'utf8', env: { ...process.env, MANPAGER: 'cat' } });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /maxJobs/);
});
