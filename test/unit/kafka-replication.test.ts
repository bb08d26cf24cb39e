// How many copies the project's topics get for a cluster's size (common/kafka.ts).
import { describe, expect, it } from 'vitest';
import { replicationFor } from '../../common/kafka.js';

describe('replicationFor', () => {
  it('keeps one copy on a single broker (the development default)', () => {
    expect(replicationFor(1)).toEqual({ replicationFactor: 1, minInsyncReplicas: 1 });
  });

  it('uses every broker below three, with one in sync so a dead broker does not stop writes', () => {
    expect(replicationFor(2)).toEqual({ replicationFactor: 2, minInsyncReplicas: 1 });
  });

  it('keeps three copies and needs two of them from three brokers on', () => {
    expect(replicationFor(3)).toEqual({ replicationFactor: 3, minInsyncReplicas: 2 });
    expect(replicationFor(9)).toEqual({ replicationFactor: 3, minInsyncReplicas: 2 });
  });
});
