/** Workflow sinks: calls from workflow code into the worker's process, outside history (never replayed). */
import type { Sinks } from '@temporalio/workflow';

export interface FaultlineSinks extends Sinks {
  faultlineMetrics: {
    /** A round settled with this status after running this long (retry windows left out). */
    roundSettled(pipeline: string, status: string, runSeconds: number, round: number): void;
  };
}
