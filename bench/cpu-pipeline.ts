/**
 * The bench's CPU-bound pipeline, written as a user would write theirs: each item computes for
 * `params.cpuMs` (the same `burnCpu` the raw, naive, BullMQ and DBOS modes run) and says so with
 * `work: 'cpu'`. The bench's Faultline workers load it with FAULTLINE_PIPELINES.
 */
import { z } from 'zod';
import { definePipeline } from '../src';
import { burnCpu } from '../src/pipelines/synthetic';

export const benchCpu = definePipeline({
  name: 'bench-cpu',
  version: '1',
  description: 'Items that compute for params.cpuMs milliseconds.',
  outputs: ['result'],
  source: 'none',
  destination: 'none',
  work: 'cpu',
  itemParams: z.object({ cpuMs: z.number().min(0).max(60_000) }).strict(),
  steps: [
    {
      name: 'compute',
      sideEffects: false,
      run: async (ctx) => {
        await burnCpu(ctx.item.params.cpuMs, ctx.signal);
        return { result: { status: 'Available' } };
      },
    },
  ],
});
