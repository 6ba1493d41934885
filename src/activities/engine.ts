/**
 * The engine's activities: run a batch of items through a pipeline (heartbeating per-item
 * progress), and move what must not travel in payloads through job storage.
 */
import { ITEM_SPAN_EVERY, activeTracing, faultlineTracer, recordSpan } from '../tracing';
import { type WorkerMetrics, workerMetrics } from '../metrics';
import { ApplicationFailure, Context, CancelledFailure } from '@temporalio/activity';
import { ITEMS_CHUNK, ItemsFileReader, checkItemsChunk, isItemsRef } from '../items-file';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import {
  type BatchProgress,
  type RetryPolicy,
  backoffDelayMs,
  ErrorTypes,
  type FillSlicesInput,
  type RetryRequest,
  type Tally,
  TallyBuilder,
  completeRecords,
  emptyStatusCounts,
  emptyTally,
  mergeRecords,
  outputsForItem,
  selectedForRetry,
  tallyRecords,
  type ItemOutcome,
  type JobItem,
  type JobSpec,
  type OutputRecord,
  type PipelineRegistry,
  type PipelinePlan,
  type SpecIssue,
  planOf,
  type RunBatchInput,
  type BatchEntry,
  type RunBatchResult,
  type StoredBatchRecords,
  type SpecHead,
  BUDGET,
  boundReport,
  itemFailuresSignal,
  serializedSize,
  truncateText,
  makeReport,
  toErrorReport,
  validateJobSpec,
  type JobResult,
  type ResolvedOptions,
  type RateLimits,
  TASK_QUEUE,
  rateLimitFor,
} from '../shared';
import { type S3Options, type Storage, permanentStorageError } from '../storage';
import { exportRecords, exportStore, resultRecords } from '../export';
import { type ImportResult, importItems } from './items-import';
import { ItemError, type PipelineImplementation } from './types';
import { guardItemFiles } from './step-tools';
import { resolveAllowedPath } from './files';
import { RateLeases, type RateLease } from './rate-leases';
import { nextItemTurn } from './item-turns';
import { computingBatch } from '../activity-slots';
import { CompactIdSet } from '../compact-id-set';

export interface EngineDeps {
  implementations: Readonly<Record<string, PipelineImplementation>>;
  registry: PipelineRegistry;
  storage: Storage;
  logger: Logger;
  /** For `itemsFrom` sources: hosts that may be private, and the S3 settings. */
  allowedHosts: readonly string[];
  s3: S3Options;
  /** Directories `file://` sources and destinations may touch: checked for the whole spec before anything runs. */
  allowedRoots?: readonly string[];
  /** The task queue this worker serves, named in PipelineUnavailable reports. */
  taskQueue?: string;
  /** How many workers poll a task queue for activities (a pipeline on its own queue needs one). */
  pollersOf?: (taskQueue: string) => Promise<number>;
  /** Batches of a `work: 'cpu'` pipeline one worker process runs at once (its activity slots for computing batches). */
  cpuSlotsPerProcess?: number;
  /** Per-key rate limits this worker applies to every job (FAULTLINE_RATE_LIMITS). */
  rateLimits?: RateLimits;
  /** The main task queue, where the limiter workflows run. */
  workflowTaskQueue?: string;
}

/** A worker's answer on a job's spec: the pipeline's plan, the spec's issues, or why no worker can run it. */
export type SpecDescription = { ok: true; plan: PipelinePlan } | { ok: false; issues: SpecIssue[] } | { ok: false; unavailable: string };

/**
 * Checks a stored items file in one pass: every item against its pipeline, ids unique, and (given
 * `roots`) every file path inside the allowed roots. Items' own issues come first; path issues
 * are reported only for items that are otherwise valid.
 */
async function inspectItemsFile(
  reader: ItemsFileReader,
  ref: string,
  registry: PipelineRegistry,
  ctx: Context | undefined,
  roots: readonly string[] | undefined,
): Promise<{ ok: true; itemCount: number } | { ok: false; issues: { path: string; code: string; message: string }[] }> {
  const { head, count } = await reader.index(ref);
  const issues: { path: string; code: string; message: string }[] = [];
  const seen = new CompactIdSet();
  const paths = roots ? rootCheck(roots) : undefined;
  await paths?.check((head as { destination?: string }).destination, 'destination', 'destination');
  for (let from = 0; from < count && issues.length < 100; from += ITEMS_CHUNK) {
    // Millions of items take minutes: say how far the check got, and stop when told to.
    ctx?.heartbeat({ checked: from, of: count });
    if (ctx?.cancellationSignal.aborted) throw new CancelledFailure('the spec check was cancelled');
    const chunk = await reader.read(ref, from, from + ITEMS_CHUNK);
    const checked = checkItemsChunk(head as object, chunk, from, seen, registry);
    if (!checked.ok) issues.push(...checked.issues.map(({ index: _index, ...issue }) => issue));
    else await paths?.items(chunk as { source?: string }[], from);
  }
  if (count === 0) issues.push({ path: 'items', code: 'empty', message: 'the items file has no items' });
  if (issues.length > 0) return { ok: false, issues: issues.slice(0, 100) };
  const outside = paths?.issues() ?? [];
  return outside.length > 0 ? { ok: false, issues: outside } : { ok: true, itemCount: count };
}

