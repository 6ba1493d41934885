/** Payloads exchanged between workflows and activities (plain JSON only). */
import type { ErrorReport } from './errors';
import type { RetryRequest } from './messages';
import { type OutputRecord, type OutputStatus, type StatusCounts, addCounts, emptyStatusCounts } from './result';
import type { RunnerSnapshotData } from './snapshot';
import type { JobItem, JobSpec } from './spec';
import type { PipelinePlan } from './pipeline';
import type { RateLimits } from './rate-limits';

/** The spec without its items: what every batch needs to know about the job. */
export type JobContext = Pick<JobSpec, 'pipeline' | 'params' | 'destination'> & {
  jobId: string;
  /** The job's round (absent from jobs started before pipelines had steps). */ round?: number;
  /** A retry asked to run every step again (`retry --from-start`). */ fromStart?: boolean;
  /** `options.rateLimits`: limits per rate key, on top of the worker's. */
  rateLimits?: RateLimits;
};

/** The spec minus its items, for specs passed by reference. */
export type SpecHead = Omit<JobSpec, 'items'>;

export interface BatchEntry {
  item: JobItem;
  outputs: string[];
  /** How many times the engine has dispatched this item, including this one (1 = first run). */
  run: number;
}

/**
 * A batch's items: carried in the input, or named by their place in the job's pinned items (a stored
 * slice's first runs), which the activity reads itself: no item travels through history.
 */
export type BatchItems =
  | { kind: 'inline'; entries: BatchEntry[] }
  | {
      kind: 'stored';
      ref: string;
      /** [from, to) index ranges in the pinned items, in batch order. */
      ranges: [number, number][];
      /** Each item's run in batch order, or one run for all of them. */
      runs: number | number[];
      /** Outputs of every item that names none of its own. */
      outputs: string[];
    };

export interface RunBatchInput {
  job: JobContext;
  /** Batches of workflows before `items`. */
  entries?: BatchEntry[];
  items?: BatchItems;
  /**
   * The part of job storage this batch writes its finished items' records to: the result then
   * carries counts, not records (a stored slice's batches).
   */
  recordsPart?: string;
  heartbeatTimeoutMs: number;
  isolated: boolean;
  /** Deadline of one item; past it the item is a transient `ItemTimedOut` attempt and the batch goes on. */
  itemTimeoutMs?: number;
  /** The runner has a failure allowance: signal items that fail for good as they fail (`itemFailures`). */
  reportFailures?: boolean;
  /** With `recordsPart`: at each heartbeat, finished items' records go to a new part of job storage, which the heartbeat names (`BatchProgress.stored`) instead of carrying them. */
  storedBeats?: boolean;
  /**
   * The job's only batch, of a job that closes when it settles: when every item finishes with its
   * records, the batch also releases the job's working copies (`RunBatchResult.released`), so the
   * job closes without a housekeeping activity of its own.
   */
  releaseIfAllFinished?: boolean;
}

/** What releasing a job's working copies freed, and what the job keeps in storage. */
export interface StorageReleased {
  releasedBytes: number;
  keptBytes: number;
}

/** A batch's entries when its input carries them (small jobs; mocked batches in tests). */
export function carriedEntries(input: Pick<RunBatchInput, 'entries' | 'items'>): BatchEntry[] {
  if (input.items?.kind === 'stored') throw new TypeError('this batch names its items by place in the pinned items; they are read by the worker');
  return input.items?.entries ?? input.entries ?? [];
}

/** Items of a running batch that failed for good (not transient), told before the batch ends. */
export interface ItemFailuresReport {
  activityId: string;
  items: string[];
}

export type ItemOutcome = { item: string; records: OutputRecord[]; bytesIn: number; bytesOut: number } | { item: string; error: ErrorReport; retryAfterMs?: number };

export interface BatchProgress {
  /** Finished items not in `stored`. */
  done: ItemOutcome[];
  /** With `storedBeats`: where the records of the items finished by the last heartbeat are kept. */
  stored?: StoredBatchRecords;
  /** What the running item's step said last (`ctx.heartbeat`), shown with the activity's heartbeat. */
  current?: { item: string; details: unknown };
}

/** Records by status of the items a running batch's heartbeat says it finished (stored or carried). */
export function countsOfBeat(beat: BatchProgress): StatusCounts {
  const counts = { ...emptyStatusCounts(), ...beat.stored?.counts };
  for (const outcome of beat.done) if ('records' in outcome) for (const record of outcome.records) counts[record.status] += 1;
  return counts;
}

/** Events of a workflow whose first workflow task has not ended: started, task scheduled, task started. */
const FIRST_TASK_NOT_ENDED_EVENTS = 3;

