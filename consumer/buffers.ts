// Messages received but not yet handed to the runner, one FIFO per priority.
// take() always serves the highest priority that has something waiting.
import { PRIORITIES, type Priority } from '../common/topics.js';

export class PriorityBuffers<T> {
  private readonly queues = new Map<Priority, T[]>(PRIORITIES.map((p) => [p, []]));

  push(priority: Priority, item: T): void {
    this.queues.get(priority)!.push(item);
  }

  take(): T | undefined {
    for (const priority of PRIORITIES) {
      const item = this.queues.get(priority)!.shift();
      if (item !== undefined) return item;
    }
    return undefined;
  }

  /** The priority take() would serve next; undefined when nothing waits. */
  nextPriority(): Priority | undefined {
    return PRIORITIES.find((priority) => this.queues.get(priority)!.length > 0);
  }

  size(priority?: Priority): number {
    if (priority) return this.queues.get(priority)!.length;
    let total = 0;
    for (const queue of this.queues.values()) total += queue.length;
    return total;
  }

  /** Removes and returns the items that match, e.g. a canceled job. */
  remove(match: (item: T) => boolean): T[] {
    const removed: T[] = [];
    for (const [priority, queue] of this.queues) {
      this.queues.set(priority, queue.filter((item) => (match(item) ? (removed.push(item), false) : true)));
    }
    return removed;
  }

  clear(): T[] {
    return this.remove(() => true);
  }
}
