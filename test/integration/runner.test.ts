/**
 * The item runner, decided deterministically: mocked batch activities on the time-skipping
 * server. Backoff and Retry-After are measured in workflow time (skipped, never slept); crashes are real heartbeat timeouts of a batch that never heartbeats.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { ErrorTypes, type ErrorReport, type JobResult, type RunBatchInput, type RunBatchResult, carriedEntries } from '../../src/shared';
import { closedJobResult } from '../../src/client';
import { createEngineActivities } from '../../src/activities/engine';
import { createLogger } from '../../src/logger';
import { builtInPipelines } from '../../src/pipelines';
import { createStorage } from '../../src/storage';
import { eventually, syntheticSpec } from '../helpers/env';
import { type TimeSkippingEnv, createTimeSkippingEnv } from '../helpers/time-skipping';

let ts: TimeSkippingEnv;
/** Every runBatch call: the item ids it carried. */
const calls: string[][] = [];
/** For each call: whether it ran as a local activity. */
const ranLocally: boolean[] = [];
/** Batches holding a `poison` item never return and never heartbeat: the worker looks dead. */
const hung: (() => void)[] = [];

function failure(item: string, type: string, errorClass: ErrorReport['class']): ErrorReport {
  return { schemaVersion: 1, type, class: errorClass, message: `declared ${type}`, details: {}, item, at: new Date().toISOString() };
}

/**
 * Item ids say what happens: `transient2-*` fails transiently on its first 2 runs, `after3h-*`
 * fails once asking to come back in 3 h, `always-*` always fails transiently, `bad-*` is
 * unprocessable, `poison-*` crashes its batch every time, `unimplemented-*` makes its batch fail
 * as a worker without the pipeline does; anything else is Available.
 */
async function runBatch(input: RunBatchInput): Promise<RunBatchResult> {
  calls.push(carriedEntries(input).map((entry) => entry.item.id));
  ranLocally.push(Context.current().info.isLocal);
  if (carriedEntries(input).some((entry) => entry.item.id.startsWith('unimplemented'))) {
    throw ApplicationFailure.create({ type: ErrorTypes.InternalError, message: 'this worker has no implementation of pipeline "synthetic"', nonRetryable: true });
  }
  if (carriedEntries(input).some((entry) => entry.item.id.startsWith('poison'))) {
    await new Promise<void>((resolve) => hung.push(resolve));
    return { outcomes: [], notStarted: carriedEntries(input).map((entry) => entry.item.id) };
  }
  const outcomes: RunBatchResult['outcomes'] = carriedEntries(input).map((entry) => {
    const id = entry.item.id;
    if (id.startsWith('transient2') && entry.run <= 2) return { item: id, error: failure(id, ErrorTypes.EndpointUnavailable, 'transient') };
    if (id.startsWith('after3h') && entry.run === 1) return { item: id, error: failure(id, ErrorTypes.RateLimited, 'transient'), retryAfterMs: 3 * 3_600_000 };
    if (id.startsWith('always')) return { item: id, error: failure(id, ErrorTypes.EndpointUnavailable, 'transient') };
    if (id.startsWith('bad')) return { item: id, error: failure(id, ErrorTypes.ItemUnprocessable, 'unprocessable') };
    return { item: id, records: entry.outputs.map((output) => ({ item: id, output, status: 'Available' as const })), bytesIn: 0, bytesOut: 0 };
  });
  return { outcomes, notStarted: [] };
}

/** Job storage that fails when the result of a job whose id contains `storage-down` is assembled. */
let assembleSlicesReal: ((input: { jobId: string }) => Promise<unknown>) | undefined;
async function assembleSlices(input: { jobId: string }): Promise<unknown> {
  if (input.jobId.includes('storage-down')) throw ApplicationFailure.create({ type: ErrorTypes.StorageUnwritable, message: 'ENOSPC: no space left on device', nonRetryable: true });
  if (!assembleSlicesReal) throw new Error('no real assembleSlices');
  return assembleSlicesReal(input);
}

before(async () => {
  const storage = createStorage(path.join(mkdtempSync(path.join(os.tmpdir(), 'faultline-runner-')), 'storage'));
  assembleSlicesReal = createEngineActivities({ implementations: {}, registry: builtInPipelines, storage, logger: createLogger({ level: 'error', format: 'json' }), allowedHosts: [], s3: {} })
    .assembleSlices as never;
  ts = await createTimeSkippingEnv({ taskQueue: 'faultline-runner', activities: { runBatch, assembleSlices } });
  await ts.startWorker();
});

after(async () => {
  for (const release of hung) release();
  await ts?.teardown();
});

