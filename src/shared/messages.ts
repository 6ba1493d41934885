/** Signals, queries and updates of the job workflow: one definition, used by workflows and clients. */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ItemFailuresReport, SliceFailuresReport, StopReason } from './engine-types';
import type { JobResult, StatusCounts } from './result';

export type JobPhase = 'validating' | 'running' | 'paused' | 'settling' | 'retry-window' | 'closed';

export interface BackoffEntry {
  item: string;
  attempts: number;
  nextAttemptAt: string;
  errorType: string;
}

export interface JobProgress {
  jobId: string;
  pipeline: string;
  phase: JobPhase;
  settled: boolean;
  round: number;
  counts: StatusCounts & { items: number; outputs: number };
  inFlight: number;
  backoff: BackoffEntry[];
  shards: { done: number; total: number };
  retryWindowEndsAt?: string;
  /** Requests waiting for the main loop (e.g. a retry sent while the round still runs). */
  pendingRequests: number;
  rejectedRequests: RejectedRequest[];
  /** True while an operator holds the job (`pause`); the phase of a held running round is `paused`. */
  paused?: boolean;
  /** The limits in force (after any `set`). */
  limits?: EffectiveLimits;
  /** Indexes of the slices running now (first rounds of sliced jobs); their counts are not yet in `counts`. */
  slicesRunning?: number[];
  /** The job's task priority (1 first … 5 last), tenant (fairness key) and weight, as it started. */
  scheduling?: { priority?: number; tenant?: string; weight?: number };
  /** Rate keys this job's items hold or wait for now (added by the client from the keys' limiters). */
  rateLimits?: RateKeyProgress[];
}

/** One rate key as a job sees it: its items waiting and in flight, and the key's whole state. */
export interface RateKeyProgress {
  key: string;
  perSecond: number;
  concurrency: number;
  /** This job's items waiting for a lease, and holding one. */
  waiting: number;
  inFlight: number;
  /** Every job's. */
  keyWaiting: number;
  keyInFlight: number;
  effectivePerSecond: number;
  /** Retry-After pauses so far, and the one in force. */
  backoffs: number;
  blockedUntil?: string;
}

/** `faultline set`: new limits for the work not yet started. */
export interface LimitsRequest {
  concurrency?: number;
  /** Task priority (1 first … 5 last) of the batches and slices scheduled from now on. */
  priority?: number;
  toleratedFailureCount?: number;
  toleratedFailurePercent?: number;
}
export interface EffectiveLimits {
  concurrency: number;
  /** Largest number of failed items the job tolerates; absent: no threshold. */
  allowedFailures?: number;
}
/** One accepted `set`, as recorded in the result's `limitsChanged`. */
export interface LimitsChange extends LimitsRequest {
  origin: RequestOrigin;
  at: string;
}
export interface PauseResponse {
  paused: boolean;
  phase: JobPhase;
}

export interface RetryRequest {
  items?: string[];
  types?: string[];
  /** Corrected sources per item id. */
  sources?: Record<string, string>;
  /** Also items whose outputs were Cancelled (a closed job's follow-up: resume after a mistaken cancel). */
  includeCancelled?: boolean;
  /** Run every step again: ignore checkpoints and working copies kept from earlier rounds (a source fixed in place). */
  fromStart?: boolean;
}
export interface RetryResponse {
  queued: string[];
  /** How many items were queued (`queued` lists at most 1 000 ids). */
  queuedCount: number;
  round: number;
}
export interface CancelRequest {
  reason?: string;
}
export interface CancelResponse {
  accepted: boolean;
  /** What the cancel did: stopped a running round, or closed a job whose items had all settled. */
  effect: 'stopped' | 'closed';
}

export type RequestOrigin = 'update' | 'signal';

/** An operator request, queued by a handler and carried out only by the job's main loop. */
export type JobRequest = { id: number; kind: 'retry'; origin: RequestOrigin; selection: RetryRequest; at: string } | { id: number; kind: 'cancel'; origin: RequestOrigin; reason: string; at: string };
/** Kinds of operator request that can be rejected (pause, resume and set act at once, but can be refused). */
export type RequestKind = JobRequest['kind'] | 'pause' | 'resume' | 'set' | 'flag';

