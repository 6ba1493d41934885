/**
 * The item runner's book of items: each item's state, its outcome applied once (at-least-once
 * batches), transient backoff by the step's retry policy, failures counted against the allowance
 * (including those a batch told of early), and the records and counts read from it.
 */
import {
  type BackoffEntry,
  type ErrorReport,
  type ItemOutcome,
  type ItemState,
  type JobItem,
  type OutputRecord,
  type RetryPolicy,
  type StopReason,
  backoffDelayMs,
  boundReport,
  type JobContext,
  type PipelinePlan,
  type ResolvedOptions,
  type RunnerSnapshotData,
  type StatusCounts,
  type StorageReleased,
  type StoredBatchRecords,
  completeRecords,
  emptyStatusCounts as noCounts,
} from '../shared';
import { backoffEntries, countsSoFar, hasFailed, thresholdReport } from './item-records';

export interface RunnerConfig {
  job: JobContext;
  pipeline: PipelinePlan;
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
  /**
   * A `work: 'cpu'` pipeline's default batches: each `cpuBatchSize` of the items still queued (of
   * `sliceItems`), up to `options.batchSize`, instead of all `options.batchSize`.
   */
  guidedBatches?: {
    sliceItems: number;
    /** At most `ahead` in flight (behind `PATCHES.guidedInFlight`): the server starts batches scheduled together in any order. */
    capInFlight?: true;
    /** Batches kept in flight, each `1/ahead` of the queue (`cpuBatchesAhead`); `CPU_WORK_SIZES.batchesAhead` when absent. */
    ahead?: number;
  };
  /**
   * Each item's first run goes out as a local activity on this worker (a job that fits one batch):
   * no wait for an activity slot behind other jobs. Any later run goes through the task queue.
   */
  localFirstRun?: boolean;
  /**
   * With `localFirstRun`, the job's only batch (every item of a job that closes when it settles)
   * also releases the job's working copies when every item finishes; told what it released.
   */
  onReleasedByBatch?: (released: StorageReleased) => void;
  /**
   * Items out of history (a stored slice): batches name items that have a place (`at`) by reference
   * to the pinned items, and write their records to job storage parts named `<recordsPrefix>-b<seq>`.
   */
  byReference?: { itemsRef?: string; outputs: readonly string[]; recordsPrefix: string; storedBeats?: boolean };
}

export type RunnerSnapshot = RunnerSnapshotData;

export abstract class ItemBook {
  readonly states: ItemState[];
  protected readonly byId = new Map<string, ItemState>();
  protected changed = false;
  /** Paused by an operator: nothing new starts, backoff timers hold. */
  protected held = false;
  stop?: StopReason;
  /** Total item runs dispatched (the `attempts` metric). */
  attempts: number;
  failedItems = 0;
  /** Items a running batch said failed for good, before its result arrived (counted against the allowance). */
  protected readonly earlyFailures = new Set<string>();
  /** Records of finished items that batches wrote to job storage (not held here): where, how many, bytes. */
  private stored = { parts: [] as string[], counts: noCounts(), bytesIn: 0, bytesOut: 0 };

  constructor(
    protected readonly config: RunnerConfig,
    snapshot: RunnerSnapshot,
  ) {
    this.states = snapshot.items;
    this.attempts = snapshot.attempts;
    this.failedItems = config.initialFailures ?? 0;
    for (const state of this.states) {
      this.byId.set(state.item.id, state);
      if (state.phase === 'running') state.phase = 'queued';
    }
  }

  abstract requestStop(reason: StopReason): void;

