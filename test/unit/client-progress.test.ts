/**
 * A sliced job's progress from the server, in the moment after a slice ended and before its job
 * took the slice's result: the slice's items are in neither the job's memo nor the server's list
 * of running slices. A client that saw that slice running at its last look reads its final counts
 * from its memo, with no query through the job's (busy) worker: at 1 M items such queries took up
 * to 193 ms (BENCHMARKS.md, 2026-12-04). A new client still asks the job, and both answer the same.
 * Checked on the client alone, with fake handles that answer as the server would.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FaultlineClient } from '../../src/client';
import { JOB_PROGRESS_MEMO_KEY, SLICE_PROGRESS_MEMO_KEY, type SliceCounts, emptyStatusCounts, sliceWorkflowId } from '../../src/shared';

const JOB = 'job-progress';
const slice = (index: number) => sliceWorkflowId(JOB, index, 1);
const finished = (available: number): SliceCounts => ({ ...emptyStatusCounts(), Available: available, outputs: available });

/** What the server holds: the job's memo (as its query answers, less the running slices) and each slice's memo. */
interface Server {
  running: string[];
  sliceCounts: Record<string, SliceCounts>;
  /** Slices the job has not taken the result of (its query lists them as running). */
  notTaken: number[];
  queries: number;
  /** The job's memo lists `notTaken` too (as memos written since 2026-12-05 do). */
  listed?: boolean;
  /** Available items of the slices the job has taken (default 10). */
  jobAvailable?: number;
}

const jobProgress = {
  pipeline: 'synthetic',
  phase: 'running',
  settled: false,
  round: 1,
  counts: { items: 100, ...emptyStatusCounts(), Available: 10, outputs: 100 },
  inFlight: 2,
  backoff: [],
  shards: { done: 1, total: 3 },
  pendingRequests: 0,
  paused: false,
  limits: { concurrency: 32 },
};

function clientOf(server: Server): FaultlineClient {
  const progressOfJob = () => {
    const available = server.jobAvailable ?? 10;
    return { ...jobProgress, counts: { ...jobProgress.counts, Available: available }, inFlight: server.notTaken.length };
  };
  const jobHandle = {
    describe: async () => ({
      status: { name: 'RUNNING' },
      runId: 'run-1',
      memo: { [JOB_PROGRESS_MEMO_KEY]: { runId: 'run-1', ...progressOfJob(), ...(server.listed ? { slicesRunning: server.notTaken } : {}) } },
      raw: { pendingChildren: server.running.map((workflowId) => ({ workflowId })) },
    }),
    query: async () => {
      server.queries += 1;
      return { ...progressOfJob(), jobId: JOB, rejectedRequests: [], slicesRunning: server.notTaken };
    },
  };
  const sliceHandle = (workflowId: string) => ({
    describe: async () => ({ memo: { [SLICE_PROGRESS_MEMO_KEY]: server.sliceCounts[workflowId] }, raw: { pendingActivities: [] }, historyLength: 50 }),
    query: async () => server.sliceCounts[workflowId] ?? null,
  });
  // A client whose Temporal calls are the fakes above; its own bookkeeping as a new client has it.
  const client = Object.create(FaultlineClient.prototype) as FaultlineClient;
  Object.assign(client, {
    options: { config: { address: 'unused:7233' } },
    client: { workflow: { getHandle: sliceHandle }, withAbortSignal: (_signal: AbortSignal, call: () => unknown) => call(), options: {} },
    handle: () => jobHandle,
    rateLimiters: async () => [],
    startedClosing: new Set(),
    sliceHighs: new Map(),
    slicesLastSeen: new Map(),
    jobHighs: new Map(),
    jobsWithProgressMemo: new Set(),
  });
  return client;
}

describe('client progress of a sliced job', () => {
  it('a slice that ended before its job took its result is counted from its memo, with no query through the worker', async () => {
    const server: Server = { running: [slice(1), slice(2)], sliceCounts: { [slice(1)]: finished(5), [slice(2)]: finished(3) }, notTaken: [1, 2], queries: 0 };
    const client = clientOf(server);
    const first = await client.progress(JOB);
    assert.equal(first.counts.Available, 18, 'the job 10, its running slices 5 and 3');

    // Slice 1 ends with 20 finished; the job has not taken its result (its memo still has 2 in flight).
    server.running = [slice(2)];
    server.sliceCounts = { [slice(1)]: finished(20), [slice(2)]: finished(4) };
    server.queries = 0;
    const second = await client.progress(JOB);
    assert.equal(server.queries, 0, 'answered by the server alone');
    assert.equal(second.counts.Available, 34, 'the job 10, the ended slice 20, the running one 4');
    assert.deepEqual([...(second.slicesRunning ?? [])].sort(), [1, 2], 'running slices as the job lists them');

    // A new client has no last look: it asks the job, whose query lists slice 1 as running, and reads the same.
    const fresh = await clientOf(server).progress(JOB);
    assert.equal(server.queries, 1, 'a new client asks the job');
    assert.deepEqual(fresh.counts, second.counts);
  });

  it('asks the job when the slices gone since the last look do not account for the difference', async () => {
    const server: Server = { running: [slice(1)], sliceCounts: { [slice(1)]: finished(5) }, notTaken: [1, 2], queries: 0 };
    const client = clientOf(server);
    // The memo says 2 in flight, the server lists 1, and this client saw only that one before.
    await client.progress(JOB);
    server.queries = 0;
    const answered = await client.progress(JOB);
    assert.equal(server.queries, 1);
    assert.deepEqual([...(answered.slicesRunning ?? [])].sort(), [1, 2]);
  });

  it('a memo that lists the slices not taken answers alone, whatever ended since: one taken and one not, a new one started (the 1 M bench: 7 of 108 asks went through the worker, up to 146 ms)', async () => {
    for (const listed of [true, false]) {
      const server: Server = {
        running: [slice(0), slice(1), slice(2)],
        sliceCounts: { [slice(0)]: finished(5), [slice(1)]: finished(6), [slice(2)]: finished(7) },
        notTaken: [0, 1, 2],
        queries: 0,
        listed,
      };
      const client = clientOf(server);
      assert.equal((await client.progress(JOB)).counts.Available, 28);
      // Slice 0 ended and the job took it (10 + its 25); slice 1 ended (30), not taken yet; slice 3 started.
      Object.assign(server, {
        running: [slice(2), slice(3)],
        sliceCounts: { [slice(0)]: finished(25), [slice(1)]: finished(30), [slice(2)]: finished(8), [slice(3)]: finished(1) },
        notTaken: [1, 2, 3],
        jobAvailable: 35,
        queries: 0,
      });
      const answered = await client.progress(JOB);
      assert.equal(answered.counts.Available, 35 + 30 + 8 + 1, `listed ${listed}`);
      assert.deepEqual([...(answered.slicesRunning ?? [])].sort(), [1, 2, 3]);
      // The old memo cannot tell slice 0 from slice 1 and asks the job; the listing answers alone.
      assert.equal(server.queries, listed ? 0 : 1, `listed ${listed}`);
      // And a new client, which saw nothing before (its first call asks the job beside the server, and cuts that off once the memo answers), reads the same.
      assert.deepEqual((await clientOf(server).progress(JOB)).counts, answered.counts);
    }
  });
});
