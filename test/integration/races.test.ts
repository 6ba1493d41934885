/**
 * Message races, decided deterministically: the time-skipping server, mocked activities that
 * block until the test releases them, and messages sent while no worker runs so they land in one
 * workflow activation. Each case closes with a result and answers every request (no hang).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { WorkflowUpdateFailedError, WorkflowUpdateStage } from '@temporalio/client';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { bundleWorkflowCode } from '@temporalio/worker';
import { type FaultlineClient, closedJobResult } from '../../src/client';
import {
  ErrorTypes,
  type JobResult,
  type JobSpec,
  normalizeSpec,
  type RunBatchInput,
  carriedEntries,
  type RunBatchResult,
  SearchKeys,
  type SliceControl,
  type SliceInput,
  awaitResultUpdate,
  cancelSignal,
  cancelUpdate,
  flagSignal,
  retryUpdate,
  setLimitsSignal,
  sliceWorkflowId,
} from '../../src/shared';
import { eventually, syntheticSpec, type workflowBundle } from '../helpers/env';
import { type TimeSkippingEnv, createTimeSkippingEnv } from '../helpers/time-skipping';
import { workflowSources } from '../../src/workflow-bundle';

const TASK_QUEUE = 'faultline-races';
/**
 * `FAULTLINE_RACES_ENGINE=v1` runs these races against the job workflow as it was before engine v2
 * (jobs started with the v1 input shape), to show each test fails on the old code.
 */
const ENGINE = process.env.FAULTLINE_RACES_ENGINE === 'v1' ? 'v1' : 'v2';
/** A race that hangs the job fails its test instead of stalling the file. */
const PER_TEST = { timeout: 60_000 };
let bundle: ReturnType<typeof workflowBundle> | undefined;
function racesBundle(): ReturnType<typeof workflowBundle> {
  bundle ??= bundleWorkflowCode({
    ...(ENGINE === 'v1' ? { workflowsPath: require.resolve('../fixtures/v1-only-workflows') } : workflowSources()),
    workflowInterceptorModules: [require.resolve('../fixtures/hold-interceptors')],
    logger: { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} },
  });
  return bundle;
}

async function startJob(spec: JobSpec, jobId: string): Promise<{ jobId: string }> {
  if (ENGINE === 'v2') return client.start(spec, { jobId });
  await testEnv.client.workflow.start('jobWorkflow', { taskQueue: TASK_QUEUE, workflowId: jobId, args: [{ spec: normalizeSpec(spec) }] });
  return { jobId };
}
let testEnv: TestWorkflowEnvironment;
let client: FaultlineClient;

/** Activities that block until the test releases them. */
class Gate {
  private slots = new Map<string, { entered: Promise<void>; enter: () => void; released: Promise<void>; release: () => void }>();
  private slot(key: string) {
    let slot = this.slots.get(key);
    if (!slot) {
      const next = {} as { entered: Promise<void>; enter: () => void; released: Promise<void>; release: () => void };
      next.entered = new Promise<void>((resolve) => (next.enter = resolve));
      next.released = new Promise<void>((resolve) => (next.release = resolve));
      this.slots.set(key, next);
      slot = next;
    }
    return slot;
  }
  async pass(key: string): Promise<void> {
    const slot = this.slot(key);
    slot.enter();
    await slot.released;
  }
  entered(key: string): Promise<void> {
    return this.slot(key).entered;
  }
  release(key: string): void {
    this.slot(key).release();
  }
  /** Lets everything waiting go (a failed test must not leave activities held) and starts afresh. */
  reset(): void {
    for (const slot of this.slots.values()) slot.release();
    this.slots = new Map();
  }
}
const gate = new Gate();
/** Items in `held` wait at the gate (keyed by item id) before finishing. */
const held = new Set<string>();
const flakySeen = new Map<string, number>();

