/**
 * Engine v3 on a real dev server: the failure allowance survives continue-as-new (sliced and
 * inline), reading a settled result adds nothing to history, and errors far larger than a payload
 * never hang a job (every payload in the recorded histories stays within its budget).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { temporal } from '@temporalio/proto';
import { BUDGET, ErrorTypes, type JobResult } from '../../src/shared';
import { type RunningWorker, type TestEnv, createTestEnv, historyLength, syntheticSpec } from '../helpers/env';

let env: TestEnv;
let worker: RunningWorker;

before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-engine-v3' });
  worker = await env.startWorker();
});
after(async () => {
  await worker?.stop();
  await env?.teardown();
});

/** Run ids of a workflow, oldest first (one per continue-as-new). */
async function runsOf(workflowId: string): Promise<number> {
  let runs = 0;
  for await (const _ of env.client.client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) runs += 1;
  return runs;
}

/** The largest encoded history event of every workflow whose id starts with `prefix` (the job, its slices). */
async function largestEvent(prefix: string): Promise<{ bytes: number; events: number }> {
  let bytes = 0;
  let events = 0;
  for await (const execution of env.client.client.workflow.list({ query: `WorkflowId STARTS_WITH '${prefix}'` })) {
    let nextPageToken: Uint8Array | undefined;
    do {
      const page = await env.connection.workflowService.getWorkflowExecutionHistory({
        namespace: 'default',
        execution: { workflowId: execution.workflowId, runId: execution.runId },
        maximumPageSize: 3,
        ...(nextPageToken ? { nextPageToken } : {}),
      });
      for (const event of page.history?.events ?? []) {
        events += 1;
        bytes = Math.max(bytes, temporal.api.history.v1.HistoryEvent.encode(event).finish().length);
      }
      nextPageToken = page.nextPageToken && page.nextPageToken.length > 0 ? page.nextPageToken : undefined;
    } while (nextPageToken);
  }
  return { bytes, events };
}

