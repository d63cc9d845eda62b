// The smallest VirtQueueOwner for queue-level tests: records virtioError messages and stops
// processing after the first, as a device does when it is marked broken.
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import type { Tracer } from '../../src/trace/trace.js';
import type { VirtQueueOwner } from '../../src/vring/virtqueue.js';

export class TestQueueOwner implements VirtQueueOwner {
  tracer: Tracer | undefined;
  broken = false;
  readonly errors: string[] = [];
  constructor(
    readonly memory: GuestMemory,
    readonly name = 'test-dev',
  ) {}
  get processingStopped(): boolean {
    return this.broken;
  }
  virtioError(message: string): void {
    this.errors.push(message);
    this.broken = true;
  }
}
