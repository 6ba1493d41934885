/**
 * Settling and closing: the round's result (counts, errors, manifest), archive, webhook,
 * publishing to search attributes and the Web UI, and releasing storage at close.
 */
import { CancellationScope, allHandlersFinished, condition, executeChild, log, proxySinks, setCurrentDetails, upsertSearchAttributes } from '@temporalio/workflow';
import { patched } from './patches';
import {
  ERRORS_LIMIT,
  type ErrorReport,
  ErrorTypes,
  INLINE_OUTPUT_LIMIT,
  type JobMetrics,
  type JobResult,
  PATCHES,
  type Notification,
  type OutputRecord,
  RESULT_SCHEMA_VERSION,
  SearchKeys,
  type SliceSummary,
  type SpecHead,
  type Tally,
  WORKFLOW_TYPES,
  archiveWorkflowId,
  deriveJobStatus,
  emptyTally,
  isSuccess,
  archiveEntry,
  tallyRecords,
  toErrorReport,
  webhookDisplay,
  BUDGET,
  serializedSize,
  capList,
  emptyStatusCounts,
  type StorageReleased,
} from '../shared';
import { storageActivities as engine, writeParts } from './slice';
import type { archiveWorkflow } from '../workflows/archive';
import { LOCAL_RELEASE_MAX_ITEMS, answersLeaveFirst, localHousekeeping, notify, type Prepared, type RoundRun, endAsExecution, isCancellation, sameReport, describe, type JobState } from './job-state';
import type { RequestDesk } from './requests';
import type { FaultlineSinks } from '../shared/sinks';

/** Outside history: a replay sends nothing. */
const sinks = proxySinks<FaultlineSinks>();

export class Settlement {
  constructor(
    readonly s: JobState,
    readonly requests: RequestDesk,
    /** Runs a long step with the job's progress kept in its memo meanwhile (its worker is busy). */
    private readonly publishingProgress: <T>(work: () => Promise<T>) => Promise<T>,
  ) {}

