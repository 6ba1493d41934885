/**
 * Input and summary shapes of the v1 engine, frozen so recorded v1 histories (and jobs started
 * before engine v2) keep replaying. New code uses the types in `src/shared`.
 */
import type { ErrorReport } from '../../shared/errors';
import type { StatusCounts } from '../../shared/result';
import type { JobSpec } from '../../shared/spec';
import type { RunnerSnapshotData } from '../../shared/snapshot';

export type SpecHead = Omit<JobSpec, 'items'>;

export interface JobInput {
  spec?: JobSpec;
  specRef?: { ref: string; head: SpecHead; itemCount: number };
  retryOf?: string;
  resume?: { round: number; startedAt: number; snapshot: RunnerSnapshotData };
}

export interface ShardInput {
  jobId: string;
  shardIndex: number;
  head: SpecHead;
  items?: JobSpec['items'];
  itemsRef?: { ref: string; from: number; to: number };
  allowedFailures?: number;
  round: number;
  batchSize: number;
  resume?: RunnerSnapshotData;
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
  recordsLocation: string;
}
