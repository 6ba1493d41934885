/**
 * Upgrading a running v1 job: it started on the pre-v2 engine, the workers are replaced by the
 * current code mid-run, and the job then continues as new on the new code. Its next run carries a
 * v1 `resume` and must finish on the v1 engine from where it stood — not start round 1 again
 * (every item runs once; on the v2 router the items of the first run ran twice).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { bundleWorkflowCode } from '@temporalio/worker';
import { closedJobResult } from '../../src/client';
import { ErrorTypes, type RunBatchInput, type RunBatchResult, carriedEntries, normalizeSpec } from '../../src/shared';
import { syntheticSpec, workflowBundle } from '../helpers/env';
import { type TimeSkippingEnv, createTimeSkippingEnv } from '../helpers/time-skipping';

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} };
let useV1 = true;
let v1Bundle: ReturnType<typeof bundleWorkflowCode> | undefined;
const bundle = () => (useV1 ? (v1Bundle ??= bundleWorkflowCode({ workflowsPath: require.resolve('../fixtures/v1-only-workflows'), logger: quiet })) : workflowBundle());

const runs = new Map<string, number>();
let holdItem: string | undefined;
let held: () => void = () => undefined;
const heldEntered = new Promise<void>((resolve) => (held = resolve));

async function runBatch(input: RunBatchInput): Promise<RunBatchResult> {
  const outcomes: RunBatchResult['outcomes'] = [];
  for (const entry of carriedEntries(input)) {
    const id = entry.item.id;
    runs.set(id, (runs.get(id) ?? 0) + 1);
    if (id === holdItem) {
      holdItem = undefined;
      held();
      // Held until the worker shuts down, then handed back like a real batch on a deploy.
      await Context.current().cancelled.catch(() => undefined);
      throw ApplicationFailure.create({ type: ErrorTypes.WorkerShutdown, message: 'worker shutting down; batch handed back', details: [undefined, { done: outcomes }] });
    }
    outcomes.push({ item: id, records: entry.outputs.map((output) => ({ item: id, output, status: 'Available' as const })), bytesIn: 0, bytesOut: 0 });
  }
  return { outcomes, notStarted: [] };
}

let ts: TimeSkippingEnv;
before(async () => {
  ts = await createTimeSkippingEnv({ taskQueue: 'faultline-upgrade', activities: { runBatch }, bundle });
});
after(async () => {
  await ts?.teardown();
});

describe('upgrade from engine v1', () => {
  it('a v1 job that continues as new on the new code finishes its round on v1, each item run once', { timeout: 120_000 }, async () => {
    const items = Array.from({ length: 120 }, (_, i) => ({ id: `u${String(i).padStart(3, '0')}` }));
    holdItem = 'u005';
    await ts.startWorker();
    const jobId = 'upgrade-v1';
    // The v1 input shape, as pre-v2 clients started jobs.
    const started = await ts.testEnv.client.workflow.start('jobWorkflow', {
      taskQueue: 'faultline-upgrade',
      workflowId: jobId,
      args: [{ spec: normalizeSpec(syntheticSpec(items, { batchSize: 1, concurrency: 1, rotateAfterEvents: 100 })) }],
    });
    await heldEntered;
    await ts.stopWorker();
    useV1 = false;
    await ts.startWorker();
    const result = await closedJobResult(ts.testEnv.client.workflow.getHandle(jobId));
    const first = await ts.testEnv.client.workflow.getHandle(jobId, started.firstExecutionRunId).fetchHistory();
    assert.ok(
      first.events?.some((event) => event.workflowExecutionContinuedAsNewEventAttributes),
      'the job continued as new after the upgrade',
    );
    assert.equal(result.status, 'Succeeded');
    assert.equal(result.round, 1);
    assert.equal(result.counts.Available, 120);
    const twice = [...runs.entries()].filter(([id, count]) => count > (id === 'u005' ? 2 : 1)).map(([id]) => id);
    assert.deepEqual(twice, [], 'no item ran again');
  });
});
