/**
 * Item work of every batch in a worker process takes turns of the event loop, in order, a few
 * milliseconds each. Batches used to yield on their own every 1 ms: between two passes of the
 * loop each of them ran its share, so 40 CPU-bound batches in one process held the loop ~40 ms at
 * a time, and everything else that passes through it (workflow tasks, queries, heartbeats,
 * cancellation) waited that long several times over (`status` of a 1,000,000-item job took
 * 0.9 s). Now one batch works per pass, then the loop breathes, then the next batch in line.
 */
import { setImmediate as afterThisPass } from 'node:timers';

/** Item work per pass of the event loop, across all batches of the process. */
const WORK_PER_TURN_MS = 2;

let turnStartedAt: number | undefined;
const waiting: (() => void)[] = [];

function startTurn(): void {
  turnStartedAt = performance.now();
  afterThisPass(endTurn);
}

function endTurn(): void {
  turnStartedAt = undefined;
  waiting.shift()?.();
}

/**
 * Called between items: goes on while this pass's item work lasts (undefined: no promise and no
 * await for the many items that just go on), else a promise of its own turn (first come, first served).
 */
export function nextItemTurn(): Promise<void> | undefined {
  if (turnStartedAt === undefined && waiting.length === 0) {
    startTurn();
    return undefined;
  }
  if (turnStartedAt !== undefined && performance.now() - turnStartedAt < WORK_PER_TURN_MS) return undefined;
  return new Promise<void>((resolve) => waiting.push(resolve)).then(startTurn);
}