  /** Builds and publishes the round's result: counts, failures, manifest, archive, webhook. */
  async settle(prepared: Prepared, round: RoundRun, ran: { summaries: SliceSummary[] }): Promise<void> {
    this.s.phase = 'settling';
    let tally: Tally;
    let records: OutputRecord[] | undefined;
    let manifest: string | undefined;
    let storageFailure: ErrorReport | undefined;
    const metrics = { bytesIn: 0, bytesOut: 0, attempts: 0 };
    // A sliced round's totals include the slices finished before continue-as-new.
    const sliced = this.s.v3 ? round.sliced?.done : undefined;
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
      if (this.s.v3 && serializedSize(records) > BUDGET.payload) {
        try {
          manifest = await this.storeInlineRecords(prepared, records);
          records = undefined;
        } catch (error) {
          storageFailure = { ...toErrorReport(error, { at: new Date().toISOString(), step: 'manifest' }), class: 'fatal' };
          this.s.extraErrors.push(storageFailure);
          records = undefined;
        }
      }
    } else {
      try {
        const assembled = await this.publishingProgress(() => engine.assembleSlices({ jobId: this.s.jobId, round: this.s.round, sliceCount: prepared.sliceCount, inlineLimit: INLINE_OUTPUT_LIMIT }));
        tally = assembled.tally;
        manifest = assembled.manifest;
        records = assembled.records;
      } catch (error) {
        storageFailure = { ...toErrorReport(error, { at: new Date().toISOString(), step: 'manifest' }), class: 'fatal' };
        this.s.extraErrors.push(storageFailure);
        tally = emptyTally();
        tally.counts = round.sliced && !round.selection ? { ...round.sliced.done.counts } : { ...(this.s.result?.counts ?? tally.counts) };
        this.s.stopWith({ kind: 'fatal', report: storageFailure });
      }
    }
    if (this.s.result && round.selection) {
      metrics.bytesIn += this.s.result.metrics.bytesIn;
      metrics.bytesOut += this.s.result.metrics.bytesOut;
      metrics.attempts += this.s.result.metrics.attempts;
    }
    const stoppedBy = this.s.stop?.kind === 'fatal' ? this.s.stop.report : undefined;
    const ended = this.s.stop?.kind === 'cancelled' ? 'cancelled' : stoppedBy ? 'fatal' : undefined;
    const status = deriveJobStatus(tally.counts, ended);
    const own = [...(stoppedBy ? [stoppedBy] : []), ...this.s.extraErrors.filter((report) => report !== stoppedBy)];
    const itemErrors = tally.errors.filter((report) => !own.some((mine) => sameReport(mine, report)));
    const errors = [...own, ...itemErrors].slice(0, ERRORS_LIMIT);
    this.s.extraErrors = [];
    const finishedAt = Date.now();
    const itemsDone = tally.counts.outputs > 0 ? prepared.itemCount : 0;
    // The items this round ran (a retry round runs only the selected ones).
    const roundItems = round.selection ? Math.max(0, (this.s.result?.retryable.items ?? 0) - round.baseFailed) : itemsDone;
    let result: JobResult = {
      schemaVersion: RESULT_SCHEMA_VERSION,
      jobId: this.s.jobId,
      pipeline: prepared.head.pipeline,
      pipelineVersion: prepared.pipeline.version,
      success: isSuccess(status),
      status,
      round: this.s.round,
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
      ...(this.s.stop?.kind === 'cancelled' ? { cancelReason: this.s.stop.reason } : this.s.v3 && this.s.cancelReason ? { cancelReason: this.s.cancelReason } : {}),
      ...(this.s.input.retryOf ? { retryOf: this.s.input.retryOf } : {}),
      ...this.operatorLists(),
      ...(this.s.result?.notifications ? { notifications: this.s.result.notifications } : {}),
      metrics: runMetrics(this.s, finishedAt, itemsDone, roundItems, metrics),
    };
    if (prepared.options.archive && prepared.head.destination && !ended) {
      const archive = await this.runArchive(prepared.head.destination, result);
      result = { ...result, archive, ...(archive.error ? { errors: [...result.errors, archive.error] } : {}) };
      // Flags and limit changes that came while the archive ran belong in this result and its webhook.
      if (this.s.v3) result = { ...result, ...this.operatorLists() };
    }
    // The records grouped by status, where the spec says: even for a failed or cancelled job (its truthful account).
    if (prepared.options.export && patched(PATCHES.resultExport)) result = await this.runExport(prepared.options.export, result);
    this.s.result = result;
    this.s.runner = undefined;
    this.publish(result);
    sinks.faultlineMetrics.roundSettled(result.pipeline, result.status, (result.metrics.round?.runMs ?? result.metrics.runMs ?? result.metrics.elapsedMs) / 1000, result.round);
    this.s.settled = true;
    log.info('job settled', { jobId: this.s.jobId, status, round: this.s.round });
    const notification = await this.sendWebhook(result, prepared.head);
    if (notification) {
      const notifications = capList([...(this.s.result.notifications ?? []), notification]);
      if (notifications.dropped > 0 && this.s.v3) this.s.omitted = { ...this.s.omitted, notifications: (this.s.omitted?.notifications ?? 0) + notifications.dropped };
      this.s.result = {
        ...this.s.result,
        notifications: this.s.v3 ? notifications.kept : [...(this.s.result.notifications ?? []), notification],
        ...(this.s.omitted ? { omitted: this.s.omitted } : {}),
      };
    }
  }

  /**
   * Records too large for a payload become the job's one slice in job storage, and its manifest;
   * from now on the job runs as a sliced one (retry rounds read them there).
   */
  private async storeInlineRecords(prepared: Prepared, records: readonly OutputRecord[]): Promise<string> {
    const parts = await writeParts(this.s.jobId, `slice-0-r${this.s.round}-final`, records);
    const written = await engine.writeSliceRecords({ jobId: this.s.jobId, sliceIndex: 0, round: this.s.round, parts });
    prepared.inline = false;
    prepared.sliceSize = Math.max(prepared.sliceSize, prepared.itemCount);
    return engine.assembleManifest({ jobId: this.s.jobId, round: this.s.round, parts: [written.location] });
  }

  /** The archive child runs in its own scope: a cancel that arrives meanwhile stops it. */
  private async runArchive(destination: string, result: JobResult): Promise<NonNullable<JobResult['archive']>> {
    const scope = new CancellationScope({ cancellable: true });
    let done = false;
    const work = scope.run(() =>
      executeChild<typeof archiveWorkflow>(WORKFLOW_TYPES.archive, {
        workflowId: archiveWorkflowId(this.s.jobId, this.s.round),
        args: [{ jobId: this.s.jobId, round: this.s.round, destination, ...(result.outputs ? { outputs: result.outputs } : {}), ...(result.manifest ? { manifest: result.manifest } : {}) }],
        staticSummary: `archive of job ${this.s.jobId} (round ${this.s.round})`,
        cancellationType: 'WAIT_CANCELLATION_COMPLETED',
      }),
    );
    const watcher = (async () => {
      await condition(() => done || this.s.pending.some((request) => request.kind === 'cancel'));
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

  private async runExport(target: NonNullable<Prepared['options']['export']>, result: JobResult): Promise<JobResult> {
    try {
      return { ...result, exported: await engine.exportResult({ result, export: target }) };
    } catch (error) {
      // An extra, like the archive: its failure is reported, the outputs stand.
      const cause = toErrorReport(error, { at: new Date().toISOString(), step: 'export' });
      const report = { ...cause, type: ErrorTypes.ExportFailed, class: 'transient' as const, details: { ...cause.details, cause } };
      return { ...result, errors: [...result.errors, report] };
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

  private operatorLists(): Pick<JobResult, 'limitsChanged' | 'flags' | 'omitted'> {
    return {
      ...(this.s.limitsChanged.length > 0 ? { limitsChanged: [...this.s.limitsChanged] } : {}),
      ...(this.s.flags.length > 0 ? { flags: [...this.s.flags] } : {}),
      ...(this.s.omitted ? { omitted: this.s.omitted } : {}),
    };
  }

  /** Cancelled before its items were known (during an `itemsFrom` import): closes with an empty, Cancelled result. */
  async closeUnprepared(): Promise<JobResult> {
    const cancels = this.s.pending.filter((request) => request.kind === 'cancel');
    this.s.pending = this.s.pending.filter((request) => request.kind !== 'cancel');
    for (const request of cancels) {
      if (request.kind !== 'cancel') continue;
      this.s.cancelReason ??= request.reason;
      this.requests.answer(request, { accepted: true, effect: 'closed' });
    }
    const now = Date.now();
    const source = this.s.source;
    this.s.stop = { kind: 'cancelled', reason: this.s.cancelReason ?? 'cancelled' };
    this.s.result = {
      schemaVersion: RESULT_SCHEMA_VERSION,
      jobId: this.s.jobId,
      pipeline: source.kind === 'inline' ? source.spec.pipeline : source.head.pipeline,
      success: false,
      status: 'Cancelled',
      round: this.s.round,
      counts: { items: 0, ...emptyStatusCounts(), outputs: 0 },
      errors: [],
      failureCounts: {},
      failuresByReason: {},
      retryable: { items: 0, types: [] },
      cancelReason: this.s.stop.reason,
      metrics: {
        startedAt: new Date(this.s.startedAt).toISOString(),
        finishedAt: new Date(now).toISOString(),
        elapsedMs: now - this.s.startedAt,
        bytesIn: 0,
        bytesOut: 0,
        attempts: 0,
        itemsPerSec: 0,
      },
    };
    this.s.settled = true;
    return this.close();
  }

  async close(): Promise<JobResult> {
    this.s.phase = 'closed';
    // Handlers still waiting get their answer; anything queued from now on is rejected.
    for (;;) {
      for (const request of this.s.pending) this.requests.rejectRequest(request, ErrorTypes.JobClosed, 'the job closed before this request could run');
      this.s.pending = [];
      await condition(allHandlersFinished);
      if (this.s.pending.length === 0) break;
    }
    let result: JobResult = {
      ...(this.s.result as JobResult),
      ...(this.s.cancelReason && !this.s.result?.cancelReason ? { cancelReason: this.s.cancelReason } : {}),
      ...(this.s.rejected.length > 0 ? { rejectedRequests: this.s.rejected.slice(-100) } : {}),
    };
    const byBatch = this.s.releasedByBatch;
    // Released by the job's only batch (no later round, and no records moved to storage since): nothing left to release.
    if (byBatch && byBatch.round === this.s.round && result.manifest === undefined) result = withStorage(result, byBatch.released);
    else if (patched(PATCHES.retention)) result = await this.releaseStorage(result);
    this.s.result = result;
    this.publish(result);
    // A result read (the only update a closed job accepts) that came while storage was released finishes first.
    if (this.s.v3) await condition(allHandlersFinished);
    await answersLeaveFirst(this.s);
    if (patched(PATCHES.failedExecutions)) endAsExecution(result, this.s.cancelledThroughTemporal);
    return result;
  }

  /** No retry can come now: working copies go; the result says what the job keeps in storage. */
  private async releaseStorage(result: JobResult): Promise<JobResult> {
    try {
      const small = (this.s.prepared?.itemCount ?? Number.POSITIVE_INFINITY) <= LOCAL_RELEASE_MAX_ITEMS;
      const housekeeping = small && patched(PATCHES.localRelease) ? localHousekeeping : engine;
      return withStorage(result, await housekeeping.releaseWorkingCopies({ jobId: this.s.jobId }));
    } catch (error) {
      // Storage housekeeping never changes a job's outcome; `faultline gc` can clean up later.
      log.warn('could not release working copies', { jobId: this.s.jobId, error: String(error) });
      return result;
    }
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

/** The result's storage metrics after the job's working copies were released. */
function withStorage(result: JobResult, { releasedBytes, keptBytes }: StorageReleased): JobResult {
  return { ...result, metrics: { ...result.metrics, storageBytes: keptBytes, storageReleasedBytes: releasedBytes } };
}

const perSecond = (items: number, ms: number) => (ms > 0 ? Math.round((items / (ms / 1000)) * 100) / 100 : items);

/** Times and throughput of a settled round: running apart from waiting in retry windows. */
function runMetrics(s: JobState, finishedAt: number, itemsDone: number, roundItems: number, counted: Pick<JobMetrics, 'bytesIn' | 'bytesOut' | 'attempts'>): JobMetrics {
  const elapsedMs = finishedAt - s.startedAt;
  const roundRunMs = Math.max(0, finishedAt - s.roundStartedAt);
  const runMs = Math.min(elapsedMs, s.runMsBefore + roundRunMs);
  return {
    startedAt: new Date(s.startedAt).toISOString(),
    finishedAt: new Date(finishedAt).toISOString(),
    elapsedMs,
    runMs,
    waitingMs: elapsedMs - runMs,
    round: { runMs: roundRunMs, items: roundItems, itemsPerSec: perSecond(roundItems, roundRunMs) },
    ...counted,
    itemsPerSec: perSecond(itemsDone, runMs),
  };
}
