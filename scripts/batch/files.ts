// The inputs of a batch: the files of a folder, which of them are images, and where each result goes.
import { access, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { extname, join, relative, resolve, sep } from 'node:path';

export const IMAGE_EXTENSIONS: readonly string[] = ['.png', '.jpg', '.jpeg', '.webp'];

export interface InputFile {
  /** Absolute path. */
  path: string;
  /** Relative to the folder, with `/` separators: what the client prints and names the result after. */
  name: string;
}

/** By extension only; the API looks at the bytes and refuses what is not really an image. */
export const isImage = (name: string) => IMAGE_EXTENSIONS.includes(extname(name).toLowerCase());

/**
 * Where each input's result goes: `<out>/<relative path>` with the extension replaced by `.png`
 * (`sub/cat.jpg` gives `sub/cat.png`). Inputs that would share a result (`cat.jpg` and `cat.png`;
 * also `Cat.png` and `cat.jpg`, for case-insensitive file systems), or whose result would take
 * another's name, keep their extension instead (`cat.jpg.png`, `cat.png.png`). Names that keep
 * their extension are as distinct as the inputs, so each round settles at least one clash and
 * no two inputs of a batch share a result.
 */
export function outputPaths(out: string, names: readonly string[]): Map<string, string> {
  const kept = (name: string) => `${name}.png`;
  const chosen = new Map(names.map((name) => [name, `${name.slice(0, name.length - extname(name).length)}.png`]));
  for (;;) {
    const uses = new Map<string, number>();
    for (const result of chosen.values()) uses.set(result.toLowerCase(), (uses.get(result.toLowerCase()) ?? 0) + 1);
    const clashing = names.filter((name) => chosen.get(name) !== kept(name) && uses.get(chosen.get(name)!.toLowerCase())! > 1);
    if (!clashing.length) break;
    for (const name of clashing) chosen.set(name, kept(name));
  }
  return new Map([...chosen].map(([name, result]) => [name, join(out, ...result.split('/'))]));
}

/** Marks a folder of results, so that a later batch over a folder holding it never reads them as inputs. */
export const RESULTS_MARKER = '.img2img-batch-results';

export async function markResults(out: string): Promise<void> {
  await mkdir(out, { recursive: true });
  await writeFile(join(out, RESULTS_MARKER), 'Results of `npm run batch`: batch runs over a parent folder do not read this folder.\n');
}

const isResults = (dir: string) => access(join(dir, RESULTS_MARKER)).then(() => true, () => false);
const linksToFile = async (path: string) => (await stat(path).catch(() => undefined))?.isFile() ?? false;

/**
 * Every file of `folder` (and of its subfolders when recursive), sorted by name. Subfolders
 * reached through symbolic links are not followed (no loops), and results folders (this run's
 * --out, or any marked by an earlier run) are never read, so results are not taken for inputs.
 */
export async function listFiles(folder: string, options: { recursive: boolean; exclude?: string }): Promise<InputFile[]> {
  const root = resolve(folder);
  const exclude = options.exclude === undefined ? undefined : resolve(options.exclude);
  const skip = async (dir: string) => !options.recursive || dir === exclude || (await isResults(dir));
  const files: InputFile[] = [];
  const visit = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (!(await skip(path))) await visit(path);
      } else if (entry.name !== RESULTS_MARKER && (entry.isFile() || (entry.isSymbolicLink() && (await linksToFile(path))))) {
        files.push({ path, name: relative(root, path).split(sep).join('/') });
      }
    }
  };
  await visit(root);
  return files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
