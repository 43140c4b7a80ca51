/** The sd_notify client (src/daemon/sd-notify.ts): the watchdog period. */
import test from 'ava';
import { watchdogIntervalMs, Notifier } from '../src/daemon/sd-notify.js';
import { memLog } from './helpers/job-fixtures.js';

test('watchdog period: half of WATCHDOG_USEC is used by the notifier; WATCHDOG_PID of another process disables it', async (t) => {
  t.is(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }), 30_000);
  t.is(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '1' }, 2), null);
  t.is(watchdogIntervalMs({}), null);
  const sent: string[] = [];
  const n = await Notifier.create({ env: { NOTIFY_SOCKET: '/x', WATCHDOG_USEC: '40000' }, log: memLog(), send: (_p, d) => void sent.push(d.toString()) });
  n.ready('0 jobs active');
  await new Promise((r) => setTimeout(r, 75));
  n.status('0 jobs active'); // unchanged: not sent
  n.status('1 job active');
  n.stopping();
  t.is(sent[0], 'WATCHDOG=1');
  t.true(sent.filter((s) => s === 'WATCHDOG=1').length >= 3, `pings every 20 ms: ${sent.join('|')}`);
  t.true(sent.some((s) => s.startsWith('READY=1\nSTATUS=0 jobs active')));
  t.is(sent.filter((s) => s.startsWith('STATUS=')).length, 1);
  t.is(sent.at(-1), 'STOPPING=1\nSTATUS=stopping');
  const none = await Notifier.create({ env: {}, log: memLog() });
  t.false(none.notify('READY=1'));
});
