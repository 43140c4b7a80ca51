/**
 * Preloaded into tcpresetd by bench/split.ts (NODE_OPTIONS=--import ...),
 * never by the product: marks two points of the daemon's event path with
 * system calls that cost ~0.3 µs and that the split's bpftrace script
 * stamps with the kernel's clock (the same clock as its other probes):
 *   getegid(2): the JS record handler is entered (first record of a drain);
 *   getgid(2):  the first RST of a drain is queued for sending (forged).
 * It wraps RingReader.start and Sender.enqueue/flush from the very modules
 * the daemon loads (same files, so the same module instances). When the
 * event path no longer goes through them the marks are simply absent and
 * the split shows those two stages as n/a.
 */
import { RingReader } from '../../src/bpf/ringbuf.js';
import { Sender } from '../../src/net/sender.js';

type Start = RingReader['start'];
const start: Start = RingReader.prototype.start;
RingReader.prototype.start = function (this: RingReader, onRecord, opts = {}) {
  let first = true;
  return start.call(
    this,
    (dv, off, len) => {
      if (first) {
        first = false;
        process.getegid?.();
      }
      onRecord(dv, off, len);
    },
    {
      ...opts,
      onDrained: (n: number) => {
        first = true;
        opts.onDrained?.(n);
      },
    },
  );
} as Start;

let forged = false;
const enqueue = Sender.prototype.enqueue;
Sender.prototype.enqueue = function (this: Sender, pkt) {
  if (!forged) {
    forged = true;
    process.getgid?.();
  }
  enqueue.call(this, pkt);
};
const flush = Sender.prototype.flush;
Sender.prototype.flush = function (this: Sender) {
  forged = false;
  return flush.call(this);
};
