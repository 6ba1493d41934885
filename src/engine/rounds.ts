/**
 * Running a round: inline (the only slice inside the job workflow) or as slice child workflows,
 * through the same slice code; slices that never ran get their records from an activity.
 */
import { jobPriority } from './priority';
import { CancellationScope, condition, log, setCurrentDetails, startChild, upsertSearchAttributes } from '@temporalio/workflow';
import { patched } from './patches';
import {
  type ErrorReport,
  ErrorTypes,
  type ItemsSource,
  MAX_PARALLEL_SLICES,
  PATCHES,
  SearchKeys,
  type SliceInput,
  type SliceMode,
  type SliceSummary,
  type Tally,
  WORKFLOW_TYPES,
  addCounts,
  emptyStatusCounts,
  outputsForItem,
  sliceControlSignal,
  sliceWorkflowId,
  toErrorReport,
  type StorageReleased,
} from '../shared';
import { thresholdReport, unfinishedReason } from './runner';
import { runSlice, storageActivities as engine } from './slice';
import type { sliceWorkflow } from '../workflows/slice';
import { type Prepared, type RoundRun, emptySlicesTally, historyIsLong, isCancellation, type JobState } from './job-state';
import type { RequestDesk } from './requests';
import type { OperatorControls } from './controls';
import type { FailureAllowance } from './allowance';

export class RoundRunner {
  constructor(
    readonly s: JobState,
    readonly requests: RequestDesk,
    readonly controls: OperatorControls,
    readonly allowance: FailureAllowance,
  ) {}

  async runRound(prepared: Prepared, round: RoundRun): Promise<'rotate' | { summaries: SliceSummary[]; fill?: { counts: Tally['counts'] } }> {
    this.s.phase = 'running';
    this.s.settled = false;
    this.s.current = round;
    // The allowance survives continue-as-new: finished slices' failures are carried in the round.
    this.s.finishedFailures = this.s.v3 ? (round.sliced?.done.newFailures ?? 0) : 0;
    this.s.liveFailures.clear();
    setCurrentDetails(`Running round ${this.s.round}: ${prepared.itemCount} item(s) of pipeline ${prepared.head.pipeline}.`);
    // Only when held, so jobs recorded before pause existed replay unchanged.
    if (this.s.round > 1 && this.s.paused) upsertSearchAttributes([{ key: SearchKeys.status, value: 'Paused' }]);
    this.requests.drainWhileRunning();
    if (prepared.inline) {
      const outcome = await this.runInline(prepared, round);
      if (outcome === 'rotate') return 'rotate';
      return { summaries: [outcome] };
    }
    return this.runSlices(prepared, round);
  }

  private async runInline(prepared: Prepared, round: RoundRun): Promise<'rotate' | SliceSummary> {
    const previous = this.s.result?.outputs;
    const mode: SliceMode = round.selection && previous ? { kind: 'retry', selection: round.selection, base: { kind: 'inline', records: previous } } : { kind: 'first' };
    const carry = round.inline?.carry;
    const input: SliceInput = {
      jobId: this.s.jobId,
      sliceIndex: 0,
      round: this.s.round,
      head: prepared.head,
      items: prepared.source,
      batchSize: prepared.options.batchSize,
      concurrency: prepared.options.concurrency,
      // An allowance lowered below the failures a retry round does not touch allows no new failure (never a negative count).
      ...(prepared.allowed !== undefined ? { allowedFailures: this.s.v3 ? Math.max(0, prepared.allowed - round.baseFailed) : prepared.allowed - round.baseFailed } : {}),
      reportFailures: false,
      mode,
      keep: 'inline',
      ...(carry ? { resume: { snapshot: carry.snapshot, segments: [], newFailures: this.s.v3 ? (carry.newFailures ?? 0) : 0, bytesIn: 0, bytesOut: 0 } } : {}),
    };
    // A job that closes right after this round, with nothing after its batch that writes to job storage, lets that batch release it.
    const closesAfter = this.s.releaseInBatch && mode.kind === 'first' && this.s.round === 1 && prepared.options.retryWindowMs === 0 && !prepared.options.archive && !prepared.options.export;
    const outcome = await runSlice(input, prepared.pipeline, this.s.jobId, {
      ...(closesAfter ? { onReleasedByBatch: (released: StorageReleased) => (this.s.releasedByBatch = { round: this.s.round, released }) } : {}),
      runner: { pending: () => this.s.nextRequestId > this.s.drainedThrough, drain: () => this.requests.drainWhileRunning() },
      onRunner: (runner) => {
        this.s.runner = runner;
        if (this.s.paused) runner.hold(true);
        if (this.s.stop) runner.requestStop(this.s.stop);
      },
    });
    if (outcome.kind === 'rotate') {
      round.inline = {
        carry: {
          kind: 'inline',
          ...(round.selection ? { selection: round.selection } : {}),
          snapshot: outcome.carry.snapshot,
          ...(this.s.v3 ? { newFailures: outcome.carry.newFailures, baseFailed: round.baseFailed } : {}),
        },
      };
      return 'rotate';
    }
    if (outcome.summary.stop?.kind === 'fatal') this.s.stopWith(outcome.summary.stop);
    return outcome.summary;
  }

