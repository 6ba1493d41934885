/**
 * A job run's state, owned by one object, and the definitions its parts share.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  type CancellationScope,
  CancelledFailure,
  ChildWorkflowFailure,
  type ChildWorkflowHandle,
  allHandlersFinished,
  condition,
  log,
  proxyLocalActivities,
  sleep,
  upsertMemo,
  workflowInfo,
} from '@temporalio/workflow';
import { patched } from './patches';
import type { createNotifyActivities } from '../activities/notify';
import type { createEngineActivities } from '../activities/engine';
import {
  type CancelResponse,
  type ErrorReport,
  type Flag,
  type FlagRequest,
  ErrorTypes,
  type ItemsSource,
  type JobInput,
  type JobCarry,
  type LargeJobSizing,
  type OmittedCounts,
  BUDGET,
  type JobPhase,
  type JobRequest,
  type JobResult,
  type LimitsChange,
  type LimitsRequest,
  PATCHES,
  type PipelinePlan,
  RESULT_MEMO_KEY,
  type RejectedRequest,
  type ResolvedOptions,
  type RetryRequest,
  type RetryResponse,
  type RoundCarry,
  sliceControlSignal,
  type SpecSource,
  type SlicesTally,
  type SpecHead,
  type StopReason,
  emptyStatusCounts,
  makeReport,
  type StorageReleased,
} from '../shared';
import type { ItemRunner } from './runner';
import { prioritizedActivities } from './priority';
import type { sliceWorkflow } from '../workflows/slice';

/** Reading an `itemsFrom` source may take long for millions of items; it heartbeats per chunk. */
export const importer = prioritizedActivities<Pick<ReturnType<typeof createEngineActivities>, 'importItems'>>({
  startToCloseTimeout: '1h',
  heartbeatTimeout: '2m',
  // Enough tries to ride out a job storage or source outage of a few minutes.
  retry: { maximumAttempts: 10, initialInterval: '2s', maximumInterval: '1m' },
});

/** The worker's check of a spec: quick, so a worker lost while doing it is noticed in seconds, not minutes. */
const specCheckOptions = { startToCloseTimeout: '30s', retry: { maximumAttempts: 10, initialInterval: '1s', maximumInterval: '10s' } } as const;
export const describer = prioritizedActivities<Pick<ReturnType<typeof createEngineActivities>, 'describeSpec'>>(specCheckOptions);

/**
 * The same check as a local activity, on the worker running the job's workflow task: no wait for an
 * activity slot behind other jobs' batches (a small job under load waited for one per activity).
 */
export const localDescriber = proxyLocalActivities<Pick<ReturnType<typeof createEngineActivities>, 'describeSpec'>>(specCheckOptions);

/** A small job's working copies go in a moment: released on the worker at hand, not behind other jobs' batches. */
export const localHousekeeping = proxyLocalActivities<Pick<ReturnType<typeof createEngineActivities>, 'releaseWorkingCopies'>>({
  startToCloseTimeout: '2m',
  retry: { maximumAttempts: 5, initialInterval: '1s' },
});
/** Jobs up to this many items release their working copies by local activity. */
export const LOCAL_RELEASE_MAX_ITEMS = 10_000;

export const notify = prioritizedActivities<ReturnType<typeof createNotifyActivities>>({
  startToCloseTimeout: '2m',
  heartbeatTimeout: '30s',
  retry: { maximumAttempts: 1 },
});

/** Ids listed in a retry response (the count is always exact). */
export const QUEUED_IDS_LISTED = 1_000;

export interface Prepared {
  head: SpecHead;
  pipeline: PipelinePlan;
  options: ResolvedOptions;
  itemCount: number;
  source: ItemsSource;
  /** Small inline jobs run their only slice inside this workflow. */
  inline: boolean;
  sliceSize: number;
  sliceCount: number;
  allowed: number | undefined;
}

export type Outcome = { ok: RetryResponse | CancelResponse } | { error: { type: string; message: string } };

/** What a retry round runs: the inline slice's items, or some slices of a large job. */
export type RetryPlan = { kind: 'inline'; ids: string[] } | { kind: 'sliced'; slices: { index: number; base: string; count: number }[]; count: number; ids: string[] };

export interface RoundRun {
  selection?: RetryRequest;
  /** Failed items of the job that this round does not touch. */
  baseFailed: number;
  inline?: { carry?: RoundCarry & { kind: 'inline' } };
  sliced?: { slices: number[] | undefined; next: number; done: SlicesTally; bases: Record<number, string> };
}

