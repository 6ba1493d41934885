import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import { FaultlineClient } from '../../src/client';
import { loadConfig } from '../../src/config';
import { ensureTestServer } from '../../src/devserver/temporal-cli';
import { createLogger } from '../../src/logger';
import { type JobResult, SEARCH_ATTRIBUTES } from '../../src/shared';
import { temporal } from '@temporalio/proto';
import { createFaultlineWorker } from '../../src/worker';
import { syntheticSpec, workflowBundle } from '../helpers/env';

// Long waits (a 24 h retry window) on the time-skipping test server, not in real time.
let testEnv: TestWorkflowEnvironment;
let worker: Worker;
let running: Promise<void>;
let client: FaultlineClient;

before(async () => {
  testEnv = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path: ensureTestServer() } } });
  const types = { Keyword: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD, Bool: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_BOOL, Int: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_INT };
  await testEnv.connection.operatorService.addSearchAttributes({
    namespace: 'default',
    searchAttributes: Object.fromEntries(Object.entries(SEARCH_ATTRIBUTES).map(([name, type]) => [name, types[type]])),
  });
  const config = loadConfig({ ...process.env, FAULTLINE_TASK_QUEUE: 'faultline-timeskip', FAULTLINE_LOG_LEVEL: 'error' });
  ({ worker } = await createFaultlineWorker({ config, logger: createLogger({ level: 'error', format: 'json' }), connection: testEnv.nativeConnection, workflowBundle: await workflowBundle() }));
  running = worker.run();
  client = await FaultlineClient.connect({ config, connection: testEnv.connection });
});

after(async () => {
  worker?.shutdown();
  await running;
  await testEnv?.teardown();
});

describe('retry window (time-skipping server)', () => {
  it('a job with failures stays open for its 24 h window, then closes with its final result', async () => {
    const started = Date.now();
    const { jobId } = await client.start(syntheticSpec([{ id: 'ok' }, { id: 'bad', params: { outcome: 'unprocessable' } }], { retryWindow: '24h' }));
    // The test environment's own client skips time while it waits for the result.
    const handle = testEnv.client.workflow.getHandle(jobId);
    const final = (await handle.result()) as JobResult;
    assert.equal(final.status, 'PartiallySucceeded');
    assert.deepEqual(final.failuresByReason, { ItemUnprocessable: ['bad'] });
    const history = await handle.fetchHistory();
    const timer = history.events?.find((event) => event.timerStartedEventAttributes)?.timerStartedEventAttributes;
    assert.equal(Number(timer?.startToFireTimeout?.seconds), 24 * 3600, 'the window was a real 24 h timer');
    assert.ok(Date.now() - started < 60_000, 'and it did not take 24 h');
  });
});
