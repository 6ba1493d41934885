/** The synthetic pipeline's work: real CPU burn, declared failures, real crashes and hangs. */
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { syntheticPipeline, type SyntheticItemParams } from '../pipelines/synthetic';
import { ErrorTypes } from '../shared';
import { resolveAllowedPath, writeOutputFile } from './files';
import { ItemError, type ItemContext, type ItemWork, type PipelineImplementation } from './types';

const STEP = 'work';

export interface SyntheticDeps {
  /** How a `crash` item ends the process; the real worker kills itself with SIGKILL. */
  crashProcess: () => void;
  allowedRoots: readonly string[];
}

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

export function createSyntheticPipeline(deps: SyntheticDeps): PipelineImplementation {
  return {
    name: syntheticPipeline.name,
    async processItem({ job, entry, signal }: ItemContext): Promise<ItemWork> {
      const params = (entry.item.params ?? {}) as SyntheticItemParams;
      const outcome = params.outcome ?? 'ok';
      if (outcome === 'crash' || (outcome === 'crashOnce' && entry.run === 1)) deps.crashProcess();
      if (params.cpuMs) await burnCpu(params.cpuMs, signal);
      if (entry.run <= (params.transientFailures ?? 0)) {
        throw new ItemError({
          type: ErrorTypes.TransientItemError,
          message: `declared transient failure ${entry.run} of ${params.transientFailures}`,
          step: STEP,
          details: { run: entry.run, transientFailures: params.transientFailures },
          ...(params.retryAfterMs !== undefined ? { retryAfterMs: params.retryAfterMs } : {}),
        });
      }
      const record = (status: 'Available' | 'Missing' | 'Unsolved', reason?: string) => ({
        records: [{ item: entry.item.id, output: 'result', status, ...(reason ? { reason } : {}) }],
        bytesIn: 0,
        bytesOut: 0,
      });
      switch (outcome) {
        case 'missing':
          return record('Missing', 'the item declared its result missing');
        case 'unsolved':
          return record('Unsolved', 'the item declared no solution exists');
        case 'unprocessable': {
          let cause: Error | undefined;
          for (let depth = params.causeDepth ?? 0; depth > 0; depth--) cause = new Error(`cause ${depth}: ${'c'.repeat(Math.min(params.errorBytes ?? 0, 2_000))}`, cause ? { cause } : undefined);
          const message = `the item declared itself unprocessable${params.errorBytes ? ` ${'x'.repeat(params.errorBytes)}` : ''}`;
          throw new ItemError({ type: ErrorTypes.ItemUnprocessable, message, step: STEP, details: { outcome }, ...(cause ? { cause } : {}) });
        }
        case 'fatal':
          throw new ItemError({ type: ErrorTypes.FatalItemError, class: 'fatal', message: 'the item declared a fatal error', step: STEP, details: { outcome } });
        case 'hang':
          return waitForAbort(signal);
        default: {
          if (!job.destination) return record('Available');
          // An idempotent effect: the same file for every re-run of the item.
          const dir = await resolveAllowedPath(job.destination, deps.allowedRoots, 'destination', 'deliver');
          const file = await writeOutputFile(dir, entry.item.id, 'result.json', JSON.stringify({ item: entry.item.id, params }), STEP);
          return { records: [{ item: entry.item.id, output: 'result', status: 'Available', ...file }], bytesIn: 0, bytesOut: file.bytes };
        }
      }
    },
  };
}
