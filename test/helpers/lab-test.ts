/**
 * Test helpers around the namespace lab: a controller for the Enforcer agent
 * (test/fixtures/enforcer-agent.ts, which runs the real Enforcer inside the
 * sensor namespace).
 */
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from '../../testkit/lab/lab.js';
import type { EnforcerStatus, FlowResetInfo, TargetInfo, TargetSpec } from '../../src/dataplane/types.js';

const AGENT_SCRIPT = fileURLToPath(new URL('../fixtures/enforcer-agent.js', import.meta.url));

export interface AgentEvent<T = unknown> {
  name: 'flow-reset' | 'expired';
  data: T;
  /** Wall-clock epoch ms (sub-ms fraction) when the agent saw it. */
  t: number;
}

export interface AddResult {
  info: TargetInfo;
  /** Wall-clock epoch ms just before / after Enforcer.add() in the agent. */
  calledAt: number;
  returnedAt: number;
}

export type AgentSpec = Omit<TargetSpec, 'expiresAt'> & ({ expiresAt: number } | { durationMs: number });

interface Reply {
  type: 'reply';
  id: number;
  ok: boolean;
  result?: unknown;
  error?: { code: string; message: string };
}

export class AgentError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

/** Controls one enforcer-agent child in the lab's sensor namespace. */
export class EnforcerAgent extends EventEmitter {
  readonly events: AgentEvent[] = [];
  stderr = '';
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, (r: Reply) => void>();
  private nextId = 1;
  private exited = false;
  private readonly exitPromise: Promise<void>;

  private constructor(lab: Lab) {
    super();
    this.child = lab.spawn(lab.sensor.ns, [process.execPath, AGENT_SCRIPT]);
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      if (this.stderr.length < 256 * 1024) this.stderr += d;
    });
    this.exitPromise = new Promise((resolve) => {
      this.child.once('close', () => {
        this.exited = true;
        for (const cb of this.pending.values()) cb({ type: 'reply', id: -1, ok: false, error: { code: 'E_AGENT_EXIT', message: `agent exited; stderr: ${this.stderr.slice(-2000)}` } });
        this.pending.clear();
        this.emit('exit');
        resolve();
      });
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => this.onLine(line));
  }

  /** Starts the agent and waits until its Enforcer is open. */
  static async start(lab: Lab, timeoutMs = 15_000): Promise<EnforcerAgent> {
    const agent = new EnforcerAgent(lab);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`enforcer agent not ready in ${timeoutMs} ms: ${agent.stderr}`)), timeoutMs);
      agent.once('ready', () => {
        clearTimeout(timer);
        resolve();
      });
      agent.once('fatal', (err: { code: string; message: string }) => {
        clearTimeout(timer);
        reject(new AgentError(err.code, `${err.message}\n${agent.stderr}`));
      });
      agent.once('exit', () => {
        clearTimeout(timer);
        reject(new Error(`enforcer agent exited before ready: ${agent.stderr}`));
      });
    });
    return agent;
  }

  private onLine(line: string): void {
    let msg: { type: string; [k: string]: unknown };
    try {
      msg = JSON.parse(line) as typeof msg;
    } catch {
      this.stderr += `unparsed stdout: ${line}\n`;
      return;
    }
    if (msg.type === 'ready') this.emit('ready');
    else if (msg.type === 'fatal') this.emit('fatal', msg.error);
    else if (msg.type === 'event') {
      const ev = { name: msg.name, data: msg.data, t: msg.t } as AgentEvent;
      this.events.push(ev);
      this.emit('event', ev);
    } else if (msg.type === 'reply') {
      const reply = msg as unknown as Reply;
      const cb = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      cb?.(reply);
    }
  }

  private request<T>(op: string, args: object = {}): Promise<T> {
    if (this.exited) return Promise.reject(new AgentError('E_AGENT_EXIT', `agent has exited; stderr: ${this.stderr.slice(-2000)}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, (reply) => {
        if (reply.ok) resolve(reply.result as T);
        else reject(new AgentError(reply.error?.code ?? 'E_INTERNAL', reply.error?.message ?? 'unknown'));
      });
      this.child.stdin!.write(JSON.stringify({ id, op, ...args }) + '\n');
    });
  }

  add(spec: AgentSpec): Promise<AddResult> {
    return this.request('add', { spec });
  }
  extend(targetId: number, expiresAt: number): Promise<TargetInfo> {
    return this.request('extend', { targetId, expiresAt });
  }
  remove(targetId: number): Promise<boolean> {
    return this.request('remove', { targetId });
  }
  list(): Promise<TargetInfo[]> {
    return this.request('list');
  }
  status(): Promise<EnforcerStatus> {
    return this.request('status');
  }

  flowResets(): AgentEvent<FlowResetInfo>[] {
    return this.events.filter((e) => e.name === 'flow-reset') as AgentEvent<FlowResetInfo>[];
  }

  /** Resolves with the first event (seen or future) matching `pred`. */
  waitForEvent(pred: (ev: AgentEvent) => boolean, timeoutMs: number): Promise<AgentEvent> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const onEvent = (ev: AgentEvent): void => {
        if (!pred(ev)) return;
        clearTimeout(timer);
        this.off('event', onEvent);
        resolve(ev);
      };
      const timer = setTimeout(() => {
        this.off('event', onEvent);
        reject(new Error(`no matching agent event in ${timeoutMs} ms; events: ${JSON.stringify(this.events.slice(-5))}`));
      }, timeoutMs);
      this.on('event', onEvent);
    });
  }

  /** Closes the Enforcer (detaches XDP) and waits for the agent to exit; kills it if it hangs. */
  async close(): Promise<void> {
    if (this.exited) return;
    this.child.stdin!.end();
    const hard = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exitPromise;
    clearTimeout(hard);
  }
}
