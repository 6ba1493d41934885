/**
 * Byte budgets for everything the engine puts in a Temporal payload (2 MB hard limit per payload).
 * Reports keep their type, class, item, step, attempts and the shape of their cause chain; long
 * messages, stacks and large details are cut with a marker, and the full report is kept in job
 * storage by reference (`details.fullReport`) when an activity can write it. Pure: workflows use it.
 */
import type { ErrorReport } from './errors';

export const BUDGET = {
  /** Characters of a report's own message. */
  message: 500,
  /** Characters of a message further down the cause chain. */
  causeMessage: 200,
  /** Causes kept in a payload (the full chain is in the stored report). */
  causeDepth: 3,
  /** Characters of a stack kept in a payload. */
  stack: 400,
  /** Serialized size of one detail value before it is replaced by a summary. */
  detailValue: 300,
  /** Detail keys kept per report. */
  detailKeys: 16,
  /** One bounded report, serialized: the largest it can get. */
  report: 3_000,
  /** A list of records or outcomes in one payload (activity input or result). */
  payload: 1_000_000,
  /** The JobResult: the workflow's result, memo and webhook body. */
  result: 1_500_000,
  /** Entries of an operator list (flags, limit changes, notifications, rejected requests) kept in state and result. */
  listEntries: 100,
} as const;

const MARK = '… [truncated';

export function truncateText(text: string, max: number): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}${MARK} ${text.length - max} chars]`;
}

export function isTruncated(text: string): boolean {
  return text.includes(MARK);
}

function jsonLength(value: unknown): number {
  try {
    return JSON.stringify(value)?.length ?? 0;
  } catch {
    return Infinity;
  }
}

function isReportLike(value: unknown): value is ErrorReport {
  return !!value && typeof value === 'object' && typeof (value as ErrorReport).type === 'string' && typeof (value as ErrorReport).message === 'string';
}

/** A report within `BUDGET.report`; `cut` says whether anything was left out. */
export function boundReport(report: ErrorReport, depth = 0): { report: ErrorReport; cut: boolean } {
  let cut = false;
  const messageMax = depth === 0 ? BUDGET.message : BUDGET.causeMessage;
  const message = truncateText(report.message, messageMax);
  if (message !== report.message) cut = true;
  const details: Record<string, unknown> = {};
  const entries = Object.entries(report.details ?? {});
  if (entries.length > BUDGET.detailKeys) {
    cut = true;
    details.truncatedKeys = entries.length - BUDGET.detailKeys;
  }
  for (const [key, value] of entries.slice(0, BUDGET.detailKeys)) {
    if (key === 'cause' && isReportLike(value)) {
      if (depth + 1 >= BUDGET.causeDepth) {
        cut = true;
        details.cause = { type: value.type, class: value.class, message: truncateText(value.message, BUDGET.causeMessage), details: { truncated: 'deeper causes are in the full report' } };
        continue;
      }
      const inner = boundReport(value, depth + 1);
      cut ||= inner.cut;
      details.cause = inner.report;
    } else if (key === 'stack' && typeof value === 'string') {
      const stack = depth === 0 ? truncateText(value, BUDGET.stack) : undefined;
      if (stack !== value) cut = true;
      if (stack !== undefined) details.stack = stack;
    } else if (key === 'fullReport' && typeof value === 'string') {
      details.fullReport = value;
    } else {
      const size = jsonLength(value);
      if (size > BUDGET.detailValue) {
        cut = true;
        details[key] = { truncated: true, bytes: size, preview: truncateText(typeof value === 'string' ? value : safeJson(value), BUDGET.detailValue / 2) };
      } else {
        details[key] = value;
      }
    }
  }
  return { report: { ...report, message, details }, cut };
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return '[unserializable]';
  }
}

/** Splits `entries` into chunks whose serialized size stays under `budget` (each chunk non-empty). */
export function chunkByBytes<T>(entries: readonly T[], budget: number = BUDGET.payload): T[][] {
  const chunks: T[][] = [];
  let chunk: T[] = [];
  let size = 0;
  for (const entry of entries) {
    const length = jsonLength(entry) + 1;
    if (chunk.length > 0 && size + length > budget) {
      chunks.push(chunk);
      chunk = [];
      size = 0;
    }
    chunk.push(entry);
    size += length;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}

/** The newest `limit` entries and how many older ones were left out. */
export function capList<T>(entries: readonly T[], limit: number = BUDGET.listEntries): { kept: T[]; dropped: number } {
  return entries.length <= limit ? { kept: [...entries], dropped: 0 } : { kept: entries.slice(-limit), dropped: entries.length - limit };
}

export function serializedSize(value: unknown): number {
  return jsonLength(value);
}
