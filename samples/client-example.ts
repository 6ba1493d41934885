import { FaultlineClient, FaultlineClientError, loadConfig } from 'faultline';

async function main(): Promise<void> {
  const client = await FaultlineClient.connect({ config: loadConfig() });
  try {
    const { jobId } = await client.start({
      pipeline: 'synthetic',
      items: [{ id: 'a' }, { id: 'b', params: { outcome: 'unprocessable' } }],
    });
    const result = await client.result(jobId); // returns as soon as the job settles
    switch (result.status) {
      case 'Succeeded':
      case 'Empty':
        break;
      case 'PartiallySucceeded': // some outputs Failed: look at the reasons, maybe retry some
        for (const [type, ids] of Object.entries(result.failuresByReason)) console.warn(type, ids);
        break;
      case 'Failed': // a fatal error ended the job, or everything failed
        console.error(result.errors.filter((e) => e.class === 'fatal'));
        break;
      case 'Cancelled':
        console.warn('cancelled:', result.cancelReason);
        break;
    }
    console.log(JSON.stringify({ jobId, status: result.status, counts: result.counts }));
  } catch (error) {
    // A spec that fails validation lists every issue: [{ path, code, message }].
    if (error instanceof FaultlineClientError && error.code === 'invalid') console.error(error.issues);
    else throw error;
  } finally {
    await client.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
