/**
 * One slice of a job (a contiguous item range) through the item runner. The same code runs a
 * small job's only slice inside the job workflow (records kept inline) and each slice of a large
 * job in a slice child workflow (records in job storage); both return the same summary.
 * A retry round runs only the selected failed items and merges their records into the slice's.
 */
import { patched } from './patches';
import type { createEngineActivities } from '../activities/engine';
import {
  type ItemState,
  type JobItem,
  type OutputRecord,
  type PipelinePlan,
  type RecordsLocation,
  type SliceCarry,
  type SliceInput,
  type SliceSummary,
  type StorageReleased,
  MAX_PARALLEL_SLICES,
  PATCHES,
  chunkByBytes,
  cpuBatchesAhead,
  itemsToRetry,
  mergeRecords,
  nonRetryableErrorTypes,
  outputsForItem,
  resolveJobOptions,
  tallyRecords,
  emptyTally,
} from '../shared';
import { ItemRunner, type RunnerHooks } from './runner';
import { finalRecords, unfinishedReason } from './item-records';
import { prioritizedActivities } from './priority';

/** Reading and writing job storage: the retries ride out a storage outage of about 4 minutes (MinIO restarting). */
export const storageActivities = prioritizedActivities<ReturnType<typeof createEngineActivities>>({
  startToCloseTimeout: '10m',
  heartbeatTimeout: '2m',
  retry: { maximumAttempts: 12, initialInterval: '1s', maximumInterval: '30s', nonRetryableErrorTypes },
});

export interface SliceHooks {
  runner?: RunnerHooks;
  /** Told about each new failed item of this run. */
  onFailure?: (newFailures: number) => void;
  /** The runner of the current run (progress queries). */
  onRunner?: (runner: ItemRunner) => void;
  /** Given for a job that closes when it settles: a local batch of all its items releases its working copies (`RunnerConfig.onReleasedByBatch`). */
  onReleasedByBatch?: (released: StorageReleased) => void;
  /**
   * A slice workflow of its own: its guided batches may be capped in flight (a patch decided at its
   * first dispatch). A job running its items itself decides no patch there: its spec check, a local
   * activity, may end in a later workflow task on replay than it did live.
   */
  ownWorkflow?: true;
}

export type SliceOutcome = { kind: 'done'; summary: SliceSummary } | { kind: 'rotate'; carry: SliceCarry };

/** Writes records in payloads within their byte budget; returns the part locations. */
export async function writeParts(jobId: string, name: string, records: readonly OutputRecord[]): Promise<string[]> {
  const parts: string[] = [];
  const chunks = patched(PATCHES.engineV3) ? chunkByBytes(records) : chunkByCount(records, 2_000);
  for (const chunk of chunks) parts.push(await storageActivities.writeRecords({ jobId, part: `${name}-${parts.length}`, records: chunk }));
  return parts;
}

async function loadItems(input: SliceInput): Promise<JobItem[]> {
  return input.items.kind === 'inline' ? input.items.items : storageActivities.loadItems({ ref: input.items.ref, from: input.items.from, to: input.items.to });
}

/** The items this run works on: all of them, or those a retry selects (with corrected sources). */
async function itemsToRun(input: SliceInput): Promise<JobItem[]> {
  const items = await loadItems(input);
  if (input.mode.kind === 'first') return items;
  const { selection } = input.mode;
  const ids = new Set(await retrySelection(input.mode));
  return items.filter((item) => ids.has(item.id)).map((item) => (selection.sources?.[item.id] ? { ...item, source: selection.sources[item.id] } : item));
}

/**
 * A stored slice's first run keeps only its items' ids: its batches read the items from the pinned
 * items themselves, by place. Other runs (retries: selected items, corrected sources) carry them.
 */
async function statesToRun(input: SliceInput, pipeline: PipelinePlan, byReference: boolean): Promise<{ item: JobItem; outputs: readonly string[]; at?: number }[]> {
  const { items, mode } = input;
  // A retry that corrects sources carries those items: the pinned ones have the old sources.
  if (byReference && items.kind === 'stored' && (mode.kind === 'first' || !mode.selection.sources)) {
    const shared = outputsForItem(input.head, {}, pipeline);
    const named: { item: JobItem; outputs: readonly string[]; at: number }[] = [];
    for (let at = items.from; at < items.to;) {
      const page = await storageActivities.loadItemIds({ ref: items.ref, from: at, to: items.to });
      const first = at;
      page.ids.forEach((id, index) => named.push({ item: { id }, outputs: page.outputs[index] ?? shared, at: first + index }));
      at = page.next ?? items.to;
    }
    if (mode.kind === 'first') return named;
    const selected = new Set(await retrySelection(mode));
    return named.filter((state) => selected.has(state.item.id));
  }
  return (await itemsToRun(input)).map((item) => ({ item, outputs: outputsForItem(input.head, item, pipeline) }));
}