/** A request the job could not honour, with the declared error type of the reason. */
export interface RejectedRequest {
  kind: RequestKind;
  origin: RequestOrigin;
  type: string;
  reason: string;
  at: string;
  selection?: RetryRequest;
  limits?: LimitsRequest;
}

export const progressQuery = defineQuery<JobProgress>('progress');
/** The last settled round's JobResult (null before the first round settles): readable from the Web UI's Queries tab. */
export const resultQuery = defineQuery<JobResult | null>('result');
/** A running slice's counts so far: records by status of its finished items, and the outputs of all its items. */
export type SliceCounts = StatusCounts & { outputs: number };
/** A running slice's counts so far (clients add them to the job's, so progress moves before a slice ends). */
export const sliceProgressQuery = defineQuery<SliceCounts | null>('sliceProgress');
/**
 * The memo key under which a slice keeps its counts so far (patch `faultline-slice-progress-memo`),
 * updated in the workflow task that takes each batch's result: the server answers `describe` with
 * it, no worker involved, so progress stays quick while workers are busy.
 */
export const SLICE_PROGRESS_MEMO_KEY = 'faultlineSliceProgress';
/**
 * Memo keys of a job while it runs a sliced round: its progress as the `progress` query would answer
 * it, and its rejected requests. Each names the run that wrote it; both are removed when the round's
 * slices end. `slicesRunning` (memos written since 2026-12-05) names the slices whose results the job
 * has not taken: running, or ended a moment ago; a client adds exactly their counts, as the query does.
 */
export const JOB_PROGRESS_MEMO_KEY = 'faultlineJobProgress';
export const JOB_REJECTIONS_MEMO_KEY = 'faultlineJobRejections';
export type JobProgressMemo = Omit<JobProgress, 'jobId' | 'rejectedRequests' | 'rateLimits'> & { runId: string };
export interface JobRejectionsMemo {
  runId: string;
  rejected: RejectedRequest[];
}
/** Resolves with the result of `round` (default: the current round) once it has settled. */
export const awaitResultUpdate = defineUpdate<JobResult, [{ round?: number }]>('awaitResult');
export const retryUpdate = defineUpdate<RetryResponse, [RetryRequest]>('retry');
export const cancelUpdate = defineUpdate<CancelResponse, [CancelRequest]>('cancel');
/** The same operations as signals, for the Web UI, `temporal workflow signal` and batch signals. */
export const cancelSignal = defineSignal<[CancelRequest]>('requestCancel');
export const retrySignal = defineSignal<[RetryRequest]>('retry');
/** `faultline flag`: mark a job (or one item's outputs) for investigation. */
export interface FlagRequest {
  item?: string;
  reason: string;
}
export interface Flag extends FlagRequest {
  at: string;
}
export const flagUpdate = defineUpdate<{ flags: number }, [FlagRequest]>('flag');
export const flagSignal = defineSignal<[FlagRequest]>('flag');
/** The record of a flag set on a closed job: a small workflow `<jobId>/flag-N` the Web UI lists. */
export interface FlagRecordInput extends Flag {
  jobId: string;
  pipeline: string;
}

export const pauseUpdate = defineUpdate<PauseResponse, []>('pause');
export const resumeUpdate = defineUpdate<PauseResponse, []>('resume');
export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const setLimitsUpdate = defineUpdate<EffectiveLimits, [LimitsRequest]>('set');
export const setLimitsSignal = defineSignal<[LimitsRequest]>('set');
/** Sent by a job to its running slices: hold or release, and the limits for their work not yet started. */
export const sliceControlSignal = defineSignal<[SliceControl]>('sliceControl');
export interface SliceControl {
  paused?: boolean;
  concurrency?: number;
  /** The job's task priority after a `set --priority`. */
  priority?: number;
  /** New failures the slice may still have (job-wide allowance minus failures elsewhere). */
  allowedFailures?: number;
  /** Why the job stops: sent before it cancels the slice, so the slice's unfinished items are Cancelled with this reason. */
  stop?: StopReason;
}
/** Sent by slice children to their job while they run, so the threshold is exact job-wide. */
export const sliceFailuresSignal = defineSignal<[SliceFailuresReport]>('sliceFailures');
/** Sent by a batch activity to the workflow that runs it, as items fail for good: the allowance need not wait for the batch to end. */
export const itemFailuresSignal = defineSignal<[ItemFailuresReport]>('itemFailures');