async function runBatch(input: RunBatchInput): Promise<RunBatchResult> {
  const outcomes: RunBatchResult['outcomes'] = [];
  for (const entry of carriedEntries(input)) {
    const params = (entry.item.params ?? {}) as { outcome?: string };
    if (held.has(entry.item.id)) await gate.pass(entry.item.id);
    // `flaky*` items fail on their first run in each test only, so a retry succeeds.
    const flakyRuns = (flakySeen.get(entry.item.id) ?? 0) + 1;
    if (entry.item.id.startsWith('flaky')) flakySeen.set(entry.item.id, flakyRuns);
    if (params.outcome === 'fatal') {
      outcomes.push({
        item: entry.item.id,
        error: { schemaVersion: 1, type: ErrorTypes.FatalItemError, class: 'fatal', message: 'declared fatal', details: {}, item: entry.item.id, at: new Date().toISOString() },
      });
      continue;
    }
    if (params.outcome === 'unprocessable' || (entry.item.id.startsWith('flaky') && flakyRuns === 1)) {
      outcomes.push({
        item: entry.item.id,
        error: { schemaVersion: 1, type: ErrorTypes.ItemUnprocessable, class: 'unprocessable', message: 'declared', details: {}, item: entry.item.id, at: new Date().toISOString() },
      });
      continue;
    }
    outcomes.push({ item: entry.item.id, records: entry.outputs.map((output) => ({ item: entry.item.id, output, status: 'Available' as const })), bytesIn: 0, bytesOut: 0 });
  }
  return { outcomes, notStarted: [] };
}

async function packArchive(): Promise<{ files: number; missing: number; missingFiles: string[] }> {
  await gate.pass('archive');
  return { files: 1, missing: 0, missingFiles: [] };
}

/** What each round's webhook was sent, by job id and round. */
const webhookResults = new Map<string, JobResult>();
async function deliverWebhook(input: { webhook: { url: string }; result: JobResult }) {
  webhookResults.set(`${input.result.jobId}#${input.result.round}`, input.result);
  await gate.pass(`webhook-${input.result.round}`);
  return { kind: 'webhook' as const, url: input.webhook.url, delivered: true, attempts: 1, lastStatus: 204, round: input.result.round, at: new Date().toISOString() };
}

/** `itemsFrom` imports: `…/hang` runs until cancelled (heartbeating), `…/invalid` waits at the gate, then reports a bad line. */
async function importItems(input: { from: string }): Promise<{ ok: false; issues: { path: string; code: string; message: string }[] }> {
  if (input.from.endsWith('/hang')) {
    const ctx = Context.current();
    importStarted.resolve();
    for (;;) {
      ctx.heartbeat();
      await ctx.sleep(100); // throws CancelledFailure once the job cancels the import
    }
  }
  await gate.pass('import');
  return { ok: false, issues: [{ path: 'items[3].id', code: 'invalid_type', message: 'expected string (line 4)' }] };
}

/**
 * Holds one live activation of a job (matched by a command it issues) before its completion is
 * sent, so messages sent meanwhile land in the job's next activation (test/fixtures/hold-interceptors).
 */
