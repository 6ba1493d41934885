/** Payloads exchanged between workflows and activities (plain JSON only). */
import type { ErrorReport } from './errors';
import type { OutputRecord, StatusCounts } from './result';
import type { JobItem, JobSpec } from './spec';

/** The spec without its items: what every batch needs to know about the job. */
export type JobContext = Pick<JobSpec, 'pipeline' | 'params' | 'destination'> & { jobId: string };

export interface BatchEntry {
  item: JobItem;
  outputs: string[];
  /** How many times the engine has dispatched this item, including this one (1 = first run). */
  run: number;
}

export interface RunBatchInput {
  job: JobContext;
  entries: BatchEntry[];
  heartbeatTimeoutMs: number;
  isolated: boolean;
}

export type ItemOutcome =
  | { item: string; records: OutputRecord[]; bytesIn: number; bytesOut: number }
  | { item: string; error: ErrorReport; retryAfterMs?: number };

export interface BatchProgress {
  done: ItemOutcome[];
}

export interface RunBatchResult {
  outcomes: ItemOutcome[];
  /** Items not started because the batch was cancelled. */
  notStarted: string[];
}

export interface ShardSummary {
  shardIndex: number;
  items: number;
  counts: StatusCounts & { outputs: number };
  failureCounts: Record<string, number>;
  failuresByReason: Record<string, string[]>;
  truncated: boolean;
  errors: ErrorReport[];
  errorsTruncated: boolean;
  bytesIn: number;
  bytesOut: number;
  attempts: number;
  failedItems: number;
  fatal?: ErrorReport;
  cancelled: boolean;
  /** NDJSON part with this shard's output records. */
  recordsLocation: string;
}
