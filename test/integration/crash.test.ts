import assert from 'node:assert/strict';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { temporal } from '@temporalio/proto';
import { type BatchProgress, ErrorTypes, type JobResult, type RunBatchInput } from '../../src/shared';
import { type TestEnv, createTestEnv, eventually, historyLength, syntheticSpec } from '../helpers/env';

// Real worker processes: crashes kill them for real, and a supervisor restarts them.
let env: TestEnv;

before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-crash' });
});
after(async () => {
  await env?.teardown();
});

function byItem(result: JobResult): Map<string, string> {
  const seen = new Map<string, string>();
  for (const record of result.outputs ?? []) {
    assert.ok(!seen.has(record.item), `item ${record.item} appears twice`);
    seen.set(record.item, record.status);
  }
  return seen;
}

async function activityEvents(jobId: string) {
  const history = await env.client.client.workflow.getHandle(jobId).fetchHistory();
  const events = history.events ?? [];
  return {
    timeouts: events.filter((event) => event.activityTaskTimedOutEventAttributes).length,
    failureTypes: events.map((event) => event.activityTaskFailedEventAttributes?.failure?.applicationFailureInfo?.type).filter(Boolean),
  };
}

/** The job's batches: run by local activity (with the failure type of each that failed) and scheduled on the task queue. */
async function batchRuns(jobId: string) {
  const history = await env.client.client.workflow.getHandle(jobId).fetchHistory();
  const local: (string | undefined)[] = [];
  let queued = 0;
  for (const event of history.events ?? []) {
    if (event.activityTaskScheduledEventAttributes?.activityType?.name === 'runBatch') queued++;
    const marker = event.markerRecordedEventAttributes;
    const data = marker?.markerName === 'core_local_activity' ? marker.details?.data?.payloads?.[0]?.data : undefined;
    if (!data || (JSON.parse(Buffer.from(data).toString()) as { activity_type: string }).activity_type !== 'runBatch') continue;
    local.push(marker?.failure?.applicationFailureInfo?.type ?? marker?.failure?.cause?.applicationFailureInfo?.type ?? undefined);
  }
  return { local, queued };
}

