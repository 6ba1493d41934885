/**
 * The per-item engine that job and shard workflows share (workflow code: deterministic, no I/O).
 *
 * It owns both budgets: transient attempts follow the step's retry policy with workflow timers
 * (so backoff is visible and can be cut short by `retry`), and crashes are counted separately:
 * the unfinished items of a crashed batch are re-run one at a time ("isolation") and only a crash
 * in isolation is charged to the item. A graceful worker shutdown hands work back for free.
 */
import { ActivityFailure, ApplicationFailure, CancellationScope, TimeoutFailure, condition, log, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { createEngineActivities } from '../../activities/engine';
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
  backoffDelayMs,
  batchActivityId,
  completeRecords,
  emptyStatusCounts,
  makeReport,
  toErrorReport,
} from '../../shared';

type EngineActivities = ReturnType<typeof createEngineActivities>;

export type StopReason = { kind: 'fatal'; report: ErrorReport } | { kind: 'cancelled'; reason: string };

export interface RunnerConfig {
  job: JobContext;
  pipeline: PipelineDefinition;
  options: ResolvedOptions;
  /** Used in activity ids: `<scopeId>/batch-N`. */
  scopeId: string;
  /** Largest number of failed items allowed in this runner, or undefined. */
  allowedFailures?: number;
}

export type RunnerSnapshot = RunnerSnapshotData;

export class ItemRunner {
  readonly states: ItemState[];
  private readonly byId = new Map<string, ItemState>();
  private readonly activityScope: CancellationScope;
  private inFlight = 0;
  private isolationInFlight = false;
  private changed = false;
  private batchSeq: number;
  stop?: StopReason;
  /** Total item runs dispatched (the `attempts` metric). */
  attempts: number;
  failedItems = 0;

