// Whether a model's source can be served, checked before any job is taken for it: a folder that
// is missing or is not a diffusers pipeline of a family the runner serves would otherwise fail
// each job minutes later, when its runner starts. The consumer checks its models at start and
// writes each one's availability (models/<name>/status.json); the API reads it and refuses jobs
// for a model that is unavailable, with the reason.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { BUILT_IN_SOURCES, familyOf, REPO_ID, STAND_IN, type ModelEntry } from './models.js';
import { FAMILIES, PARAMS } from './params.js';
import type { ObjectStore } from './storage.js';

export type SourceCheck = { ok: true } | { ok: false; reason: string };

/** Where the runner finds a repo id's files: the hub cache of huggingface_hub (HF_HUB_CACHE, else HF_HOME/hub). */
export function hubCache(env: NodeJS.ProcessEnv = process.env): string {
  return env.HF_HUB_CACHE ?? join(env.HF_HOME ?? join(homedir(), '.cache', 'huggingface'), 'hub');
}

/** The newest cached snapshot of a repo id that holds a model_index.json, if any. */
function cachedSnapshot(repo: string, env: NodeJS.ProcessEnv): string | undefined {
  const snapshots = join(hubCache(env), `models--${repo.replace('/', '--')}`, 'snapshots');
  if (!existsSync(snapshots)) return undefined;
  return readdirSync(snapshots)
    .map((revision) => join(snapshots, revision))
    .filter((folder) => existsSync(join(folder, 'model_index.json')))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
}

/** The pipelines some family serves, and the family each belongs to. */
const SERVED = new Map(Object.entries(FAMILIES).flatMap(([family, rules]) => rules.pipelines.map((pipeline) => [pipeline, family] as const)));

function checkFolder(entry: ModelEntry, folder: string): SourceCheck {
  const index = join(folder, 'model_index.json');
  if (!existsSync(index)) return { ok: false, reason: `${folder} has no model_index.json: it is not a diffusers pipeline folder (one that pipeline.save_pretrained writes)` };
  let manifest: Record<string, unknown>;
  try {
    manifest = JSON.parse(readFileSync(index, 'utf8'));
  } catch (error) {
    return { ok: false, reason: `${index} cannot be read as JSON: ${(error as Error).message}` };
  }
  const pipeline = String(manifest._class_name);
  if (!SERVED.has(pipeline)) {
    return { ok: false, reason: `${folder} holds a ${pipeline}, which no family of the runner serves (it serves ${[...SERVED.keys()].join(', ')})` };
  }
  // A component named in the manifest (["diffusers", "UNet2DConditionModel"]) lives in its own folder.
  const missing = Object.entries(manifest)
    .filter(([name, value]) => !name.startsWith('_') && Array.isArray(value) && value[1] !== null && value[1] !== undefined)
    .map(([name]) => name)
    .filter((name) => !existsSync(join(folder, name)));
  if (missing.length) return { ok: false, reason: `${folder} lacks the component folder${missing.length > 1 ? 's' : ''} ${missing.join(', ')} that its model_index.json names` };
  const family = familyOf({ name: entry.name, source: folder });
  if (entry.family && family !== entry.family && !(entry.family === 'flux-schnell' && family === 'flux')) {
    return { ok: false, reason: `model_names.txt says family=${entry.family}, but ${folder} holds a ${pipeline} (family ${family})` };
  }
  return { ok: true };
}

/** Whether the runner can load this model's source: checked on this machine's files, in milliseconds. */
export function checkSource(entry: ModelEntry, env: NodeJS.ProcessEnv = process.env): SourceCheck {
  const { source } = entry;
  if (source === undefined) {
    return PARAMS.model_defaults[entry.name] ? { ok: true } : { ok: false, reason: `model ${entry.name} has no source: give a diffusers folder or a Hugging Face repo id in model_names.txt` };
  }
  if (BUILT_IN_SOURCES[source] || STAND_IN.test(source)) return { ok: true };
  const folder = resolve(source.replace(/^~(?=\/)/, homedir()));
  if (existsSync(folder)) return statSync(folder).isDirectory() ? checkFolder(entry, folder) : { ok: false, reason: `${folder} is a file, not a diffusers pipeline folder` };
  if (!REPO_ID.test(source)) return { ok: false, reason: `model folder ${folder} does not exist` };
  const snapshot = cachedSnapshot(source, env);
  if (!snapshot) {
    return {
      ok: false,
      reason:
        `${source} is neither a folder here (${folder}) nor a model in the Hugging Face cache (${hubCache(env)}); ` +
        'nothing is downloaded from the hub: fetch it where there is internet (hf download) and copy the cache, or give a folder',
    };
  }
  return checkFolder(entry, snapshot);
}

export const ModelStatus = z.object({
  v: z.literal(1),
  name: z.string(),
  available: z.boolean(),
  /** Why the model cannot be served; null when it can. */
  reason: z.string().nullable(),
  checked_at: z.string(),
});
export type ModelStatus = z.infer<typeof ModelStatus>;

export const modelStatusKey = (name: string) => `models/${name}/status.json`;

export async function writeModelStatus(store: ObjectStore, name: string, check: SourceCheck, signal?: AbortSignal): Promise<void> {
  const status: ModelStatus = { v: 1, name, available: check.ok, reason: check.ok ? null : check.reason, checked_at: new Date().toISOString() };
  await store.put(modelStatusKey(name), JSON.stringify(status), 'application/json', signal);
}

/** The status a consumer last wrote for the model; undefined when none did yet (or it cannot be read). */
export async function readModelStatus(store: ObjectStore, name: string, signal?: AbortSignal): Promise<ModelStatus | undefined> {
  const bytes = await store.getBytes(modelStatusKey(name), signal);
  if (!bytes) return undefined;
  try {
    const parsed = ModelStatus.safeParse(JSON.parse(bytes.toString('utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
