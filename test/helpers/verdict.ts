/**
 * What a test may claim about one new connection, said exactly (issue 12:
 * "refused" must not accept any failure). connectOutcome() in
 * testkit/lab/peer-control.ts names what the client's kernel said; these
 * add what the server's application read, so "no byte crossed" is measured
 * at the far end, not inferred from a missing echo.
 */
import type { ExecutionContext } from 'ava';
import type { Lab } from '../../testkit/lab/lab.js';
import { connectOnce, connectOutcome, type Peer, type PeerEvent } from '../../testkit/lab/peer-control.js';
import { wallMs } from '../../testkit/time.js';

export interface Probe {
  result: PeerEvent;
  outcome: ReturnType<typeof connectOutcome>;
  /** Bytes the server's application read on this connection (0 when it never accepted it); null without a server peer. */
  serverRx: number | null;
}

/**
 * One connection from namespace `ns` to host:port (connectOnce: "ping" at
 * once, held `holdMs` after its echo). With `server` (the lab peer listening
 * on `port`), also how many bytes its application read of this connection.
 */
export async function probe(lab: Lab, ns: string, host: string, port: number, server?: Peer, opts: { timeoutMs?: number; holdMs?: number } = {}): Promise<Probe> {
  const since = wallMs();
  const result = await connectOnce(lab, ns, host, port, { timeoutMs: opts.timeoutMs ?? 1500, holdMs: opts.holdMs ?? 300 });
  let serverRx: number | null = null;
  if (server) {
    serverRx = 0;
    const acc = result.lport === undefined ? undefined : server.events.find((e) => e.ev === 'accept' && e.lport === port && e.rport === result.lport && e.t >= since - 1);
    if (acc) {
      // The client has closed its end: the server's close follows (FIN or RST), carrying what its application read.
      const close = await server.waitFor((e) => e.ev === 'close' && e.conn === acc.conn, 5000, `server close of ${acc.conn}`);
      serverRx = close.rx ?? 0;
    }
  }
  return { result, outcome: connectOutcome(result), serverRx };
}

/**
 * A new connection during a job: its handshake completes, then it is reset
 * (ECONNRESET; Linux gives that errno only to a synchronized connection).
 * Not refused: a SYN draws one RST, toward its destination
 * (src/packet/forge.ts), so the connecting end always has the real SYN-ACK
 * before any RST meant for it. A refusal, a timeout, an unreachable host, a
 * connection that lasts or a lab that is not there fails. Whether the
 * request sent at connect got its echo first, and what the server's
 * application read, are logged: that race is the quiet-daemon test's claim
 * (service.test, request 0.5 ms after connect), not this one.
 */
export function expectResetAfterHandshake(t: ExecutionContext, p: Probe, what: string): void {
  t.is(p.outcome, 'reset', `${what}: reset after its handshake (${JSON.stringify(p.result)})`);
  t.log(`${what}: ${p.outcome}${p.result.echoed ? ' (its echo came back first)' : ''}${p.serverRx === null ? '' : `, the server read ${p.serverRx} bytes`}`);
}

/** The positive control: the same connection works (echoed, held), and the server read the 5-byte "ping\n". */
export function expectWorks(t: ExecutionContext, p: Probe, what: string): void {
  t.is(p.outcome, 'works', `${what}: ${JSON.stringify(p.result)}`);
  if (p.serverRx !== null) t.is(p.serverRx, 5, `${what}: the server read the request`);
}
