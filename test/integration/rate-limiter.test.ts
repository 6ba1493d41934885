/**
 * The rate limiter workflow on the time-skipping server: leases in order, spaced at perSecond,
 * bounded by concurrency, none during a host's pause, requests sent while no worker runs all
 * admitted in one activation, and a malformed request dropped without harming the others.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type LeaseRequest, type LimiterState, WORKFLOW_TYPES, limiterViewQuery, limiterWorkflowId, releaseLeaseSignal, requestLeaseSignal, ticketsQuery } from '../../src/shared';
import { eventually } from '../helpers/env';
import { type TimeSkippingEnv, createTimeSkippingEnv } from '../helpers/time-skipping';

let env: TimeSkippingEnv;
before(async () => {
  env = await createTimeSkippingEnv({ taskQueue: 'faultline-limiter' });
});
after(async () => {
  await env?.teardown();
});

const limit = { perSecond: 2, concurrency: 2 };
const request = (ticket: string, jobId = 'job-a'): LeaseRequest => ({ ticket, jobId, holder: 'test', limit, ttlMs: 600_000 });
const initial = (key: string): LimiterState => ({ key, nextAt: 0, blockedUntil: 0, leases: [], waiting: [], granted: 0, backoffs: 0 });

describe('rate limiter workflow (time-skipping server)', () => {
  it('grants in order, spaced at perSecond, at most concurrency at once, none during a Retry-After pause', async () => {
    const key = 'host-a.example';
    const client = env.client.client;
    // Sent while no worker runs: all of them land in the limiter's first activation.
    await client.workflow.signalWithStart(WORKFLOW_TYPES.rateLimiter, {
      workflowId: limiterWorkflowId(key),
      taskQueue: env.config.taskQueue,
      args: [initial(key)],
      signal: requestLeaseSignal,
      signalArgs: [[request('t1'), request('t2'), { ...request('bad'), limit: { perSecond: -1, concurrency: 1 } }, request('t3', 'job-b'), request('t4', 'job-b')]],
    });
    await env.startWorker({ cached: true });
    const handle = client.workflow.getHandle(limiterWorkflowId(key));
    const tickets = () => handle.query(ticketsQuery, ['t1', 't2', 't3', 't4', 'bad']);
    await eventually(async () => (await tickets()).granted.length >= 1, 20_000, 'the first lease');
    const first = await tickets();
    assert.deepEqual(first.granted, ['t1'], 'one lease at once: the next is 625 ms later (2 per 1.25 s)');
    assert.deepEqual(first.waiting, ['t2', 't3', 't4'], 'in order; the malformed request was dropped');
    await env.testEnv.sleep(700);
    await eventually(async () => (await tickets()).granted.length === 2, 20_000, 'the second lease');
    await env.testEnv.sleep(3_000);
    assert.deepEqual((await tickets()).granted, ['t1', 't2'], 'concurrency 2: no third lease while two are held');
    const view = await handle.query(limiterViewQuery);
    assert.deepEqual(view.jobs, { 'job-a': { inFlight: 2, waiting: 0 }, 'job-b': { inFlight: 0, waiting: 2 } });

    // The host answers 429 with Retry-After: 5 s: t1 comes back with the pause; nobody starts before it ends.
    await handle.signal(releaseLeaseSignal, [{ ticket: 't1', retryAfterMs: 5_000 }]);
    await eventually(async () => (await handle.query(limiterViewQuery)).backoffs === 1, 20_000, 'the pause is in force');
    assert.ok((await handle.query(limiterViewQuery)).blockedUntil, 'blockedUntil shown');
    await env.testEnv.sleep(3_000);
    assert.deepEqual((await tickets()).granted, ['t2'], 'no lease during the pause, though a slot is free');
    await env.testEnv.sleep(2_500);
    await eventually(async () => (await tickets()).granted.includes('t3'), 20_000, 'the next lease after the pause');
    assert.deepEqual((await tickets()).waiting, ['t4']);
    await handle.signal(releaseLeaseSignal, [{ ticket: 't2' }, { ticket: 't3' }]);
    await env.testEnv.sleep(1_000);
    await eventually(async () => (await tickets()).granted.includes('t4'), 20_000, 'the last lease');
    assert.equal((await handle.query(limiterViewQuery)).granted, 4);
  });
});
