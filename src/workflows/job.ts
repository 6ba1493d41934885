/**
 * The job workflow: a thin entry. Its state and main loop live in `JobRun`; the handlers only
 * delegate to it. Jobs recorded before engine v2 replay the frozen v1 code.
 */
import { ApplicationFailure, patched, setHandler } from '@temporalio/workflow';
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
  if (!patched(PATCHES.engineV2)) return legacyJobWorkflow(raw as unknown as LegacyJobInput);
  const input = normalizeJobInput(raw);
  if (!input) throw invalidSpec([{ path: '(root)', code: 'missing_spec', message: 'the job input has no spec (expected {job: {kind, ...}})' }]);
  const job = new JobRun(input);
  setHandler(progressQuery, () => job.progress());
  setHandler(resultQuery, () => job.settledResult());
  setHandler(awaitResultUpdate, ({ round }) => job.awaitResult(round));
  setHandler(retryUpdate, async (request) => (await job.retry(request, 'update')) ?? unreachable(), { validator: (request) => job.validateRetry(request) });
  setHandler(cancelUpdate, async ({ reason }) => (await job.cancel(reason ?? 'cancelled by operator', 'update')) ?? unreachable(), { validator: (_request) => job.validateCancel() });
  setHandler(retrySignal, (request) => void job.retry(request ?? {}, 'signal'));
  setHandler(cancelSignal, (request) => void job.cancel(request?.reason ?? 'cancelled by operator', 'signal'));
  setHandler(pauseUpdate, () => job.hold(true, 'update'), { validator: () => job.validateControl() });
  setHandler(resumeUpdate, () => job.hold(false, 'update'), { validator: () => job.validateControl() });
  setHandler(setLimitsUpdate, (request) => job.setLimits(request, 'update'), { validator: (request) => job.validateControl(request) });
  setHandler(pauseSignal, async () => void (await job.hold(true, 'signal')));
  setHandler(resumeSignal, async () => void (await job.hold(false, 'signal')));
  setHandler(setLimitsSignal, async (request) => void (await job.setLimits(request ?? {}, 'signal')));
  setHandler(flagUpdate, (request) => job.flag(request, 'update'), { validator: (request) => job.validateFlag(request) });
  setHandler(flagSignal, (request) => void job.flag(request ?? { reason: '' }, 'signal'));
  setHandler(sliceFailuresSignal, (report) => job.onSliceFailures(report));
  setHandler(itemFailuresSignal, (report) => job.onItemFailures(report));
  return job.run();
}

function unreachable(): never {
  throw ApplicationFailure.create({ type: 'InternalError', message: 'an update got no answer', nonRetryable: true });
}