class ActivationHolds {
  private waiting: { workflowId: string; kind: string; hit: (target: string | undefined) => void; released: Promise<void> }[] = [];
  private releases: (() => void)[] = [];
  /** Lets every held activation go (a failed test must not leave the worker unable to stop). */
  releaseAll(): void {
    this.waiting = [];
    for (const release of this.releases.splice(0)) release();
  }
  /** `kind` is a command the activation issues, or `*` for the run's next activation. */
  hold(workflowId: string, kind: string): { entered: Promise<string | undefined>; release: () => void } {
    let hit: (target: string | undefined) => void = () => {};
    let release: () => void = () => {};
    const entered = new Promise<string | undefined>((resolve) => (hit = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    this.waiting.push({ workflowId, kind, hit, released });
    this.releases.push(release);
    return { entered, release };
  }
  async concluded(workflowId: string, commands: { kind: string; target?: string }[]): Promise<void> {
    const index = this.waiting.findIndex((entry) => entry.workflowId === workflowId && (entry.kind === '*' || commands.some((command) => command.kind === entry.kind)));
    const entry = this.waiting[index];
    if (!entry) return;
    this.waiting.splice(index, 1);
    entry.hit(commands.find((command) => command.kind === entry.kind)?.target);
    await entry.released;
  }
}
const holds = new ActivationHolds();

/** The slice's input and the control signals it received, from its history. */
async function sliceMessages(jobId: string, index: number): Promise<{ input?: SliceInput; controls: SliceControl[]; status?: string }> {
  const handle = testEnv.client.workflow.getHandle(sliceWorkflowId(jobId, index, 1));
  const history = await handle.fetchHistory().catch(() => undefined);
  const decode = (payload: { data?: Uint8Array | null } | undefined) => (payload?.data ? JSON.parse(Buffer.from(payload.data).toString()) : undefined);
  const events = history?.events ?? [];
  const input = decode(events[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0]) as SliceInput | undefined;
  const controls = events
    .filter((event) => event.workflowExecutionSignaledEventAttributes?.signalName === 'sliceControl')
    .map((event) => decode(event.workflowExecutionSignaledEventAttributes?.input?.payloads?.[0]) as SliceControl);
  const status = history ? (await handle.describe()).status.name : undefined;
  return { ...(input ? { input } : {}), controls, ...(status ? { status } : {}) };
}

const importStarted = (() => {
  let resolve = () => {};
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve: () => resolve() };
})();
let ts: TimeSkippingEnv;
const startWorker = () => ts.startWorker();
const stopWorker = () => ts.stopWorker();

before(async () => {
  ts = await createTimeSkippingEnv({
    taskQueue: TASK_QUEUE,
    activities: { runBatch, packArchive, deliverWebhook, importItems },
    bundle: racesBundle,
    sinks: { activationHold: { concluded: { fn: (_info, workflowId: string, commands: { kind: string; target?: string }[]) => holds.concluded(workflowId, commands) } } },
  });
  testEnv = ts.testEnv;
  client = ts.client;
});

beforeEach(async () => {
  holds.releaseAll();
  gate.reset();
  held.clear();
  flakySeen.clear();
  if (!ts.workerRunning) await startWorker();
});

after(async () => {
  holds.releaseAll();
  await ts?.teardown();
});

const failing = (id: string) => ({ id, params: { outcome: 'unprocessable' } });

/** The job's final result, skipping time while waiting. */
async function finalResult(jobId: string): Promise<JobResult> {
  return await closedJobResult(testEnv.client.workflow.getHandle(jobId));
}

function rejectionType(error: unknown): string | undefined {
  return error instanceof WorkflowUpdateFailedError && error.cause instanceof ApplicationFailure ? (error.cause.type ?? undefined) : undefined;
}

describe('message races (time-skipping server, one activation)', () => {
  it('retry and cancel in the same activation of the retry window: cancel wins, retry is rejected with a type, the job closes', PER_TEST, async () => {
    const { jobId } = await startJob(syntheticSpec([{ id: 'ok' }, failing('bad')], { retryWindow: '1h' }), 'race-retry-cancel');
    await client.result(jobId);
    await stopWorker();
    const handle = client.handle(jobId);
    const retry = handle.startUpdate(retryUpdate, { args: [{}], waitForStage: WorkflowUpdateStage.ACCEPTED });
    await handle.signal(cancelSignal, { reason: 'race' });
    await startWorker();
    const settled = await Promise.allSettled([retry.then((update) => update.result())]);
    const result = await finalResult(jobId);
    assert.equal(result.status, 'PartiallySucceeded', 'the Failed item stays Failed, not Cancelled');
    assert.equal(result.outputs?.find((record) => record.item === 'bad')?.error?.type, ErrorTypes.ItemUnprocessable);
    assert.equal(result.cancelReason, 'race');
    const outcome = settled[0];
    if (outcome?.status === 'fulfilled') assert.fail(`the retry was answered ${JSON.stringify(outcome.value)} but never ran`);
    // Either the validator saw the queued cancel, or the main loop rejected the retry: both declared types.
    assert.ok([ErrorTypes.JobCancelled, ErrorTypes.JobClosed].includes(rejectionType(outcome?.reason) as never), String(outcome?.reason));
  });

  it('a retry that lands with the window timer is still run', PER_TEST, async () => {
    const { jobId } = await startJob(syntheticSpec([{ id: 'ok' }, { id: 'flaky' }], { retryWindow: '3s' }), 'race-retry-timer');
    await client.result(jobId);
    await stopWorker();
    // The window's timer fires while no worker runs: the retry then lands in the same activation.
    await eventually(async () => (await client.handle(jobId).fetchHistory()).events?.some((event) => event.timerFiredEventAttributes) ?? false, 30_000, 'window timer fired');
    const handle = client.handle(jobId);
    const retry = handle.startUpdate(retryUpdate, { args: [{}], waitForStage: WorkflowUpdateStage.ACCEPTED });
    await startWorker();
    const response = await (await retry).result();
    assert.deepEqual([response.round, response.queued], [2, ['flaky']]);
    const result = await finalResult(jobId);
    assert.equal(result.round, 2);
    assert.equal(result.status, 'Succeeded');
  });

  it('awaitResult for a round that never comes resolves with the final result when the window closes', PER_TEST, async () => {
    const { jobId } = await startJob(syntheticSpec([{ id: 'ok' }, failing('bad')], { retryWindow: '1h' }), 'race-await-next');
    await client.result(jobId);
    const handle = client.handle(jobId);
    const waiting = handle.startUpdate(awaitResultUpdate, { args: [{ round: 2 }], waitForStage: WorkflowUpdateStage.ACCEPTED });
    const result = await finalResult(jobId);
    const answered = await (await waiting).result();
    assert.equal(answered.round, 1);
    assert.equal(answered.status, result.status);
  });

  it('a retry accepted while the result is being published (webhook) runs as the next round', PER_TEST, async () => {
    held.clear();
    const { jobId } = await startJob(syntheticSpec([{ id: 'ok' }, { id: 'flaky' }], { webhook: { url: 'http://127.0.0.1:9/hook', secretRef: 'env:NONE' } }), 'race-retry-settling');
    await gate.entered('webhook-1');
    const retry = client.handle(jobId).startUpdate(retryUpdate, { args: [{}], waitForStage: WorkflowUpdateStage.ACCEPTED });
    await retry;
    gate.release('webhook-1');
    gate.release('webhook-2');
    const response = await (await retry).result();
    assert.equal(response.round, 2);
    const result = await finalResult(jobId);
    assert.equal(result.round, 2, 'the queued retry ran');
    assert.equal(result.status, 'Succeeded');
  });

  it('a cancel while the archive child runs cancels the archive and keeps the items truthful', PER_TEST, async () => {
    const { jobId } = await startJob(
      syntheticSpec([{ id: 'a' }, { id: 'b' }], { archive: true }, { destination: pathToFileURL(path.join(ts.config.allowedRoots[0] ?? '.', 'races-out')).toString() }),
      'race-cancel-archive',
    );
    await gate.entered('archive');
    const response = await client.cancel(jobId, 'stop the archive');
    gate.release('archive');
    const result = await finalResult(jobId);
    assert.equal(response.effect, 'closed');
    assert.equal(result.counts.Cancelled, 0);
    assert.equal(result.status, 'Succeeded', 'every item finished: the outputs stand');
    assert.equal(result.archive?.skipped, 'cancelled');
    assert.equal(result.cancelReason, 'stop the archive');
  });

  it('a cancel that arrives while the runner waits to continue as new is not lost', PER_TEST, async () => {
    const items = [{ id: 'gate-slow' }, ...Array.from({ length: 60 }, (_, index) => ({ id: `i${index}` }))];
    held.add('gate-slow');
    const { jobId } = await startJob(syntheticSpec(items, { batchSize: 1, concurrency: 2, rotateAfterEvents: 100 }), 'race-cancel-rotate');
    await gate.entered('gate-slow');
    // Wait until the history is past the rotation mark: the runner now waits for in-flight work.
    for (;;) {
      const history = await client.handle(jobId).fetchHistory();
      if ((history.events?.length ?? 0) > 100) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await client.handle(jobId).signal(cancelSignal, { reason: 'while rotating' });
    gate.release('gate-slow');
    const result = await finalResult(jobId);
    assert.equal(result.status, 'Cancelled');
    assert.equal(result.cancelReason, 'while rotating');
    assert.ok(result.counts.Cancelled > 0, 'unfinished items are Cancelled');
    assert.equal(result.counts.outputs, 61);
  });

  it('resume and cancel in one activation while slices wait paused: every slice has records, outputs are complete', PER_TEST, async () => {
    const items = Array.from({ length: 100 }, (_, index) => ({ id: `p${index}` }));
    // Started and paused in its first activation: every lane waits, paused, before its first slice.
    await stopWorker();
    const { jobId } = await startJob(syntheticSpec(items, { shardSize: 10 }), 'race-resume-cancel-paused');
    await client.handle(jobId).signal('pause');
    await startWorker();
    // Prepared (a worker has described the spec) and paused: phase 'paused', not 'validating'.
    await eventually(async () => (await client.progress(jobId)).phase === 'paused', 30_000, 'prepared and paused');
    await stopWorker();
    await client.handle(jobId).signal('resume');
    await client.handle(jobId).signal(cancelSignal, { reason: 'resume then cancel' });
    await startWorker();
    const result = await finalResult(jobId);
    assert.equal(result.status, 'Cancelled');
    assert.equal(result.counts.outputs, 100, JSON.stringify(result.counts));
    assert.ok(result.manifest, 'the manifest is written');
    assert.deepEqual(
      result.errors.filter((report) => report.step === 'manifest'),
      [],
      'no slice is missing its records',
    );
  });

  // 600 one-item batches take ~25 s on the time-skipping server (1,500 took 55 s, too close to a limit on a busy CI host).
  it('slices with hundreds of failures (one per batch) add few events to their job', { timeout: 150_000 }, async () => {
    const items = Array.from({ length: 600 }, (_, index) => failing(`f${index}`));
    const { jobId } = await startJob(syntheticSpec(items, { shardSize: 300, batchSize: 1, concurrency: 50, toleratedFailurePercent: 100 }), 'race-failure-volume');
    const result = await finalResult(jobId);
    assert.equal(result.counts.Failed, 600);
    const events = (await client.handle(jobId).fetchHistory()).events?.length ?? 0;
    assert.ok(events < 150, `the job's history has ${events} events`);
  });

  it('signals that cannot be honoured are recorded in the result, never dropped', PER_TEST, async () => {
    // Through the task queue: run locally, the one-item job would be over before the worker stops.
    const { jobId } = await startJob(syntheticSpec([{ id: 'ok' }], { runLocally: false }), 'race-signal-rejected');
    await stopWorker();
    await client.handle(jobId).signal('retry', { types: ['Nope'] });
    await startWorker();
    const result = await finalResult(jobId);
    assert.equal(result.status, 'Succeeded');
    assert.equal(result.rejectedRequests?.[0]?.type, ErrorTypes.NothingToRetry);
    const description = await client.handle(jobId).describe();
    assert.equal(description.searchAttributes[SearchKeys.status.name]?.[0], 'Succeeded');
  });

  it('a cancel while the job imports its itemsFrom stops the import and closes the job Cancelled with a result', PER_TEST, async () => {
    const { jobId } = await client.start({ pipeline: 'synthetic', itemsFrom: 'https://items.example/hang' }, { jobId: 'race-cancel-import' });
    await importStarted.promise;
    const handle = client.handle(jobId);
    const answer = await handle.executeUpdate(cancelUpdate, { args: [{ reason: 'wrong file' }] }).catch((error: Error) => {
      throw new Error(`cancel update failed: ${String(error.cause)}`);
    });
    assert.equal(answer.accepted, true);
    const result = await finalResult(jobId);
    assert.deepEqual([result.status, result.counts.items, result.cancelReason], ['Cancelled', 0, 'wrong file']);
  });

  it('requests accepted while the spec is validated are answered JobClosed when it turns out invalid', PER_TEST, async () => {
    const { jobId } = await client.start({ pipeline: 'synthetic', itemsFrom: 'https://items.example/invalid' }, { jobId: 'race-invalid-import' });
    await gate.entered('import');
    const handle = client.handle(jobId);
    const retry = await handle.startUpdate(retryUpdate, { args: [{}], waitForStage: WorkflowUpdateStage.ACCEPTED });
    gate.release('import');
    await assert.rejects(retry.result(), (error) => rejectionType(error) === ErrorTypes.JobClosed);
    await assert.rejects(client.result(jobId), (error: Error) => /items\[3\]\.id/.test(error.message));
  });

  it('a retry re-sent with the same update id runs one round, not two', PER_TEST, async () => {
    const { jobId } = await startJob(syntheticSpec([{ id: 'ok' }, { id: 'flaky' }, failing('bad')], { retryWindow: '1h' }), 'race-retry-same-id');
    await client.result(jobId);
    const handle = client.handle(jobId);
    const first = await handle.executeUpdate(retryUpdate, { args: [{}], updateId: 'retry-once' });
    const again = await handle.executeUpdate(retryUpdate, { args: [{}], updateId: 'retry-once' });
    assert.deepEqual(again, first);
    const round2 = await client.result(jobId, { round: 2 });
    assert.equal(round2.round, 2);
    await handle.executeUpdate(cancelUpdate, { args: [{ reason: 'done' }] });
    assert.equal((await finalResult(jobId)).round, 2, 'no third round');
  });

  it('a cancel that arrives after a fatal stop is answered while in-flight batches finish, and its reason is in the result beside the fatal report', PER_TEST, async () => {
    held.add('slow');
    const { jobId } = await startJob(syntheticSpec([{ id: 'slow' }, { id: 'boom', params: { outcome: 'fatal' } }], { batchSize: 1 }), 'race-cancel-after-fatal');
    await gate.entered('slow');
    await eventually(async () => (await client.progress(jobId)).counts.Failed > 0, 30_000, 'the fatal item to be recorded');
    const cancel = client.handle(jobId).executeUpdate(cancelUpdate, { args: [{ reason: 'operator gave up too' }] });
    // Answered while the slow batch still runs: the stopped round drains requests as they come.
    const answer = await Promise.race([cancel, new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), 15_000))]);
    gate.release('slow');
    assert.notEqual(answer, 'late', 'the cancel was not answered until the in-flight batch ended');
    if (answer !== 'late') assert.equal(answer.effect, 'stopped');
    const result = await finalResult(jobId);
    assert.equal(result.status, 'Failed');
    assert.equal(result.stoppedBy?.type, ErrorTypes.FatalItemError);
    assert.equal(result.cancelReason, 'operator gave up too');
  });

