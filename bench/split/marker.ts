/**
 * Preloaded into tcpresetd by bench/split.ts (NODE_OPTIONS=--import ...,
 * which Node also applies to worker threads), never by the product: marks
 * two points of the daemon's event path with system calls that cost
 * ~0.3 µs and that the split's bpftrace script stamps with the kernel's
 * clock (the same clock as its other probes):
 *   getegid(2): the JS record handler is entered (first record of a drain);
 *   getgid(2):  the first RST since the last flush is queued (forged).
 * It wraps RingReader.prototype.drain and Sender.prototype.enqueue/flush of
 * the very modules the daemon loads (same files, so the same classes, in
 * whichever thread runs the event path). When the event path stops going
 * through them the marks are simply absent and the split shows those two
 * stages as n/a.
 */
import { RingReader } from '../../src/bpf/ringbuf.js';
import { Sender } from '../../src/net/sender.js';

type Drain = RingReader['drain'];
// eslint-disable-next-line @typescript-eslint/unbound-method -- wrapped, and called with .call(this)
const drain: Drain = RingReader.prototype.drain;
RingReader.prototype.drain = function (this: RingReader, onRecord, ...rest) {
  let first = true;
  return drain.call(
    this,
    (dv, off, len) => {
      if (first) {
        first = false;
        process.getegid?.();
      }
      onRecord(dv, off, len);
    },
    ...rest,
  );
} as Drain;

let forged = false;
// eslint-disable-next-line @typescript-eslint/unbound-method -- wrapped, and called with .call(this)
const enqueue = Sender.prototype.enqueue;
Sender.prototype.enqueue = function (this: Sender, pkt) {
  if (!forged) {
    forged = true;
    process.getgid?.();
  }
  enqueue.call(this, pkt);
};
// eslint-disable-next-line @typescript-eslint/unbound-method -- wrapped, and called with .call(this)
const flush = Sender.prototype.flush;
Sender.prototype.flush = function (this: Sender) {
  forged = false;
  return flush.call(this);
};
