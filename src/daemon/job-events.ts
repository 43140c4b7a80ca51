/**
 * Job creations and ends counted from the job manager's change stream, for
 * the metrics (kept apart from metrics.ts so the daemon loads prom-client
 * only when metrics are configured).
 */
import type { JobChange } from './jobs.js';

/** Counts job creations and ends from the job manager's change stream (onChange). */
export class JobEventCounts {
  created = 0;
  expired = 0;
  cancelled = 0;
  /** Ended by a configuration reload that protects their host. */
  protected = 0;
  /** Saved jobs a restarted daemon dropped (their host is protected now, or the record is invalid): history's "restart". */
  restart = 0;
  private readonly live = new Set<string>();

  /** Feed every JobChange; `current` is called on a whole-table change (restore). */
  onChange(change: JobChange, current: () => string[]): void {
    if (change.op === 'put') {
      if (!this.live.has(change.rec.id)) {
        this.live.add(change.rec.id);
        this.created++;
      }
    } else if (change.op === 'del') {
      this.live.delete(change.id);
      this[change.why]++;
    } else {
      // Restored jobs are not new orders: they only join the live set.
      this.live.clear();
      for (const id of current()) this.live.add(id);
    }
  }

  /**
   * A saved job a restarted daemon did not restore, counted under the word
   * the history records for it (history.ts notRestored): "expired" (its end
   * passed while the daemon was stopped) or "restart" (dropped).
   */
  notRestored(how: 'expired' | 'restart'): void {
    this[how]++;
  }
}
