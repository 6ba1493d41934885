/**
 * Job storage in an S3-compatible bucket (FAULTLINE_STORAGE=s3://bucket/prefix): AWS S3, MinIO,
 * Ceph, R2… Credentials come from the usual AWS chain (env, profile, instance role) unless given;
 * FAULTLINE_S3_ENDPOINT points at a server other than AWS.
 */
import { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  HeadBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  paginateListObjectsV2,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { type ObjectStore, type StoredObject, StorageRefOutside } from './object-store';

export interface S3Options {
  endpoint?: string | undefined;
  region?: string | undefined;
  /** `bucket` in the path rather than the host name; what most S3-compatible servers want. Default: on when an endpoint is given. */
  forcePathStyle?: boolean | undefined;
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string | undefined } | undefined;
}

/** Parts of a streamed upload: S3's minimum, so a 1M-item manifest (~300 MB) is ~60 parts in flight one at a time. */
const PART_BYTES = 5 * 1024 * 1024;

export class S3Store implements ObjectStore {
  /** `s3://bucket/prefix`, also the start of every URI this store holds. */
  readonly display: string;
  private readonly client: S3Client;

  constructor(
    readonly bucket: string,
    /** '' or ending in '/'. */
    readonly prefix: string,
    options: S3Options,
  ) {
    this.display = `s3://${bucket}/${prefix}`;
    const config: S3ClientConfig = {
      region: options.region ?? 'us-east-1',
      forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
      // Bounded waits: a hung connection fails the activity attempt, which Temporal retries.
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000 },
      maxAttempts: 4,
    };
    if (options.endpoint) config.endpoint = options.endpoint;
    silenceNodeVersionNotice();
    if (options.credentials) config.credentials = options.credentials;
    this.client = new S3Client(config);
  }

  /** Creates the bucket when it is missing (compose's and the stack's first start). */
  async createBucket(): Promise<boolean> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return false;
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    return true;
  }

  uri(key: string): string {
    return this.display + key;
  }

  keyOf(uri: string): string {
    if (!uri.startsWith(this.display) || uri.length === this.display.length) throw new StorageRefOutside(uri, this.display);
    const key = uri.slice(this.display.length);
    if (key.split('/').some((segment) => segment === '..' || segment === '.')) throw new StorageRefOutside(uri, this.display);
    return key;
  }

  async put(key: string, body: string | Buffer): Promise<void> {
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, Body: body }));
  }

  async putStream(key: string, body: AsyncIterable<Buffer | string>): Promise<void> {
    // Nothing is visible under the key until the multipart upload completes; a failed one is aborted.
    const upload = new Upload({ client: this.client, params: { Bucket: this.bucket, Key: this.prefix + key, Body: Readable.from(body) }, partSize: PART_BYTES, queueSize: 1 });
    await upload.done();
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      return Buffer.from(await response.Body!.transformToByteArray());
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async stream(key: string, start = 0): Promise<Readable> {
    const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, ...(start > 0 ? { Range: `bytes=${start}-` } : {}) }));
    return response.Body as Readable;
  }

  async *list(folder: string): AsyncIterable<StoredObject> {
    for await (const page of paginateListObjectsV2({ client: this.client }, { Bucket: this.bucket, Prefix: this.prefix + folder })) {
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue;
        yield { key: object.Key.slice(this.prefix.length), size: object.Size ?? 0, modifiedMs: object.LastModified?.getTime() ?? 0 };
      }
    }
  }

  async folders(folder: string): Promise<string[]> {
    const names: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + folder, Delimiter: '/', ContinuationToken: token }));
      for (const common of page.CommonPrefixes ?? []) if (common.Prefix) names.push(common.Prefix.slice((this.prefix + folder).length).replace(/\/$/, ''));
      token = page.NextContinuationToken;
    } while (token);
    return names;
  }

  async remove(folder: string): Promise<void> {
    let batch: { Key: string }[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      const response = await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch, Quiet: true } }));
      const failed = response.Errors?.[0];
      if (failed) throw new Error(`cannot delete s3://${this.bucket}/${failed.Key ?? ''}: ${failed.Code ?? ''} ${failed.Message ?? ''}`.trim());
      batch = [];
    };
    for await (const object of this.list(folder)) {
      batch.push({ Key: this.prefix + object.key });
      if (batch.length === 1_000) await flush();
    }
    await flush();
  }
}

function isNotFound(error: unknown): boolean {
  const name = (error as { name?: string }).name;
  return name === 'NoSuchKey' || name === 'NotFound' || (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404;
}

/** S3 errors no retry can fix: wrong credentials, no such bucket, no permission. */
export const PERMANENT_S3_ERRORS = new Set(['AccessDenied', 'NoSuchBucket', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidBucketName', 'AllAccessDisabled', 'AccountProblem']);

/** Reading an object: the S3 error name when no retry can help (it is missing, or one of the above), else undefined. */
export function unrecoverableS3Error(error: unknown): string | undefined {
  const name = (error as { name?: string }).name ?? 'NotFound';
  return isNotFound(error) || PERMANENT_S3_ERRORS.has(name) ? name : undefined;
}

/**
 * The SDK warns on every command under Node 20 that its releases after January 2027 need Node 22;
 * the lockfile pins this release, so the notice only clutters one-line CLI output. Set
 * AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=false to see it.
 */
export function silenceNodeVersionNotice(): void {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
}