describe('engine v3 (real dev server)', () => {
  it('a sliced job stops on its allowance when failures fall before and after continue-as-new', async () => {
    const items = Array.from({ length: 500 }, (_, i) => ({ id: `i${String(i).padStart(3, '0')}`, params: i < 4 || i >= 496 ? { outcome: 'unprocessable' as const } : {} }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 10, rotateAfterEvents: 100, toleratedFailureCount: 5 }), { jobId: 'v3-allowance-sliced' });
    const result = await env.client.result(jobId);
    assert.ok((await runsOf(jobId)) > 1, 'the job continued as new');
    assert.equal(result.status, 'Failed', JSON.stringify(result.counts));
    assert.equal(result.stoppedBy?.type, ErrorTypes.ToleratedFailureThresholdExceeded);
    assert.ok(result.counts.Failed >= 6, `failed ${result.counts.Failed}`);
    assert.equal(result.counts.outputs, 500);
  });

  it('an inline job stops on its allowance across continue-as-new', async () => {
    const items = Array.from({ length: 60 }, (_, i) => ({ id: `i${String(i).padStart(2, '0')}`, params: i < 4 || i >= 56 ? { outcome: 'unprocessable' as const } : {} }));
    const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 1, concurrency: 1, rotateAfterEvents: 100, toleratedFailureCount: 5 }), { jobId: 'v3-allowance-inline' });
    const result = await env.client.result(jobId);
    assert.ok((await runsOf(jobId)) > 1, 'the job continued as new');
    assert.equal(result.status, 'Failed', JSON.stringify(result.counts));
    assert.equal(result.counts.Failed, 6);
    assert.equal(result.counts.outputs, 60);
  });

  it('the job-wide allowance stops a CPU-bound job promptly, not when the first batches end', async () => {
    // 11 failures among the first items of 6 slices; allowance 10; 64 × 30 ms of CPU per slice wave on 2 cores.
    const failing = new Set([0, 1, 200, 201, 400, 401, 600, 601, 800, 801, 1000]);
    const items = Array.from({ length: 2_000 }, (_, i) => ({ id: `c${i}`, params: failing.has(i) ? { outcome: 'unprocessable' as const } : { cpuMs: 30 } }));
    const started = Date.now();
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 200, batchSize: 10, toleratedFailureCount: 10 }), { jobId: 'v3-prompt-threshold' });
    const result = await env.client.result(jobId);
    const elapsed = Date.now() - started;
    assert.equal(result.status, 'Failed');
    assert.equal(result.stoppedBy?.type, ErrorTypes.ToleratedFailureThresholdExceeded);
    assert.ok(result.counts.Cancelled >= 1_000, `only ${result.counts.Cancelled} of 2000 items Cancelled (${elapsed} ms)`);
    assert.ok(elapsed < 25_000, `took ${elapsed} ms`);
  });

  it('metrics count every attempt across continue-as-new', async () => {
    const items = Array.from({ length: 500 }, (_, i) => ({ id: `m${i}`, params: {} }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 10, rotateAfterEvents: 100 }), { jobId: 'v3-metrics' });
    const result = await env.client.result(jobId);
    assert.ok((await runsOf(jobId)) > 1, 'the job continued as new');
    assert.equal(result.metrics.attempts, 500);
  });

  it('reading a settled result many times adds nothing to the history', async () => {
    const { jobId } = await env.client.start(syntheticSpec([{ id: 'ok' }, { id: 'bad', params: { outcome: 'unprocessable' } }], { retryWindow: '10m' }), { jobId: 'v3-reads' });
    const first: JobResult = await env.client.result(jobId);
    assert.equal(first.status, 'PartiallySucceeded');
    const before = await historyLength(env.client, jobId);
    for (let i = 0; i < 20; i++) assert.equal((await env.client.result(jobId)).round, 1);
    assert.equal(await historyLength(env.client, jobId), before);
    await env.client.cancel(jobId, 'done reading');
  });

  it('errors of megabytes with deep cause chains: the job closes, every payload within budget, full reports kept', async () => {
    const big = (i: number) => ({ outcome: 'unprocessable' as const, errorBytes: i % 50 === 0 ? 1_000_000 : 32_000, causeDepth: 12 });
    const inSlice = Array.from({ length: 1_000 }, (_, i) => ({ id: `s${i}`, params: big(i) }));
    const sliced = Array.from({ length: 5_000 }, (_, i) => ({ id: `m${i}`, params: big(i) }));
    const [one, many] = await Promise.all([
      env.client.start(syntheticSpec(inSlice, { shardSize: 1_000, batchSize: 100, toleratedFailurePercent: 100 }), { jobId: 'v3-bytes-one' }),
      env.client.start(syntheticSpec(sliced, { shardSize: 1_000, batchSize: 200, toleratedFailurePercent: 100 }), { jobId: 'v3-bytes-many' }),
    ]);
    for (const [job, count] of [
      [one, 1_000],
      [many, 5_000],
    ] as const) {
      const result = await env.client.result(job.jobId);
      assert.equal(result.status, 'Failed');
      assert.equal(result.counts.Failed, count);
      assert.equal(result.failureCounts[ErrorTypes.ItemUnprocessable], count);
      const history = await largestEvent(job.jobId);
      assert.ok(history.bytes < BUDGET.result + 100_000, `largest history event of ${job.jobId}: ${history.bytes} bytes`);
      const records = await env.client.records(result);
      const record = records.find((candidate) => candidate.item.endsWith('00') && candidate.error);
      assert.ok(record?.error, 'a failed record');
      assert.ok(record.error.message.length < 2_000, 'the message in the record is cut');
      assert.match(record.error.message, /truncated \d+ chars/);
      const full = record.error.details.fullReport;
      assert.equal(typeof full, 'string', 'the full report is referenced');
      const stored = JSON.parse(await readFile(fileURLToPath(full as string), 'utf8')) as { message: string; details: { cause?: unknown } };
      assert.ok(stored.message.length > 1_000_000, 'the stored report has the whole message');
      let depth = 0;
      for (let cause = stored.details.cause as { details?: { cause?: unknown } } | undefined; cause; cause = cause.details?.cause as typeof cause) depth += 1;
      assert.ok(depth >= 8, `stored cause chain depth ${depth}`);
    }
  });
});
