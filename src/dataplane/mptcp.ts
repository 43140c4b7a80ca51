/**
 * MPTCP as the data plane sees it (docs/design.md, "MPTCP"; RFC 8684).
 *
 * The XDP program remembers per subflow, in its flow memory entry, whether
 * it showed any MPTCP option, the 64-bit keys of both ends (MP_CAPABLE,
 * §3.1) and the token an MP_JOIN SYN named (§3.2). Events carry that state;
 * forgeResets() adds MP_FASTCLOSE (§3.5) with the receiver's key to each RST
 * where the key is known, which closes the whole MPTCP connection at that
 * end (Linux: net/mptcp/options.c mptcp_incoming_options sets
 * rcv_fastclose; protocol.c mptcp_check_fastclose resets every subflow and
 * gives the application ECONNRESET). Where no key was seen (the job came
 * after the handshake and nothing watched the interface), only the subflow
 * dies and the MPTCP sockets stay established: that is reported as a
 * warning, a per-job counter (mptcpNoKeys) and a fault.
 */
import { createHash } from 'node:crypto';
import { MP_KEY0, MP_KEY1, MP_SEEN } from '../contract.js';

/** What the `flow reset` line, the job's fault and status say when the keys were not seen. */
export const MPTCP_NO_KEYS = 'MPTCP: connection-level close not possible (keys not seen)';
/** What the `flow reset` line says when the RSTs carried MP_FASTCLOSE. */
export const MPTCP_FASTCLOSE_SENT = 'MP_FASTCLOSE sent';

/** HIT.mptcp codes (event-wire.ts): how an event's RSTs dealt with MPTCP. */
export const HIT_MP_NONE = 0;
/** Some RST carried MP_FASTCLOSE (a key of the receiver was known). */
export const HIT_MP_FASTCLOSE = 1;
/** An MPTCP subflow whose keys were not seen: plain RSTs only. */
export const HIT_MP_NO_KEYS = 2;

/** The HIT.mptcp code of an event's MP_* flags (tr_event.mp_flags). */
export function hitMptcp(mpFlags: number): number {
  if (!(mpFlags & MP_SEEN)) return HIT_MP_NONE;
  return mpFlags & (MP_KEY0 | MP_KEY1) ? HIT_MP_FASTCLOSE : HIT_MP_NO_KEYS;
}

/** The text of a HIT.mptcp code for logs (undefined: not MPTCP). */
export function mptcpNote(code: number): string | undefined {
  if (code === HIT_MP_FASTCLOSE) return MPTCP_FASTCLOSE_SENT;
  if (code === HIT_MP_NO_KEYS) return MPTCP_NO_KEYS;
  return undefined;
}

/**
 * The token of an MPTCP key (RFC 8684 §3.2: the most significant 32 bits of
 * SHA-256 over the key in network order), as an MP_JOIN SYN carries it.
 */
export function mptcpToken(key: bigint): number {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, key));
  return createHash('sha256').update(b).digest().readUInt32BE(0);
}
