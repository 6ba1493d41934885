/**
 * Your own pipelines, on a real dev server: the README's word-count example (typed steps, statuses,
 * values, transient step retries that do not repeat finished steps, a job retry that resumes at the
 * failed step), worker-side validation of specs the client cannot validate, a pipeline on its own
 * task queue served by its own worker, and a pipeline no worker serves failing promptly and typed.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { FaultlineClient, FaultlineClientError } from '../../src/client';
import { definePipeline } from '../../src';
import { ErrorTypes, type JobResult, cpuBatchesAhead } from '../../src/shared';
import { ADAPTIVE_SLOTS } from '../../src/activity-slots';
import path from 'node:path';
import { ROOT, type RunningWorker, type TestEnv, createTestEnv, eventually, runCli } from '../helpers/env';
import { CLI_QUEUE, cliWordCount } from '../fixtures/cli-pipelines';
import { countQueues, splitRuns, wordCount, wordCountOnQueue } from '../fixtures/word-count';
import { crunch } from '../fixtures/crunch';

let env: TestEnv;
let worker: RunningWorker;
const GPU_QUEUE = 'faultline-pipelines-gpu';
const queued = wordCountOnQueue(GPU_QUEUE);
/** A step that says where it is with ctx.heartbeat, then waits until the test lets it finish. */
let releaseHeartbeating: () => void = () => {};
const heartbeating = definePipeline({
  name: 'heartbeating',
  version: '1',
  outputs: ['done'],
  steps: [
    {
      name: 'long',
      run: async ({ heartbeat, item }) => {
        heartbeat({ phase: 'halfway', item: item.id });
        await new Promise<void>((resolve) => (releaseHeartbeating = resolve));
        return { done: { status: 'Available' } };
      },
    },
  ],
});
const FIXTURES = path.join(ROOT, 'test', 'fixtures');
/** Items per runBatch activity a workflow scheduled, in order (inline entries or stored ranges). */
async function batchSizes(workflowId: string): Promise<number[]> {
  const history = await env.client.client.workflow.getHandle(workflowId).fetchHistory();
  return (history.events ?? []).flatMap((event) => {
    const scheduled = event.activityTaskScheduledEventAttributes;
    if (scheduled?.activityType?.name !== 'runBatch') return [];
    const input = JSON.parse(Buffer.from(scheduled.input?.payloads?.[0]?.data ?? new Uint8Array()).toString()) as {
      entries?: unknown[];
      items?: { kind: 'inline'; entries: unknown[] } | { kind: 'stored'; ranges: [number, number][] };
    };
    if (input.items?.kind === 'stored') return [input.items.ranges.reduce((sum, [from, to]) => sum + to - from, 0)];
    return [(input.items?.entries ?? input.entries ?? []).length];
  });
}

/** The most runBatch activities a workflow had scheduled and not yet closed at once. */
async function mostBatchesInFlight(workflowId: string): Promise<number> {
  const history = await env.client.client.workflow.getHandle(workflowId).fetchHistory();
  const open = new Set<string>();
  let most = 0;
  for (const event of history.events ?? []) {
    if (event.activityTaskScheduledEventAttributes?.activityType?.name === 'runBatch') open.add(String(event.eventId));
    const closed = event.activityTaskCompletedEventAttributes ?? event.activityTaskFailedEventAttributes ?? event.activityTaskTimedOutEventAttributes ?? event.activityTaskCanceledEventAttributes;
    if (closed) open.delete(String(closed.scheduledEventId));
    most = Math.max(most, open.size);
  }
  return most;
}

before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-pipelines' });
  worker = await env.startWorker({}, { pipelines: [wordCount, queued, cliWordCount, heartbeating, crunch] });
});
after(async () => {
  await worker?.stop();
  await env?.teardown();
});

const output = (result: JobResult, item: string) => result.outputs?.find((record) => record.item === item && record.output === 'counts');

