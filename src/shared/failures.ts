/**
 * Conversions between thrown errors / Temporal failures and ErrorReports, both ways.
 * The `cause` chain is kept as nested reports in `details.cause`; stacks only in `details.stack`.
 */
import { ActivityFailure, ApplicationFailure, CancelledFailure, ChildWorkflowFailure, ServerFailure, TemporalFailure, TerminatedFailure, TimeoutFailure, TimeoutType } from '@temporalio/common';
import { type ErrorClass, ErrorClasses, type ErrorReport, ErrorTypes, classOf, makeReport } from './errors';
import { redactText, redactValue } from './redact';

export interface ReportContext {
  at: string;
  item?: string;
  output?: string;
  step?: string;
  attempts?: number;
}

const MAX_CAUSE_DEPTH = 8;

function isReport(value: unknown): value is ErrorReport {
  if (!value || typeof value !== 'object') return false;
  const candidate = value as Partial<ErrorReport>;
  return typeof candidate.type === 'string' && typeof candidate.message === 'string' && typeof candidate.class === 'string' && (ErrorClasses as readonly string[]).includes(candidate.class);
}

/** Turns anything thrown (or a Temporal failure) into an ErrorReport. */
export function toErrorReport(err: unknown, ctx: ReportContext, depth = 0): ErrorReport {
  const base = { at: ctx.at, item: ctx.item, output: ctx.output, step: ctx.step, attempts: ctx.attempts };
  const causeOf = (error: Error): Record<string, unknown> => {
    if (depth >= MAX_CAUSE_DEPTH || !(error.cause instanceof Error)) return {};
    return { cause: toErrorReport(error.cause, { at: ctx.at }, depth + 1) };
  };

  if (err instanceof ApplicationFailure) {
    const attached = err.details?.[0];
    if (isReport(attached)) {
      // A report we attached ourselves when throwing: keep it, fill in the context.
      const report: ErrorReport = { ...attached, details: { ...attached.details } };
      if (ctx.item !== undefined && report.item === undefined) report.item = ctx.item;
      if (ctx.step !== undefined && report.step === undefined) report.step = ctx.step;
      if (ctx.output !== undefined && report.output === undefined) report.output = ctx.output;
      if (ctx.attempts !== undefined) report.attempts = ctx.attempts;
      if (report.details.cause === undefined) Object.assign(report.details, causeOf(err));
      return report;
    }
    const type = err.type ?? ErrorTypes.InternalError;
    const fallbackClass: ErrorClass = err.nonRetryable ? 'unprocessable' : 'transient';
    return makeReport({
      ...base,
      type,
      class: classOf(type, fallbackClass),
      message: redactText(err.message),
      details: {
        ...(err.details && err.details.length > 0 ? { failureDetails: redactValue(err.details) } : {}),
        ...(err.stack ? { stack: err.stack } : {}),
        ...causeOf(err),
      },
    });
  }
  if (err instanceof ActivityFailure) {
    const inner = err.cause ? toErrorReport(err.cause, ctx, depth + 1) : undefined;
    if (inner) {
      inner.details = { ...inner.details, activityType: err.activityType, activityId: err.activityId };
      return inner;
    }
    return makeReport({ ...base, type: ErrorTypes.InternalError, message: redactText(err.message), details: { activityType: err.activityType } });
  }
  if (err instanceof ChildWorkflowFailure) {
    const cause = err.cause ? toErrorReport(err.cause, { at: ctx.at }, depth + 1) : undefined;
    return makeReport({
      ...base,
      type: ErrorTypes.ChildJobFailed,
      message: `child job ${err.execution.workflowId} failed${cause ? `: ${cause.message}` : ''}`,
      details: { childJobId: err.execution.workflowId, childWorkflowType: err.workflowType, ...(cause ? { cause } : {}) },
    });
  }
  if (err instanceof TimeoutFailure) {
    const heartbeat = err.timeoutType === TimeoutType.HEARTBEAT;
    const timeoutName = err.timeoutType !== undefined ? (TimeoutType[err.timeoutType] ?? String(err.timeoutType)) : 'UNKNOWN';
    return makeReport({
      ...base,
      type: heartbeat ? ErrorTypes.Crashed : ErrorTypes.ItemTimedOut,
      message: heartbeat ? 'the worker stopped heartbeating (process died or hung)' : `timed out (${timeoutName})`,
      details: { timeoutType: timeoutName },
    });
  }
  if (err instanceof CancelledFailure) {
    return makeReport({ ...base, type: ErrorTypes.JobCancelled, message: redactText(err.message || 'cancelled'), details: {} });
  }
  if (err instanceof TerminatedFailure) {
    return makeReport({ ...base, type: ErrorTypes.Crashed, class: 'fatal', message: 'terminated', details: { terminated: true } });
  }
  if (err instanceof ServerFailure || err instanceof TemporalFailure) {
    return makeReport({ ...base, type: ErrorTypes.InternalError, message: redactText(err.message), details: { ...causeOf(err) } });
  }
  if (err instanceof Error) {
    return makeReport({
      ...base,
      type: ErrorTypes.UnexpectedItemError,
      message: redactText(err.message),
      details: { errorName: err.name, ...(err.stack ? { stack: redactText(err.stack) } : {}), ...causeOf(err) },
    });
  }
  return makeReport({ ...base, type: ErrorTypes.UnexpectedItemError, message: redactText(describeThrown(err)), details: {} });
}

/** Text for a thrown non-Error; String() itself throws for values like `{ toString: 1 }` or null-prototype objects. */
function describeThrown(value: unknown): string {
  try {
    return String(value);
  } catch {
    try {
      return JSON.stringify(value) ?? Object.prototype.toString.call(value);
    } catch {
      return Object.prototype.toString.call(value);
    }
  }
}

/** Turns a report into an ApplicationFailure that carries the report in `details[0]`. */
export function reportToFailure(report: ErrorReport, opts: { nextRetryDelayMs?: number } = {}): ApplicationFailure {
  return ApplicationFailure.create({
    type: report.type,
    message: report.message,
    nonRetryable: report.class !== 'transient',
    details: [report],
    ...(opts.nextRetryDelayMs !== undefined ? { nextRetryDelay: opts.nextRetryDelayMs } : {}),
  });
}
