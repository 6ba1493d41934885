/**
 * `synthetic`: items declare their own work and failure (CONTRACT.md) — for tests, chaos and
 * benchmarks. Written on the public `definePipeline` API, like any user's pipeline.
 */
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { z } from 'zod';
import { ItemError } from '../activities/types';
import { definePipeline } from '../define-pipeline';
import { ErrorTypes } from '../shared';

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

const STEP = 'work';

/** Burns real CPU in short slices so heartbeats and cancellation still get through. */
export async function burnCpu(ms: number, signal?: AbortSignal): Promise<void> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const sliceEnd = Math.min(end, performance.now() + 10);
    while (performance.now() < sliceEnd) {
      /* busy */
    }
    if (signal?.aborted) throw signal.reason ?? new Error('aborted');
    if (performance.now() < end) await yieldToEventLoop();
  }
}

function waitForAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

export interface SyntheticDeps {
  /** How a `crash` item ends the process; the real worker kills itself with SIGKILL. */
  crashProcess: () => void;
}

export function createSyntheticPipeline(deps: SyntheticDeps) {
  return definePipeline({
    name: 'synthetic',
    version: '1',
    description: 'Items that declare their own CPU work, transient failures and outcome.',
    outputs: ['result'],
    source: 'none',
    /** Optional: each Available item writes `<destination>/<item>/result.json` (an idempotent effect). */
    destination: 'optional',
    itemParams: SyntheticItemParams,
    steps: [
      {
        name: STEP,
        retry: { maxAttempts: 3, initialIntervalMs: 100, backoffCoefficient: 2, maximumIntervalMs: 10_000 },
        itemTimeoutMs: 10 * 60_000,
        run: async (ctx) => {
          const params = ctx.item.params;
          const outcome = params.outcome ?? 'ok';
          // `dispatch` counts every run of the item, crashes included (a crash writes no attempt).
          if (outcome === 'crash' || (outcome === 'crashOnce' && ctx.dispatch === 1)) deps.crashProcess();
          if (params.cpuMs) await burnCpu(params.cpuMs, ctx.signal);
          if (ctx.dispatch <= (params.transientFailures ?? 0)) {
            throw new ItemError({
              type: ErrorTypes.TransientItemError,
              message: `declared transient failure ${ctx.dispatch} of ${params.transientFailures}`,
              details: { run: ctx.dispatch, transientFailures: params.transientFailures },
              ...(params.retryAfterMs !== undefined ? { retryAfterMs: params.retryAfterMs } : {}),
            });
          }
          switch (outcome) {
            case 'missing':
              return { result: { status: 'Missing', reason: 'the item declared its result missing' } };
            case 'unsolved':
              return { result: { status: 'Unsolved', reason: 'the item declared no solution exists' } };
            case 'unprocessable': {
              let cause: Error | undefined;
              for (let depth = params.causeDepth ?? 0; depth > 0; depth--) cause = new Error(`cause ${depth}: ${'c'.repeat(Math.min(params.errorBytes ?? 0, 2_000))}`, cause ? { cause } : undefined);
              const message = `the item declared itself unprocessable${params.errorBytes ? ` ${'x'.repeat(params.errorBytes)}` : ''}`;
              throw new ItemError({ type: ErrorTypes.ItemUnprocessable, message, details: { outcome }, ...(cause ? { cause } : {}) });
            }
            case 'fatal':
              throw new ItemError({ type: ErrorTypes.FatalItemError, class: 'fatal', message: 'the item declared a fatal error', details: { outcome } });
            case 'hang':
              return waitForAbort(ctx.signal);
            default: {
              if (!ctx.job.destination) return { result: { status: 'Available' } };
              // An idempotent effect: the same file for every re-run of the item.
              const file = await ctx.writeOutput('result.json', JSON.stringify({ item: ctx.item.id, params: ctx.item.params }));
              return { result: { status: 'Available', ...file } };
            }
          }
        },
      },
    ],
  });
}

/** The definition clients and workers validate specs with (the worker builds its own, with its crash hook). */
export const syntheticPipeline = createSyntheticPipeline({ crashProcess: () => process.kill(process.pid, 'SIGKILL') });
