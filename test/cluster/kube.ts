// The Kubernetes control plane that `scripts/infra up k8s` runs for the cluster suite (etcd,
// kube-apiserver, controller-manager, scheduler, kwok's fake nodes, KEDA), and what the tests need
// of it: its API as the admin, Helm pointed at it, and a wait for a condition.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { STATE_DIR, clusterEnv } from './cluster.js';

const API_PORT = 16443;
const PKI = `${STATE_DIR}/k8s/pki`;
export const KUBECONFIG = `${STATE_DIR}/k8s/kubeconfig`;

/**
 * Whether the control plane's binaries are built (`scripts/infra install k8s`, long the first time),
 * or IMG2IMG_K8S=on asks for the build. Without either the Kubernetes tests are skipped, and say so.
 */
export function k8sWanted(): boolean {
  if (process.env.IMG2IMG_K8S === 'on') return true;
  if (process.env.IMG2IMG_K8S === 'off') return false;
  return spawnSync('bash', ['scripts/infra', 'bin', 'k8s'], { stdio: 'ignore' }).status === 0;
}

/** scripts/infra for the k8s part, on the cluster suite's ports and state folder. */
export function infraK8s(command: 'up' | 'down' | 'install'): void {
  execFileSync('bash', ['scripts/infra', command, 'k8s'], { env: { ...process.env, ...clusterEnv }, stdio: 'inherit' });
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; uid?: string; ownerReferences?: unknown[] };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

interface Answer<T> {
  status: number;
  body: T;
}

/** One request to the API server as its admin (client certificate); JSON in and out. */
export function api<T = KubeObject>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<Answer<T>> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: API_PORT,
        method,
        path,
        ca: readFileSync(`${PKI}/ca.crt`),
        cert: readFileSync(`${PKI}/admin.crt`),
        key: readFileSync(`${PKI}/admin.key`),
        headers: { accept: 'application/json', ...(body === undefined ? {} : { 'content-type': contentType }) },
        timeout: 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, body: (text ? JSON.parse(text) : {}) as T });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body));
  });
}

/** GET that must succeed; null for a 404. */
export async function get<T = KubeObject>(path: string): Promise<T | null> {
  const { status, body } = await api<T>('GET', path);
  if (status === 404) return null;
  if (status >= 400) throw new Error(`GET ${path}: ${status} ${JSON.stringify(body)}`);
  return body;
}

export async function list(path: string): Promise<KubeObject[]> {
  return ((await get<{ items: KubeObject[] }>(path))?.items ?? []);
}

/** Polls `probe` every `everyMs` until it returns a value other than undefined; the value. */
export async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

let helmPath: string | undefined;

/** Helm (built by scripts/infra) against the control plane; status, stdout and stderr. */
export function helm(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  helmPath ??= execFileSync('bash', ['scripts/infra', 'bin', 'helm'], { encoding: 'utf8' }).trim();
  const result = spawnSync(helmPath, ['--kubeconfig', KUBECONFIG, ...args], { encoding: 'utf8', timeout: 180_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Helm that must succeed: its stdout. */
export function helmOk(...args: string[]): string {
  const result = helm(...args);
  if (result.status !== 0) throw new Error(`helm ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
  return result.stdout;
}

/** The collection path of an object's kind in a namespace (the kinds the chart and KEDA make). */
export function collection(apiVersion: string, kind: string, namespace: string): string {
  const plural = `${kind.toLowerCase()}${kind.endsWith('s') ? 'es' : 's'}`.replace(/ys$/, 'ies');
  const group = apiVersion === 'v1' ? '/api/v1' : `/apis/${apiVersion}`;
  return `${group}/namespaces/${namespace}/${plural}`;
}
