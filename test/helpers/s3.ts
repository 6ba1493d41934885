/** A real S3-compatible server for tests: MinIO built from its Go module (scripts/minio.ts), on free 127.0.0.1 ports, with its data in a temp folder. */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { freePort } from '../../src/devserver/temporal-cli';
import { ensureMinio, readyBucket, startMinio } from '../../scripts/minio';

export interface TestS3 {
  endpoint: string;
  bucket: string;
  /** What a worker or client needs to use it: FAULTLINE_S3_ENDPOINT and AWS credentials. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startTestS3(bucket = 'faultline-test'): Promise<TestS3> {
  const binary = ensureMinio((line) => console.error(`[s3] ${line}`));
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'faultline-minio-'));
  const port = await freePort();
  const credentials = { accessKeyId: 'faultline-test', secretAccessKey: 'faultline-test-secret' };
  const child = startMinio({ binary, dataDir, port, consolePort: await freePort(), credentials });
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await readyBucket(endpoint, credentials, bucket);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return {
    endpoint,
    bucket,
    env: { FAULTLINE_S3_ENDPOINT: endpoint, AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey, AWS_REGION: 'us-east-1' },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
