// Supervises one diffusion-py runner process: spawn, the ready frame, restart backoff, the
// stall watchdog and exit. Its state is explicit (stopped -> starting -> ready -> stopping
// -> stopped); frames in both directions are the declared protocol (common/protocol.ts).
// Which job a frame belongs to is the Runner's business (consumer/runner.ts), not this one's.
// After an idle unload it can keep a standby process (`--standby`: torch and diffusers imported,
// no model loaded, no GPU memory) that the next start takes over with a `start` line.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeFrame, FrameDecoder } from '../common/frames.js';
import type { Logger } from '../common/logger.js';
import { readRunnerFrame, type CompiledFrame, type FromRunner, type ReadyFrame, type ToRunner } from '../common/protocol.js';
import { compileCacheEnv, prepareCompileCache, type CompileCacheSetup } from './compilecache.js';

export type ProcessState = 'stopped' | 'starting' | 'ready' | 'stopping';

/** The job size RUNNER_STALL_MS is meant for: 512x512. */
export const STALL_REFERENCE_PIXELS = 512 * 512;

/** A runner log line at ERROR or CRITICAL ("<date> <time> ERROR <logger>: <message>"): the message. */
const RUNNER_ERROR = /^\S+ \S+ (?:ERROR|CRITICAL) \S+: (.*)$/;

/** The stall bound for the largest job in hand: `stallMs`, scaled up by its pixels past the reference. */
export const stallBound = (stallMs: number, pixels: number) => Math.round(stallMs * Math.max(1, pixels / STALL_REFERENCE_PIXELS));

export interface ProcessOptions {
  model: string;
  source?: string;
  /** The runner's GPU tuning from model_names.txt (`tuning=`); absent: the runner's default. */
  tuning?: string;
  /** The family the model must be of (common/models.ts familyOf); absent: any the runner serves. */
  family?: string;
  /** The weights' precision (`dtype=`); absent: the family's. */
  dtype?: string;
  python: string;
  cwd: string;
  device: 'auto' | 'cpu' | 'cuda';
  /**
   * With work in hand and no frame for this long, the process counts as hung and is killed: the
   * bound for a job of STALL_REFERENCE_PIXELS or fewer; larger jobs scale it by their pixels
   * (a step and the VAE take time in proportion), so a costly job is not mistaken for a hang.
   */
  stallMs: number;
  startTimeoutMs: number;
  logger: Logger;
  extraArgs?: string[];
  env?: Record<string, string>;
  /** Shares the runner's torch.compile artifacts through the object store; absent: no cache. */
  compileCache?: CompileCacheSetup;
  /** stop(…, { standby: true }) leaves a standby process for the next start (RUNNER_STANDBY). */
  standby?: boolean;
}

export interface ReadyInfo extends Omit<ReadyFrame, 'v' | 'type'> {
  /** Spawn to ready, as the consumer saw it (the compile cache's download included): the cold-start cost. */
  start_seconds: number;
}

export interface ProcessEvents {
  onMessage(message: Exclude<FromRunner, ReadyFrame | CompiledFrame>, payload: Buffer): void;
  /** The process is gone; `expected` when it was asked to stop and held no work. */
  onExit(reason: string, expected: boolean): void;
  /** Whether the Runner holds work: only then does silence count as a stall. */
  busy(): boolean;
  /** The pixels of the largest job the Runner holds (0: none known): the stall bound scales with them. */
  largestPixels?(): number;
  onReady?(info: ReadyInfo): void;
}

export class RunnerProcess {
  private child: ChildProcess | undefined;
  /** Imports done, waiting for its `start` line; killed by a stop() without standby. */
  private standbyChild: ChildProcess | undefined;
  private stopCalls = 0;
  private starting: Promise<ReadyInfo> | undefined;
  private lastFrameAt = 0;
  /** The runner's last ERROR log line (its Python logging format), for a start-up that fails. */
  private lastRunnerError: string | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private failures = 0;
  /** stop() came while the start was still fetching the compile cache: do not spawn. */
  private startCanceled = false;
  state: ProcessState = 'stopped';
  info: ReadyInfo | undefined;

  constructor(
    private readonly options: ProcessOptions,
    private readonly events: ProcessEvents,
  ) {}

