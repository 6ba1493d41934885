/** Signals, queries and updates of the job workflow: one definition, used by workflows and clients. */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { SliceFailuresReport } from './engine-types';
import type { JobResult, StatusCounts } from './result';

export type JobPhase = 'validating' | 'running' | 'settling' | 'retry-window' | 'closed';

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
}

export interface RetryRequest {
  items?: string[];
  types?: string[];
  /** Corrected sources per item id. */
  sources?: Record<string, string>;
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

/** A request the job could not honour, with the declared error type of the reason. */
export interface RejectedRequest {
  kind: JobRequest['kind'];
  origin: RequestOrigin;
  type: string;
  reason: string;
  at: string;
  selection?: RetryRequest;
}

export const progressQuery = defineQuery<JobProgress>('progress');
/** Resolves with the result of `round` (default: the current round) once it has settled. */
export const awaitResultUpdate = defineUpdate<JobResult, [{ round?: number }]>('awaitResult');
export const retryUpdate = defineUpdate<RetryResponse, [RetryRequest]>('retry');
export const cancelUpdate = defineUpdate<CancelResponse, [CancelRequest]>('cancel');
/** The same operations as signals, for the Web UI, `temporal workflow signal` and batch signals. */
export const cancelSignal = defineSignal<[CancelRequest]>('requestCancel');
export const retrySignal = defineSignal<[RetryRequest]>('retry');
/** Sent by slice children to their job while they run, so the threshold is exact job-wide. */
export const sliceFailuresSignal = defineSignal<[SliceFailuresReport]>('sliceFailures');
