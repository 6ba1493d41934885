/** Folding output records into counts, failure groups and capped error lists (workflow-safe). */
import { ERRORS_LIMIT, type ErrorReport, FAILURE_IDS_PER_TYPE, type OutputRecord, type StatusCounts, emptyStatusCounts } from '../../shared';
import type { ShardSummary } from './types-v1';

export interface Tally {
  counts: StatusCounts & { outputs: number };
  failureCounts: Record<string, number>;
  failuresByReason: Record<string, string[]>;
  truncated: boolean;
  errors: ErrorReport[];
  errorsTruncated: boolean;
  failedItems: number;
}

export function emptyTally(): Tally {
  return { counts: { ...emptyStatusCounts(), outputs: 0 }, failureCounts: {}, failuresByReason: {}, truncated: false, errors: [], errorsTruncated: false, failedItems: 0 };
}

/** Adds records (grouped by item, in order) to a tally. A failed item counts once per type. */
export function tallyRecords(tally: Tally, records: readonly OutputRecord[]): Tally {
  const seenFailure = new Set<string>();
  const failedItems = new Set<string>();
  for (const record of records) {
    tally.counts.outputs += 1;
    tally.counts[record.status] += 1;
    if (record.status !== 'Failed') continue;
    failedItems.add(record.item);
    const type = record.error?.type ?? 'Unknown';
    const key = `${type}\u0000${record.item}`;
    if (seenFailure.has(key)) continue;
    seenFailure.add(key);
    tally.failureCounts[type] = (tally.failureCounts[type] ?? 0) + 1;
    const ids = (tally.failuresByReason[type] ??= []);
    if (ids.length < FAILURE_IDS_PER_TYPE) ids.push(record.item);
    else tally.truncated = true;
    if (record.error) addError(tally, record.error);
  }
  tally.failedItems += failedItems.size;
  return tally;
}

export function addError(tally: Pick<Tally, 'errors' | 'errorsTruncated'>, report: ErrorReport): void {
  if (tally.errors.length < ERRORS_LIMIT) tally.errors.push(report);
  else tally.errorsTruncated = true;
}

export function mergeShard(tally: Tally, shard: ShardSummary): Tally {
  for (const [status, count] of Object.entries(shard.counts)) {
    tally.counts[status as keyof Tally['counts']] += count;
  }
  for (const [type, count] of Object.entries(shard.failureCounts)) tally.failureCounts[type] = (tally.failureCounts[type] ?? 0) + count;
  for (const [type, ids] of Object.entries(shard.failuresByReason)) {
    const target = (tally.failuresByReason[type] ??= []);
    const room = FAILURE_IDS_PER_TYPE - target.length;
    target.push(...ids.slice(0, Math.max(0, room)));
    if (ids.length > room) tally.truncated = true;
  }
  tally.truncated ||= shard.truncated;
  for (const report of shard.errors) addError(tally, report);
  tally.errorsTruncated ||= shard.errorsTruncated;
  tally.failedItems += shard.failedItems;
  return tally;
}
