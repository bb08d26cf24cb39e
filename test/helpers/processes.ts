// Real processes for the deployment tests: free ports, child services that keep their logs,
// the API as the process it is in production, and binaries installed from Debian when missing.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const handedOut = new Set<number>();

/** A port nothing listens on right now (the kernel's pick for port 0), never the same twice in a process. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/** The children of `parent` whose command line contains `pattern`, oldest first. */
export function childPids(parent: number, pattern: string): number[] {
  let listed = '';
  try {
    listed = execFileSync('ps', ['--ppid', String(parent), '--sort=start_time', '-o', 'pid=,args='], { encoding: 'utf8' });
  } catch {
    return []; // no children: ps exits 1
  }
  return listed
    .split('\n')
    .map((line) => /^\s*(\d+)\s(.*)$/.exec(line))
    .filter((match) => match?.[2]!.includes(pattern))
    .map((match) => Number(match![1]));
}

/** true when `url` answers 2xx within a second; never throws. */
export async function answers(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

/** A child process with its stdout and stderr kept, so a failing test can show why. */
export class ChildService {
  readonly child: ChildProcess;
  log = '';
  readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    command: string,
    args: string[],
    options: { env?: Record<string, string>; cwd?: string } = {},
  ) {
    this.child = spawn(command, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (chunk) => (this.log += chunk));
    this.child.stderr!.on('data', (chunk) => (this.log += chunk));
    this.child.on('error', (error) => (this.log += `\n[spawn failed: ${error.message}]`));
    this.exited = new Promise((resolve) => this.child.once('close', () => resolve()));
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  tail(lines = 30): string {
    return this.log.trimEnd().split('\n').slice(-lines).join('\n');
  }

  /** Resolves once `probe` holds; rejects with the end of the log if the process dies or time runs out. */
  async until(probe: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await probe()) return;
      if (!this.alive) throw new Error(`${this.name} exited (code ${this.child.exitCode}, signal ${this.child.signalCode}) before ${what}:\n${this.tail()}`);
      if (Date.now() > deadline) throw new Error(`${this.name}: no ${what} within ${timeoutMs} ms:\n${this.tail()}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  /** Signals this process (by its own pid only) and waits; SIGKILL after `graceMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<void> {
    if (!this.alive) return;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export interface ApiProcess {
  url: string;
  port: number;
  service: ChildService;
}

/** A file with one model per line, for processes that must not depend on the repo's model_names.txt. */
export function modelNamesFile(models = ['tiny']): string {
  const file = join(mkdtempSync(join(tmpdir(), 'models-')), 'model_names.txt');
  writeFileSync(file, `${models.join('\n')}\n`);
  return file;
}

/**
 * The API as production runs it: its own process (api/main.ts) on env.API_PORT or a free port, ready once
 * /readyz answers. `node --import tsx` keeps it one process, so a signal reaches the API itself.
 */
export async function startApiProcess(env: Record<string, string>): Promise<ApiProcess> {
  const port = Number(env.API_PORT) || (await freePort());
  const service = new ChildService('api', process.execPath, ['--import', 'tsx', 'api/main.ts'], {
    env: { LOG_LEVEL: 'warn', MODEL_NAMES_FILE: modelNamesFile(), ...env, API_HOST: '127.0.0.1', API_PORT: String(port) },
  });
  const url = `http://127.0.0.1:${port}`;
  await service.until(() => answers(`${url}/readyz`), 60_000, 'answer on /readyz');
  return { url, port, service };
}

/**
 * Where `binary` is, after running `install` when it is missing; undefined only if it cannot
 * be installed on a developer's machine. In CI (where .ci/run installs it) a missing binary fails.
 */
export function ensureBinary(binary: string, install: string[]): string | undefined {
  if (existsSync(binary)) return binary;
  const [command, ...args] = install;
  const result = spawnSync(command!, args, {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    timeout: 600_000,
  });
  if (result.status !== 0) console.warn(`could not install ${binary} with \`${install.join(' ')}\` (exit ${result.status})`);
  if (!existsSync(binary) && process.env.CI) throw new Error(`${binary} is missing in CI: scripts/infra install debian should have installed it`);
  return existsSync(binary) ? binary : undefined;
}

/** The apt command that installs a Debian package (as root, or through sudo). */
export const aptInstall = (pkg: string): string[] => {
  const root = process.getuid?.() === 0;
  const apt = `apt-get update -q && apt-get install -y -q --no-install-recommends ${pkg}`;
  return root ? ['bash', '-c', apt] : ['sudo', '-n', 'bash', '-c', apt];
};
