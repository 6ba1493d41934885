/** Signals, queries and updates of the job workflow: one definition, used by workflows and clients. */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
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
}

export interface RetryRequest {
  items?: string[];
  types?: string[];
  /** Corrected sources per item id. */
  sources?: Record<string, string>;
}
export interface RetryResponse {
  queued: string[];
  round: number;
}
export interface CancelRequest {
  reason?: string;
}

export const progressQuery = defineQuery<JobProgress>('progress');
/** Resolves with the result of `round` (default: the current round) once it has settled. */
export const awaitResultUpdate = defineUpdate<JobResult, [{ round?: number }]>('awaitResult');
export const retryUpdate = defineUpdate<RetryResponse, [RetryRequest]>('retry');
export const cancelUpdate = defineUpdate<{ accepted: boolean }, [CancelRequest]>('cancel');
/** The same cancel as a signal, for tools that can only signal (e.g. the Web UI). */
export const cancelSignal = defineSignal<[CancelRequest]>('requestCancel');
