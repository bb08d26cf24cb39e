// Supervises one long-lived diffusion-py runner process and speaks its framed stdio
// protocol. A crash or a stall never loses a job: every job in flight resolves with
// a retryable error and the next job starts a fresh process (after a backoff).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeFrame, FrameDecoder, type Frame } from '../common/frames.js';
import type { JobParams } from '../common/jobs.js';
import type { Logger } from '../common/logger.js';

export interface RunnerOptions {
  model: string;
  source?: string;
  python: string;
  cwd: string;
  device: 'auto' | 'cpu' | 'cuda';
  /** With jobs in flight and no frame for this long, the process counts as hung. */
  stallMs: number;
  startTimeoutMs: number;
  logger: Logger;
  extraArgs?: string[];
  env?: Record<string, string>;
  onReady?(info: ReadyInfo): void;
  onRestart?(): void;
}

export interface ReadyInfo {
  model: string;
  device: string;
  dtype: string;
  max_batch: number;
  load_seconds: number;
  /** Spawn to ready, as the consumer saw it: the cold-start cost. */
  start_seconds: number;
}

export interface JobCallbacks {
  onStarted?(batchSize: number): void;
  onProgress?(step: number, total: number): void;
}

export type RunnerOutcome =
  | { ok: true; image: Buffer; header: ResultHeader }
  | { ok: false; code: string; retryable: boolean; message: string };

export interface ResultHeader {
  width: number;
  height: number;
  batch_size: number;
  timings: { decode_s: number; compute_s: number; encode_s: number };
  peak_memory_bytes: number;
}

interface InFlight {
  callbacks: JobCallbacks;
  resolve(outcome: RunnerOutcome): void;
}

export class Runner {
  private child: ChildProcess | undefined;
  private starting: Promise<ReadyInfo> | undefined;
  private readonly inFlight = new Map<string, InFlight>();
  private lastFrameAt = 0;
  private watchdog: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopping = false;
  info: ReadyInfo | undefined;

  constructor(private readonly options: RunnerOptions) {}

  get pending(): number {
    return this.inFlight.size;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  /** Jobs worth handing over at once: one batch computing and one queued behind it. */
  get capacity(): number {
    return 2 * (this.info?.max_batch ?? 1);
  }

  /** Starts the process when none runs (after a backoff if the last one failed). */
  ensureStarted(): Promise<ReadyInfo> {
    if (this.child && this.info) return Promise.resolve(this.info);
    this.starting ??= this.start().finally(() => (this.starting = undefined));
    return this.starting;
  }

  /** Sends a job at once (the runner queues and batches it); resolves with its outcome. */
  async run(id: string, params: JobParams, image: Uint8Array, callbacks: JobCallbacks = {}): Promise<RunnerOutcome> {
    try {
      await this.ensureStarted();
    } catch (error) {
      return { ok: false, code: 'runner_start_failed', retryable: true, message: (error as Error).message };
    }
    const outcome = new Promise<RunnerOutcome>((resolve) => this.inFlight.set(id, { callbacks, resolve }));
    if (this.inFlight.size === 1) this.lastFrameAt = Date.now(); // the stall clock starts with work
    this.send({ v: 1, type: 'job', id, params }, image);
    return outcome;
  }

  cancel(id: string): void {
    if (this.inFlight.has(id)) this.send({ v: 1, type: 'cancel', id });
  }

  /** Asks the runner to finish its work and exit; kills it after graceMs. */
  async stop(graceMs: number): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.stopping = true;
    this.send({ v: 1, type: 'shutdown' });
    const exited = once(child, 'exit');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
    this.stopping = false;
  }

