// POST /api/diffusion: validate, normalise the image, enqueue, answer 202 with the links.
import { createHash } from 'node:crypto';
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { CANCEL_AFTER_PATTERN, deadlinesOf } from '../deadlines.js';
import { fromZod, ValidationError } from '../errors.js';
import { errorResponse, keyed, retryAfter, tooManyRequests, unauthorized } from '../schemas.js';
import type { Services } from '../services.js';
import type { NewSubmission } from '../intake.js';
import { mergeFields, submissionFields, toSubmission, type SubmissionFields } from '../submission.js';
import type { AppEnv } from '../env.js';
import { tenantOf } from '../auth.js';
import { readUpload, type Upload } from '../upload.js';
import { acceptedView, JobAccepted } from '../../common/view.js';
import { computeSize, denoisingSteps, imageLimitsFor, type ModelRules } from '../../common/params.js';
import { webhookOf } from '../webhook.js';

const imageField = z
  .custom<File>((value) => value instanceof File, { error: 'must be a file (multipart field "image")' })
  .openapi({
    type: 'string',
    format: 'binary',
    description: 'The input image: png, jpeg or webp (recognised by its bytes, not its name)',
  });

const requestHeaders = z.object({
  'idempotency-key': z
    .string()
    .min(1)
    .max(256)
    // Visible ASCII, no white space at the ends (HTTP would strip it, and the key would change).
    .regex(/^[\x21-\x7E](?:[\x20-\x7E]*[\x21-\x7E])?$/, 'must be printable ASCII, without white space at either end')
    .optional()
    .openapi({
      // No example value: Swagger UI would send the same key with every try, and get 409 for a changed request.
      description: 'Retry-safe submission: the same key with the same request answers the same job; with a different request, 409. For example a UUID',
    }),
  'cancel-after': z
    .string()
    .regex(new RegExp(CANCEL_AFTER_PATTERN), 'must be a whole number of seconds, or of s, m or h (90, 90s, 5m, 1h)')
    .optional()
    .openapi({
      description:
        'The job’s whole deadline from acceptance (as Replicate’s Cancel-After): not started by then it ends `aborted` (no GPU time spent); still running, it is canceled at its next step. 1 s to 7 days: 90, 90s, 5m, 1h',
      pattern: CANCEL_AFTER_PATTERN,
    }),
});

function route(models: readonly string[], fields: ReturnType<typeof submissionFields>) {
  return createRoute({
    method: 'post',
    path: '/api/diffusion',
    operationId: 'submitJob',
    tags: ['jobs'],
    summary: 'Submit an img2img job',
    description:
      'The image is the multipart field `image`. Every other field is documented here as a query parameter and may ' +
      'equally be sent as a multipart field beside the image (`curl -F image=@in.png -F prompt=...`); a field sent both ways must ' +
      'have the same value. A field left out gets the model’s default (GET /api/models), and the seed a random one. ' +
      'Answers 202 once the input is stored and Kafka has acknowledged the job.',
    request: {
      // Each field is documented once, as a query parameter: Swagger UI's Try it out sends a query
      // parameter only when it has a value, but every form field of the document, empty or not.
      query: fields,
      headers: requestHeaders,
      body: { required: true, content: { 'multipart/form-data': { schema: z.object({ image: imageField }) } } },
    },
    responses: keyed({
      202: {
        description: 'Queued: follow status_url, events_url (SSE) or result_url',
        headers: { Location: { schema: { type: 'string' }, description: 'status_url' } },
        content: { 'application/json': { schema: JobAccepted } },
      },
      400: errorResponse('A field is missing or invalid; or the job costs more than the key’s whole budget (cost_limit)', {
        code: 'validation_error',
        message: `model_name: must be one of the known models: ${models.join(', ')}`,
        field: 'model_name',
      }),
      409: errorResponse('The Idempotency-Key was used for a different request, or its request is still in progress', {
        code: 'idempotency_key_reused',
        message: 'this Idempotency-Key was already used for a different request',
        field: 'Idempotency-Key',
      }),
      413: errorResponse('The body or the image (pixels) is too large', {
        code: 'image_too_large',
        message: 'the image is 15000x15000; the limits are 4096 pixels a side and 16777216 pixels in all',
        field: 'image',
      }),
      415: errorResponse('The image is not png, jpeg or webp (svg, gif, tiff, avif... are refused)', {
        code: 'unsupported_media_type',
        message: 'svg/xml images are not accepted; send png, jpeg or webp',
        field: 'image',
      }),
      422: errorResponse('The image cannot be decoded or is smaller than 8 pixels on a side; or a field does not apply to the model, or is outside its own range (invalid_for_model: GET /api/models gives each model’s rules); or start_by has passed already (deadline_passed)', {
        code: 'unprocessable',
        message: 'the image cannot be decoded (corrupt or truncated)',
        field: 'image',
      }),
      401: unauthorized,
      429: tooManyRequests,
      503: errorResponse('Object storage, Kafka or (with closed limits) Redis is unavailable, or too many uploads are in progress (uploads_busy): retry after Retry-After seconds; or the model cannot be served (model_unavailable, without Retry-After: its source failed the consumer’s check at start, and the message says why)', {
        code: 'kafka_unavailable',
        message: 'the queue (Kafka) is unavailable; retry later',
      }, retryAfter(2, 'on model_unavailable')),
    }),
  });
}