  it('flags and limit changes that arrive during the archive are in the final result and its webhook', PER_TEST, async () => {
    const { jobId } = await startJob(
      syntheticSpec(
        [{ id: 'a' }, { id: 'b' }],
        { archive: true, webhook: { url: 'http://127.0.0.1:9/hook', secretRef: 'env:NONE' } },
        { destination: pathToFileURL(path.join(ts.config.allowedRoots[0] ?? '.', 'races-flag-archive')).toString() },
      ),
      'race-flag-archive',
    );
    await gate.entered('archive');
    const handle = client.handle(jobId);
    // Recorded before the archive's completion, so the job sees them first.
    await handle.signal(flagSignal, { reason: 'spot-check the archive' });
    await handle.signal(setLimitsSignal, { concurrency: 3 });
    gate.release('archive');
    gate.release('webhook-1');
    const result = await finalResult(jobId);
    assert.equal(result.status, 'Succeeded');
    assert.deepEqual(
      result.flags?.map((flag) => flag.reason),
      ['spot-check the archive'],
    );
    assert.deepEqual(
      result.limitsChanged?.map((change) => change.concurrency),
      [3],
    );
    const sent = webhookResults.get(`${jobId}#1`);
    assert.deepEqual(
      sent?.flags?.map((flag) => flag.reason),
      ['spot-check the archive'],
      'the webhook carries the flag',
    );
    assert.deepEqual(
      sent?.limitsChanged?.map((change) => change.concurrency),
      [3],
      'the webhook carries the limit change',
    );
  });

