import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { temporal } from '@temporalio/proto';
import { DeterminismViolationError } from '@temporalio/workflow';
import { Worker, bundleWorkflowCode } from '@temporalio/worker';
import { workflowBundle } from '../helpers/env';
import { patchIdsOf } from '../helpers/patches';
import { JOB_PROGRESS_MEMO_KEY, type JobProgressMemo, PATCHES, PATCH_BASELINE_1 } from '../../src/shared';

const DIR = path.resolve(__dirname, '..', 'histories');
const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} };

/** `<workflow id with / as __>[.runN].json` in test/histories/<set>/ (v1, v2, latest, …). */
const SETS = readdirSync(DIR, { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name);

function load(set: string) {
  const files = readdirSync(path.join(DIR, set)).filter((file) => file.endsWith('.json'));
  return files.map((file) => ({
    file,
    workflowId: file.replace(/(\.run\d+)?\.json$/, '').replaceAll('__', '/'),
    history: temporal.api.history.v1.History.fromObject(JSON.parse(readFileSync(path.join(DIR, set, file), 'utf8')) as Record<string, unknown>),
  }));
}

async function replay(bundle: Awaited<ReturnType<typeof workflowBundle>>, histories: ReturnType<typeof load>) {
  const results: { workflowId: string; error?: unknown }[] = [];
  for await (const result of Worker.runReplayHistories({ workflowBundle: bundle, replayName: 'faultline-replay' }, histories)) results.push(result);
  return results;
}

describe('replay: recorded histories still replay against the current workflow code', () => {
  it('replays every committed history of every recorded set without nondeterminism', async () => {
    assert.ok(
      ['v1', 'v2', 'latest'].every((set) => SETS.includes(set)),
      `history sets: ${SETS.join(', ')}`,
    );
    const histories = SETS.flatMap((set) => load(set));
    const features = [
      'mixed',
      'fatal',
      'cancel',
      'retry-window',
      'sharded-retry',
      'slice-',
      'threshold',
      'archive',
      'rotation.run2',
      'shard-1',
      'pause-set-flag',
      'sharded-paused',
      'v4-user-pipeline',
      'v4-cancel-after-fatal',
      'faultline-rate-limit__',
      'rec-rate-limited',
    ];
    for (const feature of features)
      assert.ok(
        histories.some((entry) => entry.file.includes(feature)),
        `a recorded history covers ${feature}`,
      );
    // Every patch has a recorded history that took its new path (a patch marker names it).
    const markers = new Set(histories.flatMap((entry) => patchIdsOf(entry.history.events ?? [])));
    assert.deepEqual(
      Object.values(PATCHES).filter((patch) => !markers.has(patch)),
      [],
      'patches no recorded history covers: run npm run record-histories -- <new set>',
    );
    const results = await replay(await workflowBundle(), histories);
    const failures = results.filter((result) => result.error).map((result) => `${result.workflowId}: ${String(result.error)}`);
    assert.deepEqual(failures, []);
    assert.equal(results.length, histories.length);
  });

  it("a recorded history has the job's progress memo naming the slices it has not taken (a memo's content is no command: replayed runs older and newer keep it)", () => {
    const listed = load('latest')
      .flatMap((entry) => entry.history.events ?? [])
      .flatMap((event) => {
        const data = event.workflowPropertiesModifiedEventAttributes?.upsertedMemo?.fields?.[JOB_PROGRESS_MEMO_KEY]?.data;
        const memo = data?.length ? (JSON.parse(Buffer.from(data).toString('utf8')) as JobProgressMemo | null) : null;
        return memo?.slicesRunning ? [memo.slicesRunning] : [];
      });
    assert.ok(
      listed.some((slices) => slices.length > 0),
      'rec-sharded-paused: npm run record-histories -- latest sharded-paused',
    );
  });

  it('the patches faultline-patch-baseline-1 stands for never change (its histories ran exactly these)', () => {
    assert.deepEqual(
      [...PATCH_BASELINE_1],
      [
        'faultline-engine-v2',
        'faultline-retention',
        'faultline-failed-executions',
        'faultline-engine-v3',
        'faultline-worker-pipelines',
        'faultline-local-spec-check',
        'faultline-result-export',
        'faultline-local-release',
        'faultline-answer-while-stopping',
        'faultline-local-small-job',
        'faultline-priority-attribute',
        'faultline-items-by-reference',
        'faultline-large-job-sizing',
        'faultline-large-job-sizing-v2',
        'faultline-stored-beats',
        'faultline-slice-progress-memo',
        'faultline-job-progress-memo',
        'faultline-long-step-progress-memo',
        'faultline-bisect-lost-batches',
        'faultline-release-in-local-batch',
      ],
      'a new patch is asked on its own; a later baseline gets a new id',
    );
  });

  it('negative control: engine v2 job histories fail against the pre-v2 job workflow', async () => {
    const v1Bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../fixtures/v1-only-workflows'), logger: quiet });
    const jobs = [...load('v2'), ...load('latest')].filter((entry) => !entry.workflowId.includes('/') && entry.file.endsWith('.run1.json'));
    assert.ok(jobs.length >= 5);
    const results = await replay(v1Bundle, jobs);
    const replayedCleanly = results.filter((result) => !(result.error instanceof DeterminismViolationError)).map((result) => `${result.workflowId}: ${String(result.error)}`);
    assert.deepEqual(replayedCleanly, [], 'each one is caught as nondeterminism');
  });
});