/** The multipart fields, checked by the same schema as the query string. */
function formFields(upload: Upload, fields: ReturnType<typeof submissionFields>) {
  const { image: _textImage, ...text } = upload.fields;
  const parsed = fields.safeParse(text);
  if (!parsed.success) throw fromZod(parsed.error, 'form');
  return parsed.data;
}

function uploadedImage(upload: Upload): Buffer {
  if (upload.image) return upload.image;
  const sentAsText = upload.fields.image !== undefined;
  throw new ValidationError('image', sentAsText ? 'image: must be a file, not a text field' : 'image: a file is required (multipart field "image")');
}

/**
 * What the parsers let through silently: a header sent twice is joined with a comma (two
 * Idempotency-Keys would become one new key), and a malformed percent-escape is kept as the
 * literal text "%FF".
 */
function checkRawRequest(c: Context<AppEnv>): void {
  const raw = c.env.incoming.rawHeaders;
  const keys = raw.filter((name, i) => i % 2 === 0 && name.toLowerCase() === 'idempotency-key').length;
  if (keys > 1) throw new ValidationError('Idempotency-Key', 'Idempotency-Key: send the header once');
  const search = new URL(c.req.url).search.slice(1);
  for (const pair of search ? search.split('&') : []) {
    const [name = '', value = ''] = pair.split('=', 2);
    for (const part of [name, value]) {
      try {
        decodeURIComponent(part.replace(/\+/g, ' '));
      } catch {
        const field = /^[\w.-]{1,64}$/.test(name) ? name : 'query';
        throw new ValidationError(field, `${field}: malformed percent-encoding (each %XX must form UTF-8 text)`);
      }
    }
  }
}

/** How long a submission waits for the queue depth before it goes on without the ceiling. */
const CEILING_WAIT_MS = 1000;

/** What a job asks of a GPU: the pixels it is computed at times its denoising steps, and how to say it. */
function costOf({ submission, image }: NewSubmission, rules: ModelRules): [pixelSteps: number, what: string] {
  const { width, height } = computeSize(image.width, image.height, imageLimitsFor(submission.model_name), rules.multiple);
  const steps = denoisingSteps(rules, submission.steps, submission.strength);
  return [width * height * steps, `${width}x${height}, ${steps} denoising steps`];
}

export function diffusionRoutes(services: Services) {
  const { availability, config, images, intake, limits, models, rules, uploads } = services;
  const rulesOf = (model: string) => rules.get(model)!;
  const fields = submissionFields(models);
  const documented = route(models, fields);

  /** Reads and checks the request; only the normalised image outlives it, not the upload. */
  async function receive(c: Context<AppEnv>, query: SubmissionFields, headers: z.infer<typeof requestHeaders>): Promise<NewSubmission> {
    const key = headers['idempotency-key'];
    const answered = new Promise<void>((resolve) => c.env.outgoing.once('close', resolve));
    const upload = await readUpload(c.env.incoming, config.MAX_BODY_BYTES, uploads, answered);
    const merged = mergeFields(query, formFields(upload, fields));
    const submission = toSubmission(merged, rulesOf);
    await availability.check(submission.model_name);
    const deadlines = deadlinesOf({ start_by: merged.start_by, cancelAfter: headers['cancel-after'] }, new Date());
    const webhook = webhookOf(merged, { allowPrivate: config.WEBHOOK_ALLOW_PRIVATE, fallback: c.var.principal?.webhook });
    const source = uploadedImage(upload);
    const idempotency = key === undefined ? undefined : { key, imageSha256: createHash('sha256').update(source).digest('hex') };
    const reservation = intake.reserve(); // its sweep entry is written while the image is checked
    return { reservation, submission, webhook, deadlines, image: await images.accept(source, submission.model_name), idempotency };
  }

  // The body is documented from the zod schema but read by readUpload (one streaming pass)
  // rather than by the generic form validator; query and headers are validated as usual.
  const { body: _body, ...request } = documented.request;
  const app = new OpenAPIHono<AppEnv>();
  app.openAPIRegistry.registerPath(documented);
  return app.openapi({ ...documented, request, hide: true }, async (c) => {
    checkRawRequest(c);
    const principal = c.var.principal;
    const admission = await limits.admit(principal); // before the body is read: a refused client sends it for nothing
    try {
      const job = await receive(c, c.req.valid('query'), c.req.valid('header'));
      await admission.charge(...costOf(job, rulesOf(job.submission.model_name)));
      // The ceiling reads Kafka: it waits a second at most, within the request's deadline.
      const ceilingWait = AbortSignal.any([c.var.deadline(), AbortSignal.timeout(CEILING_WAIT_MS)]);
      await limits.checkCeiling(job.submission.model_name, job.submission.priority, ceilingWait);
      const record = await intake.submit({ ...job, tenant: tenantOf(principal) }, c.var.deadline());
      await admission.accept(record.id);
      services.metrics.jobSubmitted(record.model_name, record.priority);
      const body = acceptedView(record, c.var.baseUrl);
      return c.json(body, 202, { Location: body.status_url, ...admission.headers });
    } catch (error) {
      await admission.release();
      throw error;
    }
  });
}
