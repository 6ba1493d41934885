/**
 * The per-item engine that job and shard workflows share (workflow code: deterministic, no I/O).
 *
 * It owns both budgets: transient attempts follow the step's retry policy with workflow timers
 * (so backoff is visible), and crashes are counted separately. Only a lost worker (heartbeat
 * timeout) is a crash: the unfinished items of that batch are re-run in halves, each half halved
 * again if its worker is lost too, and at most ISOLATE_AT_MOST of them in isolation, each in its
 * own activity, concurrently (a poison item among 5,000 is found in ~11 losses, not 5,000
 * activities); an item that crashes again while other isolated items were in flight runs
 * strictly alone next, so only the poison item is ever charged. A graceful worker shutdown
 * hands work back for free. Any other batch failure is reported with its own type and class.
 */
import { jobPriority } from './priority';
import { ActivityFailure, ApplicationFailure, CancellationScope, TimeoutFailure, condition, log, proxyActivities, proxyLocalActivities, workflowInfo } from '@temporalio/workflow';
import { patched } from './patches';
import { TimeoutType } from '@temporalio/common';
import type { createEngineActivities } from '../activities/engine';
import { ItemBook, type RunnerConfig, type RunnerSnapshot } from './item-book';
import { progressFrom, thresholdReport, unfinishedReason } from './item-records';

export type { RunnerConfig, RunnerSnapshot };

export { thresholdReport, unfinishedReason };
import {
  CPU_WORK_SIZES,
  ErrorTypes,
  ISOLATE_AT_MOST,
  type ItemState,
  PATCHES,
  type RunBatchInput,
  type RunBatchResult,
  type StopReason,
  batchActivityId,
  boundReport,
  cpuBatchSize,
  firstWaveBatchSize,
  makeReport,
  toErrorReport,
} from '../shared';

type EngineActivities = ReturnType<typeof createEngineActivities>;

export type { StopReason };

/** The owner's hooks: requests are drained by the owner before each dispatch (single writer). */
export interface RunnerHooks {
  /** True when the owner has queued requests to handle. */
  pending(): boolean;
  /** Handles them (may call `requestStop`). */
  drain(): void;
}

export class ItemRunner extends ItemBook {
  private readonly activityScope: CancellationScope;
  private inFlight = 0;
  private isolatedInFlight = 0;
  private soloInFlight = false;
  private batchSeq: number;
  /** Batches this runner may have in flight while it ramps up (its allowance makes early failures matter). */
  private ramp: number;
  /** Guided batches in flight at most (decided at the first dispatch; jobs recorded before the cap have none). */
  private guidedCap: number | undefined;
  private staggerFirstWave: boolean | undefined;

  constructor(config: RunnerConfig, snapshot: RunnerSnapshot) {
    super(config, snapshot);
    this.batchSeq = snapshot.batchSeq;
    this.ramp = config.rampFrom !== undefined && config.allowedFailures !== undefined ? Math.max(1, config.rampFrom) : Infinity;
    // Created inside the caller's non-cancellable scope: only `requestStop` cancels it.
    this.activityScope = new CancellationScope({ cancellable: true });
  }

  get busy(): number {
    return this.inFlight;
  }

  snapshot(): RunnerSnapshot {
    return { items: this.states, batchSeq: this.batchSeq, attempts: this.attempts };
  }

  get(itemId: string): ItemState | undefined {
    return this.byId.get(itemId);
  }

  /** New limits for the work not yet started; a threshold already exceeded stops the runner now. */
  setLimits(limits: { concurrency?: number; allowedFailures?: number | null }): void {
    if (limits.concurrency !== undefined) this.config.options.concurrency = limits.concurrency;
    if (limits.allowedFailures === null) delete this.config.allowedFailures;
    else if (limits.allowedFailures !== undefined) this.config.allowedFailures = limits.allowedFailures;
    this.changed = true;
    this.enforceAllowance();
  }

  requestStop(reason: StopReason): void {
    if (this.stop) return;
    this.stop = reason;
    this.changed = true;
    this.activityScope.cancel();
  }

  /** The reason of a stop already under way, told late (its unfinished items' records give it). */
  explainStop(reason: StopReason): void {
    if (this.stop) this.stop = reason;
  }

