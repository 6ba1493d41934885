/**
 * Request intake and answers: update validators, the request queue, rejections with declared
 * types, and the closed/rotating gates. Handlers only queue; the main loop answers.
 */
import { CancellationScope, condition } from '@temporalio/workflow';
import { patched } from './patches';
import {
  type CancelResponse,
  ErrorTypes,
  PATCHES,
  type JobRequest,
  type JobResult,
  type RejectedRequest,
  type RequestOrigin,
  type RetryRequest,
  type RetryResponse,
  unknownTypeMessage,
} from '../shared';
import { QUEUED_IDS_LISTED, rejection, type JobState } from './job-state';

export class RequestDesk {
  constructor(readonly s: JobState) {}

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

  private closingReason(origin: RequestOrigin = 'update'): { type: string; reason: string } | undefined {
    if (this.s.phase === 'closed') return { type: ErrorTypes.JobClosed, reason: 'the job is closed; start a follow-up job instead' };
    // Admitted now, it would wait for an answer continue-as-new never gives: the caller asks the next run.
    if (this.s.rotating && this.s.v3 && origin === 'update') return { type: ErrorTypes.JobRotating, reason: 'the job is continuing as new; ask again' };
    if (this.s.phase === 'validating') return undefined;
    if (this.s.pending.some((request) => request.kind === 'cancel')) return { type: ErrorTypes.JobCancelled, reason: 'the job is being cancelled' };
    return undefined;
  }

  private retryProblem(request: RetryRequest): { type: string; reason: string } | undefined {
    for (const [id, source] of Object.entries(request.sources ?? {})) {
      if (!(request.items ?? []).includes(id)) return { type: ErrorTypes.InvalidRequest, reason: `a corrected source is given for "${id}", which is not selected with --item` };
      if (!/^(file|https?):\/\//.test(source)) return { type: ErrorTypes.InvalidRequest, reason: `corrected source for "${id}" must be a file:// or http(s):// URI` };
    }
    // Judged on the settled result; a retry sent while a round runs waits for it to settle.
    if (this.s.settled && this.s.result) {
      if (this.s.result.retryable.items === 0) return { type: ErrorTypes.NothingToRetry, reason: 'no failed item to retry' };
      const types = request.types ?? [];
      if (types.length > 0 && !types.some((type) => (this.s.result?.failureCounts[type] ?? 0) > 0)) {
        return { type: ErrorTypes.UnknownErrorType, reason: unknownTypeMessage(types, this.s.result.failureCounts) };
      }
    }
    return undefined;
  }

  enqueue(request: { kind: 'retry'; origin: RequestOrigin; selection: RetryRequest } | { kind: 'cancel'; origin: RequestOrigin; reason: string }): number {
    const id = this.s.nextRequestId++;
    this.s.pending.push({ ...request, id, at: new Date().toISOString() } as JobRequest);
    return id;
  }

  private async outcome(id: number): Promise<RetryResponse | CancelResponse> {
    await CancellationScope.nonCancellable(() => condition(() => this.s.outcomes.has(id)));
    const outcome = this.s.outcomes.get(id);
    this.s.outcomes.delete(id);
    if (!outcome) throw rejection(ErrorTypes.InternalError, 'request lost');
    if ('error' in outcome) throw rejection(outcome.error.type, outcome.error.message);
    return outcome.ok;
  }

  reject(entry: Omit<RejectedRequest, 'at'>, requestId?: number): void {
    const at = new Date().toISOString();
    if (requestId !== undefined && entry.origin === 'update') this.s.outcomes.set(requestId, { error: { type: entry.type, message: entry.reason } });
    else this.s.rejected.push({ ...entry, at });
  }

  answer(request: JobRequest, ok: RetryResponse | CancelResponse): void {
    if (request.origin === 'update') this.s.outcomes.set(request.id, { ok });
  }

  rejectRequest(request: JobRequest, type: string, reason: string): void {
    this.reject({ kind: request.kind, origin: request.origin, type, reason, ...(request.kind === 'retry' ? { selection: request.selection } : {}) }, request.id);
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
    const target = wanted ?? this.s.round;
    // Shielded: a Temporal cancellation of the job must not fail a caller waiting for its result.
    await CancellationScope.nonCancellable(() => condition(() => (this.s.settled && this.s.result !== undefined && this.s.result.round >= target) || this.s.phase === 'closed' || this.s.rotating));
    if (this.s.result && (this.s.phase === 'closed' || (this.s.settled && this.s.result.round >= target))) return this.s.result;
    throw rejection(ErrorTypes.JobRotating, 'the job continued as new; ask again');
  }

  settledResult(): JobResult | null {
    return this.s.settled && this.s.result ? this.s.result : null;
  }

  /**
   * Handles queued cancels now. A retry whose selected items are all still in this (inline) round
   * wakes the ones waiting in backoff and is answered at once; any other retry waits for the round
   * to settle, because only then is it known which items failed.
   */
  drainWhileRunning(): void {
    this.s.drainedThrough = this.s.nextRequestId;
    this.wakeBackoffRetries();
    const cancels = this.s.pending.filter((request) => request.kind === 'cancel');
    if (cancels.length === 0) return;
    this.s.pending = this.s.pending.filter((request) => request.kind !== 'cancel');
    // A round already stopped by a fatal error keeps that stop: the cancel does not replace it.
    const stopped = this.s.runner?.stop;
    if (stopped && patched(PATCHES.answerWhileStopping)) this.s.stopWith(stopped);
    for (const request of cancels) {
      if (request.kind !== 'cancel') continue;
      this.s.stopWith({ kind: 'cancelled', reason: request.reason });
      // Already stopped by a fatal error: the cancel is still answered, and its reason kept in the result.
      if (this.s.v3) this.s.cancelReason ??= request.reason;
      this.answer(request, { accepted: true, effect: 'stopped' });
    }
  }

  private wakeBackoffRetries(): void {
    const runner = this.s.runner;
    if (!runner || this.s.stop || this.s.pending.some((request) => request.kind === 'cancel')) return;
    this.s.pending = this.s.pending.filter((request) => {
      if (request.kind !== 'retry' || request.selection.sources || !request.selection.items?.length) return true;
      const states = request.selection.items.map((id) => runner.get(id));
      if (!states.every((state) => state !== undefined && state.phase !== 'done')) return true;
      const woken = runner.retryNow(request.selection.items);
      this.answer(request, { queued: woken.slice(0, QUEUED_IDS_LISTED), queuedCount: woken.length, round: this.s.round });
      return false;
    });
  }
}