  constructor(
    private readonly config: RunnerConfig,
    snapshot: RunnerSnapshot,
  ) {
    this.states = snapshot.items;
    this.batchSeq = snapshot.batchSeq;
    this.attempts = snapshot.attempts;
    for (const state of this.states) {
      this.byId.set(state.item.id, state);
      if (state.phase === 'running') state.phase = 'queued';
      if (state.phase === 'done' && hasFailed(state)) this.failedItems += 1;
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

  requestStop(reason: StopReason): void {
    if (this.stop) return;
    this.stop = reason;
    this.changed = true;
    this.activityScope.cancel();
  }

  /** Puts items back in the queue with fresh budgets (a retry round), or wakes one in backoff. */
  requeue(itemId: string, source?: string): boolean {
    const state = this.byId.get(itemId);
    if (!state) return false;
    if (state.phase === 'running' || state.phase === 'queued') return false;
    if (state.phase === 'done' && hasFailed(state)) this.failedItems -= 1;
    if (source !== undefined) state.item = { ...state.item, source };
    if (state.phase === 'done') {
      state.transientFailures = 0;
      state.crashes = 0;
      state.isolate = false;
      delete state.records;
      delete state.lastError;
    }
    state.phase = 'queued';
    delete state.nextAttemptAt;
    this.changed = true;
    return true;
  }

  /** Runs until every item is done, the runner is stopped, or history must be rotated. */
  async run(): Promise<'done' | 'stopped' | 'rotate'> {
    for (;;) {
      if (this.stop) break;
      if (this.historyIsLong()) {
        await condition(() => this.inFlight === 0);
        return 'rotate';
      }
      const now = Date.now();
      this.releaseDueBackoff(now);
      this.dispatch();
      const waiting = this.states.some((state) => state.phase !== 'done');
      if (!waiting && this.inFlight === 0) return 'done';
      const due = this.nextBackoffDue();
      this.changed = false;
      if (due !== undefined) await condition(() => this.changed, Math.max(1, due - now));
      else await condition(() => this.changed);
    }
    await condition(() => this.inFlight === 0);
    return 'stopped';
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
      const reason = this.stop?.kind === 'cancelled' ? `job cancelled: ${this.stop.reason}` : this.stop?.kind === 'fatal' ? `job ended early by ${this.stop.report.type}` : 'not attempted';
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
    const { batchSize, concurrency } = this.config.options;
    // Isolation: one suspect item at a time, so a crash can be blamed on exactly one item.
    if (!this.isolationInFlight) {
      const suspect = this.states.find((state) => state.phase === 'queued' && state.isolate);
      if (suspect) this.launch([suspect], true);
    }
    let batch: ItemState[] = [];
    for (const state of this.states) {
      if (this.inFlight >= concurrency) break;
      if (state.phase !== 'queued' || state.isolate) continue;
      batch.push(state);
      if (batch.length >= batchSize) {
        this.launch(batch, false);
        batch = [];
      }
    }
    if (batch.length > 0 && this.inFlight < concurrency) this.launch(batch, false);
  }

  private launch(batch: ItemState[], isolated: boolean): void {
    const seq = ++this.batchSeq;
    const entries: BatchEntry[] = batch.map((state) => {
      state.phase = 'running';
      state.runs += 1;
      return { item: state.item, outputs: state.outputs, run: state.runs };
    });
    this.attempts += batch.length;
    this.inFlight += 1;
    if (isolated) this.isolationInFlight = true;
    const { heartbeatTimeoutMs } = this.config.options;
    const itemBudgetMs = Math.max(...this.config.pipeline.steps.map((step) => step.itemTimeoutMs), 1_000) * this.config.pipeline.steps.length;
    const activities = proxyActivities<EngineActivities>({
      startToCloseTimeout: Math.min(itemBudgetMs * batch.length + 60_000, 24 * 3600_000),
      heartbeatTimeout: heartbeatTimeoutMs,
      // The workflow owns every retry decision; Temporal runs each batch once.
      retry: { maximumAttempts: 1 },
      cancellationType: 'WAIT_CANCELLATION_COMPLETED',
      activityId: batchActivityId(this.config.scopeId, seq),
      summary: `${batch.length} item(s)${isolated ? ' in isolation' : ''}: ${batch[0]?.item.id ?? ''}${batch.length > 1 ? ' …' : ''}`,
    });
    const input = { job: this.config.job, entries, heartbeatTimeoutMs, isolated };
    this.activityScope
      .run(() => activities.runBatch(input))
      .then(
        (result) => this.onBatchResult(batch, result),
        (error: unknown) => this.onBatchFailure(batch, isolated, error),
      )
      .finally(() => {
        this.inFlight -= 1;
        if (isolated) this.isolationInFlight = false;
        this.changed = true;
      })
      .catch((error: unknown) => log.error('batch bookkeeping failed', { error: String(error) }));
  }

  private onBatchResult(batch: ItemState[], result: RunBatchResult): void {
    for (const outcome of result.outcomes) this.apply(outcome);
    this.requeueUnfinished(batch);
  }

  private onBatchFailure(batch: ItemState[], isolated: boolean, error: unknown): void {
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
    const report = toErrorReport(error, { at: new Date().toISOString() });
    for (const state of unfinished) {
      if (!isolated) {
        // Merely in flight when something crashed: re-run alone, free of charge.
        state.isolate = true;
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
          at: new Date().toISOString(),
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
    const state = this.byId.get(outcome.item);
    if (!state || state.phase === 'done') return; // at-least-once: a re-reported item counts once
    if ('records' in outcome) {
      state.records = completeRecords(state.item.id, state.outputs, outcome.records);
      state.bytesIn = outcome.bytesIn;
      state.bytesOut = outcome.bytesOut;
      state.phase = 'done';
      delete state.lastError;
      if (hasFailed(state)) this.noteFailure();
      return;
    }
    const report: ErrorReport = { ...outcome.error, item: state.item.id, attempts: state.runs };
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
    delete state.nextAttemptAt;
    this.noteFailure();
  }

  private noteFailure(): void {
    this.failedItems += 1;
    const allowed = this.config.allowedFailures;
    if (allowed !== undefined && this.failedItems > allowed && !this.stop) {
      this.requestStop({ kind: 'fatal', report: thresholdReport(this.failedItems, allowed) });
    }
  }

  private retryPolicy(stepName: string | undefined): RetryPolicy {
    const steps = this.config.pipeline.steps;
    const step = steps.find((candidate) => candidate.name === stepName) ?? steps[0];
    const base: RetryPolicy = step?.retry ?? { maxAttempts: 3, initialIntervalMs: 1_000, backoffCoefficient: 2, maximumIntervalMs: 60_000 };
    return { ...base, ...this.config.options.retryOverride };
  }
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
