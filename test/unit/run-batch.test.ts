/**
 * The batch activity itself (Temporal's MockActivityEnvironment, the real synthetic pipeline): a
 * hung item is cut off at its step's deadline as a transient `ItemTimedOut` attempt while the
 * rest of its batch goes on, and cancellation hands unstarted items back.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createEngineActivities } from '../../src/activities/engine';
import { createSyntheticPipeline } from '../../src/pipelines/synthetic';
import { createLogger } from '../../src/logger';
import { builtInPipelines } from '../../src/pipelines';
import { ErrorTypes, type RunBatchInput, type RunBatchResult } from '../../src/shared';
import { createStorage } from '../../src/storage';

const activities = createEngineActivities({
  implementations: { synthetic: createSyntheticPipeline({ crashProcess: () => assert.fail('no crash here') }).implementation },
  registry: builtInPipelines,
  storage: createStorage('/nonexistent-faultline-storage'),
  logger: createLogger({ level: 'silent', format: 'json' }),
  allowedHosts: [],
  s3: {},
});

function batch(ids: { id: string; outcome?: 'hang' }[], itemTimeoutMs?: number): RunBatchInput {
  return {
    job: { jobId: 'unit', pipeline: 'synthetic' },
    entries: ids.map(({ id, outcome }) => ({ item: { id, ...(outcome ? { params: { outcome } } : {}) }, outputs: ['result'], run: 1 })),
    heartbeatTimeoutMs: 20_000,
    isolated: false,
    ...(itemTimeoutMs !== undefined ? { itemTimeoutMs } : {}),
  };
}

describe('runBatch activity', () => {
  it('a hung item becomes a transient ItemTimedOut attempt at its deadline; its batch mates finish', async () => {
    const env = new MockActivityEnvironment();
    const started = performance.now();
    const result = (await env.run(activities.runBatch, batch([{ id: 'before' }, { id: 'stuck', outcome: 'hang' }, { id: 'after' }], 300))) as RunBatchResult;
    const byItem = new Map(result.outcomes.map((outcome) => [outcome.item, outcome]));
    const stuck = byItem.get('stuck');
    assert.ok(stuck && 'error' in stuck);
    assert.equal(stuck.error.type, ErrorTypes.ItemTimedOut);
    assert.equal(stuck.error.class, 'transient');
    for (const id of ['before', 'after']) {
      const outcome = byItem.get(id);
      assert.ok(outcome && 'records' in outcome, `${id} finished`);
    }
    assert.deepEqual(result.notStarted, []);
    assert.ok(performance.now() - started < 5_000, 'cut off at the deadline, not at the batch timeout');
  });

  it('cancellation stops the batch: the hung item and everything after it are handed back unstarted', async () => {
    const env = new MockActivityEnvironment();
    const running = env.run(activities.runBatch, batch([{ id: 'done' }, { id: 'stuck', outcome: 'hang' }, { id: 'never' }])) as Promise<RunBatchResult>;
    setImmediate(() => env.cancel());
    const result = await running;
    assert.deepEqual(
      result.outcomes.map((outcome) => outcome.item),
      ['done'],
    );
    assert.deepEqual(result.notStarted, ['stuck', 'never']);
  });
});
