/** Duplicate-key detection in JSON text (src/core/jsonkeys.ts). */
import test from 'ava';
import { findDuplicateKey, formatKeyPath, lineColumn } from '../src/core/jsonkeys.js';

test('a repeated key is found with its path and both offsets; the same text without it passes', (t) => {
  const text = '{"maxJobs": 3, "protected": ["10.0.0.0/8"], "protected": []}';
  t.deepEqual(findDuplicateKey(text), { key: 'protected', path: ['protected'], offset: text.lastIndexOf('"protected"'), firstOffset: text.indexOf('"protected"') });
  t.is(findDuplicateKey('{"maxJobs": 3, "protected": ["10.0.0.0/8"]}'), undefined, 'positive control');
});

test('nested objects and arrays of objects: the path names the containers; equal keys in sibling objects are not duplicates', (t) => {
  const nested = '{"tunnelPorts": {"vxlan": [8472], "geneve": [], "vxlan": [1]}}';
  t.deepEqual(findDuplicateKey(nested)?.path, ['tunnelPorts', 'vxlan']);
  const inArray = '{"sensors": [{"name": "a", "x": 1}, {"name": "b", "x": 1, "x": 2}]}';
  t.deepEqual(findDuplicateKey(inArray)?.path, ['sensors', 1, 'x']);
  t.is(formatKeyPath(findDuplicateKey(inArray)!.path), 'sensors[1].x');
  t.is(findDuplicateKey('{"sensors": [{"name": "a", "x": 1}, {"name": "b", "x": 1}], "x": {"x": {"x": 1}}}'), undefined, 'siblings and nesting are separate objects');
  // After a nested container closes, the outer object's keys are still compared.
  t.deepEqual(findDuplicateKey('{"a": {"b": [1, {"c": 2}]}, "d": 1, "a": 0}')?.path, ['a']);
  t.deepEqual(findDuplicateKey('[[{"a": 1}], [{"b": 1}, {"a": 1, "a": 2}]]')?.path, [1, 1, 'a']);
});

test('keys compare decoded (as JSON.parse does); strings holding braces, commas, quotes or key-like text are not keys', (t) => {
  t.is(findDuplicateKey('{"host": "a", "h\\u006fst": "b"}')?.key, 'host');
  t.is(findDuplicateKey('{"a\\"b": 1, "a\\"b": 2}')?.key, 'a"b');
  t.is(findDuplicateKey('{"a\\\\": 1, "b": "\\\\", "c": 1}'), undefined, 'an escaped backslash before the closing quote');
  t.is(findDuplicateKey('{"a\\\\\\"": 1, "b": "\\\\\\\\", "a\\\\\\"": 2}')?.key, 'a\\"', 'odd and even runs of backslashes before a quote');
  t.is(findDuplicateKey(`{"x": "${'a'.repeat(70000)}\\"}", "x": 1}`)?.offset, 70013, 'a long value is skipped, its escaped quote included');
  t.is(findDuplicateKey('{"a": "{\\"a\\": 1, \\"a\\": 2}", "b": "}, \\"a\\": ["}'), undefined);
  t.is(findDuplicateKey('{"a": "x", "b": "a"}'), undefined, 'a value equal to a key');
  t.is(findDuplicateKey('["a", "a", {"a": 1}]'), undefined, 'array elements are not keys');
  t.is(findDuplicateKey('"a"'), undefined);
  t.is(findDuplicateKey('{}'), undefined);
});

test('ignore: keys it accepts may repeat; others are still refused', (t) => {
  const text = '{"//": "one", "//": "two", "maxJobs": 1, "maxJobs": 2}';
  t.is(findDuplicateKey(text, (k) => k.startsWith('//'))?.key, 'maxJobs');
  t.is(findDuplicateKey('{"//": "one", "//": "two"}', (k) => k.startsWith('//')), undefined);
});

test('text that is not JSON ends the scan without throwing', (t) => {
  for (const bad of ['{"a', '{"a": 1}}]]', '}{', '{"\\u12": 1, "\\u12": 2}', ',,,']) {
    t.notThrows(() => findDuplicateKey(bad), bad);
  }
});

test('formatKeyPath and lineColumn', (t) => {
  t.is(formatKeyPath(['protected']), 'protected');
  t.is(formatKeyPath(['// note', 0, 'a b', '$x']), '["// note"][0]["a b"].$x');
  const text = '{\n  "a": 1,\n  "a": 2\n}';
  t.is(lineColumn(text, 0), 'line 1 column 1');
  t.is(lineColumn(text, text.lastIndexOf('"a"')), 'line 3 column 3');
  t.is(lineColumn(text, text.indexOf('\n')), 'line 1 column 2', 'the newline itself ends line 1');
});