export function createEngineActivities(deps: EngineDeps) {
  const itemsFiles = new ItemsFileReader(deps.storage);
  /**
   * Slots the fleet keeps busy with a CPU-bound pipeline's batches: its worker processes polling the
   * queue (the server lists each one) × this process's slots, as every process of a fleet is set up
   * alike. Undefined when it cannot be counted: the job then keeps the fixed guided sizes.
   */
  const fleetCpuSlots = async (pollers: Promise<number> | undefined, queue: string | undefined): Promise<number | undefined> => {
    if (!pollers || deps.cpuSlotsPerProcess === undefined) return undefined;
    const processes = await pollers.catch((error: unknown) => {
      deps.logger.warn({ err: error, taskQueue: queue }, 'could not count the workers polling the task queue; CPU-bound batches keep their fixed sizes');
      return 0;
    });
    return processes > 0 ? processes * deps.cpuSlotsPerProcess : undefined;
  };
  const specCache = new Map<string, unknown>();
  const loadSpec = async (ref: string) => {
    let spec = specCache.get(ref);
    if (spec === undefined) {
      spec = await deps.storage.readSpec(ref);
      // Whole specs of a million items are ~100 MB of heap each: two at most (a worker's heap is 256 MB by default).
      if (specCache.size >= 2) specCache.clear();
      specCache.set(ref, spec);
    }
    return spec as { items: JobItem[] };
  };
  const readItems = async (ref: string, from: number, to: number): Promise<JobItem[]> => {
    if (isItemsRef(ref)) return (await itemsFiles.read(ref, from, to)) as JobItem[]; // validated by inspectStoredSpec
    return (await loadSpec(ref)).items.slice(from, to);
  };
  /** A batch's entries: carried in its input, or read from the job's pinned items by place. */
  const batchEntries = async (input: RunBatchInput): Promise<BatchEntry[]> => {
    const items = input.items ?? { kind: 'inline', entries: input.entries ?? [] };
    if (items.kind === 'inline') return items.entries;
    const entries: BatchEntry[] = [];
    let expected = 0;
    for (const [from, to] of items.ranges) {
      expected += to - from;
      for (const item of await storageCall(() => readItems(items.ref, from, to))) {
        const run = typeof items.runs === 'number' ? items.runs : (items.runs[entries.length] ?? 1);
        entries.push({ item, outputs: item.outputs ?? items.outputs, run });
      }
    }
    if (entries.length !== expected) {
      throw ApplicationFailure.create({
        type: ErrorTypes.InternalError,
        message: `the job's pinned items hold ${entries.length} of the batch's ${expected} items`,
        nonRetryable: true,
        details: [{ ref: items.ref, ranges: items.ranges }],
      });
    }
    return entries;
  };

  let rateLeases: RateLeases | undefined;
  const services = { allowedRoots: deps.allowedRoots ?? [], allowedHosts: deps.allowedHosts, storage: guardItemFiles(deps.storage), ...(deps.s3 ? { s3: deps.s3 } : {}) };
  return {
    async runBatch(input: RunBatchInput): Promise<RunBatchResult> {
      const ctx = Context.current();
      const log = deps.logger.child({ jobId: input.job.jobId, activityId: ctx.info.activityId });
      const entries = await whenStorageAnswers(() => batchEntries(input), ctx, ctx.info.isLocal, log);
      const implementation = deps.implementations[input.job.pipeline];
      if (!implementation) {
        throw ApplicationFailure.create({
          type: ErrorTypes.InternalError,
          message: `this worker has no implementation of pipeline "${input.job.pipeline}"`,
          nonRetryable: true,
        });
      }
      // A small job's batch runs as a local activity, which Temporal runs again from the start if its worker dies
      // mid-way: the second start is told apart (a mark in job storage) and goes back to the workflow as a lost worker.
      const local = ctx.info.isLocal;
      if (local && !(await markLocalStart(deps.storage, input.job.jobId, `${ctx.info.workflowExecution?.runId ?? 'run'}-local-${ctx.info.activityId}`, log))) {
        const report = makeReport({
          type: ErrorTypes.LocalBatchLost,
          message: 'this batch was started before on a worker that was lost (or its start could not be marked)',
          details: { items: entries.length },
          at: new Date().toISOString(),
        });
        throw ApplicationFailure.create({ type: ErrorTypes.LocalBatchLost, message: report.message, nonRetryable: true, details: [report] });
      }
      const batchStarted = performance.now();
      const progress: BatchProgress = { done: [] };
      const resumed = ctx.info.heartbeatDetails as BatchProgress | undefined;
      if (resumed?.done) progress.done.push(...resumed.done);
      /** Items with an outcome (in `progress.done` or a stored part). */
      const finished = new Set(progress.done.map((outcome) => outcome.item));
      // Heartbeats carry finished outcomes (or, with storedBeats, where they are kept), so send them by time, not per
      // item (the cost would grow with the square of the batch); the timer keeps long items alive. The server keeps
      // every heartbeat: a large job's batches (records by place) beat at a quarter of the heartbeat timeout.
      const beatEveryMs = Math.max(200, Math.min(input.recordsPart !== undefined ? BY_PLACE_BEAT_MAX_MS : 1_000, Math.floor(input.heartbeatTimeoutMs / 4)));
      const beatParts = input.storedBeats === true && input.recordsPart !== undefined ? { prefix: input.recordsPart, written: 0 } : undefined;
      /** With storedBeats: outcomes whose records are in the part `progress.stored` names (each beat's part holds all of them, so one part is named). */
      const storedOutcomes: FinishedOutcome[] = [];
      let storing: Promise<void> | undefined;
      let lastBeat = 0;
      /** Writes every finished item's records to a new part of job storage, then heartbeats naming it; if storage fails, they stay in `done`. */
      const storeThenBeat = async (parts: { prefix: string; written: number }) => {
        const moving = progress.done.filter((outcome): outcome is FinishedOutcome => 'records' in outcome);
        try {
          // A new name each time: a part must hold exactly what the heartbeat the server last kept says.
          const part = await storeOutcomes(deps.storage, input.job.jobId, `${parts.prefix}-beat${parts.written + 1}`, entries, [...storedOutcomes, ...moving]);
          parts.written += 1;
          storedOutcomes.push(...moving);
          const moved = new Set<ItemOutcome>(moving);
          progress.done = progress.done.filter((outcome) => !moved.has(outcome));
          progress.stored = { ...part, finished: part.finished.replace(/0+$/, '') };
          // The payload budget counts what a result may have to carry: not what a stored part holds.
          progressBytes = serializedSize(progress);
        } catch (error) {
          log.warn({ err: error }, 'could not write the records of %d finished item(s) to job storage at a heartbeat; the heartbeat carries them', moving.length);
        }
        ctx.heartbeat(progress);
      };
      const beat = () => {
        lastBeat = Date.now();
        // A local activity has no heartbeats: its workflow task is kept alive by the SDK.
        if (local) return;
        if (beatParts && storing === undefined && progress.done.some((outcome) => 'records' in outcome)) {
          storing = storeThenBeat(beatParts).finally(() => (storing = undefined));
          return;
        }
        ctx.heartbeat(progress);
      };
      const timer = local ? undefined : setInterval(beat, beatEveryMs);
      const notStarted: string[] = [];
      let progressBytes = serializedSize(progress);
      /** An error report cut to its budget; the full one goes to job storage, referenced from the report. */
      const withinBudget = async (outcome: Extract<ItemOutcome, { error: unknown }>, run: number): Promise<Extract<ItemOutcome, { error: unknown }>> => {
        const bounded = boundReport(outcome.error);
        if (!bounded.cut) return outcome;
        try {
          const fullReport = await deps.storage.writeErrorReport(input.job.jobId, `${outcome.item}.run${run}`, outcome.error);
          bounded.report.details = { ...bounded.report.details, fullReport };
        } catch (error) {
          log.warn({ err: error }, 'could not keep the full error report of %s', outcome.item);
        }
        return { ...outcome, error: bounded.report };
      };
      const early = earlyFailureReporter(ctx, input.reportFailures === true, log);
      const metrics = workerMetrics();
      const pipeline = input.job.pipeline;
      metrics?.batchesInFlight.inc();
      const traced = activeTracing() !== undefined;
      const batchSpan = traced
        ? faultlineTracer().startSpan('faultline.batch', {
            attributes: { 'faultline.job_id': input.job.jobId, 'faultline.pipeline': pipeline, 'faultline.round': input.job.round ?? 1, 'faultline.items': entries.length },
          })
        : undefined;
      let itemIndex = 0;
      // Waiting for rate leases ends before the batch's own deadline: the items left go back to the workflow, uncharged.
      const startToCloseMs = ctx.info.startToCloseTimeoutMs;
      // Built at the first rate-limited item only: most batches wait for no lease.
      let leaseWaitSignal: AbortSignal | undefined;
      const leaseWait = () =>
        (leaseWaitSignal ??=
          startToCloseMs > 0
            ? AbortSignal.any([ctx.cancellationSignal, AbortSignal.timeout(Math.max(1_000, Math.floor(startToCloseMs - 60_000 - (performance.now() - batchStarted))))])
            : ctx.cancellationSignal);
      // Released in the finally below, however the batch ends.
      const computed = deps.registry[input.job.pipeline]?.work === 'cpu' ? computingBatch() : undefined;
      const deadlines = itemDeadlines(input.itemTimeoutMs, ctx.cancellationSignal);
      try {
        // No beat at the start: a batch shorter than beatEveryMs sends none (each one costs the server a write); the timer keeps longer ones alive.
        lastBeat = Date.now();
        for (const entry of entries) {
          if (finished.has(entry.item.id)) continue;
          // A full result payload ends the batch: the rest go back to the workflow, uncharged. So does a local
          // batch's time: it holds its job's workflow task (queries and messages wait), so it only starts items briefly.
          if (ctx.cancellationSignal.aborted || progressBytes > BUDGET.payload || (local && itemIndex > 0 && performance.now() - batchStarted > LOCAL_START_BUDGET_MS)) {
            notStarted.push(entry.item.id);
            continue;
          }
          let itemLog: Logger | undefined;
          const itemLogger = () => (itemLog ??= log.child({ item: entry.item.id, run: entry.run }));
          let lease: RateLease = RateLeases.none;
          const rateKey = rateKeyOf(implementation, input.job, entry.item, itemLogger);
          const limit = rateKey !== undefined ? rateLimitFor(rateKey, input.job.rateLimits, deps.rateLimits) : undefined;
          if (rateKey !== undefined && limit) {
            rateLeases ??= new RateLeases(ctx.client, deps.workflowTaskQueue ?? TASK_QUEUE, deps.logger);
            try {
              const ttlMs = (input.itemTimeoutMs ?? 30 * 60_000) + 60_000;
              lease = await rateLeases.acquire(rateKey, limit, { jobId: input.job.jobId, ttlMs }, leaseWait());
            } catch (error) {
              if (!leaseWait().aborted) throw error;
              // Cancelled, or the batch's time is up: this item and the rest were never started.
              const handedBack = new Set([...finished, ...notStarted]);
              for (const rest of entries) if (!handedBack.has(rest.item.id)) notStarted.push(rest.item.id);
              break;
            }
          }
          let outcome: ItemOutcome | undefined;
          const itemStarted = batchSpan ? Date.now() : 0;
          for (let storageWaits = 0; outcome === undefined; storageWaits++) {
            try {
              const work = await deadlines.run((signal) =>
                implementation.processItem({
                  job: input.job,
                  entry,
                  get signal() {
                    return signal();
                  },
                  services,
                  get log() {
                    return itemLogger();
                  },
                  heartbeat(details) {
                    // Small only: the heartbeat also carries the batch's finished outcomes.
                    if (serializedSize(details) <= MAX_ITEM_HEARTBEAT_BYTES) progress.current = { item: entry.item.id, details };
                  },
                }),
              );
              outcome = { item: entry.item.id, records: work.records, bytesIn: work.bytesIn, bytesOut: work.bytesOut };
            } catch (error) {
              if (ctx.cancellationSignal.aborted) break;
              // Job storage away (MinIO restarting, a connection cut) is no fault of the item: it waits, uncharged, and runs again.
              const waitMs = storageWaitMs(error, storageWaits);
              if (waitMs !== undefined && !local && (startToCloseMs <= 0 || waitMs < startToCloseMs - (performance.now() - batchStarted) - 60_000)) {
                itemLogger().warn({ errorType: ErrorTypes.StorageUnavailable, waitMs }, 'job storage did not answer; the item waits for it');
                await sleepUnlessAborted(waitMs, ctx.cancellationSignal);
                continue;
              }
              outcome = await withinBudget(failureOutcome(entry.item.id, error), entry.run);
              itemLogger().warn({ errorType: outcome.error.type, errorClass: outcome.error.class }, 'item failed: %s', truncateText(outcome.error.message, BUDGET.message));
            }
          }
          if (outcome === undefined) {
            lease.release();
            notStarted.push(entry.item.id);
            continue;
          }
          // A 429/503 with Retry-After pauses the key for every worker and job, not just this item.
          lease.release('error' in outcome ? outcome.retryAfterMs : undefined);
          delete progress.current;
          if (metrics) countOutcome(metrics, pipeline, entry, outcome);
          if (batchSpan && ('error' in outcome || itemIndex % ITEM_SPAN_EVERY === 0)) {
            const error = 'error' in outcome ? outcome.error : undefined;
            recordSpan(
              'faultline.item',
              itemStarted,
              {
                'faultline.job_id': input.job.jobId,
                'faultline.pipeline': pipeline,
                'faultline.item_id': entry.item.id,
                'faultline.run': entry.run,
                ...(error ? { 'faultline.error_type': error.type, 'faultline.error_class': error.class } : {}),
              },
              error,
              batchSpan,
            );
          }
          itemIndex++;
          progress.done.push(outcome);
          finished.add(outcome.item);
          progressBytes += serializedSize(outcome);
          if ('error' in outcome && outcome.error.class !== 'transient') early.add(outcome.item);
          if (Date.now() - lastBeat >= beatEveryMs) beat();
          // Short synchronous items never yield on their own: batches take turns of the event loop.
          const turn = nextItemTurn();
          if (turn) await turn;
          if ('error' in outcome && outcome.error.class === 'fatal') {
            for (const rest of entries) if (!finished.has(rest.item.id)) notStarted.push(rest.item.id);
            break;
          }
        }
      } finally {
        computed?.();
        deadlines.close();
        batchSpan?.setAttribute('faultline.not_started', notStarted.length);
        batchSpan?.end();
        metrics?.batchesInFlight.dec();
        clearInterval(timer);
        await storing;
        await early.close();
      }
      if (ctx.cancellationSignal.aborted && ctx.cancellationDetails?.workerShutdown) {
        // Graceful shutdown: hand the unfinished items back; the workflow charges nothing.
        const report = makeReport({ type: ErrorTypes.WorkerShutdown, message: 'worker shutting down; batch handed back', details: { notStarted: notStarted.length }, at: new Date().toISOString() });
        throw ApplicationFailure.create({ type: ErrorTypes.WorkerShutdown, message: report.message, details: [report, progress] });
      }
      if (input.recordsPart !== undefined) {
        const beat = progress.stored ? { part: progress.stored, outcomes: storedOutcomes } : undefined;
        return storeFinished(deps.storage, input.job.jobId, input.recordsPart, entries, beat, progress.done, notStarted, log);
      }
      const result: RunBatchResult = { outcomes: progress.done, notStarted };
      if (input.releaseIfAllFinished && progress.done.length === entries.length && progress.done.every((outcome) => 'records' in outcome)) {
        // The job's only batch, and the job closes next: its working copies go now. Not released here, the job releases them itself at close.
        try {
          result.released = await deps.storage.releaseWorkingCopies(input.job.jobId);
        } catch (error) {
          log.warn({ jobId: input.job.jobId, err: error }, 'could not release working copies after the batch; the job releases them at close');
        }
      }
      return result;
    },

    async writeRecords(input: { jobId: string; part: string; records: OutputRecord[] }): Promise<string> {
      return storageCall(() => deps.storage.writeRecordsPart(input.jobId, input.part, input.records));
    },

    /** Writes a slice's records from the parts the workflow wrote in chunks; returns their tally. */
    async writeSliceRecords(input: {
      jobId: string;
      sliceIndex: number;
      round: number;
      parts: string[];
      /** The slice's items, whose order its records take (parts written by batches come in the order they finished). */
      order?: { ref: string; from: number; to: number };
      /** A stopped slice: its items without records in `parts` never ran, and get these (per output: the item's own, else `outputs`). */
      unrecorded?: { status: 'Cancelled'; reason: string; outputs: readonly string[] };
    }): Promise<{ location: string; counts: Tally['counts']; failedItems: number }> {
      const uri = deps.storage.sliceRecordsUri(input.jobId, input.sliceIndex, input.round);
      const order = input.order;
      if (order) {
        const items = await storageCall(() => readItems(order.ref, order.from, order.to));
        const place = new Map(items.map((item, index) => [item.id, index]));
        const records: OutputRecord[] = [];
        for (const part of input.parts) for await (const record of deps.storage.readLines<OutputRecord>(part)) records.push(record);
        const unrecorded = input.unrecorded;
        if (unrecorded) {
          const recorded = new Set(records.map((record) => record.item));
          for (const item of items) {
            if (recorded.has(item.id)) continue;
            for (const output of item.outputs ?? unrecorded.outputs) records.push({ item: item.id, output, status: unrecorded.status, reason: unrecorded.reason });
          }
        }
        // Stable: an item's records keep their output order.
        records.sort((a, b) => (place.get(a.item) ?? Infinity) - (place.get(b.item) ?? Infinity));
        await storageCall(() => deps.storage.writeLines(uri, records));
        const builder = new TallyBuilder();
        for (const record of records) builder.add(record);
        return { location: uri, counts: builder.tally.counts, failedItems: builder.tally.failedItems };
      }
      // Tallied as written: reading the slice's records back cost as much again.
      const builder = await storageCall(async () => {
        const written = new TallyBuilder();
        await deps.storage.concatenateInto(uri, input.parts, (line) => written.add(JSON.parse(line) as OutputRecord));
        return written;
      });
      return { location: uri, counts: builder.tally.counts, failedItems: builder.tally.failedItems };
    },

    /** Which slices hold items a retry selection runs again, each with its current records. */
    async planSliceRetry(input: {
      jobId: string;
      round: number;
      sliceCount: number;
      selection: RetryRequest;
      listLimit: number;
    }): Promise<{ slices: { index: number; base: string; count: number }[]; count: number; ids: string[] }> {
      return storageCall(async () => {
        const latest = await deps.storage.latestSliceRounds(input.jobId, input.round);
        const plan = { slices: [] as { index: number; base: string; count: number }[], count: 0, ids: [] as string[] };
        for (let index = 0; index < input.sliceCount; index++) {
          const round = latest.get(index);
          if (round === undefined) continue;
          const base = deps.storage.sliceRecordsUri(input.jobId, index, round);
          const seen = new Set<string>();
          for await (const record of deps.storage.readLines<OutputRecord>(base)) {
            if (seen.has(record.item) || !selectedForRetry(record, input.selection)) continue;
            seen.add(record.item);
            if (plan.ids.length < input.listLimit) plan.ids.push(record.item);
          }
          if (seen.size > 0) plan.slices.push({ index, base, count: seen.size });
          plan.count += seen.size;
        }
        return plan;
      });
    },

    /** Ids of a slice's items that a retry selection runs again, read from the slice's records. */
    async selectRetryItems(input: { base: string; selection: RetryRequest }): Promise<string[]> {
      return storageCall(async () => {
        const selected: string[] = [];
        const seen = new Set<string>();
        for await (const record of deps.storage.readLines<OutputRecord>(input.base)) {
          if (seen.has(record.item) || !selectedForRetry(record, input.selection)) continue;
          seen.add(record.item);
          selected.push(record.item);
        }
        return selected;
      });
    },

    /** The slice's new records: its base with every re-run item's records replaced; returns the new tally. */
    async mergeSliceRecords(input: { jobId: string; sliceIndex: number; round: number; base: string; overlay: string }): Promise<{ location: string; counts: Tally['counts']; failedItems: number }> {
      return storageCall(async () => {
        const overlay: OutputRecord[] = [];
        for await (const record of deps.storage.readLines<OutputRecord>(input.overlay)) overlay.push(record);
        const base: OutputRecord[] = [];
        for await (const record of deps.storage.readLines<OutputRecord>(input.base)) base.push(record);
        const merged = mergeRecords(base, overlay);
        const uri = deps.storage.sliceRecordsUri(input.jobId, input.sliceIndex, input.round);
        await deps.storage.writeLines(uri, merged);
        const tally = tallyRecords(emptyTally(), merged);
        return { location: uri, counts: tally.counts, failedItems: tally.failedItems };
      });
    },

    /**
     * Records of slices that never ran (Cancelled) or whose workflow failed (Failed), made from the
     * stored spec so they never travel through workflow history.
     */
    async fillSlices(input: FillSlicesInput): Promise<{ counts: Tally['counts']; failedItems: number }> {
      const ctx = Context.current();
      const pipeline = deps.registry[input.head.pipeline];
      if (!pipeline) throw ApplicationFailure.create({ type: ErrorTypes.InvalidSpec, message: `unknown pipeline "${input.head.pipeline}"`, nonRetryable: true });
      const { spec } = input;
      const tally = emptyTally();
      for (let slice = input.slices.from; slice < input.slices.to; slice++) {
        const [from, to] = [slice * input.sliceSize, (slice + 1) * input.sliceSize];
        // A stored spec is read a slice at a time: an items file by place, a whole spec file from the cache.
        const sliceItems = spec.kind === 'inline' ? spec.items.slice(from, to) : await readItems(spec.ref, from, to);
        const records: OutputRecord[] = sliceItems.flatMap((item) =>
          outputsForItem(input.head, item, pipeline).map((output): OutputRecord => ({
            item: item.id,
            output,
            status: input.status,
            reason: input.reason,
            ...(input.error ? { error: { ...input.error, item: item.id } } : {}),
          })),
        );
        await storageCall(() => deps.storage.writeLines(deps.storage.sliceRecordsUri(input.jobId, slice, input.round), records));
        tallyRecords(tally, records);
        ctx.heartbeat(slice);
      }
      return { counts: tally.counts, failedItems: tally.failedItems };
    },

    /** At close: working copies are no longer needed (no retry can come); reports what the job keeps. */
    async releaseWorkingCopies(input: { jobId: string }): Promise<{ releasedBytes: number; keptBytes: number }> {
      return storageCall(() => deps.storage.releaseWorkingCopies(input.jobId));
    },

    /**
     * Joins the newest records of every slice into the round's manifest and tallies them; small jobs
     * also get their records back to inline in the result.
     */
    async assembleSlices(input: { jobId: string; round: number; sliceCount: number; inlineLimit: number }): Promise<{ manifest: string; tally: Tally; records?: OutputRecord[] }> {
      return storageCall(async () => {
        const ctx = Context.current();
        const latest = await deps.storage.latestSliceRounds(input.jobId, input.round);
        const parts: string[] = [];
        const missing: number[] = [];
        for (let slice = 0; slice < input.sliceCount; slice++) {
          const round = latest.get(slice);
          if (round === undefined) missing.push(slice);
          else parts.push(deps.storage.sliceRecordsUri(input.jobId, slice, round));
        }
        if (missing.length > 0) {
          throw ApplicationFailure.create({
            type: ErrorTypes.InternalError,
            message: `records of ${missing.length} slice(s) are missing from job storage`,
            nonRetryable: true,
            details: [{ missing: missing.slice(0, 20) }],
          });
        }
        // Tallied as written (a storage retry starts the tally again).
        const builder = new TallyBuilder();
        const records: OutputRecord[] = [];
        const manifest = await deps.storage.assembleManifest(input.jobId, input.round, parts, (line) => {
          const record = JSON.parse(line) as OutputRecord;
          builder.add(record);
          if (records.length <= input.inlineLimit) records.push(record);
          if (builder.tally.counts.outputs % 50_000 === 0) ctx.heartbeat(builder.tally.counts.outputs);
        });
        const tally = builder.tally;
        return { manifest, tally, ...(tally.counts.outputs <= input.inlineLimit ? { records } : {}) };
      });
    },

    async joinParts(input: { jobId: string; part: string; parts: string[] }): Promise<string> {
      return storageCall(() => deps.storage.joinParts(input.jobId, input.part, input.parts));
    },

    async assembleManifest(input: { jobId: string; round: number; parts: string[] }): Promise<string> {
      return storageCall(() => deps.storage.assembleManifest(input.jobId, input.round, input.parts));
    },

    /**
     * Validates a spec (or a stored spec's head) with this worker's pipelines, schemas included, and
     * describes the pipeline as plain data for the workflow. A pipeline this worker does not know,
     * or whose own task queue no worker polls, is unavailable: the job fails at once, typed.
     */
    async describeSpec(input: { spec: unknown }): Promise<SpecDescription> {
      // The workers polling the pipeline's queue, asked once while the spec is checked (a round trip to the server, the check all
      // CPU): a pipeline on a queue of its own needs one, and a CPU-bound one's fleet is counted from them.
      const named = deps.registry[String((input.spec as { pipeline?: unknown } | null)?.pipeline)];
      const queue = named?.taskQueue ?? deps.taskQueue;
      const ownQueue = named?.taskQueue !== undefined && named.taskQueue !== deps.taskQueue;
      const pollers = named && deps.pollersOf && queue !== undefined && (ownQueue || named.work === 'cpu') ? deps.pollersOf(queue) : undefined;
      // Awaited below, or not at all when the spec is refused: no unhandled rejection meanwhile.
      pollers?.catch(() => undefined);
      const counting = named?.work === 'cpu' ? fleetCpuSlots(pollers, queue) : undefined;
      const validation = validateJobSpec(input.spec, deps.registry);
      if (!validation.ok) {
        const unknown = validation.issues.find((issue) => issue.code === 'unknown_pipeline');
        if (unknown) {
          const name = (input.spec as { pipeline?: unknown }).pipeline;
          return {
            ok: false,
            unavailable: `no worker on task queue "${deps.taskQueue ?? '?'}" knows pipeline "${String(name)}" (it knows ${Object.keys(deps.registry).join(', ')}); start a worker with it (faultline worker --pipelines <module>)`,
          };
        }
        return { ok: false, issues: validation.issues };
      }
      const outside = deps.allowedRoots ? await pathsOutsideRoots(validation.spec, deps.allowedRoots) : [];
      if (outside.length > 0) return { ok: false, issues: outside };
      const plan = planOf(validation.pipeline);
      if (ownQueue && pollers && (await pollers) === 0) {
        return { ok: false, unavailable: `no worker polls task queue "${plan.taskQueue}" of pipeline "${plan.name}"; start one (faultline worker --pipelines <module>)` };
      }
      const cpuSlots = await counting;
      return { ok: true, plan: cpuSlots !== undefined ? { ...plan, cpuSlots } : plan };
    },

    /** Re-validates a spec passed by reference; returns its shape, never its items. */
    async inspectStoredSpec(ref: string): Promise<{ ok: true; itemCount: number } | { ok: false; issues: { path: string; code: string; message: string }[] }> {
      if (isItemsRef(ref)) return inspectItemsFile(itemsFiles, ref, deps.registry, Context.current(), deps.allowedRoots);
      const spec = await loadSpec(ref);
      const validation = validateJobSpec(spec, deps.registry);
      if (!validation.ok) return { ok: false, issues: validation.issues };
      const outside = deps.allowedRoots ? await pathsOutsideRoots(validation.spec, deps.allowedRoots) : [];
      return outside.length > 0 ? { ok: false, issues: outside } : { ok: true, itemCount: validation.spec.items.length };
    },

    /** `itemsFrom` an s3:// or https:// source: read once by this worker into the job's items file. */
    async importItems(input: { jobId: string; from: string; head: SpecHead }): Promise<ImportResult> {
      const ctx = Context.current();
      const imported = await importItems(input, {
        storage: deps.storage,
        registry: deps.registry,
        allowedHosts: deps.allowedHosts,
        s3: deps.s3,
        heartbeat: (details) => ctx.heartbeat(details),
        signal: ctx.cancellationSignal,
      });
      if (!imported.ok || !deps.allowedRoots) return imported;
      const outside = await storedItemsOutsideRoots(itemsFiles, imported.ref, deps.allowedRoots);
      if (outside.length === 0) return imported;
      // Nothing is kept of a job that cannot run.
      await deps.storage.removeRef(imported.ref);
      return { ok: false, issues: outside };
    },

    /** `options.export`: the round's records grouped by status, where the spec says (inside the allowed roots for a folder). */
    async exportResult(input: { result: JobResult; export: NonNullable<ResolvedOptions['export']> }): Promise<NonNullable<JobResult['exported']>> {
      const ctx = Context.current();
      const { destination } = input.export;
      if (destination.startsWith('file:') && deps.allowedRoots) {
        try {
          await resolveAllowedPath(destination, deps.allowedRoots, 'destination', 'export');
        } catch (error) {
          // Typed, and not retried: no attempt changes where the roots are.
          if (error instanceof ItemError) throw ApplicationFailure.create({ type: error.report.type, message: error.message, nonRetryable: true, cause: error });
          throw error;
        }
      }
      const manifest = await exportRecords(input.result, resultRecords(input.result, deps.storage), exportStore(destination, deps.s3 ?? {}), {
        ...(input.export.format ? { format: input.export.format } : {}),
        ...(input.export.statuses ? { statuses: input.export.statuses } : {}),
        progress: (seen: number) => ctx.heartbeat(seen),
      });
      return { destination: manifest.destination, counts: manifest.counts, files: manifest.files.length };
    },

    async loadItems(input: { ref: string; from: number; to: number }): Promise<JobItem[]> {
      return readItems(input.ref, input.from, input.to);
    },

    /** What a slice keeps of its items when batches name them by place: ids, and outputs where an item names its own. */
    async loadItemIds(input: { ref: string; from: number; to: number }): Promise<{ ids: string[]; outputs: Record<number, string[]>; next?: number }> {
      const items = await readItems(input.ref, input.from, input.to);
      const ids: string[] = [];
      const outputs: Record<number, string[]> = {};
      let bytes = 0;
      for (const [index, item] of items.entries()) {
        bytes += item.id.length + 3 + (item.outputs ? serializedSize(item.outputs) + 8 : 0);
        // Long ids page within the payload budget: the rest from `next` on.
        if (bytes > BUDGET.payload && ids.length > 0) return { ids, outputs, next: input.from + index };
        ids.push(item.id);
        if (item.outputs) outputs[index] = item.outputs;
      }
      return { ids, outputs };
    },
  };
}

