// The bucket layout of a job: one function names every object, and reads a key back.
import { describe, expect, it } from 'vitest';
import { jobKeys, jobObjectOf } from '../../common/storage.js';

describe('jobKeys and jobObjectOf', () => {
  it('name every object of a job under jobs/<id>/ and read each key back', () => {
    const keys = jobKeys('q0vN3rJ8T6yWm1bXc2dEfA');
    expect(Object.values(keys).every((key) => key.startsWith('jobs/q0vN3rJ8T6yWm1bXc2dEfA/'))).toBe(true);
    for (const [kind, key] of Object.entries(keys)) expect(jobObjectOf(key)).toEqual({ id: 'q0vN3rJ8T6yWm1bXc2dEfA', kind });
  });

  it('know nothing of other keys', () => {
    for (const key of ['jobs/a/other.bin', 'sweep/due/0000000000000/a', 'auth/keys/x.json', 'jobs/']) expect(jobObjectOf(key)).toBeUndefined();
  });
});
