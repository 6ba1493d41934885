/**
 * Histories made live replay: a sliced job whose spec check (a local activity) is answered in a
 * later workflow task than on replay, because queries arrived during its first task. Every patch
 * the job decides after that check must be decided before it, or a worker that replays the job
 * from scratch (restarted, cache evicted) fails it with nondeterminism and the job is stuck.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { resultQuery } from '../../src/shared';
import { type RunningWorker, type TestEnv, createTestEnv, syntheticSpec, workflowBundle } from '../helpers/env';

let env: TestEnv;
let worker: RunningWorker;

before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-replay-live', envExtra: { FAULTLINE_LOG_LEVEL: 'error' } });
  worker = await env.startWorker();
});
after(async () => {
  await worker?.stop();
  await env?.teardown();
});

describe('histories made live replay from scratch', () => {
  it("a sliced job queried during its first workflow task (the spec check's result lands in the next task) replays", async () => {
    let split = 0;
    const failures: string[] = [];
    for (let attempt = 0; attempt < 40 && split < 2; attempt++) {
      const items = Array.from({ length: 13 }, (_, index) => ({ id: `q${index}` }));
      const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 10, batchSize: 2 }));
      const handle = env.client.handle(jobId);
      // Queries while the first task runs make the worker finish it before the local activity's result is applied.
      await Promise.all([handle.query(resultQuery).catch(() => undefined), handle.query(resultQuery).catch(() => undefined)]);
      await env.client.result(jobId);
      const history = await env.client.client.workflow.getHandle(jobId).fetchHistory();
      const events = history.events ?? [];
      const checked = events.findIndex((event) => event.markerRecordedEventAttributes?.markerName === 'core_local_activity');
      const sliced = events.findIndex((event) => event.startChildWorkflowExecutionInitiatedEventAttributes);
      if (checked < 0 || sliced < 0 || !events.slice(checked, sliced).some((event) => event.workflowTaskCompletedEventAttributes)) continue;
      split += 1;
      await Worker.runReplayHistory({ workflowBundle: await workflowBundle(), replayName: 'replay-live' }, temporal.api.history.v1.History.create(history), jobId).catch((error: unknown) =>
        failures.push(String(error).slice(0, 600)),
      );
    }
    assert.ok(split > 0, 'no job had its spec check answered in a later workflow task: the case was not made');
    assert.deepEqual(failures, [], `${failures.length} of ${split} such histories failed to replay`);
  });
});
