/**
 * Items out of history (real dev server): a stored spec's slices keep only their items' ids; each
 * batch names its items by place in the pinned items and writes its finished items' records to job
 * storage, so no item and no record of a finished item passes through a batch's history events.
 * The result still holds every record once, in item order, and retries, failures and rotation work.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { temporal } from '@temporalio/proto';
import { FaultlineClient } from '../../src/client';
import {
  JOB_PROGRESS_MEMO_KEY,
  type JobProgressMemo,
  type JobProgress,
  type RunBatchInput,
  type RunBatchResult,
  SLICE_PROGRESS_MEMO_KEY,
  type SliceCounts,
  progressQuery,
  retrySignal,
  sliceWorkflowId,
} from '../../src/shared';
import { type RunningWorker, type TestEnv, createTestEnv, eventually, syntheticSpec } from '../helpers/env';

let env: TestEnv;
let worker: RunningWorker;

before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-by-place' });
  worker = await env.startWorker();
});
after(async () => {
  await worker?.stop();
  await env?.teardown();
});

interface SliceHistory {
  workflowId: string;
  bytes: Buffer;
  batches: { input: RunBatchInput; result?: RunBatchResult }[];
}

const json = (payloads: temporal.api.common.v1.IPayloads | null | undefined): unknown => JSON.parse(Buffer.from(payloads?.payloads?.[0]?.data ?? []).toString());

/** Every run of every slice of the job: its encoded history, and its runBatch inputs and results. */
async function sliceHistories(jobId: string): Promise<SliceHistory[]> {
  const histories: SliceHistory[] = [];
  for await (const execution of env.client.client.workflow.list({ query: `WorkflowId STARTS_WITH '${jobId}/slice-'` })) {
    const history = await env.client.client.workflow.getHandle(execution.workflowId, execution.runId).fetchHistory();
    const batches = new Map<string, SliceHistory['batches'][number]>();
    for (const event of history.events ?? []) {
      const scheduled = event.activityTaskScheduledEventAttributes;
      if (scheduled?.activityType?.name === 'runBatch') batches.set(String(event.eventId), { input: json(scheduled.input) as RunBatchInput });
      const completed = event.activityTaskCompletedEventAttributes;
      const batch = completed ? batches.get(String(completed.scheduledEventId)) : undefined;
      if (completed && batch) batch.result = json(completed.result) as RunBatchResult;
    }
    histories.push({ workflowId: execution.workflowId, bytes: Buffer.from(temporal.api.history.v1.History.encode(history).finish()), batches: [...batches.values()] });
  }
  return histories;
}

/** `progress` through a new client, as each `faultline status` is; it must answer within 5 s (no worker may be running). */
async function progressFromNewClient(jobId: string): Promise<JobProgress> {
  const fresh = await FaultlineClient.connect({ config: env.config });
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([fresh.progress(jobId), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('progress did not answer without a worker')), 5_000)))]);
  } finally {
    clearTimeout(timer);
    await fresh.close();
  }
}

function occurrences(haystack: Buffer, needle: string): number {
  let count = 0;
  for (let at = haystack.indexOf(needle); at !== -1; at = haystack.indexOf(needle, at + 1)) count += 1;
  return count;
}

