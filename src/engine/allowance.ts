/**
 * The failure allowance: failures of finished slices, live reports of running ones, items the
 * round does not touch, and items a batch told of early; the job stops once they exceed it.
 */
import { type SliceFailuresReport, type ItemFailuresReport } from '../shared';
import { thresholdReport } from './runner';
import { type Prepared, type RoundRun, type JobState } from './job-state';

export class FailureAllowance {
  constructor(readonly s: JobState) {}

  failedSoFar(round: RoundRun): number {
    let live = 0;
    for (const count of this.s.liveFailures.values()) live += count;
    return round.baseFailed + this.s.finishedFailures + live;
  }

  checkThreshold(prepared: Prepared, round: RoundRun): void {
    const failed = this.failedSoFar(round);
    if (prepared.allowed !== undefined && failed > prepared.allowed) this.s.stopWith({ kind: 'fatal', report: thresholdReport(failed, prepared.allowed) });
  }

  onSliceFailures(report: SliceFailuresReport): void {
    if (report.round !== this.s.round || !this.s.current?.sliced) return;
    this.s.liveFailures.set(report.sliceIndex, Math.max(this.s.liveFailures.get(report.sliceIndex) ?? 0, report.newFailures));
  }

  /** An inline round's batch told of items that failed for good before it ended. */
  onItemFailures(report: ItemFailuresReport): void {
    this.s.runner?.noteEarlyFailures(report.items);
  }
}
