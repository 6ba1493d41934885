/**
 * The per-item engine that job and shard workflows share (workflow code: deterministic, no I/O).
 *
 * It owns both budgets: transient attempts follow the step's retry policy with workflow timers
 * (so backoff is visible), and crashes are counted separately. Only a lost worker (heartbeat
 * timeout) is a crash: the unfinished items of that batch are re-run in isolation, each in its own
 * activity, concurrently; an item that crashes again while other isolated items were in flight
 * runs strictly alone next, so only the poison item is ever charged. A graceful worker shutdown
 * hands work back for free. Any other batch failure is reported with its own type and class.
 */
import { ActivityFailure, ApplicationFailure, CancellationScope, TimeoutFailure, condition, log, proxyActivities, workflowInfo } from '@temporalio/workflow';
import { TimeoutType } from '@temporalio/common';
import type { createEngineActivities } from '../activities/engine';
import {
  type BackoffEntry,
  type BatchEntry,
  type BatchProgress,
  type ErrorReport,
  ErrorTypes,
  type ItemState,
  type RunnerSnapshotData,
  type ItemOutcome,
  type JobContext,
  type JobItem,
  type OutputRecord,
  type PipelineDefinition,
  type ResolvedOptions,
  type RetryPolicy,
  type RunBatchResult,
  type StopReason,
  backoffDelayMs,
  batchActivityId,
  boundReport,
  emptyStatusCounts,
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

export interface RunnerConfig {
  job: JobContext;
  pipeline: PipelineDefinition;
  options: ResolvedOptions;
  /** Used in activity ids: `<scopeId>/batch-N`. */
  scopeId: string;
  /** Largest number of failed items allowed in this runner, or undefined. */
  allowedFailures?: number;
  /** Failures already counted against `allowedFailures` (carried over continue-as-new). */
  initialFailures?: number;
  /** Told about every new failed item (a slice reports it to its job). */
  onFailure?: (failedItems: number) => void;
  /**
   * With an allowance, start this many batches and add one per batch that ends: every slice's first
   * batches run (and fail) early instead of queueing behind all of its siblings' batches.
   */
  rampFrom?: number;
}

export type RunnerSnapshot = RunnerSnapshotData;

export class ItemRunner {
  readonly states: ItemState[];
  private readonly byId = new Map<string, ItemState>();
  private readonly activityScope: CancellationScope;
  private inFlight = 0;
  private isolatedInFlight = 0;
  private soloInFlight = false;
  private changed = false;
  /** Paused by an operator: nothing new starts, backoff timers hold. */
  private held = false;
  private batchSeq: number;
  stop?: StopReason;
  /** Total item runs dispatched (the `attempts` metric). */
  attempts: number;
  failedItems = 0;
  /** Batches this runner may have in flight while it ramps up (its allowance makes early failures matter). */
  private ramp: number;
  /** Items a running batch said failed for good, before its result arrived (counted against the allowance). */
  private readonly earlyFailures = new Set<string>();

  constructor(
    private readonly config: RunnerConfig,
    snapshot: RunnerSnapshot,
  ) {
    this.states = snapshot.items;
    this.batchSeq = snapshot.batchSeq;
    this.attempts = snapshot.attempts;
    this.failedItems = config.initialFailures ?? 0;
    this.ramp = config.rampFrom !== undefined && config.allowedFailures !== undefined ? Math.max(1, config.rampFrom) : Infinity;
    for (const state of this.states) {
      this.byId.set(state.item.id, state);
      if (state.phase === 'running') state.phase = 'queued';
    }
    // Created inside the caller's non-cancellable scope: only `requestStop` cancels it.
    this.activityScope = new CancellationScope({ cancellable: true });
  }

  static initialState(entries: { item: JobItem; outputs: readonly string[] }[]): RunnerSnapshot {
    return {
      items: entries.map(({ item, outputs }) => ({
        item,
        outputs: [...outputs],
        phase: 'queued',
        runs: 0,
        transientFailures: 0,
        crashes: 0,
        isolate: false,
      })),
      batchSeq: 0,
      attempts: 0,
    };
  }

  snapshot(): RunnerSnapshot {
    return { items: this.states, batchSeq: this.batchSeq, attempts: this.attempts };
  }

  get busy(): number {
    return this.inFlight;
  }

  get(itemId: string): ItemState | undefined {
    return this.byId.get(itemId);
  }

  /** Pause (true) or resume: in-flight batches finish, nothing new starts, backoff keeps its remaining time. */
  hold(paused: boolean): void {
    if (this.held === paused) return;
    this.held = paused;
    this.changed = true;
    const now = Date.now();
    for (const state of this.states) {
      if (state.phase !== 'backoff') continue;
      if (paused && state.nextAttemptAt !== undefined) {
        state.heldMs = Math.max(0, state.nextAttemptAt - now);
        delete state.nextAttemptAt;
      } else if (!paused && state.heldMs !== undefined) {
        state.nextAttemptAt = now + state.heldMs;
        delete state.heldMs;
      }
    }
  }

  /** New limits for the work not yet started; a threshold already exceeded stops the runner now. */
  setLimits(limits: { concurrency?: number; allowedFailures?: number | null }): void {
    if (limits.concurrency !== undefined) this.config.options.concurrency = limits.concurrency;
    if (limits.allowedFailures === null) delete this.config.allowedFailures;
    else if (limits.allowedFailures !== undefined) this.config.allowedFailures = limits.allowedFailures;
    this.changed = true;
    this.enforceAllowance();
  }

  /** Items of `ids` waiting in backoff run at the next dispatch; returns the ids still to run. */
  retryNow(ids: readonly string[]): string[] {
    const woken: string[] = [];
    for (const id of ids) {
      const state = this.byId.get(id);
      if (!state || state.phase === 'done') continue;
      if (state.phase === 'backoff') {
        state.phase = 'queued';
        delete state.nextAttemptAt;
        this.changed = true;
      }
      woken.push(id);
    }
    return woken;
  }

  /** Items of running batches that failed for good, told by the batch before it ends. */
  noteEarlyFailures(items: readonly string[]): void {
    let added = 0;
    for (const id of items) {
      const state = this.byId.get(id);
      if (!state || state.phase !== 'running' || this.earlyFailures.has(id)) continue;
      this.earlyFailures.add(id);
      added += 1;
    }
    if (added === 0) return;
    this.changed = true;
    this.config.onFailure?.(this.failuresSoFar);
    this.enforceAllowance();
  }

  /** Failed items, including those told early whose batch has not ended yet. */
  get failuresSoFar(): number {
    return this.failedItems + this.earlyFailures.size;
  }

  requestStop(reason: StopReason): void {
    if (this.stop) return;
    this.stop = reason;
    this.changed = true;
    this.activityScope.cancel();
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
    await condition(() => this.inFlight === 0);
    return 'stopped';
  }

  /** Removes finished items and returns their records (written to storage before continue-as-new). */
  takeFinished(): { records: OutputRecord[]; bytesIn: number; bytesOut: number } {
    const taken = { records: [] as OutputRecord[], bytesIn: 0, bytesOut: 0 };
    const kept = this.states.filter((state) => {
      if (state.phase !== 'done') return true;
      taken.records.push(...(state.records ?? []));
      taken.bytesIn += state.bytesIn ?? 0;
      taken.bytesOut += state.bytesOut ?? 0;
      this.byId.delete(state.item.id);
      return false;
    });
    this.states.splice(0, this.states.length, ...kept);
    return taken;
  }

  backoffEntries(limit = 100): BackoffEntry[] {
    return this.states
      .filter((state) => state.phase === 'backoff' && state.nextAttemptAt !== undefined)
      .slice(0, limit)
      .map((state) => ({
        item: state.item.id,
        attempts: state.transientFailures,
        nextAttemptAt: new Date(state.nextAttemptAt ?? 0).toISOString(),
        errorType: state.lastError?.type ?? 'unknown',
      }));
  }

  countsSoFar(): ReturnType<typeof emptyStatusCounts> & { outputs: number } {
    const counts = { ...emptyStatusCounts(), outputs: 0 };
    for (const state of this.states) {
      counts.outputs += state.outputs.length;
      for (const record of state.records ?? []) counts[record.status] += 1;
    }
    return counts;
  }

  /** One record per item × requested output; unfinished items become Cancelled. */
  finalRecords(): OutputRecord[] {
    const records: OutputRecord[] = [];
    for (const state of this.states) {
      if (state.phase === 'done' && state.records) {
        records.push(...state.records);
        continue;
      }
      const reason = unfinishedReason(this.stop);
      for (const output of state.outputs) {
        records.push({
          item: state.item.id,
          output,
          status: 'Cancelled',
          reason,
          ...(state.lastError ? { error: state.lastError } : {}),
        });
      }
    }
    return records;
  }

  private historyIsLong(): boolean {
    const info = workflowInfo();
    return info.continueAsNewSuggested || info.historyLength > this.config.options.rotateAfterEvents;
  }

  private releaseDueBackoff(now: number): void {
    for (const state of this.states) {
      if (state.phase === 'backoff' && (state.nextAttemptAt ?? 0) <= now) {
        state.phase = 'queued';
        delete state.nextAttemptAt;
      }
    }
  }

  private nextBackoffDue(): number | undefined {
    let due: number | undefined;
    for (const state of this.states) {
      if (state.phase === 'backoff' && state.nextAttemptAt !== undefined) due = due === undefined ? state.nextAttemptAt : Math.min(due, state.nextAttemptAt);
    }
    return due;
  }

  private dispatch(): void {
    const { batchSize } = this.config.options;
    const concurrency = Math.min(this.config.options.concurrency, this.ramp);
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
    let batch: ItemState[] = [];
    for (const state of this.states) {
      if (this.inFlight >= concurrency) break;
      if (state.phase !== 'queued' || state.isolate) continue;
      batch.push(state);
      if (batch.length >= batchSize) {
        this.launch(batch, 'batch');
        batch = [];
      }
    }
    if (batch.length > 0 && this.inFlight < concurrency) this.launch(batch, 'batch');
  }

  private launch(batch: ItemState[], kind: 'batch' | 'isolated' | 'solo'): void {
    const seq = ++this.batchSeq;
    const isolated = kind !== 'batch';
    const entries: BatchEntry[] = batch.map((state) => {
      state.phase = 'running';
      state.runs += 1;
      return { item: state.item, outputs: state.outputs, run: state.runs };
    });
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
    const activities = proxyActivities<EngineActivities>({
      // A backstop only: each item has its own deadline inside the activity.
      startToCloseTimeout: Math.min(itemTimeoutMs * batch.length + 60_000, 24 * 3600_000),
      heartbeatTimeout: heartbeatTimeoutMs,
      // The workflow owns every retry decision; Temporal runs each batch once.
      retry: { maximumAttempts: 1 },
      cancellationType: 'WAIT_CANCELLATION_COMPLETED',
      activityId: batchActivityId(this.config.scopeId, seq),
      summary: `${batch.length} item(s)${isolated ? ' in isolation' : ''}: ${batch[0]?.item.id ?? ''}${batch.length > 1 ? ' …' : ''}`,
    });
    const input = { job: this.config.job, entries, heartbeatTimeoutMs, isolated, itemTimeoutMs, ...(this.config.allowedFailures !== undefined ? { reportFailures: true } : {}) };
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

  private onBatchResult(batch: ItemState[], result: RunBatchResult): void {
    if (this.ramp !== Infinity) this.ramp = this.ramp >= this.config.options.concurrency ? Infinity : this.ramp + 1;
    for (const outcome of result.outcomes) this.apply(outcome);
    this.requeueUnfinished(batch);
  }

  private onBatchFailure(batch: ItemState[], kind: 'batch' | 'isolated' | 'solo', error: unknown, othersIsolated: boolean): void {
    const cause = error instanceof ActivityFailure ? error.cause : error;
    const progress = progressFrom(cause);
    for (const outcome of progress?.done ?? []) this.apply(outcome);
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
    const lostWorker = cause instanceof TimeoutFailure && cause.timeoutType === TimeoutType.HEARTBEAT;
    const overran = cause instanceof TimeoutFailure && cause.timeoutType === TimeoutType.START_TO_CLOSE;
    if (!lostWorker && !overran) {
      // Not a crash: the failure is reported with its own type and class on every unfinished item.
      for (const state of unfinished) this.apply({ item: state.item.id, error: { ...report, item: state.item.id } });
      return;
    }
    for (const state of unfinished) {
      if (kind === 'batch') {
        // Merely in flight when the worker was lost (or the batch overran): re-run alone, free of charge.
        state.isolate = true;
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

  private requeueUnfinished(batch: ItemState[]): void {
    for (const state of batch) if (state.phase === 'running') state.phase = 'queued';
  }

  private apply(outcome: ItemOutcome): void {
    this.earlyFailures.delete(outcome.item);
    const state = this.byId.get(outcome.item);
    if (!state || state.phase === 'done') return; // at-least-once: a re-reported item counts once
    if ('records' in outcome) {
      state.records = completeRecords(state, outcome.records);
      state.bytesIn = outcome.bytesIn;
      state.bytesOut = outcome.bytesOut;
      state.phase = 'done';
      delete state.lastError;
      if (hasFailed(state)) this.noteFailure();
      return;
    }
    // Reports from workers that predate budgets (or a pipeline's own) are cut here too.
    const report: ErrorReport = { ...boundReport(outcome.error).report, item: state.item.id, attempts: state.runs };
    state.lastError = report;
    switch (report.class) {
      case 'transient': {
        state.transientFailures += 1;
        const policy = this.retryPolicy(report.step);
        const exhausted = policy.maxAttempts !== 0 && state.transientFailures >= policy.maxAttempts;
        if (exhausted) {
          this.finishFailed(state, { ...report, details: { ...report.details, retryPolicy: policy } });
        } else {
          const delay = outcome.retryAfterMs ?? backoffDelayMs(policy, state.transientFailures);
          state.phase = 'backoff';
          state.nextAttemptAt = Date.now() + delay;
        }
        return;
      }
      case 'fatal':
        this.finishFailed(state, report);
        this.requestStop({ kind: 'fatal', report });
        return;
      default:
        this.finishFailed(state, report);
    }
  }

  private finishFailed(state: ItemState, report: ErrorReport): void {
    state.lastError = report;
    state.records = state.outputs.map((output) => ({ item: state.item.id, output, status: 'Failed', error: report }));
    state.phase = 'done';
    // The records hold the report; one copy is enough in the carried state.
    delete state.lastError;
    delete state.nextAttemptAt;
    this.noteFailure();
  }

  private noteFailure(): void {
    this.failedItems += 1;
    this.config.onFailure?.(this.failuresSoFar);
    this.enforceAllowance();
  }

  /** Stops the runner once its failures certainly exceed what it may have. */
  private enforceAllowance(): void {
    const allowed = this.config.allowedFailures;
    const failed = this.failuresSoFar;
    if (allowed !== undefined && failed > allowed && !this.stop) this.requestStop({ kind: 'fatal', report: thresholdReport(failed, allowed) });
  }

  private retryPolicy(stepName: string | undefined): RetryPolicy {
    const steps = this.config.pipeline.steps;
    const step = steps.find((candidate) => candidate.name === stepName) ?? steps[0];
    const base: RetryPolicy = step?.retry ?? { maxAttempts: 3, initialIntervalMs: 1_000, backoffCoefficient: 2, maximumIntervalMs: 60_000 };
    return { ...base, ...this.config.options.retryOverride };
  }
}

/** Why an item that never finished is Cancelled. */
export function unfinishedReason(stop: StopReason | undefined): string {
  if (stop?.kind === 'cancelled') return `job cancelled: ${stop.reason}`;
  return stop?.kind === 'fatal' ? `job ended early by ${stop.report.type}` : 'not attempted';
}

export function thresholdReport(failed: number, allowed: number): ErrorReport {
  return makeReport({
    type: ErrorTypes.ToleratedFailureThresholdExceeded,
    message: `${failed} failed item(s) exceed the tolerated ${allowed}`,
    details: { failedItems: failed, toleratedFailures: allowed },
    at: new Date().toISOString(),
  });
}

function hasFailed(state: ItemState): boolean {
  return (state.records ?? []).some((record) => record.status === 'Failed');
}

/** Exactly one record per requested output, whatever the pipeline returned. */
function completeRecords(state: ItemState, records: OutputRecord[]): OutputRecord[] {
  return state.outputs.map((output) => {
    const found = records.find((record) => record.output === output);
    if (found) return { ...found, item: state.item.id };
    return {
      item: state.item.id,
      output,
      status: 'Failed',
      error: makeReport({
        type: ErrorTypes.InternalError,
        message: `the pipeline reported no status for output "${output}"`,
        details: {},
        item: state.item.id,
        output,
        at: new Date().toISOString(),
      }),
    };
  });
}

/** Finished items reported before a batch failed: last heartbeat, or the shutdown hand-back. */
function progressFrom(cause: unknown): BatchProgress | undefined {
  if (cause instanceof TimeoutFailure) return asProgress(cause.lastHeartbeatDetails);
  if (cause instanceof ApplicationFailure) return asProgress(cause.details?.[1]);
  return undefined;
}

function asProgress(value: unknown): BatchProgress | undefined {
  if (value && typeof value === 'object' && Array.isArray((value as BatchProgress).done)) return value as BatchProgress;
  return undefined;
}
