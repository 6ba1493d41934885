/**
 * Job storage in an S3-compatible store (FAULTLINE_STORAGE=s3://…) against a real MinIO built
 * from its Go module, and `itemsFrom` sources that workers read (s3://, https://).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { FaultlineClientError } from '../../src/client';
import { ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { importItems } from '../../src/activities/items-import';
import { builtInPipelines } from '../../src/pipelines';
import { ErrorTypes, type JobResult, type OutputRecord } from '../../src/shared';
import { type Storage, StorageRefOutside, createStorage, parseStorageLocation } from '../../src/storage';
import { ROOT, type TestEnv, createTestEnv, eventually, runCli } from '../helpers/env';
import { type TestS3, startTestS3 } from '../helpers/s3';

const run = promisify(execFile);
const ndjson = (items: unknown[]) => items.map((item) => JSON.stringify(item)).join('\n') + '\n';

let s3: TestS3;
let env: TestEnv;
let bucket: S3Client;
let http404 = 0;
let server: http.Server;
let base: string;
const served = new Map<string, string>();

before(async () => {
  s3 = await startTestS3();
  bucket = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: s3.env.AWS_ACCESS_KEY_ID!, secretAccessKey: s3.env.AWS_SECRET_ACCESS_KEY! } });
  env = await createTestEnv({
    taskQueue: 'faultline-s3',
    envExtra: { ...s3.env, FAULTLINE_STORAGE: `s3://${s3.bucket}/faultline`, FAULTLINE_ALLOWED_HOSTS: '127.0.0.1' },
  });
  await env.startWorker();
  server = http.createServer((request, response) => {
    const body = served.get(request.url ?? '');
    if (body === undefined) {
      http404 += 1;
      response.writeHead(404).end('no such file');
      return;
    }
    response.writeHead(200, { 'content-type': 'application/x-ndjson' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await env?.teardown();
  server?.close();
  bucket?.destroy();
  await s3?.stop();
});

function cli(args: string[]) {
  return runCli(args, { env: env.env, cwd: env.dir, maxBuffer: 64 * 1024 * 1024 });
}

async function keys(prefix: string): Promise<string[]> {
  const found: string[] = [];
  let token: string | undefined;
  do {
    const page = await bucket.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix, ContinuationToken: token }));
    for (const object of page.Contents ?? []) if (object.Key) found.push(object.Key);
    token = page.NextContinuationToken;
  } while (token);
  return found;
}

/** The job failed as InvalidSpec, its first issue matching `issue`. */
function invalidSpec(issue: RegExp) {
  return (error: unknown) => {
    // The client's typed error, with Temporal's failure as its cause.
    assert.ok(error instanceof FaultlineClientError && error.code === 'invalid', String(error));
    const failed = error.cause;
    assert.ok(failed instanceof WorkflowFailedError && failed.cause instanceof ApplicationFailure, String(failed));
    assert.equal(failed.cause.type, ErrorTypes.InvalidSpec);
    assert.match(failed.cause.message, issue);
    return true;
  };
}

