// The web page: submit an image, follow the job live, run it again or copy it as curl, and list
// the jobs: the key's own from GET /api/jobs when a key is set, else this browser's.
// Fields, ranges and defaults come from the API itself (/openapi.json and /api/models), so
// this file repeats none of common/params.json. Plain browser JavaScript, no build step.

const $ = (id) => document.getElementById(id);
const KEY = 'img2img.key'; // sessionStorage: the API key, for this tab only
const JOBS = 'img2img.jobs'; // localStorage: the jobs submitted from this browser
const INPUTS = 'img2img'; // IndexedDB: their input images, for "run again" (too big for localStorage)
const MAX_JOBS = 50;
const PAGE = 20; // jobs a page of GET /api/jobs
const TERMINAL = new Set(['succeeded', 'failed', 'canceled', 'aborted', 'expired']);

// ---------------------------------------------------------------- talking to the API

/** An answer that is not 2xx, with the API's own error code and message. */
class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(`${status} ${error.code ?? 'error'}: ${error.message ?? 'the API answered without a message'}`);
    this.status = status;
    this.field = error.field;
  }
}

/** fetch with the key (if any); a network failure becomes a message a person can act on. */
async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = { ...options.headers, ...(key ? { Authorization: `Bearer ${key}` } : {}) };
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new Error(`cannot reach the API at ${location.origin} (${error.message}): is it running?`);
  }
  if (response.status === 401) showKey(true);
  if (!response.ok && response.status !== 304) throw new ApiError(response.status, await response.json().catch(() => undefined));
  return response;
}

const apiJson = async (path, options) => (await api(path, options)).json();

/** Server-Sent Events over fetch (EventSource cannot send the Authorization header). */
async function* events(path, signal, lastId) {
  const response = await api(path, { signal, headers: lastId ? { 'Last-Event-ID': lastId } : {} });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = { type: 'message', data: [], id: undefined };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split('\n');
    buffer = lines.pop();
    for (const raw of lines) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line === '') {
        if (event.data.length) yield { ...event, data: JSON.parse(event.data.join('\n')) };
        event = { type: 'message', data: [], id: undefined };
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event.type = text;
        else if (field === 'data') event.data.push(text);
        else if (field === 'id') event.id = text;
      }
    }
  }
}

// ---------------------------------------------------------------- messages

function notice(message) {
  $('notice').textContent = message ?? '';
  $('notice').hidden = !message;
}

function showKey(required) {
  $('key-row').hidden = !required && !sessionStorage.getItem(KEY);
}

/** About how long, for estimates: "20 s", "3 min". */
const roughly = (s) => (s < 90 ? `${Math.max(1, Math.round(s))} s` : `${Math.round(s / 60)} min`);
const seconds = (s) => (s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`);
const bytes = (n) => (n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`);

// ---------------------------------------------------------------- the form, from the API's document

let models = new Map(); // name -> the /api/models entry (queue depth, defaults, image limits)
let numbers = []; // the numeric fields of the document: { name, spec, input }
const edited = new Set(); // numeric fields the user changed: a model's defaults leave them alone

/** The fields of POST /api/diffusion, as the document states them: query parameters, which the API takes as form fields too. */
const submissionSchema = (doc) =>
  Object.fromEntries(doc.paths['/api/diffusion'].post.parameters.filter((parameter) => parameter.in === 'query').map((parameter) => [parameter.name, parameter.schema]));

function buildForm(doc) {
  const fields = submissionSchema(doc);
  $('model').replaceChildren(...fields.model_name.enum.map((name) => new Option(name, name)));
  // The named priorities (the document also lists their codes 0, 1, 2).
  const priorities = fields.priority.enum.filter((value) => !/^\d+$/.test(value));
  $('priority').replaceChildren(...priorities.map((name) => new Option(name, name, false, name === fields.priority.default)));
  for (const name of ['prompt', 'negative_prompt']) {
    $(name).maxLength = fields[name].maxLength;
    $(`${name}-help`).textContent = fields[name].description;
  }
  $('prompt').placeholder = fields.prompt.example;
  numbers = Object.entries(fields)
    .filter(([, schema]) => schema['x-number'])
    .map(([name, schema]) => ({ name, schema, spec: schema['x-number'], input: numberField(name, schema) }));
}