/** The item's rate key, if its pipeline gives one; a rateKey that throws means no key (the item's own checks report bad params). */
function rateKeyOf(implementation: PipelineImplementation, job: RunBatchInput['job'], item: JobItem, log: () => Logger): string | undefined {
  if (!implementation.rateKey) return undefined;
  try {
    return implementation.rateKey(job, item);
  } catch (error) {
    log().debug({ err: error }, 'no rate key for this item');
    return undefined;
  }
}

/** A step's `ctx.heartbeat` details above this size are not sent. */
const MAX_ITEM_HEARTBEAT_BYTES = 4_096;

/** Failures told to the runner at most this often per batch (one signal carries all since the last). */
const EARLY_FAILURES_EVERY_MS = 250;

/**
 * Tells the workflow running this batch about items that failed for good, as they fail, so its
 * failure allowance stops the job within about a second instead of when the batch ends.
 */
function earlyFailureReporter(ctx: Context, enabled: boolean, log: Logger): { add(item: string): void; close(): Promise<void> } {
  const execution = ctx.info.workflowExecution;
  if (!enabled || !execution) return { add() {}, close: async () => undefined };
  let queued: string[] = [];
  let timer: NodeJS.Timeout | undefined;
  let sending: Promise<void> = Promise.resolve();
  let lastSent = 0;
  const flush = () => {
    timer = undefined;
    if (queued.length === 0) return;
    const items = queued;
    queued = [];
    lastSent = Date.now();
    sending = sending.then(async () => {
      try {
        await ctx.client.workflow.getHandle(execution.workflowId, execution.runId).signal(itemFailuresSignal, { activityId: ctx.info.activityId, items });
      } catch (error) {
        log.debug({ err: error }, 'could not tell the workflow of early failures (the batch result still will)');
      }
    });
  };
  return {
    add(item) {
      queued.push(item);
      timer ??= setTimeout(flush, Math.max(0, lastSent + EARLY_FAILURES_EVERY_MS - Date.now()));
    },
    async close() {
      clearTimeout(timer);
      flush();
      await sending;
    },
  };
}

