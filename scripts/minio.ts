/**
 * MinIO, the S3-compatible server `npm run stack` and the S3 tests use: built once from its Go
 * module at a pinned version (MinIO publishes no binaries or images of new releases; compose
 * builds the same module: docker/minio.Dockerfile) and cached in .stack/bin (git-ignored).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { silenceNodeVersionNotice } from '../src/storage/s3';
import { goInstall } from './go';
import { freePort } from '../src/devserver/temporal-cli';

/** github.com/minio/minio at commit 7aac2a2c5b7c (2026-02-12): the Go module's pseudo-version. */
export const MINIO_VERSION = 'v0.0.0-20260212201848-7aac2a2c5b7c';
const ROOT = path.resolve(__dirname, '..');
export const BIN_DIR = path.join(ROOT, '.stack', 'bin');

export interface MinioCredentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/** The MinIO binary, built from the Go module the first time (~2 min on 2 cores). */
export function ensureMinio(log: (line: string) => void = () => undefined): string {
  const binary = path.join(BIN_DIR, 'minio');
  if (existsSync(binary)) return binary;
  log(`building github.com/minio/minio@${MINIO_VERSION} from its Go module into ${BIN_DIR} (first time: ~2 min on 2 cores)`);
  goInstall(`github.com/minio/minio@${MINIO_VERSION}`, BIN_DIR);
  return binary;
}

/**
 * Starts MinIO on 127.0.0.1:`port` serving `dataDir`. `logFile` given: detached (it outlives this
 * process, as the stack's parts do); else a child that dies with this process.
 */
export function startMinio(options: { binary: string; dataDir: string; port: number; consolePort?: number; credentials: MinioCredentials; logFile?: string }): ChildProcess {
  mkdirSync(options.dataDir, { recursive: true });
  const out = options.logFile ? openSync(options.logFile, 'a') : 'ignore';
  const child = spawn(options.binary, ['server', options.dataDir, '--address', `127.0.0.1:${options.port}`, '--console-address', `127.0.0.1:${options.consolePort ?? options.port + 1}`, '--quiet'], {
    detached: options.logFile !== undefined,
    stdio: ['ignore', out, out],
    env: {
      ...process.env,
      MINIO_ROOT_USER: options.credentials.accessKeyId,
      MINIO_ROOT_PASSWORD: options.credentials.secretAccessKey,
      MINIO_BROWSER: 'off',
      MINIO_UPDATE: 'off',
    },
  });
  if (options.logFile) child.unref();
  return child;
}

/** Waits until MinIO answers its liveness probe, then creates `bucket` (if it is not there yet). */
export async function readyBucket(endpoint: string, credentials: MinioCredentials, bucket: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const live = await fetch(`${endpoint}/minio/health/live`, { signal: AbortSignal.timeout(1_000) }).then(
      (response) => response.ok,
      () => false,
    );
    if (live) break;
    if (Date.now() > deadline) throw new Error(`MinIO at ${endpoint} did not come up in ${timeoutMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  silenceNodeVersionNotice();
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials });
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (error) {
    const name = (error as { name?: string }).name;
    if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw error;
  } finally {
    client.destroy();
  }
}

export interface LocalS3 {
  endpoint: string;
  bucket: string;
  /** What a worker or client needs to use it: FAULTLINE_S3_ENDPOINT and AWS credentials. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** A throwaway MinIO on free 127.0.0.1 ports with its data in a temp folder (tests, benchmarks); it dies with this process. */
export async function startLocalS3(bucket: string, log: (line: string) => void = () => undefined): Promise<LocalS3> {
  const binary = ensureMinio(log);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'faultline-minio-'));
  const [port, consolePort] = [await freePort(), await freePort()];
  const credentials = { accessKeyId: 'faultline-local', secretAccessKey: 'faultline-local-secret' };
  const child = startMinio({ binary, dataDir, port, consolePort, credentials });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
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
      process.off('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
