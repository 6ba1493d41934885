/**
 * The job's state and main loop. Handlers only validate and queue requests (retry, cancel) and
 * wait for their own outcome; the main loop is the single writer of job state and handles the
 * queue at defined points: before each dispatch, while slices run, when a round settles, before
 * continue-as-new and before closing. Every interleaving of messages therefore has one outcome,
 * and a request is always carried out, carried over, or rejected with a declared type.
 */
import { usePriorityKey } from './priority';
import { ApplicationFailure, CancellationScope, allHandlersFinished, condition, continueAsNew, setCurrentDetails, upsertSearchAttributes } from '@temporalio/workflow';
import { patched } from './patches';
import {
  ErrorTypes,
  INLINE_OUTPUT_LIMIT,
  type ItemsSource,
  type JobInput,
  type JobResult,
  type JobSpec,
  PATCHES,
  type PipelinePlan,
  legacyRegistry,
  makeReport,
  planOf,
  type RetryRequest,
  SearchKeys,
  type SpecSource,
  type SpecHead,
  allowedFailures,
  itemsToRetry,
  normalizeSpec,
  outputsForItem,
  resolveJobOptions,
  validateJobSpec,
  withLimits,
} from '../shared';
import { storageActivities as engine } from './slice';
import {
  describer,
  localDescriber,
  isCancellation,
  importer,
  QUEUED_IDS_LISTED,
  type Prepared,
  type RetryPlan,
  type RoundRun,
  invalidSpec,
  emptySlicesTally,
  historyIsLong,
  describe,
  JobState,
  answersLeaveFirst,
} from './job-state';
import { FailureAllowance } from './allowance';
import { RequestDesk } from './requests';
import { OperatorControls } from './controls';
import { RoundRunner } from './rounds';
import { Settlement } from './settlement';
export { invalidSpec } from './job-state';

export class JobRun {
  readonly s: JobState;
  readonly allowance: FailureAllowance;
  readonly requests: RequestDesk;
  readonly controls: OperatorControls;
  readonly rounds: RoundRunner;
  readonly settlement: Settlement;

  constructor(input: JobInput) {
    this.s = new JobState(input);
    this.allowance = new FailureAllowance(this.s);
    this.requests = new RequestDesk(this.s);
    this.controls = new OperatorControls(this.s, this.requests, this.allowance);
    this.rounds = new RoundRunner(this.s, this.requests, this.controls, this.allowance);
    this.settlement = new Settlement(this.s, this.requests, (work) => this.publishingProgress(work, 'may decide late'));
    // A `set --priority` reaches every batch and slice scheduled after it.
    usePriorityKey(() => this.s.prepared?.options.priority);
  }

  async run(): Promise<JobResult> {
    if (this.s.v3) {
      // Heard during prepare too: a cancel then stops the import and closes the job with a result.
      this.listenForTemporalCancel();
      const prepared = await CancellationScope.nonCancellable(() => this.prepareOrClose());
      if (prepared === 'cancelled') return CancellationScope.nonCancellable(() => this.settlement.closeUnprepared());
      this.publishRunning(prepared);
      return this.runPrepared(prepared);
    }
    const prepared = await this.prepare();
    this.publishRunning(prepared);
    this.listenForTemporalCancel();
    return this.runPrepared(prepared);
  }

  /** A cancel through Temporal (Web UI, `temporal workflow cancel`) becomes a queued cancel request. */
  private listenForTemporalCancel(): void {
    CancellationScope.current().cancelRequested.catch(() => {
      this.s.cancelledThroughTemporal = true;
      this.requests.enqueue({ kind: 'cancel', origin: 'signal', reason: 'cancellation requested through Temporal' });
    });
  }

  private publishRunning(prepared: Prepared): void {
    upsertSearchAttributes([
      { key: SearchKeys.pipeline, value: prepared.head.pipeline },
      { key: SearchKeys.status, value: this.s.paused ? 'Paused' : 'Running' },
      { key: SearchKeys.hasErrors, value: this.s.result ? this.s.result.counts.Failed > 0 : false },
      { key: SearchKeys.failedCount, value: this.s.result?.counts.Failed ?? 0 },
    ]);
  }