  static initialState(entries: { item: JobItem; outputs: readonly string[]; at?: number }[]): RunnerSnapshot {
    return {
      items: entries.map(({ item, outputs, at }) => ({
        item,
        ...(at !== undefined ? { at } : {}),
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

  /** Removes finished items and returns their records (written to storage before continue-as-new) and the parts batches wrote. */
  takeFinished(): { records: OutputRecord[]; parts: string[]; bytesIn: number; bytesOut: number } {
    const { parts, bytesIn, bytesOut } = this.takeStored();
    const taken = { records: [] as OutputRecord[], parts, bytesIn, bytesOut };
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

  /** The parts batches wrote records of finished items to, and their bytes; forgotten here. */
  takeStored(): { parts: string[]; bytesIn: number; bytesOut: number } {
    const { parts, bytesIn, bytesOut } = this.stored;
    this.stored = { parts: [], counts: noCounts(), bytesIn: 0, bytesOut: 0 };
    return { parts, bytesIn, bytesOut };
  }

  backoffEntries(limit = 100): BackoffEntry[] {
    return backoffEntries(this.states, limit);
  }

  countsSoFar(): StatusCounts & { outputs: number } {
    return countsSoFar(this.states, this.stored.counts);
  }

  protected releaseDueBackoff(now: number): void {
    for (const state of this.states) {
      if (state.phase === 'backoff' && (state.nextAttemptAt ?? 0) <= now) {
        state.phase = 'queued';
        delete state.nextAttemptAt;
      }
    }
  }

  protected nextBackoffDue(): number | undefined {
    let due: number | undefined;
    for (const state of this.states) {
      if (state.phase === 'backoff' && state.nextAttemptAt !== undefined) due = due === undefined ? state.nextAttemptAt : Math.min(due, state.nextAttemptAt);
    }
    return due;
  }

  protected requeueUnfinished(batch: ItemState[]): void {
    for (const state of batch) if (state.phase === 'running') state.phase = 'queued';
  }

  /** Items of a batch whose records it wrote to job storage: finished, their records not held here. */
  protected applyStored(batch: readonly ItemState[], stored: StoredBatchRecords): void {
    const failed = new Set(stored.failedItems);
    let finished = 0;
    batch.forEach((state, index) => {
      if (stored.finished !== 'all' && stored.finished[index] !== '1') return;
      // Only this batch runs its items, so each is still running here: its records are in no other part.
      if (state.phase !== 'running') return;
      this.earlyFailures.delete(state.item.id);
      state.phase = 'done';
      delete state.lastError;
      finished += 1;
      if (failed.has(state.item.id)) this.noteFailure();
    });
    if (finished === 0) return;
    this.stored.parts.push(stored.location);
    for (const [status, count] of Object.entries(stored.counts)) this.stored.counts[status as keyof StatusCounts] += count;
    this.stored.bytesIn += stored.bytesIn;
    this.stored.bytesOut += stored.bytesOut;
  }

  protected apply(outcome: ItemOutcome): void {
    this.earlyFailures.delete(outcome.item);
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

  protected finishFailed(state: ItemState, report: ErrorReport): void {
    state.lastError = report;
    state.records = state.outputs.map((output) => ({ item: state.item.id, output, status: 'Failed', error: report }));
    state.phase = 'done';
    // The records hold the report; one copy is enough in the carried state.
    delete state.lastError;
    delete state.nextAttemptAt;
    this.noteFailure();
  }

  protected noteFailure(): void {
    this.failedItems += 1;
    this.config.onFailure?.(this.failuresSoFar);
    this.enforceAllowance();
  }

  /** Stops the runner once its failures certainly exceed what it may have. */
  protected enforceAllowance(): void {
    const allowed = this.config.allowedFailures;
    const failed = this.failuresSoFar;
    if (allowed !== undefined && failed > allowed && !this.stop) this.requestStop({ kind: 'fatal', report: thresholdReport(failed, allowed) });
  }

  protected retryPolicy(stepName: string | undefined): RetryPolicy {
    const steps = this.config.pipeline.steps;
    const step = steps.find((candidate) => candidate.name === stepName) ?? steps[0];
    const base: RetryPolicy = step?.retry ?? { maxAttempts: 3, initialIntervalMs: 1_000, backoffCoefficient: 2, maximumIntervalMs: 60_000 };
    return { ...base, ...this.config.options.retryOverride };
  }
}