  it('new limits set while a slice is starting reach that slice', PER_TEST, async () => {
    const items = Array.from({ length: 20 }, (_, index) => ({ id: `s${index}` }));
    for (const item of items) held.add(item.id);
    const jobId = 'race-set-starting';
    const starting = holds.hold(jobId, 'startChildWorkflowExecution');
    await startJob(syntheticSpec(items, { shardSize: 10, concurrency: 1 }), jobId);
    await starting.entered;
    // Lands in the job's next activation, while both slices are still starting.
    await client.handle(jobId).signal(setLimitsSignal, { concurrency: 4 });
    starting.release();
    for (const index of [0, 1]) {
      await eventually(
        async () => {
          const { input, controls } = await sliceMessages(jobId, index);
          return input?.concurrency === 4 || controls.some((control) => control.concurrency === 4);
        },
        20_000,
        `slice ${index} to hear of concurrency 4`,
      );
    }
    for (const item of items) gate.release(item.id);
    const result = await finalResult(jobId);
    assert.equal(result.status, 'Succeeded');
    assert.deepEqual(
      result.limitsChanged?.map((change) => change.concurrency),
      [4],
    );
  });

  it('a pause that cannot reach a just-started slice (it has already finished) is not a slice failure', PER_TEST, async () => {
    await withCachedWorker(pauseAfterSliceFinished);
  });
});

