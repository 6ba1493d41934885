/**
 * Records histories of the shipped workflows into test/histories/ for the replay test.
 * Run after an intended (patched) workflow change: `npm run record-histories`.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createTestEnv, syntheticSpec } from '../test/helpers/env';

const OUT = path.resolve(__dirname, '..', 'test', 'histories');

async function main(): Promise<void> {
  const env = await createTestEnv({ taskQueue: 'faultline-record' });
  const worker = await env.startWorker();
  try {
    await mkdir(OUT, { recursive: true });
    const jobs: Record<string, { spec: unknown; during?: (jobId: string) => Promise<void> }> = {
      'job-mixed': {
        spec: syntheticSpec(
          [{ id: 'ok' }, { id: 'missing', params: { outcome: 'missing' } }, { id: 'bad', params: { outcome: 'unprocessable' } }, { id: 'flaky', params: { transientFailures: 1 } }],
          { retry: { initialInterval: '10ms' } },
        ),
      },
      'job-fatal': { spec: syntheticSpec([{ id: 'a' }, { id: 'boom', params: { outcome: 'fatal' } }, { id: 'b' }], { batchSize: 3 }) },
      'job-cancelled': {
        spec: syntheticSpec([{ id: 'h', params: { outcome: 'hang' } }, { id: 'ok' }], { heartbeatTimeout: '2s' }),
        during: async (jobId) => {
          await new Promise((resolve) => setTimeout(resolve, 1_000));
          await env.client.cancel(jobId, 'recording');
        },
      },
      'job-retry-window': {
        spec: syntheticSpec([{ id: 'ok' }, { id: 'flaky', params: { transientFailures: 2 } }], { retry: { maxAttempts: 1 }, retryWindow: '1m' }),
        during: async (jobId) => {
          await env.client.result(jobId);
          await env.client.retry(jobId, { types: ['TransientItemError'] });
          await env.client.result(jobId, { round: 2 });
          await env.client.cancel(jobId, 'close the window');
        },
      },
      'job-sharded': { spec: syntheticSpec(Array.from({ length: 30 }, (_, i) => ({ id: `s${i}` })), { shardSize: 10, batchSize: 5 }) },
    };
    for (const [name, { spec, during }] of Object.entries(jobs)) {
      const { jobId } = await env.client.start(spec, { jobId: name });
      if (during) await during(jobId);
      await env.client.client.workflow.getHandle(jobId).result();
      const history = await env.client.client.workflow.getHandle(jobId).fetchHistory();
      await writeFile(path.join(OUT, `${name}.json`), JSON.stringify(history));
      console.log(`recorded ${name}: ${history.events?.length} events`);
    }
    const shard = await env.client.client.workflow.getHandle('job-sharded/shard-1').fetchHistory();
    await writeFile(path.join(OUT, 'job-sharded__shard-1.json'), JSON.stringify(shard));
    console.log(`recorded shard: ${shard.events?.length} events`);
  } finally {
    await worker.stop();
    await env.teardown();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
