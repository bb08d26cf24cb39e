import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../api/errors.js';
import { mergeFields, rangePattern, requestHash, submissionFields, toSubmission, type SubmissionFields } from '../../api/submission.js';
import { PARAMS, rulesFor } from '../../common/params.js';

const schema = submissionFields(['tiny', 'sd15']);
const parse = (input: Record<string, unknown>) => schema.parse(input) as SubmissionFields;

describe('submissionFields', () => {
  it('maps priority codes and parses numbers from text', () => {
    expect(parse({ priority: '0', strength: '0.3', steps: '12', seed: '7' })).toEqual({ priority: 'high', strength: 0.3, steps: 12, seed: 7 });
    expect(parse({ priority: '2' }).priority).toBe('low');
  });

  it('trims prompts and keeps tabs and newlines, normalising CRLF', () => {
    expect(parse({ prompt: '  a\r\nb\tc  ' }).prompt).toBe('a\nb\tc');
  });

  it.each([
    ['prompt', 'nul\u0000'],
    ['prompt', 'del\u007f'],
    ['prompt', 'c1\u0085'],
    ['prompt', 'x'.repeat(2001)],
    ['model_name', '../tiny'],
    ['strength', ' '],
  ])('refuses %s=%j', (field, value) => {
    const result = schema.safeParse({ [field]: value });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.path).toEqual([field]);
  });

  it('accepts exactly 2000 characters', () => {
    expect(parse({ prompt: 'x'.repeat(2000) }).prompt).toHaveLength(2000);
  });

  it('counts characters as OpenAPI does (code points), before trimming', () => {
    expect(parse({ prompt: '😀'.repeat(2000) }).prompt).toHaveLength(4000); // 2000 code points, 4000 UTF-16 units
    expect(schema.safeParse({ prompt: ` ${'x'.repeat(2000)}` }).success).toBe(false); // 2001 as sent
  });

  it.each(['strength', 'steps', 'guidance_scale', 'seed'])('takes plain decimal notation only for %s', (field) => {
    for (const value of ['0x10', '1e1', '1E1', ' 5', '5 ', 'Infinity', '+5', '-0', '05', '5.', '.5', '1_0', '0b1', '٣', '']) {
      expect(schema.safeParse({ [field]: value }).success, `${field}=${JSON.stringify(value)}`).toBe(false);
    }
  });

  it('refuses strength 0: it would run no denoising step', () => {
    expect(schema.safeParse({ strength: '0' }).error?.issues[0]?.message).toBe('must be more than 0 and at most 1');
    expect(parse({ strength: '0.0001' }).strength).toBe(0.0001);
    expect(parse({ strength: '1.000' }).strength).toBe(1);
  });
});

describe('the OpenAPI patterns', () => {
  const app = new OpenAPIHono().openapi(
    createRoute({ method: 'get', path: '/', request: { query: schema }, responses: { 200: { description: 'ok' } } }),
    (c) => c.body(null, 200),
  );
  const parameters = app.getOpenAPIDocument({ openapi: '3.0.3', info: { title: 't', version: '1' } }).paths['/']!.get!.parameters as {
    name: string;
    schema: { pattern: string };
  }[];
  const patternOf = (field: string) => new RegExp(parameters.find((parameter) => parameter.name === field)!.schema.pattern);

  // Every sample is judged twice: by the field's schema (the API) and by the pattern the OpenAPI
  // document states. They must agree, so a schema-valid value is never refused and the reverse.
  const samples = [
    '0', '1', '0.5', '0.0', '0.00001', '1.0', '1.5', '2', '7.5', '29.999', '30', '30.0', '30.5', '31', '150', '151', '4294967295',
    '4294967296', '99999999999', '00', '01', '1e1', '0x10', '-1', ' 1', '1 ', 'Infinity', 'NaN', '', '.', '1.', '.1', '1.2.3',
  ];
  it.each(['strength', 'steps', 'guidance_scale', 'seed'] as const)('state exactly what %s accepts', (field) => {
    const pattern = patternOf(field);
    for (const sample of samples) expect(schema.safeParse({ [field]: sample }).success, `${field}=${sample}`).toBe(pattern.test(sample));
  });

  it.each(['prompt', 'negative_prompt'] as const)('state exactly what %s accepts', (field) => {
    const pattern = patternOf(field);
    const texts = ['a', ' a ', 'a\tb\nc', '\r\n', ' ', '', '\u00a0', '\ufeff', '\u3000x', 'bell\u0007', 'del\u007f', 'c1\u0085', '😀', 'ok\u00a0'];
    for (const text of texts) expect(schema.safeParse({ [field]: text }).success, `${field}=${JSON.stringify(text)}`).toBe(pattern.test(text));
  });

  it('are built from the limits of common/params.json', () => {
    expect(rangePattern(PARAMS.steps, true)).toBe('^(?:(?:[1-9]|[1-9][0-9]|1[0-4][0-9]|150))$');
    expect(rangePattern({ minimum: 0, maximum: 1, exclusive_minimum: true }, false)).toBe(String.raw`^(?:0\.[0-9]*[1-9][0-9]*|1(?:\.0+)?)$`);
    expect(() => rangePattern({ minimum: 0, maximum: 7.5 }, false)).toThrow(/whole-number limits/);
  });
});

