/** A real S3-compatible server for tests: MinIO built from its Go module (scripts/minio.ts), on free 127.0.0.1 ports. */
import { type LocalS3, startLocalS3 } from '../../scripts/minio';

export type TestS3 = LocalS3;

export function startTestS3(bucket = 'faultline-test'): Promise<TestS3> {
  return startLocalS3(bucket, (line) => console.error(`[s3] ${line}`));
}