/** A local batch starts no item after this long: the rest go through the task queue. */
const LOCAL_START_BUDGET_MS = 1_000;
/** The longest gap between heartbeats of a batch whose records go to job storage (a crash re-runs at most this much work). */
const BY_PLACE_BEAT_MAX_MS = 5_000;

/** True the first time; false when marked before or when storage could not say (the safe answer: run it the normal way). */
async function markLocalStart(storage: Storage, jobId: string, name: string, log: Logger): Promise<boolean> {
  try {
    return await storageCall(() => storage.markStarted(jobId, name));
  } catch (error) {
    if (error instanceof ApplicationFailure && error.type === ErrorTypes.StorageUnwritable) throw error;
    log.warn({ err: error }, 'could not mark a local batch as started; it runs as a normal activity');
    return false;
  }
}

/**
 * A batch's finished items' records go to job storage (`part`), and its result carries counts and
 * the items that did not finish. If storage cannot take them, the part its last heartbeat named
 * (`beat.part`, holding `beat.outcomes`) stands, and the rest come back in the result as before: the
 * batch kept what is not in that part within the payload budget, so that always fits.
 */
async function storeFinished(
  storage: Storage,
  jobId: string,
  part: string,
  entries: readonly BatchEntry[],
  beat: { part: StoredBatchRecords; outcomes: readonly ItemOutcome[] } | undefined,
  done: readonly ItemOutcome[],
  notStarted: string[],
  log: Logger,
): Promise<RunBatchResult> {
  const outcomes = done.filter((outcome) => !('records' in outcome));
  // Nothing finished since the last heartbeat's part (or at all): that part, if any, is the batch's.
  if (outcomes.length === done.length) return { outcomes, notStarted, ...(beat ? { stored: beat.part } : {}) };
  try {
    return { outcomes, notStarted, stored: await storeOutcomes(storage, jobId, part, entries, [...(beat?.outcomes ?? []), ...done]) };
  } catch (error) {
    log.warn({ err: error }, 'could not write the records of %d finished item(s) to job storage; they go back in the result', done.length - outcomes.length);
    return { outcomes: [...done], notStarted, ...(beat ? { stored: beat.part } : {}) };
  }
}