  private async runSlices(prepared: Prepared, round: RoundRun): Promise<'rotate' | { summaries: SliceSummary[]; fill?: { counts: Tally['counts'] } }> {
    const state = (round.sliced ??= { slices: undefined, next: 0, done: emptySlicesTally(), bases: {} });
    const total = state.slices?.length ?? prepared.sliceCount;
    const indexAt = (position: number) => state.slices?.[position] ?? position;
    const summaries: SliceSummary[] = [];
    this.s.sliceScope = new CancellationScope({ cancellable: true });
    const scope = this.s.sliceScope;
    if (this.s.stop) scope.cancel();
    let rotate = false;
    let lanesDone = false;
    const runOne = async (index: number): Promise<void> => {
      const from = index * prepared.sliceSize;
      const to = Math.min(prepared.itemCount, from + prepared.sliceSize);
      const items: ItemsSource = prepared.source.kind === 'inline' ? { kind: 'inline', items: prepared.source.items.slice(from, to) } : { kind: 'stored', ref: prepared.source.ref, from, to };
      const base = state.bases[index];
      const input: SliceInput = {
        jobId: this.s.jobId,
        sliceIndex: index,
        round: this.s.round,
        head: prepared.head,
        items,
        batchSize: prepared.options.batchSize,
        concurrency: prepared.options.concurrency,
        ...(prepared.allowed !== undefined ? { allowedFailures: Math.max(0, prepared.allowed - this.allowance.failedSoFar(round)) } : {}),
        reportFailures: prepared.allowed !== undefined,
        mode: round.selection && base ? { kind: 'retry', selection: round.selection, base: { kind: 'stored', location: base } } : { kind: 'first' },
        keep: 'stored',
        ...(this.s.paused ? { paused: true } : {}),
        plan: prepared.pipeline,
      };
      this.s.slicesInFlight += 1;
      let started = false;
      try {
        const handle = await scope.run(() =>
          startChild<typeof sliceWorkflow>(WORKFLOW_TYPES.slice, {
            workflowId: sliceWorkflowId(this.s.jobId, index, this.s.round),
            args: [input],
            staticSummary: `slice ${index} of job ${this.s.jobId}, round ${this.s.round}: items ${from}–${to - 1}`,
            cancellationType: 'WAIT_CANCELLATION_COMPLETED',
            ...jobPriority(),
          }),
        );
        started = true;
        this.s.sliceHandles.set(index, handle);
        if (this.s.v3) {
          // A pause, resume or new limits that came while the child was starting. Not reaching it is
          // not a slice failure (it may have finished already); its result below is what counts.
          const now = this.controls.sliceControlFor(index, round);
          const changed = now.paused !== (input.paused ?? false) || now.concurrency !== input.concurrency || (now.allowedFailures !== undefined && now.allowedFailures !== input.allowedFailures);
          if (changed) await handle.signal(sliceControlSignal, now).catch((error: unknown) => log.warn('could not reach a starting slice', { index, error: String(error) }));
        } else if (this.s.paused !== (input.paused ?? false)) await handle.signal(sliceControlSignal, { paused: this.s.paused });
        const summary = await scope.run(() => handle.result());
        summaries.push(summary);
        state.done.counts = addCounts(state.done.counts, summary.counts);
        state.done.newFailures += summary.newFailures;
        state.done.bytesIn += summary.bytesIn;
        state.done.bytesOut += summary.bytesOut;
        state.done.attempts += summary.attempts;
        this.s.finishedFailures += summary.newFailures;
        this.s.liveFailures.delete(index);
        if (summary.stop?.kind === 'fatal') {
          const local = summary.stop.report.type === ErrorTypes.ToleratedFailureThresholdExceeded;
          const failed = this.allowance.failedSoFar(round);
          // A slice that stopped on the share it had then, before a raised limit reached it, keeps its own (true) report.
          const jobWide = local && prepared.allowed !== undefined && (!this.s.v3 || failed > prepared.allowed);
          this.s.stopWith(jobWide && prepared.allowed !== undefined ? { kind: 'fatal', report: thresholdReport(failed, prepared.allowed) } : summary.stop);
        }
      } catch (error) {
        // Its failures are counted once, by the fill below, not also as live reports.
        if (this.s.v3) this.s.liveFailures.delete(index);
        if (this.s.stop && isCancellation(error)) {
          // Stopped before it started: its items get Cancelled records like slices never reached.
          if (this.s.v3 && !started && !round.selection) {
            const filled = await this.fill(prepared, { from: index, to: index + 1 }, 'Cancelled', unfinishedReason(this.s.stop));
            state.done.counts = addCounts(state.done.counts, filled.counts);
          }
          return;
        }
        // The slice workflow itself failed: its items are Failed with the cause chain, and the job stops.
        const report: ErrorReport = { ...toErrorReport(error, { at: new Date().toISOString() }), type: ErrorTypes.ChildJobFailed, class: 'fatal' };
        this.s.stopWith({ kind: 'fatal', report });
        if (!round.selection) {
          const filled = await this.fill(prepared, { from: index, to: index + 1 }, 'Failed', 'the slice workflow failed', report);
          state.done.counts = addCounts(state.done.counts, filled.counts);
          this.s.finishedFailures += filled.failedItems;
          if (this.s.v3) state.done.newFailures += filled.failedItems;
        }
      } finally {
        this.s.sliceHandles.delete(index);
        this.s.slicesInFlight -= 1;
      }
    };
    const lanes = Array.from({ length: Math.min(MAX_PARALLEL_SLICES, total) }, async () => {
      while (state.next < total && !this.s.stop && !rotate) {
        if (this.s.paused) {
          // Held: no new slice starts until resume (or a stop).
          await condition(() => !this.s.paused || this.s.stop !== undefined);
          continue;
        }
        if (historyIsLong(prepared.options)) {
          rotate = true;
          break;
        }
        const index = indexAt(state.next++);
        await runOne(index);
        this.requests.drainWhileRunning();
      }
    });
    // Watches requests and failures signalled by running slices while the lanes run.
    const watcher = (async () => {
      while (!lanesDone) {
        await condition(
          () => lanesDone || this.s.pending.some((request) => request.kind === 'cancel') || (prepared.allowed !== undefined && !this.s.stop && this.allowance.failedSoFar(round) > prepared.allowed),
        );
        this.requests.drainWhileRunning();
        this.allowance.checkThreshold(prepared, round);
      }
    })();
    // The job's progress in its memo while its slices run: read from the server, not a busy worker.
    const publisher = this.s.progressMemoDecidedEarly || patched(PATCHES.jobProgressMemo) ? this.controls.publishProgressWhile(() => lanesDone) : undefined;
    await Promise.all(lanes);
    lanesDone = true;
    await watcher;
    await publisher;
    this.requests.drainWhileRunning();
    if (rotate && !this.s.stop) return 'rotate';
    let fill: { counts: Tally['counts'] } | undefined;
    if (this.s.stop && state.next < total && !round.selection) {
      // Never started: Cancelled records are made from the stored spec by an activity, not through history.
      const filled = await this.fill(prepared, { from: state.next, to: total }, 'Cancelled', unfinishedReason(this.s.stop));
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
        jobId: this.s.jobId,
        round: this.s.round,
        head: prepared.head,
        spec: prepared.source,
        sliceSize: prepared.sliceSize,
        slices,
        status,
        reason,
        ...(error ? { error } : {}),
      });
    } catch (failure) {
      this.s.extraErrors.push({ ...toErrorReport(failure, { at: new Date().toISOString(), step: 'records' }), class: 'fatal' });
      const from = slices.from * prepared.sliceSize;
      const to = Math.min(prepared.itemCount, slices.to * prepared.sliceSize);
      const perItem = (item?: Parameters<typeof outputsForItem>[1]) => outputsForItem(prepared.head, item ?? {}, prepared.pipeline).length;
      const outputs = prepared.source.kind === 'inline' ? prepared.source.items.slice(from, to).reduce((sum, item) => sum + perItem(item), 0) : (to - from) * perItem();
      const counts = { ...emptyStatusCounts(), outputs, [status]: outputs };
      return { counts, failedItems: status === 'Failed' ? to - from : 0 };
    }
  }
}
