/** The daemon's configuration file (src/daemon/config.ts). */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CONFIG, loadConfig, validateConfig } from '../src/daemon/config.js';

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