/**
 * Runs `race` on a worker with a sticky cache: other runs (slices) go on while a sink holds one
 * activation of the job (without the cache they wait). The usual uncached worker comes back after.
 */
async function withCachedWorker(race: () => Promise<void>): Promise<void> {
  await stopWorker();
  await ts.startWorker({ cached: true });
  try {
    await race();
  } finally {
    holds.releaseAll();
    await stopWorker();
  }
}

async function pauseAfterSliceFinished(): Promise<void> {
  const items = Array.from({ length: 20 }, (_, index) => ({ id: `q${index}` }));
  const jobId = 'race-pause-finished-slice';
  const starting = holds.hold(jobId, 'startChildWorkflowExecution');
  await startJob(syntheticSpec(items, { shardSize: 10 }), jobId);
  await starting.entered;
  const signalling = holds.hold(jobId, 'signalExternalWorkflowExecution');
  await client.handle(jobId).signal('pause');
  starting.release();
  // The job tells a just-started slice to pause; that activation is held until the slice has finished.
  const target = await signalling.entered;
  const index = [0, 1].find((candidate) => sliceWorkflowId(jobId, candidate, 1) === target);
  assert.ok(index !== undefined, `the held signal goes to a slice (${target})`);
  await eventually(async () => (await sliceMessages(jobId, index)).status === 'COMPLETED', 20_000, 'the slice to finish');
  signalling.release();
  await client.handle(jobId).signal('resume');
  const result = await finalResult(jobId);
  assert.equal(result.stoppedBy?.type, undefined, JSON.stringify(result.stoppedBy));
  assert.equal(result.status, 'Succeeded');
  assert.equal(result.counts.Available, 20, 'the finished slice keeps its good records');
}

