import type { ErrorReport } from './errors';
import type { Flag, JobRequest, LimitsChange, RejectedRequest, RetryRequest } from './messages';
import type { JobResult, OmittedCounts, StatusCounts } from './result';
import type { RunnerSnapshotData } from './snapshot';
import type { SpecHead } from './engine-types';
import type { JobSpec } from './spec';
import type { PipelinePlan } from './pipeline';

/**
 * The job's spec: inline (small), stored in job storage and passed by reference (large), or its
 * items at an s3:// or https:// source a worker imports into job storage first (`itemsFrom`).
 */
export type SpecSource = { kind: 'inline'; spec: JobSpec } | { kind: 'stored'; ref: string; head: SpecHead; itemCount: number } | { kind: 'remote'; from: string; head: SpecHead };

export interface JobInput {
  job: SpecSource;
  /** This job re-runs failed items of another job. */
  retryOf?: string;
  /** State carried over continue-as-new. */
  carry?: JobCarry;
}

/** Aggregate of the slices of the current round that have finished. */
export interface SlicesTally {
  counts: StatusCounts & { outputs: number };
  newFailures: number;
  bytesIn: number;
  bytesOut: number;
  attempts: number;
}

/** Where the running round stood when the job continued as new. */
export type RoundCarry =
  | { kind: 'inline'; selection?: RetryRequest; snapshot: RunnerSnapshotData; /** Failures of this round so far (engine v3). */ newFailures?: number; baseFailed?: number }
  | { kind: 'sliced'; selection?: RetryRequest; slices: number[]; next: number; done: SlicesTally; baseFailed: number; bases: Record<number, string> };

export interface JobCarry {
  round: number;
  startedAt: number;
  /** Requests not yet handled (signals; updates are answered before continuing). */
  pending: JobRequest[];
  rejected: RejectedRequest[];
  stop?: { kind: 'fatal'; report: ErrorReport } | { kind: 'cancelled'; reason: string };
  /** Set while a round runs; absent in the retry window. */
  running?: RoundCarry;
  /** The last settled result (retry window). */
  result?: JobResult;
  windowEndsAt?: number;
  nextRequestId: number;
  paused?: boolean;
  limitsChanged?: LimitsChange[];
  flags?: Flag[];
  omitted?: OmittedCounts;
  /** The pipeline the job pinned when a worker validated its spec. */
  plan?: PipelinePlan;
  /** When the current (or last) round began to run, and the run time of the rounds before it: results tell running from waiting. */
  roundStartedAt?: number;
  runMsBefore?: number;
  /** How the job sizes its batches and slices if it is large (decided in its first run): true is `v1`, from runs before `v2`. */
  largeJobSizing?: boolean | 'v2';
}

/** Accepts the v1 input shape (`{spec}` / `{specRef}`) too, e.g. from older clients or scripts. */
export function normalizeJobInput(raw: unknown): JobInput | undefined {
  if (!raw || typeof raw !== 'object') return undefined;
  const input = raw as { job?: SpecSource; spec?: JobSpec; specRef?: { ref: string; head: SpecHead; itemCount: number }; retryOf?: string; carry?: JobCarry };
  const extra = { ...(input.retryOf ? { retryOf: input.retryOf } : {}), ...(input.carry ? { carry: input.carry } : {}) };
  if (input.job && (input.job.kind === 'inline' || input.job.kind === 'stored' || input.job.kind === 'remote')) return { job: input.job, ...extra };
  if (input.spec) return { job: { kind: 'inline', spec: input.spec }, ...extra };
  if (input.specRef) return { job: { kind: 'stored', ...input.specRef }, ...extra };
  return undefined;
}
