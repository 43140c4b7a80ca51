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
import { MP_CAPABLE, MP_JOIN, MP_KEY0, MP_KEY1, MP_SEEN, MP_TOKEN0, MP_TOKEN1, type FlowEntry } from '../bpf/contract.js';

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

/** One MPTCP connection as the flow memory knows it. */
export interface MptcpConnection {
  /** The connection's keys (one or both ends'), as seen in MP_CAPABLE. */
  keys: bigint[];
  /**
   * Its open subflows (the given one included while open), each with the
   * keys of its ends filled in (mp.flags MP_KEY0/MP_KEY1) so that
   * forgeResets adds MP_FASTCLOSE for either end whose key is known.
   */
  subflows: FlowEntry[];
}

/** Most key -> token results remembered (SHA-256 per key is ~2 µs; a table full of MPTCP connections is scanned again). */
const MAX_TOKENS = 65536;

/**
 * Ties subflows to their MPTCP connection (RFC 8684 §3.2): an MP_CAPABLE
 * subflow carries the keys; an MP_JOIN subflow only the token of the end
 * it joined, which is the upper 32 bits of SHA-256 of that end's key. The
 * XDP program cannot afford SHA-256, so the tokens are computed here, on
 * demand, from the keys the flow memory holds.
 */
export class MptcpDirectory {
  private readonly tokens = new Map<bigint, number>();

  token(key: bigint): number {
    let t = this.tokens.get(key);
    if (t === undefined) {
      if (this.tokens.size >= MAX_TOKENS) this.tokens.clear();
      t = mptcpToken(key);
      this.tokens.set(key, t);
    }
    return t;
  }

  /**
   * The connection subflow `sub` belongs to, among `all` (the flow memory's
   * MPTCP subflows, FlowMemoryView.mptcpSubflows), or null when its keys
   * were never seen: an MP_CAPABLE subflow without keys, or an MP_JOIN whose
   * token matches no remembered key.
   */
  connection(sub: FlowEntry, all: readonly FlowEntry[]): MptcpConnection | null {
    const m = sub.mp;
    if (!m) return null;
    let keys: bigint[] = capableKeys(sub);
    if (keys.length === 0 && m.flags & MP_JOIN && m.flags & (MP_TOKEN0 | MP_TOKEN1)) {
      const owner = all.find((e) => e.mp && e.mp.flags & MP_CAPABLE && capableKeys(e).some((k) => this.token(k) === m.token));
      if (owner) keys = capableKeys(owner);
    }
    if (keys.length === 0) return null;
    const tokens = new Map(keys.map((k) => [this.token(k), k]));
    const subflows: FlowEntry[] = [];
    for (const e of all) {
      const em = e.mp!;
      if (em.flags & MP_CAPABLE) {
        if (capableKeys(e).some((k) => keys.includes(k))) subflows.push(e);
        continue;
      }
      if (!(em.flags & MP_JOIN) || !(em.flags & (MP_TOKEN0 | MP_TOKEN1))) continue;
      const ownerKey = tokens.get(em.token);
      if (ownerKey === undefined) continue;
      // The end that received the MP_JOIN SYN owns the token; the other end has the connection's other key.
      const owner = em.flags & MP_TOKEN0 ? 0 : 1;
      const other = keys.find((k) => k !== ownerKey);
      const mk: [bigint, bigint] = [0n, 0n];
      let flags = em.flags & ~(MP_KEY0 | MP_KEY1);
      mk[owner] = ownerKey;
      flags |= owner === 0 ? MP_KEY0 : MP_KEY1;
      if (other !== undefined) {
        mk[1 - owner] = other;
        flags |= owner === 0 ? MP_KEY1 : MP_KEY0;
      }
      subflows.push({ ...e, mp: { flags, keys: mk, token: em.token } });
    }
    return { keys, subflows };
  }
}

/** The keys an MP_CAPABLE subflow's entry holds (0, 1 or 2). */
function capableKeys(e: FlowEntry): bigint[] {
  const m = e.mp;
  if (!m || !(m.flags & MP_CAPABLE)) return [];
  const out: bigint[] = [];
  if (m.flags & MP_KEY0) out.push(m.keys[0]);
  if (m.flags & MP_KEY1) out.push(m.keys[1]);
  return out;
}
