/**
 * The job workflow: a thin entry. Its state and main loop live in `JobRun`; the handlers only
 * delegate to it. Jobs recorded before engine v2 replay the frozen v1 code.
 */
import { ApplicationFailure, setHandler, workflowInfo } from '@temporalio/workflow';
import { decidePatchBaseline, patched } from '../engine/patches';
import { JobRun, invalidSpec } from '../engine/job-run';
import {
  type JobInput,
  type JobResult,
  PATCHES,
  awaitResultUpdate,
  cancelSignal,
  cancelUpdate,
  normalizeJobInput,
  progressQuery,
  retrySignal,
  retryUpdate,
  sliceFailuresSignal,
  itemFailuresSignal,
  pauseSignal,
  pauseUpdate,
  resumeSignal,
  resumeUpdate,
  setLimitsSignal,
  setLimitsUpdate,
  flagSignal,
  flagUpdate,
  resultQuery,
} from '../shared';
import { legacyJobWorkflow } from './legacy/job-v1';
import type { JobInput as LegacyJobInput } from './legacy/types-v1';

export async function jobWorkflow(raw: JobInput): Promise<JobResult> {
  // A v1 job that continues as new after the upgrade carries its v1 `resume`: it finishes on v1.
  if (isV1Resume(raw)) return legacyJobWorkflow(raw as unknown as LegacyJobInput);
  decidePatchBaseline();
  if (!patched(PATCHES.engineV2)) return legacyJobWorkflow(raw as unknown as LegacyJobInput);
  const input = normalizeJobInput(raw);
  if (!input) throw invalidSpec([{ path: '(root)', code: 'missing_spec', message: 'the job input has no spec (expected {job: {kind, ...}})' }]);
  const job = new JobRun(input);
  setHandler(progressQuery, () => job.controls.progress());
  setHandler(resultQuery, () => job.requests.settledResult());
  /** An update handler whose answer is noted with the workflow task it leaves in (`answersLeaveFirst`). */
  const answering =
    <A extends unknown[], R>(handler: (...args: A) => R | Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await handler(...args);
      } finally {
        job.s.updateAnsweredInTask = workflowInfo().historyLength;
      }
    };
  setHandler(
    awaitResultUpdate,
    answering(({ round }) => job.requests.awaitResult(round)),
  );
  setHandler(
    retryUpdate,
    answering(async (request) => (await job.requests.retry(request, 'update')) ?? unreachable()),
    { validator: (request) => job.requests.validateRetry(request) },
  );
  setHandler(
    cancelUpdate,
    answering(async ({ reason }) => (await job.requests.cancel(reason ?? 'cancelled by operator', 'update')) ?? unreachable()),
    { validator: (_request) => job.requests.validateCancel() },
  );
  setHandler(retrySignal, (request) => void job.requests.retry(request ?? {}, 'signal'));
  setHandler(cancelSignal, (request) => void job.requests.cancel(request?.reason ?? 'cancelled by operator', 'signal'));
  setHandler(
    pauseUpdate,
    answering(() => job.controls.hold(true, 'update')),
    { validator: () => job.controls.validateControl() },
  );
  setHandler(
    resumeUpdate,
    answering(() => job.controls.hold(false, 'update')),
    { validator: () => job.controls.validateControl() },
  );
  setHandler(
    setLimitsUpdate,
    answering((request) => job.controls.setLimits(request, 'update')),
    { validator: (request) => job.controls.validateControl(request) },
  );
  setHandler(pauseSignal, async () => void (await job.controls.hold(true, 'signal')));
  setHandler(resumeSignal, async () => void (await job.controls.hold(false, 'signal')));
  setHandler(setLimitsSignal, async (request) => void (await job.controls.setLimits(request ?? {}, 'signal')));
  setHandler(
    flagUpdate,
    answering((request) => job.controls.flag(request, 'update')),
    { validator: (request) => job.controls.validateFlag(request) },
  );
  setHandler(flagSignal, (request) => void job.controls.flag(request ?? { reason: '' }, 'signal'));
  setHandler(sliceFailuresSignal, (report) => job.allowance.onSliceFailures(report));
  setHandler(itemFailuresSignal, (report) => job.allowance.onItemFailures(report));
  return job.run();
}

function unreachable(): never {
  throw ApplicationFailure.create({ type: 'InternalError', message: 'an update got no answer', nonRetryable: true });
}

function isV1Resume(raw: unknown): boolean {
  return !!raw && typeof raw === 'object' && 'resume' in raw && !('job' in raw) && (raw as LegacyJobInput).resume !== undefined;
}
