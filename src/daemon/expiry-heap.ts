/**
 * The job table's end times and an indexed binary min-heap of its slots by
 * end time: with the one timer jobs.ts arms for top(), the one owner of
 * expiry in user space (the kernel's per-target deadline is the backstop).
 *
 * Slots are the job table's row numbers (0 .. capacity-1). A held slot is
 * in the heap once, at pos[slot], so a job's end can move (an extension) or
 * the job can leave (a cancel) in O(log n) without a search, and nothing is
 * allocated but when the table grows: at 100,000 jobs that is three typed
 * arrays (16 B per slot) instead of a timer or an object per job.
 */
const NONE = -1;

export class ExpiryHeap {
  /** End time of each slot, epoch ms (meaningful while the slot is held). */
  private at = new Float64Array(0);
  /** Where each slot sits in `heap`, or NONE. */
  private pos = new Int32Array(0);
  private heap = new Int32Array(0);
  private size = 0;

  /** Slots held. */
  get length(): number {
    return this.size;
  }

  /** Room for slots 0 .. cap-1 (cap at least the current capacity); what is held stays. */
  grow(cap: number): void {
    if (cap < this.at.length) throw new RangeError(`expiry heap: capacity ${cap} below ${this.at.length}`);
    const at = new Float64Array(cap);
    at.set(this.at);
    const pos = new Int32Array(cap).fill(NONE);
    pos.set(this.pos);
    const heap = new Int32Array(cap);
    heap.set(this.heap);
    this.at = at;
    this.pos = pos;
    this.heap = heap;
  }

  /** Hold nothing, and give the arrays back. */
  clear(): void {
    this.at = new Float64Array(0);
    this.pos = new Int32Array(0);
    this.heap = new Int32Array(0);
    this.size = 0;
  }

  /** The end time of held `slot`, epoch ms. */
  endOf(slot: number): number {
    return this.at[slot]!;
  }

  /** The slot that ends first (ties: any of them), or -1 when nothing is held. */
  top(): number {
    return this.size > 0 ? this.heap[0]! : NONE;
  }

  /** Hold `slot` (not held), ending at `at`. */
  push(slot: number, at: number): void {
    if (this.pos[slot] !== NONE) throw new RangeError(`expiry heap: slot ${slot} is held already`);
    this.at[slot] = at;
    const i = this.size++;
    this.heap[i] = slot;
    this.pos[slot] = i;
    this.siftUp(i);
  }

  /** Move held `slot`'s end to `at`. */
  update(slot: number, at: number): void {
    const old = this.at[slot]!;
    this.at[slot] = at;
    const i = this.pos[slot]!;
    if (at < old) this.siftUp(i);
    else this.siftDown(i);
  }

  /** Let go of held `slot`. */
  remove(slot: number): void {
    const i = this.pos[slot]!;
    const last = this.heap[--this.size]!;
    this.pos[slot] = NONE;
    if (i === this.size) return;
    this.heap[i] = last;
    this.pos[last] = i;
    this.siftUp(i);
    this.siftDown(this.pos[last]!);
  }

  private siftUp(i: number): void {
    const h = this.heap, at = this.at;
    const s = h[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (at[h[p]!]! <= at[s]!) break;
      h[i] = h[p]!;
      this.pos[h[i]!] = i;
      i = p;
    }
    h[i] = s;
    this.pos[s] = i;
  }

  private siftDown(i: number): void {
    const h = this.heap, at = this.at, n = this.size;
    const s = h[i]!;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && at[h[r]!]! < at[h[l]!]! ? r : l;
      if (at[h[c]!]! >= at[s]!) break;
      h[i] = h[c]!;
      this.pos[h[i]!] = i;
      i = c;
    }
    h[i] = s;
    this.pos[s] = i;
  }
}