function numberField(name, schema) {
  const spec = schema['x-number'];
  const wrap = document.createElement('div');
  wrap.className = 'field';
  const label = document.createElement('label');
  label.htmlFor = name;
  label.textContent = name.replace(/_/g, ' ');
  const input = document.createElement('input');
  Object.assign(input, { id: name, name, type: 'number', min: spec.minimum, max: spec.maximum, step: spec.integer ? 1 : 'any' });
  input.inputMode = spec.integer ? 'numeric' : 'decimal';
  if (spec.default === undefined) input.placeholder = name === 'seed' ? 'random' : 'none'; // the seed is drawn; another field left out is off
  input.addEventListener('input', () => edited.add(name));
  const help = document.createElement('small');
  help.textContent = schema.description;
  input.setAttribute('aria-describedby', `${name}-help`);
  help.id = `${name}-help`;
  wrap.append(label, input, help);
  $('numbers').append(wrap);
  return input;
}

/**
 * The chosen model's form: its own ranges and defaults (from /api/models), else the document's;
 * a field the model does not take is disabled (and so never sent).
 */
function applyDefaults() {
  const model = models.get($('model').value);
  for (const { name, spec, input } of numbers) {
    const own = model?.params?.[name];
    input.disabled = own?.applies === false;
    input.closest('.field').hidden = input.disabled;
    Object.assign(input, { min: own?.minimum ?? spec.minimum, max: own?.maximum ?? spec.maximum });
    if (edited.has(name) && !input.disabled) continue;
    const value = own?.default ?? model?.defaults?.[name] ?? spec.default;
    input.value = value === undefined || input.disabled ? '' : String(value);
  }
  const negative = model?.params?.negative_prompt.applies !== false;
  $('negative_prompt').disabled = !negative;
  $('negative_prompt').closest('.field').hidden = !negative;
  describeModel();
}

function describeModel() {
  const model = models.get($('model').value);
  const priority = $('priority').value;
  if (!model) return ($('model-info').textContent = '');
  if (model.available === false) return ($('model-info').textContent = `Unavailable: ${model.unavailable_reason}`);
  const { image, queue_depth: depth } = model;
  const pace = model.rate ? `; about ${model.rate.jobs_per_second.toPrecision(2)} jobs a second` : '';
  $('model-info').textContent =
    `${model.queued} queued, ${model.running} running (${depth[priority] ?? 0} of them at ${priority})${pace}; ` +
    `takes images of ${image.min_side} to ${image.max_side} px a side, ${image.max_pixels.toLocaleString('en')} px in all`;
}

async function refreshModels() {
  try {
    const { models: list } = await apiJson('/api/models');
    const first = !models.size;
    models = new Map(list.map((model) => [model.name, model]));
    if (first) applyDefaults();
    else describeModel();
  } catch (error) {
    $('model-info').textContent = `queue depth unknown: ${error.message}`;
  }
}

// ---------------------------------------------------------------- the image

let chosen; // { file, url, width, height }

async function choose(file) {
  if (chosen && $('job-input').src !== chosen.url) URL.revokeObjectURL(chosen.url); // unless the job shown uses it
  chosen = file ? { file, url: URL.createObjectURL(file) } : undefined;
  $('preview').hidden = !chosen;
  if (!chosen) return;
  const image = $('preview-image');
  image.src = chosen.url;
  $('preview-info').textContent = `${file.name}, ${bytes(file.size)}`;
  try {
    await image.decode();
    Object.assign(chosen, { width: image.naturalWidth, height: image.naturalHeight });
    $('preview-info').textContent = `${file.name}, ${chosen.width} × ${chosen.height} px, ${bytes(file.size)}`;
  } catch {
    $('preview-info').textContent = `${file.name}, ${bytes(file.size)} (the browser cannot show it; the API decides whether it takes it)`;
  }
}