describe('items out of history (real dev server)', () => {
  it('batches of a stored spec carry no items and return no records of finished items; the result has every record once, in item order', async () => {
    // Long ids make the spec larger than an inline payload: it is pinned in job storage.
    const id = (i: number) => `item-${String(i).padStart(5, '0')}-`.padEnd(64, 'z');
    const items = Array.from({ length: 6_000 }, (_, i) => {
      if (i === 4_321) return { id: id(i), params: { outcome: 'unprocessable' as const } };
      if (i === 77) return { id: id(i), params: { outcome: 'missing' as const } };
      return i % 2_000 === 5 ? { id: id(i), params: { transientFailures: 1 } } : { id: id(i) };
    });
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 2_000, batchSize: 50, concurrency: 4, rotateAfterEvents: 100, retry: { initialInterval: '10ms' } }), {
      jobId: 'by-place',
    });
    const result = await env.client.result(jobId);
    assert.equal(result.status, 'PartiallySucceeded');
    assert.deepEqual([result.counts.items, result.counts.Available, result.counts.Missing, result.counts.Failed, result.counts.Cancelled], [6_000, 5_998, 1, 1, 0]);

    const records = await env.client.records(result);
    assert.deepEqual(
      records.map((record) => record.item),
      items.map((item) => item.id),
      'one record per item, in item order',
    );
    assert.equal(records[77]?.status, 'Missing');
    assert.equal(records[4_321]?.error?.type, 'ItemUnprocessable');
    assert.equal(records[5]?.status, 'Available', 'the item that failed once was retried');

    const slices = await sliceHistories(jobId);
    assert.ok(slices.length > 3, `the slices rotated (${slices.length} runs of 3 slices)`);
    const batches = slices.flatMap((slice) => slice.batches);
    assert.ok(batches.length >= 60, `${batches.length} batches`);
    for (const { input, result: batchResult } of batches) {
      assert.equal(input.entries, undefined, 'no batch carries its items');
      assert.equal(input.items?.kind, 'stored');
      assert.ok(input.recordsPart, 'each batch has its own records part');
      assert.ok(batchResult, 'every batch completed');
      assert.ok(
        batchResult.outcomes.every((outcome) => 'error' in outcome),
        'a result names only the items that did not finish',
      );
    }
    assert.equal(new Set(batches.map((batch) => batch.input.recordsPart)).size, batches.length, 'records parts are never shared');
    // An item of a slice's first batch is in its slice's history once: where the slice learnt its ids.
    const plain = id(10);
    const slice = slices.filter((candidate) => candidate.workflowId.endsWith('/slice-0-r1'));
    assert.equal(
      slice.reduce((sum, run) => sum + occurrences(run.bytes, plain), 0),
      1,
      'an item that finished at once appears once in its slice',
    );
    const flaky = id(2_005);
    const flakySlice = slices.filter((candidate) => candidate.workflowId.endsWith('/slice-1-r1'));
    assert.ok(flakySlice.reduce((sum, run) => sum + occurrences(run.bytes, flaky), 0) >= 2, 'an item whose first run failed is named by its failure');
  });

  it("a stopped slice's items that never ran become Cancelled from the pinned items, not through its history; one waiting to retry keeps its error", async () => {
    const id = (i: number) => `stop-${String(i).padStart(5, '0')}-`.padEnd(64, 'z');
    const items = Array.from({ length: 4_000 }, (_, i) => {
      if (i === 1) return { id: id(i), params: { transientFailures: 5 } };
      if (i === 120) return { id: id(i), params: { outcome: 'fatal' as const } };
      return { id: id(i) };
    });
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 2_000, batchSize: 40, concurrency: 1, retry: { initialInterval: '1h' } }), { jobId: 'by-place-stop' });
    const result = await env.client.result(jobId);
    assert.equal(result.status, 'Failed');
    assert.equal(result.counts.items, 4_000);
    assert.ok(result.counts.Cancelled > 3_000, `${result.counts.Cancelled} Cancelled`);
    const records = await env.client.records(result);
    assert.deepEqual(
      records.map((record) => record.item),
      items.map((item) => item.id),
      'one record per item, in item order',
    );
    assert.equal(records[1]?.status, 'Cancelled');
    assert.equal(records[1]?.error?.type, 'TransientItemError', 'the item waiting to retry keeps the error it waited on');
    assert.equal(records[120]?.error?.type, 'FatalItemError');
    // Slice 0 met the fatal item; the job then stopped slice 1, telling it why.
    for (const at of [1_999, 3_999]) {
      assert.deepEqual(records[at], { item: id(at), output: 'result', status: 'Cancelled', reason: 'job ended early by FatalItemError' });
    }
    // The last item of each slice never ran: named once in its slice's history (where the slice learnt its ids), not again as a record.
    const slices = await sliceHistories(jobId);
    for (const [index, at] of [
      [0, 1_999],
      [1, 3_999],
    ] as const) {
      const runs = slices.filter((slice) => slice.workflowId.endsWith(`/slice-${index}-r1`));
      assert.equal(
        runs.reduce((sum, run) => sum + occurrences(run.bytes, id(at)), 0),
        1,
        `item ${at} appears once in slice ${index}`,
      );
    }
  });

  it("an operator's cancel of a sliced job: every running slice's unfinished items are Cancelled with the operator's reason", async () => {
    const id = (i: number) => `cancel-${String(i).padStart(5, '0')}-`.padEnd(64, 'z');
    const items = Array.from({ length: 4_000 }, (_, i) => ({ id: id(i), params: { cpuMs: 2 } }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 2_000, batchSize: 20, concurrency: 1 }), { jobId: 'by-place-cancel' });
    await eventually(async () => (await env.client.progress(jobId)).counts.Available >= 40, 30_000, 'both slices running');
    await env.client.cancel(jobId, 'operator said stop');
    const result = await env.client.result(jobId);
    assert.equal(result.status, 'Cancelled');
    const records = await env.client.records(result);
    assert.equal(records.length, 4_000);
    for (const at of [1_999, 3_999]) {
      assert.deepEqual(records[at], { item: id(at), output: 'result', status: 'Cancelled', reason: 'job cancelled: operator said stop' }, `slice ${at < 2_000 ? 0 : 1}`);
    }
  });

  it('a retry round of a stored spec runs the selected items by place and keeps every record in item order', async () => {
    const id = (i: number) => `again-${String(i).padStart(5, '0')}-`.padEnd(64, 'z');
    const items = Array.from({ length: 4_500 }, (_, i) => (i % 1_000 === 3 ? { id: id(i), params: { outcome: 'unprocessable' as const } } : { id: id(i) }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 2_000, batchSize: 100, retryWindow: '1m' }), { jobId: 'by-place-retry' });
    const first = await env.client.result(jobId);
    assert.equal(first.counts.Failed, 5);
    await env.client.retry(jobId, { types: ['ItemUnprocessable'] });
    const second = await env.client.result(jobId, { round: 2 });
    assert.deepEqual([second.counts.items, second.counts.Available, second.counts.Failed], [4_500, 4_495, 5]);
    const records = await env.client.records(second);
    assert.deepEqual(
      records.map((record) => record.item),
      items.map((item) => item.id),
    );
    const retried = (await sliceHistories(jobId)).filter((slice) => slice.workflowId.includes('-r2'));
    assert.equal(retried.length, 3, 'every slice with a failed item ran again');
    const batches = retried.flatMap((slice) => slice.batches.map((batch) => batch.input.items));
    assert.ok(
      batches.every((batch) => batch?.kind === 'stored'),
      'retried items are named by place',
    );
    assert.deepEqual(
      batches.flatMap((batch) => (batch?.kind === 'stored' ? batch.ranges : [])).sort((a, b) => a[0] - b[0]),
      [
        [3, 4],
        [1_003, 1_004],
        [2_003, 2_004],
        [3_003, 3_004],
        [4_003, 4_004],
      ],
      'the selected items, nothing else',
    );
    await env.client.cancel(jobId, 'done');
  });

  it("a sliced job's progress comes from the server: each slice's finished batches from its memo, its running batch's finished items from that batch's heartbeat", async () => {
    // Two slices of 20 items, one batch at a time, batches of 10: in each slice the first batch
    // finishes, the second finishes 9 items and hangs on its last one. The job's progress must
    // count all 38 while every slice still runs (a slice's own query counts only ended batches: 20).
    const items = Array.from({ length: 40 }, (_, i) => ({ id: `live-${i}`, ...(i % 20 === 19 ? { params: { outcome: 'hang' as const } } : {}) }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 20, batchSize: 10, concurrency: 1, heartbeatTimeout: '2s' }), { jobId: 'live-progress' });
    await eventually(async () => (await env.client.progress(jobId)).counts.Available === 38, 30_000, '38 finished items counted while the batches run');
    const progress = await env.client.progress(jobId);
    assert.deepEqual([...(progress.slicesRunning ?? [])].sort(), [0, 1], 'both slices still run');
    for (const index of [0, 1]) {
      const memo = (await env.client.client.workflow.getHandle(sliceWorkflowId(jobId, index, 1)).describe()).memo?.[SLICE_PROGRESS_MEMO_KEY] as SliceCounts | undefined;
      assert.equal(memo?.Available, 10, `slice ${index} keeps its ended batch's counts in its memo`);
      assert.equal(memo?.outputs, 20, `slice ${index} keeps its items' outputs in its memo`);
    }
    await env.client.cancel(jobId, 'done');
    const result = await env.client.result(jobId);
    assert.deepEqual([result.counts.Available, result.counts.Cancelled], [38, 2]);
  });

  it("a sliced job's progress is answered by the server alone, exactly as the job's query answers it, even with no worker running", async () => {
    const items = Array.from({ length: 40 }, (_, i) => ({ id: `gone-${i}`, ...(i % 20 === 19 ? { params: { outcome: 'hang' as const } } : {}) }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 20, batchSize: 10, concurrency: 1, heartbeatTimeout: '60s' }), { jobId: 'progress-without-worker' });
    await eventually(async () => (await env.client.progress(jobId)).counts.Available === 38, 30_000, '38 finished items counted while the batches run');
    // Operator changes while it runs: held, a lower limit, a retry that waits for the round to settle.
    await env.client.pause(jobId);
    await env.client.setLimits(jobId, { concurrency: 3 });
    await env.client.handle(jobId).signal(retrySignal, { types: ['NoSuchType'] });
    await eventually(async () => (await env.client.handle(jobId).query(progressQuery)).pendingRequests === 1, 10_000, 'the retry queued');
    const { slicesRunning: queriedRunning, counts: _counts, ...queried } = await env.client.handle(jobId).query(progressQuery);
    const memo = (await env.client.handle(jobId).describe()).memo?.[JOB_PROGRESS_MEMO_KEY] as JobProgressMemo | undefined;
    assert.ok(memo, 'the job keeps its progress in its memo');
    assert.deepEqual([...(memo.slicesRunning ?? [])].sort(), [...(queriedRunning ?? [])].sort(), 'the memo names the slices not taken, as the query does');
    assert.equal(memo.slicesRunning?.length, 2);

    await worker.stop();
    // A new client, as each `faultline status` is: it also asks the job by query, which cannot answer now.
    const answered = await progressFromNewClient(jobId);
    // This client saw 38 finished while the batches ran; a stopped worker handed its batches back, and it shows no fewer.
    const sameClient = await env.client.progress(jobId);
    worker = await env.startWorker();
    const { slicesRunning, counts, ...shown } = answered;
    assert.deepEqual(shown, queried, 'everything but the counts and running slices as the query answered');
    assert.equal(shown.phase, 'paused');
    assert.equal(shown.limits?.concurrency, 3);
    assert.equal(shown.pendingRequests, 1);
    assert.deepEqual([...(slicesRunning ?? [])].sort(), [0, 1], 'running slices as the server lists them');
    assert.ok(counts.Available >= 20 && counts.Available <= 38, `finished items counted from the slices as the server keeps them: ${counts.Available}`);
    assert.equal(sameClient.counts.Available, 38, 'a client never shows fewer than it showed in the same round');
    await env.client.cancel(jobId, 'done');
    const result = await env.client.result(jobId);
    assert.deepEqual([result.counts.Available, result.counts.Cancelled], [38, 2]);
    assert.equal((await env.client.handle(jobId).describe()).memo?.[JOB_PROGRESS_MEMO_KEY], undefined, 'the memo is removed once the slices end');
  });

  it('a job whose worker is still importing its items answers progress from its memo, with no worker running', async () => {
    // An items source that sends its first line and then holds: the worker's import stays in flight.
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    let requests = 0;
    const source = http.createServer((_req, res) => {
      requests += 1;
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write('{"id":"imported-0"}\n');
      void held.then(() => res.end('{"id":"imported-1"}\n'));
    });
    await new Promise<void>((resolve) => source.listen(0, '127.0.0.1', resolve));
    try {
      await worker.stop();
      worker = await env.startWorker({ allowedHosts: ['127.0.0.1'] });
      const from = `http://127.0.0.1:${(source.address() as AddressInfo).port}/items.ndjson`;
      const { jobId } = await env.client.start({ pipeline: 'synthetic', itemsFrom: from }, { jobId: 'progress-while-importing' });
      await eventually(async () => requests > 0 && (await env.client.handle(jobId).describe()).memo?.[JOB_PROGRESS_MEMO_KEY] !== undefined, 20_000, 'the import under way, the progress in the memo');
      await worker.stop();
      const answered = await progressFromNewClient(jobId);
      assert.equal(answered.phase, 'validating');
      assert.deepEqual([answered.counts.items, answered.counts.outputs, answered.inFlight, answered.settled], [0, 0, 0, false]);
      release();
      worker = await env.startWorker({ allowedHosts: ['127.0.0.1'] });
      const result = await env.client.result(jobId);
      assert.deepEqual([result.status, result.counts.Available], ['Succeeded', 2]);
      assert.equal((await env.client.handle(jobId).describe()).memo?.[JOB_PROGRESS_MEMO_KEY], undefined, 'the memo is gone with the job');
    } finally {
      release();
      source.closeAllConnections();
      source.close();
    }
  });

  it("a sliced job's progress never steps back while its slices end one after another and the job continues as new", async () => {
    // 30 short slices: each ends (and leaves the server's running list) a moment before the job's memo counts it.
    const items = Array.from({ length: 300 }, (_, i) => ({ id: `mono-${i}`, params: { cpuMs: 5 } }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 10, batchSize: 5, rotateAfterEvents: 100 }), { jobId: 'progress-monotone' });
    const shown: number[] = [];
    while ((await env.client.handle(jobId).describe()).status.name === 'RUNNING') {
      const progress = await env.client.progress(jobId).catch(() => undefined);
      if (progress && !progress.settled) shown.push(progress.counts.Available);
    }
    assert.ok(shown.length > 10, `asked ${shown.length} times while it ran`);
    const steps = shown.flatMap((count, index) => (index > 0 && count < (shown[index - 1] ?? 0) ? [`${shown[index - 1]} -> ${count}`] : []));
    assert.deepEqual(steps, [], 'Available never goes down');
    assert.equal((await env.client.result(jobId)).counts.Available, 300);
  });
});