  private runPrepared(prepared: Prepared): Promise<JobResult> {
    return CancellationScope.nonCancellable(async () => {
      let round: RoundRun | undefined = this.resumeRound();
      if (!round && !this.s.result) round = { baseFailed: 0 };
      for (;;) {
        if (round) {
          const ran = await this.rounds.runRound(prepared, round);
          if (ran === 'rotate') return this.continueAsNew(round);
          await this.settlement.settle(prepared, round, ran);
        }
        const next = await this.afterSettle(prepared);
        if (next === 'close') break;
        if (next === 'rotate') return this.continueAsNew(undefined);
        round = next;
      }
      return this.settlement.close();
    });
  }

  /**
   * Engine v3's prepare: a cancel stops an `itemsFrom` import at once ('cancelled'); a spec that
   * fails validation answers every request accepted meanwhile before the job fails.
   */
  private async prepareOrClose(): Promise<Prepared | 'cancelled'> {
    const scope = new CancellationScope({ cancellable: true });
    let done = false;
    const watcher = (async () => {
      await condition(() => done || this.s.pending.some((request) => request.kind === 'cancel'));
      if (!done) scope.cancel();
    })();
    try {
      return await scope.run(() => this.prepare());
    } catch (error) {
      if (isCancellation(error) && this.s.pending.some((request) => request.kind === 'cancel')) return 'cancelled';
      for (const request of this.s.pending) this.requests.rejectRequest(request, ErrorTypes.JobClosed, 'the job failed before it started: its spec is invalid');
      this.s.pending = [];
      await condition(allHandlersFinished);
      throw error;
    } finally {
      done = true;
      await watcher;
    }
  }

  /**
   * Patches a sliced job uses after its spec check are decided before it. The check is a local
   * activity: live, its result may reach the workflow in a later workflow task than on replay
   * (a query during the first task splits it), and a patch marker recorded in that later task is
   * missing on replay (nondeterminism). Decided here, the markers land in the first task both ways;
   * later calls return the same decision.
   */
  private decidePatchesBeforeSpecCheck(source: JobState['source']): void {
    let sliced = source.kind !== 'inline';
    if (source.kind === 'inline') {
      const items = Array.isArray(source.spec.items) ? source.spec.items.length : 0;
      const options = (source.spec as { options?: { shardSize?: unknown } }).options;
      // Certainly sliced: more items than a slice holds (a spec the check refuses never gets this far).
      sliced = items > (typeof options?.shardSize === 'number' ? options.shardSize : resolveJobOptions({}, items, this.s.largeJobSizing).shardSize);
    }
    // Histories recorded before this decision have no such marker in their first task: false, and the old later check runs.
    if (sliced) this.s.progressMemoDecidedEarly = patched(PATCHES.longStepProgressMemo);
    // Whether it applies (a job that closes when it settles, run as one local batch) is known after the check.
    else if (source.kind === 'inline') this.s.releaseInBatch = patched(PATCHES.releaseInLocalBatch);
  }

  /**
   * A worker reading millions of items (an import, a check, the round's records) is too busy to
   * answer queries for minutes: meanwhile the job's progress is kept in its memo, as while its slices run.
   */
  private async publishingProgress<T>(work: () => Promise<T>, late: 'may decide late' | 'decided early only'): Promise<T> {
    // Right after the spec check only the early decision counts (see decidePatchesBeforeSpecCheck); after a step of its own
    // (the slices' ends) a late decision is safe.
    const publish = this.s.progressMemoDecidedEarly || (late === 'may decide late' && patched(PATCHES.longStepProgressMemo));
    if (!publish) return work();
    let finished = false;
    // Not cancelled with the work: the memo is removed however the work ends.
    const publisher = CancellationScope.nonCancellable(() => this.controls.publishProgressWhile(() => finished));
    try {
      return await work();
    } finally {
      finished = true;
      await publisher;
    }
  }