describe('job storage on S3 (MinIO)', () => {
  it('a 1,000-item job with itemsFrom s3:// runs with the client holding no local storage; `faultline result --outputs` prints its manifest', async () => {
    const items = Array.from({ length: 1_000 }, (_, i) => ({ id: `s3-item-${i}`, params: i % 250 === 7 ? { outcome: 'unprocessable' } : { transientFailures: i % 100 === 3 ? 1 : 0 } }));
    await bucket.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'inputs/thousand.ndjson', Body: ndjson(items) }));
    const spec = { pipeline: 'synthetic', itemsFrom: `s3://${s3.bucket}/inputs/thousand.ndjson`, options: { shardSize: 100, retry: { maxAttempts: 3, initialInterval: '10ms' } } };
    const { jobId } = await env.client.start(spec, { jobId: 's3-thousand' });
    const result = await env.client.result(jobId);
    assert.deepEqual([result.status, result.counts.items, result.counts.Available, result.counts.Failed], ['PartiallySucceeded', 1_000, 996, 4]);
    assert.deepEqual(result.failuresByReason.ItemUnprocessable?.sort(), ['s3-item-257', 's3-item-507', 's3-item-7', 's3-item-757']);
    assert.match(result.manifest ?? '', new RegExp(`^s3://${s3.bucket}/faultline/jobs/s3-thousand/manifest-round-1\\.ndjson$`));

    // Everything the job kept is in the bucket; nothing on the client's disk.
    assert.ok(!existsSync(path.join(env.dir, '.faultline')), 'no local .faultline');
    assert.ok(!existsSync(path.join(env.dir, 'faultline')), 'no local storage folder');
    const stored = await keys('faultline/jobs/s3-thousand/');
    assert.ok(stored.includes('faultline/jobs/s3-thousand/items.items.ndjson'), 'the worker pinned the items in job storage');
    assert.equal(stored.filter((key) => /\/slices\/slice-\d+\.r1\.ndjson$/.test(key)).length, 10);

    // The same start again is the same job; the source is named, not re-read, by the client.
    assert.deepEqual(await env.client.start(spec, { jobId: 's3-thousand' }), { jobId: 's3-thousand', existing: true });

    const printed = await cli(['result', jobId, '--outputs']);
    assert.equal(printed.code, 3, printed.stderr); // PartiallySucceeded
    const records = printed.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as OutputRecord);
    assert.equal(records.length, 1_000);
    assert.equal(new Set(records.map((record) => record.item)).size, 1_000);
    assert.equal(records.filter((record) => record.status === 'Failed').length, 4);
    const summary = JSON.parse((await cli(['result', jobId, '--json'])).stdout) as JobResult;
    assert.equal(summary.manifest, result.manifest);

    // A follow-up retry reads the failed items back from the worker's copy in the bucket.
    const retried = await env.client.retry(jobId, {});
    assert.deepEqual([retried.followUp, retried.queuedCount], [true, 4]);

    // gc removes a closed job's storage from the bucket.
    const followUp = await env.client.result(retried.jobId);
    assert.equal(followUp.counts.Failed, 4);
    const gc = await cli(['gc', '--older-than', '0s', '--json']);
    assert.equal(gc.code, 0, gc.stderr);
    assert.ok((JSON.parse(gc.stdout) as { removed: { jobId: string }[] }).removed.some((entry) => entry.jobId === 's3-thousand'));
    assert.deepEqual(await keys('faultline/jobs/s3-thousand/'), []);
  });

  it('`faultline export` of a 100,000-item job to s3://bucket/prefix writes a file per status and manifest.json last, matching the records', { timeout: 600_000 }, async () => {
    const items = Array.from({ length: 100_000 }, (_, index) => (index % 5 === 0 ? { id: `x${index}`, params: { outcome: 'missing' } } : { id: `x${index}` }));
    const { jobId } = await env.client.start({ pipeline: 'synthetic', items });
    const result = await env.client.result(jobId);
    const exported = await cli(['export', jobId, `s3://${s3.bucket}/exports/${jobId}`, '--json']);
    assert.equal(exported.code, 0, exported.stderr);
    const manifest = JSON.parse(exported.stdout) as { counts: Record<string, number>; files: { file: string; records: number }[] };
    assert.deepEqual(manifest.counts, { Available: result.counts.Available, Missing: result.counts.Missing });
    assert.deepEqual(
      (await keys(`exports/${jobId}/`)).sort(),
      ['Available.ndjson', 'Missing.ndjson', 'manifest.json'].map((name) => `exports/${jobId}/${name}`),
    );
    const stored = createStorage(`s3://${s3.bucket}/exports/${jobId}`, env.config.s3);
    const lines: OutputRecord[] = [];
    for (const file of manifest.files) for await (const record of stored.readLines<OutputRecord>(`s3://${s3.bucket}/exports/${jobId}/${file.file}`)) lines.push(record);
    const expected = await env.client.records(result);
    assert.deepEqual(lines.map((record) => JSON.stringify(record)).sort(), expected.map((record) => JSON.stringify(record)).sort());
  });

  it('ctx.writeOutput writes to an s3:// destination: images land under <prefix>/<item>/ with s3:// locations; archive needs a folder', async () => {
    const inputs = path.join(env.dir, 'images-s3-in');
    await mkdir(inputs, { recursive: true });
    await copyFile(path.join(ROOT, 'samples', 'images', 'with-exif.jpg'), path.join(inputs, 'with-exif.jpg'));
    const destination = `s3://${s3.bucket}/outputs/run-1`;
    const { jobId } = await env.client.start({
      pipeline: 'images',
      items: [{ id: 'photo', source: pathToFileURL(path.join(inputs, 'with-exif.jpg')).toString() }],
      outputs: ['thumbnail', 'metadata'],
      destination,
    });
    const result = await env.client.result(jobId);
    assert.equal(result.status, 'Succeeded', JSON.stringify(result.errors));
    assert.deepEqual((result.outputs ?? []).map((record) => record.location).sort(), [`${destination}/photo/metadata.json`, `${destination}/photo/thumbnail.webp`]);
    assert.deepEqual((await keys('outputs/run-1/')).sort(), ['outputs/run-1/photo/metadata.json', 'outputs/run-1/photo/thumbnail.webp']);
    await assert.rejects(
      env.client.start({ pipeline: 'images', items: [{ id: 'a', source: 'https://example.org/a.png' }], destination, options: { archive: true } }),
      (error: unknown) => error instanceof FaultlineClientError && error.issues.some((issue) => issue.path === 'options.archive' && issue.code === 'archive_needs_folder'),
    );
  });

  it('the images pipeline keeps working copies in the bucket, and the job releases them at close', async () => {
    const inputs = path.join(env.dir, 'images-in');
    await mkdir(inputs, { recursive: true });
    for (const name of ['with-exif.jpg', 'alpha.png', 'truncated.jpg']) await copyFile(path.join(ROOT, 'samples', 'images', name), path.join(inputs, name));
    const { jobId } = await env.client.start({
      pipeline: 'images',
      items: ['with-exif.jpg', 'alpha.png', 'truncated.jpg'].map((name) => ({ id: name.replace('.', '-'), source: pathToFileURL(path.join(inputs, name)).toString() })),
      outputs: ['thumbnail', 'metadata'],
      destination: pathToFileURL(path.join(env.dir, 'images-out')).toString(),
    });
    const result = await env.client.result(jobId);
    assert.deepEqual([result.status, result.counts.Available, result.counts.Failed], ['PartiallySucceeded', 4, 2]);
    for (const record of result.outputs ?? []) if (record.status === 'Available') assert.ok(existsSync(fileURLToPath(record.location ?? '')), record.location);
    // The failed item keeps its working copy for a retry until the job closes; closing releases it.
    await eventually(async () => (await env.client.jobState(jobId)).kind === 'closed', 20_000, 'closed');
    const closed = await env.client.result(jobId);
    assert.ok((closed.metrics.storageReleasedBytes ?? 0) > 0, "the failed item's working copy was released at close");
    assert.deepEqual(await keys(`faultline/jobs/${jobId}/work/`), [], 'no working copy outlives the job');
    assert.ok(!existsSync(path.join(env.dir, '.faultline')));
  });

  it('`start --items` uploads the file into the bucket; the same start again keeps one copy', async () => {
    await writeFile(path.join(env.dir, 'head.json'), JSON.stringify({ pipeline: 'synthetic' }));
    await writeFile(path.join(env.dir, 'local.ndjson'), ndjson(Array.from({ length: 1_500 }, (_, i) => ({ id: `l${i}` }))));
    const itemsFilesNow = async () => (await keys('faultline/specs/')).filter((key) => key.endsWith('.items.ndjson')).length;
    const before = await itemsFilesNow();
    const first = await cli(['start', 'head.json', '--items', 'local.ndjson', '--id', 's3-local-items', '--wait', '--json']);
    assert.equal(first.code, 0, first.stderr);
    const result = JSON.parse(first.stdout) as JobResult;
    assert.deepEqual([result.status, result.counts.items], ['Succeeded', 1_500]);
    const again = await cli(['start', 'head.json', '--items', 'local.ndjson', '--id', 's3-local-items', '--json']);
    assert.equal((JSON.parse(again.stdout) as { existing: boolean }).existing, true);
    assert.equal((await itemsFilesNow()) - before, 1, 'one items file for the job, none left by the repeated start');
  });

  it('items at an https:// source are read by a worker; a bad line or a 404 fails the job as InvalidSpec naming it', async () => {
    served.set('/items.ndjson', ndjson([{ id: 'h1' }, { id: 'h2' }, { id: 'h3' }]));
    const ok = await env.client.start({ pipeline: 'synthetic', itemsFrom: `${base}/items.ndjson` });
    const result = await env.client.result(ok.jobId);
    assert.deepEqual([result.status, result.counts.items, result.counts.Available], ['Succeeded', 3, 3]);

    served.set('/bad.ndjson', ndjson([{ id: 'b1' }, { id: 'b1' }]));
    const bad = await env.client.start({ pipeline: 'synthetic', itemsFrom: `${base}/bad.ndjson` });
    await assert.rejects(env.client.result(bad.jobId), invalidSpec(/items\[1\]\.id: item id "b1" .*\(line 2\)/));
    assert.deepEqual(await keys(`faultline/jobs/${bad.jobId}/items`), [], 'nothing of an invalid source is stored');

    const before404 = http404;
    const missing = await env.client.start({ pipeline: 'synthetic', itemsFrom: `${base}/nope.ndjson` });
    await assert.rejects(env.client.result(missing.jobId), invalidSpec(/itemsFrom: cannot read .*HTTP 404/));
    assert.equal(http404 - before404, 1, 'a 404 is not retried');
  });

  it("another job's data in job storage is not an items source", async () => {
    const prying = await env.client.start({ pipeline: 'synthetic', itemsFrom: `s3://${s3.bucket}/faultline/jobs/s3-thousand/items.items.ndjson` });
    await assert.rejects(env.client.result(prying.jobId), invalidSpec(/itemsFrom: .* is Faultline's own job data/));
  });

  it('the client refuses an itemsFrom it cannot name, without starting anything', async () => {
    await assert.rejects(env.client.start({ pipeline: 'synthetic', itemsFrom: 'ftp://example.com/items.ndjson' }), /itemsFrom is an NDJSON source/);
    await assert.rejects(env.client.start({ pipeline: 'synthetic', itemsFrom: 's3://' }), /itemsFrom is an NDJSON source/);
  });
});