describe('message races across activations held apart (a sink holds one activation of the job)', () => {
  it('a cancel that arrives while the job waits for a pause to reach its slices before continuing as new is answered, and the job closes', PER_TEST, async () => {
    await withCachedWorker(cancelWhileRotating);
  });
});

async function cancelWhileRotating(): Promise<void> {
  // 9 slices of 10, 8 at a time; the history is past its mark before the first ends, so the job continues as new after them.
  const items = Array.from({ length: 90 }, (_, index) => ({ id: `r${index}` }));
  for (const item of items) held.add(item.id);
  const jobId = 'race-cancel-rotating';
  await startJob(syntheticSpec(items, { shardSize: 10, rotateAfterEvents: 100 }), jobId);
  for (let index = 0; index < 8; index++) await gate.entered(`r${index * 10}`);
  // Past the mark before a lane would start slice 8 (each flag adds a few events).
  while (((await client.handle(jobId).fetchHistory()).events?.length ?? 0) <= 105) await client.handle(jobId).signal(flagSignal, { reason: 'history filler' });
  // Slices 1–7 finish; slice 0 runs on.
  for (let index = 10; index < 80; index++) gate.release(`r${index}`);
  for (let index = 1; index < 8; index++) await eventually(async () => (await sliceMessages(jobId, index)).status === 'COMPLETED', 20_000, `slice ${index} to finish`);
  // Hold one activation of the job; meanwhile slice 0 finishes and a pause arrives: the next activation has both.
  const idle = holds.hold(jobId, '*');
  await client.handle(jobId).signal(flagSignal, { reason: 'wake the job' });
  await idle.entered;
  for (let index = 0; index < 10; index++) gate.release(`r${index}`);
  await eventually(async () => (await sliceMessages(jobId, 0)).status === 'COMPLETED', 20_000, 'slice 0 to finish');
  await client.handle(jobId).signal('pause');
  // That activation tells slice 0 to pause (a signal in flight) and, its slices done, waits to continue as new.
  const rotating = holds.hold(jobId, 'signalExternalWorkflowExecution');
  idle.release();
  await rotating.entered;
  const cancel = client.cancel(jobId, 'while rotating');
  rotating.release();
  const answer = await Promise.race([cancel, new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), 20_000))]);
  for (let index = 80; index < 90; index++) gate.release(`r${index}`);
  assert.notEqual(answer, 'late', 'the cancel was never answered: the job waits for its handler before continuing as new');
  const result = await finalResult(jobId);
  assert.equal(result.status, 'Cancelled');
  assert.equal(result.cancelReason, 'while rotating');
  assert.equal(result.counts.outputs, 90);
}
