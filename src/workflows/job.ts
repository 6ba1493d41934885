/**
 * The job workflow: a thin entry. Its state and main loop live in `JobRun`; the handlers only
 * delegate to it. Jobs recorded before engine v2 replay the frozen v1 code.
 */
import type { UpdateDefinition } from '@temporalio/common';
import { ApplicationFailure, setHandler, workflowInfo } from '@temporalio/workflow';
import { decidePatchBaseline, patched } from '../engine/patches';
import { JobRun, invalidSpec } from '../engine/job-run';
import {
  type JobInput,
  type JobResult,
  ErrorTypes,
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
  /**
   * Every update of the job is registered here: its answer is noted with the workflow task it
   * leaves in, so the job lets it leave before it closes (`answersLeaveFirst`). ESLint refuses
   * `setHandler` for an update in this file.
   */
  const onUpdate = <T extends UpdateDefinition<unknown, unknown[]>>(
    update: T,
    handler: (...args: UpdateArgs<T>) => UpdateRet<T> | Promise<UpdateRet<T>>,
    validator?: (...args: UpdateArgs<T>) => void,
  ) =>
    setHandler(
      update as unknown as UpdateDefinition<UpdateRet<T>, UpdateArgs<T>>, // T is that type; TypeScript cannot see it through the conditional types
      async (...args: UpdateArgs<T>): Promise<UpdateRet<T>> => {
        try {
          return await handler(...args);
        } finally {
          job.s.updateAnsweredInTask = workflowInfo().historyLength;
        }
      },
      validator ? { validator } : undefined,
    );
  onUpdate(awaitResultUpdate, ({ round }) => job.requests.awaitResult(round));
  onUpdate(
    retryUpdate,
    async (request) => (await job.requests.retry(request, 'update')) ?? unreachable(),
    (request) => job.requests.validateRetry(request),
  );
  onUpdate(
    cancelUpdate,
    async ({ reason }) => (await job.requests.cancel(reason ?? 'cancelled by operator', 'update')) ?? unreachable(),
    (_request) => job.requests.validateCancel(),
  );
  setHandler(retrySignal, (request) => void job.requests.retry(request ?? {}, 'signal'));
  setHandler(cancelSignal, (request) => void job.requests.cancel(request?.reason ?? 'cancelled by operator', 'signal'));
  onUpdate(
    pauseUpdate,
    () => job.controls.hold(true, 'update'),
    () => job.controls.validateControl(),
  );
  onUpdate(
    resumeUpdate,
    () => job.controls.hold(false, 'update'),
    () => job.controls.validateControl(),
  );
  onUpdate(
    setLimitsUpdate,
    (request) => job.controls.setLimits(request, 'update'),
    (request) => job.controls.validateControl(request),
  );
  setHandler(pauseSignal, async () => void (await job.controls.hold(true, 'signal')));
  setHandler(resumeSignal, async () => void (await job.controls.hold(false, 'signal')));
  setHandler(setLimitsSignal, async (request) => void (await job.controls.setLimits(request ?? {}, 'signal')));
  onUpdate(
    flagUpdate,
    (request) => job.controls.flag(request, 'update'),
    (request) => job.controls.validateFlag(request),
  );
  setHandler(flagSignal, (request) => void job.controls.flag(request ?? { reason: '' }, 'signal'));
  setHandler(sliceFailuresSignal, (report) => job.allowance.onSliceFailures(report));
  setHandler(itemFailuresSignal, (report) => job.allowance.onItemFailures(report));
  return job.run();
}

type UpdateArgs<T> = T extends UpdateDefinition<unknown, infer Args extends unknown[]> ? Args : never;
type UpdateRet<T> = T extends UpdateDefinition<infer Ret, unknown[]> ? Ret : never;

function unreachable(): never {
  throw ApplicationFailure.create({ type: ErrorTypes.InternalError, message: 'an update got no answer', nonRetryable: true });
}

function isV1Resume(raw: unknown): boolean {
  return !!raw && typeof raw === 'object' && 'resume' in raw && !('job' in raw) && (raw as LegacyJobInput).resume !== undefined;
}
