/**
 * The lint (eslint.config.mjs, also run by `make lint`): it runs here so that
 * `make test`, and so CI, count it in the one summary line. First a probe
 * proves each bug-finding rule fires (a config that silently lost its type
 * information, or a rule, would pass an empty tree as well); then the tree
 * must have no problems.
 */
import test from 'ava';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
/** What `make lint` lints. */
const DIRS = ['src', 'test', 'testkit', 'bench'];

test('each bug-finding rule reports its bug in a probe file (positive control)', async (t) => {
  t.timeout(300_000);
  const { ESLint } = await import('eslint');
  // The probe is not in tsconfig.json's program: give it a default one.
  const eslint = new ESLint({
    cwd: root,
    overrideConfig: { languageOptions: { parserOptions: { project: null, projectService: { allowDefaultProject: ['lint-probe.ts'] } } } },
  });
  const code = [
    "import { writeFile } from 'node:fs/promises';",
    'class Counter { n = 0; bump(): number { return ++this.n; } }',
    "export function probe(kind: 'a' | 'b', c: Counter): number {",
    "  writeFile('/nonexistent/x', 'y');", // 4: a rejection nobody handles
    '  [1, 2].forEach(async (n) => { await writeFile(`/nonexistent/${n}`, ""); });', // 5: async callback where void is expected
    '  const bump = c.bump;', // 6: `this` lost
    '  const unused = bump();', // 7
    '  // eslint-disable-next-line no-debugger', // 8: disables nothing
    '  switch (kind) {', // 9: no case for 'b'
    "    case 'a': return 1;",
    '  }',
    '  return 0;',
    '}',
    '',
  ].join('\n');
  const [r] = await eslint.lintText(code, { filePath: `${root}lint-probe.ts` });
  const got = r.messages.map((m) => `${m.line}:${m.ruleId ?? 'directive'}`).sort();
  t.deepEqual(got, [
    '4:@typescript-eslint/no-floating-promises',
    '5:@typescript-eslint/no-misused-promises',
    '6:@typescript-eslint/unbound-method',
    '7:@typescript-eslint/no-unused-vars',
    '8:directive',
    '9:@typescript-eslint/switch-exhaustiveness-check',
  ], r.messages.map((m) => `${m.line}:${m.ruleId}: ${m.message}`).join('\n'));
});

test('the tree has no lint problems (make lint)', async (t) => {
  t.timeout(600_000);
  const { ESLint } = await import('eslint');
  const eslint = new ESLint({ cwd: root });
  const results = await eslint.lintFiles(DIRS);
  const problems = results.flatMap((r) => r.messages.map((m) => `${r.filePath.slice(root.length)}:${m.line}:${m.column} ${m.ruleId ?? ''} ${m.message}`));
  t.deepEqual(problems, []);
  // Every TypeScript file of the checkout was linted (an ignore pattern gone wide would pass too).
  const sources = DIRS.flatMap((d) => readdirSync(`${root}${d}`, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts')).map((f) => `${d}/${f}`));
  const linted = new Set(results.map((r) => r.filePath.slice(root.length)));
  t.true(sources.length > 100, `${sources.length} .ts files`);
  t.deepEqual(sources.filter((f) => !linted.has(f)), []);
});
