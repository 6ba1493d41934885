import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type FaultlineClient, closedJobResult } from '../../src/client';
import { syntheticSpec } from '../helpers/env';
import { type TimeSkippingEnv, createTimeSkippingEnv } from '../helpers/time-skipping';

// Long waits (a 24 h retry window) on the time-skipping test server, not in real time.
let ts: TimeSkippingEnv;
let testEnv: TimeSkippingEnv['testEnv'];
let client: FaultlineClient;

before(async () => {
  ts = await createTimeSkippingEnv({ taskQueue: 'faultline-timeskip' });
  await ts.startWorker();
  ({ testEnv, client } = ts);
});

after(async () => {
  await ts?.teardown();
});

describe('retry window (time-skipping server)', () => {
  it('a job with failures stays open for its 24 h window, then closes with its final result', async () => {
    const started = Date.now();
    const { jobId } = await client.start(syntheticSpec([{ id: 'ok' }, { id: 'bad', params: { outcome: 'unprocessable' } }], { retryWindow: '24h' }));
    // The test environment's own client skips time while it waits for the result.
    const handle = testEnv.client.workflow.getHandle(jobId);
    const final = await closedJobResult(handle);
    assert.equal(final.status, 'PartiallySucceeded');
    assert.deepEqual(final.failuresByReason, { ItemUnprocessable: ['bad'] });
    const history = await handle.fetchHistory();
    const timer = history.events?.find((event) => event.timerStartedEventAttributes)?.timerStartedEventAttributes;
    assert.equal(Number(timer?.startToFireTimeout?.seconds), 24 * 3600, 'the window was a real 24 h timer');
    assert.ok(Date.now() - started < 60_000, 'and it did not take 24 h');
  });

  it('metrics tell running from waiting: a retry 3 h into the window runs in seconds, and items/s counts running time only', async () => {
    const { jobId } = await client.start(syntheticSpec([{ id: 'ok' }, { id: 'flaky', params: { transientFailures: 1 } }], { retryWindow: '24h', retry: { maxAttempts: 1 } }));
    const first = await client.result(jobId);
    assert.equal(first.metrics.waitingMs, 0, 'round 1 never waited');
    await testEnv.sleep('3h');
    await client.retry(jobId, { items: ['flaky'] });
    const second = await client.result(jobId, { round: 2 });
    const { elapsedMs, runMs = NaN, waitingMs = NaN, round, itemsPerSec } = second.metrics;
    assert.ok(elapsedMs >= 3 * 3_600_000, `elapsed ${elapsedMs} ms includes the wait`);
    assert.ok(waitingMs >= 3 * 3_600_000 - 60_000 && waitingMs <= elapsedMs, `waited ${waitingMs} ms`);
    assert.ok(runMs < 5 * 60_000, `ran ${runMs} ms`);
    assert.equal(runMs + waitingMs, elapsedMs);
    assert.deepEqual(round?.items, 1, 'round 2 ran the one retried item');
    assert.ok(itemsPerSec > 2 / 300, `items/s over running time: ${itemsPerSec}`);
  });
});