export function invalidSpec(issues: { path: string; code: string; message: string }[]): ApplicationFailure {
  const report = makeReport({
    type: ErrorTypes.InvalidSpec,
    message: `invalid job spec: ${issues.length} issue(s); first: ${issues[0]?.path}: ${issues[0]?.message}`,
    details: { issues },
    at: new Date().toISOString(),
  });
  return ApplicationFailure.create({ type: ErrorTypes.InvalidSpec, message: report.message, nonRetryable: true, details: [report] });
}

export function rejection(type: string, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

export function emptySlicesTally(): SlicesTally {
  return { counts: { ...emptyStatusCounts(), outputs: 0 }, newFailures: 0, bytesIn: 0, bytesOut: 0, attempts: 0 };
}

export function flagProblem(request: FlagRequest): string | undefined {
  if (typeof request.reason !== 'string' || request.reason.trim() === '') return 'a flag needs a reason';
  if (request.reason.length > 2_000) return 'a flag reason is at most 2000 characters';
  if (request.item !== undefined && (typeof request.item !== 'string' || request.item === '')) return 'item must be an item id';
  return undefined;
}

/** Largest JobResult kept in the memo of a cancelled execution (Temporal's memo limit is 2 MB). */
export const MEMO_RESULT_LIMIT = 1_000_000;

/**
 * So Temporal (the Web UI's Failures filter, `ExecutionStatus`) tells the truth: a Failed job fails
 * its execution, the JobResult in the failure's details; a job cancelled through Temporal ends as
 * a cancelled execution, the JobResult in its memo (`faultlineResult`: a cancellation carries no
 * details). A job cancelled by Faultline's own request, and every other status, completes.
 */
export function endAsExecution(result: JobResult, cancelledThroughTemporal: boolean): void {
  if (result.status === 'Failed') {
    const cause = result.stoppedBy ? `${result.stoppedBy.type}: ${result.stoppedBy.message}` : 'every output failed';
    throw ApplicationFailure.create({ type: ErrorTypes.JobFailed, message: `job ${result.jobId} failed (${cause})`, nonRetryable: true, details: [result] });
  }
  if (result.status === 'Cancelled' && cancelledThroughTemporal && JSON.stringify(result).length <= MEMO_RESULT_LIMIT) {
    upsertMemo({ [RESULT_MEMO_KEY]: result });
    throw new CancelledFailure(`job ${result.jobId} cancelled: ${result.cancelReason ?? 'cancellation requested'}`);
  }
}

export function pickLimits(request: LimitsRequest): LimitsRequest {
  return {
    ...(request.concurrency !== undefined ? { concurrency: request.concurrency } : {}),
    ...(request.priority !== undefined ? { priority: request.priority } : {}),
    ...(request.toleratedFailureCount !== undefined ? { toleratedFailureCount: request.toleratedFailureCount } : {}),
    ...(request.toleratedFailurePercent !== undefined ? { toleratedFailurePercent: request.toleratedFailurePercent } : {}),
  };
}

export function roundCarry(round: RoundRun): RoundCarry {
  const selection = round.selection ? { selection: round.selection } : {};
  if (round.inline?.carry) return { ...round.inline.carry, ...selection };
  const sliced = round.sliced ?? { slices: undefined, next: 0, done: emptySlicesTally(), bases: {} };
  return { kind: 'sliced', ...selection, slices: sliced.slices ?? [], next: sliced.next, done: sliced.done, baseFailed: round.baseFailed, bases: sliced.bases };
}

export function historyIsLong(options: ResolvedOptions): boolean {
  const info = workflowInfo();
  return info.continueAsNewSuggested || info.historyLength > options.rotateAfterEvents;
}

/** A cancellation, directly or as the cause of a failed child or activity (a cancelled import arrives as an ActivityFailure). */
export function isCancellation(error: unknown): boolean {
  return error instanceof ChildWorkflowFailure || error instanceof ActivityFailure ? error.cause?.name === 'CancelledFailure' : (error as { name?: string } | null)?.name === 'CancelledFailure';
}

export function sameReport(a: ErrorReport, b: ErrorReport): boolean {
  return a.type === b.type && a.item === b.item && a.at === b.at && a.message === b.message;
}

export function describe(result: JobResult): string {
  const c = result.counts;
  const lines = [
    `${result.status} (round ${result.round}): ${c.items} item(s), ${c.outputs} output(s) — ${c.Available} Available, ${c.Missing} Missing, ${c.Failed} Failed, ${c.Unsolved} Unsolved, ${c.Skipped} Skipped, ${c.Cancelled} Cancelled.`,
  ];
  if (result.stoppedBy) lines.push(`Stopped by ${result.stoppedBy.type}: ${result.stoppedBy.message}`);
  for (const [type, ids] of Object.entries(result.failuresByReason)) {
    lines.push(`- ${type}: ${result.failureCounts[type] ?? ids.length} item(s), e.g. ${ids.slice(0, 5).join(', ')}`);
  }
  if (result.cancelReason) lines.push(`Cancelled: ${result.cancelReason}`);
  return lines.join('\n');
}

/** Everything a job run knows; `toCarry` is what survives continue-as-new. */
export class JobState {
  readonly jobId = workflowInfo().workflowId;
  phase: JobPhase = 'validating';
  round: number;
  readonly startedAt: number;
  pending: JobRequest[];
  readonly rejected: RejectedRequest[];
  nextRequestId: number;
  /** Requests with ids below this were seen by the running round (wakes the runner only for new ones). */
  drainedThrough = 0;
  readonly outcomes = new Map<number, Outcome>();
  stop?: StopReason;
  cancelReason?: string;
  result?: JobResult;
  settled = false;
  rotating = false;
  windowEndsAt?: number;
  prepared?: Prepared;
  runner?: ItemRunner;
  current?: RoundRun;
  sliceScope?: CancellationScope;
  readonly liveFailures = new Map<number, number>();
  finishedFailures = 0;
  slicesInFlight = 0;
  /** `faultline-long-step-progress-memo` decided before the spec check: the job keeps its progress in its memo in every long step and while its slices run. */
  progressMemoDecidedEarly = false;
  /** `faultline-release-in-local-batch` decided before the spec check (an inline job). */
  releaseInBatch = false;
  /** What the job's only local batch released at its end, and in which round (`RunBatchInput.releaseIfAllFinished`). */
  releasedByBatch?: { round: number; released: StorageReleased };
  /** The history length of the workflow task in which an update handler last finished (`answersLeaveFirst`). */
  updateAnsweredInTask?: number;
  /** Reports about the job's own machinery (storage) that belong in `errors` beside the items'. */
  extraErrors: ErrorReport[] = [];
  /** Held by an operator (`pause`): no new batch or slice starts until `resume`. */
  paused: boolean;
  readonly limitsChanged: LimitsChange[];
  readonly flags: Flag[];
  cancelledThroughTemporal = false;
  /** Entries of operator lists left out to keep payloads within budget. */
  omitted?: OmittedCounts;
  /** Engine v3 behaviour (carried allowance, budgets, prompt thresholds); false only when replaying a run recorded before it. */
  readonly v3 = patched(PATCHES.engineV3);
  /** Running slice children, to pass pause/resume and new limits on. */
  readonly sliceHandles = new Map<number, ChildWorkflowHandle<typeof sliceWorkflow>>();
  /** The spec as this run knows it: an imported `itemsFrom` becomes the stored items file it was read into. */
  source: SpecSource;
  /** The pipeline as a worker described it when the job started (plain data). */
  plan?: PipelinePlan;
  /** Large jobs get larger batches and slices; decided in the job's first run and carried, since slices of later rounds must match. */
  readonly largeJobSizing: LargeJobSizing;
  /** When this round began to run (the job's start for round 1, until it is prepared). */
  roundStartedAt: number;
  /** Run time of the rounds before this one (not the retry windows between them). */
  runMsBefore: number;

  constructor(readonly input: JobInput) {
    this.source = input.job;
    const carry = input.carry;
    this.round = carry?.round ?? 1;
    this.startedAt = carry?.startedAt ?? Date.now();
    this.pending = carry?.pending ?? [];
    this.rejected = carry?.rejected ?? [];
    this.nextRequestId = carry?.nextRequestId ?? 1;
    if (carry?.stop) this.stop = carry.stop;
    if (carry?.result) {
      this.result = carry.result;
      this.settled = !carry.running;
    }
    if (carry?.windowEndsAt !== undefined) this.windowEndsAt = carry.windowEndsAt;
    this.paused = carry?.paused ?? false;
    this.limitsChanged = carry?.limitsChanged ?? [];
    this.flags = carry?.flags ?? [];
    if (carry?.omitted) this.omitted = carry.omitted;
    if (carry?.plan) this.plan = carry.plan;
    this.roundStartedAt = carry?.roundStartedAt ?? this.startedAt;
    this.runMsBefore = carry?.runMsBefore ?? 0;
    this.largeJobSizing = carry ? carriedSizing(carry.largeJobSizing) : patched(PATCHES.largeJobSizingV2) ? 'v2' : patched(PATCHES.largeJobSizing) ? 'v1' : 'none';
  }

  /** A new round starts running now: the time since the last settled round was waiting. */
  startRound(): void {
    this.runMsBefore = this.result?.metrics.runMs ?? this.runMsBefore;
    this.roundStartedAt = Date.now();
  }

  /** The next run's input: continue-as-new is a function of this state alone. */
  nextRunInput(round: RoundRun | undefined): JobInput {
    return { job: this.source, ...(this.input.retryOf ? { retryOf: this.input.retryOf } : {}), carry: this.toCarry(round) };
  }

  /** What survives continue-as-new: requests, the settled result, operator changes, and where the running round stands (its allowance and metrics included). */
  toCarry(round: RoundRun | undefined): JobCarry {
    return {
      round: this.round,
      startedAt: this.startedAt,
      pending: this.pending,
      rejected: this.rejected.slice(-BUDGET.listEntries),
      ...(this.stop ? { stop: this.stop } : {}),
      ...(round ? { running: roundCarry(round) } : {}),
      ...(this.result ? { result: this.result } : {}),
      ...(this.windowEndsAt !== undefined ? { windowEndsAt: this.windowEndsAt } : {}),
      nextRequestId: this.nextRequestId,
      ...(this.paused ? { paused: true } : {}),
      ...(this.limitsChanged.length > 0 ? { limitsChanged: this.limitsChanged } : {}),
      ...(this.flags.length > 0 ? { flags: this.flags } : {}),
      ...(this.omitted ? { omitted: this.omitted } : {}),
      ...(this.plan ? { plan: this.plan } : {}),
      roundStartedAt: this.roundStartedAt,
      ...(this.runMsBefore > 0 ? { runMsBefore: this.runMsBefore } : {}),
      ...(this.largeJobSizing !== 'none' ? { largeJobSizing: SIZING_CARRIED[this.largeJobSizing] } : {}),
    };
  }

  /**
   * Operator lists (flags, limit changes) keep their newest `BUDGET.listEntries` entries in the
   * job's state and result; how many older ones were left out is counted in `omitted`.
   */
  keepNewest(list: 'flags' | 'limitsChanged'): void {
    const entries: { at: string }[] = this[list];
    const extra = entries.length - BUDGET.listEntries;
    if (extra <= 0 || !this.v3) return;
    const dropped = entries.splice(0, extra + (list === 'limitsChanged' ? 1 : 0));
    // Limit changes fold into one entry: later runs recompute the options from them.
    if (list === 'limitsChanged') this.limitsChanged.unshift(Object.assign({}, ...dropped) as LimitsChange);
    this.omitted = { ...this.omitted, [list]: (this.omitted?.[list] ?? 0) + extra };
  }

  stopWith(reason: StopReason): void {
    if (this.stop) return;
    this.stop = reason;
    this.runner?.requestStop(reason);
    // Running slices are told why, and stop on it; they are cancelled once told (Temporal may deliver a
    // cancel sent after a signal before it), so their unfinished items' records give the job's reason
    // (before: "job cancelled: the job stopped this slice" whatever stopped the job).
    const scope = this.sliceScope;
    if (this.sliceHandles.size > 0 && patched(PATCHES.sliceStopReason)) {
      const told = [...this.sliceHandles].map(([index, handle]) =>
        handle.signal(sliceControlSignal, { stop: reason }).catch((error: unknown) => log.warn('could not tell a slice why the job stopped', { index, error: String(error) })),
      );
      void Promise.all(told).then(() => scope?.cancel());
      return;
    }
    scope?.cancel();
  }
}

/** How a sizing travels in the carried state: `true` is v1 (carried as a boolean before v2 existed). */
const SIZING_CARRIED = { v1: true, v2: 'v2' } as const;

function carriedSizing(carried: boolean | 'v2' | undefined): LargeJobSizing {
  if (carried === SIZING_CARRIED.v2) return 'v2';
  return carried === SIZING_CARRIED.v1 ? 'v1' : 'none';
}

/**
 * An update answered in a workflow task goes out with that task's completion. Closing (or
 * continuing as new) in the same task lets a signal that arrives meanwhile fail the task
 * (UnhandledCommand); the SDK's retry of that task then sends the update's completion in a form
 * the server refuses, every time (BadUpdateWorkflowExecutionMessage: "ProtocolMessageCommand
 * referenced absent message ID …/request/complete"), and the job is stuck (interleavings fuzz,
 * 2026-12-04: about 1 case in 20 of 5 signals and 2 updates at a job's start). So the answers
 * leave first, in a task of their own (a 1 ms timer), when there are any.
 */
export async function answersLeaveFirst(s: JobState): Promise<void> {
  while (s.updateAnsweredInTask === workflowInfo().historyLength && patched(PATCHES.answersBeforeClose)) {
    await sleep(1);
    await condition(allHandlersFinished);
  }
}
