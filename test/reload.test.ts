/**
 * src/daemon/reload.ts ReloadRecord: the reload counts and the refusal in
 * force, as status shows them (ConfigStatus). The daemon's own answer after
 * a real SIGHUP is test/ops.test.ts ("a refused reload is a config FAULT").
 */
import test from 'ava';
import { ReloadRecord } from '../src/daemon/reload.js';

const FILE = '/etc/tcpreset/config.json';

test('a refusal is a fault with its reason, file and time until a reload applies; the counts keep their value', (t) => {
  const r = new ReloadRecord(FILE);
  // Positive control: nothing refused yet, no fault.
  t.deepEqual(r.status(), { file: FILE, reloads: { applied: 0, refused: 0 } });
  r.refuse(`config ${FILE}: maxJobs 0: bad`, Date.UTC(2026, 11, 1, 12, 0, 0));
  t.deepEqual(r.status(), { file: FILE, reloads: { applied: 0, refused: 1 }, fault: { message: `config ${FILE}: maxJobs 0: bad`, file: FILE, at: '2026-12-01T12:00:00.000Z' } });
  // A second refusal: the latest reason and time (what the file on disk says now).
  r.refuse(`config ${FILE}: maxJobs -1: bad`, Date.UTC(2026, 11, 1, 12, 5, 0));
  t.deepEqual(r.status().fault, { message: `config ${FILE}: maxJobs -1: bad`, file: FILE, at: '2026-12-01T12:05:00.000Z' });
  t.deepEqual(r.status().reloads, { applied: 0, refused: 2 });
  r.apply();
  t.deepEqual(r.status(), { file: FILE, reloads: { applied: 1, refused: 2 } });
  t.false('fault' in r.status());
});

test('status() is a copy: changing it does not change the record', (t) => {
  const r = new ReloadRecord(FILE);
  r.refuse('x', 0);
  const s = r.status();
  s.fault!.message = 'changed';
  s.reloads.refused = 9;
  t.deepEqual(r.status(), { file: FILE, reloads: { applied: 0, refused: 1 }, fault: { message: 'x', file: FILE, at: '1970-01-01T00:00:00.000Z' } });
});
