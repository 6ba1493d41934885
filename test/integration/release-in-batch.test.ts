/**
 * A job that closes when it settles and runs as one local batch has that batch release its
 * working copies when every item finishes: the job closes without a housekeeping activity of its
 * own, and its result still says what was released and what it keeps. Any other job releases them
 * at close, as before.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { definePipeline } from '../../src/define-pipeline';
import { ItemError } from '../../src/activities/types';
import { type RunningWorker, type TestEnv, createTestEnv } from '../helpers/env';

let env: TestEnv;
let worker: RunningWorker;

/** Keeps a 1,000-byte working copy of every item (never dropped); `fail` items then fail for good. */
const keeper = definePipeline({
  name: 'keeper',
  version: '1',
  outputs: ['done'],
  steps: [
    {
      name: 'keep',
      run: async ({ item, storage }) => {
        await storage.put('copy', Buffer.alloc(1_000, 7));
        if (item.id.startsWith('fail')) throw new ItemError({ type: 'KeptAndFailed', message: 'fails after keeping its copy', class: 'unprocessable' });
        return { done: { status: 'Available' } };
      },
    },
  ],
});

before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-release-in-batch', envExtra: { FAULTLINE_LOG_LEVEL: 'error' } });
  worker = await env.startWorker({}, { pipelines: [keeper] });
});
after(async () => {
  await worker?.stop();
  await env?.teardown();
});

async function localActivities(jobId: string): Promise<string[]> {
  const history = await env.client.client.workflow.getHandle(jobId).fetchHistory();
  const types: string[] = [];
  for (const event of history.events ?? []) {
    const marker = event.markerRecordedEventAttributes;
    const data = marker?.markerName === 'core_local_activity' ? marker.details?.data?.payloads?.[0]?.data : undefined;
    if (data) types.push((JSON.parse(Buffer.from(data).toString()) as { activity_type: string }).activity_type);
  }
  const scheduled = (history.events ?? []).flatMap((event) => event.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
  return [...types, ...scheduled];
}

const workDir = (jobId: string) => path.join(env.config.storage, 'jobs', jobId, 'work');

describe('working copies released by the only batch', () => {
  it('a one-item job closes without a housekeeping activity; its result says what its batch released', async () => {
    const { jobId } = await env.client.start({ pipeline: 'keeper', items: [{ id: 'one' }] });
    const result = await env.client.result(jobId);
    assert.equal(result.status, 'Succeeded');
    assert.deepEqual(await localActivities(jobId), ['describeSpec', 'runBatch']);
    assert.ok((result.metrics.storageReleasedBytes ?? 0) >= 1_000, `released ${result.metrics.storageReleasedBytes}`);
    assert.equal(typeof result.metrics.storageBytes, 'number');
    assert.ok(!existsSync(workDir(jobId)), 'the working copies are gone');
  });

  it('a job of several batches, or whose item failed, releases them at close as before', async () => {
    const several = await env.client.start({ pipeline: 'keeper', items: [{ id: 'a' }, { id: 'b' }], options: { batchSize: 1 } });
    const failed = await env.client.start({ pipeline: 'keeper', items: [{ id: 'fail-1' }] });
    for (const { jobId } of [several, failed]) {
      const result = await env.client.result(jobId);
      assert.ok((await localActivities(jobId)).includes('releaseWorkingCopies'), `${jobId} released its working copies itself`);
      assert.ok((result.metrics.storageReleasedBytes ?? 0) >= 1_000, `${jobId} released ${result.metrics.storageReleasedBytes}`);
      assert.ok(!existsSync(workDir(jobId)), `${jobId}'s working copies are gone`);
    }
    assert.equal((await env.client.result(failed.jobId)).counts.Failed, 1);
  });
});
