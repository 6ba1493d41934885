/**
 * The "naive" baseline: what a careful user writes by hand — one activity per item in one
 * workflow, at most 1 000 pending at once, default retry options. Not part of Faultline.
 */
import { proxyActivities } from '@temporalio/workflow';
import type { createNaiveActivities } from './naive-activities';

const { naiveWork } = proxyActivities<ReturnType<typeof createNaiveActivities>>({ startToCloseTimeout: '1m' });

export async function naiveWorkflow(input: { kind: 'cpu1ms' | 'thumbnail'; count: number }): Promise<number> {
  let next = 0;
  let done = 0;
  const lane = async () => {
    while (next < input.count) {
      const index = next++;
      await naiveWork({ kind: input.kind, index });
      done++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(1_000, input.count) }, lane));
  return done;
}

/** The floor of a one-item job's latency: a workflow that does nothing, started and awaited by a client. */
export async function emptyWorkflow(): Promise<number> {
  return 1;
}