  /** Starts the process when none runs (after a backoff if the last one failed). */
  ensureStarted(): Promise<ReadyInfo> {
    if (this.state === 'ready' && this.info) return Promise.resolve(this.info);
    this.starting ??= this.start().finally(() => (this.starting = undefined));
    return this.starting;
  }

  /** Work was handed over: the stall clock starts now, not at the last frame of an idle spell. */
  markBusy(): void {
    this.lastFrameAt = Date.now();
  }

  send(message: ToRunner, payload?: Uint8Array): void {
    this.child?.stdin?.write(encodeFrame(message, payload));
  }

  /**
   * Asks the runner to finish its work and exit; kills it after graceMs. With standby (an idle
   * unload, when the options allow it) a standby process is started for the next start;
   * without (a shutdown) any standby goes too.
   */
  async stop(graceMs: number, { standby = false } = {}): Promise<void> {
    const call = ++this.stopCalls;
    if (!standby || !this.options.standby) this.dropStandby();
    const child = this.child;
    if (!child) {
      if (this.state === 'starting') this.startCanceled = true;
      return;
    }
    this.state = 'stopping';
    this.send({ v: 1, type: 'shutdown' });
    const exited = once(child, 'exit');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
    // Not when a later stop (a shutdown during an idle unload) came meanwhile, nor a start.
    if (standby && this.options.standby && call === this.stopCalls && !this.standbyChild && (this.state as ProcessState) === 'stopped') this.spawnStandby();
  }

  private spawnStandby(): void {
    const child = this.launch(true, this.options.compileCache && compileCacheEnv(this.options.compileCache));
    this.standbyChild = child;
    child.on('error', () => {}); // a standby that cannot start is simply not used
    child.stdin!.on('error', () => {});
    child.once('exit', () => {
      if (this.standbyChild === child) this.standbyChild = undefined;
    });
    this.options.logger.info({ runner_pid: child.pid }, 'runner standby spawned');
  }