/** Writes the records of `done`'s finished items (errors are skipped) to `part` of job storage; says where and which. */
async function storeOutcomes(storage: Storage, jobId: string, part: string, entries: readonly BatchEntry[], done: readonly ItemOutcome[]): Promise<StoredBatchRecords> {
  const finished = new Map<string, FinishedOutcome>();
  for (const outcome of done) if ('records' in outcome) finished.set(outcome.item, outcome);
  const records: OutputRecord[] = [];
  const counts = emptyStatusCounts();
  const failedItems: string[] = [];
  let bytesIn = 0;
  let bytesOut = 0;
  let mask = '';
  for (const entry of entries) {
    const outcome = finished.get(entry.item.id);
    mask += outcome ? '1' : '0';
    if (!outcome) continue;
    const complete = completeRecords(entry.item.id, entry.outputs, outcome.records);
    for (const record of complete) counts[record.status] += 1;
    if (complete.some((record) => record.status === 'Failed')) failedItems.push(entry.item.id);
    records.push(...complete);
    bytesIn += outcome.bytesIn;
    bytesOut += outcome.bytesOut;
  }
  const location = await storage.writeRecordsPart(jobId, part, records);
  return { location, finished: finished.size === entries.length ? 'all' : mask, counts, failedItems, bytesIn, bytesOut };
}

