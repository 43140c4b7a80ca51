/** The daemon's configuration file (src/daemon/config.ts). */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CONFIG, loadConfig, validateConfig } from '../src/daemon/config.js';
import type { ConfigError } from '../src/core/errors.js';

test('config: absent default file = defaults; explicit absent file, bad JSON, bad values, unknown keys are refused', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tcpresetd-cfg-'));
  t.deepEqual(loadConfig(join(dir, 'none.json')).config, DEFAULT_CONFIG);
  t.is(loadConfig(join(dir, 'none.json')).source, null);
  t.is(t.throws(() => loadConfig(join(dir, 'none.json'), true))?.message.includes('cannot read'), true);
  const write = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  t.regex(t.throws(() => loadConfig(write('a.json', '{"maxJobs": 5,}')))!.message, /a\.json: not valid JSON/);
  t.regex(t.throws(() => loadConfig(write('b.json', '{"maxJobs": 0}')))!.message, /maxJobs.*1\.\.131072/);
  t.regex(t.throws(() => loadConfig(write('c.json', '{"protect": ["10.0.0.0/8"]}')))!.message, /unknown key/);
  // Keys every object inherits are unknown keys too, not silently accepted.
  for (const k of ['__proto__', 'toString', 'constructor', 'hasOwnProperty']) {
    t.regex(t.throws(() => loadConfig(write(`p-${k}.json`, `{"${k}": {"maxJobs": 1}}`)))!.message, new RegExp(`${k}.*unknown key`));
  }
  t.regex(t.throws(() => loadConfig(write('d.json', '{"protected": ["10.0.0.1/8"]}')))!.message, /protected\[0\].*host bits/);
  t.regex(t.throws(() => loadConfig(write('e.json', '{"protected": "10.0.0.0/8"}')))!.message, /array/);
  t.regex(t.throws(() => loadConfig(write('f.json', '{"defaultMode": "l4"}')))!.message, /defaultMode/);
  t.regex(t.throws(() => loadConfig(write('g.json', '[]')))!.message, /JSON object/);
  t.regex(t.throws(() => loadConfig(write('i.json', '{"flowMemory": 8}')))!.message, /flowMemory.*0 \(off\) or a power of two from 16 to 16777216/);
  t.regex(t.throws(() => loadConfig(write('m.json', '{"flowMemory": 33554432}')))!.message, /flowMemory.*0\.\.16777216/);
  t.is(loadConfig(write('n.json', '{"flowMemory": 0}')).config.flowMemory, 0);
  t.regex(t.throws(() => loadConfig(write('j.json', '{"flowMemory": 1.5}')))!.message, /flowMemory/);
  t.regex(t.throws(() => loadConfig(write('l.json', '{"flowMemory": 1000}')))!.message, /flowMemory.*1000.*power of two/);
  t.is(loadConfig(write('k.json', '{"flowMemory": 64}')).config.flowMemory, 64);
  const ok = loadConfig(write('h.json', '{"// note": "x", "maxJobs": 7, "protected": ["::ffff:10.0.0.0/104"], "logLevel": "debug"}'));
  t.is(ok.config.maxJobs, 7);
  t.is(ok.config.logLevel, 'debug');
  t.is(ok.protectedEntries[0].cidr.canonical, '10.0.0.0/8');
  t.is(ok.source, join(dir, 'h.json'));
});

test('config: the shipped example is valid', (t) => {
  const example = new URL('../../systemd/config.example.json', import.meta.url).pathname;
  const c = loadConfig(example, true);
  t.true(c.protectedEntries.length > 0);
  t.deepEqual(validateConfig({}).config, DEFAULT_CONFIG);
});

test('config: a key written twice is refused naming the key path and both lines and columns (JSON.parse kept the last silently); comments may repeat', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tcpresetd-cfg-dup-'));
  const write = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  const twice = write('twice.json', '{\n  "protected": ["10.0.0.0/8"],\n  "maxJobs": 5,\n    "protected": ["192.0.2.0/24"]\n}\n');
  const err = t.throws(() => loadConfig(twice)) as ConfigError;
  t.is(err.code, 'E_CONFIG');
  t.is(err.message, `config ${twice}: duplicate key protected at line 4 column 5 (first at line 2 column 3): JSON would keep only the last value; write the key once`);
  t.deepEqual(err.details, { file: twice, key: 'protected' });
  t.is(err.exitCode, 78);
  const threads = write('threads.json', '{"eventThreads": 4, "eventThreads": 1}');
  t.is(t.throws(() => loadConfig(threads))!.message, `config ${threads}: duplicate key eventThreads at line 1 column 21 (first at line 1 column 2): JSON would keep only the last value; write the key once`);
  const nested = write('nested.json', '{"tunnelPorts": {\n"vxlan": [8472],\n"vxlan": []}}');
  t.is(t.throws(() => loadConfig(nested))!.message, `config ${nested}: duplicate key tunnelPorts.vxlan at line 3 column 1 (first at line 2 column 1): JSON would keep only the last value; write the key once`);
  // Positive controls: the same documents with the key once are accepted.
  t.deepEqual(loadConfig(write('once.json', '{\n  "protected": ["10.0.0.0/8"],\n  "maxJobs": 5\n}\n')).config.protected, ['10.0.0.0/8']);
  t.is(loadConfig(write('threads1.json', '{"eventThreads": 4}')).config.eventThreads, 4);
  t.deepEqual(loadConfig(write('nested1.json', '{"tunnelPorts": {\n"vxlan": [8472]}}')).config.tunnelPorts, { vxlan: [8472], geneve: [] });
  // "//" keys are comments: a second one loses nothing.
  t.is(loadConfig(write('comments.json', '{"//": "first", "//": "second", "maxJobs": 2}')).config.maxJobs, 2);
});