describe('crashes and graceful shutdown (real worker processes)', () => {
  it('a job that fits one batch runs it where its workflow runs; a worker lost there sends its items through the queue, uncharged', async () => {
    const workers = env.spawnWorker();
    try {
      // Small jobs get a batch per item by default (in parallel): two items fit one batch when asked to.
      const quick = await env.client.start(syntheticSpec([{ id: 'q1' }, { id: 'q2' }], { batchSize: 2 }));
      assert.equal((await env.client.result(quick.jobId)).counts.Available, 2);
      assert.deepEqual(await batchRuns(quick.jobId), { local: [undefined], queued: 0 }, 'one local batch, nothing through the task queue');

      // A local batch holds its job's workflow task: it starts items during its first second only, the rest go through the queue.
      const slow = await env.client.start(
        syntheticSpec(
          [1, 2, 3].map((n) => ({ id: `s${n}`, params: { cpuMs: 700 } })),
          { batchSize: 3 },
        ),
      );
      assert.equal((await env.client.result(slow.jobId)).counts.Available, 3);
      assert.deepEqual(await batchRuns(slow.jobId), { local: [undefined], queued: 1 }, 'two items ran locally, the third through the task queue');

      // The worker dies inside the local batch. Temporal runs the local activity again on the restarted
      // worker, which must not run the items again in place (a poison item would kill every worker forever).
      const { jobId } = await env.client.start(syntheticSpec([{ id: 'once', params: { outcome: 'crashOnce' as const } }, { id: 'fine' }], { batchSize: 2, crashBudget: 1 }));
      const result = await env.client.result(jobId);
      assert.equal(result.status, 'Succeeded');
      assert.equal(byItem(result).get('once'), 'Available', 'the lost local batch was not charged (crash budget 1)');
      assert.equal(byItem(result).get('fine'), 'Available');
      const runs = await batchRuns(jobId);
      assert.deepEqual(runs.local, [ErrorTypes.LocalBatchLost], 'the second start of the local batch was told apart');
      assert.equal(runs.queued, 2, 'each item then ran in isolation through the task queue');
      assert.ok(workers.starts >= 2, 'the worker process really died and was restarted');
    } finally {
      await workers.stop();
    }
  });

  it('a poison item exhausts its crash budget; items merely in flight end Available', async () => {
    const workers = env.spawnWorker();
    try {
      const items = [
        { id: 'p1', params: { cpuMs: 30 } },
        { id: 'poison', params: { outcome: 'crash' as const } },
        { id: 'p2', params: { cpuMs: 30 } },
        { id: 'once', params: { outcome: 'crashOnce' as const } },
        { id: 'p3' },
        { id: 'p4' },
      ];
      const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 3, heartbeatTimeout: '2s', crashBudget: 2 }));
      const result = await env.client.result(jobId);
      const statuses = byItem(result);
      assert.equal(statuses.size, 6);
      assert.equal(statuses.get('poison'), 'Failed');
      for (const id of ['p1', 'p2', 'p3', 'p4', 'once']) assert.equal(statuses.get(id), 'Available', `${id} must not be blamed`);
      const crashed = result.outputs?.find((record) => record.item === 'poison')?.error;
      assert.equal(crashed?.type, ErrorTypes.Crashed);
      assert.equal(crashed?.class, 'crash');
      assert.equal(crashed?.details.crashes, 2);
      assert.deepEqual(result.failuresByReason, { Crashed: ['poison'] });
      assert.ok(workers.starts >= 3, 'the worker process really died and was restarted');
    } finally {
      await workers.stop();
    }
  });

  it('killing the worker mid-batch loses nothing and duplicates nothing', async () => {
    const workers = env.spawnWorker();
    try {
      const out = path.join(env.dir, 'kill-out');
      const items = Array.from({ length: 40 }, (_, index) => ({ id: `k${index}`, params: { cpuMs: 150 } }));
      const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 10, heartbeatTimeout: '2s' }, { destination: pathToFileURL(out).toString() }));
      await eventually(async () => (await env.client.progress(jobId)).inFlight > 0, 30_000, 'batches under way');
      await new Promise((resolve) => setTimeout(resolve, 700)); // a few items into each 1.5 s batch
      const firstPid = workers.current.pid;
      workers.current.kill('SIGKILL');
      const result = await env.client.result(jobId);
      assert.notEqual(workers.current.pid, firstPid);
      const statuses = byItem(result);
      assert.equal(statuses.size, 40);
      assert.ok([...statuses.values()].every((status) => status === 'Available'));
      assert.equal(result.counts.Available, 40);
      assert.equal(result.status, 'Succeeded');
      assert.equal((await readdir(out)).length, 40, 'one output directory per item, no duplicates');
      assert.ok((await activityEvents(jobId)).timeouts >= 1, 'the kill was detected by heartbeat timeout');
    } finally {
      await workers.stop();
    }
  });

  it('a worker killed mid-batch of a stored job: the items its last heartbeat named in job storage are kept, not run again', async () => {
    const workers = env.spawnWorker();
    try {
      // An items file makes a stored job: its batches name items by place and keep records in job storage, parts written at each heartbeat.
      const file = path.join(env.dir, 'stored-beats.ndjson');
      await writeFile(file, Array.from({ length: 40 }, (_, index) => `${JSON.stringify({ id: `p${index}`, params: { cpuMs: 150 } })}\n`).join(''));
      const { jobId } = await env.client.start(
        { pipeline: 'synthetic', itemsFrom: pathToFileURL(file).toString(), options: { batchSize: 20, concurrency: 1, heartbeatTimeout: '2s' } },
        { jobId: 'stored-beats-kill' },
      );
      const slice = `${jobId}/slice-0-r1`;
      /** Positions in the batch whose records a heartbeat names as stored. */
      const named = (details: temporal.api.common.v1.IPayloads | null | undefined): number[] => {
        const data = details?.payloads?.[0]?.data;
        const progress = data ? (JSON.parse(Buffer.from(data).toString()) as BatchProgress) : undefined;
        return [...(progress?.stored?.finished ?? '')].flatMap((flag, index) => (flag === '1' ? [index] : []));
      };
      // The kill lands once the running batch has named a part of job storage in a heartbeat.
      await eventually(
        async () => {
          const described = await env.client.client.workflowService.describeWorkflowExecution({ namespace: 'default', execution: { workflowId: slice } }).catch(() => undefined);
          return (described?.pendingActivities ?? []).some((activity) => named(activity.heartbeatDetails).length > 0);
        },
        30_000,
        'a heartbeat naming stored records',
      );
      workers.current.kill('SIGKILL');
      const result = await env.client.result(jobId);
      assert.equal(result.status, 'Succeeded');
      assert.deepEqual([result.counts.items, result.counts.Available], [40, 40]);
      const records = await env.client.records(result);
      assert.deepEqual(
        records.map((record) => record.item),
        Array.from({ length: 40 }, (_, index) => `p${index}`),
        'every item once, in order',
      );

      // Items the lost batch's last heartbeat named are in no batch scheduled after it timed out.
      const history = await env.client.client.workflow.getHandle(slice).fetchHistory();
      const batchItems = new Map<string, number[]>();
      let kept: number[] | undefined;
      const ranAfter = new Set<number>();
      for (const event of history.events ?? []) {
        const scheduled = event.activityTaskScheduledEventAttributes;
        if (scheduled?.activityType?.name === 'runBatch') {
          const input = JSON.parse(Buffer.from(scheduled.input?.payloads?.[0]?.data ?? []).toString()) as RunBatchInput;
          const positions = (input.items?.kind === 'stored' ? input.items.ranges : []).flatMap(([from, to]) => Array.from({ length: to - from }, (_, offset) => from + offset));
          batchItems.set(String(event.eventId), positions);
          if (kept) for (const at of positions) ranAfter.add(at);
        }
        const timedOut = event.activityTaskTimedOutEventAttributes;
        if (timedOut && kept === undefined) {
          const positions = batchItems.get(String(timedOut.scheduledEventId)) ?? [];
          kept = named(timedOut.failure?.timeoutFailureInfo?.lastHeartbeatDetails).map((index) => positions[index] ?? -1);
        }
      }
      assert.ok(kept && kept.length > 0, 'the batch was lost by heartbeat timeout after naming stored records');
      assert.ok(ranAfter.size > 0, 'the unfinished items ran again');
      assert.deepEqual(
        kept.filter((at) => ranAfter.has(at)),
        [],
        'no item its heartbeat named ran again',
      );
    } finally {
      await workers.stop();
    }
  });

  it('SIGTERM mid-batch hands work back without spending any budget', async () => {
    const workers = env.spawnWorker();
    try {
      const items = Array.from({ length: 12 }, (_, index) => ({ id: `t${index}`, params: { cpuMs: 150 } }));
      // No budget to spare: a single charged crash or retry would fail an item.
      // Two batches: a job that fits one batch would run it by local activity, which has no activity events.
      const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 6, concurrency: 2, heartbeatTimeout: '3s', crashBudget: 1, retry: { maxAttempts: 1 } }));
      await eventually(async () => (await env.client.progress(jobId)).inFlight > 0, 30_000, 'batch under way');
      await new Promise((resolve) => setTimeout(resolve, 600)); // a few items into the 1.8 s batch
      workers.current.kill('SIGTERM');
      const result = await env.client.result(jobId);
      assert.equal(result.status, 'Succeeded');
      assert.equal(result.counts.Available, 12);
      const events = await activityEvents(jobId);
      assert.ok(events.failureTypes.includes(ErrorTypes.WorkerShutdown), `handed back: ${JSON.stringify(events)}`);
      assert.equal(events.timeouts, 0, 'a graceful shutdown is not a crash');
    } finally {
      await workers.stop();
    }
  });

  it('a 20 000-item job completes with exact counts and every history under 10 000 events', async () => {
    const workers = env.spawnWorker();
    try {
      const items = Array.from({ length: 20_000 }, (_, index) => ({
        id: `n${index}`,
        params: index % 1000 === 1 ? { outcome: 'missing' as const } : index % 1000 === 2 ? { outcome: 'unprocessable' as const } : {},
      }));
      const { jobId } = await env.client.start(syntheticSpec(items));
      const result = await env.client.result(jobId);
      assert.equal(result.counts.items, 20_000);
      assert.equal(result.counts.outputs, 20_000);
      assert.equal(result.counts.Available, 19_960);
      assert.equal(result.counts.Missing, 20);
      assert.equal(result.counts.Failed, 20);
      assert.equal(result.failuresByReason.ItemUnprocessable?.length, 20);
      assert.ok(result.manifest);
      const ids = [jobId];
      for await (const execution of env.client.client.workflow.list({ query: `WorkflowId STARTS_WITH '${jobId}/'` })) ids.push(execution.workflowId);
      assert.ok(ids.length > 1, 'the job ran in shards');
      let total = 0;
      for (const id of ids) {
        const length = await historyLength(env.client, id);
        assert.ok(length < 10_000, `${id} has ${length} events`);
        total += length;
      }
      assert.ok(total / 20_000 < 0.1, `events per item ${total / 20_000}`);
    } finally {
      await workers.stop();
    }
  });
});
