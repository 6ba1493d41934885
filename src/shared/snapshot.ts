import type { ErrorReport } from './errors';
import type { OutputRecord } from './result';
import type { JobItem } from './spec';

export type ItemPhase = 'queued' | 'running' | 'backoff' | 'done';

/** Serializable state of one item (plain JSON so it can be carried over continue-as-new). */
export interface ItemState {
  /** Just `{ id }` when the item is named by its place in the pinned items (`at`). */
  item: JobItem;
  /** The item's index in the job's pinned items, when batches name it by place. */
  at?: number;
  outputs: string[];
  phase: ItemPhase;
  runs: number;
  transientFailures: number;
  crashes: number;
  isolate: boolean;
  /** Crashed while other isolated items were in flight: must run strictly alone to be blamed. */
  solo?: boolean;
  /**
   * Unfinished in a large batch whose worker was lost: runs again in batches of at most this many
   * suspects (half the lost batch's unfinished items), halved at each further loss, alone at the end.
   */
  suspectBatch?: number;
  nextAttemptAt?: number;
  /** While the job is paused: what was left of the backoff when it was held. */
  heldMs?: number;
  lastError?: ErrorReport;
  records?: OutputRecord[];
  bytesIn?: number;
  bytesOut?: number;
}

export interface RunnerSnapshotData {
  items: ItemState[];
  batchSeq: number;
  attempts: number;
}
