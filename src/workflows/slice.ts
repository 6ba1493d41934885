/**
 * A slice of a large job as a child workflow: the shared slice code with its records in job
 * storage. While the job has a failure threshold it signals each new failure to its job, so the
 * job can stop as soon as failures job-wide exceed it.
 */
import {
  ApplicationFailure,
  CancellationScope,
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  setHandler,
  sleep,
  upsertMemo,
  workflowInfo,
} from '@temporalio/workflow';
import { decidePatchBaseline, patched } from '../engine/patches';
import { runSlice } from '../engine/slice';
import { usePriorityKey } from '../engine/priority';
import type { ItemRunner } from '../engine/runner';
import {
  ErrorTypes,
  LEGACY_PLANS,
  PATCHES,
  SLICE_PROGRESS_MEMO_KEY,
  type SliceControl,
  type SliceCounts,
  emptyStatusCounts,
  type SliceInput,
  type SliceSummary,
  type StopReason,
  itemFailuresSignal,
  sliceControlSignal,
  sliceFailuresSignal,
  sliceProgressQuery,
} from '../shared';

/** Shortest time between two failure reports of a slice to its job (after the first). */
const REPORT_EVERY_MS = 1_000;

export async function sliceWorkflow(input: SliceInput): Promise<SliceSummary> {
  decidePatchBaseline();
  const pipeline = input.plan ?? LEGACY_PLANS[input.head.pipeline];
  if (!pipeline) throw ApplicationFailure.create({ type: ErrorTypes.InvalidSpec, message: `unknown pipeline "${input.head.pipeline}"`, nonRetryable: true });
  const info = workflowInfo();
  const v3 = patched(PATCHES.engineV3);
  let stop: StopReason | undefined;
  let runner: ItemRunner | undefined;
  // The job's pause/resume and new limits; kept so a runner created (or resumed) later gets them too.
  const control: SliceControl = { paused: input.paused ?? false, ...(input.priority !== undefined ? { priority: input.priority } : {}) };
  usePriorityKey(() => control.priority);
  let reporting = input.reportFailures;
  const apply = () => {
    if (!runner) return;
    runner.hold(control.paused ?? false);
    runner.setLimits({
      ...(control.concurrency !== undefined ? { concurrency: control.concurrency } : {}),
      ...(control.allowedFailures !== undefined ? { allowedFailures: control.allowedFailures } : {}),
    });
  };
  // The job's cancellation without its reason: the reason, sent just before, may still arrive after it.
  const stoppedByJob: StopReason = { kind: 'cancelled', reason: 'the job stopped this slice' };
  setHandler(sliceControlSignal, ({ stop: why, ...next }) => {
    if (why && (stop === undefined || stop === stoppedByJob)) {
      if (stop === stoppedByJob) runner?.explainStop(why);
      stop = why;
    }
    Object.assign(control, next);
    // A threshold set while the slice runs: report failures from now on.
    if (next.allowedFailures !== undefined) reporting = true;
    apply();
  });
  setHandler(itemFailuresSignal, (report) => runner?.noteEarlyFailures(report.items));
  setHandler(sliceProgressQuery, () => runner?.countsSoFar() ?? null);
  // The counts in the memo too, whenever they change: the server answers progress without a worker.
  const progressInMemo = patched(PATCHES.sliceProgressMemo);
  let published: string | undefined;
  const publishProgress = (counts: SliceCounts) => {
    const key = JSON.stringify(counts);
    if (!progressInMemo || key === published) return;
    published = key;
    upsertMemo({ [SLICE_PROGRESS_MEMO_KEY]: counts });
  };
  // From the first workflow task on (while a stored slice still reads its ids): a slice without the memo ran older code.
  publishProgress({ ...emptyStatusCounts(), outputs: 0 });
  CancellationScope.current().cancelRequested.catch(() => {
    stop ??= stoppedByJob;
  });

  // Failure reports to the job: at most one signal in flight, always the latest count.
  let reported = input.resume?.newFailures ?? 0;
  let latest = reported;
  let sending: Promise<void> | undefined;
  const parent = info.parent ? getExternalWorkflowHandle(info.parent.workflowId, info.parent.runId) : undefined;
  let unreachable = false;
  const report = () => {
    // Engine v3: a slice the job stopped needs to report nothing more; one whose report could not
    // be sent (the job cancelled it meanwhile) stops trying rather than retrying forever.
    if (!parent || sending || latest === reported || (v3 && (stop !== undefined || unreachable))) return;
    const count = latest;
    sending = parent
      .signal(sliceFailuresSignal, { sliceIndex: input.sliceIndex, round: input.round, newFailures: count })
      .then(
        () => void (reported = count),
        (error: unknown) => {
          unreachable = true;
          log.warn('could not report failures to the job', { error: String(error) });
        },
      )
      .then(async () => {
        // Engine v3: at most one report a second while failures keep coming, so a slice with
        // thousands of failures adds a few events a second to its job's history, not thousands.
        if (v3 && latest !== reported) await CancellationScope.nonCancellable(() => sleep(REPORT_EVERY_MS));
      })
      .finally(() => {
        sending = undefined;
        report();
      });
  };

  return CancellationScope.nonCancellable(async () => {
    const outcome = await runSlice(input, pipeline, info.workflowId, {
      ownWorkflow: true,
      runner: {
        pending: () => stop !== undefined && runner?.stop === undefined,
        drain: () => {
          if (runner) publishProgress(runner.countsSoFar());
          if (stop) runner?.requestStop(stop);
        },
      },
      onRunner: (current) => {
        runner = current;
        apply();
      },
      ...(parent
        ? {
            onFailure: (count: number) => {
              latest = count;
              if (reporting) report();
            },
          }
        : {}),
    });
    await condition(() => sending === undefined);
    if (outcome.kind === 'rotate') {
      await condition(allHandlersFinished);
      return continueAsNew<typeof sliceWorkflow>({
        ...input,
        resume: outcome.carry,
        paused: control.paused ?? false,
        reportFailures: reporting,
        ...(control.concurrency !== undefined ? { concurrency: control.concurrency } : {}),
        ...(control.allowedFailures !== undefined ? { allowedFailures: control.allowedFailures } : {}),
        ...(control.priority !== undefined ? { priority: control.priority } : {}),
      });
    }
    await condition(allHandlersFinished);
    return outcome.summary;
  });
}
