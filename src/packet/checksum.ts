/**
 * Internet checksum (RFC 1071) and the IPv4 / TCP checksums built on it.
 * Pure byte math: raw and packet sockets bypass checksum offload, so every
 * header we send is summed here.
 *
 * Sums are kept unfolded in a JS number (doubles hold integers to 2^53, so
 * even a 64 KiB range of 0xffff words cannot lose bits) and folded once.
 */

/** One's-complement partial sum of `len` bytes of `buf` from `off`, added to `acc`. Not folded. */
export function onesSum(buf: Uint8Array, off = 0, len = buf.length - off, acc = 0): number {
  const end = off + (len & ~1);
  let sum = acc;
  for (let i = off; i < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  // An odd trailing byte is the high half of a word padded with zero.
  if (len & 1) sum += buf[end] << 8;
  return sum;
}

/** Fold a partial sum to 16 bits (end-around carry). */
export function fold(sum: number): number {
  // Bit ops only hold 32 bits; sums above that (ranges over 128 KiB) take the slow path first.
  while (sum > 0xffffffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  sum = (sum & 0xffff) + (sum >>> 16);
  return (sum & 0xffff) + (sum >>> 16);
}

/** The internet checksum of a byte range: the one's complement of the folded sum. */
export function internetChecksum(buf: Uint8Array, off = 0, len = buf.length - off): number {
  return ~fold(onesSum(buf, off, len)) & 0xffff;
}

/**
 * IPv4 header checksum of the header at `off` (length from IHL). The
 * checksum field itself is skipped, so this both computes a new value and
 * recomputes one to compare with what a header carries.
 */
export function ipv4HeaderChecksum(pkt: Uint8Array, off = 0): number {
  const hlen = (pkt[off] & 0x0f) * 4;
  if (hlen < 20) throw new RangeError(`IPv4 header length ${hlen} is below 20`);
  const sum = onesSum(pkt, off, 10) + onesSum(pkt, off + 12, hlen - 12);
  return ~fold(sum) & 0xffff;
}

/**
 * TCP checksum over the IPv4 pseudo-header (src, dst, zero, protocol 6,
 * TCP length) and the segment at `segOff`, `segLen` bytes. The segment's
 * checksum field (bytes 16..17) is skipped, as for ipv4HeaderChecksum.
 */
export function tcpChecksumV4(src: Uint8Array, dst: Uint8Array, seg: Uint8Array, segOff = 0, segLen = seg.length - segOff): number {
  if (segLen < 20) throw new RangeError(`TCP segment of ${segLen} bytes is shorter than a header`);
  let sum = onesSum(src, 0, 4) + onesSum(dst, 0, 4) + 6 + segLen;
  sum += onesSum(seg, segOff, 16) + onesSum(seg, segOff + 18, segLen - 18);
  return ~fold(sum) & 0xffff;
}

/**
 * TCP checksum over the IPv6 pseudo-header (RFC 8200 8.1: src, dst,
 * 32-bit upper-layer length, three zero bytes, next header 6) and the segment.
 */
export function tcpChecksumV6(src: Uint8Array, dst: Uint8Array, seg: Uint8Array, segOff = 0, segLen = seg.length - segOff): number {
  if (segLen < 20) throw new RangeError(`TCP segment of ${segLen} bytes is shorter than a header`);
  let sum = onesSum(src, 0, 16) + onesSum(dst, 0, 16) + 6 + (segLen >>> 16) + (segLen & 0xffff);
  sum += onesSum(seg, segOff, 16) + onesSum(seg, segOff + 18, segLen - 18);
  return ~fold(sum) & 0xffff;
}