// tiny is of the SD family; sd15 stands for a model whose folder cannot be read (the general rules).
const rulesOf = (model: string) => rulesFor(model, model === 'tiny' ? 'sd' : null);

describe('mergeFields and toSubmission', () => {
  it('fills the defaults, steps from the model', () => {
    expect(toSubmission(mergeFields(parse({ model_name: 'sd15' }), parse({ prompt: 'p' })), rulesOf)).toEqual({
      model_name: 'sd15',
      priority: 'normal',
      prompt: 'p',
      negative_prompt: null,
      strength: 0.6,
      steps: 30,
      guidance_scale: 7.5,
      seed: null,
      preview_every: 0,
    });
    expect(toSubmission(parse({ model_name: 'tiny', prompt: 'p' }), rulesOf).steps).toBe(10);
  });

  it('accepts the same value from both sources, refuses different ones', () => {
    expect(mergeFields(parse({ priority: '0' }), parse({ priority: 'high' })).priority).toBe('high');
    expect(() => mergeFields(parse({ priority: 'low' }), parse({ priority: 'high' }))).toThrow(ValidationError);
  });

  it('refuses steps × strength under one denoising step, naming the field the client sent', () => {
    expect(() => toSubmission(parse({ model_name: 'tiny', prompt: 'p', strength: '0.05' }), rulesOf)).toThrow(
      expect.objectContaining({ field: 'strength', message: expect.stringMatching(/steps=10 and strength=0.05 give 0/) }),
    );
    expect(() => toSubmission(parse({ model_name: 'tiny', prompt: 'p', steps: '1' }), rulesOf)).toThrow(expect.objectContaining({ field: 'steps' }));
    expect(() => toSubmission(parse({ model_name: 'tiny', prompt: 'p', steps: '1', strength: '0.9' }), rulesOf)).toThrow(
      expect.objectContaining({ field: 'strength' }),
    );
    expect(toSubmission(parse({ model_name: 'tiny', prompt: 'p', steps: '1', strength: '1' }), rulesOf).steps).toBe(1);
  });

  it('requires a model and a prompt', () => {
    expect(() => toSubmission(parse({ prompt: 'p' }), rulesOf)).toThrow(expect.objectContaining({ field: 'model_name' }));
    expect(() => toSubmission(parse({ model_name: 'tiny' }), rulesOf)).toThrow(expect.objectContaining({ field: 'prompt' }));
  });
});

describe('requestHash', () => {
  const base = toSubmission(parse({ model_name: 'tiny', prompt: 'p' }), rulesOf);
  it('changes with any field and with the image', () => {
    const hash = requestHash(base, 'a');
    expect(requestHash({ ...base }, 'a')).toBe(hash);
    expect(requestHash({ ...base, seed: 1 }, 'a')).not.toBe(hash);
    expect(requestHash({ ...base, priority: 'high' }, 'a')).not.toBe(hash);
    expect(requestHash(base, 'b')).not.toBe(hash);
  });
});
