// Runs the API, the consumers and the webhook dispatcher as child processes, and keeps them
// running: a process that dies is started again after a backoff (1 s, doubling to 30 s; back
// to 1 s once it has run a minute), while the others go on serving. A process that exits
// with EXIT_CONFIG (a bad setting) would only fail again: then everything stops, with its
// message. SIGINT or SIGTERM stops the children (SIGTERM, SIGKILL after a grace) and exits.
import { spawn, type ChildProcess } from 'node:child_process';
import { API_NODE_FLAGS } from '../common/nodeflags.js';
import { EXIT_CONFIG } from '../common/signals.js';

interface Service {
  name: string;
  entry: string;
  /** node's own flags, before the entry. */
  flags?: string[];
  child?: ChildProcess;
  startedAt: number;
  failures: number;
  timer?: NodeJS.Timeout;
}

const BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30_000;
/** A process that ran this long is healthy: its next death starts the backoff again. */
const HEALTHY_MS = 60_000;
const STOP_GRACE_MS = 15_000;

const services: Service[] = [
  { name: 'api', entry: 'api/main.ts', flags: API_NODE_FLAGS, startedAt: 0, failures: 0 },
  { name: 'consumer', entry: 'consumer/main.ts', startedAt: 0, failures: 0 },
  { name: 'dispatcher', entry: 'dispatcher/main.ts', startedAt: 0, failures: 0 },
].filter((service) => !process.env.SUPERVISE || process.env.SUPERVISE.split(',').includes(service.name));

let stopping = false;
const say = (line: string) => console.log(`supervisor: ${line}`);

function start(service: Service): void {
  service.timer = undefined;
  const child = spawn(process.execPath, [...(service.flags ?? []), '--import', 'tsx', service.entry], { stdio: 'inherit' });
  service.child = child;
  service.startedAt = Date.now();
  say(`${service.name} started (pid ${child.pid})`);
  child.once('exit', (code, signal) => exited(service, code, signal));
}

function exited(service: Service, code: number | null, signal: NodeJS.Signals | null): void {
  service.child = undefined;
  if (stopping) return;
  if (code === EXIT_CONFIG) {
    say(`${service.name} refused its configuration (above); stopping everything`);
    void stopAll(EXIT_CONFIG);
    return;
  }
  if (Date.now() - service.startedAt >= HEALTHY_MS) service.failures = 0;
  const delay = Math.min(BACKOFF_MS * 2 ** service.failures, MAX_BACKOFF_MS);
  service.failures++;
  say(`${service.name} exited (${signal ?? `code ${code}`}); starting it again in ${delay / 1000} s, the others keep running`);
  service.timer = setTimeout(() => start(service), delay);
}

async function stopAll(exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  const running = services.filter((service) => {
    clearTimeout(service.timer);
    return service.child;
  });
  await Promise.all(
    running.map(
      ({ child }) =>
        new Promise<void>((resolve) => {
          const kill = setTimeout(() => child!.kill('SIGKILL'), STOP_GRACE_MS);
          child!.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          child!.kill('SIGTERM');
        }),
    ),
  );
  process.exit(exitCode);
}

process.on('SIGINT', () => void stopAll(0));
process.on('SIGTERM', () => void stopAll(0));
for (const service of services) start(service);