  /** Runs until every item is done, the runner is stopped, or history must be rotated. */
  async run(hooks?: RunnerHooks): Promise<'done' | 'stopped' | 'rotate'> {
    for (;;) {
      hooks?.drain();
      if (this.stop) break;
      if (this.historyIsLong()) {
        await condition(() => this.inFlight === 0);
        // A stop that arrived while in-flight batches finished wins over rotation.
        hooks?.drain();
        if (this.stop) return 'stopped';
        return 'rotate';
      }
      const now = Date.now();
      if (!this.held) {
        this.releaseDueBackoff(now);
        this.dispatch();
      }
      const waiting = this.states.some((state) => state.phase !== 'done');
      if (!waiting && this.inFlight === 0) return 'done';
      const due = this.held ? undefined : this.nextBackoffDue();
      this.changed = false;
      const wake = () => this.changed || (hooks?.pending() ?? false);
      if (due !== undefined) await condition(wake, Math.max(1, due - now));
      else await condition(wake);
    }
    // Requests that arrive while in-flight batches finish are answered now, not when they end.
    for (;;) {
      await condition(() => this.inFlight === 0 || ((hooks?.pending() ?? false) && patched(PATCHES.answerWhileStopping)));
      if (this.inFlight === 0) return 'stopped';
      hooks?.drain();
    }
  }

  private historyIsLong(): boolean {
    const info = workflowInfo();
    return info.continueAsNewSuggested || info.historyLength > this.config.options.rotateAfterEvents;
  }

  private dispatch(): void {
    const { batchSize } = this.config.options;
    // The server starts batches scheduled together in no particular order: guided sizes only hold
    // (large first, small last) when few wait at a time.
    this.guidedCap ??= this.config.guidedBatches?.capInFlight && patched(PATCHES.guidedInFlight) ? (this.config.guidedBatches.ahead ?? CPU_WORK_SIZES.batchesAhead) : Infinity;
    const concurrency = Math.min(this.config.options.concurrency, this.ramp, this.guidedCap);
    // Isolation: suspects run one per activity, concurrently, unless one must run strictly alone.
    for (const state of this.states) {
      if (this.inFlight >= concurrency || this.soloInFlight) break;
      if (state.phase !== 'queued' || !state.isolate) continue;
      if (state.solo) {
        if (this.isolatedInFlight > 0) continue;
        this.launch([state], 'solo');
        break;
      }
      this.launch([state], 'isolated');
    }
    // A lost batch's suspects next, in batches of their own no larger than their halving allows.
    this.launchBatches(
      concurrency,
      (state) => state.suspectBatch !== undefined,
      (first) => Math.min(batchSize, first.suspectBatch ?? batchSize),
    );
    const unsuspected = (state: ItemState) => state.suspectBatch === undefined;
    const guided = this.config.guidedBatches;
    // Decided at the slice's first dispatch: a slice that started before it replays the sizes it ran.
    const staggered = (this.staggerFirstWave ??= guided?.capInFlight === true && patched(PATCHES.staggeredFirstWave));
    // The items launchBatches below may start: guided sizes are fractions of them.
    let queued = guided ? this.states.reduce((sum, state) => sum + (state.phase === 'queued' && !state.isolate && unsuspected(state) ? 1 : 0), 0) : 0;
    this.launchBatches(
      concurrency,
      unsuspected,
      guided
        ? () => {
            const guidedSize = cpuBatchSize(queued, guided.sliceItems, batchSize, guided.ahead);
            const size = staggered ? firstWaveBatchSize(guidedSize, this.batchSeq, guided.ahead ?? CPU_WORK_SIZES.batchesAhead) : guidedSize;
            queued -= size;
            return size;
          }
        : () => batchSize,
    );
  }

  /** Queued items that `belong`, in order, in batches of `sizeFor(their first item)`, while concurrency allows. */
  private launchBatches(concurrency: number, belong: (state: ItemState) => boolean, sizeFor: (first: ItemState) => number): void {
    let batch: ItemState[] = [];
    let size = 0;
    for (const state of this.states) {
      if (this.inFlight >= concurrency) break;
      if (state.phase !== 'queued' || state.isolate || !belong(state)) continue;
      if (batch.length === 0) size = sizeFor(state);
      batch.push(state);
      if (batch.length >= size) {
        this.launch(batch, 'batch');
        batch = [];
      }
    }
    if (batch.length > 0 && this.inFlight < concurrency) this.launch(batch, 'batch');
  }

