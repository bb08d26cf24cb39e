// The command line of the batch client, parsed once with commander into plain options.
import { resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { PRIORITIES, type Priority } from '../../common/topics.js';

export const DEFAULT_API = 'http://127.0.0.1:8000';

/** What each job asks for; undefined fields are left to the API's defaults. */
export interface JobRequest {
  model: string;
  prompt: string;
  priority: Priority;
  negativePrompt?: string;
  strength?: number;
  steps?: number;
  guidanceScale?: number;
  seed?: number;
}

export interface BatchOptions {
  folder: string;
  api: string;
  /** --api-key, else IMG2IMG_API_KEY; none: the API runs without keys. */
  apiKey?: string;
  request: JobRequest;
  concurrency: number;
  recursive: boolean;
  wait: boolean;
  /** Only with wait: where results are saved. */
  out?: string;
}

/** A command line the client cannot run with; exit status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

function number(what: string, integer = false, min = -Infinity) {
  return (text: string) => {
    const value = Number(text);
    const ok = text.trim() !== '' && Number.isFinite(value) && (!integer || Number.isInteger(value)) && value >= min;
    if (!ok) throw new InvalidArgumentError(`${what} must be ${integer ? 'an integer' : 'a number'}${min > -Infinity ? ` of at least ${min}` : ''}`);
    return value;
  };
}

function apiUrl(text: string): string {
  try {
    const url = new URL(text);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error();
  } catch {
    throw new InvalidArgumentError('must be an http(s) URL such as http://127.0.0.1:8000');
  }
  return text.replace(/\/+$/, '');
}

export function program(): Command {
  return new Command('batch')
    .description('Send every image of a folder (png, jpg, jpeg, webp) to the img2img API and print an access link for each.')
    .argument('<folder>', 'the folder of input images')
    .requiredOption('--model <name>', 'model_name: a model the API serves (GET /api/models)')
    .requiredOption('--prompt <text>', 'what the images should become')
    .addOption(new Option('--priority <level>', 'queue priority').choices(PRIORITIES).default('normal'))
    .option('--negative-prompt <text>', 'what the images should not show')
    .option('--strength <0..1>', 'how far to move from the input image (API default 0.6)', number('--strength'))
    .option('--steps <n>', 'denoising steps (API default: the model’s own)', number('--steps', true, 1))
    .option('--guidance-scale <n>', 'classifier-free guidance (API default 7.5)', number('--guidance-scale'))
    .option('--seed <n>', 'random seed; the API draws one when absent', number('--seed', true, 0))
    .option('--concurrency <n>', 'requests in flight at once', number('--concurrency', true, 1), 4)
    .option('--recursive', 'include images in subfolders', false)
    .option('--wait', 'wait until every job is finished, with a progress bar on stderr', false)
    .option('--out <dir>', 'with --wait: save each result as <dir>/<relative input path>.png')
    .option('--api <url>', 'the API’s base URL', apiUrl, DEFAULT_API)
    .addOption(new Option('--api-key <key>', 'an API key (npm run keys -- create), when the API needs one').env('IMG2IMG_API_KEY'))
    .exitOverride();
}

/** The parsed flags: a job's fields plus how to run the batch. */
interface Raw extends JobRequest {
  concurrency: number;
  recursive: boolean;
  wait: boolean;
  out?: string;
  api: string;
  apiKey?: string;
}

/** Parses argv (without node and the script); commander throws CommanderError for --help and bad flags. */
export function parseOptions(command: Command, argv: readonly string[]): BatchOptions {
  command.parse(argv, { from: 'user' });
  const raw = command.opts<Raw>();
  const folder = resolve(command.processedArgs[0] as string);
  const out = raw.out === undefined ? undefined : resolve(raw.out);
  if (out && !raw.wait) throw new UsageError('--out needs --wait (results exist only once the jobs are finished)');
  if (out === folder) throw new UsageError('--out must not be the input folder: the results would be read as inputs next time');
  const { model, prompt, priority, negativePrompt, strength, steps, guidanceScale, seed } = raw;
  return {
    folder,
    api: raw.api,
    apiKey: raw.apiKey,
    request: { model, prompt, priority, negativePrompt, strength, steps, guidanceScale, seed },
    concurrency: raw.concurrency,
    recursive: raw.recursive,
    wait: raw.wait,
    out,
  };
}
