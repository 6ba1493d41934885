/**
 * The job workflow: validate → run items (inline, or spread over shard child workflows) →
 * settle → publish the result → optionally stay open for `retry` during the retry window.
 */
import {
  ApplicationFailure,
  CancellationScope,
  ChildWorkflowFailure,
  condition,
  continueAsNew,
  executeChild,
  log,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
  allHandlersFinished,
} from '@temporalio/workflow';
import type { createEngineActivities } from '../../activities/engine';
import type { createNotifyActivities } from '../../activities/notify';
import { ItemRunner, type StopReason, thresholdReport } from './runner-v1';
import { type Tally, addError, emptyTally, mergeShard, tallyRecords } from './summary-v1';
import {
  archiveEntry,
  type ErrorReport,
  ErrorTypes,
  INLINE_OUTPUT_LIMIT,
  type JobPhase,
  type JobProgress,
  type JobResult,
  type JobSpec,
  type Notification,
  type OutputRecord,
  type PipelineDefinition,
  RESULT_SCHEMA_VERSION,
  type ResolvedOptions,
  type RetryRequest,
  SearchKeys,
  WORKFLOW_TYPES,
  allowedFailures,
  archiveWorkflowId,
  awaitResultUpdate,
  cancelSignal,
  cancelUpdate,
  deriveJobStatus,
  emptyStatusCounts,
  isSuccess,
  makeReport,
  outputsForItem,
  progressQuery,
  resolveJobOptions,
  retryUpdate,
  shardWorkflowId,
  toErrorReport,
  validateJobSpec,
  legacyRegistry,
} from '../../shared';
import type { JobInput, ShardInput, ShardSummary, SpecHead } from './types-v1';
import type { archiveWorkflow } from '../archive';
import type { shardWorkflow } from './shard-v1';

const engine = proxyActivities<ReturnType<typeof createEngineActivities>>({
  startToCloseTimeout: '5m',
  retry: { maximumAttempts: 5, initialInterval: '1s' },
});
const notify = proxyActivities<ReturnType<typeof createNotifyActivities>>({
  startToCloseTimeout: '2m',
  heartbeatTimeout: '30s',
  retry: { maximumAttempts: 1 },
});

const MAX_PARALLEL_SHARDS = 8;

function invalidSpec(issues: { path: string; code: string; message: string }[]): ApplicationFailure {
  const report = makeReport({
    type: ErrorTypes.InvalidSpec,
    message: `invalid job spec: ${issues.length} issue(s); first: ${issues[0]?.path}: ${issues[0]?.message}`,
    details: { issues },
    at: new Date().toISOString(),
  });
  return ApplicationFailure.create({ type: ErrorTypes.InvalidSpec, message: report.message, nonRetryable: true, details: [report] });
}

interface Prepared {
  head: SpecHead;
  pipeline: PipelineDefinition;
  options: ResolvedOptions;
  itemCount: number;
  items?: JobSpec['items'];
  ref?: string;
}

async function prepare(input: JobInput): Promise<Prepared> {
  if (input.spec) {
    const validation = validateJobSpec(input.spec, legacyRegistry());
    if (!validation.ok) throw invalidSpec(validation.issues);
    const { items, ...head } = validation.spec;
    return { head, pipeline: validation.pipeline, options: resolveJobOptions(head, items.length), itemCount: items.length, items };
  }
  if (input.specRef) {
    const headCheck = validateJobSpec({ ...input.specRef.head, items: [] }, legacyRegistry());
    if (!headCheck.ok) throw invalidSpec(headCheck.issues);
    const full = await engine.inspectStoredSpec(input.specRef.ref);
    if (!full.ok) throw invalidSpec(full.issues);
    return {
      head: input.specRef.head,
      pipeline: headCheck.pipeline,
      options: resolveJobOptions(input.specRef.head, full.itemCount),
      itemCount: full.itemCount,
      ref: input.specRef.ref,
    };
  }
  throw invalidSpec([{ path: '(root)', code: 'missing_spec', message: 'the job input has neither spec nor specRef' }]);
}