/** Ids of the items a retry round runs again, read from the slice's records. */
async function retrySelection(mode: Extract<SliceInput['mode'], { kind: 'retry' }>): Promise<string[]> {
  const { selection, base } = mode;
  return base.kind === 'inline' ? itemsToRetry(base.records, selection) : storageActivities.selectRetryItems({ base: base.location, selection });
}

export async function runSlice(input: SliceInput, pipeline: PipelinePlan, scopeId: string, hooks: SliceHooks = {}): Promise<SliceOutcome> {
  const carry = input.resume;
  // Items and records out of history: a slice whose records live in job storage (patched: running slices replay as they ran).
  const byReference = input.keep === 'stored' && patched(PATCHES.itemsByReference);
  const snapshot = carry?.snapshot ?? ItemRunner.initialState(await statesToRun(input, pipeline, byReference));
  const ran = carry ? undefined : snapshot.items.length;
  const options = { ...resolveJobOptions(input.head, snapshot.items.length), batchSize: input.batchSize, concurrency: input.concurrency };
  const runner = new ItemRunner(
    {
      job: {
        jobId: input.jobId,
        pipeline: input.head.pipeline,
        params: input.head.params,
        destination: input.head.destination,
        round: input.round,
        ...(input.mode.kind === 'retry' && input.mode.selection.fromStart ? { fromStart: true } : {}),
        ...(input.head.options?.rateLimits ? { rateLimits: input.head.options.rateLimits } : {}),
      },
      pipeline,
      options,
      scopeId,
      ...(input.allowedFailures !== undefined ? { allowedFailures: input.allowedFailures } : {}),
      initialFailures: carry?.newFailures ?? 0,
      ...(patched(PATCHES.engineV3) ? { rampFrom: Math.ceil(input.concurrency / MAX_PARALLEL_SLICES) } : {}),
      // Plans recorded before `work` existed never say cpu: their slices replay with the batches they ran.
      ...(pipeline.work === 'cpu' && input.head.options?.batchSize === undefined
        ? {
            guidedBatches: {
              sliceItems: snapshot.items.length,
              // Sized to the fleet only where capped: a plan counted no fleet before cpuSlots existed, so older slices replay as they ran.
              ...(hooks.ownWorkflow ? { capInFlight: true as const, ...(pipeline.cpuSlots !== undefined ? { ahead: cpuBatchesAhead(pipeline.cpuSlots) } : {}) } : {}),
            },
          }
        : {}),
      ...(hooks.onFailure ? { onFailure: hooks.onFailure } : {}),
      ...(runsLocally(input, pipeline, snapshot.items.length, options.batchSize) ? { localFirstRun: true, ...(hooks.onReleasedByBatch ? { onReleasedByBatch: hooks.onReleasedByBatch } : {}) } : {}),
      ...(byReference
        ? {
            byReference: {
              ...(input.items.kind === 'stored' ? { itemsRef: input.items.ref } : {}),
              outputs: outputsForItem(input.head, {}, pipeline),
              recordsPrefix: `slice-${input.sliceIndex}-r${input.round}`,
              ...(patched(PATCHES.storedBeats) ? { storedBeats: true } : {}),
            },
          }
        : {}),
    },
    snapshot,
  );
  hooks.onRunner?.(runner);
  const outcome = await runner.run(hooks.runner);
  const segments = [...(carry?.segments ?? [])];
  let bytesIn = carry?.bytesIn ?? 0;
  let bytesOut = carry?.bytesOut ?? 0;
  if (outcome === 'rotate') {
    if (input.keep === 'stored') {
      // Finished records go to storage so the carried state stays small.
      const taken = runner.takeFinished();
      segments.push(...taken.parts, ...(await writeParts(input.jobId, `slice-${input.sliceIndex}-r${input.round}-seg${segments.length}`, taken.records)));
      bytesIn += taken.bytesIn;
      bytesOut += taken.bytesOut;
    }
    return { kind: 'rotate', carry: { snapshot: runner.snapshot(), segments, newFailures: runner.failedItems, bytesIn, bytesOut } };
  }
  for (const state of runner.states) {
    bytesIn += state.bytesIn ?? 0;
    bytesOut += state.bytesOut ?? 0;
  }
  const stored = runner.takeStored();
  segments.push(...stored.parts);
  bytesIn += stored.bytesIn;
  bytesOut += stored.bytesOut;
  // A stopped stored slice's items that never ran (no error to tell) get their Cancelled records where the slice's records
  // are written, from the pinned items by place: through history they took ~1 MB per 20,000 items (patched: older slices replay as they ran).
  const byPlaceStop =
    input.mode.kind === 'first' && byReference && input.items.kind === 'stored' && runner.states.some(neverRan) && patched(PATCHES.cancelledByPlace)
      ? { status: 'Cancelled' as const, reason: unfinishedReason(runner.stop), outputs: outputsForItem(input.head, {}, pipeline) }
      : undefined;
  // In a retry round only finished items replace their records; the rest keep their earlier ones.
  const own =
    input.mode.kind === 'first'
      ? finalRecords(byPlaceStop ? runner.states.filter((state) => !neverRan(state)) : runner.states, runner.stop)
      : runner.states.flatMap((state) => (state.phase === 'done' ? (state.records ?? []) : []));
  let records: RecordsLocation;
  let counts: SliceSummary['counts'];
  let failedItems: number;
  const base = input.mode.kind === 'retry' ? input.mode.base : undefined;
  if (input.keep === 'inline') {
    const all = base?.kind === 'inline' ? mergeRecords(base.records, own) : own;
    const tally = tallyRecords(emptyTally(), all);
    records = { kind: 'inline', records: all };
    counts = tally.counts;
    failedItems = tally.failedItems;
  } else {
    const parts = [...segments, ...(await writeParts(input.jobId, `slice-${input.sliceIndex}-r${input.round}-final`, own))];
    if (base?.kind === 'stored') {
      const overlay = await storageActivities.joinParts({ jobId: input.jobId, part: `slice-${input.sliceIndex}-r${input.round}-overlay`, parts });
      const merged = await storageActivities.mergeSliceRecords({ jobId: input.jobId, sliceIndex: input.sliceIndex, round: input.round, base: base.location, overlay });
      records = { kind: 'stored', location: merged.location };
      counts = merged.counts;
      failedItems = merged.failedItems;
    } else {
      const order = byReference && input.items.kind === 'stored' ? { order: { ref: input.items.ref, from: input.items.from, to: input.items.to } } : {};
      const written = await storageActivities.writeSliceRecords({
        jobId: input.jobId,
        sliceIndex: input.sliceIndex,
        round: input.round,
        parts,
        ...order,
        ...(byPlaceStop ? { unrecorded: byPlaceStop } : {}),
      });
      records = { kind: 'stored', location: written.location };
      counts = written.counts;
      failedItems = written.failedItems;
    }
  }
  return {
    kind: 'done',
    summary: {
      sliceIndex: input.sliceIndex,
      items: input.items.kind === 'inline' ? input.items.items.length : input.items.to - input.items.from,
      counts,
      failedItems,
      newFailures: runner.failedItems,
      ran: ran ?? runner.states.length,
      bytesIn,
      bytesOut,
      attempts: runner.attempts,
      ...(runner.stop ? { stop: runner.stop } : {}),
      records,
    },
  };
}

/** Unfinished with no error of its own: its Cancelled record says only why the slice stopped. */
function neverRan(state: ItemState): boolean {
  return state.phase !== 'done' && state.lastError === undefined;
}

/** A job whose items fit one batch, on the main queue's workers, runs it where its workflow runs. */
function runsLocally(input: SliceInput, pipeline: PipelinePlan, items: number, batchSize: number): boolean {
  return input.keep === 'inline' && input.head.options?.runLocally !== false && pipeline.taskQueue === undefined && items <= batchSize && patched(PATCHES.localSmallJob);
}

function chunkByCount<T>(entries: readonly T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let from = 0; from < entries.length; from += size) chunks.push(entries.slice(from, from + size));
  return chunks;
}
