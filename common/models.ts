// model_names.txt: one model per line, `name` or `name source`, then optionally
// `tuning=NAME` (the runner's GPU tuning, e.g. the opt-in `fast`: one of common/tunings.json)
// and `verify=off|spot:P|all:2` (how results of remote workers are checked); `#` starts a comment.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

export const MODEL_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export interface ModelEntry {
  name: string;
  /** A local diffusers folder or a Hugging Face repo id from the offline cache; absent for built-ins. */
  source?: string;
  /** The runner's GPU tuning (diffusion-py/img2img_runner/tuning.py TUNINGS); absent: the runner's default. */
  tuning?: string;
  /** How results are verified on distinct workers; absent: off. */
  verify?: VerifyPolicy;
}

/** spot: a fraction of jobs, chosen at random, also runs on a second worker; all: every job runs on two. */
export type VerifyPolicy = { kind: 'off' } | { kind: 'spot'; fraction: number } | { kind: 'all' };

export function parseVerifyPolicy(text: string): VerifyPolicy {
  if (text === 'off') return { kind: 'off' };
  if (text === 'all:2') return { kind: 'all' };
  const spot = /^spot:(0(\.\d+)?|1(\.0+)?)$/.exec(text);
  if (spot) return { kind: 'spot', fraction: Number(spot[1]) };
  throw new Error(`verify must be off, spot:P (0 <= P <= 1) or all:2, not "${text}"`);
}

/** The runner's tunings (diffusion-py/img2img_runner/tuning.py TUNINGS; a runner test keeps the two equal). */
export const TUNINGS: readonly string[] = JSON.parse(readFileSync(new URL('./tunings.json', import.meta.url), 'utf8')).tunings;

export function parseModelNames(text: string, file = 'model_names.txt'): ModelEntry[] {
  const entries: ModelEntry[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const fields = line.split(/\s+/);
    const where = `${file}:${index + 1}`;
    const take = (key: string) => {
      const found = fields.filter((field) => field.startsWith(`${key}=`));
      if (found.length > 1) throw new Error(`${where}: ${key}= is given twice`);
      if (found.length) fields.splice(fields.indexOf(found[0]!), 1);
      return found[0]?.slice(key.length + 1);
    };
    const verifyField = take('verify');
    const tuning = take('tuning');
    // Checked here, not only by the runner: a runner refusing its tuning would be restarted with backoff forever.
    if (tuning !== undefined && !TUNINGS.includes(tuning)) throw new Error(`${where}: tuning "${tuning}" must be one of ${TUNINGS.join(', ')}`);
    const [name = '', source, ...rest] = fields;
    let verify: VerifyPolicy | undefined;
    try {
      verify = verifyField === undefined ? undefined : parseVerifyPolicy(verifyField);
    } catch (error) {
      throw new Error(`${where}: ${(error as Error).message}`);
    }
    if (!MODEL_NAME.test(name)) throw new Error(`${where}: model name "${name}" must match ${MODEL_NAME.source}`);
    if (rest.length) throw new Error(`${where}: expected "name [source] [tuning=name] [verify=policy]", got "${line}"`);
    if (entries.some((entry) => entry.name === name)) throw new Error(`${where}: model "${name}" is listed twice`);
    entries.push({ name, ...(source ? { source } : {}), ...(tuning ? { tuning } : {}), ...(verify && verify.kind !== 'off' ? { verify } : {}) });
  });
  if (!entries.length) throw new Error(`${file}: lists no models`);
  return entries;
}

export async function readModelNames(path: string): Promise<ModelEntry[]> {
  return parseModelNames(await readFile(path, 'utf8'), path);
}
