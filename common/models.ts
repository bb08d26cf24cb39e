// model_names.txt: one model per line, `name` or `name source`; `#` starts a comment.
import { readFile } from 'node:fs/promises';

export const MODEL_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export interface ModelEntry {
  name: string;
  /** A local diffusers folder or a Hugging Face repo id from the offline cache; absent for built-ins. */
  source?: string;
}

export function parseModelNames(text: string, file = 'model_names.txt'): ModelEntry[] {
  const entries: ModelEntry[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const [name = '', source, ...rest] = line.split(/\s+/);
    const where = `${file}:${index + 1}`;
    if (!MODEL_NAME.test(name)) throw new Error(`${where}: model name "${name}" must match ${MODEL_NAME.source}`);
    if (rest.length) throw new Error(`${where}: expected "name" or "name source", got "${line}"`);
    if (entries.some((entry) => entry.name === name)) throw new Error(`${where}: model "${name}" is listed twice`);
    entries.push(source ? { name, source } : { name });
  });
  if (!entries.length) throw new Error(`${file}: lists no models`);
  return entries;
}

export async function readModelNames(path: string): Promise<ModelEntry[]> {
  return parseModelNames(await readFile(path, 'utf8'), path);
}
