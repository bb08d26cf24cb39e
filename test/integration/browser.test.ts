// The two pages in a real browser: Debian's Chromium driven by puppeteer-core, against the API
// and a consumer in this process (the `tiny` model on CPU) and the real Kafka and MinIO.
// Swagger UI uploads an image with "Try it out", its fields as a person edits them; the web page
// runs a job to its result (shown with its seed and parameters), runs it again (same seed, new
// seed), copies it as a curl command that a shell then runs, shows the live previews of a job
// that asks for them, shows a queued job's place in the queue, cancels it, keeps the jobs over a reload and shows the API's own refusals; with keys on,
// both take a Bearer key, and the page lists the key's jobs from GET /api/jobs. No page may
// request anything but the API's origin, and the browser could not reach anything else anyway.
// Screenshots go to test-results/browser/ (TEST_OUTPUT_DIR).
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Browser, Page, Viewport } from 'puppeteer-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KeyStore } from '../../common/keys.js';
import { ObjectStore } from '../../common/storage.js';
import type { Consumer } from '../../consumer/consumer.js';
import { json, pngImage, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { launchBrowser, outputDir, tabTo, watch, type Watch } from '../helpers/browser.js';
import { pngOf, startTestConsumer, waitFor } from '../helpers/consumer.js';
import { uniqueName } from '../helpers/env.js';

const DESKTOP: Viewport = { width: 1280, height: 900 };
const PHONE: Viewport = { width: 390, height: 844, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };
const SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="red"/></svg>';

const started = Date.now();
let api: TestApi;
let consumer: Consumer | undefined;
let browser: Browser;
let shots: string;
let files: string;
const watches: Watch[] = [];

/** A new tab on `path`, every request and problem of it recorded. */
async function open(path: string, base = api.url, viewport = DESKTOP): Promise<Page> {
  const page = await browser.newPage();
  await page.setViewport(viewport);
  watches.push(watch(page, new URL(base).origin));
  await page.goto(`${base}${path}`, { waitUntil: 'networkidle0' });
  return page;
}

/** Sets the page's file input, as a drop or the file dialog would. */
const choose = async (page: Page, file: string) => (await page.$('input#image'))!.uploadFile(join(files, file));
const text = (page: Page, selector: string) => page.$eval(selector, (element) => element.textContent ?? '');
/** The job's parameters as the page lists them, by field name. */
const shownParams = (page: Page) =>
  page.$$eval('#job-params dd', (details) => Object.fromEntries(details.map((detail) => [(detail as HTMLElement).dataset.field, detail.textContent])));

const SUBMIT = '#operations-jobs-submitJob'; // Swagger UI names an operation's block by its operationId

/** Opens "Try it out" on POST /api/diffusion: the fields as the document prefills them. */
async function tryItOut(page: Page): Promise<void> {
  await page.click(`${SUBMIT} .opblock-summary-control`);
  await (await page.waitForSelector(`${SUBMIT} .try-out__btn`))!.click();
  await page.waitForSelector(`${SUBMIT} .execute`);
}

/** Replaces the text of a query parameter's input, as a person would: select it all, type. */
async function editParameter(page: Page, name: string, value: string): Promise<void> {
  const input = (await page.$(`${SUBMIT} tr[data-param-name="${name}"][data-param-in="query"] input`))!;
  await input.click({ clickCount: 3 });
  await input.type(value);
}

/** Chooses the image and presses Execute. Returns the answer Swagger UI shows and the request it sent. */
async function execute(page: Page): Promise<{ status: string; body: string; answer: Record<string, any>; url: URL; form: string }> {
  await (await page.waitForSelector(`${SUBMIT} input[type=file]`))!.uploadFile(join(files, 'photo.png'));
  const answered = page.waitForResponse((response) => response.request().method() === 'POST' && response.url().includes('/api/diffusion'));
  await page.click(`${SUBMIT} .execute`);
  const response = await answered;
  const answer = (await response.json()) as Record<string, any>;
  // The table may still show an earlier answer: wait until it shows this one (its job id, if any).
  const id: string = answer.id ?? '';
  const row = `${SUBMIT} .live-responses-table tr.response`;
  await page.waitForFunction(
    (row, status, id) =>
      document.querySelector(`${row} .response-col_status`)?.textContent?.trim() === status &&
      document.querySelector(`${row} .response-col_description`)?.textContent?.includes(id),
    {},
    row,
    String(response.status()),
    id,
  );
  return {
    status: (await text(page, `${row} .response-col_status`)).trim(),
    body: await text(page, `${row} .response-col_description`),
    answer,
    url: new URL(response.url()),
    form: (await response.request().fetchPostData()) ?? '',
  };
}

/** What a job ran with: everything "run again" and "copy as curl" must reproduce. */
const settings = ({ model_name, priority, params, width, height }: Record<string, any>) => ({ model_name, priority, params, width, height });

/** After a press that submits: the id of the new job the page follows, once its parameters are shown. */
async function nextJob(page: Page, previous: string): Promise<string> {
  await page.waitForFunction(
    (id) => document.querySelector('#job-id')?.textContent !== id && !(document.querySelector('#job-params') as HTMLElement).hidden,
    {},
    previous,
  );
  return text(page, '#job-id');
}

const jobOf = async (base: string, id: string, headers: Record<string, string> = {}) => json(await fetch(`${base}/api/jobs/${id}`, { headers }));

/** Runs a command line the page copied, as a shell would, in a folder where input.png is photo.png. */
async function runCopied(command: string, env: Record<string, string> = {}): Promise<Record<string, any>> {
  const dir = await mkdtemp(join(tmpdir(), 'curl-'));
  try {
    await copyFile(join(files, 'photo.png'), join(dir, 'input.png'));
    const { http_proxy, HTTP_PROXY, all_proxy, ALL_PROXY, ...inherited } = process.env; // the API is on loopback
    const { stdout } = await promisify(execFile)('bash', ['-c', command], { cwd: dir, env: { ...inherited, ...env } });
    return JSON.parse(stdout) as Record<string, any>;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The names of a multipart body's fields. */
const formFieldNames = (body: string) => [...body.matchAll(/Content-Disposition: form-data; name="([^"]+)"/g)].map((match) => match[1]);

/** What the API itself answers to an image, for comparing with what the page shows. */
async function apiRefusal(image: Buffer, filename: string): Promise<string> {
  const response = await postJob(api.url, { image, filename, query: { model_name: 'tiny', prompt: 'a refusal' } });
  expect(response.status).toBeGreaterThanOrEqual(400);
  return (await json(response)).error.message;
}

beforeAll(async () => {
  api = await startTestApi();
  consumer = await startTestConsumer(api.config);
  browser = await launchBrowser();
  shots = await outputDir('browser');
  files = await mkdtemp(join(tmpdir(), 'browser-'));
  await writeFile(join(files, 'photo.png'), await pngOf(256, 192));
  await writeFile(join(files, 'second.png'), await pngOf(128, 128, 2));
  await writeFile(join(files, 'vector.svg'), SVG);
  await writeFile(join(files, 'huge.png'), await pngImage(1100, 1100)); // over tiny's 1 Mi pixels
}, 120_000);

afterEach(() => {
  // The one rule for every page: nothing but the API's own origin, and nothing the CSP refused.
  for (const record of watches) {
    expect(record.elsewhere()).toEqual([]);
    expect(record.problems).toEqual([]);
  }
});

afterAll(async () => {
  await browser?.close();
  await consumer?.stop();
  await api?.close();
  if (files) await rm(files, { recursive: true, force: true });
  console.log(`browser suite: ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${shots}`);
});

describe('Swagger UI at /docs', () => {
  it('lists the operations, and "Try it out" on POST /api/diffusion with a file upload answers 202', async () => {
    const page = await open('/docs');
    await page.waitForSelector('.opblock');
    const paths = await page.$$eval('.opblock-summary-path', (elements) => elements.map((element) => element.textContent!.replace(/\u200b/g, '')));
    expect(paths).toEqual(expect.arrayContaining(['/api/diffusion', '/api/jobs/{id}', '/api/jobs/{id}/events', '/api/results/{id}', '/api/models']));
    await page.screenshot({ path: join(shots, 'docs.png') });

    await tryItOut(page);
    const { status, body, url, form } = await execute(page);
    expect(status, body).toBe('202');
    expect(body).toContain('"status": "queued"');
    // What a person who changed nothing sends: the model, the example prompt and the priority;
    // no seed (it would repeat one image), no negative prompt, no parameter the model might not take.
    expect([...url.searchParams.keys()].sort()).toEqual(['model_name', 'priority', 'prompt']);
    expect(formFieldNames(form)).toEqual(['image']);
    await page.close();
  });

  it('"Try it out" takes edited fields: the job is recorded with them, and with a seed of its own', async () => {
    const page = await open('/docs');
    await page.waitForSelector('.opblock');
    await tryItOut(page);
    await editParameter(page, 'prompt', 'a harbour in the fog');
    await editParameter(page, 'steps', '4');
    const { status, body, answer, url } = await execute(page);
    expect(status, body).toBe('202');
    expect(url.searchParams.get('prompt')).toBe('a harbour in the fog');
    expect(url.searchParams.has('seed')).toBe(false);

    const job = await json(await fetch(`${api.url}/api/jobs/${answer.id}`));
    const { models } = await json(await fetch(`${api.url}/api/models`));
    expect(job.params).toMatchObject({ prompt: 'a harbour in the fog', steps: 4, negative_prompt: null, strength: models[0].defaults.strength });
    // No seed was given, so each job draws its own: a second one with the same fields gets another.
    const { answer: again } = await execute(page);
    const second = await json(await fetch(`${api.url}/api/jobs/${again.id}`));
    expect(second.params.steps).toBe(4);
    expect(second.params.seed).not.toBe(job.params.seed);
    await page.close();
  });
});

describe('the web page at /', () => {
  let page: Page;
  let finished: string;
  let again: string;
  let reseeded: string;
  let previewed: string;
  let canceled: string;

  it('takes an image and a prompt from the keyboard alone, follows the job to 100% and shows the result at the input’s size', async () => {
    page = await open('/');
    await page.waitForSelector('#submit:not([disabled])');
    // The form comes from the API: the model list, and tiny's own default steps from /api/models.
    expect(await page.$$eval('#model option', (options) => options.map((option) => option.textContent))).toEqual(['tiny']);
    const { models } = await json(await fetch(`${api.url}/api/models`));
    expect(await page.$eval('#steps', (input) => (input as HTMLInputElement).value)).toBe(String(models[0].defaults.steps));
    expect(await text(page, '#model-info')).toMatch(/^\d+ queued, \d+ running \(\d+ of them at normal\)(; about [\d.]+ jobs a second)?; takes images of 8 to \d+ px a side/);

    // Chooser interception is on before the focus gets there: a Space that raced its enabling
    // opened an unintercepted chooser once (1 run in 5), and the wait timed out.
    const chooserOpened = page.waitForFileChooser();
    await tabTo(page, '#image');
    await page.keyboard.press('Space');
    const chooser = await chooserOpened;
    await chooser.accept([join(files, 'photo.png')]);
    await page.waitForFunction(() => document.querySelector('#preview-info')?.textContent?.includes('256 × 192 px'));
    await tabTo(page, '#prompt');
    await page.keyboard.type('a lighthouse at dusk');
    await tabTo(page, '#submit');
    await page.keyboard.press('Enter');

    await page.waitForFunction(() => document.querySelector('#job-state')?.getAttribute('data-status') === 'succeeded', { timeout: 60_000 });
    expect(await page.$eval('#job-progress', (bar) => (bar as HTMLProgressElement).value)).toBe(1);
    expect(await text(page, '#job-steps')).toBe('100%');
    await page.waitForFunction(() => (document.querySelector('#job-output') as HTMLImageElement | null)?.naturalWidth);
    const size = await page.$eval('#job-output', (image) => [(image as HTMLImageElement).naturalWidth, (image as HTMLImageElement).naturalHeight]);
    expect(size).toEqual([256, 192]);
    await page.waitForFunction(() => document.querySelector('#job-time')?.textContent?.startsWith('Took '));
    expect(await page.$eval('#job-download', (link) => (link as HTMLAnchorElement).download)).toMatch(/\.png$/);
    finished = await text(page, '#job-id');
    expect(await text(page, '#job-result figcaption')).toMatch(/^Result · /);
    // What the job ran with, as the API recorded it: the seed it drew, and tiny's defaults.
    const { params } = await json(await fetch(`${api.url}/api/jobs/${finished}`));
    expect(await shownParams(page)).toEqual({
      model_name: 'tiny',
      prompt: 'a lighthouse at dusk',
      negative_prompt: 'none',
      strength: String(params.strength),
      steps: String(params.steps),
      guidance_scale: String(params.guidance_scale),
      seed: String(params.seed),
      size: '256 × 192 px',
    });
    await page.screenshot({ path: join(shots, 'page.png'), fullPage: true });
  });

  it('runs the job again: with its seed the same job (parameters, seed, the input at full size); with a new seed another seed', async () => {
    const original = await jobOf(api.url, finished);
    await page.waitForSelector('#job-again:not([disabled])');
    await page.click('#job-again');
    again = await nextJob(page, finished);
    expect(settings(await jobOf(api.url, again))).toEqual(settings(original));

    await page.waitForSelector('#job-again-new:not([disabled])');
    await page.click('#job-again-new');
    reseeded = await nextJob(page, again);
    const other = await jobOf(api.url, reseeded);
    expect(other.params.seed).not.toBe(original.params.seed);
    expect(settings({ ...other, params: { ...other.params, seed: original.params.seed } })).toEqual(settings(original));
    await page.waitForFunction(() => document.querySelector('#job-state')?.getAttribute('data-status') === 'succeeded', { timeout: 60_000 });
    expect(await text(page, '#job-source figcaption')).toBe('Input');
    expect(await text(page, '#job-result figcaption')).toMatch(/^Result · /);
  });

  it('copies the job as curl: the command holds its parameters and seed, and run by a shell it submits the same job', async () => {
    await browser.defaultBrowserContext().overridePermissions(api.url, ['clipboard-read', 'clipboard-sanitized-write']);
    await page.bringToFront();
    await page.click('#job-curl');
    await page.waitForFunction(() => document.querySelector('#job-curl-info')?.textContent);
    const command = await page.$eval('#job-curl-text', (area) => (area as HTMLTextAreaElement).value);
    expect(await text(page, '#job-curl-info')).toBe('Copied to the clipboard:');
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(command);

    const shown = await jobOf(api.url, reseeded);
    const { params } = shown;
    const url = new URL(/'(http[^']+)'/.exec(command)![1]!);
    expect(Object.fromEntries(url.searchParams)).toEqual({
      model_name: 'tiny',
      priority: 'normal',
      prompt: 'a lighthouse at dusk',
      strength: String(params.strength),
      steps: String(params.steps),
      guidance_scale: String(params.guidance_scale),
      seed: String(params.seed),
    });
    expect(command).toContain('-F image=@input.png');
    expect(command).not.toContain('Authorization'); // no key in this page
    const accepted = await runCopied(command);
    expect(accepted.status).toBe('queued');
    expect(settings(await jobOf(api.url, accepted.id))).toEqual(settings(shown));
    // Whatever runs now ends before the consumer stops, so the next test's queue is its own.
    await waitFor(async () => ((await jobOf(api.url, accepted.id)).status === 'succeeded' ? true : undefined), 60_000, 'the copied job');
    await waitFor(async () => ((await jobOf(api.url, again)).status === 'succeeded' ? true : undefined), 60_000, 'the job run again');
  });

  it('shows the previews of a job that asks for them while it runs, captioned Preview, and then only the result', async () => {
    await page.$eval('#prompt', (input) => ((input as HTMLTextAreaElement).value = ''));
    await page.type('#prompt', 'a lighthouse, previewed');
    for (const [field, value] of [['steps', '150'], ['preview_every', '5']]) {
      await page.$eval(`#${field}`, (input) => ((input as HTMLInputElement).value = ''));
      await page.type(`#${field}`, value!);
    }
    await page.click('#submit');
    previewed = await nextJob(page, reseeded);
    await page.waitForFunction(() => !(document.querySelector('#job-live') as HTMLElement).hidden && (document.querySelector('#job-live-image') as HTMLImageElement).naturalWidth > 0, { timeout: 60_000 });
    expect(await text(page, '#job-live-caption')).toMatch(/^Preview at step \d+ of \d+$/);
    expect(await shownParams(page)).toMatchObject({ steps: '150', preview_every: 'every 5 steps' });
    expect(await page.$eval('#job-live-image', (image) => image.getAttribute('src'))).toMatch(/^blob:/);
    await page.screenshot({ path: join(shots, 'page-preview.png'), fullPage: true });
    await page.waitForFunction(() => document.querySelector('#job-state')?.getAttribute('data-status') === 'succeeded', { timeout: 60_000 });
    await page.waitForSelector('#job-result:not([hidden])');
    expect(await page.$eval('#job-live', (figure) => (figure as HTMLElement).hidden)).toBe(true);
    expect(await text(page, '#job-result figcaption')).toMatch(/^Result · /);
    // After the run the preview is gone, as the API says.
    expect((await fetch(`${api.url}/api/jobs/${previewed}/preview`)).status).toBe(404);
    // Reproducing the job asks for previews too.
    await page.click('#job-curl');
    await page.waitForFunction(() => (document.querySelector('#job-curl-text') as HTMLTextAreaElement).value.includes('preview_every=5'));
  });

  it('shows a queued job’s place in the queue and its estimated start, then cancels it', async () => {
    await consumer!.stop(); // nothing takes the jobs now, so they stay queued
    consumer = undefined;
    for (const prompt of ['waiting one', 'waiting two']) expect((await postJob(api.url, { query: { model_name: 'tiny', prompt } })).status).toBe(202);
    await choose(page, 'second.png');
    await page.$eval('#prompt', (input) => ((input as HTMLTextAreaElement).value = ''));
    await page.type('#prompt', 'a job to cancel');
    await page.click('#submit');
    await page.waitForFunction((id) => document.querySelector('#job-id')?.textContent !== id && document.querySelector('#job-state')?.getAttribute('data-status') === 'queued', {}, previewed);
    canceled = await text(page, '#job-id');
    // The two jobs sent before it are ahead (the position is refreshed about once a second).
    await page.waitForFunction(() => document.querySelector('#job-state')?.textContent?.startsWith('Queued: 2 jobs ahead'), { timeout: 10_000 });
    const view = await jobOf(api.url, canceled);
    expect(view.queue_position).toBe(2);
    const expected = view.estimated_start_at ? /^Queued: 2 jobs ahead, (starts in about \d+ (s|min)|starts any moment)(, done in about \d+ (s|min))?$/ : /^Queued: 2 jobs ahead \(no start time estimated yet\)$/;
    expect(await text(page, '#job-state')).toMatch(expected);
    await page.screenshot({ path: join(shots, 'page-queued.png'), fullPage: true });
    await page.click('#job-cancel');
    await page.waitForFunction(() => document.querySelector('#job-state')?.getAttribute('data-status') === 'canceled');
    expect((await json(await fetch(`${api.url}/api/jobs/${canceled}`))).status).toBe('canceled');
  });

  it('keeps the jobs over a reload, newest first, with status and thumbnail', async () => {
    await page.reload({ waitUntil: 'networkidle0' });
    const listed = await page.$$eval('#jobs li', (items) =>
      items.map((item) => ({ id: (item as HTMLElement).dataset.id, status: (item as HTMLElement).dataset.status, thumb: item.querySelector('img')!.src.slice(0, 15) })),
    );
    expect(listed).toEqual([
      { id: canceled, status: 'canceled', thumb: 'data:image/jpeg' },
      { id: previewed, status: 'succeeded', thumb: 'data:image/jpeg' },
      { id: reseeded, status: 'succeeded', thumb: 'data:image/jpeg' },
      { id: again, status: 'succeeded', thumb: 'data:image/jpeg' },
      { id: finished, status: 'succeeded', thumb: 'data:image/jpeg' },
    ]);
  });

  it('reopens the finished job from the list: the input captioned Input, the result Result, its seed and parameters', async () => {
    const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('img2img.jobs')!) as { id: string; thumb: string; input: string }[]);
    const entry = stored.find((job) => job.id === finished)!;
    expect(entry.thumb, 'the list shows the result').not.toBe(entry.input);
    await page.click(`#jobs li[data-id="${finished}"] button`);
    await page.waitForFunction((id) => document.querySelector('#job-id')?.textContent === id && !(document.querySelector('#job-result') as HTMLElement).hidden, {}, finished);
    expect(await page.$eval('#job-input', (image) => image.getAttribute('src'))).toBe(entry.input);
    expect(await text(page, '#job-source figcaption')).toBe('Input');
    expect(await text(page, '#job-result figcaption')).toMatch(/^Result · /);
    await page.waitForFunction(() => (document.querySelector('#job-output') as HTMLImageElement | null)?.naturalWidth);
    const size = await page.$eval('#job-output', (image) => [(image as HTMLImageElement).naturalWidth, (image as HTMLImageElement).naturalHeight]);
    expect(size).toEqual([256, 192]);
    const { params } = await json(await fetch(`${api.url}/api/jobs/${finished}`));
    expect(await shownParams(page)).toMatchObject({ prompt: 'a lighthouse at dusk', seed: String(params.seed), steps: String(params.steps) });
  });

  it('shows the API’s own error for an SVG and for an image over the model’s limits', async () => {
    await page.type('#prompt', 'a refusal');
    for (const [file, expected] of [
      ['vector.svg', await apiRefusal(Buffer.from(SVG), 'vector.svg')],
      ['huge.png', await apiRefusal(await pngImage(1100, 1100), 'huge.png')],
    ] as const) {
      await choose(page, file);
      await page.click('#submit');
      await page.waitForFunction((message) => document.querySelector('#form-error')?.textContent?.includes(message), {}, expected);
      expect(await page.$eval('#image', (input) => input.getAttribute('aria-invalid'))).toBe('true');
    }
    expect(await text(page, '#form-error')).toMatch(/^413 image_too_large: /);
  });

  it('fits a phone-sized screen', async () => {
    const phone = await open('/', api.url, PHONE);
    await phone.waitForSelector('#submit:not([disabled])');
    expect(await phone.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    await phone.screenshot({ path: join(shots, 'page-phone.png'), fullPage: true });
    await phone.close();
  });

  it('says so when the API cannot be reached', async () => {
    const gone = await startTestApi();
    const lonely = await open('/', gone.url);
    await lonely.waitForSelector('#submit:not([disabled])');
    await gone.close();
    await choose(lonely, 'photo.png');
    await lonely.type('#prompt', 'nobody is listening');
    await lonely.click('#submit');
    await lonely.waitForFunction(() => /cannot reach the API/.test(document.querySelector('#form-error')?.textContent ?? ''));
    await lonely.close();
  });
});

describe('with API keys on', () => {
  const PEPPER = 'browser-pepper-0123456789';
  let keyed: TestApi;
  let token: string;

  beforeAll(async () => {
    keyed = await startTestApi({ AUTH: 'on', AUTH_PEPPER: PEPPER, S3_BUCKET: uniqueName('browser') });
    const keys = new KeyStore(new ObjectStore(keyed.config), PEPPER);
    ({ token } = await keys.create({ tenant: 'browser', name: 'browser-test', role: 'user', limits: { rate: null, concurrency: null } }));
  }, 60_000);
  afterAll(() => keyed?.close());

  it('Swagger UI’s Authorize takes a Bearer key, and "Try it out" then answers 202', async () => {
    const page = await open('/docs', keyed.url);
    await page.waitForSelector('.btn.authorize');
    await page.click('.btn.authorize');
    await page.type('.modal-ux input[type=text]', token);
    await page.click('.modal-ux .auth-btn-wrapper .authorize');
    await page.click('.modal-ux .btn-done');
    await page.waitForSelector('.modal-ux', { hidden: true });
    await tryItOut(page);
    const { status, body } = await execute(page);
    expect(status, body).toBe('202');
    await page.close();
  });

  it('the web page asks for the key, sends it as Bearer, and shows the 401 without it', async () => {
    const page = await open('/', keyed.url);
    await page.waitForSelector('#submit:not([disabled])');
    expect(await page.$eval('#key-row', (row) => (row as HTMLElement).hidden)).toBe(false);
    await choose(page, 'photo.png');
    await page.type('#prompt', 'a keyed lighthouse');
    await page.click('#submit');
    await page.waitForFunction(() => document.querySelector('#form-error')?.textContent?.startsWith('401 unauthorized'));
    await page.type('#api-key', token);
    await page.keyboard.press('Tab'); // the key is kept on change
    await page.click('#submit');
    await page.waitForFunction(() => document.querySelector('#job-state')?.getAttribute('data-status') === 'queued');
    expect(await page.evaluate(() => sessionStorage.getItem('img2img.key'))).toBe(token);
    await page.close();
  });

  it('with a key the list is the key’s jobs from GET /api/jobs, a page at a time; a job sent elsewhere copies as curl without the key', async () => {
    const bearer = { Authorization: `Bearer ${token}` };
    // Sent from elsewhere, and with the two above more than a page of the list.
    for (let i = 0; i < 21; i++) expect((await postJob(keyed.url, { headers: bearer, query: { model_name: 'tiny', prompt: `sent elsewhere ${i}` } })).status).toBe(202);
    const all: string[] = [];
    for (let cursor = ''; ; ) {
      const { jobs, next_cursor } = await json(await fetch(`${keyed.url}/api/jobs?limit=100${cursor && `&cursor=${cursor}`}`, { headers: bearer }));
      all.push(...jobs.map((job: { id: string }) => job.id));
      if (!next_cursor) break;
      cursor = next_cursor;
    }
    expect(all.length).toBeGreaterThan(21);

    const page = await open('/', keyed.url);
    await page.waitForSelector('#submit:not([disabled])');
    expect(await text(page, '#jobs-title')).toBe('Jobs from this browser');
    await page.type('#api-key', token);
    await page.keyboard.press('Tab');
    await page.waitForFunction(() => document.querySelector('#jobs-title')?.textContent === 'Jobs of this key');
    const ids = () => page.$$eval('#jobs li', (items) => items.map((item) => (item as HTMLElement).dataset.id));
    expect(await ids()).toEqual(all.slice(0, 20));
    expect(await page.$eval('#jobs-clear', (button) => (button as HTMLElement).hidden)).toBe(true);
    await page.click('#jobs-more');
    await page.waitForSelector('#jobs-more', { hidden: true });
    expect(await ids()).toEqual(all);

    // The newest was sent from elsewhere: this browser lacks its input, and says so.
    await page.click(`#jobs li[data-id="${all[0]}"] button`);
    await page.waitForSelector('#job-curl:not([disabled])');
    await page.waitForFunction(() => !(document.querySelector('#job-again-info') as HTMLElement).hidden);
    expect(await text(page, '#job-again-info')).toMatch(/^Run again needs this job’s input image, which this browser does not have/);
    expect(await page.$eval('#job-again', (button) => (button as HTMLButtonElement).disabled)).toBe(true);
    await page.click('#job-curl');
    await page.waitForFunction(() => document.querySelector('#job-curl-info')?.textContent);
    const command = await page.$eval('#job-curl-text', (area) => (area as HTMLTextAreaElement).value);
    expect(command).not.toContain(token);
    expect(command).toContain('-H "Authorization: Bearer $IMG2IMG_API_KEY"');
    expect(command).toContain('prompt=sent+elsewhere+20');
    const accepted = await runCopied(command, { IMG2IMG_API_KEY: token });
    expect(settings(await jobOf(keyed.url, accepted.id, bearer))).toEqual({ ...settings(await jobOf(keyed.url, all[0]!, bearer)), width: 256, height: 192 });
    await page.close();
  });
});
