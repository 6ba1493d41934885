import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import * as tar from 'tar';
import { FaultlineClientError, closedJobResult } from '../../src/client';
import { ErrorTypes, type JobResult, type OutputRecord, WORKFLOW_TYPES } from '../../src/shared';
import { ROOT, type TestEnv, type WorkerProcess, createTestEnv } from '../helpers/env';

const SAMPLES = path.join(ROOT, 'samples', 'images');
const sample = (name: string) => pathToFileURL(path.join(SAMPLES, name)).toString();
const WEBHOOK_SECRET = 'whsec-test-1f2e3d';

let env: TestEnv;
let workers: WorkerProcess;
let server: http.Server;
let base = '';
const hits = new Map<string, number>();
const puts = new Map<string, Buffer[]>();
const webhooks: { headers: http.IncomingHttpHeaders; body: string; verified: boolean }[] = [];

/** An independent webhook check: its own HMAC code, not Faultline's helper. */
function independentlyVerified(body: string, header: string | undefined): boolean {
  const parts = Object.fromEntries((header ?? '').split(',').map((part) => part.split('=') as [string, string]));
  if (!parts.t || !parts.v1) return false;
  const expected = createHmac('sha256', WEBHOOK_SECRET).update(`${parts.t}.${body}`).digest();
  const given = Buffer.from(parts.v1, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function hit(key: string): number {
  const count = (hits.get(key) ?? 0) + 1;
  hits.set(key, count);
  return count;
}

before(async () => {
  server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const route = url.pathname;
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const serve = async (name: string) => res.end(await readFile(path.join(SAMPLES, name)));
      if (route.startsWith('/img/')) return void serve(route.slice(5));
      if (route === '/spec-check') return hit('spec-check') && void serve('no-exif.jpg');
      if (route === '/404') return void res.writeHead(404).end();
      if (route === '/403') return void res.writeHead(403).end();
      if (route === '/500') return void res.writeHead(500).end();
      if (route === '/flaky') return hit('flaky') <= 2 ? void res.writeHead(503).end() : void serve('no-exif.jpg');
      if (route === '/429') return hit('429') === 1 ? void res.writeHead(429, { 'retry-after': '1' }).end() : void serve('no-exif.jpg');
      if (route === '/slow') return void setTimeout(() => void serve('no-exif.jpg'), 1_500);
      if (route === '/redirect-private') return void res.writeHead(302, { location: `http://localhost:${(server.address() as AddressInfo).port}/img/no-exif.jpg` }).end();
      if (route.startsWith('/put/')) {
        if (route.includes('deny')) return void res.writeHead(403).end();
        if (route.includes('flaky') && hit(route) <= 3) return void res.writeHead(502).end();
        const list = puts.get(route) ?? [];
        list.push(Buffer.concat(chunks));
        puts.set(route, list);
        return void res.writeHead(200).end();
      }
      if (route === '/hook') {
        const body = Buffer.concat(chunks).toString();
        webhooks.push({ headers: req.headers, body, verified: independentlyVerified(body, req.headers['faultline-signature'] as string | undefined) });
        return hit('hook') <= 2 ? void res.writeHead(500).end() : void res.writeHead(204).end();
      }
      res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  env = await createTestEnv({
    taskQueue: 'faultline-images',
    envExtra: { FAULTLINE_ALLOWED_HOSTS: '127.0.0.1', FAULTLINE_ALLOWED_ROOTS: '', FAULTLINE_LOG_LEVEL: 'info' },
  });
  // Allowed roots: the test's temp dir and the committed samples.
  env.env.FAULTLINE_ALLOWED_ROOTS = [env.dir, SAMPLES].join(path.delimiter);
  env.config.allowedRoots = [env.dir, SAMPLES];
  workers = env.spawnWorker();
});

after(async () => {
  await workers?.stop();
  await env?.teardown();
  const closed = new Promise((resolve) => server?.close(resolve));
  server?.closeAllConnections();
  await closed;
});

function out(result: JobResult, item: string, output: string): OutputRecord {
  const found = result.outputs?.find((record) => record.item === item && record.output === output);
  assert.ok(found, `no ${item}/${output} in ${JSON.stringify(result.outputs?.map((r) => `${r.item}/${r.output}`))}`);
  return found;
}

async function runImages(spec: Record<string, unknown>, jobId?: string): Promise<JobResult> {
  const { jobId: id } = await env.client.start({ pipeline: 'images', ...spec }, jobId ? { jobId } : {});
  return env.client.result(id);
}

describe('images pipeline (real sharp, real files, real HTTP on 127.0.0.1)', () => {
  it('produces every output status from the sample files', async () => {
    const dest = path.join(env.dir, 'out-files');
    const missingFile = pathToFileURL(path.join(env.dir, 'does-not-exist.jpg')).toString();
    const result = await runImages({
      items: [
        { id: 'exif', source: sample('with-exif.jpg') },
        { id: 'plain', source: sample('no-exif.jpg') },
        { id: 'alpha', source: sample('alpha.png'), outputs: ['thumbnail', 'metadata'] },
        { id: 'truncated', source: sample('truncated.jpg') },
        { id: 'text', source: sample('not-an-image.jpg') },
        { id: 'tiny', source: sample('tiny.png') },
        { id: 'noise', source: sample('noise.png'), outputs: ['fit'] },
        { id: 'gone', source: missingFile },
      ],
      outputs: ['thumbnail', 'preview', 'metadata', 'exif', 'fit'],
      params: { fit: { maxBytes: 1_200 }, filter: { minWidth: 64, minHeight: 64 } },
      destination: pathToFileURL(dest).toString(),
    });
    assert.equal(result.status, 'PartiallySucceeded');
    for (const output of ['thumbnail', 'preview', 'metadata', 'exif']) assert.equal(out(result, 'exif', output).status, 'Available', output);
    const exifJson = JSON.parse(await readFile(path.join(dest, 'exif', 'exif.json'), 'utf8')) as { Image?: { Make?: string } };
    assert.equal(exifJson.Image?.Make, 'Faultline');
    assert.equal(out(result, 'plain', 'exif').status, 'Missing');
    assert.equal(out(result, 'plain', 'exif').reason, 'image has no EXIF data');
    const thumb = out(result, 'plain', 'thumbnail');
    assert.equal(thumb.location, pathToFileURL(path.join(dest, 'plain', 'thumbnail.webp')).toString());
    const thumbBytes = await readFile(path.join(dest, 'plain', 'thumbnail.webp'));
    assert.equal(thumb.bytes, thumbBytes.length);
    const sharp = (await import('sharp')).default;
    const thumbMeta = await sharp(thumbBytes).metadata();
    assert.equal(thumbMeta.format, 'webp');
    assert.ok(Math.max(thumbMeta.width ?? 0, thumbMeta.height ?? 0) <= 256);
    const previewMeta = await sharp(path.join(dest, 'plain', 'preview.jpg')).metadata();
    assert.equal(previewMeta.format, 'jpeg');
    const metadata = JSON.parse(await readFile(path.join(dest, 'alpha', 'metadata.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual([metadata.format, metadata.width, metadata.height, metadata.alpha, metadata.channels], ['png', 160, 120, true, 4]);
    assert.match(String(metadata.sha256), /^[0-9a-f]{64}$/);
    assert.equal(out(result, 'plain', 'fit').status, 'Available');
    assert.ok((out(result, 'plain', 'fit').bytes ?? Infinity) <= 1_200);
    assert.equal(out(result, 'truncated', 'thumbnail').error?.type, ErrorTypes.CorruptImage);
    assert.equal(out(result, 'text', 'preview').error?.type, ErrorTypes.UnsupportedFormat);
    assert.equal(out(result, 'text', 'preview').error?.class, 'unprocessable');
    assert.equal(out(result, 'tiny', 'thumbnail').status, 'Skipped');
    assert.match(out(result, 'tiny', 'thumbnail').reason ?? '', /below the minimum 64px/);
    const fit = out(result, 'noise', 'fit');
    assert.equal(fit.status, 'Unsolved');
    assert.ok(Number(fit.details?.bestBytes) > 1_200);
    assert.equal(out(result, 'gone', 'thumbnail').error?.type, ErrorTypes.SourceNotFound);
    assert.deepEqual(Object.keys(result.failuresByReason).sort(), ['CorruptImage', 'SourceNotFound', 'UnsupportedFormat']);
    assert.ok(result.metrics.bytesIn > 0 && result.metrics.bytesOut > 0);
    // fetch and process have no side effects: an item that succeeds at once writes nothing to job
    // storage; one that failed after fetching kept its working copy and checkpoint for a retry.
    const checkpoints = path.join(env.config.storage, 'jobs', result.jobId, 'checkpoints');
    assert.ok(!existsSync(path.join(checkpoints, 'plain.json')), 'no checkpoint for an item that succeeded');
    assert.ok(!existsSync(path.join(env.config.storage, 'jobs', result.jobId, 'work', 'plain')), 'no working files for it either');
    assert.ok(existsSync(path.join(checkpoints, 'truncated.json')), 'the item that failed in process is kept at its fetch');
  });

  it('a spec with sources outside the allowed roots (a symlink, ../, another dir) fails as InvalidSpec listing each, with nothing run; pixel bombs', async () => {
    const { symlink } = await import('node:fs/promises');
    const link = path.join(env.dir, 'sneaky.jpg');
    await symlink('/etc/hostname', link).catch(() => undefined);
    const fetchesBefore = hits.get('spec-check') ?? 0;
    await assert.rejects(
      runImages({
        items: [
          { id: 'sneaky', source: pathToFileURL(link).toString(), outputs: ['metadata'] },
          { id: 'fine', source: `${base}/spec-check`, outputs: ['metadata'] },
          { id: 'dotdot', source: `file://${env.dir}/../../etc/hostname`, outputs: ['metadata'] },
          { id: 'escape', source: 'file:///etc/hostname', outputs: ['metadata'] },
        ],
        destination: pathToFileURL(path.join(env.dir, 'out-escape')).toString(),
      }),
      (error: unknown) => {
        assert.ok(error instanceof FaultlineClientError && error.code === 'invalid', String(error));
        assert.deepEqual(
          error.issues.map((issue) => [issue.path, issue.code]),
          [0, 2, 3].map((index) => [`items[${index}].source`, ErrorTypes.SourceOutsideAllowedRoots]),
        );
        return true;
      },
    );
    assert.equal(hits.get('spec-check') ?? 0, fetchesBefore, 'nothing ran');
    const result = await runImages({
      items: [{ id: 'bomb', source: sample('no-exif.jpg'), outputs: ['metadata'] }],
      params: { maxPixels: 10_000 },
      destination: pathToFileURL(path.join(env.dir, 'out-bomb')).toString(),
    });
    const bomb = out(result, 'bomb', 'metadata').error;
    assert.equal(bomb?.type, ErrorTypes.ImageTooLarge);
    assert.equal(bomb?.details.maxPixels, 10_000);
  });

  it('classifies HTTP sources: 404, 403, 500, flaky, 429 with Retry-After, slow, SSRF', async () => {
    const started = Date.now();
    const result = await runImages({
      items: [
        { id: 'ok', source: `${base}/img/with-exif.jpg` },
        { id: 'nf', source: `${base}/404` },
        { id: 'forbidden', source: `${base}/403?token=supersecret` },
        { id: 'down', source: `${base}/500` },
        { id: 'flaky', source: `${base}/flaky` },
        { id: 'limited', source: `${base}/429` },
        { id: 'slow', source: `${base}/slow` },
        { id: 'redirect', source: `${base}/redirect-private` },
        { id: 'loopback', source: `http://localhost:${(server.address() as AddressInfo).port}/img/no-exif.jpg` },
        { id: 'metadata', source: 'http://169.254.169.254/latest/meta-data' },
      ],
      outputs: ['metadata'],
      params: { timeouts: { readMs: 500 } },
      destination: pathToFileURL(path.join(env.dir, 'out-http')).toString(),
      options: { retry: { maxAttempts: 3, initialInterval: '50ms', maximumInterval: '200ms' } },
    });
    const error = (item: string) => out(result, item, 'metadata').error;
    assert.equal(out(result, 'ok', 'metadata').status, 'Available');
    assert.equal(error('nf')?.type, ErrorTypes.SourceNotFound);
    assert.equal(error('nf')?.details.httpStatus, 404);
    assert.equal(error('nf')?.attempts, 1);
    assert.equal(error('forbidden')?.type, ErrorTypes.SourceForbidden);
    assert.ok(!JSON.stringify(result).includes('supersecret'), 'query tokens are redacted');
    assert.equal(error('down')?.type, ErrorTypes.EndpointUnavailable);
    assert.equal(error('down')?.class, 'transient');
    assert.equal(error('down')?.attempts, 3);
    assert.equal(out(result, 'flaky', 'metadata').status, 'Available');
    assert.equal(out(result, 'limited', 'metadata').status, 'Available');
    assert.ok(Date.now() - started >= 1_000, 'Retry-After was honoured');
    assert.equal(error('slow')?.type, ErrorTypes.NetworkError);
    assert.equal(error('slow')?.attempts, 3);
    assert.equal(error('redirect')?.type, ErrorTypes.HostNotAllowed);
    assert.equal(error('loopback')?.type, ErrorTypes.HostNotAllowed);
    assert.equal(error('metadata')?.type, ErrorTypes.HostNotAllowed);
  });

  it('pre-signed PUT destinations: retried uploads store once; 403 ends the job as fatal', async () => {
    const putUrls = { a: { thumbnail: `${base}/put/a-thumb-flaky?X-Amz-Signature=abc`, metadata: `${base}/put/a-meta` } };
    const ok = await runImages({ items: [{ id: 'a', source: sample('no-exif.jpg'), outputs: ['thumbnail', 'metadata'] }], params: { putUrls }, options: { retry: { initialInterval: '50ms' } } });
    assert.equal(ok.status, 'Succeeded');
    assert.equal(puts.get('/put/a-thumb-flaky')?.length, 1, 'one stored upload despite retries');
    assert.equal(out(ok, 'a', 'thumbnail').location, `${base}/put/a-thumb-flaky?X-Amz-Signature=REDACTED`);
    assert.equal(
      out(ok, 'a', 'thumbnail').sha256,
      (await import('node:crypto'))
        .createHash('sha256')
        .update(puts.get('/put/a-thumb-flaky')?.[0] ?? '')
        .digest('hex'),
    );
    const denied = await runImages({
      items: [
        { id: 'd', source: sample('no-exif.jpg'), outputs: ['thumbnail'] },
        { id: 'e', source: sample('no-exif.jpg'), outputs: ['thumbnail'] },
      ],
      params: { putUrls: { d: { thumbnail: `${base}/put/deny` }, e: { thumbnail: `${base}/put/deny` } } },
      options: { batchSize: 2 },
    });
    assert.equal(denied.status, 'Failed');
    assert.equal(denied.success, false);
    const fatal = denied.errors.find((error) => error.type === ErrorTypes.DestinationRejected);
    assert.equal(fatal?.class, 'fatal');
    assert.equal(out(denied, 'e', 'thumbnail').status, 'Cancelled');
  });

  it('400 images delivered to per-item PUT URLs keep the job history under 2 MB (URLs travel only with their item)', async () => {
    const signature = 'X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=' + 'f'.repeat(256);
    const items = Array.from({ length: 400 }, (_, index) => ({
      id: `p${index}`,
      source: sample('no-exif.jpg'),
      outputs: ['thumbnail'],
      putUrls: { thumbnail: `${base}/put/many-${index}?${signature}` },
    }));
    const result = await runImages({ items, options: { batchSize: 20 } }, 'put-400');
    assert.equal(result.status, 'Succeeded');
    assert.equal(result.counts.Available, 400);
    assert.ok(Array.from({ length: 400 }, (_, index) => puts.get(`/put/many-${index}`)?.length === 1).every(Boolean), 'one upload per item');
    const described = await env.client.client.workflow.getHandle('put-400').describe();
    const historyBytes = Number(described.raw.workflowExecutionInfo?.historySizeBytes ?? 0);
    assert.ok(historyBytes > 0 && historyBytes < 2 * 1024 * 1024, `history ${historyBytes} bytes`);
    const history = JSON.stringify(await env.client.client.workflow.getHandle('put-400').fetchHistory());
    const copies = history.split(`many-7?${signature}`).length - 1;
    assert.ok(copies <= 2, `the signed URL of one item appears ${copies} times in history (its spec entry and its batch at most)`);
  });

  it('the outbound guard covers webhooks and PUT uploads: private targets are refused, typed, and never contacted', async () => {
    const port = (server.address() as AddressInfo).port;
    const before = { hook: hits.get('hook') ?? 0, puts: puts.size };
    // `localhost` is not in FAULTLINE_ALLOWED_HOSTS (only 127.0.0.1 is), so it counts as loopback.
    const result = await runImages(
      {
        items: [
          { id: 'viaName', source: sample('no-exif.jpg'), outputs: ['thumbnail'], putUrls: { thumbnail: `http://localhost:${port}/put/guarded-name` } },
          { id: 'metadata', source: sample('no-exif.jpg'), outputs: ['thumbnail'], putUrls: { thumbnail: 'http://169.254.169.254/latest/put' } },
          { id: 'nat64', source: sample('no-exif.jpg'), outputs: ['thumbnail'], putUrls: { thumbnail: 'http://[64:ff9b::a9fe:a9fe]/put' } },
        ],
        options: { batchSize: 1, concurrency: 1, webhook: { url: `http://localhost:${port}/hook?token=abc`, secret: WEBHOOK_SECRET } },
      },
      'guarded-job',
    );
    const final = await closedJobResult(env.client.handle('guarded-job')); // with the webhook's outcome
    for (const item of ['viaName', 'metadata', 'nat64']) {
      const record = out(result, item, 'thumbnail');
      assert.equal(record.status, 'Failed', item);
      assert.equal(record.error?.type, ErrorTypes.HostNotAllowed, item);
      assert.equal(record.error?.attempts, 1, `${item}: not retried`);
      assert.equal(record.error?.details.httpStatus, undefined, `${item}: no status code of a refused target is reported`);
    }
    const note = final.notifications?.[0];
    assert.equal(note?.delivered, false);
    assert.equal(note?.error?.type, ErrorTypes.HostNotAllowed);
    assert.equal(note?.lastStatus, undefined);
    assert.equal(hits.get('hook') ?? 0, before.hook, 'the webhook receiver was never contacted');
    assert.equal(puts.size, before.puts, 'no upload reached the server');
  });

  it('job storage is off limits to specs, although it lies inside an allowed root', async () => {
    const planted = path.join(env.config.storage, 'jobs', 'other-job', 'work', 'x', 'source');
    await mkdir(path.dirname(planted), { recursive: true });
    await copyFile(path.join(SAMPLES, 'no-exif.jpg'), planted);
    const refused = (path: string, type: string) => (error: unknown) =>
      error instanceof FaultlineClientError && error.issues.some((issue) => issue.path === path && issue.code === type && /inside Faultline's job storage/.test(issue.message));
    await assert.rejects(
      runImages({
        items: [{ id: 'peek', source: pathToFileURL(planted).toString(), outputs: ['metadata'] }],
        destination: pathToFileURL(path.join(env.dir, 'out-peek')).toString(),
      }),
      refused('items[0].source', ErrorTypes.SourceOutsideAllowedRoots),
    );
    await assert.rejects(
      runImages({
        items: [{ id: 'plant', source: sample('no-exif.jpg'), outputs: ['metadata'] }],
        destination: pathToFileURL(path.join(env.config.storage, 'jobs', 'other-job')).toString(),
      }),
      refused('destination', ErrorTypes.DestinationOutsideAllowedRoots),
    );
  });

  it('a re-run delivery never duplicates or leaves partial files', async () => {
    const dest = path.join(env.dir, 'out-rerun');
    const spec = { items: [{ id: 'r', source: sample('no-exif.jpg') }], destination: pathToFileURL(dest).toString() };
    await runImages(spec);
    const first = (await readdir(path.join(dest, 'r'))).sort();
    await runImages(spec);
    assert.deepEqual((await readdir(path.join(dest, 'r'))).sort(), first);
    assert.deepEqual(
      first,
      ['exif.json', 'metadata.json', 'preview.jpg', 'thumbnail.webp'].filter((name) => name !== 'exif.json'),
    );
  });

  it('1,000 corrupt images in one slice (real sharp errors, stacks and causes): the job closes with 3,000 Failed outputs grouped by type', async () => {
    // Issue 18's first reproduction: on engine v2 every workflow task failed with PayloadsTooLarge and the job hung.
    const dir = path.join(env.dir, 'corrupt');
    await mkdir(dir, { recursive: true });
    const items = [];
    for (let i = 0; i < 1_000; i += 1) {
      const file = path.join(dir, `c${i}.jpg`);
      await copyFile(path.join(SAMPLES, i % 2 === 0 ? 'truncated.jpg' : 'not-an-image.jpg'), file);
      items.push({ id: `c${i}`, source: pathToFileURL(file).toString() });
    }
    const result = await runImages({
      items,
      outputs: ['thumbnail', 'preview', 'metadata'],
      destination: pathToFileURL(path.join(env.dir, 'corrupt-out')).toString(),
      options: { shardSize: 1_000, toleratedFailurePercent: 100 },
    });
    assert.equal(result.status, 'Failed');
    assert.equal(result.counts.Failed, 3_000);
    assert.deepEqual(Object.keys(result.failureCounts).sort(), [ErrorTypes.CorruptImage, ErrorTypes.UnsupportedFormat]);
    const records = await env.client.records(result);
    assert.equal(records.length, 3_000);
    const grouped = new Map<string, number>();
    for (const record of records) grouped.set(record.error?.type ?? 'none', (grouped.get(record.error?.type ?? 'none') ?? 0) + 1);
    assert.deepEqual(Object.fromEntries(grouped), { [ErrorTypes.CorruptImage]: 1_500, [ErrorTypes.UnsupportedFormat]: 1_500 });
  });

  it('a source fixed in place is read again on retry: the working copy kept from round 1 depended on the file', async () => {
    const file = path.join(env.dir, 'fixed-in-place.jpg');
    await copyFile(path.join(SAMPLES, 'not-an-image.jpg'), file);
    const { jobId } = await env.client.start({
      pipeline: 'images',
      items: [{ id: 'fix', source: pathToFileURL(file).toString(), outputs: ['metadata'] }],
      destination: pathToFileURL(path.join(env.dir, 'fixed-out')).toString(),
      options: { retryWindow: '10m' },
    });
    const first = await env.client.result(jobId);
    assert.equal(out(first, 'fix', 'metadata').error?.type, ErrorTypes.UnsupportedFormat);
    await copyFile(path.join(SAMPLES, 'no-exif.jpg'), file);
    await env.client.retry(jobId, { items: ['fix'] });
    const second = await env.client.result(jobId, { round: 2 });
    assert.equal(out(second, 'fix', 'metadata').status, 'Available', 'the fixed file was read, not the kept corrupt copy');
  });

  it('all items filtered out → Empty', async () => {
    const result = await runImages({
      items: [{ id: 'small', source: sample('tiny.png') }],
      params: { filter: { minWidth: 100 } },
      destination: pathToFileURL(path.join(env.dir, 'out-empty')).toString(),
    });
    assert.equal(result.status, 'Empty');
    assert.equal(result.success, true);
  });

  it('archive child job packs outputs + manifest; a vanished file is counted, not fatal', async () => {
    const dest = path.join(env.dir, 'out-archive');
    const result = await runImages(
      {
        items: [
          { id: 'x', source: sample('no-exif.jpg'), outputs: ['thumbnail', 'metadata'] },
          { id: 'y', source: sample('alpha.png'), outputs: ['thumbnail'] },
        ],
        destination: pathToFileURL(dest).toString(),
        options: { archive: true },
      },
      'archive-job',
    );
    assert.equal(result.archive?.files, 3);
    assert.ok(result.archive?.location);
    const listed: string[] = [];
    await tar.t({ file: fileURLToPath(result.archive.location), onReadEntry: (entry) => listed.push(entry.path) });
    assert.deepEqual(listed.sort(), ['manifest.json', 'x/metadata.json', 'x/thumbnail.webp', 'y/thumbnail.webp']);

    // The child job on its own, with one output file deleted before it packs.
    await rm(path.join(dest, 'y', 'thumbnail.webp'));
    const summary = await env.client.client.workflow.execute(WORKFLOW_TYPES.archive, {
      taskQueue: env.config.taskQueue,
      workflowId: 'archive-job/archive-manual',
      args: [{ jobId: 'archive-job', round: 2, destination: pathToFileURL(dest).toString(), outputs: result.outputs }],
    });
    assert.deepEqual([summary.files, summary.missing, summary.missingFiles], [2, 1, ['y/thumbnail']]);
    // Nothing left to pack: skipped with a report.
    const empty = await env.client.client.workflow.execute(WORKFLOW_TYPES.archive, {
      taskQueue: env.config.taskQueue,
      workflowId: 'archive-job/archive-empty',
      args: [{ jobId: 'archive-job', round: 3, destination: pathToFileURL(dest).toString(), outputs: [] }],
    });
    assert.equal(empty.files, 0);
    assert.match(empty.skipped, /nothing to pack/);
  });

  it('signed webhook: verified independently, retried through 500s, secret never in result, history or logs', async () => {
    await mkdir(path.join(env.dir, 'in'), { recursive: true });
    await copyFile(path.join(SAMPLES, 'no-exif.jpg'), path.join(env.dir, 'in', 'w.jpg'));
    const settled = await runImages(
      {
        items: [{ id: 'w', source: pathToFileURL(path.join(env.dir, 'in', 'w.jpg')).toString(), outputs: ['metadata'] }],
        destination: pathToFileURL(path.join(env.dir, 'out-hook')).toString(),
        options: { webhook: { url: `${base}/hook?token=hooktoken`, secret: WEBHOOK_SECRET } },
      },
      'webhook-job',
    );
    assert.equal(settled.status, 'Succeeded');
    // The delivery outcome joins the result after delivery: the completed job carries it.
    const result = await closedJobResult(env.client.client.workflow.getHandle('webhook-job'));
    assert.equal(webhooks.length, 3, `two 500s, then delivered: ${JSON.stringify(result.notifications)}`);
    assert.ok(
      webhooks.every((hook) => hook.verified),
      'every delivery carries a valid signature',
    );
    const delivered = JSON.parse(webhooks[2]?.body ?? '{}') as JobResult;
    assert.equal(delivered.jobId, 'webhook-job');
    assert.equal(delivered.notifications, undefined, 'the delivery outcome is not inside the body');
    const note = result.notifications?.[0];
    assert.deepEqual([note?.delivered, note?.attempts, note?.lastStatus], [true, 3, 204]);
    assert.ok(!note?.url.includes('hooktoken'));
    const history = JSON.stringify(await env.client.client.workflow.getHandle('webhook-job').fetchHistory());
    for (const text of [JSON.stringify(result), history, workers.logs, webhooks[2]?.body ?? '']) {
      assert.ok(!text.includes(WEBHOOK_SECRET), 'secret leaked');
    }
    assert.ok(workers.logs.includes('webhook delivered'), 'the worker logs were captured');
  });
});