  private async start(): Promise<ReadyInfo> {
    if (this.failures) {
      const backoff = Math.min(30_000, 500 * 2 ** (this.failures - 1));
      this.options.logger.warn({ backoff_ms: backoff }, 'restarting runner after a failure');
      await sleep(backoff);
    }
    const startedAt = Date.now();
    const { model, source, python, cwd, device } = this.options;
    const args = ['-m', 'img2img_runner', '--model', model, ...(source ? ['--source', source] : [])];
    if (device !== 'auto') args.push('--device', device);
    args.push(...(this.options.extraArgs ?? []));
    const child = spawn(python, args, {
      cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, HF_HUB_OFFLINE: '1', PYTHONUNBUFFERED: '1', ...this.options.env },
    });
    this.child = child;
    this.options.logger.info({ runner_pid: child.pid }, 'runner spawned');
    const ready = this.wire(child);
    try {
      const header = await Promise.race([
        ready,
        sleep(this.options.startTimeoutMs).then(() => {
          throw new Error(`runner for ${model} sent no ready frame within ${this.options.startTimeoutMs} ms`);
        }),
      ]);
      this.info = { ...(header as unknown as Omit<ReadyInfo, 'start_seconds'>), start_seconds: (Date.now() - startedAt) / 1000 };
      this.failures = 0;
      this.options.logger.info(this.info, 'runner ready');
      this.options.onReady?.(this.info);
      return this.info;
    } catch (error) {
      this.failures++;
      child.kill('SIGKILL');
      if (this.child === child) this.child = undefined;
      throw error;
    }
  }

  /** Connects the process' pipes; resolves with the ready frame's header. */
  private wire(child: ChildProcess): Promise<Frame['header']> {
    const decoder = new FrameDecoder();
    let onReady!: (header: Frame['header']) => void;
    let onEarlyExit!: (error: Error) => void;
    const ready = new Promise<Frame['header']>((resolve, reject) => ((onReady = resolve), (onEarlyExit = reject)));
    ready.catch(() => {}); // the caller observes it through the race

    child.stdout!.on('data', (chunk: Buffer) => {
      this.lastFrameAt = Date.now();
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (error) {
        this.options.logger.error({ err: error }, 'runner broke the frame protocol; killing it');
        child.kill('SIGKILL');
        return;
      }
      for (const frame of frames) {
        if (frame.header.type === 'ready') onReady(frame.header);
        else this.onFrame(frame);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      for (const line of text.split('\n')) if (line.trim()) this.options.logger.debug({ runner: this.options.model }, line);
    });
    child.stdin!.on('error', () => {}); // EPIPE after a crash is reported by 'exit'
    child.on('error', (error) => onEarlyExit(error));
    child.on('exit', (code, signal) => {
      onEarlyExit(new Error(`runner for ${this.options.model} exited during start-up (code ${code}, signal ${signal})`));
      this.onExit(child, code, signal);
    });
    this.watchdog ??= setInterval(() => this.checkStall(), Math.min(1000, this.options.stallMs / 4)).unref();
    return ready;
  }

  private onFrame({ header, payload }: Frame): void {
    const job = typeof header.id === 'string' ? this.inFlight.get(header.id) : undefined;
    switch (header.type) {
      case 'started':
        job?.callbacks.onStarted?.(Number(header.batch_size));
        return;
      case 'progress':
        job?.callbacks.onProgress?.(Number(header.step), Number(header.total));
        return;
      case 'result':
        this.settle(header.id as string, { ok: true, image: payload, header: header as unknown as ResultHeader });
        return;
      case 'error':
        if (job) {
          this.settle(header.id as string, {
            ok: false,
            code: String(header.code),
            retryable: Boolean(header.retryable),
            message: String(header.message),
          });
        } else {
          this.options.logger.warn({ frame: header }, 'runner error without a job');
        }
        return;
      default:
        return; // pong and future frame types
    }
  }

  private settle(id: string, outcome: RunnerOutcome): void {
    const job = this.inFlight.get(id);
    if (!job) return;
    this.inFlight.delete(id);
    job.resolve(outcome);
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.info = undefined;
    const expected = this.stopping && this.inFlight.size === 0;
    if (!expected) {
      this.failures++;
      this.options.onRestart?.();
      this.options.logger.error({ code, signal, in_flight: this.inFlight.size }, 'runner died; its jobs will be retried');
    }
    for (const id of [...this.inFlight.keys()]) {
      this.settle(id, { ok: false, code: 'runner_crashed', retryable: true, message: `runner exited (code ${code}, signal ${signal})` });
    }
  }

  private checkStall(): void {
    if (!this.child || !this.inFlight.size || !this.info) return;
    if (Date.now() - this.lastFrameAt > this.options.stallMs) {
      this.options.logger.error({ stall_ms: this.options.stallMs }, 'runner stopped answering; killing it');
      this.child.kill('SIGKILL');
    }
  }

  private send(header: Record<string, unknown>, payload?: Uint8Array): void {
    this.child?.stdin?.write(encodeFrame(header, payload));
  }

  /** Kills the process at once (tests, and a consumer that must exit now). */
  kill(): void {
    this.child?.kill('SIGKILL');
    if (this.watchdog) clearInterval(this.watchdog);
  }
}
