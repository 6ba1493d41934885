/**
 * Folding output records into counts, failure groups and capped error lists; choosing and merging
 * the records of a retry. Pure functions shared by workflows (inline slices) and activities
 * (records in storage), so both paths compute exactly the same thing.
 */
import type { ErrorReport } from './errors';
import type { RetryRequest } from './messages';
import { ERRORS_LIMIT, FAILURE_IDS_PER_TYPE, type OutputRecord, type StatusCounts, emptyStatusCounts } from './result';

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

/** Adds records one at a time (grouped by item, in order). A failed item counts once per type. */
export class TallyBuilder {
  private lastItem: string | undefined;
  private itemTypes = new Set<string>();
  private itemFailed = false;
  constructor(readonly tally: Tally = emptyTally()) {}

  add(record: OutputRecord): void {
    const tally = this.tally;
    if (record.item !== this.lastItem) {
      this.lastItem = record.item;
      this.itemTypes = new Set();
      this.itemFailed = false;
    }
    tally.counts.outputs += 1;
    tally.counts[record.status] += 1;
    if (record.status !== 'Failed') return;
    if (!this.itemFailed) tally.failedItems += 1;
    this.itemFailed = true;
    const type = record.error?.type ?? 'Unknown';
    if (this.itemTypes.has(type)) return;
    this.itemTypes.add(type);
    tally.failureCounts[type] = (tally.failureCounts[type] ?? 0) + 1;
    const ids = (tally.failuresByReason[type] ??= []);
    if (ids.length < FAILURE_IDS_PER_TYPE) ids.push(record.item);
    else tally.truncated = true;
    if (record.error) addError(tally, record.error);
  }
}

/** Adds records (grouped by item, in order) to a tally. */
export function tallyRecords(tally: Tally, records: Iterable<OutputRecord>): Tally {
  const builder = new TallyBuilder(tally);
  for (const record of records) builder.add(record);
  return tally;
}

export function addError(tally: Pick<Tally, 'errors' | 'errorsTruncated'>, report: ErrorReport): void {
  if (tally.errors.length < ERRORS_LIMIT) tally.errors.push(report);
  else tally.errorsTruncated = true;
}

/** True when this failed record is chosen by a retry selection. */
export function selectedForRetry(record: OutputRecord, selection: RetryRequest): boolean {
  if (selection.includeCancelled && record.status === 'Cancelled') return !selection.items?.length || selection.items.includes(record.item);
  if (record.status !== 'Failed') return false;
  if (selection.items?.length && !selection.items.includes(record.item)) return false;
  if (selection.types?.length && !selection.types.includes(record.error?.type ?? 'Unknown')) return false;
  return true;
}

/** The rejection of `retry --type` with types the job never failed with: it lists the ones it did. */
export function unknownTypeMessage(types: readonly string[], failureCounts: Record<string, number>): string {
  const known = Object.keys(failureCounts).filter((type) => (failureCounts[type] ?? 0) > 0);
  return `unknown type ${types.join(', ')}: this job's failed items have type ${known.join(', ') || '(none)'}`;
}

/** Ids of the items a retry selection runs again, in record order. */
export function itemsToRetry(records: Iterable<OutputRecord>, selection: RetryRequest): string[] {
  const ids: string[] = [];
  const seen = new Set<string>();
  for (const record of records) {
    if (seen.has(record.item) || !selectedForRetry(record, selection)) continue;
    seen.add(record.item);
    ids.push(record.item);
  }
  return ids;
}

/** The base records with every record of a re-run item replaced by its new ones (order kept). */
export function mergeRecords(base: readonly OutputRecord[], overlay: readonly OutputRecord[]): OutputRecord[] {
  const replaced = new Map<string, OutputRecord[]>();
  for (const record of overlay) {
    const list = replaced.get(record.item);
    if (list) list.push(record);
    else replaced.set(record.item, [record]);
  }
  const merged: OutputRecord[] = [];
  for (const record of base) {
    const replacement = replaced.get(record.item);
    if (!replacement) merged.push(record);
    else if (replacement.length > 0) {
      merged.push(...replacement);
      replaced.set(record.item, []);
    }
  }
  return merged;
}