/**
 * A running slice's counts as the server keeps them: its memo (its ended batches) plus what its
 * running batches' last heartbeats say they finished. A slice with no memo has done nothing while
 * its first workflow task has not ended; after that it ran older code (undefined: ask it by query).
 */
export function sliceCountsKept(kept: (StatusCounts & { outputs: number }) | undefined, historyLength: number, beats: readonly BatchProgress[]): (StatusCounts & { outputs: number }) | undefined {
  if (!kept) return historyLength <= FIRST_TASK_NOT_ENDED_EVENTS ? { ...emptyStatusCounts(), outputs: 0 } : undefined;
  return beats.reduce((counts, beat) => addCounts(counts, countsOfBeat(beat)), { ...kept });
}

export interface RunBatchResult {
  /** With `recordsPart`: only the items that did not finish (errors); the finished ones are in `stored`. */
  outcomes: ItemOutcome[];
  /** Items not started because the batch was cancelled. */
  notStarted: string[];
  stored?: StoredBatchRecords;
  /** With `releaseIfAllFinished`, when every item finished: the working copies are released. */
  released?: StorageReleased;
}

/** Finished items whose records a batch wrote to job storage (`recordsPart`). */
export interface StoredBatchRecords {
  location: string;
  /** One character per batch item, in batch order: '1' finished (its records are at `location`), '0' not; or 'all'. */
  finished: string;
  /** Records at `location` by status. */
  counts: StatusCounts;
  /** Finished items with a Failed record (counted against the failure allowance). */
  failedItems: string[];
  bytesIn: number;
  bytesOut: number;
}

/** Where a slice's items come from: carried inline (small specs) or read from the stored spec. */
export type ItemsSource = { kind: 'inline'; items: JobItem[] } | { kind: 'stored'; ref: string; from: number; to: number };

/** Where a slice's output records are: inline (small inline jobs) or in job storage. */
export type RecordsLocation = { kind: 'inline'; records: OutputRecord[] } | { kind: 'stored'; location: string };

/** Why a runner or slice stopped before its items were done. */
export type StopReason = { kind: 'fatal'; report: ErrorReport } | { kind: 'cancelled'; reason: string };

/** First run of a slice, or a retry round over the failed items of its previous records. */
export type SliceMode = { kind: 'first' } | { kind: 'retry'; selection: RetryRequest; base: RecordsLocation };

export interface SliceCarry {
  snapshot: RunnerSnapshotData;
  /** Records of items finished before continue-as-new, already in storage. */
  segments: string[];
  newFailures: number;
  bytesIn: number;
  bytesOut: number;
}

export interface SliceInput {
  jobId: string;
  sliceIndex: number;
  round: number;
  /** A task priority set since the job started (carried across the slice's continue-as-new). */
  priority?: number;
  head: SpecHead;
  items: ItemsSource;
  batchSize: number;
  concurrency: number;
  /** New failures this slice may have before the job certainly exceeds its threshold. */
  allowedFailures?: number;
  /** Signal every new failure to the parent (only when the job has a threshold). */
  reportFailures: boolean;
  mode: SliceMode;
  /** Where this slice keeps its records: inline (small jobs run inside the job workflow) or stored. */
  keep: RecordsLocation['kind'];
  resume?: SliceCarry;
  /** Start held: the job is paused (`sliceControl` signals release it). */
  paused?: boolean;
  /** The job's pipeline as its worker described it (absent in slices of older jobs: the built-ins' legacy plans). */
  plan?: PipelinePlan;
}

export interface SliceSummary {
  sliceIndex: number;
  /** Items of the slice (all of them, not only those run this round). */
  items: number;
  counts: StatusCounts & { outputs: number };
  /** Failed items in the slice's records after this round. */
  failedItems: number;
  /** Items that failed during this round's run. */
  newFailures: number;
  /** Items run this round. */
  ran: number;
  bytesIn: number;
  bytesOut: number;
  attempts: number;
  stop?: StopReason;
  records: RecordsLocation;
}

/** Records for a range of slices that never ran (job ended early) or whose workflow failed. */
export interface FillSlicesInput {
  jobId: string;
  round: number;
  head: SpecHead;
  spec: ItemsSource;
  sliceSize: number;
  slices: { from: number; to: number };
  status: Extract<OutputStatus, 'Cancelled' | 'Failed'>;
  reason: string;
  error?: ErrorReport;
}

/** Slice failure counts signalled to the parent while a slice runs (exact job-wide threshold). */
export interface SliceFailuresReport {
  sliceIndex: number;
  round: number;
  newFailures: number;
}
