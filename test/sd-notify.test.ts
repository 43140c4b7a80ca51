/** The sd_notify client (src/daemon/sd-notify.ts): the watchdog period. */
import test from 'ava';
import { watchdogIntervalMs, Notifier } from '../src/daemon/sd-notify.js';
import { memLog } from './helpers/job-fixtures.js';
import { sleep, until } from '../testkit/time.js';

test('watchdog period: half of WATCHDOG_USEC is used by the notifier; WATCHDOG_PID of another process disables it', async (t) => {
  t.is(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }), 30_000);
  t.is(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '1' }, 2), null);
  t.is(watchdogIntervalMs({}), null);
  const sent: string[] = [];
  // The period the notifier schedules, read from the call itself: counting pings inside a sleep
  // measured the machine's load, not the period.
  const periods: number[] = [];
  const realSetInterval = globalThis.setInterval;
  globalThis.setInterval = ((fn: () => void, ms: number) => {
    periods.push(ms);
    return realSetInterval(fn, ms);
  }) as typeof setInterval;
  let n: Notifier;
  try {
    n = await Notifier.create({ env: { NOTIFY_SOCKET: '/x', WATCHDOG_USEC: '40000' }, log: memLog(), send: (_p, d) => void sent.push(d.toString()) });
  } finally {
    globalThis.setInterval = realSetInterval;
  }
  t.deepEqual(periods, [20], 'WATCHDOG=1 every 20 ms for WATCHDOG_USEC=40000');
  t.is(sent[0], 'WATCHDOG=1', 'the first ping at once');
  n.ready('0 jobs active');
  // The timer fires: two more pings, however long a loaded machine takes to run it.
  await until(() => sent.filter((s) => s === 'WATCHDOG=1').length >= 3, 10_000, 'two more watchdog pings');
  n.status('0 jobs active'); // unchanged: not sent
  n.status('1 job active');
  n.stopping();
  const pingsAtStop = sent.filter((s) => s === 'WATCHDOG=1').length;
  t.true(sent.some((s) => s.startsWith('READY=1\nSTATUS=0 jobs active')));
  t.deepEqual(sent.filter((s) => s.startsWith('STATUS=')), ['STATUS=1 job active']);
  t.is(sent.at(-1), 'STOPPING=1\nSTATUS=stopping');
  await sleep(60); // three periods: a watchdog left running would ping again
  t.is(sent.filter((s) => s === 'WATCHDOG=1').length, pingsAtStop, 'no ping after STOPPING=1');
  const none = await Notifier.create({ env: {}, log: memLog() });
  t.false(none.notify('READY=1'));
});
