import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { FaultlineClientError, closedJobResult } from '../../src/client';
import { ensureTemporalCli } from '../../src/devserver/temporal-cli';
import { ErrorTypes, type JobResult, followUpJobId, resultQuery } from '../../src/shared';
import { ROOT, type RunningWorker, type TestEnv, createTestEnv, eventually, syntheticSpec, runCli } from '../helpers/env';

const run = promisify(execFile);
const SAMPLES = path.join(ROOT, 'samples', 'images');

let env: TestEnv;
let worker: RunningWorker;
let server: http.Server;
let base = '';
let endpointUp = false;
/** GETs per path of `/counted/…` and `/versioned/…` sources. */
const gets = new Map<string, number>();
/** `/versioned/…` serves this sample with this ETag (a source that changes upstream). */
const versioned = { sample: 'not-an-image.jpg', etag: '"v1"' };

before(async () => {
  // A flaky endpoint: 503 until the test says it has recovered.
  server = http.createServer((req, res) => {
    if (!endpointUp && req.url?.startsWith('/flaky')) return void res.writeHead(503).end();
    if (req.method === 'PUT') {
      req.resume();
      return void res.writeHead(!endpointUp && req.url?.startsWith('/put-flaky') ? 503 : 200).end();
    }
    if ((req.url?.startsWith('/counted/') || req.url?.startsWith('/versioned/')) && req.method === 'GET') gets.set(req.url, (gets.get(req.url) ?? 0) + 1);
    if (req.url?.startsWith('/versioned/')) {
      res.setHeader('etag', versioned.etag);
      if (req.method === 'HEAD') return void res.end();
      return void import('node:fs/promises').then(({ readFile }) => readFile(path.join(SAMPLES, versioned.sample))).then((data) => res.end(data));
    }
    if (req.url?.startsWith('/missing')) return void res.writeHead(404).end();
    import('node:fs/promises')
      .then(({ readFile }) => readFile(path.join(SAMPLES, 'no-exif.jpg')))
      .then(
        (data) => res.end(data),
        () => res.writeHead(500).end(),
      );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  env = await createTestEnv({ taskQueue: 'faultline-ops', envExtra: { FAULTLINE_ALLOWED_HOSTS: '127.0.0.1' } });
  worker = await env.startWorker({ allowedHosts: ['127.0.0.1'], allowedRoots: [env.dir, SAMPLES] });
});

after(async () => {
  await worker?.stop();
  await env?.teardown();
  const closed = new Promise((resolve) => server?.close(resolve));
  server?.closeAllConnections();
  await closed;
});

function cli(args: string[]) {
  return runCli(args, { env: { ...env.env, FAULTLINE_LOG_LEVEL: 'error' }, cwd: env.dir });
}

function imagesSpec(items: { id: string; source: string }[], retryWindow = '10m') {
  return {
    pipeline: 'images',
    items: items.map((item) => ({ ...item, outputs: ['metadata'] })),
    destination: pathToFileURL(path.join(env.dir, 'out')).toString(),
    options: { retryWindow, retry: { maxAttempts: 1 } },
  };
}

describe('operations: retry window, retry, cancel, progress, list', () => {
  it('a flaky endpoint fails items; after it recovers, retry brings the same job to Succeeded', async () => {
    endpointUp = false;
    const { jobId } = await env.client.start(
      imagesSpec([
        { id: 'good', source: pathToFileURL(path.join(SAMPLES, 'with-exif.jpg')).toString() },
        { id: 'f1', source: `${base}/flaky/1` },
        { id: 'f2', source: `${base}/flaky/2` },
      ]),
    );
    const first = await env.client.result(jobId);
    assert.equal(first.status, 'PartiallySucceeded');
    assert.deepEqual(first.failuresByReason, { EndpointUnavailable: ['f1', 'f2'] });
    assert.equal((await env.client.progress(jobId)).phase, 'retry-window', 'published but still open');
    const listed = await env.client.list({ hasErrors: true });
    assert.ok(listed.some((job) => job.jobId === jobId && job.status === 'PartiallySucceeded' && job.failedCount === 2));

    endpointUp = true;
    const response = await env.client.retry(jobId, {});
    assert.deepEqual([response.followUp, response.round, response.queued.sort()], [false, 2, ['f1', 'f2']]);
    const second = await env.client.result(jobId); // waits for the new round
    assert.equal(second.round, 2);
    assert.equal(second.status, 'Succeeded');
    assert.deepEqual(second.failuresByReason, {});
    assert.equal(second.counts.Available, 3);
    assert.equal(second.outputs?.length, 3, 'outputs merged into the same job');
    const final = await closedJobResult(env.client.handle(jobId));
    assert.equal(final.status, 'Succeeded', 'nothing left to retry: the job closes with its final result');
    assert.equal(final.round, 2);
  });

  it('the `temporal` CLI: a retry signal, and a batch signal over a visibility query, retry jobs in place', async () => {
    endpointUp = false;
    const start = async (name: string) =>
      (
        await env.client.start({
          ...imagesSpec([
            { id: 'good', source: pathToFileURL(path.join(SAMPLES, 'with-exif.jpg')).toString() },
            { id: 'down', source: `${base}/flaky/${name}` },
          ]),
        })
      ).jobId;
    const single = await start('single');
    const batched = [await start('b1'), await start('b2')];
    for (const jobId of [single, ...batched]) assert.equal((await env.client.result(jobId)).status, 'PartiallySucceeded');
    endpointUp = true;
    const temporalCli = (args: string[]) => run(ensureTemporalCli(), [...args, '--address', env.server.address, '--namespace', 'default'], { env: process.env });
    await temporalCli(['workflow', 'signal', '--workflow-id', single, '--name', 'retry', '--input', '{}']);
    assert.equal((await env.client.result(single, { round: 2 })).status, 'Succeeded', 'signalled job succeeded in place');
    await eventually(
      async () => {
        let found = 0;
        for await (const _ of env.client.client.workflow.list({ query: `WorkflowId IN ('${batched.join("','")}') AND ExecutionStatus = 'Running'` })) found++;
        return found === batched.length;
      },
      15_000,
      'visibility lists the open jobs',
    );
    await temporalCli([
      'workflow',
      'signal',
      '--query',
      `WorkflowId IN ('${batched.join("','")}') AND ExecutionStatus = 'Running'`,
      '--name',
      'retry',
      '--input',
      '{}',
      '--reason',
      'endpoint recovered',
      '--yes',
    ]);
    for (const jobId of batched) {
      const result = await env.client.result(jobId, { round: 2 });
      assert.deepEqual([result.jobId, result.round, result.status], [jobId, 2, 'Succeeded']);
    }
  });

  it('bulk: retry --query and cancel --query act on every matching job, one line each, non-zero exit when one fails', async () => {
    endpointUp = false;
    const images = (name: string, retryWindow: string) =>
      imagesSpec(
        [
          { id: 'good', source: pathToFileURL(path.join(SAMPLES, 'with-exif.jpg')).toString() },
          { id: 'down', source: `${base}/flaky/${name}` },
        ],
        retryWindow,
      );
    const open = [(await env.client.start(images('q1', '10m'))).jobId, (await env.client.start(images('q2', '10m'))).jobId];
    const closed = (await env.client.start(images('q3', '0s'))).jobId;
    const fine = (await env.client.start(syntheticSpec([{ id: 'a' }]))).jobId;
    for (const jobId of [...open, closed]) assert.equal((await env.client.result(jobId)).status, 'PartiallySucceeded');
    await env.client.result(fine);
    const all = [...open, closed, fine];
    const query = `WorkflowId IN (${all.map((id) => `'${id}'`).join(', ')})`;
    await eventually(async () => (await env.client.jobIds(query)).length === all.length, 15_000, 'visibility lists the jobs');
    endpointUp = true;
    const retried = await cli(['retry', '--query', query, '--json']);
    assert.equal(retried.code, 2, 'the job with nothing to retry makes the exit code non-zero');
    const outcomes = JSON.parse(retried.stdout) as { jobId: string; ok: boolean; message: string; detail?: { followUp: boolean; jobId: string; round: number } }[];
    assert.equal(outcomes.length, 4);
    const byJob = new Map(outcomes.map((outcome) => [outcome.jobId, outcome]));
    for (const jobId of open) assert.deepEqual([byJob.get(jobId)?.ok, byJob.get(jobId)?.detail?.followUp, byJob.get(jobId)?.detail?.round], [true, false, 2]);
    assert.deepEqual([byJob.get(closed)?.ok, byJob.get(closed)?.detail?.followUp], [true, true]);
    assert.equal(byJob.get(fine)?.ok, false);
    assert.match(byJob.get(fine)?.message ?? '', /NothingToRetry/);
    for (const jobId of open) assert.equal((await env.client.result(jobId, { round: 2 })).status, 'Succeeded');
    assert.equal((await env.client.result(byJob.get(closed)?.detail?.jobId ?? '')).status, 'Succeeded');

    const hanging = [
      (await env.client.start(syntheticSpec([{ id: 'h', params: { outcome: 'hang' } }], { heartbeatTimeout: '2s' }))).jobId,
      (await env.client.start(syntheticSpec([{ id: 'h', params: { outcome: 'hang' } }], { heartbeatTimeout: '2s' }))).jobId,
    ];
    const cancelQuery = `WorkflowId IN (${[...hanging, fine].map((id) => `'${id}'`).join(', ')})`;
    await eventually(async () => (await env.client.jobIds(`(${cancelQuery}) AND ExecutionStatus = 'Running'`)).length === 2, 15_000, 'visibility lists the running jobs');
    const cancelled = await cli(['cancel', '--query', cancelQuery, '--reason', 'bulk']);
    assert.equal(cancelled.code, 0, cancelled.stderr);
    assert.equal(cancelled.stdout.trim().split('\n').length, 2, 'one line per running job; the closed one is not touched');
    for (const jobId of hanging) assert.deepEqual([(await env.client.result(jobId)).status, (await env.client.result(jobId)).cancelReason], ['Cancelled', 'bulk']);
    const usage = await cli(['cancel', hanging[0] ?? '', '--query', cancelQuery]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /not both/);
    // A bad query is invalid input (exit 2), told about the user's own text.
    const unclosed = await cli(['cancel', '--query', "WorkflowId = 'oops", '--reason', 'x']);
    assert.equal(unclosed.code, 2, unclosed.stderr);
    assert.match(unclosed.stderr, /at character 14 \("'oops"\): the string opened here with ' is never closed/);
    const unknownField = await cli(['retry', '--query', "NoSuchField = 'x'"]);
    assert.equal(unknownField.code, 2, unknownField.stderr);
    assert.match(unknownField.stderr, /invalid visibility query "NoSuchField = 'x'".*NoSuchField/);
    assert.doesNotMatch(unknownField.stderr, /ExecutionStatus|WorkflowType/, "none of Faultline's own clauses");
  });

  it("operator messages: an unknown --type lists the job's types; --include-cancelled resumes a mistakenly cancelled job", async () => {
    endpointUp = false;
    const { jobId } = await env.client.start(imagesSpec([{ id: 'down', source: `${base}/flaky/types` }]));
    await env.client.result(jobId);
    const unknown = await cli(['retry', jobId, '--type', 'SourceNotFoundd']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /UnknownErrorType.*unknown type SourceNotFoundd: this job's failed items have type EndpointUnavailable/);
    await env.client.cancel(jobId, 'done looking');

    const items = Array.from({ length: 12 }, (_, index) => ({ id: `m${index}`, params: { cpuMs: 100 } }));
    const { jobId: mistaken } = await env.client.start(syntheticSpec(items, { batchSize: 1, concurrency: 1 }));
    await eventually(async () => (await env.client.progress(mistaken)).counts.Available >= 2, 20_000, 'some items done');
    await env.client.cancel(mistaken, 'oops, wrong job');
    const cancelled = await env.client.result(mistaken);
    assert.equal(cancelled.status, 'Cancelled');
    const resumed = await cli(['retry', mistaken, '--include-cancelled', '--json']);
    assert.equal(resumed.code, 0, resumed.stderr);
    const response = JSON.parse(resumed.stdout) as { followUp: boolean; jobId: string; queuedCount: number };
    assert.deepEqual([response.followUp, response.queuedCount], [true, cancelled.counts.Cancelled]);
    const followUp = await env.client.result(response.jobId);
    assert.deepEqual([followUp.status, followUp.counts.Available, followUp.retryOf], ['Succeeded', cancelled.counts.Cancelled, mistaken]);
  });

  it('Temporal tells the truth: Failed and Temporal-cancelled jobs end as failed and cancelled executions; result still prints their JobResult', async () => {
    const { jobId: fatal } = await env.client.start(syntheticSpec([{ id: 'a' }, { id: 'boom', params: { outcome: 'fatal' } }], { batchSize: 1, concurrency: 1 }));
    const printed = await cli(['result', fatal, '--json']);
    assert.equal(printed.code, 1, 'exit 1 for Failed');
    const result = JSON.parse(printed.stdout) as JobResult;
    assert.deepEqual([result.jobId, result.status, result.stoppedBy?.type], [fatal, 'Failed', ErrorTypes.FatalItemError]);
    assert.equal((await env.client.handle(fatal).describe()).status.name, 'FAILED');
    await eventually(
      async () => {
        for await (const execution of env.client.client.workflow.list({ query: `ExecutionStatus = 'Failed' AND WorkflowId = '${fatal}'` })) if (execution.workflowId === fatal) return true;
        return false;
      },
      15_000,
      "ExecutionStatus = 'Failed' finds the job",
    );

    const { jobId: partial } = await env.client.start(syntheticSpec([{ id: 'a' }, { id: 'b', params: { outcome: 'unprocessable' } }]));
    assert.equal((await env.client.result(partial)).status, 'PartiallySucceeded');
    await eventually(async () => (await env.client.handle(partial).describe()).status.name === 'COMPLETED', 15_000, 'partial success completes');

    // In its retry window a job is open, yet its settled result is readable (the `result` query, as
    // in the Web UI's Queries tab) and `status` says until when it can be retried.
    const { jobId: open } = await env.client.start(syntheticSpec([{ id: 'a' }, { id: 'b', params: { outcome: 'unprocessable' } }], { retryWindow: '10m' }));
    await env.client.result(open);
    const queried = await env.client.handle(open).query(resultQuery);
    assert.equal(queried?.status, 'PartiallySucceeded');
    const status = await cli(['status', open]);
    assert.match(status.stdout, /open for retry until \d{4}-\d\d-\d\dT/);
    await env.client.cancel(open, 'done');

    const { jobId: hanging } = await env.client.start(syntheticSpec([{ id: 'h', params: { outcome: 'hang' } }], { heartbeatTimeout: '2s' }));
    await eventually(async () => (await env.client.progress(hanging)).inFlight > 0, 15_000, 'running');
    await env.client.handle(hanging).cancel();
    await eventually(async () => (await env.client.handle(hanging).describe()).status.name === 'CANCELLED', 15_000, 'a cancelled execution');
    const cancelled = await env.client.result(hanging); // read back from the execution's memo
    assert.deepEqual([cancelled.status, cancelled.cancelReason], ['Cancelled', 'cancellation requested through Temporal']);
  });

  it('retry by type touches only that type; corrected sources; validator rejections', async () => {
    endpointUp = false;
    const { jobId } = await env.client.start(
      imagesSpec([
        { id: 'nf', source: `${base}/missing` },
        { id: 'down', source: `${base}/flaky/3` },
      ]),
    );
    const first = await env.client.result(jobId);
    assert.deepEqual(first.failureCounts, { SourceNotFound: 1, EndpointUnavailable: 1 });
    await assert.rejects(
      env.client.retry(jobId, { types: ['CorruptImage'] }),
      (error: unknown) => error instanceof FaultlineClientError && error.code === 'rejected' && /UnknownErrorType.*SourceNotFound, EndpointUnavailable/.test(error.message),
    );
    await assert.rejects(env.client.retry(jobId, { sources: { nf: 'file:///x' } }), (error: unknown) => error instanceof FaultlineClientError && error.code === 'rejected');

    const byType = await env.client.retry(jobId, { types: ['EndpointUnavailable'] });
    assert.deepEqual(byType.queued, ['down']);
    const second = await env.client.result(jobId);
    assert.equal(second.round, 2);
    assert.deepEqual(second.failuresByReason, { SourceNotFound: ['nf'], EndpointUnavailable: ['down'] }, 'nf untouched; down still down');

    const corrected = await env.client.retry(jobId, { items: ['nf'], sources: { nf: pathToFileURL(path.join(SAMPLES, 'no-exif.jpg')).toString() } });
    assert.deepEqual(corrected.queued, ['nf']);
    const third = await env.client.result(jobId);
    assert.equal(third.round, 3);
    assert.deepEqual(third.failuresByReason, { EndpointUnavailable: ['down'] });
    assert.equal(third.outputs?.find((record) => record.item === 'nf')?.status, 'Available');
    await env.client.cancel(jobId);
  });

  it('retry after the window closed starts a follow-up job with just the failed items', async () => {
    endpointUp = false;
    const { jobId } = await env.client.start(
      imagesSpec(
        [
          { id: 'ok', source: pathToFileURL(path.join(SAMPLES, 'no-exif.jpg')).toString() },
          { id: 'late', source: `${base}/flaky/4` },
        ],
        '0s',
      ),
    );
    const first = await closedJobResult(env.client.handle(jobId));
    assert.equal(first.status, 'PartiallySucceeded');
    endpointUp = true;
    const retried = await env.client.retry(jobId, {});
    assert.equal(retried.followUp, true);
    assert.equal(retried.jobId, followUpJobId(jobId, 1));
    assert.deepEqual(retried.queued, ['late']);
    const followUp = await env.client.result(retried.jobId);
    assert.equal(followUp.status, 'Succeeded');
    assert.equal(followUp.retryOf, jobId);
    assert.equal(followUp.counts.items, 1);
  });

  it('while running: progress shows items in backoff, and retry runs a waiting item now', async () => {
    const { jobId } = await env.client.start(syntheticSpec([{ id: 'waiting', params: { transientFailures: 1 } }, { id: 'fine' }], { retry: { initialInterval: '1h', maximumInterval: '2h' } }));
    await eventually(async () => (await env.client.progress(jobId)).backoff.length === 1, 20_000, 'item in backoff');
    const progress = await env.client.progress(jobId);
    assert.equal(progress.phase, 'running');
    assert.equal(progress.settled, false);
    assert.equal(progress.backoff[0]?.item, 'waiting');
    assert.ok(Date.parse(progress.backoff[0]?.nextAttemptAt ?? '') > Date.now() + 30 * 60_000);
    assert.equal(progress.counts.Available, 1);
    const response = await env.client.retry(jobId, { items: ['waiting'] });
    assert.deepEqual(response.queued, ['waiting']);
    const result = await env.client.result(jobId);
    assert.equal(result.status, 'Succeeded', 'the 1h backoff was cut short');
  });

  it('cancel by CLI and by native Temporal cancellation, with hanging items in flight', async () => {
    const spec = syntheticSpec([{ id: 'h1', params: { outcome: 'hang' } }, { id: 'done' }, { id: 'h2', params: { outcome: 'hang' } }], { heartbeatTimeout: '1s' });
    for (const how of ['cli', 'native'] as const) {
      const { jobId } = await env.client.start(spec);
      await eventually(async () => (await env.client.progress(jobId)).counts.Available === 1, 20_000, 'done item finished');
      if (how === 'cli') {
        const cancelled = await cli(['cancel', jobId, '--reason', 'operator said so']);
        assert.equal(cancelled.code, 0, cancelled.stderr);
      } else {
        await env.client.handle(jobId).cancel();
      }
      const result = await closedJobResult(env.client.handle(jobId));
      assert.equal(result.status, 'Cancelled');
      assert.equal(result.success, false);
      assert.equal(result.counts.Available, 1, 'finished outputs are kept');
      assert.equal(result.counts.Cancelled, 2);
      assert.match(result.cancelReason ?? '', how === 'cli' ? /operator said so/ : /cancellation requested/);
      assert.ok(result.outputs?.filter((record) => record.status === 'Cancelled').every((record) => record.reason?.startsWith('job cancelled')));
    }
  });

  it('list filters by status, has-errors, failed count and pipeline', async () => {
    const { jobId: okId } = await env.client.start(syntheticSpec([{ id: 'a' }]));
    await env.client.result(okId);
    const { jobId: badId } = await env.client.start(syntheticSpec([{ id: 'a', params: { outcome: 'unprocessable' } }]));
    await env.client.result(badId);
    await eventually(async () => (await env.client.list({ status: 'Failed', pipeline: 'synthetic' })).some((job) => job.jobId === badId), 15_000, 'visibility');
    const failed = await env.client.list({ status: 'Failed', pipeline: 'synthetic' });
    assert.ok(failed.every((job) => job.status === 'Failed' && job.pipeline === 'synthetic'));
    assert.ok(!failed.some((job) => job.jobId === okId));
    const withErrors = await env.client.list({ hasErrors: true });
    assert.ok(withErrors.some((job) => job.jobId === badId && job.failedCount === 1 && job.hasErrors === true));
    assert.ok(!withErrors.some((job) => job.jobId === okId));
    assert.ok((await env.client.list({ pipeline: 'images' })).every((job) => job.pipeline === 'images'));
    const json = await cli(['list', '--status', 'Succeeded', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout) as { jobId: string; pipeline: string; status: string; hasErrors: boolean; failedCount: number; startedAt: string }[];
    assert.ok(parsed.some((job) => job.jobId === okId));
    assert.deepEqual(Object.keys(parsed[0] ?? {}).sort(), ['failedCount', 'flagged', 'hasErrors', 'jobId', 'pipeline', 'priority', 'startedAt', 'status', 'tenant']);
  });

  it('CLI: exit codes, --json, errors as one line', async () => {
    const specFile = path.join(env.dir, 'partial.json');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(specFile, JSON.stringify(syntheticSpec([{ id: 'a' }, { id: 'b', params: { outcome: 'unprocessable' } }])));
    const partial = await cli(['start', specFile, '--wait', '--json', '--id', 'cli-partial']);
    assert.equal(partial.code, 3);
    const result = JSON.parse(partial.stdout) as JobResult;
    assert.equal(result.status, 'PartiallySucceeded');
    assert.equal((await cli(['result', 'cli-partial', '--json'])).code, 3);
    const status = JSON.parse((await cli(['status', 'cli-partial', '--json'])).stdout) as Record<string, unknown>;
    for (const key of ['jobId', 'phase', 'settled', 'round', 'counts']) assert.ok(key in status, key);

    const badFile = path.join(env.dir, 'bad.json');
    await writeFile(badFile, JSON.stringify({ pipeline: 'synthetic', items: [{ id: 'x' }, { id: 'x' }], options: { batchSize: 0 } }));
    const invalid = await cli(['start', badFile, '--id', 'never']);
    assert.equal(invalid.code, 2);
    assert.match(invalid.stderr, /items\[1\]\.id/);
    assert.match(invalid.stderr, /options\.batchSize/);
    assert.doesNotMatch(invalid.stderr, /\n\s+at /, 'no stack trace');
    assert.equal((await cli(['result', 'never'])).code, 5);
    const conflict = await cli(['start', badFile.replace('bad', 'partial'), '--id', 'cli-partial']);
    assert.equal(conflict.code, 0, 'same spec, same id: the existing job');
    await writeFile(path.join(env.dir, 'other.json'), JSON.stringify(syntheticSpec([{ id: 'z' }])));
    const other = await cli(['start', path.join(env.dir, 'other.json'), '--id', 'cli-partial']);
    assert.equal(other.code, 2);
    assert.match(other.stderr, /conflict/);
    const unreachable = await run(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'status', 'x'], { env: { ...env.env, TEMPORAL_ADDRESS: '127.0.0.1:1' } }).catch(
      (error: { code: number; stderr: string }) => error,
    );
    assert.equal((unreachable as { code: number }).code, 4);
    assert.equal((unreachable as { stderr: string }).stderr.trim().split('\n').length, 1, 'one clear line');
    assert.equal((await cli(['frobnicate'])).code, 2);
  });
});

describe('engine v2 at the seams: retry and thresholds across slices', () => {
  it('a 600-item job in 6 slices whose remote items failed ends Succeeded as the same job after `faultline retry`', async () => {
    endpointUp = false;
    const items = Array.from({ length: 600 }, (_, index) => ({ id: `r${index}`, source: index % 10 === 0 ? `${base}/flaky/${index}` : `${base}/ok/${index}` }));
    const spec = imagesSpec(items);
    const { jobId } = await env.client.start({ ...spec, options: { ...spec.options, shardSize: 100 } });
    const first = await env.client.result(jobId);
    assert.equal(first.status, 'PartiallySucceeded');
    assert.deepEqual([first.counts.Available, first.counts.Failed, first.failureCounts.EndpointUnavailable], [540, 60, 60]);
    const children = await env.client.client.workflow.list({ query: `WorkflowType = 'sliceWorkflow' AND WorkflowId STARTS_WITH '${jobId}/'` });
    const sliceIds = new Set<string>();
    for await (const child of children) sliceIds.add(child.workflowId.replace(/-r\d+$/, ''));
    assert.equal(sliceIds.size, 6, 'the job ran as 6 slices');

    endpointUp = true;
    const retried = await cli(['retry', jobId]);
    assert.equal(retried.code, 0, retried.stderr);
    assert.match(retried.stdout, /60/);
    const second = await env.client.result(jobId);
    assert.equal(second.jobId, jobId, 'the same job, not a follow-up');
    assert.equal(second.round, 2);
    assert.equal(second.status, 'Succeeded');
    assert.deepEqual([second.counts.Available, second.counts.Failed, second.counts.outputs], [600, 0, 600]);
    assert.deepEqual(second.failuresByReason, {});
  });

  it('retry of a closed large job starts a follow-up with every failed item, read from the manifest (no cap)', async () => {
    const items = Array.from({ length: 1_200 }, (_, index) => ({ id: `c${index}`, ...(index % 12 !== 0 ? { params: { outcome: 'unprocessable' as const } } : {}) }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 300 }));
    const first = await env.client.result(jobId);
    assert.equal(first.counts.Failed, 1_100);
    assert.equal(first.failuresByReason.ItemUnprocessable?.length, 1_000, 'the inline list is capped…');
    const response = await env.client.retry(jobId, {});
    assert.equal(response.followUp, true);
    assert.equal(response.queuedCount, 1_100, '…the follow-up is not');
    const followUp = await env.client.result(response.jobId);
    assert.equal(followUp.retryOf, jobId);
    assert.equal(followUp.counts.items, 1_100);
  });

  it('11 failures over 6 slices with toleratedFailureCount 10 stop the whole job at once, most items Cancelled', async () => {
    const items = Array.from({ length: 2_000 }, (_, index) => ({ id: `t${index}`, params: index % 334 < 2 ? { outcome: 'unprocessable' as const } : { cpuMs: 5 } }));
    const { jobId } = await env.client.start(syntheticSpec(items, { shardSize: 334, toleratedFailureCount: 10, concurrency: 4, batchSize: 10 }));
    const result = await env.client.result(jobId);
    assert.equal(result.status, 'Failed');
    assert.equal(result.stoppedBy?.type, ErrorTypes.ToleratedFailureThresholdExceeded);
    assert.equal(result.errors[0]?.type, ErrorTypes.ToleratedFailureThresholdExceeded, 'the ending cause comes first in errors');
    assert.ok(result.counts.Failed >= 11 && result.counts.Failed <= 12, `failed ${result.counts.Failed}`);
    assert.ok(result.counts.Cancelled > 1_000, `most items Cancelled, got ${result.counts.Cancelled}`);
    assert.equal(result.counts.Available + result.counts.Failed + result.counts.Cancelled, 2_000, 'every item accounted for');
  });
});

describe('job storage: working copies and gc', () => {
  it('a source changed upstream (a new ETag) is fetched again by a retry; an unchanged one is not', async () => {
    const { jobId } = await env.client.start({
      pipeline: 'images',
      items: [{ id: 'v', source: `${base}/versioned/v`, outputs: ['metadata'] }],
      destination: pathToFileURL(path.join(env.dir, 'versioned-out')).toString(),
      options: { retryWindow: '10m' },
    });
    const first = await env.client.result(jobId);
    assert.equal(first.outputs?.[0]?.error?.type, ErrorTypes.UnsupportedFormat);
    // Same ETag: the kept copy stands, and it is still not an image.
    await env.client.retry(jobId, { items: ['v'] });
    assert.equal((await env.client.result(jobId, { round: 2 })).outputs?.[0]?.error?.type, ErrorTypes.UnsupportedFormat);
    assert.equal(gets.get('/versioned/v'), 1, 'round 2 used the kept copy');
    Object.assign(versioned, { sample: 'no-exif.jpg', etag: '"v2"' });
    await env.client.retry(jobId, { items: ['v'] });
    const third = await env.client.result(jobId, { round: 3 });
    assert.equal(third.outputs?.[0]?.status, 'Available', 'the new version was fetched');
    assert.equal(gets.get('/versioned/v'), 2);
  });

  it('a failed item keeps its working copy, so a retry does not fetch again; copies go once final, and at close', async () => {
    endpointUp = false;
    const { jobId } = await env.client.start({
      pipeline: 'images',
      items: [{ id: 'w', source: `${base}/counted/w`, outputs: ['metadata'], putUrls: { metadata: `${base}/put-flaky/w` } }],
      options: { retryWindow: '10m', retry: { maxAttempts: 1 } },
    });
    const first = await env.client.result(jobId);
    assert.equal(first.status, 'Failed');
    const work = path.join(env.config.storage, 'jobs', jobId, 'work', 'w');
    assert.ok(existsSync(path.join(work, 'source')), 'the failed item keeps its working copy');
    endpointUp = true;
    await env.client.retry(jobId, {});
    const second = await env.client.result(jobId, { round: 2 });
    assert.equal(second.status, 'Succeeded');
    assert.equal(gets.get('/counted/w'), 1, 'the retry used the working copy instead of fetching again');
    assert.ok(!existsSync(work), 'a final, Available item has no working copy');
    // No failure left: the job closes at once and releases what is left of its working storage.
    const closed = await closedJobResult(env.client.handle(jobId));
    assert.ok(!existsSync(path.join(env.config.storage, 'jobs', jobId, 'work')));
    assert.equal(typeof closed.metrics.storageBytes, 'number');
  });

  it('gc --older-than removes the storage of closed jobs only, and says what it freed', async () => {
    const { jobId: closedJob } = await env.client.start(
      syntheticSpec(
        Array.from({ length: 1_200 }, (_, index) => ({ id: `g${index}` })),
        { shardSize: 300 },
      ),
    );
    await env.client.result(closedJob);
    await eventually(async () => (await env.client.handle(closedJob).describe()).status.name === 'COMPLETED', 15_000, 'closed');
    endpointUp = false;
    const { jobId: openJob } = await env.client.start(imagesSpec([{ id: 'down', source: `${base}/flaky/gc` }]));
    await env.client.result(openJob);
    await mkdir(path.join(env.config.storage, 'jobs', openJob, 'work'), { recursive: true });
    const dry = await cli(['gc', '--older-than', '0s', '--dry-run', '--json']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.ok(existsSync(path.join(env.config.storage, 'jobs', closedJob)), 'a dry run removes nothing');
    const gc = await cli(['gc', '--older-than', '0s', '--json']);
    assert.equal(gc.code, 0, gc.stderr);
    const report = JSON.parse(gc.stdout) as { removed: { jobId: string; bytes: number }[]; kept: { jobId: string; reason: string }[]; freedBytes: number };
    const removed = report.removed.find((entry) => entry.jobId === closedJob);
    assert.ok(removed && removed.bytes > 0, 'the closed job (with its manifest) was removed');
    assert.ok(report.freedBytes >= removed.bytes);
    assert.ok(!existsSync(path.join(env.config.storage, 'jobs', closedJob)));
    assert.deepEqual(report.kept.find((entry) => entry.jobId === openJob)?.reason, 'the job is open');
    assert.ok(existsSync(path.join(env.config.storage, 'jobs', openJob)), 'an open job keeps its storage');
    const recent = await cli(['gc', '--older-than', '7d', '--json']);
    assert.equal((JSON.parse(recent.stdout) as { removed: unknown[] }).removed.length, 0, 'nothing closed a week ago');
    const bad = await cli(['gc', '--older-than', 'soon']);
    assert.equal(bad.code, 2);
    await env.client.cancel(openJob, 'done');
  });
});