type FinishedOutcome = Extract<ItemOutcome, { records: unknown }>;

/** An item waits this long in all for job storage to answer before it fails with `StorageUnavailable`. */
const STORAGE_WAIT_LIMIT_MS = 5 * 60_000;

/** How long an item waits before its `storageWaits`-th run when `error` says job storage is away, else undefined. */
function storageWaitMs(error: unknown, storageWaits: number): number | undefined {
  if (!(error instanceof ItemError) || error.report.type !== ErrorTypes.StorageUnavailable) return undefined;
  return nextStorageWaitMs(storageWaits);
}

/** Waits for job storage: 1 s doubling to 15 s. */
const STORAGE_WAITS: RetryPolicy = { maxAttempts: 0, initialIntervalMs: 1_000, backoffCoefficient: 2, maximumIntervalMs: 15_000 };

/** The `waits`-th wait for job storage, undefined once STORAGE_WAIT_LIMIT_MS would pass. */
function nextStorageWaitMs(waits: number): number | undefined {
  let waited = 0;
  for (let n = 1; n <= waits; n++) waited += backoffDelayMs(STORAGE_WAITS, n);
  const next = backoffDelayMs(STORAGE_WAITS, waits + 1);
  return waited + next <= STORAGE_WAIT_LIMIT_MS ? next : undefined;
}