/** Runs a job to its end, skipping time while it waits. */
async function run(name: string, spec: ReturnType<typeof syntheticSpec>): Promise<{ result: JobResult }> {
  calls.length = 0;
  ranLocally.length = 0;
  const { jobId } = await ts.client.start(spec, { jobId: name });
  return { result: await closedJobResult(ts.testEnv.client.workflow.getHandle(jobId)) };
}

const record = (result: JobResult, item: string) => result.outputs?.find((entry) => entry.item === item);

describe('item runner (time-skipping server, mocked batches)', () => {
  it('a job that fits one batch runs its first run locally; a retry goes through the task queue', async () => {
    const { result } = await run('runner-local', syntheticSpec([{ id: 'transient2-l' }], { retry: { maxAttempts: 5, initialInterval: '1m' } }));
    assert.equal(result.status, 'Succeeded');
    assert.deepEqual(ranLocally, [true, false, false]);
    await run('runner-not-local', syntheticSpec([{ id: 'one' }], { runLocally: false }));
    assert.deepEqual(ranLocally, [false], 'runLocally: false');
    await run('runner-two-batches', syntheticSpec([{ id: 'one' }, { id: 'two' }], { batchSize: 1 }));
    assert.deepEqual(ranLocally, [false, false], 'more than one batch');
  });

  it('backoff follows the retry policy, in workflow time', async () => {
    const started = Date.now();
    const { result } = await run('runner-backoff', syntheticSpec([{ id: 'transient2-a' }], { retry: { maxAttempts: 5, initialInterval: '10m', backoffCoefficient: 2, maximumInterval: '1h' } }));
    assert.equal(result.status, 'Succeeded');
    assert.equal(result.metrics.attempts, 3);
    // 10 min, then 20 min: the job's workflow clock moved 30 min.
    assert.ok(Math.abs(result.metrics.elapsedMs - 30 * 60_000) < 60_000, `elapsed ${result.metrics.elapsedMs} ms of workflow time`);
    assert.ok(Date.now() - started < 60_000, 'half an hour of backoff took no wall-clock time');
  });

  it('Retry-After wins over the policy, even above its maximum interval', async () => {
    const { result } = await run('runner-retry-after', syntheticSpec([{ id: 'after3h-b' }, { id: 'ok' }], { batchSize: 1, retry: { maxAttempts: 5, initialInterval: '1s', maximumInterval: '1h' } }));
    assert.equal(result.status, 'Succeeded');
    assert.equal(result.metrics.attempts, 3);
    assert.ok(Math.abs(result.metrics.elapsedMs - 3 * 3_600_000) < 60_000, `elapsed ${result.metrics.elapsedMs} ms of workflow time`);
  });

  it('a pause holds a backoff timer with its remaining time; after resume the item waits out the rest', async () => {
    calls.length = 0;
    const { jobId } = await ts.client.start(syntheticSpec([{ id: 'transient2-held' }], { retry: { maxAttempts: 5, initialInterval: '1h', backoffCoefficient: 1, maximumInterval: '2h' } }), {
      jobId: 'runner-pause-backoff',
    });
    await eventually(async () => (await ts.client.progress(jobId)).backoff.length === 1, 20_000, 'in backoff');
    assert.deepEqual(await ts.client.pause(jobId), { paused: true, phase: 'paused' });
    await ts.testEnv.sleep('5h');
    assert.equal(calls.length, 1, 'nothing ran while paused, though the 1 h backoff would have ended');
    await ts.client.resume(jobId);
    const result = await closedJobResult(ts.testEnv.client.workflow.getHandle(jobId));
    assert.equal(result.status, 'Succeeded');
    assert.equal(calls.length, 3);
    // 5 h paused + the held rest of the first hour + the second hour: about 7 h of workflow time.
    const hours = result.metrics.elapsedMs / 3_600_000;
    assert.ok(hours > 6.9 && hours < 7.1, `elapsed ${hours.toFixed(2)} h`);
  });

  it('the transient budget: after maxAttempts the item is Failed with its attempts and type', async () => {
    const { result } = await run('runner-transient-budget', syntheticSpec([{ id: 'always-x' }, { id: 'ok' }], { batchSize: 1, retry: { maxAttempts: 3, initialInterval: '1m' } }));
    assert.equal(result.status, 'PartiallySucceeded');
    const failed = record(result, 'always-x');
    assert.equal(failed?.status, 'Failed');
    assert.equal(failed?.error?.type, ErrorTypes.EndpointUnavailable);
    assert.equal(failed?.error?.attempts, 3);
    assert.equal(calls.filter((ids) => ids.includes('always-x')).length, 3);
  });

  it('crash isolation and the crash budget: the poison item is Crashed, its batch mates run isolated and end Available', async () => {
    const { result } = await run('runner-crash', syntheticSpec([{ id: 'a' }, { id: 'poison-p' }, { id: 'b' }], { batchSize: 3, crashBudget: 2, heartbeatTimeout: '1s', runLocally: false }));
    assert.equal(record(result, 'a')?.status, 'Available');
    assert.equal(record(result, 'b')?.status, 'Available');
    const poisoned = record(result, 'poison-p');
    assert.equal(poisoned?.status, 'Failed');
    assert.equal(poisoned?.error?.type, ErrorTypes.Crashed);
    assert.deepEqual(calls[0], ['a', 'poison-p', 'b'], 'one batch first');
    assert.ok(
      calls.slice(1).every((ids) => ids.length === 1),
      `then one item per activity: ${JSON.stringify(calls)}`,
    );
    assert.deepEqual(calls.slice(1, 4).flat().sort(), ['a', 'b', 'poison-p'], 'the suspects run isolated side by side, not one after another');
    // The batch crash is free; the crash among other isolated items cannot be blamed on one of
    // them (a real crash kills them all), so it is re-run strictly alone: 2 solo crashes spend the budget.
    assert.equal(calls.filter((ids) => ids.includes('poison-p')).length, 1 + 1 + 2);
    assert.equal(poisoned?.error?.details.crashes, 2);
  });

  it('a large lost batch re-runs in halves, not one activity per item: 40 items with a poison one take a handful of batches', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => (i === 17 ? 'poison-q' : `h${i}`));
    const { result } = await run(
      'runner-bisect',
      syntheticSpec(
        ids.map((id) => ({ id })),
        { batchSize: 40, crashBudget: 1, heartbeatTimeout: '1s', runLocally: false },
      ),
    );
    for (const id of ids) if (id !== 'poison-q') assert.equal(record(result, id)?.status, 'Available', id);
    assert.equal(record(result, 'poison-q')?.error?.type, ErrorTypes.Crashed);
    assert.deepEqual(calls[0]?.length, 40, 'one batch first');
    // Each loss halves the poison's batch: 40 → 20 → 10 → 5 → 3, then at most 4 items one per activity.
    const poisonBatches = calls.filter((batch) => batch.includes('poison-q')).map((batch) => batch.length);
    assert.deepEqual(poisonBatches.slice(0, 5), [40, 20, 10, 5, 3], JSON.stringify(calls.map((batch) => batch.length)));
    assert.ok(
      calls.every((batch) => batch.length === 40 || batch.length <= 20),
      'no batch after the loss is larger than half',
    );
    assert.ok(calls.length <= 16, `${calls.length} batches (one per item would be over 40): ${JSON.stringify(calls.map((batch) => batch.length))}`);
  });

  it('a batch failure that is not a lost worker keeps its own type: no isolation, no Crashed', async () => {
    const { result } = await run('runner-not-a-crash', syntheticSpec([{ id: 'unimplemented-a' }, { id: 'unimplemented-b' }], { batchSize: 2 }));
    assert.equal(result.status, 'Failed');
    for (const item of ['unimplemented-a', 'unimplemented-b']) assert.equal(record(result, item)?.error?.type, ErrorTypes.InternalError);
    assert.deepEqual(calls, [['unimplemented-a', 'unimplemented-b']], 'one batch, never isolated');
  });

  it('the threshold stops the job as soon as it is certain; the rest is Cancelled with the reason', async () => {
    const items = [{ id: 'bad-0' }, { id: 'bad-1' }, { id: 'bad-2' }, ...Array.from({ length: 7 }, (_, index) => ({ id: `later-${index}` }))];
    const { result } = await run('runner-threshold', syntheticSpec(items, { batchSize: 1, concurrency: 1, toleratedFailureCount: 1 }));
    assert.equal(result.status, 'Failed');
    assert.equal(result.stoppedBy?.type, ErrorTypes.ToleratedFailureThresholdExceeded);
    assert.deepEqual([result.counts.Failed, result.counts.Cancelled, result.counts.Available], [2, 8, 0]);
    assert.ok(result.outputs?.filter((entry) => entry.status === 'Cancelled').every((entry) => entry.reason?.includes(ErrorTypes.ToleratedFailureThresholdExceeded)));
  });

  it('a storage failure while assembling a sliced result still ends the job with a result and a fatal report', async () => {
    const items = Array.from({ length: 30 }, (_, index) => ({ id: `s${index}` }));
    const { result } = await run('runner-storage-down', syntheticSpec(items, { shardSize: 10 }));
    assert.equal(result.status, 'Failed');
    assert.equal(result.stoppedBy?.type, ErrorTypes.StorageUnwritable);
    assert.equal(result.stoppedBy?.class, 'fatal');
    assert.equal(result.counts.Available, 30, 'the counts the slices reported are kept');
    const described = await ts.testEnv.client.workflow.getHandle('runner-storage-down').describe();
    assert.deepEqual(described.searchAttributes.FaultlineStatus, ['Failed'], 'never left Running');
  });
});
