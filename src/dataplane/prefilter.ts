/**
 * User-space owner of the XDP program's address prefilter (bpf/tcpreset.h):
 * a bitmap with one bit per hash of (ifindex, family, address). A bit is set
 * while at least one target key hashes to it, so it is refcounted here; the
 * kernel only reads it. Set a key's bit before its target goes into the
 * targets map and clear it after the target left, and the program never
 * misses a live target.
 */
import { MAP_PREFILTER, PREFILTER_WORDS, prefilterBit, type TargetKey } from '../bpf/contract.js';
import type { BpfMap, BpfObject } from '../bpf/object.js';

export class Prefilter {
  private readonly map: BpfMap;
  private readonly refs = new Map<number, number>();
  private readonly words = new BigUint64Array(PREFILTER_WORDS);
  private readonly keyBuf = new Uint8Array(4);
  private readonly valueBuf = new Uint8Array(8);

  constructor(obj: BpfObject) {
    this.map = obj.map(MAP_PREFILTER);
  }

  /** Bits currently set (for status and tests). */
  get bitsSet(): number {
    return this.refs.size;
  }

  add(key: Pick<TargetKey, 'ifindex' | 'family' | 'addr'>): void {
    const { word, bit } = prefilterBit(key);
    const id = word * 64 + bit;
    const n = this.refs.get(id) ?? 0;
    this.refs.set(id, n + 1);
    if (n === 0) this.write(word, this.words[word] | (1n << BigInt(bit)));
  }

  remove(key: Pick<TargetKey, 'ifindex' | 'family' | 'addr'>): void {
    const { word, bit } = prefilterBit(key);
    const id = word * 64 + bit;
    const n = this.refs.get(id) ?? 0;
    if (n <= 0) return;
    if (n > 1) {
      this.refs.set(id, n - 1);
      return;
    }
    this.refs.delete(id);
    this.write(word, this.words[word] & ~(1n << BigInt(bit)));
  }

  private write(word: number, value: bigint): void {
    new DataView(this.keyBuf.buffer).setUint32(0, word, true);
    new DataView(this.valueBuf.buffer).setBigUint64(0, value, true);
    this.map.update(this.keyBuf, this.valueBuf);
    this.words[word] = value;
  }
}
