/**
 * Items where the workers are: `faultline start --items items.ndjson` streams the items into job
 * storage (validated on the way, errors with line numbers); workers validate the file in chunks
 * and read each slice from a byte offset; the job's history never holds the items.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { ItemsFileReader, writeItemsFile } from '../../src/items-file';
import { createStorage } from '../../src/storage';
import { ErrorTypes, WORKFLOW_TYPES } from '../../src/shared';
import { ROOT, type TestEnv, createTestEnv, runCli } from '../helpers/env';

let env: TestEnv;
before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-items-file' });
  await env.startWorker();
});
after(async () => {
  await env.teardown();
});

function cli(args: string[]) {
  return runCli(args, { env: env.env, cwd: env.dir, maxBuffer: 64 * 1024 * 1024 });
}

const ndjson = (items: unknown[]) => items.map((item) => JSON.stringify(item)).join('\n') + '\n';

describe('items from an NDJSON file', () => {
  it('reads any range through the sparse offset index', async () => {
    const items = Array.from({ length: 2_500 }, (_, i) => ({ id: `r${i}` }));
    async function* lines() {
      for (const item of items) yield JSON.stringify(item);
    }
    const { ref, itemCount } = await writeItemsFile(createStorage(env.config.storage), { pipeline: 'synthetic' }, lines());
    assert.equal(itemCount, 2_500);
    const reader = new ItemsFileReader(createStorage(env.config.storage));
    assert.deepEqual(await reader.head(ref), { pipeline: 'synthetic' });
    assert.deepEqual(await reader.read(ref, 999, 1_001), [{ id: 'r999' }, { id: 'r1000' }]);
    assert.deepEqual((await reader.read(ref, 2_000, 2_600)).length, 500);
    assert.deepEqual(await reader.read(ref, 0, 1), [{ id: 'r0' }]);
    assert.deepEqual(await reader.read(ref, 2_500, 2_600), []);
  });

  it('a 1,500-item job runs from --items with exact results; its history never holds the items; --id stays idempotent', async () => {
    const items = Array.from({ length: 1_500 }, (_, i) => ({ id: `item-${i}`, ...(i % 500 === 7 ? { params: { outcome: 'unprocessable' } } : {}) }));
    await writeFile(path.join(env.dir, 'items.ndjson'), ndjson(items));
    await writeFile(path.join(env.dir, 'head.json'), JSON.stringify({ pipeline: 'synthetic', options: { batchSize: 50 } }));
    const started = await cli(['start', 'head.json', '--items', 'items.ndjson', '--id', 'from-file', '--wait', '--json']);
    assert.equal(started.code, 3, started.stderr);
    const result = JSON.parse(started.stdout) as { status: string; counts: { items: number; Available: number; Failed: number }; failuresByReason: Record<string, string[]> };
    assert.deepEqual([result.status, result.counts.items, result.counts.Available, result.counts.Failed], ['PartiallySucceeded', 1_500, 1_497, 3]);
    assert.deepEqual(result.failuresByReason.ItemUnprocessable?.sort(), ['item-1007', 'item-507', 'item-7']);

    const history = await env.client.client.workflow.getHandle('from-file').fetchHistory();
    const input = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0]?.data ?? new Uint8Array();
    assert.ok(input.length < 4_000, `the job input is a reference (${input.length} bytes), not the items`);
    assert.ok(!Buffer.from(input).toString().includes('item-1499'));

    const again = await cli(['start', 'head.json', '--items', 'items.ndjson', '--id', 'from-file', '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal((JSON.parse(again.stdout) as { existing: boolean }).existing, true);
    await writeFile(path.join(env.dir, 'items.ndjson'), ndjson([...items, { id: 'one-more' }]));
    const changed = await cli(['start', 'head.json', '--items', 'items.ndjson', '--id', 'from-file']);
    assert.equal(changed.code, 2);
    assert.match(changed.stderr, /conflict/);

    // A follow-up retry of the closed job reads its failed items back from the file.
    const retried = await env.client.retry('from-file', {});
    assert.equal(retried.followUp, true);
    assert.equal(retried.queuedCount, 3);
  });

  it('a spec too large to travel inline becomes a content-named items file (checked and read in chunks, like --items); the same start again writes the same file', async () => {
    // ~12,000 items: over the 256 KB a spec may carry in the workflow input.
    const items = Array.from({ length: 12_000 }, (_, i) => ({ id: `large-inline-item-${i}`, ...(i === 11_999 ? { params: { outcome: 'unprocessable' } } : {}) }));
    const spec = { pipeline: 'synthetic', items, options: { toleratedFailureCount: 1 } };
    const { jobId } = await env.client.start(spec, { jobId: 'large-inline-spec' });
    const startedWith = async (id: string) => {
      const history = await env.client.client.workflow.getHandle(id).fetchHistory();
      const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0]?.data ?? new Uint8Array();
      return (JSON.parse(Buffer.from(payload).toString()) as { job: { kind: string; ref?: string; itemCount?: number } }).job;
    };
    const job = await startedWith(jobId);
    const ref = job.ref ?? '';
    assert.deepEqual([job.kind, job.itemCount], ['stored', 12_000]);
    assert.ok(ref.endsWith('.items.ndjson'), `stored as an items file, not a whole spec: ${ref}`);
    const reader = new ItemsFileReader(createStorage(env.config.storage));
    assert.deepEqual(await reader.head(ref), { pipeline: 'synthetic', options: { toleratedFailureCount: 1 } });
    assert.deepEqual(await reader.read(ref, 11_998, 12_000), [items[11_998], items[11_999]]);
    const result = await env.client.result(jobId);
    assert.deepEqual([result.status, result.counts.Available, result.counts.Failed], ['PartiallySucceeded', 11_999, 1]);
    assert.equal((await env.client.start(spec, { jobId: 'large-inline-spec' })).existing, true);
    const again = await env.client.start(spec, { jobId: 'large-inline-spec-2' });
    assert.equal((await startedWith(again.jobId)).ref, ref, 'the same spec is the same items file');
    await env.client.result(again.jobId);
  });

  it('a job of an items file stopped by its threshold closes at once, its never-started slices Cancelled (read from the file by place)', async () => {
    // Its slices that never started are filled with Cancelled records read from the items file; that read once parsed the file as one whole spec, failed, and was retried for minutes.
    const items = Array.from({ length: 12_000 }, (_, i) => ({ id: `stopped-item-${i}`, ...(i === 0 ? { params: { outcome: 'unprocessable' } } : {}) }));
    const { jobId } = await env.client.start({ pipeline: 'synthetic', items, options: { toleratedFailureCount: 0, shardSize: 500, batchSize: 50 } }, { jobId: 'stopped-items-file' });
    const started = performance.now();
    const result = await env.client.result(jobId);
    const { Available, Failed, Cancelled } = result.counts;
    assert.deepEqual([result.status, result.stoppedBy?.type, Failed, Available + Failed + Cancelled], ['Failed', ErrorTypes.ToleratedFailureThresholdExceeded, 1, 12_000]);
    assert.ok(Cancelled > 5_000, `the never-started slices' items are Cancelled (${Cancelled})`);
    assert.ok(performance.now() - started < 60_000, `closed in ${Math.round(performance.now() - started)} ms`);
    const history = await env.client.client.workflow.getHandle(jobId).fetchHistory();
    const retried = (history.events ?? []).filter((event) => (event.activityTaskStartedEventAttributes?.attempt ?? 1) > 1);
    assert.deepEqual(
      retried.map((event) => event.activityTaskStartedEventAttributes?.lastFailure?.message),
      [],
      'no activity of the job needed a second attempt',
    );
  });

  it('workers validate the file themselves, in chunks: a bad item deep in it fails the job as InvalidSpec with its path', async () => {
    async function* lines() {
      for (let i = 0; i < 12_345; i++) yield JSON.stringify(i === 11_111 ? { id: 'deep', params: { outcome: 'explode' } } : { id: `ok-${i}` });
    }
    const { ref, itemCount } = await writeItemsFile(createStorage(env.config.storage), { pipeline: 'synthetic' }, lines());
    const handle = await env.client.client.workflow.start(WORKFLOW_TYPES.job, {
      taskQueue: env.config.taskQueue,
      workflowId: 'items-file-direct',
      args: [{ job: { kind: 'stored', ref, head: { pipeline: 'synthetic' }, itemCount } }],
    });
    await assert.rejects(handle.result(), (error: unknown) => {
      assert.ok(error instanceof WorkflowFailedError && error.cause instanceof ApplicationFailure);
      assert.equal(error.cause.type, ErrorTypes.InvalidSpec);
      const report = error.cause.details?.[0] as { details: { issues: { path: string }[] } };
      assert.equal(report.details.issues[0]?.path, 'items[11111].params.outcome');
      return true;
    });
  });

  it('sources of a stored items file or spec outside the allowed roots fail the job as InvalidSpec before anything runs', async () => {
    const storage = createStorage(env.config.storage);
    await writeFile(path.join(env.dir, 'inside.txt'), 'a source inside the roots');
    const inside = pathToFileURL(path.join(env.dir, 'inside.txt')).toString();
    async function* lines() {
      for (let i = 0; i < 3_000; i++) yield JSON.stringify({ id: `f-${i}`, source: i === 2_500 ? 'file:///etc/hostname' : inside });
    }
    const head = { pipeline: 'images', destination: pathToFileURL(path.join(env.dir, 'roots-out')).toString() };
    const { ref, itemCount } = await writeItemsFile(storage, head, lines());
    const specRef = await storage.putSpec(
      JSON.stringify({
        ...head,
        items: [
          { id: 'a', source: inside },
          { id: 'b', source: 'file:///etc/passwd' },
        ],
      }),
    );
    const cases: [string, { kind: 'stored'; ref: string; head: typeof head; itemCount: number }, string][] = [
      ['items-file-roots', { kind: 'stored', ref, head, itemCount }, 'items[2500].source'],
      ['stored-spec-roots', { kind: 'stored', ref: specRef, head, itemCount: 2 }, 'items[1].source'],
    ];
    for (const [workflowId, job, offending] of cases) {
      const handle = await env.client.client.workflow.start(WORKFLOW_TYPES.job, { taskQueue: env.config.taskQueue, workflowId, args: [{ job }] });
      await assert.rejects(handle.result(), (error: unknown) => {
        assert.ok(error instanceof WorkflowFailedError && error.cause instanceof ApplicationFailure, String(error));
        assert.equal(error.cause.type, ErrorTypes.InvalidSpec);
        const report = error.cause.details?.[0] as { details: { issues: { path: string; code: string }[] } };
        assert.deepEqual(
          report.details.issues.map((issue) => [issue.path, issue.code]),
          [[offending, ErrorTypes.SourceOutsideAllowedRoots]],
        );
        return true;
      });
    }
  });

  it('bad lines are typed invalid errors naming the item path and the line; nothing starts', async () => {
    await writeFile(path.join(env.dir, 'head.json'), JSON.stringify({ pipeline: 'synthetic' }));
    await writeFile(path.join(env.dir, 'bad-json.ndjson'), '{"id":"a"}\n\n{"id":"b"}\n{not json\n');
    const badJson = await cli(['start', 'head.json', '--items', 'bad-json.ndjson']);
    assert.equal(badJson.code, 2);
    assert.match(badJson.stderr, /items\[2\]: line 4 is not JSON/);

    await writeFile(path.join(env.dir, 'bad-item.ndjson'), ndjson([{ id: 'a' }, { id: 'b' }, { id: 'has space' }, { id: 'a' }]));
    const badItem = await cli(['start', 'head.json', '--items', 'bad-item.ndjson']);
    assert.equal(badItem.code, 2);
    assert.match(badItem.stderr, /items\[2\]\.id: .*\(line 3\)/);

    await writeFile(path.join(env.dir, 'dup.ndjson'), ndjson([{ id: 'a' }, { id: 'b' }, { id: 'a' }]));
    const dup = await cli(['start', 'head.json', '--items', 'dup.ndjson']);
    assert.equal(dup.code, 2);
    assert.match(dup.stderr, /items\[2\]\.id: item id "a" (appears more than once|is already used by items\[0\]) \(line 3\)/);

    const both = await cli(['start', path.join(ROOT, 'samples', 'synthetic-demo.json'), '--items', 'dup.ndjson']);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /--items replaces/);
    const missing = await cli(['start', 'head.json', '--items', 'nope.ndjson']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read .*nope\.ndjson: ENOENT/);
    assert.ok(
      (await env.client.list()).every(
        (job) =>
          job.jobId.startsWith('from-file') || ['items-file-direct', 'items-file-roots', 'stored-spec-roots', 'large-inline-spec', 'large-inline-spec-2', 'stopped-items-file'].includes(job.jobId),
      ),
      'no job was started by a bad file',
    );
  });
});
