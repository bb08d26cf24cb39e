// Remote workers for tests: a token made the way `npm run workers -- create` makes it, and a
// runner process in --connect mode (the tiny model on the CPU, on 127.0.0.1 only).
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import type { ObjectStore } from '../../common/storage.js';
import { WorkerStore } from '../../common/workers.js';
import { waitFor } from './consumer.js';

export async function newWorker(store: ObjectStore, name: string): Promise<{ id: string; token: string }> {
  const { worker, token } = await new WorkerStore(store).create(name);
  return { id: worker.id, token };
}

/** Removes a test's worker token and status, so the shared bucket does not collect them. */
export async function removeWorker(store: ObjectStore, id: string): Promise<void> {
  await Promise.all([store.delete(`auth/workers/${id}.json`), store.delete(`workers/${id}.json`)]).catch(() => {});
}

export class WorkerProcess {
  child: ChildProcess | undefined;
  log = '';
  exitCode: number | null | undefined;

  constructor(
    readonly url: string,
    readonly token: string,
    private readonly extraArgs: string[] = [],
  ) {}

  start(): this {
    const python = resolve('diffusion-py/.venv/bin/python');
    this.child = spawn(python, ['-m', 'img2img_runner', '--model', 'tiny', '--device', 'cpu', '--connect', this.url, ...this.extraArgs], {
      cwd: resolve('diffusion-py'),
      // The token travels in the environment, as docs/DEPLOY.md advises (not visible in ps).
      env: { ...process.env, IMG2IMG_WORKER_TOKEN: this.token, HF_HUB_OFFLINE: '1', PYTHONUNBUFFERED: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.on('data', (chunk) => (this.log += chunk));
    this.child.stderr!.on('data', (chunk) => (this.log += chunk));
    this.child.on('exit', (code, signal) => (this.exitCode = code ?? (signal ? -1 : null)));
    return this;
  }

  /** Resolves once the worker said it is connected (`times` connections in its life). */
  async connected(times = 1, timeoutMs = 120_000): Promise<void> {
    await waitFor(async () => ((this.log.match(/connected to /g)?.length ?? 0) >= times ? true : undefined), timeoutMs, `worker connection #${times}\n${this.log}`);
  }

  async exited(timeoutMs = 60_000): Promise<number | null> {
    return waitFor(async () => (this.exitCode === undefined ? undefined : this.exitCode), timeoutMs, `the worker to exit\n${this.log.slice(-2000)}`);
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.exitCode === undefined) this.child?.kill(signal);
  }
}
