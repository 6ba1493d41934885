import assert from 'node:assert/strict';
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { FaultlineClientError } from '../../src/client';
import { ErrorTypes, type JobResult, WORKFLOW_TYPES } from '../../src/shared';
import { type RunningWorker, type TestEnv, createTestEnv, syntheticSpec } from '../helpers/env';

let env: TestEnv;
let worker: RunningWorker;

before(async () => {
  env = await createTestEnv();
  worker = await env.startWorker();
});
after(async () => {
  await worker?.stop();
  await env?.teardown();
});

async function run(spec: unknown, jobId?: string): Promise<JobResult> {
  const { jobId: id } = await env.client.start(spec, jobId ? { jobId } : {});
  return env.client.result(id);
}

function output(result: JobResult, item: string, name = 'result') {
  const found = result.outputs?.find((record) => record.item === item && record.output === name);
  assert.ok(found, `no output ${item}/${name}`);
  return found;
}

describe('job engine (real dev server)', () => {
  it('reports every status and class with counts, failure groups and metrics', async () => {
    const result = await run(
      syntheticSpec(
        [
          { id: 'ok', params: { cpuMs: 2 } },
          { id: 'missing', params: { outcome: 'missing' } },
          { id: 'unsolved', params: { outcome: 'unsolved' } },
          { id: 'bad', params: { outcome: 'unprocessable' } },
          { id: 'flaky', params: { transientFailures: 2 } },
          { id: 'broken', params: { transientFailures: 10 } },
        ],
        { retry: { maxAttempts: 3, initialInterval: '50ms', backoffCoefficient: 2 } },
      ),
    );
    assert.equal(result.status, 'PartiallySucceeded');
    assert.equal(result.success, true);
    assert.equal(result.schemaVersion, 1);
    assert.deepEqual(
      {
        items: result.counts.items,
        outputs: result.counts.outputs,
        Available: result.counts.Available,
        Missing: result.counts.Missing,
        Unsolved: result.counts.Unsolved,
        Failed: result.counts.Failed,
      },
      { items: 6, outputs: 6, Available: 2, Missing: 1, Unsolved: 1, Failed: 2 },
    );
    assert.equal(output(result, 'flaky').status, 'Available');
    assert.equal(output(result, 'missing').status, 'Missing');
    assert.ok(output(result, 'missing').reason);
    const bad = output(result, 'bad');
    assert.equal(bad.error?.type, ErrorTypes.ItemUnprocessable);
    assert.equal(bad.error?.class, 'unprocessable');
    assert.equal(bad.error?.attempts, 1, 'unprocessable items are never retried');
    const broken = output(result, 'broken');
    assert.equal(broken.error?.type, ErrorTypes.TransientItemError);
    assert.equal(broken.error?.class, 'transient');
    assert.equal(broken.error?.attempts, 3, 'transient budget: maxAttempts counts all attempts');
    assert.deepEqual(result.failuresByReason, { ItemUnprocessable: ['bad'], TransientItemError: ['broken'] });
    assert.deepEqual(result.failureCounts, { ItemUnprocessable: 1, TransientItemError: 1 });
    assert.equal(result.errors.length, 2);
    assert.ok(result.errors.every((error) => error.schemaVersion === 1 && typeof error.at === 'string'));
    assert.equal(result.metrics.attempts, 1 + 1 + 1 + 1 + 3 + 3);
    assert.ok(result.metrics.elapsedMs >= 0 && Date.parse(result.metrics.finishedAt) >= Date.parse(result.metrics.startedAt));
  });

  it('honours a Retry-After style delay from the item', async () => {
    const started = Date.now();
    const result = await run(syntheticSpec([{ id: 'later', params: { transientFailures: 1, retryAfterMs: 1500 } }], { retry: { initialInterval: '10ms' } }));
    assert.equal(result.status, 'Succeeded');
    assert.ok(Date.now() - started >= 1500, 'the retry waited for the suggested delay');
  });

  it('unlimited retries keep going until the item succeeds', async () => {
    const result = await run(syntheticSpec([{ id: 'stubborn', params: { transientFailures: 6 } }], { retry: { maxAttempts: 'unlimited', initialInterval: '10ms', maximumInterval: '20ms' } }));
    assert.equal(result.status, 'Succeeded');
    assert.equal(result.metrics.attempts, 7);
  });

  it('fatal ends the job at once and keeps finished outputs', async () => {
    const result = await run(syntheticSpec([{ id: 'first' }, { id: 'second' }, { id: 'boom', params: { outcome: 'fatal' } }, { id: 'after-1' }, { id: 'after-2' }], { batchSize: 5 }));
    assert.equal(result.status, 'Failed');
    assert.equal(result.success, false);
    assert.equal(output(result, 'first').status, 'Available');
    assert.equal(output(result, 'second').status, 'Available');
    assert.equal(output(result, 'boom').status, 'Failed');
    assert.equal(output(result, 'boom').error?.class, 'fatal');
    assert.equal(output(result, 'after-1').status, 'Cancelled');
    assert.match(output(result, 'after-1').reason ?? '', /FatalItemError/);
    assert.ok(result.errors.some((error) => error.type === ErrorTypes.FatalItemError && error.class === 'fatal'));
  });

  it('the tolerated-failure threshold trips as soon as it is certain', async () => {
    const items = [
      { id: 'f1', params: { outcome: 'unprocessable' as const } },
      { id: 'f2', params: { outcome: 'unprocessable' as const } },
      ...Array.from({ length: 8 }, (_, index) => ({ id: `later-${index}`, params: { cpuMs: 1 } })),
    ];
    // 10% of 10 items = 1 tolerated; the second failure exceeds it before the rest run (batch size 1, one at a time).
    const result = await run(syntheticSpec(items, { toleratedFailurePercent: 10, batchSize: 1, concurrency: 1 }));
    assert.equal(result.status, 'Failed');
    assert.equal(result.success, false);
    const threshold = result.errors.find((error) => error.type === ErrorTypes.ToleratedFailureThresholdExceeded);
    assert.ok(threshold);
    assert.equal(threshold.class, 'fatal');
    assert.deepEqual(threshold.details, { failedItems: 2, toleratedFailures: 1 });
    assert.equal(result.counts.Cancelled, 8, 'never attempted outputs are Cancelled');
    assert.ok(result.outputs?.filter((record) => record.status === 'Cancelled').every((record) => record.reason));
  });

  it('failures equal to the tolerated count are accepted (strictly greater fails)', async () => {
    const result = await run(syntheticSpec([{ id: 'x', params: { outcome: 'unprocessable' } }, { id: 'y' }], { toleratedFailureCount: 1 }));
    assert.equal(result.status, 'PartiallySucceeded');
  });

  it('all items failing gives Failed with success false; all skipped-free ok gives Succeeded', async () => {
    const failed = await run(syntheticSpec([{ id: 'a', params: { outcome: 'unprocessable' } }]));
    assert.equal(failed.status, 'Failed');
    assert.equal(failed.success, false);
    const ok = await run(syntheticSpec([{ id: 'a' }, { id: 'b', params: { outcome: 'missing' } }]));
    assert.equal(ok.status, 'Succeeded');
  });

  it('delivers idempotent effects: one file per item', async () => {
    const out = path.join(env.dir, 'effects');
    const result = await run(syntheticSpec([{ id: 'e1' }, { id: 'e2' }], {}, { destination: pathToFileURL(out).toString() }));
    assert.equal(result.status, 'Succeeded');
    assert.deepEqual((await readdir(out)).sort(), ['e1', 'e2']);
    const e1 = output(result, 'e1');
    assert.equal(e1.location, pathToFileURL(path.join(out, 'e1', 'result.json')).toString());
    assert.equal(e1.bytes, (await readFile(path.join(out, 'e1', 'result.json'))).length);
    assert.match(e1.sha256 ?? '', /^[0-9a-f]{64}$/);
  });

  it('a destination outside the allowed roots fails the spec at the worker before anything runs', async () => {
    await assert.rejects(
      run(syntheticSpec([{ id: 'x' }], {}, { destination: 'file:///etc/faultline-out' })),
      (error: unknown) =>
        error instanceof FaultlineClientError && error.code === 'invalid' && error.issues.some((issue) => issue.path === 'destination' && issue.code === ErrorTypes.DestinationOutsideAllowedRoots),
    );
  });

  it('rejects invalid specs in the client before starting anything', async () => {
    await assert.rejects(
      env.client.start({ pipeline: 'synthetic', items: [{ id: 'a' }, { id: 'a' }] }, { jobId: 'never-started' }),
      (error: unknown) => error instanceof FaultlineClientError && error.code === 'invalid' && error.issues.some((issue) => issue.path === 'items[1].id' && issue.code === 'duplicate_id'),
    );
    await assert.rejects(env.client.result('never-started'), (error: unknown) => error instanceof FaultlineClientError && error.code === 'not_found');
  });

  it('a workflow started by another client with bad input fails fast, non-retryable, with an invalid report', async () => {
    const handle = await env.client.client.workflow.start(WORKFLOW_TYPES.job, {
      taskQueue: env.config.taskQueue,
      workflowId: 'bad-input-direct',
      args: [{ spec: { pipeline: 'synthetic', items: [{ id: 'x', params: { outcome: 'explode' } }] } }],
    });
    await assert.rejects(handle.result(), (error: unknown) => {
      assert.ok(error instanceof WorkflowFailedError);
      assert.ok(error.cause instanceof ApplicationFailure);
      assert.equal(error.cause.type, ErrorTypes.InvalidSpec);
      assert.equal(error.cause.nonRetryable, true);
      const report = error.cause.details?.[0] as { class: string; details: { issues: { path: string }[] } };
      assert.equal(report.class, 'invalid');
      assert.equal(report.details.issues[0]?.path, 'items[0].params.outcome');
      return true;
    });
  });

  it('--id is an idempotency key: same spec returns the job, another spec is a conflict', async () => {
    const spec = syntheticSpec([{ id: 'one' }]);
    const first = await env.client.start(spec, { jobId: 'idem-1' });
    const again = await env.client.start(spec, { jobId: 'idem-1' });
    assert.deepEqual([first.existing, again.existing], [false, true]);
    await assert.rejects(env.client.start(syntheticSpec([{ id: 'two' }]), { jobId: 'idem-1' }), (error: unknown) => error instanceof FaultlineClientError && error.code === 'conflict');
    assert.equal((await env.client.result('idem-1')).status, 'Succeeded');
  });

  it('a child job failure reaches the parent as ChildJobFailed with the cause chain', async () => {
    const jobId = 'child-failure';
    // Job storage cannot hold this job's records: a file sits where its directory must go.
    const jobsDir = path.join(env.config.storage, 'jobs');
    await mkdir(jobsDir, { recursive: true });
    await writeFile(path.join(jobsDir, jobId), 'not a directory');
    const items = Array.from({ length: 30 }, (_, index) => ({ id: `c${index}` }));
    const result = await run(syntheticSpec(items, { shardSize: 10 }), jobId);
    assert.equal(result.status, 'Failed');
    const child = result.errors.find((error) => error.type === ErrorTypes.ChildJobFailed);
    assert.ok(child, JSON.stringify(result.errors));
    assert.equal(child.class, 'fatal');
    assert.match(String(child.details.childJobId), /^child-failure\/slice-\d+-r1$/);
    const cause = child.details.cause as { type: string; class: string; details: Record<string, unknown> };
    assert.equal(cause.type, ErrorTypes.StorageUnwritable);
    assert.equal(cause.details.activityType, 'writeRecords');
    assert.equal(cause.details.code, 'ENOTDIR');
    // Storage that cannot hold the job fails the closing activities at once: retrying cannot fix it.
    const events = (await env.client.client.workflow.getHandle(jobId).fetchHistory()).events ?? [];
    const attempts = events.flatMap((event) => (event.activityTaskStartedEventAttributes ? [event.activityTaskStartedEventAttributes.attempt ?? 1] : []));
    assert.ok(attempts.length > 0);
    assert.deepEqual(
      attempts.filter((attempt) => attempt > 1),
      [],
    );
  });

  it('large jobs run in shards with a manifest, exact counts and small histories', async () => {
    const items = Array.from({ length: 1_200 }, (_, index) => ({ id: `s${index}`, params: index % 100 === 7 ? { outcome: 'unprocessable' as const } : {} }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 300 }));
    const progress = await env.client.progress(jobId);
    assert.equal(progress.counts.items, 1_200);
    const result = await env.client.result(jobId);
    assert.equal(result.outputs, undefined, 'more than 1000 outputs go to a manifest');
    assert.ok(result.manifest);
    assert.equal(result.counts.outputs, 1_200);
    assert.equal(result.counts.Failed, 12);
    assert.equal(result.counts.Available, 1_188);
    assert.equal(result.failureCounts.ItemUnprocessable, 12);
    const lines = (await readFile(new URL(result.manifest), 'utf8')).trim().split('\n');
    assert.equal(lines.length, 1_200);
    assert.equal(new Set(lines.map((line) => (JSON.parse(line) as { item: string }).item)).size, 1_200, 'every item exactly once');
  });
});