  /** The standby, told to start, as the runner; undefined when there is none alive. */
  private takeStandby(): ChildProcess | undefined {
    const child = this.standbyChild;
    this.standbyChild = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null || !child.stdin?.writable) return undefined;
    child.stdin.write('start\n');
    this.child = child;
    this.options.logger.info({ runner_pid: child.pid }, 'runner started from its standby');
    return child;
  }

  private dropStandby(): void {
    this.standbyChild?.kill('SIGKILL');
    this.standbyChild = undefined;
  }

  private async start(): Promise<ReadyInfo> {
    if (this.failures) {
      const backoff = Math.min(30_000, 500 * 2 ** (this.failures - 1));
      this.options.logger.warn({ backoff_ms: backoff }, 'restarting runner after a failure');
      await sleep(backoff);
    }
    this.state = 'starting';
    this.startCanceled = false;
    const startedAt = Date.now();
    const cache = this.options.compileCache && (await prepareCompileCache(this.options.compileCache, this.options.logger));
    if (this.startCanceled) {
      this.state = 'stopped';
      throw new Error(`runner for ${this.options.model} was stopped before it started`);
    }
    const child = this.takeStandby() ?? this.spawn(cache?.env);
    const ready = this.wire(child, (frame) => {
      // A runner that compiles in the background saves its compile cache only now: upload again.
      if (frame.ok) this.options.logger.info({ compile_seconds: frame.seconds }, 'runner compiled path in service');
      else this.options.logger.warn({ compile_seconds: frame.seconds }, 'runner background compile failed; it serves uncompiled');
      cache?.upload();
    });
    try {
      const frame = await Promise.race([
        ready,
        sleep(this.options.startTimeoutMs).then(() => {
          throw new Error(`runner for ${this.options.model} sent no ready frame within ${this.options.startTimeoutMs} ms`);
        }),
      ]);
      const { v: _v, type: _type, ...info } = frame;
      this.info = { ...info, start_seconds: (Date.now() - startedAt) / 1000 };
      this.failures = 0;
      this.state = 'ready';
      this.options.logger.info(this.info, 'runner ready');
      cache?.upload();
      this.events.onReady?.(this.info);
      return this.info;
    } catch (error) {
      this.failures++;
      child.kill('SIGKILL');
      if (this.child === child) {
        this.child = undefined;
        this.state = 'stopped';
      }
      throw error;
    }
  }

  private spawn(cacheEnv: Record<string, string> = {}): ChildProcess {
    const child = this.launch(false, cacheEnv);
    this.child = child;
    this.options.logger.info({ runner_pid: child.pid }, 'runner spawned');
    return child;
  }

  private launch(standby: boolean, cacheEnv: Record<string, string> = {}): ChildProcess {
    const { model, source, tuning, family, dtype, python, cwd, device } = this.options;
    const args = ['-m', 'img2img_runner', '--model', model, ...(source ? ['--source', source] : []), ...(tuning ? ['--tuning', tuning] : [])];
    args.push(...(family ? ['--family', family] : []), ...(dtype ? ['--dtype', dtype] : []));
    if (device !== 'auto') args.push('--device', device);
    args.push(...(this.options.extraArgs ?? []), ...(standby ? ['--standby'] : []));
    const child = spawn(python, args, {
      cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, HF_HUB_OFFLINE: '1', PYTHONUNBUFFERED: '1', ...cacheEnv, ...this.options.env },
    });
    // From the spawn on, also for a standby that waits: a full pipe would block the runner.
    // Its ERROR lines (why it cannot load, say) are logged as errors and kept for the start-up failure.
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        const error = RUNNER_ERROR.exec(line);
        if (error) this.lastRunnerError = error[1];
        this.options.logger[error ? 'error' : 'debug']({ runner: this.options.model }, line);
      }
    });
    return child;
  }

  /** Connects the process' pipes; resolves with its ready frame. */
  private wire(child: ChildProcess, onCompiled: (frame: CompiledFrame) => void): Promise<ReadyFrame> {
    const decoder = new FrameDecoder();
    let onReady!: (frame: ReadyFrame) => void;
    let onEarlyExit!: (error: Error) => void;
    const ready = new Promise<ReadyFrame>((resolve, reject) => ((onReady = resolve), (onEarlyExit = reject)));
    ready.catch(() => {}); // the caller observes it through the race

    child.stdout!.on('data', (chunk: Buffer) => {
      this.lastFrameAt = Date.now();
      try {
        for (const frame of decoder.push(chunk)) {
          const read = readRunnerFrame(frame);
          if (!read) continue; // a frame type this side does not know yet
          if (read.message.type === 'ready') onReady(read.message);
          else if (read.message.type === 'compiled') onCompiled(read.message);
          else this.events.onMessage(read.message, read.payload);
        }
      } catch (error) {
        this.options.logger.error({ err: error }, 'runner broke the frame protocol; killing it');
        child.kill('SIGKILL');
      }
    });
    child.stdin!.on('error', () => {}); // EPIPE after a crash is reported by 'exit'
    child.on('error', (error) => onEarlyExit(error));
    child.on('exit', (code, signal) => {
      const why = this.lastRunnerError ? `: ${this.lastRunnerError}` : '';
      onEarlyExit(new Error(`runner for ${this.options.model} exited during start-up (code ${code}, signal ${signal})${why}`));
      this.onExit(child, code, signal);
    });
    this.watchdog ??= setInterval(() => this.checkStall(), Math.min(1000, this.options.stallMs / 4)).unref();
    return ready;
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    const expected = this.state === 'stopping' && !this.events.busy();
    this.child = undefined;
    this.info = undefined;
    this.state = 'stopped';
    if (!expected) {
      this.failures++;
      this.options.logger.error({ code, signal }, 'runner died; its jobs will be retried');
    }
    this.events.onExit(`runner exited (code ${code}, signal ${signal})`, expected);
  }

  private checkStall(): void {
    if (this.state !== 'ready' || !this.child || !this.events.busy()) return;
    const stallMs = stallBound(this.options.stallMs, this.events.largestPixels?.() ?? 0);
    if (Date.now() - this.lastFrameAt > stallMs) {
      this.options.logger.error({ stall_ms: stallMs }, 'runner stopped answering; killing it');
      this.child.kill('SIGKILL');
    }
  }
}
