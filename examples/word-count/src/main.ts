/** Worker and client in one process: start a job, read its result, retry it in place. */
import { createFaultlineWorker, FaultlineClient, loadConfig } from 'faultline';
import { wordCount } from './pipeline';

async function main(): Promise<void> {
  // worker side
  const config = loadConfig();
  const { worker } = await createFaultlineWorker({ config, pipelines: [wordCount] });
  const running = worker.run();
  // client side (validates specs locally with the same definition)
  const client = await FaultlineClient.connect({ config, pipelines: [wordCount] });
  try {
    const { jobId } = await client.start({
      pipeline: 'word-count',
      items: [
        { id: 'a', params: { text: 'a b c' } },
        { id: 'empty', params: { text: '' } },
        { id: 'busy', params: { text: 'x y', failTimes: 2 } },
        { id: 'bad', params: { text: 'one poison word' } },
      ],
      options: { retryWindow: '10m' },
    });
    const result = await client.result(jobId);
    console.log(JSON.stringify({ round: result.round, status: result.status, outputs: result.outputs, failureCounts: result.failureCounts }));
    await client.retry(jobId); // retry in place: round 2 of the same job
    const again = await client.result(jobId, { round: 2 });
    console.log(JSON.stringify({ round: again.round, status: again.status, outputs: again.outputs }));
    await client.cancel(jobId, 'example done');
  } finally {
    await client.close();
    worker.shutdown();
    await running;
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
