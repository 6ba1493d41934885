/**
 * How many batches a worker process takes in at once. A fixed 100 slots lets a process take in far
 * more CPU-bound batches than its core can run: it runs them in turns, they all end late, and the
 * processes' shares of a job differ by whatever each happened to grab (BENCHMARKS.md, cpu1ms).
 * Adaptive slots take more work only while this process has room for it: batches that wait on I/O
 * leave the event loop idle, so slots grow to the maximum; batches that compute keep it busy, so the
 * process stays at a few and other processes take the rest.
 */
import { performance } from 'node:perf_hooks';
import type { ActivitySlotInfo, CustomSlotSupplier, SlotPermit, WorkerTuner } from '@temporalio/worker';

export const ADAPTIVE_SLOTS = {
  /** Always granted: one batch runs while the next one's result travels. */
  always: 2,
  /** Event-loop utilization (0–1) of the main thread at or above which no slot is added. */
  busyAt: 0.8,
  /** The window utilization is measured over, and the least time between two added slots. */
  windowMs: 50,
} as const;

/** CPU-bound (`work: 'cpu'`) batches running in this process. */
let computing = 0;

/**
 * Marks a CPU-bound batch running in this process until the returned function is called. Meanwhile
 * no slot is added beyond `ADAPTIVE_SLOTS.always` (a waiting reservation is looked at again every half
 * window, as while the loop is busy): the moment a process's batches end and its loop
 * idles until the next ones come looked like room for more, and a third batch it took ran its job's
 * last ~0.2 s on one process while the other had nothing left (cpu1ms, 2026-12-06).
 */
export function computingBatch(): () => void {
  computing += 1;
  let ended = false;
  return () => {
    if (ended) return;
    ended = true;
    computing -= 1;
  };
}

/** A slot supplier that adds slots beyond `ADAPTIVE_SLOTS.always`, up to `max`, while the process is not busy. */
export function adaptiveActivitySlots(max: number): CustomSlotSupplier<ActivitySlotInfo> {
  const always = Math.min(max, ADAPTIVE_SLOTS.always);
  let reserved = 0;
  let running = 0;
  let lastAdded = -Infinity;
  let mark = performance.eventLoopUtilization();
  let markedAt = performance.now();
  let utilization = 0;
  const waiting: (() => void)[] = [];
  let recheck: NodeJS.Timeout | undefined;

  const measure = (now: number) => {
    const since = now - markedAt;
    if (since < ADAPTIVE_SLOTS.windowMs) return;
    const next = performance.eventLoopUtilization();
    // Measured over a long quiet spell, a burst that just began would look idle: count it busy until a window of its own is measured.
    utilization = since > 2 * ADAPTIVE_SLOTS.windowMs ? 1 : performance.eventLoopUtilization(next, mark).utilization;
    mark = next;
    markedAt = now;
  };
  const mayGrant = (): boolean => {
    if (reserved >= max) return false;
    if (reserved < always) return true;
    if (computing > 0) return false;
    // A slot reserved but not running means a poll is already waiting for work: no need for another.
    if (running < reserved) return false;
    const now = performance.now();
    measure(now);
    return utilization < ADAPTIVE_SLOTS.busyAt && now - lastAdded >= ADAPTIVE_SLOTS.windowMs;
  };
  const grant = () => {
    if (reserved >= always) lastAdded = performance.now();
    reserved += 1;
  };
  const pump = () => {
    while (waiting.length > 0 && mayGrant()) {
      grant();
      waiting.shift()?.();
    }
    if (waiting.length > 0 && recheck === undefined) {
      recheck = setTimeout(() => {
        recheck = undefined;
        pump();
      }, ADAPTIVE_SLOTS.windowMs / 2);
    }
  };

  return {
    type: 'custom',
    reserveSlot(_ctx, abortSignal): Promise<SlotPermit> {
      return new Promise((resolve, reject) => {
        // The SDK expects its signal's own reason back (anything else it logs as an error).
        if (abortSignal.aborted) return reject(abortSignal.reason as Error);
        const granted = () => resolve({});
        waiting.push(granted);
        abortSignal.addEventListener(
          'abort',
          () => {
            const at = waiting.indexOf(granted);
            if (at === -1) return;
            waiting.splice(at, 1);
            reject(abortSignal.reason as Error);
          },
          { once: true },
        );
        pump();
      });
    },
    tryReserveSlot(): SlotPermit | null {
      if (!mayGrant()) return null;
      grant();
      return {};
    },
    markSlotUsed() {
      running += 1;
    },
    releaseSlot(ctx) {
      reserved -= 1;
      if (ctx.slotInfo) running -= 1;
      pump();
    },
  };
}

/** Slot settings for `Worker.create`: adaptive activity slots up to `maxActivities`, or a fixed number of them. */
export function activitySlots(mode: 'adaptive' | 'fixed', maxActivities: number): { tuner: WorkerTuner } | { maxConcurrentActivityTaskExecutions: number } {
  if (mode === 'fixed') return { maxConcurrentActivityTaskExecutions: maxActivities };
  return {
    tuner: {
      activityTaskSlotSupplier: adaptiveActivitySlots(maxActivities),
      // The SDK's defaults without a tuner.
      workflowTaskSlotSupplier: { type: 'fixed-size', numSlots: 40 },
      localActivityTaskSlotSupplier: { type: 'fixed-size', numSlots: 100 },
      nexusTaskSlotSupplier: { type: 'fixed-size', numSlots: 100 },
    },
  };
}