describe('long histories continue-as-new (job and shards)', () => {
  it('an inline job rotates its history and still reports every item exactly once', async () => {
    const items = Array.from({ length: 40 }, (_, index) => ({ id: `r${index}`, params: index === 5 ? { transientFailures: 1 } : {} }));
    const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 1, concurrency: 4, rotateAfterEvents: 100, retry: { initialInterval: '10ms' } }));
    const result = await env.client.result(jobId);
    assert.equal(result.status, 'Succeeded');
    assert.equal(new Set(result.outputs?.map((record) => record.item)).size, 40);
    assert.equal(result.counts.Available, 40);
    assert.equal(result.metrics.attempts, 41, 'attempt counts survive the rotation');
    let runs = 0;
    for await (const _ of env.client.client.workflow.list({ query: `WorkflowId = '${jobId}'` })) runs++;
    assert.ok(runs > 1, `the job continued as new (${runs} runs)`);
  });

  it('shards rotate too, and the job still has exact counts', async () => {
    const items = Array.from({ length: 200 }, (_, index) => ({ id: `q${index}` }));
    const { jobId } = await env.client.start(syntheticSpec(items, { batchSize: 1, concurrency: 8, shardSize: 100, rotateAfterEvents: 150 }));
    const result = await env.client.result(jobId);
    assert.equal(result.counts.Available, 200);
    assert.equal(result.counts.outputs, 200);
    let shardRuns = 0;
    for await (const _ of env.client.client.workflow.list({ query: `WorkflowId STARTS_WITH '${jobId}/slice-'` })) shardRuns++;
    assert.ok(shardRuns > 2, `slices continued as new (${shardRuns} runs for 2 slices)`);
  });

  it('the job itself continues as new between slices, and a retry of the sliced job still works after it', async () => {
    const items = Array.from({ length: 300 }, (_, index) => ({ id: `p${index}`, ...(index % 50 === 0 ? { params: { transientFailures: 1 } } : {}) }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 10, batchSize: 10, rotateAfterEvents: 100, retry: { maxAttempts: 1 }, retryWindow: '5m' }));
    const first = await env.client.result(jobId);
    assert.deepEqual([first.counts.Available, first.counts.Failed, first.counts.outputs], [294, 6, 300]);
    const response = await env.client.retry(jobId, {});
    assert.equal(response.queuedCount, 6);
    const second = await env.client.result(jobId, { round: 2 });
    // A synthetic transient failure recurs on each round's first attempt, so the same 6 fail again:
    // what matters is that exactly they ran again, and every count is still exact.
    assert.equal(second.round, 2);
    assert.equal(second.metrics.attempts, first.metrics.attempts + 6);
    assert.deepEqual([second.counts.Available, second.counts.Failed, second.counts.outputs], [294, 6, 300]);
    assert.deepEqual(second.failuresByReason.TransientItemError?.sort(), ['p0', 'p100', 'p150', 'p200', 'p250', 'p50']);
    let runs = 0;
    for await (const _ of env.client.client.workflow.list({ query: `WorkflowId = '${jobId}'` })) runs++;
    assert.ok(runs > 1, `the job continued as new while running 30 slices (${runs} runs)`);
  });
});