/**
 * Reads what a batch needs from job storage (its items by place), waiting out storage that does
 * not answer (MinIO restarting) as its items would, heartbeating meanwhile; then a transient
 * `StorageUnavailable`. Lasting errors (typed by storageCall) and cancellation go through at once.
 */
async function whenStorageAnswers<T>(read: () => Promise<T>, ctx: Context, local: boolean, log: Logger): Promise<T> {
  for (let waits = 0; ; waits++) {
    try {
      return await read();
    } catch (error) {
      if (error instanceof ApplicationFailure || ctx.cancellationSignal.aborted) throw error;
      const waitMs = local ? undefined : nextStorageWaitMs(waits);
      if (waitMs === undefined) {
        throw ApplicationFailure.create({ type: ErrorTypes.StorageUnavailable, message: `job storage did not answer: ${(error as Error).message}`, cause: error as Error });
      }
      log.warn({ err: error, waitMs }, "job storage did not answer reading the batch's items; waiting for it");
      const beat = setInterval(() => ctx.heartbeat(), 1_000);
      try {
        ctx.heartbeat();
        await sleepUnlessAborted(waitMs, ctx.cancellationSignal);
      } finally {
        clearInterval(beat);
      }
    }
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (the caller looks at the signal). */
function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return sleep(ms, undefined, { signal }).catch(() => undefined);
}

/** Storage errors that retrying cannot fix become a non-retryable StorageUnwritable failure. */
async function storageCall<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    const code = permanentStorageError(error);
    if (code) {
      const report = makeReport({
        type: ErrorTypes.StorageUnwritable,
        message: `job storage is not writable (${code})`,
        details: { code, syscall: (error as NodeJS.ErrnoException).syscall },
        at: new Date().toISOString(),
      });
      throw ApplicationFailure.create({ type: ErrorTypes.StorageUnwritable, message: report.message, nonRetryable: true, details: [report], cause: error as Error });
    }
    throw error;
  }
}