function setUpDrop() {
  const drop = $('drop');
  $('image').addEventListener('change', () => choose($('image').files[0]));
  drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    if (!event.dataTransfer.files.length) return;
    $('image').files = event.dataTransfer.files;
    choose(event.dataTransfer.files[0]);
  });
}

/** A small JPEG of an image, for the list (kept in localStorage, so it must stay small). */
async function thumbnail(src, side = 96) {
  const image = new Image();
  image.src = src;
  await image.decode();
  const scale = side / Math.max(image.naturalWidth, image.naturalHeight);
  const canvas = document.createElement('canvas');
  canvas.width = Math.max(1, Math.round(image.naturalWidth * scale));
  canvas.height = Math.max(1, Math.round(image.naturalHeight * scale));
  canvas.getContext('2d').drawImage(image, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL('image/jpeg', 0.8);
}

// ---------------------------------------------------------------- submitting

function formError(error) {
  $('form-error').textContent = error ? error.message : '';
  $('form-error').hidden = !error;
  for (const element of document.querySelectorAll('[aria-invalid]')) element.removeAttribute('aria-invalid');
  const field = error?.field && (error.field === 'Authorization' ? $('api-key') : $(error.field === 'model_name' ? 'model' : error.field));
  if (field) {
    field.setAttribute('aria-invalid', 'true');
    field.focus();
  }
}

async function submit(event) {
  event.preventDefault();
  if (!chosen) return formError(new Error('choose an image first'));
  const form = new FormData();
  form.append('image', chosen.file, chosen.file.name);
  form.append('model_name', $('model').value);
  form.append('priority', $('priority').value);
  form.append('prompt', $('prompt').value);
  if (!$('negative_prompt').disabled && $('negative_prompt').value.trim()) form.append('negative_prompt', $('negative_prompt').value);
  for (const { name, input } of numbers) if (!input.disabled && input.value !== '') form.append(name, input.value);
  $('submit').disabled = true;
  try {
    await send(form, chosen.file, chosen.url);
    formError(undefined);
  } catch (error) {
    formError(error);
  } finally {
    $('submit').disabled = false;
  }
}

/** Submits a job; once accepted, the list and the input store keep it and the page follows it. */
async function send(form, file, url) {
  const job = await apiJson('/api/diffusion', { method: 'POST', body: form });
  // `thumb` is the list's picture (the result once there is one); `input` stays the input's.
  const thumb = await thumbnail(url).catch(() => undefined);
  await keepInput(job.id, file);
  remember({ id: job.id, model: job.model_name, prompt: String(form.get('prompt')).trim(), created: new Date().toISOString(), status: job.status, thumb, input: thumb });
  follow(job.id, url);
}

// ---------------------------------------------------------------- input images, for "run again"

let inputsDb;

/** One request on the input store; IndexedDB keeps File objects whole, name included. */
async function inputRequest(mode, request) {
  inputsDb ??= new Promise((resolve, reject) => {
    const open = indexedDB.open(INPUTS, 1);
    open.onupgradeneeded = () => open.result.createObjectStore('inputs');
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  const store = (await inputsDb).transaction('inputs', mode).objectStore('inputs');
  return new Promise((resolve, reject) => {
    const pending = request(store);
    pending.onsuccess = () => resolve(pending.result);
    pending.onerror = () => reject(pending.error);
  });
}

// A browser that refuses IndexedDB (some private modes) only loses "run again".
const keepInput = (id, file) => inputRequest('readwrite', (store) => store.put(file, id)).catch(() => {});
const inputOf = (id) => inputRequest('readonly', (store) => store.get(id)).catch(() => undefined);

/** Drops the inputs of jobs the list no longer holds. */
async function keepInputsOf(list) {
  const ids = new Set(list.map((job) => job.id));
  try {
    for (const id of await inputRequest('readonly', (store) => store.getAllKeys())) if (!ids.has(id)) await inputRequest('readwrite', (store) => store.delete(id));
  } catch {
    // nothing stored, nothing to drop
  }
}

// ---------------------------------------------------------------- run again, copy as curl

/** A decimal as the API reads numbers: plain digits, never an exponent. */
const decimal = (n) => (/e/i.test(String(n)) ? n.toFixed(20).replace(/\.?0+$/, '') : String(n));

/**
 * The fields that reproduce a job: its model, priority and recorded parameters (the seed unless
 * `withSeed` is false); a field the model does not take is left out, as the form leaves it.
 */
function jobFields(view, withSeed = true) {
  const { params } = view;
  const takes = (name) => models.get(view.model_name)?.params?.[name]?.applies !== false;
  const fields = [
    ['model_name', view.model_name],
    ['priority', view.priority],
    ['prompt', params.prompt],
  ];
  if (params.negative_prompt && takes('negative_prompt')) fields.push(['negative_prompt', params.negative_prompt]);
  for (const name of ['strength', 'steps', 'guidance_scale']) if (takes(name)) fields.push([name, decimal(params[name])]);
  const every = view.preview_every ?? params.preview_every;
  if (every && takes('preview_every')) fields.push(['preview_every', String(every)]);
  if (withSeed) fields.push(['seed', String(params.seed)]);
  return fields;
}

async function runAgain(sameSeed) {
  const { view, input } = following ?? {};
  if (!view?.params || !input) return;
  const form = new FormData();
  for (const [name, value] of jobFields(view, sameSeed)) form.append(name, value);
  form.append('image', input, input.name || 'input.png');
  for (const id of ['job-again', 'job-again-new']) $(id).disabled = true;
  try {
    await send(form, input, URL.createObjectURL(input));
  } catch (error) {
    againInfo(error.message, true);
    for (const id of ['job-again', 'job-again-new']) $(id).disabled = false;
  }
}

function againInfo(message, error = false) {
  $('job-again-info').textContent = message ?? '';
  $('job-again-info').hidden = !message;
  $('job-again-info').className = error ? 'error' : '';
}

/** "Run again" needs the job's parameters (from the API) and its input (kept only by the browser that sent it). */
function offerAgain() {
  const { view, input, inputKnown } = following;
  const ready = Boolean(view?.params);
  $('job-again').disabled = $('job-again-new').disabled = !ready || !input;
  $('job-curl').disabled = !ready;
  if (ready && inputKnown && !input) againInfo('Run again needs this job’s input image, which this browser does not have (the job was sent from elsewhere, or the list forgot it). Copy as curl still gives its settings.');
}

/** A shell command that submits the job again, its input read from input.png. */
function curlOf(view) {
  const query = new URLSearchParams(jobFields(view)); // percent-encodes quotes too, so single quotes hold it
  const lines = ['# input.png: this job’s input image, saved under that name.'];
  const command = [`curl -sS -X POST '${location.origin}/api/diffusion?${query}'`];
  if (sessionStorage.getItem(KEY)) {
    lines.push('# The key is left out on purpose: a copied command ends up in shell history, chats and tickets.', '# Set IMG2IMG_API_KEY to your key first.');
    command.push('-H "Authorization: Bearer $IMG2IMG_API_KEY"');
  }
  command.push('-F image=@input.png');
  return [...lines, command.join(' \\\n     ')].join('\n');
}

async function copyCurl() {
  if (!following?.view?.params) return;
  const text = curlOf(following.view);
  $('job-curl-text').value = text;
  $('job-curl-box').hidden = false;
  let copied;
  try {
    await navigator.clipboard.writeText(text); // only in a secure context, and when the browser allows it
    copied = true;
  } catch {
    $('job-curl-text').select();
    copied = document.execCommand('copy'); // the older way, where the clipboard API is missing or refused
  }
  $('job-curl-info').textContent = copied ? 'Copied to the clipboard:' : 'The browser did not let the page copy it; select it here and copy:';
}

// ---------------------------------------------------------------- following a job

let following; // { id, abort, timer, view, input, preview }

/** Where a queued job stands: "Queued: 3 jobs ahead, starts in about 20 s, done in about 35 s". */
function queuedText(view) {
  const position = view.queue_position;
  if (position === null || position === undefined) return `Queued (${view.model_name}; its place in the queue is not known yet)`;
  const ahead = position === 0 ? 'next to start' : `${position} ${position === 1 ? 'job' : 'jobs'} ahead`;
  const left = (at) => (Date.parse(at) - Date.now()) / 1000;
  if (!view.estimated_start_at) return `Queued: ${ahead} (no start time estimated yet)`;
  const start = left(view.estimated_start_at);
  const finish = view.estimated_finish_at ? `, done in about ${roughly(left(view.estimated_finish_at))}` : '';
  return `Queued: ${ahead}, ${start < 1 ? 'starts any moment' : `starts in about ${roughly(start)}`}${finish}`;
}

function showJob(view) {
  const { status } = view;
  const ended = TERMINAL.has(status);
  if (following?.id === view.id) following.view = view;
  $('job-state').textContent =
    status === 'queued'
      ? queuedText(view)
      : status === 'running'
        ? view.cancel_requested
          ? 'Running; cancel requested'
          : 'Running'
        : status[0].toUpperCase() + status.slice(1);
  $('job-state').dataset.status = status;
  $('job-cancel').hidden = ended;
  const progress = status === 'succeeded' ? { step: 1, total: 1 } : view.progress;
  if (progress) setProgress(progress.step, progress.total, status === 'succeeded');
  if (view.error) {
    $('job-error').textContent = `${view.error.code}: ${view.error.message}`;
    $('job-error').hidden = false;
  }
  const notes = view.notes ?? [];
  $('job-notes').replaceChildren(...notes.map((note) => Object.assign(document.createElement('li'), { textContent: note })));
  $('job-notes').hidden = !notes.length;
  if (view.params) showParams(view);
  if (status !== 'running') hidePreview();
  if (following?.id === view.id) offerAgain();
  if (view.timings) $('job-time').textContent = `Took ${seconds(view.timings.total_s)}: ${seconds(view.timings.queue_s)} queued, ${seconds(view.timings.run_s)} running`;
  updateJob(view.id, { status });
}

/** What the job was asked for, as the API recorded it: the seed is the one drawn when none was given. */
function showParams({ model_name: model, params, width, height }) {
  const rows = [
    ['model_name', 'Model', model],
    ['prompt', 'Prompt', params.prompt],
    ['negative_prompt', 'Negative prompt', params.negative_prompt ?? 'none'],
    ['strength', 'Strength', params.strength],
    ['steps', 'Steps', params.steps],
    ['guidance_scale', 'Guidance scale', params.guidance_scale],
    ['seed', 'Seed', params.seed],
    ['size', 'Size', `${width} × ${height} px`],
    ...(params.preview_every ? [['preview_every', 'Previews', `every ${params.preview_every} steps`]] : []),
  ];
  $('job-params').replaceChildren(
    ...rows.flatMap(([field, name, value]) => {
      const term = Object.assign(document.createElement('dt'), { textContent: name });
      const detail = Object.assign(document.createElement('dd'), { textContent: String(value) });
      detail.dataset.field = field;
      return [term, detail];
    }),
  );
  $('job-params').hidden = false;
}

function setProgress(step, total, done = false) {
  $('job-progress').value = done ? 1 : total ? step / total : 0;
  const percent = Math.round($('job-progress').value * 100);
  $('job-steps').textContent = done ? '100%' : `step ${step}/${total} (${percent}%)`;
}

/** Shows a job and follows it live until it ends; `input` is the image's URL when this page sent it. */
async function follow(id, input) {
  if (following) stopFollowing();
  const abort = new AbortController();
  following = { id, abort };
  againInfo(undefined);
  $('job-curl-box').hidden = true;
  inputOf(id).then((file) => {
    if (following?.id !== id) return;
    Object.assign(following, { input: file, inputKnown: true });
    offerAgain();
  });
  offerAgain();
  const stored = jobs().find((job) => job.id === id);
  $('job').hidden = false;
  $('job-id').textContent = id;
  $('job-error').hidden = true;
  $('job-notes').hidden = true;
  $('job-params').hidden = true;
  $('job-result').hidden = true;
  $('job-time').textContent = '';
  setProgress(0, 0);
  $('job-steps').textContent = '';
  $('job-input').src = input ?? stored?.input ?? '';
  $('job-source').hidden = !$('job-input').getAttribute('src');
  const created = Date.parse(stored?.created ?? new Date().toISOString());
  following.timer = setInterval(() => {
    const status = $('job-state').dataset.status;
    if (!TERMINAL.has(status)) $('job-time').textContent = `${seconds((Date.now() - created) / 1000)} so far`;
    if (status === 'queued' && following?.view) $('job-state').textContent = queuedText(following.view); // the estimate counts down
  }, 500);
  $('job').scrollIntoView({ block: 'nearest' });

  let lastId;
  let view;
  while (!abort.signal.aborted) {
    try {
      for await (const event of events(`/api/jobs/${id}/events`, abort.signal, lastId)) {
        notice(undefined);
        if (event.id) lastId = event.id;
        view = withEvent(view, event);
        if (event.type === 'preview') showPreview(event.data);
        showJob(view);
      }
      if (TERMINAL.has(view?.status)) break;
    } catch (error) {
      if (abort.signal.aborted) return;
      if (error.status === 404) return showJob({ id, status: 'failed', error: { code: 'job_not_found', message: 'the API no longer knows this job' } });
      if (error instanceof ApiError && error.status < 500) {
        $('job-error').textContent = error.message;
        $('job-error').hidden = false;
        return;
      }
      notice(`${error.message}; following the job again in 2 s`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2000)); // the stream ended early or failed: reconnect
  }
  if (abort.signal.aborted) return;
  // The stream ended with the job: read its final state (timings, error) and the result.
  try {
    view = await apiJson(`/api/jobs/${id}`, { signal: abort.signal });
    showJob(view);
    if (view.status === 'succeeded') await showResult(id);
  } catch (error) {
    if (!abort.signal.aborted) notice(error.message);
  }
}

/** The job as an event of its stream leaves it. */
function withEvent(view, { type, data }) {
  if (type === 'snapshot') return data;
  if (type === 'queued') {
    // The stream's position updates carry the standing; the lifecycle's own `queued` event does not.
    const { queue_position, estimated_start_at, estimated_finish_at } = data;
    return { ...view, status: 'queued', ...('queue_position' in data ? { queue_position, estimated_start_at, estimated_finish_at } : {}) };
  }
  if (type === 'progress' || type === 'preview') return { ...view, status: 'running', progress: { step: data.step, total: data.total } };
  if (type === 'started') return { ...view, status: 'running' };
  if (type === 'cancel_requested') return { ...view, cancel_requested: true };
  return TERMINAL.has(type) ? { ...view, status: type } : view;
}

/**
 * A preview of the running job: fetched rather than linked, as the result is (the route may need
 * the key). One fetch at a time; a preview that arrives meanwhile replaces the one waiting.
 */
async function showPreview({ preview_url: url, step, total }) {
  const state = following;
  if (!state || !url) return;
  state.nextPreview = { url, step, total };
  if (state.loadingPreview) return;
  state.loadingPreview = true;
  while (state.nextPreview && following === state) {
    const next = state.nextPreview;
    state.nextPreview = undefined;
    try {
      const blob = await (await api(next.url, { signal: state.abort.signal })).blob();
      if (following !== state || $('job-state').dataset.status !== 'running') break;
      if (state.preview) URL.revokeObjectURL(state.preview);
      state.preview = URL.createObjectURL(blob);
      $('job-live-image').src = state.preview;
      $('job-live-caption').textContent = `Preview at step ${next.step} of ${next.total}`;
      $('job-live').hidden = false;
    } catch {
      // gone with the job's end (404), or the page moved on: the next one, if any, will do
    }
  }
  state.loadingPreview = false;
}

function hidePreview() {
  $('job-live').hidden = true;
  $('job-live-image').removeAttribute('src');
  if (following?.preview) URL.revokeObjectURL(following.preview);
  if (following) following.preview = undefined;
}

function stopFollowing() {
  following.abort.abort();
  clearInterval(following.timer);
  hidePreview();
  following = undefined;
}

async function showResult(id) {
  // Fetched rather than linked: the result route may need the key, which an <img> cannot send.
  const blob = await (await api(`/api/results/${id}`, { signal: following?.abort.signal })).blob();
  const url = URL.createObjectURL(blob);
  $('job-output').src = url;
  $('job-download').href = url;
  $('job-download').download = `${id}.png`;
  $('job-result').hidden = false;
  const thumb = await thumbnail(url).catch(() => undefined);
  if (thumb) updateJob(id, { thumb });
}

async function cancel() {
  if (!following) return;
  try {
    showJob(await apiJson(`/api/jobs/${following.id}`, { method: 'DELETE' }));
  } catch (error) {
    $('job-error').textContent = error.message;
    $('job-error').hidden = false;
  }
}

// ---------------------------------------------------------------- this browser's jobs

const jobs = () => {
  try {
    return JSON.parse(localStorage.getItem(JOBS) ?? '[]');
  } catch {
    return [];
  }
};

function save(list) {
  const kept = list.slice(0, MAX_JOBS);
  try {
    localStorage.setItem(JOBS, JSON.stringify(kept));
  } catch {
    localStorage.setItem(JOBS, JSON.stringify(kept.map(({ thumb, ...job }) => job))); // storage full: drop the pictures
  }
  if (list.length > MAX_JOBS || !kept.length) void keepInputsOf(kept);
  renderJobs();
}

// The list shown: the key's jobs from GET /api/jobs (`fromApi`), a page at a time, else this browser's.
let listed = { fromApi: false, entries: [], cursor: null };

const remember = (job) => {
  if (listed.fromApi) listed.entries = [job, ...listed.entries.filter((other) => other.id !== job.id)];
  save([job, ...jobs().filter((other) => other.id !== job.id)]);
};
const updateJob = (id, change) => {
  const changes = (job) => job && Object.entries(change).some(([key, value]) => job[key] !== value);
  const apply = (list) => list.map((other) => (other.id === id ? { ...other, ...change } : other));
  const shown = listed.fromApi && changes(listed.entries.find((other) => other.id === id));
  if (shown) listed.entries = apply(listed.entries);
  const list = jobs();
  if (changes(list.find((other) => other.id === id))) save(apply(list));
  else if (shown) renderJobs();
};

/** A job of GET /api/jobs as the list shows it, with this browser's thumbnail where it has one. */
const listEntry = (view, local) => ({
  id: view.id,
  model: view.model_name,
  prompt: view.params.prompt,
  created: view.created_at,
  status: view.status,
  thumb: local.get(view.id)?.thumb,
});

/** With a key: the first page of the key's jobs (or the next one, `more`); without: this browser's. */
async function loadJobs(more = false) {
  jobsError(undefined);
  if (!sessionStorage.getItem(KEY)) {
    listed = { fromApi: false, entries: [], cursor: null };
    return renderJobs();
  }
  const query = new URLSearchParams({ limit: String(PAGE), ...(more && listed.cursor ? { cursor: listed.cursor } : {}) });
  $('jobs-more').disabled = true;
  try {
    const page = await apiJson(`/api/jobs?${query}`);
    const local = new Map(jobs().map((job) => [job.id, job]));
    const earlier = more ? listed.entries : [];
    const seen = new Set(earlier.map((job) => job.id));
    listed = { fromApi: true, entries: [...earlier, ...page.jobs.filter((view) => !seen.has(view.id)).map((view) => listEntry(view, local))], cursor: page.next_cursor };
  } catch (error) {
    // 403 keys_required: this API runs without keys, so nobody owns a job; the browser's list is the list.
    if (error.status !== 403) jobsError(`${error.message}; showing this browser’s jobs instead`);
    listed = { fromApi: false, entries: [], cursor: null };
  } finally {
    $('jobs-more').disabled = false;
  }
  renderJobs();
}

function jobsError(message) {
  $('jobs-error').textContent = message ?? '';
  $('jobs-error').hidden = !message;
}

function renderJobs() {
  const list = listed.fromApi ? listed.entries : jobs();
  $('jobs-title').textContent = listed.fromApi ? 'Jobs of this key' : 'Jobs from this browser';
  $('jobs-empty').hidden = list.length > 0;
  $('jobs-clear').hidden = listed.fromApi || list.length === 0;
  $('jobs-more').hidden = !listed.fromApi || !listed.cursor;
  $('jobs').replaceChildren(
    ...list.map((job) => {
      const item = document.createElement('li');
      item.dataset.id = job.id;
      item.dataset.status = job.status;
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'job';
      button.addEventListener('click', () => follow(job.id));
      const image = document.createElement('img');
      image.alt = '';
      if (job.thumb) image.src = job.thumb;
      const text = document.createElement('span');
      const status = document.createElement('strong');
      status.className = 'status';
      status.textContent = job.status;
      const when = new Date(job.created).toLocaleString();
      text.append(status, ` ${job.model} · ${when}`, document.createElement('br'), job.prompt);
      button.append(image, text);
      item.append(button);
      return item;
    }),
  );
}

/** After a reload: the jobs that had not ended may have since; ask the API. */
async function refreshJobs() {
  for (const job of jobs().filter((job) => !TERMINAL.has(job.status) && job.status !== 'unknown')) {
    try {
      updateJob(job.id, { status: (await apiJson(`/api/jobs/${job.id}`)).status });
    } catch (error) {
      if (error.status === 404) updateJob(job.id, { status: 'unknown' });
    }
  }
}

// ---------------------------------------------------------------- start

async function start() {
  setUpDrop();
  renderJobs();
  $('api-key').value = sessionStorage.getItem(KEY) ?? '';
  $('api-key').addEventListener('change', () => {
    const key = $('api-key').value.trim();
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
    loadJobs();
  });
  $('model').addEventListener('change', applyDefaults);
  $('priority').addEventListener('change', describeModel);
  $('job-form').addEventListener('submit', submit);
  $('job-cancel').addEventListener('click', cancel);
  $('jobs-clear').addEventListener('click', () => save([]));
  $('jobs-more').addEventListener('click', () => loadJobs(true));
  $('job-again').addEventListener('click', () => runAgain(true));
  $('job-again-new').addEventListener('click', () => runAgain(false));
  $('job-curl').addEventListener('click', copyCurl);
  let doc;
  for (;;) {
    try {
      doc = await apiJson('/openapi.json');
      break;
    } catch (error) {
      notice(`${error.message}; trying again in 3 s`);
      await new Promise((resolve) => setTimeout(resolve, 3000));
    }
  }
  notice(undefined);
  showKey(Boolean(doc.security?.length));
  buildForm(doc);
  await refreshModels();
  applyDefaults();
  $('submit').disabled = false;
  setInterval(refreshModels, 5000);
  refreshJobs();
  setInterval(refreshJobs, 10_000); // the listed jobs the page is not following end too
  loadJobs();
}

start();
