/** JobResult (CONTRACT.md "JobResult") and the per-output records it is built from. */
import { type ErrorReport, ErrorTypes, makeReport } from './errors';
import type { Flag, LimitsChange, RejectedRequest } from './messages';

export const OutputStatuses = ['Available', 'Missing', 'Failed', 'Unsolved', 'Skipped', 'Cancelled'] as const;
export type OutputStatus = (typeof OutputStatuses)[number];

export const JobStatuses = ['Succeeded', 'PartiallySucceeded', 'Failed', 'Cancelled', 'Empty'] as const;
export type JobStatus = (typeof JobStatuses)[number];

export const RESULT_SCHEMA_VERSION = 1;
/** Memo key of the JobResult of a job cancelled through Temporal (a cancelled execution has no result). */
export const RESULT_MEMO_KEY = 'faultlineResult';
/** Jobs with more outputs than this write them to an NDJSON manifest instead of inlining them. */
export const INLINE_OUTPUT_LIMIT = 1_000;
/** failuresByReason keeps at most this many ids per type. */
export const FAILURE_IDS_PER_TYPE = 1_000;
/** errors[] keeps at most this many distinct reports. */
export const ERRORS_LIMIT = 100;

export interface OutputRecord {
  item: string;
  output: string;
  status: OutputStatus;
  location?: string;
  bytes?: number;
  sha256?: string;
  /** A small JSON value a pipeline step returned for this output (e.g. `{ n: 3 }`). */
  value?: unknown;
  reason?: string;
  error?: ErrorReport;
  /** Extra facts about the output (e.g. the best size reached by an Unsolved fit). */
  details?: Record<string, unknown>;
}

export type StatusCounts = Record<OutputStatus, number>;
export interface Counts extends StatusCounts {
  items: number;
  outputs: number;
}

export interface Notification {
  kind: 'webhook';
  url: string;
  delivered: boolean;
  attempts: number;
  lastStatus?: number;
  error?: ErrorReport;
  round: number;
  at: string;
}

export interface JobMetrics {
  startedAt: string;
  finishedAt: string;
  /** From the job's start to this result, retry windows included. */
  elapsedMs: number;
  /** Time the rounds spent running (preparing, items, settling), without the retry windows between them. */
  runMs?: number;
  /** Time spent waiting in retry windows (`elapsedMs - runMs`). */
  waitingMs?: number;
  /** This round alone: how long it ran, and its items per second. */
  round?: { runMs: number; items: number; itemsPerSec: number };
  bytesIn: number;
  bytesOut: number;
  attempts: number;
  /** Items per second of running time (`runMs`), not of `elapsedMs`. */
  itemsPerSec: number;
  /** Bytes the job keeps in job storage once it closed (records, manifests; working copies are released). */
  storageBytes?: number;
  /** Bytes of working copies released when the job closed. */
  storageReleasedBytes?: number;
}

/** Entries of lists left out of a result (and the job's state) to keep them within their byte budget. */
export interface OmittedCounts {
  flags?: number;
  limitsChanged?: number;
  notifications?: number;
}

export interface JobResult {
  schemaVersion: number;
  jobId: string;
  pipeline: string;
  /** The version of the pipeline the job pinned when it started. */
  pipelineVersion?: string;
  success: boolean;
  status: JobStatus;
  /** 1 for the first run; +1 for every retry round. */
  round: number;
  counts: Counts;
  outputs?: OutputRecord[];
  manifest?: string;
  errors: ErrorReport[];
  errorsTruncated?: boolean;
  /** The report that ended the job early (fatal error, threshold); also first in `errors`. */
  stoppedBy?: ErrorReport;
  /** Requests (mostly signals, which cannot answer) the job could not honour. */
  rejectedRequests?: RejectedRequest[];
  /** Limits changed by operators while the job ran (`faultline set`), in order. */
  limitsChanged?: LimitsChange[];
  /** Marks for investigation (`faultline flag`), including those set after the job closed. */
  flags?: Flag[];
  /** Older entries of `flags`, `limitsChanged` and `notifications` left out (newest 100 kept). */
  omitted?: OmittedCounts;
  failureCounts: Record<string, number>;
  failuresByReason: Record<string, string[]>;
  truncated?: boolean;
  /** Item ids that a `retry` would run again. */
  retryable: { items: number; types: string[] };
  cancelReason?: string;
  archive?: { location?: string; files: number; missing: number; missingFiles?: string[]; skipped?: string; error?: ErrorReport };
  /** What `options.export` wrote when this round settled: where, and the records per status (manifest.json there lists the files). */
  exported?: { destination: string; counts: Partial<Record<OutputStatus, number>>; files: number };
  notifications?: Notification[];
  /** Set when this job is a follow-up of another job's failed items. */
  retryOf?: string;
  metrics: JobMetrics;
}

