/**
 * The engine's activities: run a batch of items through a pipeline (heartbeating per-item
 * progress), and move what must not travel in payloads through job storage.
 */
import { ApplicationFailure, Context, CancelledFailure } from '@temporalio/activity';
import type { Logger } from 'pino';
import {
  type BatchProgress,
  ErrorTypes,
  type ItemOutcome,
  type JobItem,
  type OutputRecord,
  type PipelineRegistry,
  type RunBatchInput,
  type RunBatchResult,
  makeReport,
  toErrorReport,
  validateJobSpec,
} from '../shared';
import type { Storage } from '../storage';
import { ItemError, type PipelineImplementation } from './types';

export interface EngineDeps {
  implementations: Readonly<Record<string, PipelineImplementation>>;
  registry: PipelineRegistry;
  storage: Storage;
  logger: Logger;
}

export function createEngineActivities(deps: EngineDeps) {
  const specCache = new Map<string, unknown>();
  const loadSpec = async (ref: string) => {
    let spec = specCache.get(ref);
    if (spec === undefined) {
      spec = await deps.storage.readSpec(ref);
      if (specCache.size > 8) specCache.clear();
      specCache.set(ref, spec);
    }
    return spec as { items: JobItem[] };
  };

  return {
    async runBatch(input: RunBatchInput): Promise<RunBatchResult> {
      const ctx = Context.current();
      const log = deps.logger.child({ jobId: input.job.jobId, activityId: ctx.info.activityId });
      const implementation = deps.implementations[input.job.pipeline];
      if (!implementation) {
        throw ApplicationFailure.create({
          type: ErrorTypes.InternalError,
          message: `this worker has no implementation of pipeline "${input.job.pipeline}"`,
          nonRetryable: true,
        });
      }
      const progress: BatchProgress = { done: [] };
      const resumed = ctx.info.heartbeatDetails as BatchProgress | undefined;
      if (resumed?.done) progress.done.push(...resumed.done);
      const finished = new Set(progress.done.map((outcome) => outcome.item));
      // Heartbeats carry all finished outcomes, so send them by time, not per item (the cost
      // would grow with the square of the batch); the timer keeps long items alive.
      const beatEveryMs = Math.max(200, Math.min(1_000, Math.floor(input.heartbeatTimeoutMs / 4)));
      let lastBeat = 0;
      const beat = () => {
        lastBeat = Date.now();
        ctx.heartbeat(progress);
      };
      const timer = setInterval(beat, beatEveryMs);
      const notStarted: string[] = [];
      try {
        beat();
        for (const entry of input.entries) {
          if (finished.has(entry.item.id)) continue;
          if (ctx.cancellationSignal.aborted) {
            notStarted.push(entry.item.id);
            continue;
          }
          let itemLog: Logger | undefined;
          const itemLogger = () => (itemLog ??= log.child({ item: entry.item.id, run: entry.run }));
          let outcome: ItemOutcome;
          try {
            const work = await implementation.processItem({ job: input.job, entry, signal: ctx.cancellationSignal, get log() { return itemLogger(); } });
            outcome = { item: entry.item.id, records: work.records, bytesIn: work.bytesIn, bytesOut: work.bytesOut };
          } catch (error) {
            if (ctx.cancellationSignal.aborted) {
              notStarted.push(entry.item.id);
              continue;
            }
            outcome = failureOutcome(entry.item.id, error);
            itemLogger().warn({ errorType: outcome.error.type, errorClass: outcome.error.class }, 'item failed: %s', outcome.error.message);
          }
          progress.done.push(outcome);
          if (Date.now() - lastBeat >= beatEveryMs) beat();
          if ('error' in outcome && outcome.error.class === 'fatal') {
            for (const rest of input.entries) if (!progress.done.some((o) => o.item === rest.item.id)) notStarted.push(rest.item.id);
            break;
          }
        }
      } finally {
        clearInterval(timer);
      }
      if (ctx.cancellationSignal.aborted && ctx.cancellationDetails?.workerShutdown) {
        // Graceful shutdown: hand the unfinished items back; the workflow charges nothing.
        const report = makeReport({ type: ErrorTypes.WorkerShutdown, message: 'worker shutting down; batch handed back', details: { notStarted: notStarted.length }, at: new Date().toISOString() });
        throw ApplicationFailure.create({ type: ErrorTypes.WorkerShutdown, message: report.message, details: [report, progress] });
      }
      return { outcomes: progress.done, notStarted };
    },

    async writeRecords(input: { jobId: string; part: string; records: OutputRecord[] }): Promise<string> {
      return storageCall(() => deps.storage.writeRecordsPart(input.jobId, input.part, input.records));
    },

    async joinParts(input: { jobId: string; part: string; parts: string[] }): Promise<string> {
      return storageCall(() => deps.storage.joinParts(input.jobId, input.part, input.parts));
    },

    async assembleManifest(input: { jobId: string; round: number; parts: string[] }): Promise<string> {
      return storageCall(() => deps.storage.assembleManifest(input.jobId, input.round, input.parts));
    },

    /** Re-validates a spec passed by reference; returns its shape, never its items. */
    async inspectStoredSpec(ref: string): Promise<{ ok: true; itemCount: number } | { ok: false; issues: { path: string; code: string; message: string }[] }> {
      const spec = await loadSpec(ref);
      const validation = validateJobSpec(spec, deps.registry);
      return validation.ok ? { ok: true, itemCount: validation.spec.items.length } : { ok: false, issues: validation.issues };
    },

    async loadItems(input: { ref: string; from: number; to: number }): Promise<JobItem[]> {
      const spec = await loadSpec(input.ref);
      return spec.items.slice(input.from, input.to);
    },
  };
}

const PERMANENT_FS_ERRORS = new Set(['EACCES', 'EPERM', 'ENOTDIR', 'EROFS', 'EISDIR', 'EEXIST']);

/** Storage errors that retrying cannot fix become a non-retryable StorageUnwritable failure. */
async function storageCall<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code && PERMANENT_FS_ERRORS.has(code)) {
      const report = makeReport({ type: ErrorTypes.StorageUnwritable, message: `job storage is not writable (${code})`, details: { code, syscall: (error as NodeJS.ErrnoException).syscall }, at: new Date().toISOString() });
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
