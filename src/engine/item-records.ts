/**
 * What the item runner reports about its items, as pure functions over their states: records
 * (one per item × output), counts, backoff entries, and the reports it makes itself.
 */
import { ApplicationFailure, TimeoutFailure } from '@temporalio/workflow';
import { type BackoffEntry, type BatchProgress, type ErrorReport, ErrorTypes, type ItemState, type OutputRecord, type StatusCounts, type StopReason, emptyStatusCounts, makeReport } from '../shared';

/** Items waiting in backoff, for progress. */
export function backoffEntries(states: readonly ItemState[], limit = 100): BackoffEntry[] {
  return states
    .filter((state) => state.phase === 'backoff' && state.nextAttemptAt !== undefined)
    .slice(0, limit)
    .map((state) => ({
      item: state.item.id,
      attempts: state.transientFailures,
      nextAttemptAt: new Date(state.nextAttemptAt ?? 0).toISOString(),
      errorType: state.lastError?.type ?? 'unknown',
    }));
}

/** Counts of the states' records, plus those of records kept in job storage (`stored`). */
export function countsSoFar(states: readonly ItemState[], stored?: StatusCounts): StatusCounts & { outputs: number } {
  const counts = { ...emptyStatusCounts(), ...stored, outputs: 0 };
  for (const state of states) {
    counts.outputs += state.outputs.length;
    for (const record of state.records ?? []) counts[record.status] += 1;
  }
  return counts;
}

/** One record per item × requested output; unfinished items become Cancelled. */
export function finalRecords(states: readonly ItemState[], stop: StopReason | undefined): OutputRecord[] {
  const records: OutputRecord[] = [];
  for (const state of states) {
    if (state.phase === 'done') {
      // Without records here, its batch wrote them to job storage.
      records.push(...(state.records ?? []));
      continue;
    }
    const reason = unfinishedReason(stop);
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

/** Why an item that never finished is Cancelled. */
export function unfinishedReason(stop: StopReason | undefined): string {
  if (stop?.kind === 'cancelled') return `job cancelled: ${stop.reason}`;
  return stop?.kind === 'fatal' ? `job ended early by ${stop.report.type}` : 'not attempted';
}

export function thresholdReport(failed: number, allowed: number): ErrorReport {
  return makeReport({
    type: ErrorTypes.ToleratedFailureThresholdExceeded,
    message: `${failed} failed item(s) exceed the tolerated ${allowed}`,
    details: { failedItems: failed, toleratedFailures: allowed },
    at: new Date().toISOString(),
  });
}

export function hasFailed(state: ItemState): boolean {
  return (state.records ?? []).some((record) => record.status === 'Failed');
}

/** Finished items reported before a batch failed: last heartbeat, or the shutdown hand-back. */
export function progressFrom(cause: unknown): BatchProgress | undefined {
  if (cause instanceof TimeoutFailure) return asProgress(cause.lastHeartbeatDetails);
  if (cause instanceof ApplicationFailure) return asProgress(cause.details?.[1]);
  return undefined;
}

function asProgress(value: unknown): BatchProgress | undefined {
  if (value && typeof value === 'object' && Array.isArray((value as BatchProgress).done)) return value as BatchProgress;
  return undefined;
}
