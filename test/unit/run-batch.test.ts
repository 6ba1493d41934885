/**
 * The batch activity itself (Temporal's MockActivityEnvironment, the real synthetic pipeline): a
 * hung item is cut off at its step's deadline as a transient `ItemTimedOut` attempt while the
 * rest of its batch goes on, and cancellation hands unstarted items back. Job storage that does
 * not answer makes an item wait, uncharged; storage that refuses it for good is a fatal error. A
 * large job's batch (records in job storage) heartbeats less often: the server keeps every heartbeat.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { MockActivityEnvironment } from '@temporalio/testing';
import { definePipeline } from '../../src';
import { createEngineActivities } from '../../src/activities/engine';
import type { PipelineImplementation } from '../../src/activities/types';
import { createSyntheticPipeline } from '../../src/pipelines/synthetic';
import { createLogger } from '../../src/logger';
import { builtInPipelines } from '../../src/pipelines';
import { type BatchProgress, ErrorTypes, type RunBatchInput, type RunBatchResult } from '../../src/shared';
import { type Storage, createStorage } from '../../src/storage';

/** Runs `use` with a fresh job storage folder, removed afterwards whatever happens. */
async function withStorageDir<T>(use: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-run-batch-'));
  try {
    return await use(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The engine's activities on `storage`, running `implementations` (default: the real synthetic pipeline). */
function engineOn(
  storage: Storage,
  implementations: Record<string, PipelineImplementation> = { synthetic: createSyntheticPipeline({ crashProcess: () => assert.fail('no crash here') }).implementation },
) {
  return createEngineActivities({ implementations, registry: builtInPipelines, storage, logger: createLogger({ level: 'silent', format: 'json' }), allowedHosts: [], s3: {} });
}

const activities = engineOn(createStorage('/nonexistent-faultline-storage'));

function batch(ids: { id: string; outcome?: 'hang' }[], itemTimeoutMs?: number): RunBatchInput {
  return {
    job: { jobId: 'unit', pipeline: 'synthetic' },
    entries: ids.map(({ id, outcome }) => ({ item: { id, ...(outcome ? { params: { outcome } } : {}) }, outputs: ['result'], run: 1 })),
    heartbeatTimeoutMs: 20_000,
    isolated: false,
    ...(itemTimeoutMs !== undefined ? { itemTimeoutMs } : {}),
  };
}

describe('runBatch activity', () => {
  it('a hung item becomes a transient ItemTimedOut attempt at its deadline; its batch mates finish', async () => {
    const env = new MockActivityEnvironment();
    const started = performance.now();
    const result = (await env.run(activities.runBatch, batch([{ id: 'before' }, { id: 'stuck', outcome: 'hang' }, { id: 'after' }], 300))) as RunBatchResult;
    const byItem = new Map(result.outcomes.map((outcome) => [outcome.item, outcome]));
    const stuck = byItem.get('stuck');
    assert.ok(stuck && 'error' in stuck);
    assert.equal(stuck.error.type, ErrorTypes.ItemTimedOut);
    assert.equal(stuck.error.class, 'transient');
    for (const id of ['before', 'after']) {
      const outcome = byItem.get(id);
      assert.ok(outcome && 'records' in outcome, `${id} finished`);
    }
    assert.deepEqual(result.notStarted, []);
    assert.ok(performance.now() - started < 5_000, 'cut off at the deadline, not at the batch timeout');
  });

  it('each item gets its own full deadline (one timer per batch, restarted per item), and none is left running after the batch', async () => {
    const timersBefore = process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
    const env = new MockActivityEnvironment();
    const started = performance.now();
    const result = (await env.run(activities.runBatch, batch([{ id: 'first', outcome: 'hang' }, { id: 'between' }, { id: 'second', outcome: 'hang' }, { id: 'last' }], 300))) as RunBatchResult;
    const elapsedMs = performance.now() - started;
    const byItem = new Map(result.outcomes.map((outcome) => [outcome.item, outcome]));
    for (const id of ['first', 'second']) {
      const hung = byItem.get(id);
      assert.ok(hung && 'error' in hung && hung.error.type === ErrorTypes.ItemTimedOut, `${id}: ${JSON.stringify(hung)}`);
    }
    for (const id of ['between', 'last']) assert.ok(byItem.get(id) && 'records' in byItem.get(id)!, `${id} finished`);
    // The second hung item waited its whole 300 ms, not what was left of a deadline set before it.
    assert.ok(elapsedMs >= 590 && elapsedMs < 5_000, `two full deadlines: ${Math.round(elapsedMs)} ms`);
    assert.equal(process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length, timersBefore, 'the batch left no timer running');
  });

  it('cancellation stops the batch: the hung item and everything after it are handed back unstarted', async () => {
    const env = new MockActivityEnvironment();
    const running = env.run(activities.runBatch, batch([{ id: 'done' }, { id: 'stuck', outcome: 'hang' }, { id: 'never' }])) as Promise<RunBatchResult>;
    setImmediate(() => env.cancel());
    const result = await running;
    assert.deepEqual(
      result.outcomes.map((outcome) => outcome.item),
      ['done'],
    );
    assert.deepEqual(result.notStarted, ['stuck', 'never']);
  });

  /** A pipeline whose one step keeps a working file, on job storage whose first writes fail with `failure`. */
  async function keepingBatch(failure: Error, failures: number) {
    return withStorageDir(async (dir) => {
      const storage = createStorage(dir);
      const write = storage.writeWorkFile.bind(storage);
      let writes = 0;
      storage.writeWorkFile = async (...args) => {
        writes += 1;
        if (writes <= failures) throw failure;
        return write(...args);
      };
      const keeping = definePipeline({
        name: 'keeping',
        version: '1',
        outputs: ['result'],
        steps: [
          {
            name: 'keep',
            run: async ({ storage: files }) => {
              const kept = await files.put('note.txt', 'kept');
              return { result: { status: 'Available' as const, value: { bytes: kept.bytes } } };
            },
          },
        ],
      });
      const engine = engineOn(storage, { keeping: keeping.implementation });
      const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 600_000 });
      const input: RunBatchInput = { job: { jobId: 'unit', pipeline: 'keeping' }, entries: [{ item: { id: 'a' }, outputs: ['result'], run: 1 }], heartbeatTimeoutMs: 20_000, isolated: false };
      const started = performance.now();
      const result = (await env.run(engine.runBatch, input)) as RunBatchResult;
      return { result, writes: () => writes, elapsedMs: performance.now() - started };
    });
  }

  it('job storage that does not answer: the item waits for it, uncharged, and finishes once it answers', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:19200'), { code: 'ECONNREFUSED' });
    const { result, writes, elapsedMs } = await keepingBatch(refused, 2);
    const [outcome] = result.outcomes;
    assert.ok(outcome && 'records' in outcome, `finished, not ${JSON.stringify(outcome)}`);
    assert.equal(outcome.records[0]?.status, 'Available');
    assert.equal(writes(), 3, 'ran again after each refusal');
    assert.ok(elapsedMs >= 2_900, `waited 1 s, then 2 s (${Math.round(elapsedMs)} ms)`);
  });

  it('job storage that refuses for good (AccessDenied) is a fatal StorageUnwritable, its cause kept', async () => {
    const denied = Object.assign(new Error('Access Denied'), { name: 'AccessDenied' });
    const { result, writes } = await keepingBatch(denied, 1);
    const [outcome] = result.outcomes;
    assert.ok(outcome && 'error' in outcome);
    assert.equal(outcome.error.type, ErrorTypes.StorageUnwritable);
    assert.equal(outcome.error.class, 'fatal');
    assert.equal((outcome.error.details.cause as { message?: string } | undefined)?.message, 'Access Denied');
    assert.equal(writes(), 1, 'not tried again');
  });

  /** A batch naming its two items by place in a stored spec, on storage whose first spec reads fail with `failure`. */
  async function byPlaceBatch(failure: Error, failures: number) {
    const storage = createStorage('/nonexistent-faultline-storage');
    let reads = 0;
    storage.readSpec = async () => {
      reads += 1;
      if (reads <= failures) throw failure;
      return { pipeline: 'synthetic', items: [{ id: 'p0' }, { id: 'p1' }] };
    };
    const engine = engineOn(storage);
    const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 600_000 });
    const input: RunBatchInput = {
      job: { jobId: 'unit', pipeline: 'synthetic' },
      items: { kind: 'stored', ref: 'specs/unit.json', ranges: [[0, 2]], runs: 1, outputs: ['result'] },
      heartbeatTimeoutMs: 20_000,
      isolated: false,
    };
    return { run: () => env.run(engine.runBatch, input) as Promise<RunBatchResult>, reads: () => reads };
  }

  it('a batch whose items job storage cannot give yet waits for it, then runs them', async () => {
    const batch = await byPlaceBatch(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:19200'), { code: 'ECONNREFUSED' }), 1);
    const started = performance.now();
    const result = await batch.run();
    assert.deepEqual(
      result.outcomes.map((outcome) => [outcome.item, 'records' in outcome]),
      [
        ['p0', true],
        ['p1', true],
      ],
    );
    assert.equal(batch.reads(), 2);
    assert.ok(performance.now() - started >= 900, 'waited about a second');
  });

  it('a batch whose items job storage refuses for good fails at once as StorageUnwritable', async () => {
    const batch = await byPlaceBatch(Object.assign(new Error('Access Denied'), { name: 'AccessDenied' }), 1);
    await assert.rejects(batch.run(), (error: unknown) => (error as { type?: string }).type === ErrorTypes.StorageUnwritable);
    assert.equal(batch.reads(), 1);
  });

  it('a batch whose records go to job storage heartbeats at most every 5 s; an inline batch every second; none at the start', async () => {
    await withStorageDir(async (dir) => {
      const engine = engineOn(createStorage(dir));
      // 25 items of 100 ms of CPU: a batch of about 2.5 s.
      const slow = (input: RunBatchInput): RunBatchInput => ({ ...input, entries: (input.entries ?? []).map((entry) => ({ ...entry, item: { ...entry.item, params: { cpuMs: 100 } } })) });
      const ids = Array.from({ length: 25 }, (_, index) => ({ id: `h${index}` }));
      const beats = async (input: RunBatchInput) => {
        const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 600_000 });
        let count = 0;
        env.on('heartbeat', () => (count += 1));
        await env.run(engine.runBatch, input);
        return count;
      };
      const inline = await beats(slow(batch(ids)));
      const byPlace = await beats({ ...slow(batch(ids)), recordsPart: 'beats' });
      // Each heartbeat is a write on the server: none is sent before one is due.
      assert.ok(inline >= 2 && inline <= 3, `inline batch: ${inline} heartbeats in about 2.5 s`);
      assert.equal(byPlace, 0, 'by-place batch: none due within its 2.5 s');
    });
  });

  it('with storedBeats, each heartbeat names a part of job storage holding what finished, and carries only the rest', async () => {
    await withStorageDir(async (dir) => {
      const storage = createStorage(dir);
      const engine = engineOn(storage);
      // 12 items of 100 ms of CPU, beating every 250 ms; one item fails (its error stays in the heartbeat).
      const input: RunBatchInput = {
        ...batch(Array.from({ length: 12 }, (_, index) => ({ id: `s${index}` }))),
        heartbeatTimeoutMs: 1_000,
        recordsPart: 'slice-0-r1-b1',
        storedBeats: true,
      };
      input.entries = (input.entries ?? []).map((entry) => ({ ...entry, item: { ...entry.item, params: entry.item.id === 's1' ? { outcome: 'unprocessable' } : { cpuMs: 100 } } }));
      const ids = (input.entries ?? []).map((entry) => entry.item.id);
      const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 600_000 });
      const beats: BatchProgress[] = [];
      env.on('heartbeat', (details: unknown) => beats.push(structuredClone(details as BatchProgress)));
      const result = (await env.run(engine.runBatch, input)) as RunBatchResult;
      const named = beats.flatMap((progress) => (progress.stored ? [progress.stored] : []));
      assert.ok(new Set(named.map((part) => part.location)).size >= 2, `a new part at each heartbeat (${named.length})`);
      for (const progress of beats) {
        const stored = progress.stored;
        const inPart = stored ? ids.filter((_, index) => stored.finished === 'all' || stored.finished[index] === '1') : [];
        const records: { item: string }[] = [];
        if (stored) for await (const record of storage.readLines<{ item: string }>(stored.location)) records.push(record);
        assert.deepEqual(
          records.map((record) => record.item),
          inPart,
          'the part holds exactly what the heartbeat names',
        );
        assert.ok(
          progress.done.every((outcome) => !inPart.includes(outcome.item)),
          'an item is carried or named, never both',
        );
      }
      const last = beats.filter((progress) => progress.stored !== undefined).at(-1);
      assert.ok(
        last?.stored && last.done.filter((outcome) => 'records' in outcome).length < [...last.stored.finished].filter((flag) => flag === '1').length,
        'the heartbeat carries only what finished since its part',
      );
      assert.ok(
        beats.some((progress) => progress.stored && progress.done.some((outcome) => outcome.item === 's1' && 'error' in outcome)),
        'errors stay in the heartbeat',
      );
      // The result is as without storedBeats: one part with every finished item, the error as an outcome.
      assert.deepEqual(
        result.outcomes.map((outcome) => [outcome.item, 'error' in outcome]),
        [['s1', true]],
      );
      const final: string[] = [];
      for await (const record of storage.readLines<{ item: string }>(result.stored?.location ?? '')) final.push(record.item);
      assert.deepEqual(
        final,
        ids.filter((id) => id !== 's1'),
      );
    });
  });

  it('with storedBeats, a final part job storage refuses leaves the last heartbeat part standing and the rest in the result', async () => {
    await withStorageDir(async (dir) => {
      const storage = createStorage(dir);
      // Parts written at heartbeats go through; the batch's final part does not.
      const flaky: Storage = {
        ...storage,
        writeRecordsPart: (jobId, part, lines) => (part.includes('-beat') ? storage.writeRecordsPart(jobId, part, lines) : Promise.reject(new Error('connect ECONNREFUSED'))),
      };
      const input: RunBatchInput = { ...batch(Array.from({ length: 8 }, (_, index) => ({ id: `f${index}` }))), heartbeatTimeoutMs: 1_000, recordsPart: 'slice-0-r1-b2', storedBeats: true };
      input.entries = (input.entries ?? []).map((entry) => ({ ...entry, item: { ...entry.item, params: { cpuMs: 100 } } }));
      const ids = (input.entries ?? []).map((entry) => entry.item.id);
      const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 600_000 });
      const result = (await env.run(engineOn(flaky).runBatch, input)) as RunBatchResult;
      const stored = result.stored;
      assert.ok(stored?.location.includes('-beat') === true, 'the last heartbeat part stands');
      const inPart = ids.filter((_, index) => stored.finished[index] === '1');
      assert.ok(inPart.length > 0);
      const carried = result.outcomes.map((outcome) => outcome.item);
      assert.ok(result.outcomes.every((outcome) => 'records' in outcome));
      assert.deepEqual([...inPart, ...carried].sort(), [...ids].sort(), 'every item once: in the part or in the result');
    });
  });
});
