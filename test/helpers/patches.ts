import type { temporal } from '@temporalio/proto';

/** The ids of the patches a history took: each patch marker's `patch-data` payload names one. */
export function patchIdsOf(events: readonly temporal.api.history.v1.IHistoryEvent[]): string[] {
  return events.flatMap((event) =>
    (event.markerRecordedEventAttributes?.details?.['patch-data']?.payloads ?? []).map((payload) => (JSON.parse(Buffer.from(payload.data ?? []).toString()) as { id: string }).id),
  );
}
