/** `synthetic`: items declare their own work and failure (CONTRACT.md) — for tests, chaos and benchmarks. */
import { z } from 'zod';
import { definePipelineDefinition } from '../shared/pipeline';

export const SyntheticOutcomes = ['ok', 'missing', 'unsolved', 'unprocessable', 'fatal', 'crash', 'crashOnce', 'hang'] as const;

export const SyntheticItemParams = z
  .object({
    cpuMs: z.number().min(0).max(600_000).optional(),
    transientFailures: z.number().int().min(0).max(1_000_000).optional(),
    /** Suggested delay for the transient failures (like an HTTP Retry-After). */
    retryAfterMs: z.number().int().min(0).max(3_600_000).optional(),
    outcome: z.enum(SyntheticOutcomes).optional(),
    /** An `unprocessable` item's error message is this long, like a library's error with a dump in it. */
    errorBytes: z.number().int().min(0).max(16_000_000).optional(),
    /** Its error has a cause chain this deep, each cause with its own message and stack. */
    causeDepth: z.number().int().min(0).max(100).optional(),
  })
  .strict();
export type SyntheticItemParams = z.infer<typeof SyntheticItemParams>;

export const syntheticPipeline = definePipelineDefinition({
  name: 'synthetic',
  description: 'Items that declare their own CPU work, transient failures and outcome.',
  outputs: ['result'],
  defaultOutputs: ['result'],
  steps: [
    {
      name: 'work',
      retry: { maxAttempts: 3, initialIntervalMs: 100, backoffCoefficient: 2, maximumIntervalMs: 10_000 },
      itemTimeoutMs: 10 * 60_000,
    },
  ],
  source: 'none',
  /** Optional: each Available item writes `<destination>/<item>/result.json` (an idempotent effect). */
  destination: 'optional',
  itemParams: SyntheticItemParams,
});
