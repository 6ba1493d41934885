import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ActivitySlotInfo, SlotMarkUsedContext, SlotReleaseContext, SlotReserveContext } from '@temporalio/worker';
import { ADAPTIVE_SLOTS, activitySlots, adaptiveActivitySlots, computingBatch } from '../../src/activity-slots';

const reserveContext = {} as SlotReserveContext;
const slotInfo = { type: 'activity', activityType: 'runBatch' } as ActivitySlotInfo;
const used = { slotInfo, permit: {} } as SlotMarkUsedContext<ActivitySlotInfo>;
const releasedUsed = { slotInfo, permit: {} } as SlotReleaseContext<ActivitySlotInfo>;

/** Keeps the event loop busy for `ms` (what a CPU-bound item does to its process). */
function computeFor(ms: number): void {
  for (const until = performance.now() + ms; performance.now() < until;);
}

describe('adaptive activity slots', () => {
  it(`grants ${ADAPTIVE_SLOTS.always} at once; more only while every slot runs and the event loop has room, never above the maximum`, async () => {
    const slots = adaptiveActivitySlots(3);
    const never = new AbortController();
    await slots.reserveSlot(reserveContext, never.signal);
    await slots.reserveSlot(reserveContext, never.signal);
    assert.equal(slots.tryReserveSlot(reserveContext), null, 'a reserved slot is still waiting for work: no third');
    slots.markSlotUsed(used);
    slots.markSlotUsed(used);
    // Both run and nothing computes: the third comes once a window has been measured.
    await slots.reserveSlot(reserveContext, never.signal);
    slots.markSlotUsed(used);
    await sleep(ADAPTIVE_SLOTS.windowMs * 2);
    assert.equal(slots.tryReserveSlot(reserveContext), null, 'the maximum, however idle');
    slots.releaseSlot(releasedUsed);
    // After a quiet spell the loop counts as busy until a window of its own is measured; then the slot is granted.
    assert.deepEqual(await slots.reserveSlot(reserveContext, never.signal), {}, 'a released slot can be taken again');
  });

  it('a process whose event loop is busy computing takes no slot beyond the first two', async () => {
    const slots = adaptiveActivitySlots(100);
    const never = new AbortController();
    await slots.reserveSlot(reserveContext, never.signal);
    await slots.reserveSlot(reserveContext, never.signal);
    slots.markSlotUsed(used);
    slots.markSlotUsed(used);
    await sleep(ADAPTIVE_SLOTS.windowMs);
    computeFor(ADAPTIVE_SLOTS.windowMs * 3);
    assert.equal(slots.tryReserveSlot(reserveContext), null, 'busy: no third slot');
    // Waiting reservations are granted once the loop is idle again (checked every half window).
    const third = slots.reserveSlot(reserveContext, never.signal);
    await third;
    slots.markSlotUsed(used);
    computeFor(ADAPTIVE_SLOTS.windowMs * 3);
    assert.equal(slots.tryReserveSlot(reserveContext), null, 'busy again');
  });

  it('while a CPU-bound batch runs, a process takes no slot beyond the first two however idle its loop; the moment none runs, it does', async () => {
    const slots = adaptiveActivitySlots(10);
    const never = new AbortController();
    await slots.reserveSlot(reserveContext, never.signal);
    await slots.reserveSlot(reserveContext, never.signal);
    slots.markSlotUsed(used);
    slots.markSlotUsed(used);
    const first = computingBatch();
    const second = computingBatch();
    // Idle for windows on end (the process waits for its next batches): still no third slot.
    await sleep(ADAPTIVE_SLOTS.windowMs * 3);
    assert.equal(slots.tryReserveSlot(reserveContext), null, 'a CPU-bound batch runs: no third slot');
    let granted = false;
    const third = slots.reserveSlot(reserveContext, never.signal).then(() => (granted = true));
    await sleep(ADAPTIVE_SLOTS.windowMs * 2);
    assert.equal(granted, false, 'a waiting reservation waits too');
    first();
    first();
    await sleep(ADAPTIVE_SLOTS.windowMs);
    assert.equal(granted, false, 'one CPU-bound batch still runs (ending one twice counts once)');
    second();
    await third;
    assert.equal(granted, true, 'granted once no CPU-bound batch runs');
  });

  it('an aborted reservation rejects with its signal’s reason and takes no slot', async () => {
    const slots = adaptiveActivitySlots(2);
    const never = new AbortController();
    await slots.reserveSlot(reserveContext, never.signal);
    await slots.reserveSlot(reserveContext, never.signal);
    const abort = new AbortController();
    const waiting = slots.reserveSlot(reserveContext, abort.signal);
    abort.abort();
    await assert.rejects(waiting, (error: unknown) => error === abort.signal.reason, 'rejected with the signal’s own reason, as the SDK expects');
    await assert.rejects(slots.reserveSlot(reserveContext, abort.signal), (error: unknown) => error === abort.signal.reason, 'already aborted: at once');
    slots.releaseSlot({ permit: {} } as SlotReleaseContext<ActivitySlotInfo>);
    assert.deepEqual(slots.tryReserveSlot(reserveContext), {}, 'the released slot went to no aborted reservation');
  });

  it('FAULTLINE_ACTIVITY_SLOTS=fixed keeps the SDK option; adaptive gives a tuner with the SDK defaults for everything else', () => {
    assert.deepEqual(activitySlots('fixed', 7), { maxConcurrentActivityTaskExecutions: 7 });
    const adaptive = activitySlots('adaptive', 7);
    assert.ok('tuner' in adaptive && 'activityTaskSlotSupplier' in adaptive.tuner);
    assert.equal(adaptive.tuner.activityTaskSlotSupplier.type, 'custom');
    assert.deepEqual(adaptive.tuner.workflowTaskSlotSupplier, { type: 'fixed-size', numSlots: 40 });
  });
});
