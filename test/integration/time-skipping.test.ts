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
});
