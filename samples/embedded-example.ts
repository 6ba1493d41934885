import { FaultlineClient, createFaultlineWorker, loadConfig } from 'faultline';

// One process that starts jobs and runs them: a client on the worker's own connection starts each
// job eagerly (the job's first workflow task comes straight back to this worker).
async function main(): Promise<void> {
  const config = loadConfig();
  const { worker, connection } = await createFaultlineWorker({ config });
  const running = worker.run();
  const client = await FaultlineClient.connect({ config, connection });
  try {
    const { jobId } = await client.start({ pipeline: 'synthetic', items: [{ id: 'a' }] });
    const result = await client.result(jobId);
    console.log(JSON.stringify({ jobId, status: result.status, counts: result.counts }));
  } finally {
    await client.close();
    worker.shutdown();
    await running;
    await connection.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
