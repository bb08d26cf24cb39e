import { describe, expect, it } from 'vitest';
import { parseModelNames } from '../../common/models.js';
import { allTopics, topicSettings } from '../../common/topics.js';

describe('parseModelNames', () => {
  it('reads names, sources and comments', () => {
    const text = '# models\ntiny\n\nsd15 /models/sd15  # local folder\nsdxl stabilityai/sdxl-base\n';
    expect(parseModelNames(text)).toEqual([
      { name: 'tiny' },
      { name: 'sd15', source: '/models/sd15' },
      { name: 'sdxl', source: 'stabilityai/sdxl-base' },
    ]);
  });

  it.each([['../etc'], ['Upper'], ['a/b'], ['-dash']])('refuses the unsafe name %s and names the line', (name) => {
    expect(() => parseModelNames(`tiny\n${name}\n`)).toThrow(/model_names\.txt:2/);
  });

  it('reads a verification policy after the name or the source', () => {
    expect(parseModelNames('tiny verify=all:2\nsd15 /m/sd15 verify=spot:0.1\nx verify=off\n')).toEqual([
      { name: 'tiny', verify: { kind: 'all' } },
      { name: 'sd15', source: '/m/sd15', verify: { kind: 'spot', fraction: 0.1 } },
      { name: 'x' },
    ]);
    expect(() => parseModelNames('tiny verify=all:3\n')).toThrow(/model_names\.txt:1: verify must be/);
    expect(() => parseModelNames('tiny verify=spot:1.5\n')).toThrow(/verify must be/);
  });

  it('reads a tuning in any order with the verification policy', () => {
    expect(parseModelNames('sd15 sd15-arch tuning=fast\nsdxl sdxl-arch verify=all:2 tuning=compile-first\n')).toEqual([
      { name: 'sd15', source: 'sd15-arch', tuning: 'fast' },
      { name: 'sdxl', source: 'sdxl-arch', tuning: 'compile-first', verify: { kind: 'all' } },
    ]);
    expect(() => parseModelNames('sd15 x tuning=Fast!\n')).toThrow(/model_names\.txt:1: tuning "Fast!" must be one of off, eager, compile, /);
    // A name of the right shape that the runner does not know is refused too (the runner would exit at every restart).
    expect(() => parseModelNames('sd15 x tuning=fastst\n')).toThrow(/model_names\.txt:1: tuning "fastst" must be one of .*fastest/);
    expect(parseModelNames('sd15 x tuning=fastest\n')).toEqual([{ name: 'sd15', source: 'x', tuning: 'fastest' }]);
    expect(() => parseModelNames('sd15 x tuning=fast tuning=off\n')).toThrow(/tuning= is given twice/);
  });

  it('refuses duplicates and empty files', () => {
    expect(() => parseModelNames('tiny\ntiny\n')).toThrow(/twice/);
    expect(() => parseModelNames('# nothing\n')).toThrow(/no models/);
  });
});

describe('allTopics', () => {
  it('lists three priorities and a DLQ per model, one events topic and one cancels topic', () => {
    expect(allTopics('img2img', ['tiny'])).toEqual([
      'img2img.tiny.high',
      'img2img.tiny.normal',
      'img2img.tiny.low',
      'img2img.tiny.dlq',
      'img2img.events',
      'img2img.cancels',
    ]);
  });

  it('compacts the cancels topic (one request per job) and leaves the others to the broker', () => {
    expect(topicSettings('img2img.cancels')).toEqual(expect.arrayContaining([{ name: 'cleanup.policy', value: 'compact,delete' }]));
    expect(topicSettings('img2img.events')).toEqual([]);
    expect(topicSettings('img2img.tiny.high')).toEqual([]);
  });
});
