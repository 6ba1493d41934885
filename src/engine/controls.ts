/**
 * Operator controls: pause and resume, live limits and flags, passed on to running slices.
 */
import { condition, log, upsertMemo, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import { patched } from './patches';
import {
  type EffectiveLimits,
  type FlagRequest,
  ErrorTypes,
  JOB_PROGRESS_MEMO_KEY,
  JOB_REJECTIONS_MEMO_KEY,
  type JobProgress,
  type JobProgressMemo,
  type JobRejectionsMemo,
  type LimitsChange,
  type LimitsRequest,
  PATCHES,
  type PauseResponse,
  type RequestOrigin,
  SearchKeys,
  type SliceControl,
  allowedFailures,
  emptyStatusCounts,
  limitsProblems,
  sliceControlSignal,
  withLimits,
} from '../shared';
import { type RoundRun, rejection, flagProblem, pickLimits, type JobState } from './job-state';
import type { RequestDesk } from './requests';
import type { FailureAllowance } from './allowance';

export class OperatorControls {
  constructor(
    readonly s: JobState,
    readonly requests: RequestDesk,
    readonly allowance: FailureAllowance,
  ) {}

  progress(): JobProgress {
    const prepared = this.s.prepared;
    const sliced = this.s.current?.sliced;
    let counts = { ...emptyStatusCounts(), outputs: 0 };
    if (this.s.settled && this.s.result) counts = { ...this.s.result.counts };
    else if (this.s.runner && this.s.round === 1) counts = this.s.runner.countsSoFar();
    else if (sliced && this.s.round === 1) counts = { ...sliced.done.counts };
    else if (this.s.result) counts = { ...this.s.result.counts };
    const { items: _items, ...statusCounts } = { items: 0, ...counts };
    const totalSlices = sliced ? (sliced.slices?.length ?? prepared?.sliceCount ?? 0) : 0;
    return {
      jobId: this.s.jobId,
      pipeline: prepared?.head.pipeline ?? (this.s.input.job.kind === 'inline' ? this.s.input.job.spec.pipeline : this.s.input.job.head.pipeline),
      phase: this.s.paused && this.s.phase === 'running' ? 'paused' : this.s.phase,
      settled: this.s.settled,
      round: this.s.round,
      counts: { items: prepared?.itemCount ?? this.knownItemCount(), ...statusCounts },
      inFlight: this.s.runner?.busy ?? this.s.slicesInFlight,
      backoff: this.s.runner?.backoffEntries() ?? [],
      shards: { done: sliced ? Math.max(0, sliced.next - this.s.slicesInFlight) : 0, total: totalSlices },
      ...(this.s.windowEndsAt !== undefined && this.s.phase === 'retry-window' ? { retryWindowEndsAt: new Date(this.s.windowEndsAt).toISOString() } : {}),
      pendingRequests: this.s.pending.length,
      rejectedRequests: this.s.rejected.slice(-100),
      paused: this.s.paused,
      limits: this.effectiveLimits(),
      ...(sliced && this.s.round === 1 && this.s.sliceHandles.size > 0 ? { slicesRunning: [...this.s.sliceHandles.keys()] } : {}),
      ...schedulingOfRun(this.s.prepared?.options.priority),
    };
  }

  /**
   * While a sliced round runs (until `done`), keeps the job's progress in its memo exactly as the
   * query would answer it: rewritten at the end of any workflow task that changed it (conditions are
   * checked once every activation's jobs are applied), removed when the round's slices end. Clients
   * then read a busy large job's progress from the server, not through its worker.
   */
  async publishProgressWhile(done: () => boolean): Promise<void> {
    const runId = workflowInfo().runId;
    let shownProgress = '';
    let shownRejections = JSON.stringify([]);
    const current = () => {
      const { jobId: _jobId, rejectedRequests, slicesRunning, ...progress } = this.progress();
      // The key leaves the running slices out, as it always did (it decides when the memo is written, so
      // a replayed run writes it as often as it did): a slice starts or is taken only with a new key.
      return { progress, slicesRunning, rejectedRequests, key: JSON.stringify(progress), rejectionsKey: JSON.stringify(rejectedRequests) };
    };
    while (!done()) {
      const now = current();
      const memo: Record<string, JobProgressMemo | JobRejectionsMemo> = {};
      if (now.key !== shownProgress) memo[JOB_PROGRESS_MEMO_KEY] = { runId, ...now.progress, ...(now.slicesRunning ? { slicesRunning: now.slicesRunning } : {}) };
      if (now.rejectionsKey !== shownRejections) memo[JOB_REJECTIONS_MEMO_KEY] = { runId, rejected: now.rejectedRequests };
      if (Object.keys(memo).length > 0) upsertMemo(memo);
      shownProgress = now.key;
      shownRejections = now.rejectionsKey;
      await condition(() => {
        if (done()) return true;
        const next = current();
        return next.key !== shownProgress || next.rejectionsKey !== shownRejections;
      });
    }
    upsertMemo({ [JOB_PROGRESS_MEMO_KEY]: null, [JOB_REJECTIONS_MEMO_KEY]: null });
  }

  /** Items of a job still validating its spec: known at once unless a worker is still importing them. */
  private knownItemCount(): number {
    const source = this.s.source;
    if (source.kind === 'inline') return Array.isArray(source.spec.items) ? source.spec.items.length : 0;
    return source.kind === 'stored' ? source.itemCount : 0;
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
    if (this.s.phase === 'closed') return { type: ErrorTypes.JobClosed, reason: 'the job is closed' };
    const problems = request ? limitsProblems(request) : [];
    return problems.length > 0 ? { type: ErrorTypes.InvalidRequest, reason: problems.join('; ') } : undefined;
  }

  private flagRejection(request: FlagRequest): { type: string; reason: string } | undefined {
    const problem = flagProblem(request);
    if (problem) return { type: ErrorTypes.InvalidRequest, reason: problem };
    return this.s.phase === 'closed' ? { type: ErrorTypes.JobClosed, reason: 'the job is closed; the client records flags on closed jobs itself' } : undefined;
  }

  /** Marks the job (or one item's outputs) for investigation: `FaultlineFlagged` and `result.flags`. */
  flag(request: FlagRequest, origin: RequestOrigin): { flags: number } {
    const refused = this.flagRejection(request);
    if (refused) {
      this.requests.reject({ kind: 'flag', origin, ...refused });
      return { flags: this.s.flags.length };
    }
    this.s.flags.push({ ...(request.item ? { item: request.item } : {}), reason: request.reason, at: new Date().toISOString() });
    this.s.keepNewest('flags');
    upsertSearchAttributes([{ key: SearchKeys.flagged, value: true }]);
    if (this.s.result) this.s.result = { ...this.s.result, flags: [...this.s.flags] };
    log.info('job flagged', { jobId: this.s.jobId, item: request.item, reason: request.reason, origin });
    return { flags: this.s.flags.length };
  }

  /** Pause (true) or resume: acts at once on the running round and its slices. */
  async hold(paused: boolean, origin: RequestOrigin): Promise<PauseResponse> {
    const refused = this.controlRejection();
    if (refused) {
      this.requests.reject({ kind: paused ? 'pause' : 'resume', origin, ...refused });
      return { paused: this.s.paused, phase: this.s.phase };
    }
    if (this.s.paused !== paused) {
      this.s.paused = paused;
      this.s.runner?.hold(paused);
      if (this.s.phase === 'running') upsertSearchAttributes([{ key: SearchKeys.status, value: paused ? 'Paused' : 'Running' }]);
      log.info(paused ? 'job paused' : 'job resumed', { jobId: this.s.jobId, origin });
      await this.controlSlices(() => ({ paused }));
    }
    return { paused: this.s.paused, phase: this.progress().phase };
  }

  /** New limits for the work not yet started; a threshold already exceeded stops the job now. */
  async setLimits(request: LimitsRequest, origin: RequestOrigin): Promise<EffectiveLimits> {
    const refused = this.controlRejection(request);
    if (refused) {
      this.requests.reject({ kind: 'set', origin, ...refused, limits: request });
      return this.effectiveLimits();
    }
    const change: LimitsChange = { ...pickLimits(request), origin, at: new Date().toISOString() };
    this.s.limitsChanged.push(change);
    this.s.keepNewest('limitsChanged');
    log.info('job limits changed', { jobId: this.s.jobId, ...change });
    if (request.priority !== undefined && patched(PATCHES.priorityAttribute)) upsertSearchAttributes([{ key: SearchKeys.priority, value: request.priority }]);
    const prepared = this.s.prepared;
    if (!prepared) return this.effectiveLimits();
    prepared.options = withLimits(prepared.options, [change]);
    prepared.allowed = allowedFailures(prepared.options, prepared.itemCount);
    const round = this.s.current;
    if (this.s.phase === 'running' && round) {
      const allowed = prepared.allowed;
      this.s.runner?.setLimits({ concurrency: prepared.options.concurrency, allowedFailures: allowed === undefined ? null : Math.max(0, allowed - round.baseFailed) });
      this.allowance.checkThreshold(prepared, round);
      // The slices' new limits, as a starting slice gets them (a set never touches pause).
      await this.controlSlices((index) => {
        const { paused: _paused, ...limits } = this.sliceControlFor(index, round);
        return limits;
      });
    }
    return this.effectiveLimits();
  }

  /** What a slice should run with now: pause, concurrency, and its share of the allowance. */
  sliceControlFor(index: number, round: RoundRun): Required<Pick<SliceControl, 'paused' | 'concurrency'>> & SliceControl {
    const prepared = this.s.prepared;
    const allowed = prepared?.allowed;
    return {
      paused: this.s.paused,
      concurrency: prepared?.options.concurrency ?? 1,
      ...(prepared?.options.priority !== undefined ? { priority: prepared.options.priority } : {}),
      ...(allowed !== undefined ? { allowedFailures: Math.max(0, allowed - (this.allowance.failedSoFar(round) - (this.s.liveFailures.get(index) ?? 0))) } : {}),
    };
  }

  private effectiveLimits(): EffectiveLimits {
    const prepared = this.s.prepared;
    return { concurrency: prepared?.options.concurrency ?? 0, ...(prepared?.allowed !== undefined ? { allowedFailures: prepared.allowed } : {}) };
  }

  private async controlSlices(control: (index: number) => SliceControl): Promise<void> {
    await Promise.all(
      [...this.s.sliceHandles.entries()].map(([index, handle]) =>
        handle.signal(sliceControlSignal, control(index)).catch((error: unknown) => log.warn('could not reach a slice', { index, error: String(error) })),
      ),
    );
  }
}

/** The priority the job started with (its tasks carry it), in the terms of its spec. */
function schedulingOfRun(changedKey: number | undefined): Pick<JobProgress, 'scheduling'> {
  const priority = workflowInfo().priority;
  if (!priority || (priority.priorityKey === undefined && priority.fairnessKey === undefined)) return {};
  const key = changedKey ?? priority.priorityKey;
  return {
    scheduling: {
      ...(key ? { priority: key } : {}),
      ...(priority.fairnessKey ? { tenant: priority.fairnessKey } : {}),
      ...(priority.fairnessWeight ? { weight: priority.fairnessWeight } : {}),
    },
  };
}