  private launch(batch: ItemState[], kind: 'batch' | 'isolated' | 'solo'): void {
    const seq = ++this.batchSeq;
    const isolated = kind !== 'batch';
    for (const state of batch) {
      state.phase = 'running';
      state.runs += 1;
    }
    this.attempts += batch.length;
    this.inFlight += 1;
    if (isolated) this.isolatedInFlight += 1;
    if (kind === 'solo') this.soloInFlight = true;
    const { heartbeatTimeoutMs } = this.config.options;
    const steps = this.config.pipeline.steps;
    const itemTimeoutMs = Math.max(
      1_000,
      steps.reduce((sum, step) => sum + step.itemTimeoutMs, 0),
    );
    // A backstop only: each item has its own deadline inside the activity.
    const startToCloseTimeout = Math.min(itemTimeoutMs * batch.length + 60_000, 24 * 3600_000);
    const summary = `${batch.length} item(s)${isolated ? ' in isolation' : ''}: ${batch[0]?.item.id ?? ''}${batch.length > 1 ? ' …' : ''}`;
    const local = this.config.localFirstRun === true && kind === 'batch' && batch.every((state) => state.runs === 1);
    const activities = local
      ? // Temporal runs it again from the start if this worker dies: the activity tells that apart (LocalBatchLost).
        proxyLocalActivities<EngineActivities>({ startToCloseTimeout, retry: { maximumAttempts: 1 }, cancellationType: 'WAIT_CANCELLATION_COMPLETED', summary: `local: ${summary}` })
      : this.queuedActivities(seq, startToCloseTimeout, summary);
    const input: RunBatchInput = {
      job: this.config.job,
      ...this.batchItems(batch, seq),
      heartbeatTimeoutMs,
      isolated,
      itemTimeoutMs,
      ...(this.config.allowedFailures !== undefined ? { reportFailures: true } : {}),
      ...(local && this.config.onReleasedByBatch && batch.length === this.states.length ? { releaseIfAllFinished: true } : {}),
    };
    const othersIsolated = this.isolatedInFlight > 1;
    this.activityScope
      .run(() => activities.runBatch(input))
      .then(
        (result) => this.onBatchResult(batch, result),
        (error: unknown) => this.onBatchFailure(batch, kind, error, othersIsolated || this.isolatedInFlight > 1),
      )
      .finally(() => {
        for (const state of batch) this.earlyFailures.delete(state.item.id);
        this.inFlight -= 1;
        if (isolated) this.isolatedInFlight -= 1;
        if (kind === 'solo') this.soloInFlight = false;
        this.changed = true;
      })
      .catch((error: unknown) => log.error('batch bookkeeping failed', { error: String(error) }));
  }

  /** The batch's items, by reference to the pinned items where they have a place, and where its records go. */
  private batchItems(batch: readonly ItemState[], seq: number): Pick<RunBatchInput, 'entries' | 'items' | 'recordsPart' | 'storedBeats'> {
    const byReference = this.config.byReference;
    const inline = () => batch.map((state) => ({ item: state.item, outputs: state.outputs, run: state.runs }));
    if (!byReference) return { entries: inline() };
    const recordsPart = `${byReference.recordsPrefix}-b${seq}`;
    const storedBeats = byReference.storedBeats === true ? { storedBeats: true } : {};
    const itemsRef = byReference.itemsRef;
    const named = itemsRef !== undefined && batch.every((state) => state.at !== undefined && sameList(state.outputs, byReference.outputs));
    if (!named) return { items: { kind: 'inline', entries: inline() }, recordsPart, ...storedBeats };
    const ranges: [number, number][] = [];
    for (const state of batch) {
      const at = state.at ?? 0;
      const last = ranges[ranges.length - 1];
      if (last && last[1] === at) last[1] = at + 1;
      else ranges.push([at, at + 1]);
    }
    const firstRun = batch[0]?.runs ?? 1;
    const runs = batch.every((state) => state.runs === firstRun) ? firstRun : batch.map((state) => state.runs);
    return { items: { kind: 'stored', ref: itemsRef, ranges, runs, outputs: [...byReference.outputs] }, recordsPart, ...storedBeats };
  }

