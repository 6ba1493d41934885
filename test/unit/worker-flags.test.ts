/**
 * The V8 flags a supervisor gives its worker processes: the heap limit, and garbage collected on
 * each process's main thread when every core runs a process (FAULTLINE_WORKER_GC).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config';
import { workerNodeFlags } from '../../src/supervisor';

describe('worker process flags', () => {
  it('auto: main-thread GC once there are as many processes as cores, parallel GC below that', () => {
    assert.deepEqual(workerNodeFlags({ processes: 2, maxHeapMb: 256 }, 2), ['--max-old-space-size=256', '--single-threaded-gc']);
    assert.deepEqual(workerNodeFlags({ processes: 4 }, 2), ['--single-threaded-gc']);
    assert.deepEqual(workerNodeFlags({ processes: 1, maxHeapMb: 256 }, 2), ['--max-old-space-size=256']);
    assert.deepEqual(workerNodeFlags({ processes: 1, maxHeapMb: 0, gc: 'auto' }, 8), []);
  });

  it('an explicit mode wins over the count', () => {
    assert.deepEqual(workerNodeFlags({ processes: 1, gc: 'main-thread' }, 8), ['--single-threaded-gc']);
    assert.deepEqual(workerNodeFlags({ processes: 8, gc: 'parallel' }, 2), []);
  });

  it('FAULTLINE_WORKER_GC is parsed with the rest of the configuration, and a bad value is refused by name', () => {
    assert.equal(loadConfig({}, '/tmp').workerGc, 'auto');
    assert.equal(loadConfig({ FAULTLINE_WORKER_GC: 'parallel' }, '/tmp').workerGc, 'parallel');
    assert.throws(
      () => loadConfig({ FAULTLINE_WORKER_GC: 'sometimes' }, '/tmp'),
      (error: Error) => /FAULTLINE_WORKER_GC/.test(error.message),
    );
  });
});
