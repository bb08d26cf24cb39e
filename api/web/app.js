// The web page: submit an image, follow the job live, keep a list of this browser's jobs.
// Fields, ranges and defaults come from the API itself (/openapi.json and /api/models), so
// this file repeats none of common/params.json. Plain browser JavaScript, no build step.

const $ = (id) => document.getElementById(id);
const KEY = 'img2img.key'; // sessionStorage: the API key, for this tab only
const JOBS = 'img2img.jobs'; // localStorage: the jobs submitted from this browser
const MAX_JOBS = 50;
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
  if (spec.default === undefined) input.placeholder = 'random';
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
  const { image, queue_depth: depth } = model;
  if (model.available === false) return ($('model-info').textContent = `Unavailable: ${model.unavailable_reason}`);
  $('model-info').textContent =
    `${depth.total} jobs queued or running (${depth[priority] ?? 0} at ${priority}); ` +
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
    const job = await apiJson('/api/diffusion', { method: 'POST', body: form });
    formError(undefined);
    // `thumb` is the list's picture (the result once there is one); `input` stays the input's.
    const thumb = await thumbnail(chosen.url).catch(() => undefined);
    remember({ id: job.id, model: job.model_name, prompt: $('prompt').value.trim(), created: new Date().toISOString(), status: job.status, thumb, input: thumb });
    follow(job.id, chosen.url);
  } catch (error) {
    formError(error);
  } finally {
    $('submit').disabled = false;
  }
}

// ---------------------------------------------------------------- following a job

let following; // { id, abort, timer, started }

function showJob(view) {
  const { status } = view;
  const ended = TERMINAL.has(status);
  $('job-state').textContent =
    status === 'queued'
      ? `Queued (${view.model_name}: ${models.get(view.model_name)?.queue_depth.total ?? '?'} jobs queued or running)`
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
    if (!TERMINAL.has($('job-state').dataset.status)) $('job-time').textContent = `${seconds((Date.now() - created) / 1000)} so far`;
  }, 500);
  $('job').scrollIntoView({ block: 'nearest' });

  let lastId;
  let view;
  while (!abort.signal.aborted) {
    try {
      for await (const event of events(`/api/jobs/${id}/events`, abort.signal, lastId)) {
        notice(undefined);
        if (event.id) lastId = event.id;
        if (event.type === 'snapshot') view = event.data;
        else if (event.type === 'progress') view = { ...view, status: 'running', progress: { step: event.data.step, total: event.data.total } };
        else if (event.type === 'cancel_requested') view = { ...view, cancel_requested: true };
        else view = { ...view, status: event.type === 'queued' ? 'queued' : event.type === 'started' ? 'running' : event.type };
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

function stopFollowing() {
  following.abort.abort();
  clearInterval(following.timer);
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
  try {
    localStorage.setItem(JOBS, JSON.stringify(list.slice(0, MAX_JOBS)));
  } catch {
    localStorage.setItem(JOBS, JSON.stringify(list.slice(0, MAX_JOBS).map(({ thumb, ...job }) => job))); // storage full: drop the pictures
  }
  renderJobs();
}

const remember = (job) => save([job, ...jobs().filter((other) => other.id !== job.id)]);
const updateJob = (id, change) => {
  const list = jobs();
  const job = list.find((other) => other.id === id);
  if (job && Object.entries(change).some(([key, value]) => job[key] !== value)) save(list.map((other) => (other.id === id ? { ...other, ...change } : other)));
};

function renderJobs() {
  const list = jobs();
  $('jobs-empty').hidden = list.length > 0;
  $('jobs-clear').hidden = list.length === 0;
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
  for (const job of jobs().filter((job) => !TERMINAL.has(job.status))) {
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
  });
  $('model').addEventListener('change', applyDefaults);
  $('priority').addEventListener('change', describeModel);
  $('job-form').addEventListener('submit', submit);
  $('job-cancel').addEventListener('click', cancel);
  $('jobs-clear').addEventListener('click', () => save([]));
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
}

start();
