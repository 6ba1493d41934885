/**
 * The error model, declared once. Workflows, activities, the client and tests all branch on
 * `ErrorTypes` values (also used as `ApplicationFailure.type` and in `nonRetryableErrorTypes`),
 * never on class names or messages.
 */
import { z } from 'zod';

export const SCHEMA_VERSION = 1;

export const ErrorClasses = ['invalid', 'unprocessable', 'transient', 'crash', 'fatal'] as const;
export type ErrorClass = (typeof ErrorClasses)[number];

/** Every error type Faultline itself produces, with the class it belongs to. */
export const ErrorTypes = {
  // invalid: the spec or an item is wrong
  InvalidSpec: 'InvalidSpec',
  SourceOutsideAllowedRoots: 'SourceOutsideAllowedRoots',
  DestinationOutsideAllowedRoots: 'DestinationOutsideAllowedRoots',
  UnsupportedSource: 'UnsupportedSource',
  HostNotAllowed: 'HostNotAllowed',
  SpecConflict: 'SpecConflict',
  // unprocessable: this one item cannot be processed
  SourceNotFound: 'SourceNotFound',
  SourceForbidden: 'SourceForbidden',
  SourceTooLarge: 'SourceTooLarge',
  CorruptImage: 'CorruptImage',
  /** A step's working file is gone from job storage (a later step cannot go on without it). */
  WorkingFileLost: 'WorkingFileLost',
  /** `options.export` could not write the job's records (the job's own outcome stands). */
  ExportFailed: 'ExportFailed',
  UnsupportedFormat: 'UnsupportedFormat',
  ImageTooLarge: 'ImageTooLarge',
  ItemUnprocessable: 'ItemUnprocessable',
  UnexpectedItemError: 'UnexpectedItemError',
  /** An endpoint refused a delivered record with a 4xx (deliver). */
  DeliveryRejected: 'DeliveryRejected',
  // transient: worth trying again
  EndpointUnavailable: 'EndpointUnavailable',
  RateLimited: 'RateLimited',
  NetworkError: 'NetworkError',
  TransientItemError: 'TransientItemError',
  /** No space left (or quota exceeded) writing an output or job storage: worth trying again once space is freed. */
  DiskFull: 'DiskFull',
  /** Job storage did not answer (MinIO restarting, a connection cut): the item waited for it, uncharged, and it stayed away. */
  StorageUnavailable: 'StorageUnavailable',
  // crash: the process or the activity died without a report
  Crashed: 'Crashed',
  ItemTimedOut: 'ItemTimedOut',
  /** A small job's batch, run on the workflow's own worker, was started before and never finished: that worker was lost. */
  LocalBatchLost: 'LocalBatchLost',
  // handed back on graceful worker shutdown; not counted against any budget
  WorkerShutdown: 'WorkerShutdown',
  // fatal: the job as a whole cannot go on
  FatalItemError: 'FatalItemError',
  DestinationRejected: 'DestinationRejected',
  DestinationUnwritable: 'DestinationUnwritable',
  StorageUnwritable: 'StorageUnwritable',
  ToleratedFailureThresholdExceeded: 'ToleratedFailureThresholdExceeded',
  ChildJobFailed: 'ChildJobFailed',
  WorkflowLimitExceeded: 'WorkflowLimitExceeded',
  /** No worker serves the job's pipeline (unknown to the workers of the main queue, or no worker polls its task queue). */
  PipelineUnavailable: 'PipelineUnavailable',
  // cancellation
  JobCancelled: 'JobCancelled',
  // not an error of the job: an awaitResult call must be repeated on the next run
  JobRotating: 'JobRotating',
  // rejections of operator requests (update validators, handlers, signals)
  JobClosed: 'JobClosed',
  NothingToRetry: 'NothingToRetry',
  /** The failure a Failed job's execution ends with; its details hold the JobResult. */
  JobFailed: 'JobFailed',
  UnknownErrorType: 'UnknownErrorType',
  InvalidRequest: 'InvalidRequest',
  // anything not classified by the code that threw it
  InternalError: 'InternalError',
} as const;
export type ErrorType = (typeof ErrorTypes)[keyof typeof ErrorTypes];

