/**
 * The bench's CPU-bound pipeline, written as a user would write theirs: each item computes for
 * `params.cpuMs` (the same `burnCpu` the raw, naive, BullMQ and DBOS modes run) and says so with
 * `work: 'cpu'`. The bench's Faultline workers load it with FAULTLINE_PIPELINES.
 */
import { z } from 'zod';
import type { definePipeline as DefinePipeline } from '../src';
import type { burnCpu as BurnCpu } from '../src/pipelines/synthetic';

// From the same copy of Faultline the workers run: with FAULTLINE_FROM_DIST=1 (the bench's default)
// the built dist/, as a user's pipeline imports the package; a static import of ../src would run the
// per-item pipeline code from the sources through tsx inside a dist/ worker.
const library = process.env.FAULTLINE_FROM_DIST === '1' ? '../dist' : '../src';
/* eslint-disable @typescript-eslint/no-require-imports -- the copy is chosen at run time */
const { definePipeline } = require(library) as { definePipeline: typeof DefinePipeline };
const { burnCpu } = require(`${library}/pipelines/synthetic`) as { burnCpu: typeof BurnCpu };
/* eslint-enable @typescript-eslint/no-require-imports */

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