describe('the Storage interface on S3', () => {
  it('keeps, checks, drops and releases working files, and lists and removes jobs, in the bucket', async () => {
    const storage = createStorage(`s3://${s3.bucket}/contract`, { endpoint: s3.endpoint, credentials: { accessKeyId: s3.env.AWS_ACCESS_KEY_ID!, secretAccessKey: s3.env.AWS_SECRET_ACCESS_KEY! } });
    const data = Buffer.from('source bytes');
    const sha256 = createHash('sha256').update(data).digest('hex');
    assert.deepEqual(await storage.writeWorkFile('job-a', 'item-1', 'source', data), { name: 'source', bytes: data.length, sha256 });
    await storage.writeWorkFile('job-a', 'item-2', 'source', data);
    assert.deepEqual(await storage.readWorkFile('job-a', 'item-1', 'source', sha256), data);

    // Bytes that no longer match the sha256 a step kept are no working file.
    await bucket.send(new PutObjectCommand({ Bucket: s3.bucket, Key: 'contract/jobs/job-a/work/item-2/source', Body: 'tampered' }));
    assert.equal(await storage.readWorkFile('job-a', 'item-2', 'source', sha256), undefined);

    await storage.dropWorkFiles('job-a', 'item-1');
    assert.equal(await storage.readWorkFile('job-a', 'item-1', 'source'), undefined);
    await storage.writeLines(storage.sliceRecordsUri('job-a', 0, 1), [{ item: 'x', output: 'result', status: 'Available' }]);
    const released = await storage.releaseWorkingCopies('job-a');
    assert.ok(released.releasedBytes > 0 && released.keptBytes > 0, JSON.stringify(released));
    assert.deepEqual(await keys('contract/jobs/job-a/work/'), []);

    const jobs: string[] = [];
    for await (const job of storage.jobs()) jobs.push(job.jobId);
    assert.deepEqual(jobs, ['job-a']);
    await storage.removeJob('job-a');
    assert.deepEqual(await keys('contract/jobs/'), []);
    assert.deepEqual(await storage.check({ create: true }), { createdBucket: false });
  });

  it('a bucket that does not exist is one clear StorageUnusable line; --create makes it', async () => {
    const options = { endpoint: s3.endpoint, credentials: { accessKeyId: s3.env.AWS_ACCESS_KEY_ID!, secretAccessKey: s3.env.AWS_SECRET_ACCESS_KEY! } };
    await assert.rejects(createStorage('s3://no-such-bucket-here/x', options).check(), /job storage s3:\/\/no-such-bucket-here\/x\/ is not usable \(NoSuchBucket/);
    const wrongKey = createStorage(`s3://${s3.bucket}/x`, { ...options, credentials: { accessKeyId: 'nobody', secretAccessKey: 'wrong-secret' } });
    await assert.rejects(wrongKey.check(), /is not usable \(InvalidAccessKeyId/);
    const created = await cli(['storage-check', '--json']);
    assert.equal(created.code, 0, created.stderr);
    const fresh = await run(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'storage-check', '--create', '--json'], {
      env: { ...env.env, FAULTLINE_STORAGE: 's3://made-by-check/jobs' },
      cwd: env.dir,
    });
    assert.deepEqual(JSON.parse(fresh.stdout), { storage: 's3://made-by-check/jobs/', usable: true, createdBucket: true });
    const missing = await run(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'worker', '--processes', '1'], {
      env: { ...env.env, FAULTLINE_STORAGE: 's3://never-made/jobs' },
      cwd: env.dir,
    }).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^error: job storage s3:\/\/never-made\/jobs\/ is not usable \(NoSuchBucket/m);
  });
});

