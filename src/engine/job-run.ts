/**
 * The job's state and main loop. Handlers only validate and queue requests (retry, cancel) and
 * wait for their own outcome; the main loop is the single writer of job state and handles the
 * queue at defined points: before each dispatch, while slices run, when a round settles, before
 * continue-as-new and before closing. Every interleaving of messages therefore has one outcome,
 * and a request is always carried out, carried over, or rejected with a declared type.
 */
import {
  ApplicationFailure,
  CancellationScope,
  CancelledFailure,
  ChildWorkflowFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  type ChildWorkflowHandle,
  patched,
  executeChild,
  log,
  proxyActivities,
  setCurrentDetails,
  startChild,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { createNotifyActivities } from '../activities/notify';
import type { createEngineActivities } from '../activities/engine';
import { builtInPipelines } from '../pipelines';
import {
  ERRORS_LIMIT,
  type CancelResponse,
  type EffectiveLimits,
  type ErrorReport,
  type Flag,
  type FlagRequest,
  ErrorTypes,
  INLINE_OUTPUT_LIMIT,
  type ItemsSource,
  type JobCarry,
  type JobInput,
  type JobPhase,
  type JobProgress,
  type JobRequest,
  type JobResult,
  type LimitsChange,
  type LimitsRequest,
  MAX_PARALLEL_SLICES,
  PATCHES,
  type Notification,
  type OutputRecord,
  type PauseResponse,
  type PipelineDefinition,
  RESULT_MEMO_KEY,
  RESULT_SCHEMA_VERSION,
  type RejectedRequest,
  type RequestOrigin,
  type ResolvedOptions,
  type RetryRequest,
  type RetryResponse,
  type RoundCarry,
  SearchKeys,
  type SliceControl,
  type SliceFailuresReport,
  type ItemFailuresReport,
  type SliceInput,
  type SliceMode,
  type SliceSummary,
  type SpecSource,
  type SlicesTally,
  type SpecHead,
  type StopReason,
  type Tally,
  WORKFLOW_TYPES,
  allowedFailures,
  archiveWorkflowId,
  deriveJobStatus,
  emptyStatusCounts,
  emptyTally,
  isSuccess,
  itemsToRetry,
  limitsProblems,
  makeReport,
  normalizeSpec,
  outputsForItem,
  resolveJobOptions,
  sliceControlSignal,
  sliceWorkflowId,
  archiveEntry,
  tallyRecords,
  toErrorReport,
  unknownTypeMessage,
  validateJobSpec,
  webhookDisplay,
  withLimits,
  BUDGET,
  serializedSize,
} from '../shared';
import type { ItemRunner } from './runner';
import { thresholdReport, unfinishedReason } from './runner';
import { runSlice, storageActivities as engine, writeParts } from './slice';
import type { archiveWorkflow } from '../workflows/archive';
import type { sliceWorkflow } from '../workflows/slice';

/** Reading an `itemsFrom` source may take long for millions of items; it heartbeats per chunk. */
const importer = proxyActivities<Pick<ReturnType<typeof createEngineActivities>, 'importItems'>>({
  startToCloseTimeout: '1h',
  heartbeatTimeout: '2m',
  retry: { maximumAttempts: 5, initialInterval: '2s', maximumInterval: '1m' },
});

const notify = proxyActivities<ReturnType<typeof createNotifyActivities>>({
  startToCloseTimeout: '2m',
  heartbeatTimeout: '30s',
  retry: { maximumAttempts: 1 },
});

/** Ids listed in a retry response (the count is always exact). */
const QUEUED_IDS_LISTED = 1_000;

interface Prepared {
  head: SpecHead;
  pipeline: PipelineDefinition;
  options: ResolvedOptions;
  itemCount: number;
  source: ItemsSource;
  /** Small inline jobs run their only slice inside this workflow. */
  inline: boolean;
  sliceSize: number;
  sliceCount: number;
  allowed: number | undefined;
}

type Outcome = { ok: RetryResponse | CancelResponse } | { error: { type: string; message: string } };

/** What a retry round runs: the inline slice's items, or some slices of a large job. */
type RetryPlan = { kind: 'inline'; ids: string[] } | { kind: 'sliced'; slices: { index: number; base: string; count: number }[]; count: number; ids: string[] };

interface RoundRun {
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

function rejection(type: string, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

function emptySlicesTally(): SlicesTally {
  return { counts: { ...emptyStatusCounts(), outputs: 0 }, newFailures: 0, bytesIn: 0, bytesOut: 0, attempts: 0 };
}

export class JobRun {
  readonly jobId = workflowInfo().workflowId;
  phase: JobPhase = 'validating';
  round: number;
  private readonly startedAt: number;
  private pending: JobRequest[];
  private readonly rejected: RejectedRequest[];
  private nextRequestId: number;
  /** Requests with ids below this were seen by the running round (wakes the runner only for new ones). */
  private drainedThrough = 0;
  private readonly outcomes = new Map<number, Outcome>();
  private stop?: StopReason;
  private cancelReason?: string;
  private result?: JobResult;
  private settled = false;
  private rotating = false;
  private windowEndsAt?: number;
  private prepared?: Prepared;
  private runner?: ItemRunner;
  private current?: RoundRun;
  private sliceScope?: CancellationScope;
  private readonly liveFailures = new Map<number, number>();
  private finishedFailures = 0;
  private slicesInFlight = 0;
  /** Reports about the job's own machinery (storage) that belong in `errors` beside the items'. */
  private extraErrors: ErrorReport[] = [];
  /** Held by an operator (`pause`): no new batch or slice starts until `resume`. */
  private paused: boolean;
  private readonly limitsChanged: LimitsChange[];
  private readonly flags: Flag[];
  private cancelledThroughTemporal = false;
  /** Engine v3 behaviour (carried allowance, budgets, prompt thresholds); false only when replaying a run recorded before it. */
  private readonly v3 = patched(PATCHES.engineV3);
  /** Running slice children, to pass pause/resume and new limits on. */
  private readonly sliceHandles = new Map<number, ChildWorkflowHandle<typeof sliceWorkflow>>();

  /** The spec as this run knows it: an imported `itemsFrom` becomes the stored items file it was read into. */
  private source: SpecSource;

  constructor(private readonly input: JobInput) {
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
  }

  // ---- handler side: read state, validate, queue, wait for the outcome ----

  progress(): JobProgress {
    const prepared = this.prepared;
    const sliced = this.current?.sliced;
    let counts = { ...emptyStatusCounts(), outputs: 0 };
    if (this.settled && this.result) counts = { ...this.result.counts };
    else if (this.runner && this.round === 1) counts = this.runner.countsSoFar();
    else if (sliced && this.round === 1) counts = { ...sliced.done.counts };
    else if (this.result) counts = { ...this.result.counts };
    const { items: _items, ...statusCounts } = { items: 0, ...counts };
    const totalSlices = sliced ? (sliced.slices?.length ?? prepared?.sliceCount ?? 0) : 0;
    return {
      jobId: this.jobId,
      pipeline: prepared?.head.pipeline ?? (this.input.job.kind === 'inline' ? this.input.job.spec.pipeline : this.input.job.head.pipeline),
      phase: this.paused && this.phase === 'running' ? 'paused' : this.phase,
      settled: this.settled,
      round: this.round,
      counts: { items: prepared?.itemCount ?? 0, ...statusCounts },
      inFlight: this.runner?.busy ?? this.slicesInFlight,
      backoff: this.runner?.backoffEntries() ?? [],
      shards: { done: sliced ? Math.max(0, sliced.next - this.slicesInFlight) : 0, total: totalSlices },
      ...(this.windowEndsAt !== undefined && this.phase === 'retry-window' ? { retryWindowEndsAt: new Date(this.windowEndsAt).toISOString() } : {}),
      pendingRequests: this.pending.length,
      rejectedRequests: this.rejected.slice(-100),
      paused: this.paused,
      limits: this.effectiveLimits(),
    };
  }

  /** Update validator: rejects what can be judged now, with declared types. */
  validateRetry(request: RetryRequest): void {
    const closing = this.closingReason();
    if (closing) throw rejection(closing.type, closing.reason);
    const problem = this.retryProblem(request);
    if (problem) throw rejection(problem.type, problem.reason);
  }

  validateCancel(): void {
    const closing = this.closingReason();
    if (closing) throw rejection(closing.type, closing.reason);
  }

  /** Validator of pause, resume and set: only a closed job (or invalid limits) refuses them. */
  validateControl(request?: LimitsRequest): void {
    const refused = this.controlRejection(request);
    if (refused) throw rejection(refused.type, refused.reason);
  }

  validateFlag(request: FlagRequest): void {
    const refused = this.flagRejection(request);
    if (refused) throw rejection(refused.type, refused.reason);
  }

  /** Why a pause, resume or set cannot be honoured now: the update's validator and the signal alike. */
  private controlRejection(request?: LimitsRequest): { type: string; reason: string } | undefined {
    if (this.phase === 'closed') return { type: ErrorTypes.JobClosed, reason: 'the job is closed' };
    const problems = request ? limitsProblems(request) : [];
    return problems.length > 0 ? { type: ErrorTypes.InvalidRequest, reason: problems.join('; ') } : undefined;
  }

  private flagRejection(request: FlagRequest): { type: string; reason: string } | undefined {
    const problem = flagProblem(request);
    if (problem) return { type: ErrorTypes.InvalidRequest, reason: problem };
    return this.phase === 'closed' ? { type: ErrorTypes.JobClosed, reason: 'the job is closed; the client records flags on closed jobs itself' } : undefined;
  }

  /** Marks the job (or one item's outputs) for investigation: `FaultlineFlagged` and `result.flags`. */
  flag(request: FlagRequest, origin: RequestOrigin): { flags: number } {
    const refused = this.flagRejection(request);
    if (refused) {
      this.reject({ kind: 'flag', origin, ...refused });
      return { flags: this.flags.length };
    }
    this.flags.push({ ...(request.item ? { item: request.item } : {}), reason: request.reason, at: new Date().toISOString() });
    upsertSearchAttributes([{ key: SearchKeys.flagged, value: true }]);
    if (this.result) this.result = { ...this.result, flags: [...this.flags] };
    log.info('job flagged', { jobId: this.jobId, item: request.item, reason: request.reason, origin });
    return { flags: this.flags.length };
  }

  /** Pause (true) or resume: acts at once on the running round and its slices. */
  async hold(paused: boolean, origin: RequestOrigin): Promise<PauseResponse> {
    const refused = this.controlRejection();
    if (refused) {
      this.reject({ kind: paused ? 'pause' : 'resume', origin, ...refused });
      return { paused: this.paused, phase: this.phase };
    }
    if (this.paused !== paused) {
      this.paused = paused;
      this.runner?.hold(paused);
      if (this.phase === 'running') upsertSearchAttributes([{ key: SearchKeys.status, value: paused ? 'Paused' : 'Running' }]);
      log.info(paused ? 'job paused' : 'job resumed', { jobId: this.jobId, origin });
      await this.controlSlices(() => ({ paused }));
    }
    return { paused: this.paused, phase: this.progress().phase };
  }

  /** New limits for the work not yet started; a threshold already exceeded stops the job now. */
  async setLimits(request: LimitsRequest, origin: RequestOrigin): Promise<EffectiveLimits> {
    const refused = this.controlRejection(request);
    if (refused) {
      this.reject({ kind: 'set', origin, ...refused, limits: request });
      return this.effectiveLimits();
    }
    const change: LimitsChange = { ...pickLimits(request), origin, at: new Date().toISOString() };
    this.limitsChanged.push(change);
    log.info('job limits changed', { jobId: this.jobId, ...change });
    const prepared = this.prepared;
    if (!prepared) return this.effectiveLimits();
    prepared.options = withLimits(prepared.options, [change]);
    prepared.allowed = allowedFailures(prepared.options, prepared.itemCount);
    const round = this.current;
    if (this.phase === 'running' && round) {
      const allowed = prepared.allowed;
      this.runner?.setLimits({ concurrency: prepared.options.concurrency, allowedFailures: allowed === undefined ? null : Math.max(0, allowed - round.baseFailed) });
      this.checkThreshold(prepared, round);
      await this.controlSlices((index) => ({
        concurrency: prepared.options.concurrency,
        ...(allowed !== undefined ? { allowedFailures: Math.max(0, allowed - (this.failedSoFar(round) - (this.liveFailures.get(index) ?? 0))) } : {}),
      }));
    }
    return this.effectiveLimits();
  }

  /** What a slice should run with now: pause, concurrency, and its share of the allowance. */
  private sliceControlFor(index: number, round: RoundRun): Required<Pick<SliceControl, 'paused' | 'concurrency'>> & SliceControl {
    const prepared = this.prepared;
    const allowed = prepared?.allowed;
    return {
      paused: this.paused,
      concurrency: prepared?.options.concurrency ?? 1,
      ...(allowed !== undefined ? { allowedFailures: Math.max(0, allowed - (this.failedSoFar(round) - (this.liveFailures.get(index) ?? 0))) } : {}),
    };
  }

  private effectiveLimits(): EffectiveLimits {
    const prepared = this.prepared;
    return { concurrency: prepared?.options.concurrency ?? 0, ...(prepared?.allowed !== undefined ? { allowedFailures: prepared.allowed } : {}) };
  }

  private async controlSlices(control: (index: number) => SliceControl): Promise<void> {
    await Promise.all(
      [...this.sliceHandles.entries()].map(([index, handle]) =>
        handle.signal(sliceControlSignal, control(index)).catch((error: unknown) => log.warn('could not reach a slice', { index, error: String(error) })),
      ),
    );
  }

  async retry(selection: RetryRequest, origin: RequestOrigin): Promise<RetryResponse | undefined> {
    if (origin === 'signal') {
      const closing = this.closingReason('signal') ?? this.retryProblem(selection);
      if (closing) {
        this.reject({ kind: 'retry', origin, selection, ...closing });
        return undefined;
      }
    }
    const id = this.enqueue({ kind: 'retry', origin, selection });
    return origin === 'update' ? ((await this.outcome(id)) as RetryResponse) : undefined;
  }

  async cancel(reason: string, origin: RequestOrigin): Promise<CancelResponse | undefined> {
    if (origin === 'signal') {
      const closing = this.closingReason('signal');
      if (closing) {
        this.reject({ kind: 'cancel', origin, ...closing });
        return undefined;
      }
    }
    const id = this.enqueue({ kind: 'cancel', origin, reason });
    return origin === 'update' ? ((await this.outcome(id)) as CancelResponse) : undefined;
  }

  async awaitResult(wanted?: number): Promise<JobResult> {
    const target = wanted ?? this.round;
    // Shielded: a Temporal cancellation of the job must not fail a caller waiting for its result.
    await CancellationScope.nonCancellable(() => condition(() => (this.settled && this.result !== undefined && this.result.round >= target) || this.phase === 'closed' || this.rotating));
    if (this.result && (this.phase === 'closed' || (this.settled && this.result.round >= target))) return this.result;
    throw rejection(ErrorTypes.JobRotating, 'the job continued as new; ask again');
  }

  settledResult(): JobResult | null {
    return this.settled && this.result ? this.result : null;
  }

  /** An inline round's batch told of items that failed for good before it ended. */
  onItemFailures(report: ItemFailuresReport): void {
    this.runner?.noteEarlyFailures(report.items);
  }

  onSliceFailures(report: SliceFailuresReport): void {
    if (report.round !== this.round || !this.current?.sliced) return;
    this.liveFailures.set(report.sliceIndex, Math.max(this.liveFailures.get(report.sliceIndex) ?? 0, report.newFailures));
  }

  private closingReason(origin: RequestOrigin = 'update'): { type: string; reason: string } | undefined {
    if (this.phase === 'closed') return { type: ErrorTypes.JobClosed, reason: 'the job is closed; start a follow-up job instead' };
    // Admitted now, it would wait for an answer continue-as-new never gives: the caller asks the next run.
    if (this.rotating && this.v3 && origin === 'update') return { type: ErrorTypes.JobRotating, reason: 'the job is continuing as new; ask again' };
    if (this.phase === 'validating') return undefined;
    if (this.pending.some((request) => request.kind === 'cancel')) return { type: ErrorTypes.JobCancelled, reason: 'the job is being cancelled' };
    return undefined;
  }

  private retryProblem(request: RetryRequest): { type: string; reason: string } | undefined {
    for (const [id, source] of Object.entries(request.sources ?? {})) {
      if (!(request.items ?? []).includes(id)) return { type: ErrorTypes.InvalidRequest, reason: `a corrected source is given for "${id}", which is not selected with --item` };
      if (!/^(file|https?):\/\//.test(source)) return { type: ErrorTypes.InvalidRequest, reason: `corrected source for "${id}" must be a file:// or http(s):// URI` };
    }
    // Judged on the settled result; a retry sent while a round runs waits for it to settle.
    if (this.settled && this.result) {
      if (this.result.retryable.items === 0) return { type: ErrorTypes.NothingToRetry, reason: 'no failed item to retry' };
      const types = request.types ?? [];
      if (types.length > 0 && !types.some((type) => (this.result?.failureCounts[type] ?? 0) > 0)) {
        return { type: ErrorTypes.UnknownErrorType, reason: unknownTypeMessage(types, this.result.failureCounts) };
      }
    }
    return undefined;
  }

  private enqueue(request: { kind: 'retry'; origin: RequestOrigin; selection: RetryRequest } | { kind: 'cancel'; origin: RequestOrigin; reason: string }): number {
    const id = this.nextRequestId++;
    this.pending.push({ ...request, id, at: new Date().toISOString() } as JobRequest);
    return id;
  }

  private async outcome(id: number): Promise<RetryResponse | CancelResponse> {
    await CancellationScope.nonCancellable(() => condition(() => this.outcomes.has(id)));
    const outcome = this.outcomes.get(id);
    this.outcomes.delete(id);
    if (!outcome) throw rejection(ErrorTypes.InternalError, 'request lost');
    if ('error' in outcome) throw rejection(outcome.error.type, outcome.error.message);
    return outcome.ok;
  }

  private reject(entry: Omit<RejectedRequest, 'at'>, requestId?: number): void {
    const at = new Date().toISOString();
    if (requestId !== undefined && entry.origin === 'update') this.outcomes.set(requestId, { error: { type: entry.type, message: entry.reason } });
    else this.rejected.push({ ...entry, at });
  }

  private answer(request: JobRequest, ok: RetryResponse | CancelResponse): void {
    if (request.origin === 'update') this.outcomes.set(request.id, { ok });
  }

  // ---- main loop (the single writer) ----

  async run(): Promise<JobResult> {
    const prepared = await this.prepare();
    upsertSearchAttributes([
      { key: SearchKeys.pipeline, value: prepared.head.pipeline },
      { key: SearchKeys.status, value: this.paused ? 'Paused' : 'Running' },
      { key: SearchKeys.hasErrors, value: this.result ? this.result.counts.Failed > 0 : false },
      { key: SearchKeys.failedCount, value: this.result?.counts.Failed ?? 0 },
    ]);
    CancellationScope.current().cancelRequested.catch(() => {
      this.cancelledThroughTemporal = true;
      this.enqueue({ kind: 'cancel', origin: 'signal', reason: 'cancellation requested through Temporal' });
    });
    return CancellationScope.nonCancellable(async () => {
      let round: RoundRun | undefined = this.resumeRound();
      if (!round && !this.result) round = { baseFailed: 0 };
      for (;;) {
        if (round) {
          const ran = await this.runRound(prepared, round);
          if (ran === 'rotate') return this.continueAsNew(round);
          await this.settle(prepared, round, ran);
        }
        const next = await this.afterSettle(prepared);
        if (next === 'close') break;
        if (next === 'rotate') return this.continueAsNew(undefined);
        round = next;
      }
      return this.close();
    });
  }

  private async prepare(): Promise<Prepared> {
    try {
      const source = this.source;
      let head: SpecHead;
      let pipeline: PipelineDefinition;
      let items: ItemsSource;
      let itemCount: number;
      if (source.kind === 'inline') {
        const validation = validateJobSpec(source.spec, builtInPipelines);
        if (!validation.ok) throw invalidSpec(validation.issues);
        const { items: all, ...rest } = normalizeSpec(validation.spec);
        head = rest;
        pipeline = validation.pipeline;
        items = { kind: 'inline', items: all };
        itemCount = all.length;
      } else {
        const headCheck = validateJobSpec({ ...source.head, items: [] }, builtInPipelines);
        if (!headCheck.ok) throw invalidSpec(headCheck.issues);
        let stored: Extract<SpecSource, { kind: 'stored' }>;
        if (source.kind === 'remote') {
          // A worker reads the source once into job storage (validating it); from then on the job is a stored one.
          const imported = await importer.importItems({ jobId: this.jobId, from: source.from, head: source.head });
          if (!imported.ok) throw invalidSpec(imported.issues);
          stored = { kind: 'stored', ref: imported.ref, head: source.head, itemCount: imported.itemCount };
          this.source = stored;
        } else {
          stored = source;
          // Re-validated once; a continued run trusts its first run's check.
          if (!this.input.carry) {
            const full = await engine.inspectStoredSpec(source.ref);
            if (!full.ok) throw invalidSpec(full.issues);
          }
        }
        head = stored.head;
        pipeline = headCheck.pipeline;
        itemCount = stored.itemCount;
        items = { kind: 'stored', ref: stored.ref, from: 0, to: itemCount };
      }
      const options = resolveJobOptions(head, itemCount);
      const outputs = items.kind === 'inline' ? items.items.reduce((sum, item) => sum + outputsForItem(head, item, pipeline).length, 0) : Infinity;
      // A job whose records outgrew a payload keeps them in job storage as its one slice from then on.
      const recordsStored = this.v3 && this.result?.manifest !== undefined;
      const inline = items.kind === 'inline' && itemCount <= options.shardSize && outputs <= INLINE_OUTPUT_LIMIT && !recordsStored;
      const sliceSize = inline ? Math.max(1, itemCount) : options.shardSize;
      const limited = withLimits(options, this.limitsChanged);
      this.prepared = {
        head,
        pipeline,
        options: limited,
        itemCount,
        source: items,
        inline,
        sliceSize,
        sliceCount: inline ? 1 : Math.ceil(itemCount / sliceSize),
        allowed: allowedFailures(limited, itemCount),
      };
      this.phase = 'running';
      return this.prepared;
    } catch (error) {
      this.phase = 'closed';
      upsertSearchAttributes([
        { key: SearchKeys.status, value: 'Failed' },
        { key: SearchKeys.hasErrors, value: true },
      ]);
      throw error;
    }
  }

  private resumeRound(): RoundRun | undefined {
    const running = this.input.carry?.running;
    if (!running) return undefined;
    const base = { ...(running.selection ? { selection: running.selection } : {}) };
    if (running.kind === 'inline') return { ...base, baseFailed: this.v3 ? (running.baseFailed ?? 0) : 0, inline: { carry: running } };
    return { ...base, baseFailed: running.baseFailed, sliced: { slices: running.slices.length > 0 ? running.slices : undefined, next: running.next, done: running.done, bases: running.bases } };
  }

  /**
   * Handles queued cancels now. A retry whose selected items are all still in this (inline) round
   * wakes the ones waiting in backoff and is answered at once; any other retry waits for the round
   * to settle, because only then is it known which items failed.
   */
  private drainWhileRunning(): void {
    this.drainedThrough = this.nextRequestId;
    this.wakeBackoffRetries();
    const cancels = this.pending.filter((request) => request.kind === 'cancel');
    if (cancels.length === 0) return;
    this.pending = this.pending.filter((request) => request.kind !== 'cancel');
    for (const request of cancels) {
      if (request.kind !== 'cancel') continue;
      this.stopWith({ kind: 'cancelled', reason: request.reason });
      this.answer(request, { accepted: true, effect: 'stopped' });
    }
  }

  private wakeBackoffRetries(): void {
    const runner = this.runner;
    if (!runner || this.stop || this.pending.some((request) => request.kind === 'cancel')) return;
    this.pending = this.pending.filter((request) => {
      if (request.kind !== 'retry' || request.selection.sources || !request.selection.items?.length) return true;
      const states = request.selection.items.map((id) => runner.get(id));
      if (!states.every((state) => state !== undefined && state.phase !== 'done')) return true;
      const woken = runner.retryNow(request.selection.items);
      this.answer(request, { queued: woken.slice(0, QUEUED_IDS_LISTED), queuedCount: woken.length, round: this.round });
      return false;
    });
  }

  private stopWith(reason: StopReason): void {
    if (this.stop) return;
    this.stop = reason;
    this.runner?.requestStop(reason);
    this.sliceScope?.cancel();
  }

  private failedSoFar(round: RoundRun): number {
    let live = 0;
    for (const count of this.liveFailures.values()) live += count;
    return round.baseFailed + this.finishedFailures + live;
  }

  private checkThreshold(prepared: Prepared, round: RoundRun): void {
    const failed = this.failedSoFar(round);
    if (prepared.allowed !== undefined && failed > prepared.allowed) this.stopWith({ kind: 'fatal', report: thresholdReport(failed, prepared.allowed) });
  }

  private async runRound(prepared: Prepared, round: RoundRun): Promise<'rotate' | { summaries: SliceSummary[]; fill?: { counts: Tally['counts'] } }> {
    this.phase = 'running';
    this.settled = false;
    this.current = round;
    // The allowance survives continue-as-new: finished slices' failures are carried in the round.
    this.finishedFailures = this.v3 ? (round.sliced?.done.newFailures ?? 0) : 0;
    this.liveFailures.clear();
    setCurrentDetails(`Running round ${this.round}: ${prepared.itemCount} item(s) of pipeline ${prepared.head.pipeline}.`);
    // Only when held, so jobs recorded before pause existed replay unchanged.
    if (this.round > 1 && this.paused) upsertSearchAttributes([{ key: SearchKeys.status, value: 'Paused' }]);
    this.drainWhileRunning();
    if (prepared.inline) {
      const outcome = await this.runInline(prepared, round);
      if (outcome === 'rotate') return 'rotate';
      return { summaries: [outcome] };
    }
    return this.runSlices(prepared, round);
  }

  private async runInline(prepared: Prepared, round: RoundRun): Promise<'rotate' | SliceSummary> {
    const previous = this.result?.outputs;
    const mode: SliceMode = round.selection && previous ? { kind: 'retry', selection: round.selection, base: { kind: 'inline', records: previous } } : { kind: 'first' };
    const carry = round.inline?.carry;
    const input: SliceInput = {
      jobId: this.jobId,
      sliceIndex: 0,
      round: this.round,
      head: prepared.head,
      items: prepared.source,
      batchSize: prepared.options.batchSize,
      concurrency: prepared.options.concurrency,
      ...(prepared.allowed !== undefined ? { allowedFailures: prepared.allowed - round.baseFailed } : {}),
      reportFailures: false,
      mode,
      keep: 'inline',
      ...(carry ? { resume: { snapshot: carry.snapshot, segments: [], newFailures: this.v3 ? (carry.newFailures ?? 0) : 0, bytesIn: 0, bytesOut: 0 } } : {}),
    };
    const outcome = await runSlice(input, prepared.pipeline, this.jobId, {
      runner: { pending: () => this.nextRequestId > this.drainedThrough, drain: () => this.drainWhileRunning() },
      onRunner: (runner) => {
        this.runner = runner;
        if (this.paused) runner.hold(true);
        if (this.stop) runner.requestStop(this.stop);
      },
    });
    if (outcome.kind === 'rotate') {
      round.inline = {
        carry: {
          kind: 'inline',
          ...(round.selection ? { selection: round.selection } : {}),
          snapshot: outcome.carry.snapshot,
          ...(this.v3 ? { newFailures: outcome.carry.newFailures, baseFailed: round.baseFailed } : {}),
        },
      };
      return 'rotate';
    }
    if (outcome.summary.stop?.kind === 'fatal') this.stopWith(outcome.summary.stop);
    return outcome.summary;
  }

  private async runSlices(prepared: Prepared, round: RoundRun): Promise<'rotate' | { summaries: SliceSummary[]; fill?: { counts: Tally['counts'] } }> {
    const state = (round.sliced ??= { slices: undefined, next: 0, done: emptySlicesTally(), bases: {} });
    const total = state.slices?.length ?? prepared.sliceCount;
    const indexAt = (position: number) => state.slices?.[position] ?? position;
    const summaries: SliceSummary[] = [];
    this.sliceScope = new CancellationScope({ cancellable: true });
    const scope = this.sliceScope;
    if (this.stop) scope.cancel();
    let rotate = false;
    let lanesDone = false;
    const runOne = async (index: number): Promise<void> => {
      const from = index * prepared.sliceSize;
      const to = Math.min(prepared.itemCount, from + prepared.sliceSize);
      const items: ItemsSource = prepared.source.kind === 'inline' ? { kind: 'inline', items: prepared.source.items.slice(from, to) } : { kind: 'stored', ref: prepared.source.ref, from, to };
      const base = state.bases[index];
      const input: SliceInput = {
        jobId: this.jobId,
        sliceIndex: index,
        round: this.round,
        head: prepared.head,
        items,
        batchSize: prepared.options.batchSize,
        concurrency: prepared.options.concurrency,
        ...(prepared.allowed !== undefined ? { allowedFailures: Math.max(0, prepared.allowed - this.failedSoFar(round)) } : {}),
        reportFailures: prepared.allowed !== undefined,
        mode: round.selection && base ? { kind: 'retry', selection: round.selection, base: { kind: 'stored', location: base } } : { kind: 'first' },
        keep: 'stored',
        ...(this.paused ? { paused: true } : {}),
      };
      this.slicesInFlight += 1;
      let started = false;
      try {
        const handle = await scope.run(() =>
          startChild<typeof sliceWorkflow>(WORKFLOW_TYPES.slice, {
            workflowId: sliceWorkflowId(this.jobId, index, this.round),
            args: [input],
            staticSummary: `slice ${index} of job ${this.jobId}, round ${this.round}: items ${from}–${to - 1}`,
            cancellationType: 'WAIT_CANCELLATION_COMPLETED',
          }),
        );
        started = true;
        this.sliceHandles.set(index, handle);
        if (this.v3) {
          // A pause, resume or new limits that came while the child was starting. Not reaching it is
          // not a slice failure (it may have finished already); its result below is what counts.
          const now = this.sliceControlFor(index, round);
          const changed = now.paused !== (input.paused ?? false) || now.concurrency !== input.concurrency || (now.allowedFailures !== undefined && now.allowedFailures !== input.allowedFailures);
          if (changed) await handle.signal(sliceControlSignal, now).catch((error: unknown) => log.warn('could not reach a starting slice', { index, error: String(error) }));
        } else if (this.paused !== (input.paused ?? false)) await handle.signal(sliceControlSignal, { paused: this.paused });
        const summary = await scope.run(() => handle.result());
        summaries.push(summary);
        state.done.counts = addCounts(state.done.counts, summary.counts);
        state.done.newFailures += summary.newFailures;
        state.done.bytesIn += summary.bytesIn;
        state.done.bytesOut += summary.bytesOut;
        state.done.attempts += summary.attempts;
        this.finishedFailures += summary.newFailures;
        this.liveFailures.delete(index);
        if (summary.stop?.kind === 'fatal') {
          const local = summary.stop.report.type === ErrorTypes.ToleratedFailureThresholdExceeded;
          this.stopWith(local && prepared.allowed !== undefined ? { kind: 'fatal', report: thresholdReport(this.failedSoFar(round), prepared.allowed) } : summary.stop);
        }
      } catch (error) {
        // Its failures are counted once, by the fill below, not also as live reports.
        if (this.v3) this.liveFailures.delete(index);
        if (this.stop && isCancellation(error)) {
          // Stopped before it started: its items get Cancelled records like slices never reached.
          if (this.v3 && !started && !round.selection) {
            const filled = await this.fill(prepared, { from: index, to: index + 1 }, 'Cancelled', unfinishedReason(this.stop));
            state.done.counts = addCounts(state.done.counts, filled.counts);
          }
          return;
        }
        // The slice workflow itself failed: its items are Failed with the cause chain, and the job stops.
        const report: ErrorReport = { ...toErrorReport(error, { at: new Date().toISOString() }), type: ErrorTypes.ChildJobFailed, class: 'fatal' };
        this.stopWith({ kind: 'fatal', report });
        if (!round.selection) {
          const filled = await this.fill(prepared, { from: index, to: index + 1 }, 'Failed', 'the slice workflow failed', report);
          state.done.counts = addCounts(state.done.counts, filled.counts);
          this.finishedFailures += filled.failedItems;
          if (this.v3) state.done.newFailures += filled.failedItems;
        }
      } finally {
        this.sliceHandles.delete(index);
        this.slicesInFlight -= 1;
      }
    };
    const lanes = Array.from({ length: Math.min(MAX_PARALLEL_SLICES, total) }, async () => {
      while (state.next < total && !this.stop && !rotate) {
        if (this.paused) {
          // Held: no new slice starts until resume (or a stop).
          await condition(() => !this.paused || this.stop !== undefined);
          continue;
        }
        if (historyIsLong(prepared.options)) {
          rotate = true;
          break;
        }
        const index = indexAt(state.next++);
        await runOne(index);
        this.drainWhileRunning();
      }
    });
    // Watches requests and failures signalled by running slices while the lanes run.
    const watcher = (async () => {
      while (!lanesDone) {
        await condition(() => lanesDone || this.pending.some((request) => request.kind === 'cancel') || (prepared.allowed !== undefined && !this.stop && this.failedSoFar(round) > prepared.allowed));
        this.drainWhileRunning();
        this.checkThreshold(prepared, round);
      }
    })();
    await Promise.all(lanes);
    lanesDone = true;
    await watcher;
    this.drainWhileRunning();
    if (rotate && !this.stop) return 'rotate';
    let fill: { counts: Tally['counts'] } | undefined;
    if (this.stop && state.next < total && !round.selection) {
      // Never started: Cancelled records are made from the stored spec by an activity, not through history.
      const filled = await this.fill(prepared, { from: state.next, to: total }, 'Cancelled', unfinishedReason(this.stop));
      fill = { counts: filled.counts };
      state.done.counts = addCounts(state.done.counts, filled.counts);
      state.next = total;
    }
    return { summaries, ...(fill ? { fill } : {}) };
  }

  /**
   * Records for slices that never ran or whose workflow failed, written by an activity. If storage
   * fails too, the counts are still kept (from the spec's shape) and the storage failure is reported.
   */
  private async fill(
    prepared: Prepared,
    slices: { from: number; to: number },
    status: 'Cancelled' | 'Failed',
    reason: string,
    error?: ErrorReport,
  ): Promise<{ counts: Tally['counts']; failedItems: number }> {
    try {
      return await engine.fillSlices({
        jobId: this.jobId,
        round: this.round,
        head: prepared.head,
        spec: prepared.source,
        sliceSize: prepared.sliceSize,
        slices,
        status,
        reason,
        ...(error ? { error } : {}),
      });
    } catch (failure) {
      this.extraErrors.push({ ...toErrorReport(failure, { at: new Date().toISOString(), step: 'records' }), class: 'fatal' });
      const from = slices.from * prepared.sliceSize;
      const to = Math.min(prepared.itemCount, slices.to * prepared.sliceSize);
      const perItem = (item?: Parameters<typeof outputsForItem>[1]) => outputsForItem(prepared.head, item ?? {}, prepared.pipeline).length;
      const outputs = prepared.source.kind === 'inline' ? prepared.source.items.slice(from, to).reduce((sum, item) => sum + perItem(item), 0) : (to - from) * perItem();
      const counts = { ...emptyStatusCounts(), outputs, [status]: outputs };
      return { counts, failedItems: status === 'Failed' ? to - from : 0 };
    }
  }

  /** Builds and publishes the round's result: counts, failures, manifest, archive, webhook. */
  private async settle(prepared: Prepared, round: RoundRun, ran: { summaries: SliceSummary[] }): Promise<void> {
    this.phase = 'settling';
    let tally: Tally;
    let records: OutputRecord[] | undefined;
    let manifest: string | undefined;
    let storageFailure: ErrorReport | undefined;
    const metrics = { bytesIn: 0, bytesOut: 0, attempts: 0 };
    // A sliced round's totals include the slices finished before continue-as-new.
    const sliced = this.v3 ? round.sliced?.done : undefined;
    if (sliced) Object.assign(metrics, { bytesIn: sliced.bytesIn, bytesOut: sliced.bytesOut, attempts: sliced.attempts });
    else
      for (const summary of ran.summaries) {
        metrics.bytesIn += summary.bytesIn;
        metrics.bytesOut += summary.bytesOut;
        metrics.attempts += summary.attempts;
      }
    const inlineSummary = ran.summaries[0];
    if (prepared.inline && inlineSummary?.records.kind === 'inline') {
      records = inlineSummary.records.records;
      tally = tallyRecords(emptyTally(), records);
      if (this.v3 && serializedSize(records) > BUDGET.payload) {
        try {
          manifest = await this.storeInlineRecords(prepared, records);
          records = undefined;
        } catch (error) {
          storageFailure = { ...toErrorReport(error, { at: new Date().toISOString(), step: 'manifest' }), class: 'fatal' };
          this.extraErrors.push(storageFailure);
          records = undefined;
        }
      }
    } else {
      try {
        const assembled = await engine.assembleSlices({ jobId: this.jobId, round: this.round, sliceCount: prepared.sliceCount, inlineLimit: INLINE_OUTPUT_LIMIT });
        tally = assembled.tally;
        manifest = assembled.manifest;
        records = assembled.records;
      } catch (error) {
        storageFailure = { ...toErrorReport(error, { at: new Date().toISOString(), step: 'manifest' }), class: 'fatal' };
        this.extraErrors.push(storageFailure);
        tally = emptyTally();
        tally.counts = round.sliced && !round.selection ? { ...round.sliced.done.counts } : { ...(this.result?.counts ?? tally.counts) };
        this.stopWith({ kind: 'fatal', report: storageFailure });
      }
    }
    if (this.result && round.selection) {
      metrics.bytesIn += this.result.metrics.bytesIn;
      metrics.bytesOut += this.result.metrics.bytesOut;
      metrics.attempts += this.result.metrics.attempts;
    }
    const stoppedBy = this.stop?.kind === 'fatal' ? this.stop.report : undefined;
    const ended = this.stop?.kind === 'cancelled' ? 'cancelled' : stoppedBy ? 'fatal' : undefined;
    const status = deriveJobStatus(tally.counts, ended);
    const own = [...(stoppedBy ? [stoppedBy] : []), ...this.extraErrors.filter((report) => report !== stoppedBy)];
    const itemErrors = tally.errors.filter((report) => !own.some((mine) => sameReport(mine, report)));
    const errors = [...own, ...itemErrors].slice(0, ERRORS_LIMIT);
    this.extraErrors = [];
    const finishedAt = Date.now();
    const itemsDone = tally.counts.outputs > 0 ? prepared.itemCount : 0;
    let result: JobResult = {
      schemaVersion: RESULT_SCHEMA_VERSION,
      jobId: this.jobId,
      pipeline: prepared.head.pipeline,
      success: isSuccess(status),
      status,
      round: this.round,
      counts: { items: prepared.itemCount, ...tally.counts },
      ...(records && tally.counts.outputs <= INLINE_OUTPUT_LIMIT ? { outputs: records } : {}),
      ...(manifest ? { manifest } : {}),
      errors,
      ...(tally.errorsTruncated || errors.length < itemErrors.length + own.length ? { errorsTruncated: true } : {}),
      ...(stoppedBy ? { stoppedBy } : {}),
      failureCounts: tally.failureCounts,
      failuresByReason: tally.failuresByReason,
      ...(tally.truncated ? { truncated: true } : {}),
      retryable: { items: tally.failedItems, types: Object.keys(tally.failureCounts) },
      ...(this.stop?.kind === 'cancelled' ? { cancelReason: this.stop.reason } : {}),
      ...(this.input.retryOf ? { retryOf: this.input.retryOf } : {}),
      ...(this.limitsChanged.length > 0 ? { limitsChanged: [...this.limitsChanged] } : {}),
      ...(this.flags.length > 0 ? { flags: [...this.flags] } : {}),
      ...(this.result?.notifications ? { notifications: this.result.notifications } : {}),
      metrics: {
        startedAt: new Date(this.startedAt).toISOString(),
        finishedAt: new Date(finishedAt).toISOString(),
        elapsedMs: finishedAt - this.startedAt,
        ...metrics,
        itemsPerSec: finishedAt > this.startedAt ? Math.round((itemsDone / ((finishedAt - this.startedAt) / 1000)) * 100) / 100 : itemsDone,
      },
    };
    if (prepared.options.archive && prepared.head.destination && !ended) {
      const archive = await this.runArchive(prepared.head.destination, result);
      result = { ...result, archive, ...(archive.error ? { errors: [...result.errors, archive.error] } : {}) };
    }
    this.result = result;
    this.runner = undefined;
    this.publish(result);
    this.settled = true;
    log.info('job settled', { jobId: this.jobId, status, round: this.round });
    const notification = await this.sendWebhook(result, prepared.head);
    if (notification) this.result = { ...this.result, notifications: [...(this.result.notifications ?? []), notification] };
  }

  /**
   * Records too large for a payload become the job's one slice in job storage, and its manifest;
   * from now on the job runs as a sliced one (retry rounds read them there).
   */
  private async storeInlineRecords(prepared: Prepared, records: readonly OutputRecord[]): Promise<string> {
    const parts = await writeParts(this.jobId, `slice-0-r${this.round}-final`, records);
    const written = await engine.writeSliceRecords({ jobId: this.jobId, sliceIndex: 0, round: this.round, parts });
    prepared.inline = false;
    prepared.sliceSize = Math.max(prepared.sliceSize, prepared.itemCount);
    return engine.assembleManifest({ jobId: this.jobId, round: this.round, parts: [written.location] });
  }

  /** The archive child runs in its own scope: a cancel that arrives meanwhile stops it. */
  private async runArchive(destination: string, result: JobResult): Promise<NonNullable<JobResult['archive']>> {
    const scope = new CancellationScope({ cancellable: true });
    let done = false;
    const work = scope.run(() =>
      executeChild<typeof archiveWorkflow>(WORKFLOW_TYPES.archive, {
        workflowId: archiveWorkflowId(this.jobId, this.round),
        args: [{ jobId: this.jobId, round: this.round, destination, ...(result.outputs ? { outputs: result.outputs } : {}), ...(result.manifest ? { manifest: result.manifest } : {}) }],
        staticSummary: `archive of job ${this.jobId} (round ${this.round})`,
        cancellationType: 'WAIT_CANCELLATION_COMPLETED',
      }),
    );
    const watcher = (async () => {
      await condition(() => done || this.pending.some((request) => request.kind === 'cancel'));
      if (!done) scope.cancel();
    })();
    try {
      const summary = await work;
      return archiveEntry(summary);
    } catch (error) {
      // The archive is an extra: its failure or cancellation is reported, the outputs stand.
      return { files: 0, missing: 0, ...(isCancellation(error) ? { skipped: 'cancelled' } : {}), error: toErrorReport(error, { at: new Date().toISOString(), step: 'archive' }) };
    } finally {
      done = true;
      await watcher;
    }
  }

  private async sendWebhook(result: JobResult, head: SpecHead): Promise<Notification | undefined> {
    const webhook = head.options?.webhook;
    if (!webhook) return undefined;
    try {
      return await notify.deliverWebhook({ webhook: { url: webhook.url, secretEncrypted: webhook.secretEncrypted, secretRef: webhook.secretRef }, result });
    } catch (error) {
      const report = toErrorReport(error, { at: new Date().toISOString(), step: 'notify' });
      return { kind: 'webhook', url: webhookDisplay(webhook.url), delivered: false, attempts: 0, error: report, round: result.round, at: report.at };
    }
  }

  /** After a round settled: handle queued requests, keep the retry window, or close. */
  private async afterSettle(prepared: Prepared): Promise<RoundRun | 'close' | 'rotate'> {
    for (;;) {
      const result = this.result;
      if (!result) return 'close';
      const cancels = this.pending.filter((request) => request.kind === 'cancel');
      if (cancels.length > 0) {
        // Every item has settled: a cancel closes the job; queued retries are not run.
        this.pending = this.pending.filter((request) => request.kind !== 'cancel');
        for (const request of cancels) {
          if (request.kind !== 'cancel') continue;
          this.cancelReason ??= request.reason;
          this.answer(request, { accepted: true, effect: 'closed' });
        }
        for (const request of this.pending) this.rejectRequest(request, ErrorTypes.JobCancelled, 'the job was cancelled before this retry could run');
        this.pending = [];
        return 'close';
      }
      const request = this.pending.shift();
      if (request?.kind === 'retry') {
        if (this.stop) {
          this.rejectRequest(request, ErrorTypes.JobClosed, `the job ended (${this.stop.kind === 'fatal' ? this.stop.report.type : 'cancelled'}); start a follow-up job instead`);
          continue;
        }
        const plan = await this.planRetry(prepared, request.selection, result);
        const count = plan.kind === 'inline' ? plan.ids.length : plan.count;
        if (count === 0) {
          this.rejectRequest(request, ErrorTypes.NothingToRetry, 'no failed item matches the selection');
          continue;
        }
        this.round += 1;
        this.windowEndsAt = undefined;
        this.answer(request, { queued: plan.ids.slice(0, QUEUED_IDS_LISTED), queuedCount: count, round: this.round });
        const baseFailed = result.retryable.items - count;
        if (plan.kind === 'inline') return { selection: request.selection, baseFailed };
        const bases: Record<number, string> = {};
        for (const slice of plan.slices) bases[slice.index] = slice.base;
        return { selection: request.selection, baseFailed, sliced: { slices: plan.slices.map((slice) => slice.index), next: 0, done: emptySlicesTally(), bases } };
      }
      const open = result.retryable.items > 0 && !this.stop && prepared.options.retryWindowMs > 0;
      if (!open) return 'close';
      this.windowEndsAt ??= Date.now() + prepared.options.retryWindowMs;
      if (historyIsLong(prepared.options)) return 'rotate';
      this.phase = 'retry-window';
      setCurrentDetails(`${describe(result)}\nOpen for retry until ${new Date(this.windowEndsAt).toISOString()}.`);
      const windowEndsAt = this.windowEndsAt;
      const arrived = await condition(() => this.pending.length > 0 || (this.v3 && historyIsLong(prepared.options)), Math.max(1, windowEndsAt - Date.now()));
      // A request that lands in the same activation as the window's end is still handled.
      if (!arrived && this.pending.length === 0) return 'close';
      if (this.pending.length === 0 && this.v3 && historyIsLong(prepared.options)) return 'rotate';
    }
  }

  private async planRetry(prepared: Prepared, selection: RetryRequest, result: JobResult): Promise<RetryPlan> {
    if (prepared.inline) return { kind: 'inline', ids: itemsToRetry(result.outputs ?? [], selection) };
    return { kind: 'sliced', ...(await engine.planSliceRetry({ jobId: this.jobId, round: this.round, sliceCount: prepared.sliceCount, selection, listLimit: QUEUED_IDS_LISTED })) };
  }

  private rejectRequest(request: JobRequest, type: string, reason: string): void {
    this.reject({ kind: request.kind, origin: request.origin, type, reason, ...(request.kind === 'retry' ? { selection: request.selection } : {}) }, request.id);
  }

  private async close(): Promise<JobResult> {
    this.phase = 'closed';
    // Handlers still waiting get their answer; anything queued from now on is rejected.
    for (;;) {
      for (const request of this.pending) this.rejectRequest(request, ErrorTypes.JobClosed, 'the job closed before this request could run');
      this.pending = [];
      await condition(allHandlersFinished);
      if (this.pending.length === 0) break;
    }
    let result: JobResult = {
      ...(this.result as JobResult),
      ...(this.cancelReason && !this.result?.cancelReason ? { cancelReason: this.cancelReason } : {}),
      ...(this.rejected.length > 0 ? { rejectedRequests: this.rejected.slice(-100) } : {}),
    };
    if (patched(PATCHES.retention)) result = await this.releaseStorage(result);
    this.result = result;
    this.publish(result);
    if (patched(PATCHES.failedExecutions)) endAsExecution(result, this.cancelledThroughTemporal);
    return result;
  }

  /** No retry can come now: working copies go; the result says what the job keeps in storage. */
  private async releaseStorage(result: JobResult): Promise<JobResult> {
    try {
      const { releasedBytes, keptBytes } = await engine.releaseWorkingCopies({ jobId: this.jobId });
      return { ...result, metrics: { ...result.metrics, storageBytes: keptBytes, storageReleasedBytes: releasedBytes } };
    } catch (error) {
      // Storage housekeeping never changes a job's outcome; `faultline gc` can clean up later.
      log.warn('could not release working copies', { jobId: this.jobId, error: String(error) });
      return result;
    }
  }

  private async continueAsNew(round: RoundRun | undefined): Promise<never> {
    this.rotating = true;
    // Updates cannot cross continue-as-new: their callers are told to ask again (the client does so itself).
    for (const request of this.pending) if (request.origin === 'update') this.rejectRequest(request, ErrorTypes.JobRotating, 'the job continued as new; ask again');
    this.pending = this.pending.filter((request) => request.origin === 'signal');
    await condition(allHandlersFinished);
    const carry: JobCarry = {
      round: this.round,
      startedAt: this.startedAt,
      pending: this.pending,
      rejected: this.rejected.slice(-100),
      ...(this.stop ? { stop: this.stop } : {}),
      ...(round ? { running: roundCarry(round) } : {}),
      ...(this.result ? { result: this.result } : {}),
      ...(this.windowEndsAt !== undefined ? { windowEndsAt: this.windowEndsAt } : {}),
      nextRequestId: this.nextRequestId,
      ...(this.paused ? { paused: true } : {}),
      ...(this.limitsChanged.length > 0 ? { limitsChanged: this.limitsChanged } : {}),
      ...(this.flags.length > 0 ? { flags: this.flags } : {}),
    };
    return continueAsNew<(input: JobInput) => Promise<JobResult>>({ job: this.source, ...(this.input.retryOf ? { retryOf: this.input.retryOf } : {}), carry });
  }

  private publish(current: JobResult): void {
    upsertSearchAttributes([
      { key: SearchKeys.status, value: current.status },
      { key: SearchKeys.hasErrors, value: current.counts.Failed > 0 || current.errors.length > 0 },
      { key: SearchKeys.failedCount, value: current.counts.Failed },
    ]);
    setCurrentDetails(describe(current));
  }
}

function flagProblem(request: FlagRequest): string | undefined {
  if (typeof request.reason !== 'string' || request.reason.trim() === '') return 'a flag needs a reason';
  if (request.reason.length > 2_000) return 'a flag reason is at most 2000 characters';
  if (request.item !== undefined && (typeof request.item !== 'string' || request.item === '')) return 'item must be an item id';
  return undefined;
}

/** Largest JobResult kept in the memo of a cancelled execution (Temporal's memo limit is 2 MB). */
const MEMO_RESULT_LIMIT = 1_000_000;

/**
 * So Temporal (the Web UI's Failures filter, `ExecutionStatus`) tells the truth: a Failed job fails
 * its execution, the JobResult in the failure's details; a job cancelled through Temporal ends as
 * a cancelled execution, the JobResult in its memo (`faultlineResult`: a cancellation carries no
 * details). A job cancelled by Faultline's own request, and every other status, completes.
 */
function endAsExecution(result: JobResult, cancelledThroughTemporal: boolean): void {
  if (result.status === 'Failed') {
    const cause = result.stoppedBy ? `${result.stoppedBy.type}: ${result.stoppedBy.message}` : 'every output failed';
    throw ApplicationFailure.create({ type: ErrorTypes.JobFailed, message: `job ${result.jobId} failed (${cause})`, nonRetryable: true, details: [result] });
  }
  if (result.status === 'Cancelled' && cancelledThroughTemporal && JSON.stringify(result).length <= MEMO_RESULT_LIMIT) {
    upsertMemo({ [RESULT_MEMO_KEY]: result });
    throw new CancelledFailure(`job ${result.jobId} cancelled: ${result.cancelReason ?? 'cancellation requested'}`);
  }
}

function pickLimits(request: LimitsRequest): LimitsRequest {
  return {
    ...(request.concurrency !== undefined ? { concurrency: request.concurrency } : {}),
    ...(request.toleratedFailureCount !== undefined ? { toleratedFailureCount: request.toleratedFailureCount } : {}),
    ...(request.toleratedFailurePercent !== undefined ? { toleratedFailurePercent: request.toleratedFailurePercent } : {}),
  };
}

function roundCarry(round: RoundRun): RoundCarry {
  const selection = round.selection ? { selection: round.selection } : {};
  if (round.inline?.carry) return { ...round.inline.carry, ...selection };
  const sliced = round.sliced ?? { slices: undefined, next: 0, done: emptySlicesTally(), bases: {} };
  return { kind: 'sliced', ...selection, slices: sliced.slices ?? [], next: sliced.next, done: sliced.done, baseFailed: round.baseFailed, bases: sliced.bases };
}

function historyIsLong(options: ResolvedOptions): boolean {
  const info = workflowInfo();
  return info.continueAsNewSuggested || info.historyLength > options.rotateAfterEvents;
}

function isCancellation(error: unknown): boolean {
  return error instanceof ChildWorkflowFailure ? error.cause?.name === 'CancelledFailure' : (error as { name?: string } | null)?.name === 'CancelledFailure';
}

function sameReport(a: ErrorReport, b: ErrorReport): boolean {
  return a.type === b.type && a.item === b.item && a.at === b.at && a.message === b.message;
}

function addCounts(into: Tally['counts'], more: Tally['counts']): Tally['counts'] {
  const sum = { ...into };
  for (const key of Object.keys(more) as (keyof Tally['counts'])[]) sum[key] += more[key];
  return sum;
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
