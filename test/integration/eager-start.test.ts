/**
 * Eager start: a client on the same connection as a worker of its task queue (one process that
 * both starts jobs and runs them) has the server hand each job's first workflow task straight to
 * that worker. A client on a connection of its own, or one whose process has no worker of the
 * queue, starts jobs the usual way.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { NativeConnection } from '@temporalio/worker';
import { FaultlineClient, createFaultlineWorker } from '../../src/index';
import { createLogger } from '../../src/logger';
import { type TestEnv, createTestEnv, syntheticSpec, workflowBundle } from '../helpers/env';

let env: TestEnv;

before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-eager', envExtra: { FAULTLINE_LOG_LEVEL: 'error' } });
});
after(async () => {
  await env?.teardown();
});

async function startedEagerly(client: FaultlineClient, jobId: string): Promise<boolean> {
  const history = await client.client.workflow.getHandle(jobId).fetchHistory();
  const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  assert.ok(started, `${jobId} has no start event`);
  return started.eagerExecutionAccepted === true;
}

describe('eager start', () => {
  it("a client on its worker's connection starts jobs in that worker at once; a client of its own does not", async () => {
    const connection = await NativeConnection.connect({ address: env.server.address });
    const { worker } = await createFaultlineWorker({ config: env.config, connection, logger: createLogger({ level: 'error', format: 'json' }), workflowBundle: await workflowBundle() });
    const running = worker.run();
    const embedded = await FaultlineClient.connect({ config: env.config, connection });
    try {
      const { jobId } = await embedded.start(syntheticSpec([{ id: 'one' }]));
      const result = await embedded.result(jobId);
      assert.equal(result.status, 'Succeeded');
      assert.equal(result.counts.Available, 1);
      assert.equal(await startedEagerly(embedded, jobId), true, 'the job was not started eagerly');

      const { jobId: queued } = await env.client.start(syntheticSpec([{ id: 'two' }]));
      assert.equal((await env.client.result(queued)).status, 'Succeeded');
      assert.equal(await startedEagerly(env.client, queued), false, 'a client with a connection of its own cannot start eagerly');
    } finally {
      await embedded.close();
      worker.shutdown();
      await running;
      await connection.close();
    }
  });

  it('a job started on a worker connection with no worker of its queue waits in the queue and runs when a worker comes', async () => {
    const connection = await NativeConnection.connect({ address: env.server.address });
    const client = await FaultlineClient.connect({ config: env.config, connection });
    try {
      const { jobId } = await client.start(syntheticSpec([{ id: 'later' }]));
      assert.equal(await startedEagerly(client, jobId), false);
      const worker = await env.startWorker();
      try {
        const result = await client.result(jobId);
        assert.equal(result.status, 'Succeeded');
        assert.equal(result.counts.Available, 1);
      } finally {
        await worker.stop();
      }
    } finally {
      await client.close();
      await connection.close();
    }
  });
});