  private queuedActivities(seq: number, startToCloseTimeout: number, summary: string) {
    return proxyActivities<EngineActivities>({
      startToCloseTimeout,
      heartbeatTimeout: this.config.options.heartbeatTimeoutMs,
      // The workflow owns every retry decision; Temporal runs each batch once.
      retry: { maximumAttempts: 1 },
      cancellationType: 'WAIT_CANCELLATION_COMPLETED',
      // Through the task queue, never eagerly to this worker: there priority and fairness decide which job's batch runs next.
      allowEagerDispatch: false,
      ...jobPriority(),
      // A pipeline on its own workers (`taskQueue: 'gpu'`) gets its batches there; the job stays on the main queue.
      ...(this.config.pipeline.taskQueue !== undefined ? { taskQueue: this.config.pipeline.taskQueue } : {}),
      activityId: batchActivityId(this.config.scopeId, seq),
      summary,
    });
  }

  private onBatchResult(batch: ItemState[], result: RunBatchResult): void {
    if (this.ramp !== Infinity) this.ramp = this.ramp >= this.config.options.concurrency ? Infinity : this.ramp + 1;
    for (const outcome of result.outcomes) this.apply(outcome);
    if (result.stored) this.applyStored(batch, result.stored);
    if (result.released) this.config.onReleasedByBatch?.(result.released);
    this.requeueUnfinished(batch);
  }

  private onBatchFailure(batch: ItemState[], kind: 'batch' | 'isolated' | 'solo', error: unknown, othersIsolated: boolean): void {
    const cause = error instanceof ActivityFailure ? error.cause : error;
    const progress = progressFrom(cause);
    for (const outcome of progress?.done ?? []) this.apply(outcome);
    if (progress?.stored) this.applyStored(batch, progress.stored);
    const unfinished = batch.filter((state) => state.phase === 'running');
    if (cause instanceof ApplicationFailure && cause.type === ErrorTypes.WorkerShutdown) {
      // A deploy, not a crash: hand the work back untouched.
      for (const state of unfinished) state.phase = 'queued';
      return;
    }
    if (this.stop) {
      for (const state of unfinished) state.phase = 'queued';
      return;
    }
    const at = new Date().toISOString();
    const report = boundReport(toErrorReport(error, { at })).report;
    const lostWorker = (cause instanceof TimeoutFailure && cause.timeoutType === TimeoutType.HEARTBEAT) || (cause instanceof ApplicationFailure && cause.type === ErrorTypes.LocalBatchLost);
    const overran = cause instanceof TimeoutFailure && cause.timeoutType === TimeoutType.START_TO_CLOSE;
    if (!lostWorker && !overran) {
      // Not a crash: the failure is reported with its own type and class on every unfinished item.
      for (const state of unfinished) this.apply({ item: state.item.id, error: { ...report, item: state.item.id } });
      return;
    }
    // Thousands of items re-run one per activity would take hours: a large batch's go again in halves.
    const bisect = kind === 'batch' && unfinished.length > ISOLATE_AT_MOST && patched(PATCHES.bisectLostBatches);
    for (const state of unfinished) {
      if (kind === 'batch') {
        // Merely in flight when the worker was lost (or the batch overran): re-run in a half-size batch or alone, free of charge.
        if (bisect) state.suspectBatch = Math.ceil(unfinished.length / 2);
        else {
          state.isolate = true;
          delete state.suspectBatch;
        }
        state.phase = 'queued';
        continue;
      }
      if (overran) {
        const timedOut = makeReport({ type: ErrorTypes.ItemTimedOut, message: 'the item ran past its deadline', details: { cause: report }, item: state.item.id, at });
        this.apply({ item: state.item.id, error: timedOut });
        continue;
      }
      if (kind === 'isolated' && othersIsolated) {
        // Other suspects were running too: the crash cannot be blamed yet. Run it strictly alone.
        state.solo = true;
        state.phase = 'queued';
        continue;
      }
      state.crashes += 1;
      state.lastError = { ...report, item: state.item.id, attempts: state.runs };
      if (state.crashes >= this.config.options.crashBudget) {
        const crashed = makeReport({
          type: ErrorTypes.Crashed,
          class: 'crash',
          message: `item crashed the worker ${state.crashes} time(s) in isolation; crash budget ${this.config.options.crashBudget} exhausted`,
          details: { crashes: state.crashes, crashBudget: this.config.options.crashBudget, cause: report },
          item: state.item.id,
          attempts: state.runs,
          at,
        });
        this.finishFailed(state, crashed);
      } else {
        state.phase = 'queued';
      }
    }
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((value, index) => value === b[index]);
}