export async function legacyJobWorkflow(input: JobInput): Promise<JobResult> {
  const info = workflowInfo();
  const jobId = info.workflowId;
  const startedAt = input.resume?.startedAt ?? Date.now();
  let phase: JobPhase = 'validating';
  let round = input.resume?.round ?? 1;
  let settled = false;
  let result: JobResult | undefined;
  let stopRequest: StopReason | undefined;
  let closeRequested = false;
  let rotating = false;
  let pendingRetry: { request: RetryRequest; queued: string[] } | undefined;
  let runner: ItemRunner | undefined;
  let shardTally: Tally | undefined;
  let shardProgress = { done: 0, total: 0 };
  let shardScope: CancellationScope | undefined;

  const requestCancel = (reason: string) => {
    if (phase === 'retry-window' || settled) {
      closeRequested = true;
      return;
    }
    stopRequest ??= { kind: 'cancelled', reason };
    runner?.requestStop(stopRequest);
    shardScope?.cancel();
  };

  // Handlers first, so nothing sent early is lost.
  setHandler(progressQuery, (): JobProgress => {
    const counts = runner ? runner.countsSoFar() : shardTally ? { ...shardTally.counts } : { ...emptyStatusCounts(), outputs: 0 };
    return {
      jobId,
      pipeline: input.spec?.pipeline ?? input.specRef?.head.pipeline ?? 'unknown',
      phase,
      settled,
      round,
      counts: { items: prepared?.itemCount ?? 0, ...counts },
      inFlight: runner?.busy ?? 0,
      backoff: runner?.backoffEntries() ?? [],
      shards: shardProgress,
      pendingRequests: 0,
      rejectedRequests: [],
    };
  });
  setHandler(awaitResultUpdate, async ({ round: wanted }) => {
    const target = wanted ?? round;
    await condition(() => (settled && result !== undefined && result.round >= target) || rotating);
    if (rotating) {
      // The history is being rotated: the caller asks the next run (the client does so itself).
      throw ApplicationFailure.create({ type: ErrorTypes.JobRotating, message: 'the job continued as new; ask again', nonRetryable: true });
    }
    return result as JobResult;
  });
  setHandler(cancelUpdate, ({ reason }) => {
    requestCancel(reason ?? 'cancelled by operator');
    return { accepted: true, effect: 'stopped' as const };
  });
  setHandler(cancelSignal, ({ reason }) => requestCancel(reason ?? 'cancelled by operator'));
  setHandler(
    retryUpdate,
    async (request) => {
      const queued = selectRetry(request);
      pendingRetry = { request, queued };
      if (phase === 'running' && runner) {
        // Still running: wake items waiting in backoff now.
        for (const id of queued) runner.requeue(id, request.sources?.[id]);
        pendingRetry = undefined;
        return { queued, queuedCount: queued.length, round };
      }
      // In the retry window: the main loop starts the next round; answer once it is queued.
      const nextRound = round + 1;
      await condition(() => round >= nextRound && phase === 'running');
      return { queued, queuedCount: queued.length, round: nextRound };
    },
    {
      validator: (request: RetryRequest) => {
        if (closeRequested || phase === 'closed') throw new Error('the job is closed; start a follow-up job instead');
        if (phase !== 'retry-window' && phase !== 'running') throw new Error(`the job is ${phase}; retry is possible while running or in the retry window`);
        if (pendingRetry) throw new Error('a retry is already being queued');
        if (rotating) throw new Error('the job is continuing as new; try again in a moment');
        if (!runner) throw new Error('this job ran in shards; retry its failed items with a follow-up job');
        if (selectRetry(request).length === 0) throw new Error('no failed or waiting item matches the selection');
        for (const [id, source] of Object.entries(request.sources ?? ({} as Record<string, string>))) {
          if (!(request.items ?? []).includes(id)) throw new Error(`a corrected source is given for "${id}", which is not selected with --item`);
          if (!/^(file|https?):\/\//.test(source)) throw new Error(`corrected source for "${id}" must be a file:// or http(s):// URI`);
        }
      },
    },
  );

  function selectRetry(request: RetryRequest): string[] {
    if (!runner) return [];
    const ids = new Set(request.items ?? []);
    const types = new Set(request.types ?? []);
    return runner.states
      .filter((state) => {
        const failed = state.phase === 'done' && (state.records ?? []).some((record) => record.status === 'Failed');
        const waiting = phase === 'running' && state.phase === 'backoff';
        if (!failed && !waiting) return false;
        if (ids.size > 0 && !ids.has(state.item.id)) return false;
        if (types.size > 0 && !types.has(state.lastError?.type ?? '')) return false;
        return true;
      })
      .map((state) => state.item.id);
  }

  const root = CancellationScope.current();
  root.cancelRequested.catch(() => requestCancel('cancellation requested through Temporal'));

  let prepared: Prepared | undefined;
  try {
    prepared = await prepare(input);
  } catch (error) {
    phase = 'closed';
    if (error instanceof ApplicationFailure) {
      upsertSearchAttributes([
        { key: SearchKeys.status, value: 'Failed' },
        { key: SearchKeys.hasErrors, value: true },
      ]);
    }
    throw error;
  }
  const { head, pipeline, options, itemCount } = prepared;
  upsertSearchAttributes([
    { key: SearchKeys.pipeline, value: head.pipeline },
    { key: SearchKeys.status, value: 'Running' },
    { key: SearchKeys.hasErrors, value: false },
    { key: SearchKeys.failedCount, value: 0 },
  ]);
  const allowed = allowedFailures(options, itemCount);
  const sharded = prepared.ref !== undefined || itemCount > options.shardSize;

  return CancellationScope.nonCancellable(async () => {
    for (;;) {
      phase = 'running';
      settled = false;
      setCurrentDetails(`Running round ${round}: ${itemCount} item(s) of pipeline ${head.pipeline}.`);
      let records: OutputRecord[] | undefined;
      let tally: Tally;
      let fatal: ErrorReport | undefined;
      let bytesIn = 0;
      let bytesOut = 0;
      let attempts = 0;
      let manifest: string | undefined;

      if (!sharded) {
        if (!runner) {
          const items = prepared.items ?? [];
          runner = new ItemRunner(
            { job: { jobId, pipeline: head.pipeline, params: head.params, destination: head.destination }, pipeline, options, scopeId: jobId, allowedFailures: allowed },
            input.resume?.snapshot ?? ItemRunner.initialState(items.map((item) => ({ item, outputs: outputsForItem(head, item, pipeline) }))),
          );
          if (stopRequest) runner.requestStop(stopRequest);
        }
        const outcome = await runner.run();
        if (outcome === 'rotate') {
          rotating = true;
          await condition(allHandlersFinished);
          return continueAsNew<typeof legacyJobWorkflow>({ ...input, resume: { round, startedAt, snapshot: runner.snapshot() } });
        }
        records = runner.finalRecords();
        tally = tallyRecords(emptyTally(), records);
        if (runner.stop?.kind === 'fatal') fatal = runner.stop.report;
        for (const state of runner.states) {
          bytesIn += state.bytesIn ?? 0;
          bytesOut += state.bytesOut ?? 0;
        }
        attempts = runner.attempts;
        if (records.length > INLINE_OUTPUT_LIMIT) {
          const written = await writeManifest(jobId, round, async () => [await engine.writeRecords({ jobId, part: `round-${round}`, records: records ?? [] })]);
          if (typeof written === 'string') manifest = written;
          else fatal ??= written;
        }
      } else {
        const shards = await runShards({
          jobId,
          head,
          prepared,
          options,
          allowed,
          round,
          onProgress: (done, total, t) => ((shardProgress = { done, total }), (shardTally = t)),
          setScope: (scope) => (shardScope = scope),
          isStopped: () => stopRequest,
        });
        tally = shards.tally;
        fatal = shards.fatal;
        bytesIn = shards.bytesIn;
        bytesOut = shards.bytesOut;
        attempts = shards.attempts;
        const assembled = await writeManifest(jobId, round, async () => shards.parts.filter(Boolean));
        if (typeof assembled === 'string') manifest = assembled;
        else fatal ??= assembled;
      }

      if (fatal) addError(tally, fatal);
      const ended = stopRequest?.kind === 'cancelled' ? 'cancelled' : fatal ? 'fatal' : undefined;
      const status = deriveJobStatus(tally.counts, ended);
      const finishedAt = Date.now();
      const itemsDone = tally.counts.outputs > 0 ? itemCount : 0;
      result = {
        schemaVersion: RESULT_SCHEMA_VERSION,
        jobId,
        pipeline: head.pipeline,
        success: isSuccess(status),
        status,
        round,
        counts: { items: itemCount, ...tally.counts },
        ...(manifest ? { manifest } : { outputs: records ?? [] }),
        errors: tally.errors,
        ...(tally.errorsTruncated ? { errorsTruncated: true } : {}),
        failureCounts: tally.failureCounts,
        failuresByReason: tally.failuresByReason,
        ...(tally.truncated ? { truncated: true } : {}),
        retryable: { items: tally.failedItems, types: Object.keys(tally.failureCounts) },
        ...(stopRequest?.kind === 'cancelled' ? { cancelReason: stopRequest.reason } : {}),
        ...(input.retryOf ? { retryOf: input.retryOf } : {}),
        metrics: {
          startedAt: new Date(startedAt).toISOString(),
          finishedAt: new Date(finishedAt).toISOString(),
          elapsedMs: finishedAt - startedAt,
          bytesIn,
          bytesOut,
          attempts,
          itemsPerSec: finishedAt > startedAt ? Math.round((itemsDone / ((finishedAt - startedAt) / 1000)) * 100) / 100 : itemsDone,
        },
      };
      if (options.archive && head.destination && !ended) result = { ...result, archive: await runArchive(jobId, round, head.destination, result) };
      if (result.archive?.error) result = { ...result, errors: [...result.errors, result.archive.error] };
      publish(result);
      settled = true;
      log.info('job settled', { jobId, status, round });

      const notifications = await sendWebhook(result, head);
      if (notifications) result = { ...result, notifications: [...(result.notifications ?? []), notifications] };

      const failed = tally.failedItems > 0;
      if (!failed || ended || options.retryWindowMs <= 0 || sharded) break;
      phase = 'retry-window';
      setCurrentDetails(`${describe(result)} Open for retry until ${new Date(Date.now() + options.retryWindowMs).toISOString()}.`);
      const retrying = await condition(() => pendingRetry !== undefined || closeRequested, options.retryWindowMs);
      if (!retrying || closeRequested || !pendingRetry) break;
      const { request, queued } = pendingRetry;
      for (const id of queued) runner?.requeue(id, request.sources?.[id]);
      pendingRetry = undefined;
      round += 1;
      phase = 'running';
    }
    phase = 'closed';
    await condition(allHandlersFinished);
    return result as JobResult;
  });

  function publish(current: JobResult): void {
    upsertSearchAttributes([
      { key: SearchKeys.status, value: current.status },
      { key: SearchKeys.hasErrors, value: current.counts.Failed > 0 || current.errors.length > 0 },
      { key: SearchKeys.failedCount, value: current.counts.Failed },
    ]);
    setCurrentDetails(describe(current));
  }
}

/** The manifest location, or the report of why it could not be written (the result still goes out). */
async function writeManifest(jobId: string, round: number, parts: () => Promise<string[]>): Promise<string | ErrorReport> {
  try {
    return await engine.assembleManifest({ jobId, round, parts: await parts() });
  } catch (error) {
    return { ...toErrorReport(error, { at: new Date().toISOString(), step: 'manifest' }), class: 'fatal' };
  }
}

function describe(result: JobResult): string {
  const c = result.counts;
  const lines = [
    `${result.status} (round ${result.round}): ${c.items} item(s), ${c.outputs} output(s) — ${c.Available} Available, ${c.Missing} Missing, ${c.Failed} Failed, ${c.Unsolved} Unsolved, ${c.Skipped} Skipped, ${c.Cancelled} Cancelled.`,
  ];
  for (const [type, ids] of Object.entries(result.failuresByReason)) {
    lines.push(`- ${type}: ${result.failureCounts[type] ?? ids.length} item(s), e.g. ${ids.slice(0, 5).join(', ')}`);
  }
  if (result.cancelReason) lines.push(`Cancelled: ${result.cancelReason}`);
  return lines.join('\n');
}

async function runArchive(jobId: string, round: number, destination: string, result: JobResult): Promise<NonNullable<JobResult['archive']>> {
  try {
    const summary = await executeChild<typeof archiveWorkflow>(WORKFLOW_TYPES.archive, {
      workflowId: archiveWorkflowId(jobId, round),
      args: [{ jobId, round, destination, ...(result.outputs ? { outputs: result.outputs } : {}), ...(result.manifest ? { manifest: result.manifest } : {}) }],
      staticSummary: `archive of job ${jobId} (round ${round})`,
    });
    return archiveEntry(summary);
  } catch (error) {
    // The archive is an extra: its failure is reported (ChildJobFailed with the cause), the outputs stand.
    return { files: 0, missing: 0, error: toErrorReport(error, { at: new Date().toISOString(), step: 'archive' }) };
  }
}

async function sendWebhook(result: JobResult, head: SpecHead): Promise<Notification | undefined> {
  const webhook = head.options?.webhook;
  if (!webhook) return undefined;
  try {
    return await notify.deliverWebhook({ webhook: { url: webhook.url, secretEncrypted: webhook.secretEncrypted, secretRef: webhook.secretRef }, result });
  } catch (error) {
    const report = toErrorReport(error, { at: new Date().toISOString(), step: 'notify' });
    return { kind: 'webhook', url: webhook.url, delivered: false, attempts: 0, error: report, round: result.round, at: report.at };
  }
}

interface ShardRun {
  tally: Tally;
  fatal?: ErrorReport;
  parts: string[];
  bytesIn: number;
  bytesOut: number;
  attempts: number;
}

async function runShards(args: {
  jobId: string;
  head: SpecHead;
  prepared: Prepared;
  options: ResolvedOptions;
  allowed: number | undefined;
  round: number;
  onProgress: (done: number, total: number, tally: Tally) => void;
  setScope: (scope: CancellationScope) => void;
  isStopped: () => StopReason | undefined;
}): Promise<ShardRun> {
  const { jobId, head, prepared, options, allowed, round } = args;
  const total = Math.ceil(prepared.itemCount / options.shardSize);
  const run: ShardRun = { tally: emptyTally(), parts: new Array<string>(total).fill(''), bytesIn: 0, bytesOut: 0, attempts: 0 };
  const scope = new CancellationScope({ cancellable: true });
  args.setScope(scope);
  let next = 0;
  let done = 0;
  const stopAll = (report: ErrorReport) => {
    run.fatal ??= report;
    scope.cancel();
  };
  const startShard = async (shardIndex: number): Promise<void> => {
    const { from, to } = shardRange(prepared, shardIndex, options.shardSize);
    const shardInput: ShardInput = {
      jobId,
      shardIndex,
      head,
      round,
      batchSize: options.batchSize,
      ...(prepared.items ? { items: prepared.items.slice(from, to) } : { itemsRef: { ref: prepared.ref ?? '', from, to } }),
      ...(allowed !== undefined ? { allowedFailures: Math.max(0, allowed - run.tally.failedItems) } : {}),
    };
    let summary: ShardSummary;
    try {
      summary = await scope.run(() =>
        executeChild<typeof shardWorkflow>(WORKFLOW_TYPES.shard, {
          workflowId: shardWorkflowId(jobId, shardIndex),
          args: [shardInput],
          staticSummary: `shard ${shardIndex} of job ${jobId}: items ${from}–${to - 1}`,
          cancellationType: 'WAIT_CANCELLATION_COMPLETED',
        }),
      );
    } catch (error) {
      const report = toErrorReport(error, { at: new Date().toISOString() });
      const cause = error instanceof ChildWorkflowFailure ? report : { ...report, type: ErrorTypes.ChildJobFailed };
      stopAll({ ...cause, class: 'fatal' });
      return;
    }
    mergeShard(run.tally, summary);
    run.parts[shardIndex] = summary.recordsLocation;
    run.bytesIn += summary.bytesIn;
    run.bytesOut += summary.bytesOut;
    run.attempts += summary.attempts;
    if (summary.fatal) stopAll(summary.fatal);
    else if (allowed !== undefined && run.tally.failedItems > allowed) stopAll(thresholdReport(run.tally.failedItems, allowed));
    done += 1;
    args.onProgress(done, total, run.tally);
  };
  args.onProgress(0, total, run.tally);
  const lanes = Array.from({ length: Math.min(MAX_PARALLEL_SHARDS, total) }, async () => {
    while (next < total) {
      const index = next++;
      if (run.fatal || args.isStopped()) {
        // Never started: its items are Cancelled.
        const records = await cancelledRecords(prepared, head, index, options.shardSize, args.isStopped(), run.fatal);
        run.parts[index] = await engine.writeRecords({ jobId, part: `round-${round}-shard-${index}`, records });
        tallyRecords(run.tally, records);
        continue;
      }
      await startShard(index);
    }
  });
  await Promise.all(lanes);
  return run;
}

/** Item indices [from, to) of one shard. */
function shardRange(prepared: Prepared, index: number, shardSize: number): { from: number; to: number } {
  const from = index * shardSize;
  return { from, to: Math.min(prepared.itemCount, from + shardSize) };
}

async function loadShardItems(prepared: Prepared, index: number, shardSize: number): Promise<JobSpec['items']> {
  const { from, to } = shardRange(prepared, index, shardSize);
  return prepared.items ? prepared.items.slice(from, to) : engine.loadItems({ ref: prepared.ref ?? '', from, to });
}

async function cancelledRecords(prepared: Prepared, head: SpecHead, index: number, shardSize: number, stop: StopReason | undefined, fatal: ErrorReport | undefined): Promise<OutputRecord[]> {
  const items = await loadShardItems(prepared, index, shardSize);
  const reason = stop?.kind === 'cancelled' ? `job cancelled: ${stop.reason}` : `job ended early by ${fatal?.type ?? 'a fatal error'}`;
  return items.flatMap((item) => outputsForItem(head, item, prepared.pipeline).map((output): OutputRecord => ({ item: item.id, output, status: 'Cancelled', reason })));
}
