/**
 * The Debian package as built by `make deb` (debian/, debhelper compat 13):
 * its fields, what it carries and what it leaves out, the order of its
 * maintainer scripts, and lintian. That it installs, runs and purges on a
 * booted Debian 12 is test/nspawn.test.ts.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../testkit/daemon.js';

const run = (cmd: string, args: string[], opts: { cwd?: string } = {}) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
};

const pkgVersion = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const arch = run('dpkg', ['--print-architecture']).stdout.trim();
const DEB = join(REPO_ROOT, `build/deb/tcpreset_${pkgVersion}_${arch}.deb`);

// make deb is a no-op when the package is newer than its inputs.
let built: ReturnType<typeof run> | undefined;
function buildDeb(): ReturnType<typeof run> {
  built ??= run('make', ['-s', '-C', REPO_ROOT, 'deb']);
  return built;
}

test.serial('make deb builds tcpreset_VERSION_ARCH.deb; the changelog version is package.json\'s', (t) => {
  t.timeout(10 * 60_000);
  const b = buildDeb();
  t.is(b.status, 0, b.stderr.slice(-4000));
  const changelog = run('dpkg-parsechangelog', ['-S', 'Version'], { cwd: REPO_ROOT }).stdout.trim();
  t.is(changelog, pkgVersion, 'debian/changelog and package.json name one version');
  const field = (f: string) => run('dpkg-deb', ['-f', DEB, f]).stdout.trim();
  t.is(field('Package'), 'tcpreset');
  t.is(field('Version'), pkgVersion);
  t.is(field('Architecture'), arch);
  const depends = field('Depends').split(/,\s*/);
  for (const d of ['nodejs (>= 20)', 'libbpf1', 'procps', 'systemd | systemd-standalone-sysusers | systemd-sysusers']) {
    t.true(depends.includes(d), `Depends has ${d}: ${depends.join(', ')}`);
  }
});

test.serial('the package carries the commands, the BPF object, production node_modules for this architecture only, the units, sysusers, the config example, the manuals and the completion', (t) => {
  t.is(buildDeb().status, 0);
  const listing = run('dpkg-deb', ['-c', DEB]).stdout.split('\n');
  const paths = new Map<string, string>();
  for (const line of listing) {
    const m = /^(\S+)\s+\S+\s+\d+\s+\S+\s+\S+\s+\.\/(.*?)(?: -> (.*))?$/.exec(line);
    if (m) paths.set(m[2].replace(/\/$/, ''), m[3] ?? m[1]);
  }
  t.is(paths.get('usr/bin/tcpreset'), '../lib/tcpreset/bin/tcpreset');
  t.is(paths.get('usr/bin/tcpresetd'), '../lib/tcpreset/bin/tcpresetd');
  for (const p of ['usr/lib/tcpreset/bin/tcpreset', 'usr/lib/tcpreset/bin/tcpresetd']) t.regex(paths.get(p) ?? '', /^-rwxr-xr-x/, p);
  for (const p of [
    'usr/lib/tcpreset/build/tcpreset.bpf.o',
    'usr/lib/tcpreset/dist/src/daemon/main.js',
    'usr/lib/tcpreset/dist/src/cli/main.js',
    'usr/lib/tcpreset/node_modules/pino/pino.js',
    'usr/lib/tcpreset/node_modules/commander/index.js',
    'lib/systemd/system/tcpreset.service',
    'lib/systemd/system/tcpreset.socket',
    'usr/lib/sysusers.d/tcpreset.conf',
    'etc/tcpreset/config.example.json',
    'usr/share/man/man8/tcpreset.8.gz',
    'usr/share/man/man8/tcpresetd.8.gz',
    'usr/share/man/man5/tcpreset.conf.5.gz',
    'usr/share/bash-completion/completions/tcpreset',
  ]) {
    t.true(paths.has(p), `${p} in the package`);
  }
  const koffiTriplet = arch === 'arm64' ? 'linux_arm64' : 'linux_x64';
  const koffi = [...paths.keys()].filter((p) => /node_modules\/koffi\/build\/koffi\/[^/]+$/.test(p)).map((p) => p.split('/').pop());
  t.deepEqual(koffi, [koffiTriplet], 'koffi for this architecture only');
  const modules = new Set([...paths.keys()].map((p) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(p)?.[1]).filter(Boolean));
  for (const dev of ['ava', 'typescript', '@types/node']) t.false(modules.has(dev), `devDependency ${dev} left out`);
  t.false([...paths.keys()].some((p) => /node_modules\/[^/]+\/(test|docs|\.github)$/.test(p)), 'no tests, docs or CI files from npm');
  // The unit names the installed command (PREFIX=/usr).
  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-deb-'));
  t.is(run('dpkg-deb', ['-x', DEB, dir]).status, 0);
  t.regex(readFileSync(join(dir, 'lib/systemd/system/tcpreset.service'), 'utf8'), /^ExecStart=\/usr\/bin\/tcpresetd$/m);
  t.is(run('dpkg-deb', ['-e', DEB, join(dir, 'DEBIAN')]).status, 0);
  t.is(readFileSync(join(dir, 'DEBIAN/conffiles'), 'utf8').trim(), '/etc/tcpreset/config.example.json');
});

test.serial('maintainer scripts: user and group before the units start; stop on remove; the state directory goes with purge', (t) => {
  t.is(buildDeb().status, 0);
  const dir = mkdtempSync(join(tmpdir(), 'tcpreset-deb-ctl-'));
  t.is(run('dpkg-deb', ['-e', DEB, dir]).status, 0);
  const postinst = readFileSync(join(dir, 'postinst'), 'utf8');
  const sysusers = postinst.indexOf('systemd-sysusers');
  const enable = postinst.indexOf("deb-systemd-helper enable 'tcpreset.socket'");
  const start = postinst.search(/deb-systemd-invoke \$_dh_action 'tcpreset.service' 'tcpreset.socket'/);
  t.true(sysusers >= 0 && enable > sysusers && start > enable, 'sysusers, then enable, then start');
  t.regex(postinst, /deb-systemd-helper enable 'tcpreset.service'/);
  t.regex(readFileSync(join(dir, 'prerm'), 'utf8'), /deb-systemd-invoke stop 'tcpreset.service' 'tcpreset.socket'/);
  const postrm = readFileSync(join(dir, 'postrm'), 'utf8');
  t.regex(postrm, /"\$1" = "purge"[\s\S]*rm -rf \/var\/lib\/tcpreset/);
  t.regex(postrm, /deb-systemd-helper purge 'tcpreset.service' 'tcpreset.socket'/);
});

test.serial('lintian: nothing but the justified overrides (debian/tcpreset.lintian-overrides), at every level down to pedantic', (t) => {
  t.timeout(5 * 60_000);
  t.is(buildDeb().status, 0);
  const r = run('lintian', ['--info', '--pedantic', '--show-overrides', '--tag-display-limit', '0', DEB]);
  t.is(r.error, undefined);
  const lines = r.stdout.split('\n').filter((l) => /^[A-MO-Z]: /.test(l)); // N: lines are notes
  const reported = lines.filter((l) => !l.startsWith('O: '));
  t.deepEqual(reported, [], r.stdout);
  // Positive control: lintian did inspect the package; these are what the overrides silence.
  t.true(lines.includes('O: tcpreset: binary-from-other-architecture [usr/lib/tcpreset/build/tcpreset.bpf.o]'), lines.join('\n'));
});