/** Class of each built-in type; user pipelines may throw their own types with an explicit class. */
export const ErrorTypeClass: Readonly<Record<ErrorType, ErrorClass>> = {
  InvalidSpec: 'invalid',
  SourceOutsideAllowedRoots: 'invalid',
  DestinationOutsideAllowedRoots: 'invalid',
  UnsupportedSource: 'invalid',
  HostNotAllowed: 'invalid',
  SpecConflict: 'invalid',
  SourceNotFound: 'unprocessable',
  SourceForbidden: 'unprocessable',
  SourceTooLarge: 'unprocessable',
  CorruptImage: 'unprocessable',
  WorkingFileLost: 'unprocessable',
  ExportFailed: 'transient',
  UnsupportedFormat: 'unprocessable',
  ImageTooLarge: 'unprocessable',
  ItemUnprocessable: 'unprocessable',
  UnexpectedItemError: 'unprocessable',
  DeliveryRejected: 'unprocessable',
  EndpointUnavailable: 'transient',
  RateLimited: 'transient',
  NetworkError: 'transient',
  TransientItemError: 'transient',
  DiskFull: 'transient',
  StorageUnavailable: 'transient',
  Crashed: 'crash',
  ItemTimedOut: 'transient',
  LocalBatchLost: 'crash',
  WorkerShutdown: 'transient',
  FatalItemError: 'fatal',
  DestinationRejected: 'fatal',
  DestinationUnwritable: 'fatal',
  StorageUnwritable: 'fatal',
  ToleratedFailureThresholdExceeded: 'fatal',
  ChildJobFailed: 'fatal',
  WorkflowLimitExceeded: 'fatal',
  PipelineUnavailable: 'fatal',
  JobCancelled: 'fatal',
  JobRotating: 'transient',
  JobClosed: 'invalid',
  NothingToRetry: 'invalid',
  JobFailed: 'fatal',
  UnknownErrorType: 'invalid',
  InvalidRequest: 'invalid',
  InternalError: 'unprocessable',
};

/** Types that Temporal must never retry on its own: everything but transient ones. */
export const nonRetryableErrorTypes: string[] = Object.entries(ErrorTypeClass)
  .filter(([, cls]) => cls !== 'transient')
  .map(([type]) => type);

export const ErrorReportSchema: z.ZodType<ErrorReport> = z.lazy(() =>
  z.object({
    schemaVersion: z.number().int(),
    type: z.string().min(1),
    class: z.enum(ErrorClasses),
    message: z.string(),
    details: z.record(z.unknown()),
    item: z.string().optional(),
    output: z.string().optional(),
    step: z.string().optional(),
    attempts: z.number().int().nonnegative().optional(),
    at: z.string(),
  }),
);

export interface ErrorReport {
  schemaVersion: number;
  type: string;
  class: ErrorClass;
  message: string;
  /** Machine-readable facts. `cause` holds the chain of underlying reports; `stack` the stack trace. */
  details: Record<string, unknown>;
  item?: string;
  output?: string;
  step?: string;
  attempts?: number;
  at: string;
}

export function classOf(type: string, fallback: ErrorClass = 'unprocessable'): ErrorClass {
  return (ErrorTypeClass as Record<string, ErrorClass>)[type] ?? fallback;
}

export interface ReportInit {
  type: string;
  message: string;
  class?: ErrorClass;
  details?: Record<string, unknown>;
  item?: string;
  output?: string;
  step?: string;
  attempts?: number;
  at: string;
}

export function makeReport(init: ReportInit): ErrorReport {
  const report: ErrorReport = {
    schemaVersion: SCHEMA_VERSION,
    type: init.type,
    class: init.class ?? classOf(init.type),
    message: init.message,
    details: init.details ?? {},
    at: init.at,
  };
  if (init.item !== undefined) report.item = init.item;
  if (init.output !== undefined) report.output = init.output;
  if (init.step !== undefined) report.step = init.step;
  if (init.attempts !== undefined) report.attempts = init.attempts;
  return report;
}
