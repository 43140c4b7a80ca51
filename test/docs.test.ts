/**
 * Every document the tree cites exists: a comment or a README line that
 * names `something.md` names a file of this repository. (The design notes
 * were once cited as DESIGN.md and COMMON.md, which were never here.)
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../testkit/daemon.js';

/** The `.md` names cited in `text` that exist neither from the repository root nor beside `file`. */
export function missingDocs(text: string, file: string, exists: (p: string) => boolean): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?<![\w/.-])((?:[\w-]+\/)*[\w.-]+\.md)\b/g)) {
    const name = m[1]!;
    // A glob in prose ("bench/results/idle-split-*.md") names a family, not one file.
    if (text[m.index! + name.length] === '*' || text[m.index! - 1] === '*') continue;
    // Nor does a placeholder ("idle-split-LABEL.md").
    if (/-[A-Z]{2,}\.md$/.test(name)) continue;
    const dir = file.includes('/') ? file.slice(0, file.lastIndexOf('/')) : '.';
    if (!exists(name) && !exists(join(dir, name))) out.push(name);
  }
  return out;
}

test('every cited .md file exists (source, tests, bench, test kit, BPF, docs and the README)', (t) => {
  const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', 'src', 'test', 'bench', 'testkit', 'bpf', 'docs', 'systemd', '*.md', 'Makefile'], { cwd: REPO_ROOT, encoding: 'utf8' })
    .split('\n')
    // This file cites missing names on purpose.
    .filter((f) => /\.(ts|mjs|c|h|md)$|^Makefile$/.test(f) && !f.startsWith('bench/results/') && f !== 'test/docs.test.ts');
  t.true(files.length > 50, `${files.length} files read`);
  const exists = (p: string): boolean => existsSync(join(REPO_ROOT, p));
  const missing = files.flatMap((f) => missingDocs(readFileSync(join(REPO_ROOT, f), 'utf8'), f, exists).map((m) => `${f}: ${m}`));
  t.deepEqual(missing, []);
  t.true(exists('docs/design.md'), 'the design notes are in the repository');
});

test('the check finds a cited file that is not there, and passes one that is', (t) => {
  const exists = (p: string): boolean => p === 'docs/design.md' || p === 'README.md';
  t.deepEqual(missingDocs('see DESIGN.md and docs/design.md, COMMON.md; README.md', 'src/x.ts', exists), ['DESIGN.md', 'COMMON.md']);
  t.deepEqual(missingDocs('bench/results/idle-split-*.md, bench/results/idle-split-LABEL.md', 'src/x.ts', exists), []);
});