/** The result's `archive` entry from what the archive child job packed (absent facts stay absent). */
export function archiveEntry(summary: { location?: string; files: number; missing: number; missingFiles: string[]; skipped?: string }): NonNullable<JobResult['archive']> {
  return {
    ...(summary.location ? { location: summary.location } : {}),
    files: summary.files,
    missing: summary.missing,
    ...(summary.skipped ? { skipped: summary.skipped } : {}),
    ...(summary.missingFiles.length > 0 ? { missingFiles: summary.missingFiles } : {}),
  };
}

export function emptyStatusCounts(): StatusCounts {
  return { Available: 0, Missing: 0, Failed: 0, Unsolved: 0, Skipped: 0, Cancelled: 0 };
}

/** `into` plus `more`, key by key: the counts `more` has (e.g. by status only, without outputs) are added. */
export function addCounts<T extends StatusCounts>(into: T, more: Partial<Record<keyof T, number>>): T {
  const sum = { ...into };
  for (const key of Object.keys(more) as (keyof T)[]) (sum[key] as number) += more[key] ?? 0;
  return sum;
}

/** Key by key, the larger of two count records (counts of a running round only grow: the highest seen is the truth). */
export function maxCounts<T extends StatusCounts>(counts: T, seen: Partial<Record<keyof T, number>>): T {
  const highest = { ...counts };
  for (const key of Object.keys(seen) as (keyof T)[]) (highest[key] as number) = Math.max(highest[key] as number, seen[key] ?? 0);
  return highest;
}

/** CONTRACT status rules, from the counts and whether a fatal error or a cancel ended the job. */
export function deriveJobStatus(counts: StatusCounts & { outputs: number }, ended: 'fatal' | 'cancelled' | undefined): JobStatus {
  if (ended === 'cancelled') return 'Cancelled';
  if (ended === 'fatal') return 'Failed';
  if (counts.outputs > 0 && counts.Skipped === counts.outputs) return 'Empty';
  if (counts.outputs === 0) return 'Empty';
  if (counts.Failed === 0 && counts.Cancelled === 0) return 'Succeeded';
  if (counts.Failed === counts.outputs) return 'Failed';
  return 'PartiallySucceeded';
}

export function isSuccess(status: JobStatus): boolean {
  return status === 'Succeeded' || status === 'PartiallySucceeded' || status === 'Empty';
}

/** Exit codes of `start --wait` and `result` (CONTRACT.md). */
export function exitCodeForStatus(status: JobStatus): number {
  switch (status) {
    case 'Succeeded':
    case 'Empty':
      return 0;
    case 'PartiallySucceeded':
      return 3;
    default:
      return 1;
  }
}

/** Exactly one record per requested output of an item, whatever its pipeline returned. */
export function completeRecords(item: string, outputs: readonly string[], records: readonly OutputRecord[]): OutputRecord[] {
  return outputs.map((output) => {
    const found = records.find((record) => record.output === output);
    if (found) return { ...found, item };
    return {
      item,
      output,
      status: 'Failed',
      error: makeReport({
        type: ErrorTypes.InternalError,
        message: `the pipeline reported no status for output "${output}"`,
        details: {},
        item,
        output,
        at: new Date().toISOString(),
      }),
    };
  });
}
