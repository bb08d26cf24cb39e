// Which offset of each topic-partition may be committed. Jobs finish out of order
// (priorities, retries), so the committable offset is the lowest one still pending;
// with nothing pending it is one past the highest offset seen.
export class OffsetTracker {
  private readonly partitions = new Map<string, { pending: Set<bigint>; next: bigint; committed: bigint }>();

  private state(topic: string, partition: number) {
    const key = `${topic}\u0000${partition}`;
    let state = this.partitions.get(key);
    if (!state) {
      state = { pending: new Set(), next: -1n, committed: -1n };
      this.partitions.set(key, state);
    }
    return state;
  }

  /** A message was received and is not finished yet. */
  begin(topic: string, partition: number, offset: string): void {
    const state = this.state(topic, partition);
    const value = BigInt(offset);
    state.pending.add(value);
    if (value + 1n > state.next) state.next = value + 1n;
  }

  /** A message is finished (succeeded, failed for good, dead-lettered or skipped). */
  finish(topic: string, partition: number, offset: string): void {
    this.state(topic, partition).pending.delete(BigInt(offset));
  }

  /** Offsets that moved since the last call, ready for commitOffsets. */
  takeCommittable(): { topic: string; partition: number; offset: string }[] {
    const out: { topic: string; partition: number; offset: string }[] = [];
    for (const [key, state] of this.partitions) {
      let lowest = state.next;
      for (const offset of state.pending) if (offset < lowest) lowest = offset;
      if (lowest > state.committed) {
        state.committed = lowest;
        const [topic = '', partition = '0'] = key.split('\u0000');
        out.push({ topic, partition: Number(partition), offset: lowest.toString() });
      }
    }
    return out;
  }

  /** After a rebalance the group's committed offsets are the truth again. */
  reset(): void {
    this.partitions.clear();
  }
}