function failureOutcome(item: string, error: unknown): Extract<ItemOutcome, { error: unknown }> {
  if (error instanceof ItemError) {
    return { item, error: { ...error.report, item }, ...(error.retryAfterMs !== undefined ? { retryAfterMs: error.retryAfterMs } : {}) };
  }
  if (error instanceof CancelledFailure) {
    return { item, error: makeReport({ type: ErrorTypes.JobCancelled, message: 'cancelled', details: {}, item, at: new Date().toISOString() }) };
  }
  return { item, error: toErrorReport(error, { at: new Date().toISOString(), item }) };
}

/**
 * Each item of a batch runs with its own deadline: past it the item's signal aborts and the item is
 * a transient `ItemTimedOut` attempt, so one hung item never holds its batch. A batch runs its items
 * one after another, so one timer serves them all, restarted for each item (`refresh`), and one
 * listener on the batch's signal reaches the running item: no timer, promise race or listener is
 * made per item (they were a measurable share of a short item's cost, most of it garbage).
 */
function itemDeadlines(timeoutMs: number | undefined, parent: AbortSignal) {
  let timer: NodeJS.Timeout | undefined;
  /** What the running item's deadline does, and its controller once its signal was asked for. */
  type RunningItem = { expire: () => void; controller?: AbortController };
  let running: RunningItem | undefined;
  let listening = false;
  const onParentAbort = () => running?.controller?.abort(parent.reason);
  const onDeadline = () => running?.expire();
  return {
    run<T>(work: (signal: () => AbortSignal) => Promise<T>): Promise<T> {
      if (!timeoutMs) return work(() => parent);
      return new Promise<T>((resolve, reject) => {
        let expired: ItemError | undefined;
        const item: RunningItem = {
          expire: () => {
            expired = new ItemError({ type: ErrorTypes.ItemTimedOut, message: `the item ran past its ${timeoutMs} ms deadline`, details: { timeoutMs } });
            running = undefined;
            item.controller?.abort(expired);
            reject(expired);
          },
        };
        // Made on first use: most items never look at their signal, and an AbortController per item costs.
        const signal = () => {
          if (!item.controller) {
            item.controller = new AbortController();
            if (expired) item.controller.abort(expired);
            else if (parent.aborted) item.controller.abort(parent.reason);
            else if (!listening) {
              parent.addEventListener('abort', onParentAbort, { once: true });
              listening = true;
            }
          }
          return item.controller.signal;
        };
        running = item;
        if (timer) timer.refresh();
        else timer = setTimeout(onDeadline, timeoutMs);
        const settle = () => {
          if (running === item) running = undefined;
        };
        let pending: Promise<T>;
        try {
          pending = work(signal);
        } catch (error) {
          settle();
          reject(error);
          return;
        }
        pending.then(
          (value) => {
            settle();
            resolve(value);
          },
          (error: unknown) => {
            settle();
            reject(error);
          },
        );
      });
    },
    /** The batch is over: its timer and listener go. */
    close(): void {
      clearTimeout(timer);
      running = undefined;
      if (listening) parent.removeEventListener('abort', onParentAbort);
    },
  };
}

/**
 * Every `file://` source and destination of a spec that lies outside this worker's allowed roots
 * (or inside job storage), as spec issues: a spec that cannot work here fails before anything runs.
 */
/** Collects the destination and `file://` sources that lie outside the worker's allowed roots (the first 100 listed, the rest counted). */
function rootCheck(roots: readonly string[]) {
  const issues: SpecIssue[] = [];
  let outside = 0;
  return {
    async check(uri: string | undefined, at: string, kind: 'source' | 'destination'): Promise<void> {
      if (!uri?.startsWith('file:')) return;
      try {
        await resolveAllowedPath(uri, roots, kind, 'prepare');
      } catch (error) {
        if (!(error instanceof ItemError)) throw error;
        outside += 1;
        if (issues.length < MAX_PATH_ISSUES) issues.push({ path: at, code: error.report.type, message: error.report.message });
      }
    },
    async items(items: readonly { source?: string }[], offset = 0): Promise<void> {
      for (const [index, item] of items.entries()) await this.check(item.source, `items[${offset + index}].source`, 'source');
    },
    issues(): SpecIssue[] {
      return outside > issues.length ? [...issues, { path: 'items', code: 'more_outside_allowed_roots', message: `${outside - issues.length} more paths outside the allowed roots` }] : issues;
    },
  };
}

async function pathsOutsideRoots(spec: JobSpec, roots: readonly string[]): Promise<SpecIssue[]> {
  const check = rootCheck(roots);
  await check.check(spec.destination, 'destination', 'destination');
  await check.items(spec.items);
  return check.issues();
}

/** The same check over a stored items file, chunk by chunk (the destination is in the spec's head, checked with it). */
async function storedItemsOutsideRoots(reader: ItemsFileReader, ref: string, roots: readonly string[]): Promise<SpecIssue[]> {
  const check = rootCheck(roots);
  const { head, count } = await reader.index(ref);
  await check.check((head as { destination?: string }).destination, 'destination', 'destination');
  for (let from = 0; from < count; from += ITEMS_CHUNK) await check.items((await reader.read(ref, from, from + ITEMS_CHUNK)) as { source?: string }[], from);
  return check.issues();
}

const MAX_PATH_ISSUES = 100;

/** One item's outcome in the worker's metrics: its outputs' statuses, or its error (an unprocessable or fatal one fails every output). */
function countOutcome(metrics: WorkerMetrics, pipeline: string, entry: BatchEntry, outcome: ItemOutcome): void {
  if (entry.run > 1) metrics.crashes.inc({ pipeline });
  if ('error' in outcome) {
    metrics.itemErrors.inc({ pipeline, type: outcome.error.type, class: outcome.error.class });
    if (outcome.error.class === 'transient') metrics.retries.inc({ pipeline });
    else metrics.items.inc({ pipeline, status: 'Failed' }, entry.outputs.length);
    return;
  }
  for (const record of outcome.records) metrics.items.inc({ pipeline, status: record.status });
}
