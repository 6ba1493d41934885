/** What a pipeline implementation provides to the engine's batch activity. */
import type { Logger } from 'pino';
import type { StepServices } from './step-tools';
import type { BatchEntry, ErrorClass, ErrorReport, JobContext, JobItem, OutputRecord } from '../shared';
import { makeReport, toErrorReport } from '../shared';

export interface ItemContext {
  job: JobContext;
  entry: BatchEntry;
  /** Aborted when the activity is cancelled (job cancel, worker shutdown). */
  signal: AbortSignal;
  log: Logger;
  /** The worker's allowed roots and hosts, for the safety tools steps use. */
  services?: StepServices;
  /** Small JSON progress of this item, sent with the batch's next heartbeat. */
  heartbeat?(details: unknown): void;
}

export interface ItemWork {
  records: OutputRecord[];
  bytesIn: number;
  bytesOut: number;
}

export interface PipelineImplementation {
  name: string;
  processItem(ctx: ItemContext): Promise<ItemWork>;
  /** The item's rate key (e.g. its source's host): its runs wait for a lease when a limit applies to the key. */
  rateKey?(job: JobContext, item: JobItem): string | undefined;
}

/** Thrown by pipeline code to report a classified failure of one item. */
export class ItemError extends Error {
  readonly report: ErrorReport;
  readonly retryAfterMs?: number;
  constructor(init: { type: string; message: string; class?: ErrorClass; details?: Record<string, unknown>; step?: string; output?: string; retryAfterMs?: number; cause?: unknown }) {
    super(init.message, init.cause !== undefined ? { cause: init.cause } : undefined);
    this.name = 'ItemError';
    const at = new Date().toISOString();
    // The underlying error (sharp, exif, fs, undici) stays in the report as its cause chain.
    const cause = init.cause instanceof Error ? { cause: toErrorReport(init.cause, { at }) } : {};
    this.report = makeReport({ type: init.type, message: init.message, class: init.class, details: { ...init.details, ...cause }, step: init.step, output: init.output, at });
    if (init.retryAfterMs !== undefined) this.retryAfterMs = init.retryAfterMs;
  }
}