describe('importItems', () => {
  let dir: string;
  let storage: Storage;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-import-'));
    storage = createStorage(path.join(dir, 'storage'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const deps = (allowedHosts: string[]) => ({ storage, registry: builtInPipelines, allowedHosts, s3: {}, heartbeat: () => undefined, signal: new AbortController().signal });

  it('refuses a private host that is not allowed, and stores nothing', async () => {
    served.set('/private.ndjson', ndjson([{ id: 'p1' }]));
    const refused = await importItems({ jobId: 'private', from: `${base}/private.ndjson`, head: { pipeline: 'synthetic' } }, deps([]));
    assert.equal(refused.ok, false);
    assert.equal(!refused.ok && refused.issues[0]?.code, 'host_not_allowed');
    assert.equal(await storage.exists(storage.jobItemsUri('private')), false);
  });

  it('a second attempt reuses the pinned copy instead of reading a source that changed', async () => {
    served.set('/moving.ndjson', ndjson([{ id: 'm1' }, { id: 'm2' }]));
    const first = await importItems({ jobId: 'moving', from: `${base}/moving.ndjson`, head: { pipeline: 'synthetic' } }, deps(['127.0.0.1']));
    served.set('/moving.ndjson', ndjson([{ id: 'm1' }, { id: 'm2' }, { id: 'm3' }]));
    const again = await importItems({ jobId: 'moving', from: `${base}/moving.ndjson`, head: { pipeline: 'synthetic' } }, deps(['127.0.0.1']));
    assert.deepEqual([first.ok && first.itemCount, again.ok && again.itemCount], [2, 2]);
  });
});

describe('storage locations', () => {
  it('parses s3://bucket/prefix and refuses malformed ones in one line', () => {
    assert.deepEqual(parseStorageLocation('s3://my-bucket/a/b/'), { kind: 's3', bucket: 'my-bucket', prefix: 'a/b/' });
    assert.deepEqual(parseStorageLocation('s3://my-bucket'), { kind: 's3', bucket: 'my-bucket', prefix: '' });
    assert.throws(() => parseStorageLocation('s3://Bad_Bucket/x'), /is not s3:\/\/bucket\/prefix/);
    assert.throws(() => parseStorageLocation('s3://bucket/../x'), /may not contain/);
  });

  it('a reference outside the storage (another bucket, prefix or scheme) is refused', async () => {
    const storage = createStorage(`s3://${s3.bucket}/faultline`, { endpoint: s3.endpoint, credentials: { accessKeyId: s3.env.AWS_ACCESS_KEY_ID!, secretAccessKey: s3.env.AWS_SECRET_ACCESS_KEY! } });
    for (const ref of [`s3://other/faultline/specs/x.json`, `s3://${s3.bucket}/elsewhere/x.json`, `s3://${s3.bucket}/faultline/../x.json`, 'file:///etc/passwd']) {
      await assert.rejects(storage.readSpec(ref), (error: unknown) => error instanceof StorageRefOutside);
    }
  });
});
