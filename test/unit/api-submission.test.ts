import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../api/errors.js';
import { mergeFields, requestHash, submissionFields, toSubmission, type SubmissionFields } from '../../api/submission.js';

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
});

describe('mergeFields and toSubmission', () => {
  it('fills the defaults, steps from the model', () => {
    expect(toSubmission(mergeFields(parse({ model_name: 'sd15' }), parse({ prompt: 'p' })))).toEqual({
      model_name: 'sd15',
      priority: 'normal',
      prompt: 'p',
      negative_prompt: null,
      strength: 0.6,
      steps: 30,
      guidance_scale: 7.5,
      seed: null,
    });
    expect(toSubmission(parse({ model_name: 'tiny', prompt: 'p' })).steps).toBe(10);
  });

  it('accepts the same value from both sources, refuses different ones', () => {
    expect(mergeFields(parse({ priority: '0' }), parse({ priority: 'high' })).priority).toBe('high');
    expect(() => mergeFields(parse({ priority: 'low' }), parse({ priority: 'high' }))).toThrow(ValidationError);
  });

  it('requires a model and a prompt', () => {
    expect(() => toSubmission(parse({ prompt: 'p' }))).toThrow(expect.objectContaining({ field: 'model_name' }));
    expect(() => toSubmission(parse({ model_name: 'tiny' }))).toThrow(expect.objectContaining({ field: 'prompt' }));
  });
});

describe('requestHash', () => {
  const base = toSubmission(parse({ model_name: 'tiny', prompt: 'p' }));
  it('changes with any field and with the image', () => {
    const hash = requestHash(base, 'a');
    expect(requestHash({ ...base }, 'a')).toBe(hash);
    expect(requestHash({ ...base, seed: 1 }, 'a')).not.toBe(hash);
    expect(requestHash({ ...base, priority: 'high' }, 'a')).not.toBe(hash);
    expect(requestHash(base, 'b')).not.toBe(hash);
  });
});
