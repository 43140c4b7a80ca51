/** The configuration keys of tunnelled mirrors: accepted shapes, and refusals that name the key and the value. */
import test from 'ava';
import { validateConfig } from '../src/daemon/config.js';

test('tunnelPorts and parseCheckSec: defaults, accepted values, duplicates folded', (t) => {
  const d = validateConfig({}).config;
  t.deepEqual(d.tunnelPorts, { vxlan: [], geneve: [] });
  t.is(d.parseCheckSec, 10);
  const c = validateConfig({ tunnelPorts: { vxlan: [8472, 8472, 4790] }, parseCheckSec: 60 }).config;
  t.deepEqual(c.tunnelPorts, { vxlan: [8472, 4790], geneve: [] });
  t.is(c.parseCheckSec, 60);
  t.deepEqual(validateConfig({ tunnelPorts: { geneve: [6082] } }).config.tunnelPorts, { vxlan: [], geneve: [6082] });
});

test('tunnelPorts and parseCheckSec: bad values are refused naming the key and the value', (t) => {
  const bad: [unknown, RegExp][] = [
    [{ tunnelPorts: [4789] }, /tunnelPorts.*must be an object/],
    [{ tunnelPorts: { vxlan: 8472 } }, /tunnelPorts\.vxlan.*8472.*array/],
    [{ tunnelPorts: { vxlan: [0] } }, /tunnelPorts\.vxlan.*0.*1\.\.65535/],
    [{ tunnelPorts: { vxlan: [65536] } }, /tunnelPorts\.vxlan.*65536/],
    [{ tunnelPorts: { vxlan: ['8472'] } }, /tunnelPorts\.vxlan.*8472/],
    [{ tunnelPorts: { gre: [1] } }, /tunnelPorts\.gre.*unknown tunnel/],
    [{ tunnelPorts: { vxlan: [9000], geneve: [9000] } }, /tunnelPorts.*9000.*both/],
    [{ parseCheckSec: 0 }, /parseCheckSec.*1\.\.3600/],
    [{ parseCheckSec: 1.5 }, /parseCheckSec/],
  ];
  for (const [cfg, re] of bad) t.throws(() => validateConfig(cfg), { message: re }, JSON.stringify(cfg));
});
