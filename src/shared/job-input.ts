import type { JobSpec } from './spec';
import type { RunnerSnapshotData } from './snapshot';

/** The spec minus its items, for specs passed by reference. */
export type SpecHead = Omit<JobSpec, 'items'>;

export interface StoredSpecRef {
  ref: string;
  head: SpecHead;
  itemCount: number;
}

export interface JobInput {
  /** Inline spec (small jobs) … */
  spec?: JobSpec;
  /** … or a reference to a spec in job storage (large jobs). */
  specRef?: StoredSpecRef;
  /** This job re-runs failed items of another job. */
  retryOf?: string;
  /** Carried over continue-as-new. */
  resume?: {
    round: number;
    startedAt: number;
    snapshot: RunnerSnapshotData;
  };
}

export interface ShardInput {
  jobId: string;
  shardIndex: number;
  head: SpecHead;
  items?: JobSpec['items'];
  itemsRef?: { ref: string; from: number; to: number };
  /** Failures this shard may have before the whole job is certain to exceed its threshold. */
  allowedFailures?: number;
  round: number;
  /** Resolved for the whole job: a shard must not re-derive it from its own slice. */
  batchSize: number;
  resume?: RunnerSnapshotData;
}