  private async prepare(): Promise<Prepared> {
    try {
      const source = this.s.source;
      this.decidePatchesBeforeSpecCheck(source);
      let head: SpecHead;
      let pipeline: PipelinePlan;
      let items: ItemsSource;
      let itemCount: number;
      if (source.kind === 'inline') {
        pipeline = await this.pipelinePlan(source.spec);
        const { items: all, ...rest } = normalizeSpec(source.spec);
        head = rest;
        items = { kind: 'inline', items: all };
        itemCount = all.length;
      } else {
        pipeline = await this.pipelinePlan({ ...source.head, items: [] });
        let stored: Extract<SpecSource, { kind: 'stored' }>;
        if (source.kind === 'remote') {
          // A worker reads the source once into job storage (validating it); from then on the job is a stored one.
          const imported = await this.publishingProgress(() => importer.importItems({ jobId: this.s.jobId, from: source.from, head: source.head }), 'decided early only');
          if (!imported.ok) throw invalidSpec(imported.issues);
          stored = { kind: 'stored', ref: imported.ref, head: source.head, itemCount: imported.itemCount };
          this.s.source = stored;
        } else {
          stored = source;
          // Re-validated once; a continued run trusts its first run's check.
          if (!this.s.input.carry) {
            const full = await this.publishingProgress(() => engine.inspectStoredSpec(source.ref), 'decided early only');
            if (!full.ok) throw invalidSpec(full.issues);
          }
        }
        head = stored.head;
        itemCount = stored.itemCount;
        items = { kind: 'stored', ref: stored.ref, from: 0, to: itemCount };
      }
      const options = resolveJobOptions(head, itemCount, this.s.largeJobSizing, pipeline.work);
      const outputs = items.kind === 'inline' ? items.items.reduce((sum, item) => sum + outputsForItem(head, item, pipeline).length, 0) : Infinity;
      // A job whose records outgrew a payload keeps them in job storage as its one slice from then on.
      const recordsStored = this.s.v3 && this.s.result?.manifest !== undefined;
      const inline = items.kind === 'inline' && itemCount <= options.shardSize && outputs <= INLINE_OUTPUT_LIMIT && !recordsStored;
      const sliceSize = inline ? Math.max(1, itemCount) : options.shardSize;
      const limited = withLimits(options, this.s.limitsChanged);
      this.s.prepared = {
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
      this.s.phase = 'running';
      return this.s.prepared;
    } catch (error) {
      this.s.phase = 'closed';
      upsertSearchAttributes([
        { key: SearchKeys.status, value: 'Failed' },
        { key: SearchKeys.hasErrors, value: true },
      ]);
      throw error;
    }
  }

  /**
   * The pipeline of this job, as plain data: described by a worker that knows it (which also
   * validates the spec with the pipeline's own schemas), then carried, so every later run and round
   * keeps the version the job started with. Jobs recorded before workers described pipelines
   * validate against the built-ins' legacy plans, as they did.
   */
  private async pipelinePlan(spec: JobSpec): Promise<PipelinePlan> {
    if (this.s.plan) return this.s.plan;
    if (!patched(PATCHES.workerPipelines)) {
      const validation = validateJobSpec(spec, legacyRegistry());
      if (!validation.ok) throw invalidSpec(validation.issues);
      return (this.s.plan = planOf(validation.pipeline));
    }
    // Not cancellable: a cancel that arrives while a worker checks the spec (a moment) waits for it,
    // so the job knows its items and closes with each one Cancelled; only an import is cut short.
    const check = patched(PATCHES.localSpecCheck) ? localDescriber : describer;
    const described = await CancellationScope.nonCancellable(() => check.describeSpec({ spec }));
    if (described.ok) return (this.s.plan = described.plan);
    if ('issues' in described) throw invalidSpec(described.issues);
    const report = makeReport({ type: ErrorTypes.PipelineUnavailable, message: described.unavailable, details: { pipeline: spec.pipeline }, at: new Date().toISOString() });
    throw ApplicationFailure.create({ type: ErrorTypes.PipelineUnavailable, message: report.message, nonRetryable: true, details: [report] });
  }

  private resumeRound(): RoundRun | undefined {
    const running = this.s.input.carry?.running;
    if (!running) return undefined;
    const base = { ...(running.selection ? { selection: running.selection } : {}) };
    if (running.kind === 'inline') return { ...base, baseFailed: this.s.v3 ? (running.baseFailed ?? 0) : 0, inline: { carry: running } };
    return { ...base, baseFailed: running.baseFailed, sliced: { slices: running.slices.length > 0 ? running.slices : undefined, next: running.next, done: running.done, bases: running.bases } };
  }

  /** After a round settled: handle queued requests, keep the retry window, or close. */
  private async afterSettle(prepared: Prepared): Promise<RoundRun | 'close' | 'rotate'> {
    for (;;) {
      const result = this.s.result;
      if (!result) return 'close';
      const cancels = this.s.pending.filter((request) => request.kind === 'cancel');
      if (cancels.length > 0) {
        // Every item has settled: a cancel closes the job; queued retries are not run.
        this.s.pending = this.s.pending.filter((request) => request.kind !== 'cancel');
        for (const request of cancels) {
          if (request.kind !== 'cancel') continue;
          this.s.cancelReason ??= request.reason;
          this.requests.answer(request, { accepted: true, effect: 'closed' });
        }
        for (const request of this.s.pending) this.requests.rejectRequest(request, ErrorTypes.JobCancelled, 'the job was cancelled before this retry could run');
        this.s.pending = [];
        return 'close';
      }
      const request = this.s.pending.shift();
      if (request?.kind === 'retry') {
        if (this.s.stop) {
          this.requests.rejectRequest(request, ErrorTypes.JobClosed, `the job ended (${this.s.stop.kind === 'fatal' ? this.s.stop.report.type : 'cancelled'}); start a follow-up job instead`);
          continue;
        }
        const plan = await this.planRetry(prepared, request.selection, result);
        const count = plan.kind === 'inline' ? plan.ids.length : plan.count;
        if (count === 0) {
          this.requests.rejectRequest(request, ErrorTypes.NothingToRetry, 'no failed item matches the selection');
          continue;
        }
        this.s.round += 1;
        this.s.startRound();
        this.s.windowEndsAt = undefined;
        this.requests.answer(request, { queued: plan.ids.slice(0, QUEUED_IDS_LISTED), queuedCount: count, round: this.s.round });
        const baseFailed = result.retryable.items - count;
        if (plan.kind === 'inline') return { selection: request.selection, baseFailed };
        const bases: Record<number, string> = {};
        for (const slice of plan.slices) bases[slice.index] = slice.base;
        return { selection: request.selection, baseFailed, sliced: { slices: plan.slices.map((slice) => slice.index), next: 0, done: emptySlicesTally(), bases } };
      }
      const open = result.retryable.items > 0 && !this.s.stop && prepared.options.retryWindowMs > 0;
      if (!open) return 'close';
      this.s.windowEndsAt ??= Date.now() + prepared.options.retryWindowMs;
      if (historyIsLong(prepared.options)) return 'rotate';
      this.s.phase = 'retry-window';
      setCurrentDetails(`${describe(result)}\nOpen for retry until ${new Date(this.s.windowEndsAt).toISOString()}.`);
      const windowEndsAt = this.s.windowEndsAt;
      const arrived = await condition(() => this.s.pending.length > 0 || (this.s.v3 && historyIsLong(prepared.options)), Math.max(1, windowEndsAt - Date.now()));
      // A request that lands in the same activation as the window's end is still handled.
      if (!arrived && this.s.pending.length === 0) return 'close';
      if (this.s.pending.length === 0 && this.s.v3 && historyIsLong(prepared.options)) return 'rotate';
    }
  }

  private async planRetry(prepared: Prepared, selection: RetryRequest, result: JobResult): Promise<RetryPlan> {
    if (prepared.inline) return { kind: 'inline', ids: itemsToRetry(result.outputs ?? [], selection) };
    return { kind: 'sliced', ...(await engine.planSliceRetry({ jobId: this.s.jobId, round: this.s.round, sliceCount: prepared.sliceCount, selection, listLimit: QUEUED_IDS_LISTED })) };
  }

  private async continueAsNew(round: RoundRun | undefined): Promise<never> {
    this.s.rotating = true;
    // Updates cannot cross continue-as-new: their callers are told to ask again (the client does so itself).
    for (const request of this.s.pending) if (request.origin === 'update') this.requests.rejectRequest(request, ErrorTypes.JobRotating, 'the job continued as new; ask again');
    this.s.pending = this.s.pending.filter((request) => request.origin === 'signal');
    await condition(allHandlersFinished);
    await answersLeaveFirst(this.s);
    return continueAsNew<(input: JobInput) => Promise<JobResult>>(this.s.nextRunInput(round));
  }
}
