// model_names.txt: one model per line, `name` or `name source`, then optionally
// `tuning=NAME` (the runner's GPU tuning, e.g. the opt-in `fast`: one of common/tunings.json),
// `verify=off|spot:P|all:2` (how results of remote workers are checked) and `family=NAME` (the
// model's family in common/params.json, when the folder is not readable here); `#` starts a comment.
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { FAMILIES, PARAMS } from './params.js';

export const MODEL_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const DTYPES = ['float16', 'bfloat16', 'float32'];

export interface ModelEntry {
  name: string;
  /** A local diffusers folder or a Hugging Face repo id from the offline cache; absent for built-ins. */
  source?: string;
  /** The runner's GPU tuning (diffusion-py/img2img_runner/tuning.py TUNINGS); absent: the runner's default. */
  tuning?: string;
  /** How results are verified on distinct workers; absent: off. */
  verify?: VerifyPolicy;
  /** The model's family as model_names.txt gives it; absent: found from the source (familyOf). */
  family?: string;
  /** The weights' precision on a GPU (`dtype=`); absent: the family's. */
  dtype?: 'float16' | 'bfloat16' | 'float32';
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
    const family = take('family');
    const dtype = take('dtype');
    if (dtype !== undefined && !DTYPES.includes(dtype)) throw new Error(`${where}: dtype "${dtype}" must be one of ${DTYPES.join(', ')}`);
    if (family !== undefined && !FAMILIES[family]) throw new Error(`${where}: family "${family}" must be one of ${Object.keys(FAMILIES).join(', ')}`);
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
    if (rest.length) throw new Error(`${where}: expected "name [source] [tuning=name] [verify=policy] [family=name] [dtype=name]", got "${line}"`);
    if (entries.some((entry) => entry.name === name)) throw new Error(`${where}: model "${name}" is listed twice`);
    entries.push({ name, ...(source ? { source } : {}), ...(tuning ? { tuning } : {}), ...(verify && verify.kind !== 'off' ? { verify } : {}), ...(family ? { family } : {}), ...(dtype ? { dtype: dtype as ModelEntry['dtype'] } : {}) });
  });
  if (!entries.length) throw new Error(`${file}: lists no models`);
  return entries;
}

/** A Hugging Face repo id (`org/name`), which the runner loads from the local cache only. */
export const REPO_ID = /^[\w.-]+\/[\w.-]+$/;

/**
 * The file's models, a relative folder resolved against the file's own folder (wherever the
 * processes run from); a relative source that is no folder there and has the form of a repo id
 * stays a repo id.
 */
export async function readModelNames(path: string): Promise<ModelEntry[]> {
  return parseModelNames(await readFile(path, 'utf8'), path).map((entry) => {
    const { source } = entry;
    if (!source || isAbsolute(source) || BUILT_IN_SOURCES[source] || STAND_IN.test(source) || source.startsWith('~/')) return entry;
    const folder = resolve(dirname(path), source);
    return existsSync(folder) || !REPO_ID.test(source) ? { ...entry, source: folder } : entry;
  });
}

/** The built-in sources and their families (the runner's random-weight benchmark models). */
export const BUILT_IN_SOURCES: Record<string, string> = { 'sd15-arch': 'sd', 'sdxl-arch': 'sdxl', 'flux-arch': 'flux', 'sd35-arch': 'sd3' };
/** Test and benchmark sources that answer as a Stable Diffusion pipeline would. */
export const STAND_IN = /^(standin|liar):/;

/**
 * A model's family: model_names.txt's `family=`, else the built-in model's or source's, else the
 * pipeline class of the folder's model_index.json (FLUX.1 without a guidance embedding is
 * schnell); null when none of these tells (a hub id, a folder this process cannot read): the
 * general rules then apply here, and the runner checks its own.
 */
export function familyOf(entry: ModelEntry): string | null {
  if (entry.family) return entry.family;
  if (!entry.source) return PARAMS.model_defaults[entry.name]?.family ?? null;
  if (BUILT_IN_SOURCES[entry.source]) return BUILT_IN_SOURCES[entry.source]!;
  if (STAND_IN.test(entry.source)) return 'sd';
  const readJson = (path: string): Record<string, unknown> | undefined => {
    try {
      return JSON.parse(readFileSync(join(entry.source!, path), 'utf8'));
    } catch {
      return undefined;
    }
  };
  const pipeline = readJson('model_index.json')?._class_name;
  const found = Object.entries(FAMILIES).find(([, family]) => family.pipelines.includes(String(pipeline)))?.[0];
  if (found === 'flux' && readJson('transformer/config.json')?.guidance_embeds === false) return 'flux-schnell';
  return found ?? null;
}