describe('your own pipelines (real dev server)', () => {
  it('the word-count example: statuses, values, grouped errors, step retries without repeats, a retry that resumes at the failed step', async () => {
    const client = await FaultlineClient.connect({ config: env.config, pipelines: [wordCount], connection: env.connection });
    const { jobId } = await client.start({
      pipeline: 'word-count',
      items: [
        { id: 'a', params: { text: 'a b c' } },
        { id: 'empty', params: { text: '  ' } },
        { id: 'poison', params: { text: 'one poison word' } },
        { id: 'busy', params: { text: 'x y', failTimes: 2 } },
      ],
      options: { retryWindow: '10m' },
    });
    const result = await client.result(jobId);
    assert.equal(result.status, 'PartiallySucceeded');
    assert.equal(result.pipelineVersion, '1');
    assert.deepEqual(output(result, 'a')?.value, { n: 3 });
    assert.equal(output(result, 'a')?.status, 'Available');
    assert.deepEqual([output(result, 'empty')?.status, output(result, 'empty')?.reason], ['Missing', 'no words']);
    assert.deepEqual(output(result, 'busy')?.value, { n: 2 });
    const poison = output(result, 'poison');
    assert.deepEqual([poison?.status, poison?.error?.type, poison?.error?.class, poison?.error?.step], ['Failed', 'PoisonWord', 'unprocessable', 'count']);
    assert.deepEqual(result.failureCounts, { PoisonWord: 1 });
    assert.equal(splitRuns.get('busy'), 1, 'split ran once for an item whose count step failed twice');
    assert.equal(splitRuns.get('poison'), 1);

    await client.retry(jobId);
    const again = await client.result(jobId, { round: 2 });
    assert.equal(again.round, 2);
    assert.equal(output(again, 'poison')?.error?.type, 'PoisonWord');
    assert.equal(splitRuns.get('poison'), 1, 'round 2 resumed the failed item at its failed step: split did not run again');
    assert.deepEqual(output(again, 'a')?.value, { n: 3 }, 'items that did not fail keep their records');

    await client.retry(jobId, { fromStart: true });
    const third = await client.result(jobId, { round: 3 });
    assert.equal(third.round, 3);
    assert.equal(splitRuns.get('poison'), 2, '--from-start ran split again');
    await client.cancel(jobId, 'done');
  });

  it('a spec the client cannot validate is validated by a worker that knows the pipeline; bad params come back with JSON paths', async () => {
    // env.client knows only the built-ins.
    assert.throws(() => env.client.validate({ pipeline: 'word-count', items: [{ id: 'x', nope: 1 }] }), /invalid job spec/);
    const { jobId } = await env.client.start({
      pipeline: 'word-count',
      items: [
        { id: 'ok', params: { text: 'fine' } },
        { id: 'bad', params: { text: 3 } },
      ],
    });
    await assert.rejects(
      env.client.result(jobId),
      (error: unknown) => error instanceof FaultlineClientError && error.code === 'invalid' && error.exitCode === 2 && error.issues.some((issue) => issue.path === 'items[1].params.text'),
    );
    const client = await FaultlineClient.connect({ config: env.config, pipelines: [wordCount], connection: env.connection });
    assert.throws(
      () => client.validate({ pipeline: 'word-count', items: [{ id: 'bad', params: { text: 3 } }] }),
      (error: Error & { issues: { path: string }[] }) => error.issues.some((issue) => issue.path === 'items[0].params.text'),
    );
  });

  it("faultline start of a pipeline the CLI does not know waits for the worker's check: its issues exit 2, a good spec prints the job id", async () => {
    const cli = async (spec: unknown) => {
      const file = path.join(env.dir, `cli-start-${Math.random().toString(36).slice(2)}.json`);
      await writeFile(file, JSON.stringify(spec));
      return runCli(['start', file], { env: env.env, cwd: env.dir });
    };
    const bad = await cli({ pipeline: 'word-count', items: [{ id: 'bad', params: { text: 3 } }] });
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /items\[0\]\.params\.text/);
    const good = await cli({ pipeline: 'word-count', items: [{ id: 'good', params: { text: 'a b' } }] });
    assert.equal(good.code, 0, good.stderr);
    const jobId = good.stdout.trim();
    assert.deepEqual(output(await env.client.result(jobId), 'good')?.value, { n: 2 });
  });

  it("a step's ctx.heartbeat details travel with its batch's heartbeat (seen with the pending activity)", async () => {
    // A long single item that must show its heartbeats: not run locally (a local activity has none).
    const { jobId } = await env.client.start({ pipeline: 'heartbeating', items: [{ id: 'h' }], options: { runLocally: false } });
    await eventually(
      async () => {
        const pending = (await env.client.handle(jobId).describe()).raw.pendingActivities ?? [];
        return pending.some((activity) => {
          const payload = activity.heartbeatDetails?.payloads?.[0];
          if (!payload?.data) return false;
          const progress = JSON.parse(Buffer.from(payload.data).toString()) as { current?: { item: string; details: { phase?: string } } };
          return progress.current?.item === 'h' && progress.current.details.phase === 'halfway';
        });
      },
      20_000,
      'the step heartbeat to show',
    );
    releaseHeartbeating();
    assert.equal((await env.client.result(jobId)).status, 'Succeeded');
  });

  it("work: 'cpu' runs a job in one slice of batches large first and small last; a one-item job still runs locally", async () => {
    const items = 1_200;
    const { jobId } = await env.client.start({ pipeline: 'crunch', items: Array.from({ length: items }, (_, i) => ({ id: `c${i}`, params: { n: i } })) });
    const result = await env.client.result(jobId);
    assert.equal(result.counts.Available, items);
    const sizes = await batchSizes(`${jobId}/slice-0-r1`);
    assert.deepEqual(await batchSizes(`${jobId}/slice-1-r1`).catch(() => []), [], 'one slice');
    assert.equal(
      sizes.reduce((sum, size) => sum + size, 0),
      items,
      'every item once',
    );
    assert.equal(sizes[0], items / 8, 'the first batch takes an eighth');
    // The first batches start together and shrink one after another, so two on one process do not end at once.
    const firstWave = cpuBatchesAhead(ADAPTIVE_SLOTS.always);
    assert.ok(
      sizes.every((size, i) => i === 0 || (i < firstWave ? size < (sizes[i - 1] ?? 0) : i === firstWave || size <= (sizes[i - 1] ?? 0))),
      `the first ${firstWave} each smaller than the one before, then each no larger than the one before: ${sizes.join(',')}`,
    );
    assert.ok(sizes.slice(0, -1).every((size) => size >= items / 100) && sizes.length < 40, `none below a hundredth: ${sizes.join(',')}`);
    assert.equal(sizes[sizes.length - 2], items / 100, `the last ones small: ${sizes.join(',')}`);
    // The server starts batches scheduled together in any order: a large one left waiting would run last. One batch in
    // flight per slot the fleet keeps busy: here one worker process polls the queue, with its two adaptive slots.
    assert.equal(await mostBatchesInFlight(`${jobId}/slice-0-r1`), cpuBatchesAhead(ADAPTIVE_SLOTS.always), 'as many in flight as the fleet has slots');

    const one = await env.client.start({ pipeline: 'crunch', items: [{ id: 'only', params: { n: 1 } }] });
    assert.equal((await env.client.result(one.jobId)).counts.Available, 1);
    const events = (await env.client.client.workflow.getHandle(one.jobId).fetchHistory()).events ?? [];
    assert.ok(!events.some((event) => event.activityTaskScheduledEventAttributes), 'its batch ran as a local activity');
  });

  it('a pipeline no worker knows fails the job at once with PipelineUnavailable', async () => {
    const started = Date.now();
    const { jobId } = await env.client.start({ pipeline: 'nobody-runs-this', items: [{ id: 'x' }] });
    await assert.rejects(
      env.client.result(jobId),
      (error: unknown) => error instanceof FaultlineClientError && error.code === 'failed' && error.message.startsWith(`${ErrorTypes.PipelineUnavailable}: no worker on task queue`),
    );
    assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
  });

  it('a pipeline on its own task queue runs its batches on its own worker, and fails promptly while none polls it', async () => {
    const early = await env.client.start({ pipeline: 'word-count-queued', items: [{ id: 'q', params: { text: 'on the gpu' } }] });
    await assert.rejects(
      env.client.result(early.jobId),
      (error: unknown) => error instanceof FaultlineClientError && error.message.startsWith(`${ErrorTypes.PipelineUnavailable}: no worker polls task queue "${GPU_QUEUE}"`),
    );
    const gpu = await env.startWorker({}, { pipelines: [queued], taskQueue: GPU_QUEUE });
    try {
      countQueues.clear();
      const { jobId } = await env.client.start({ pipeline: 'word-count-queued', items: [{ id: 'q', params: { text: 'on the gpu' } }] });
      const result = await env.client.result(jobId);
      assert.equal(result.status, 'Succeeded');
      assert.deepEqual(output(result, 'q')?.value, { n: 3, pid: process.pid });
      assert.equal(result.pipelineVersion, '2');
      assert.deepEqual([...countQueues], [GPU_QUEUE]);
    } finally {
      await gpu.stop();
    }
  });

  it('`faultline worker --pipelines <module> --pipeline-queue <queue>` serves a user module from the CLI, in its own process', async () => {
    const cli = env.spawnWorker({ FAULTLINE_PIPELINES: path.join(FIXTURES, 'cli-pipelines.ts'), FAULTLINE_PIPELINE_QUEUE: CLI_QUEUE, FAULTLINE_WORKER_PROCESSES: '1' });
    try {
      await eventually(
        async () => {
          const { pollers } = await env.connection.workflowService.describeTaskQueue({ namespace: 'default', taskQueue: { name: CLI_QUEUE }, taskQueueType: 2 });
          return (pollers?.length ?? 0) > 0;
        },
        60_000,
        'the CLI worker polls its pipeline queue',
      );
      const { jobId } = await env.client.start({ pipeline: 'word-count-cli', items: [{ id: 'c', params: { text: 'from the cli' } }] });
      const result = await env.client.result(jobId);
      const value = output(result, 'c')?.value as { n: number; pid: number };
      assert.equal(value.n, 3);
      assert.notEqual(value.pid, process.pid, 'counted in the CLI worker process');
    } finally {
      await cli.stop();
    }
  });
});
