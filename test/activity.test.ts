/** The activity log (src/daemon/activity.ts): flow lines and summaries. */
import test from 'ava';
import { ActivityLog } from '../src/daemon/activity.js';
import { memLog, setup, base } from './helpers/job-fixtures.js';

test('activity: each flow logged once up to the per-period limit; summaries only when counters moved', (t) => {
  const { clock, table, jobs } = setup();
  const log = memLog();
  const act = new ActivityLog({ log, clock, jobs, intervalMs: 10_000, flowLogLimit: 3 });
  act.start();
  const a = jobs.create(base);
  const tid = [...table.targets.keys()][0];
  for (let i = 0; i < 10; i++) {
    table.hit(tid, clock.now());
    act.onFlowReset({ targetId: tid, label: `ENG1/${a.job.id}`, family: 4, src: '198.51.100.7', sport: 40000 + i, dst: '192.0.2.80', dport: 22, firstLatencyUs: 50 });
  }
  const flows = log.lines.filter((l) => l.msg === 'flow reset');
  t.is(flows.length, 3, 'capped');
  t.is(flows[0].obj.engid, 'ENG1');
  t.is(flows[0].obj.jobId, a.job.id);
  t.deepEqual(flows[0].obj.flow, { src: '198.51.100.7', sport: 40000, dst: '192.0.2.80', dport: 22, family: 4 });
  clock.advance(10_000);
  const sums = log.lines.filter((l) => l.msg === 'job activity');
  t.is(sums.length, 1);
  t.is(sums[0].obj.flowsNotLogged, 7);
  t.deepEqual(sums[0].obj.counters, { matched: 10, rstsSent: 20, flows: 10 });
  clock.advance(10_000);
  t.is(log.lines.filter((l) => l.msg === 'job activity').length, 1, 'nothing moved: no line');
  act.onFlowReset({ targetId: tid, label: '', family: 4, src: '198.51.100.7', sport: 1, dst: '192.0.2.80', dport: 22, firstLatencyUs: 1 });
  t.is(log.lines.filter((l) => l.msg === 'flow reset').length, 4, 'budget renewed each period');
  act.stop();
});
