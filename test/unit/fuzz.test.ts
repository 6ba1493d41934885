/**
 * Fuzzing (fast-check, seeded, bounded): malformed specs through the CLI's parse path and the
 * client, anything thrown through the error conversion, and caller-chosen ids through storage.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Connection } from '@temporalio/client';
import fc from 'fast-check';
import { FaultlineClient, FaultlineClientError } from '../../src/client';
import { parseSpecText } from '../../src/cli/main';
import { loadConfig } from '../../src/config';
import { ErrorReportSchema, ITEM_ID_PATTERN, jobIdProblem, toErrorReport } from '../../src/shared';
import { createStorage, safeSegment } from '../../src/storage';

const SEED = 20261122;
const runs = (numRuns: number) => ({ seed: SEED, numRuns });

// A client that can validate but can reach nothing: a spec that got past validation would fail
// with a connection error instead of `invalid`, and nothing can ever be started.
let connection: Connection;
let client: FaultlineClient;
before(async () => {
  connection = Connection.lazy({ address: '127.0.0.1:1' });
  client = await FaultlineClient.connect({ config: loadConfig({ FAULTLINE_STORAGE: '/nonexistent-faultline-fuzz' }, '/tmp'), connection });
});
after(async () => {
  await connection.close();
});

const valid = { pipeline: 'synthetic', items: [{ id: 'a' }, { id: 'b', params: { cpuMs: 1 } }], options: { batchSize: 2 } };

/** A valid spec with one spot (a top-level field, an item, an item field or an option) replaced by anything. */
const mutatedSpec = fc.oneof(
  fc.record(
    { pipeline: fc.anything(), items: fc.anything(), options: fc.anything(), destination: fc.anything(), outputs: fc.anything(), params: fc.anything(), extra: fc.anything() },
    { requiredKeys: [] },
  ),
  fc.tuple(fc.constantFrom('pipeline', 'items', 'options', 'destination', 'outputs', 'params', 'labels', 'unknownField'), fc.anything()).map(([key, value]) => ({ ...valid, [key]: value })),
  fc
    .tuple(fc.nat(1), fc.constantFrom('id', 'source', 'params', 'putUrls', 'nonsense'), fc.anything())
    .map(([index, key, value]) => ({ ...valid, items: valid.items.map((item, i) => (i === index ? { ...item, [key]: value } : item)) })),
  fc
    .tuple(fc.constantFrom('batchSize', 'concurrency', 'crashBudget', 'retryWindow', 'heartbeatTimeout', 'retry', 'webhook', 'toleratedFailurePercent', 'shardSize'), fc.anything())
    .map(([key, value]) => ({ ...valid, options: { [key]: value } })),
  fc.anything(),
);

function assertTypedInvalid(error: unknown): true {
  assert.ok(error instanceof FaultlineClientError, `not a FaultlineClientError: ${String(error)}`);
  assert.equal(error.code, 'invalid');
  assert.ok(error.issues.length > 0, 'names at least one issue');
  for (const issue of error.issues) {
    assert.equal(typeof issue.path, 'string');
    assert.equal(typeof issue.message, 'string');
    assert.doesNotMatch(issue.message, /\n\s+at /, 'no stack trace');
  }
  assert.doesNotMatch(error.message, /\n\s+at /);
  return true;
}

describe('fuzz: specs', () => {
  it('every malformed spec is a typed invalid error with JSON paths, and never reaches Temporal', async () => {
    let invalid = 0;
    await fc.assert(
      fc.asyncProperty(mutatedSpec, async (spec) => {
        // A mutation that happens to be valid, or names a pipeline only workers may know (they validate it).
        try {
          client.validate(spec);
          return;
        } catch {
          // invalid for the client: must be refused before reaching Temporal
        }
        invalid += 1;
        await assert.rejects(client.start(spec), assertTypedInvalid);
      }),
      runs(3_000),
    );
    assert.ok(invalid > 2_000, `most generated specs are invalid (${invalid})`);
  });

  it('any text that is not JSON is a typed invalid error at (root)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (text) => {
        let parsed = true;
        try {
          JSON.parse(text);
        } catch {
          parsed = false;
        }
        if (parsed) return;
        assert.throws(
          () => parseSpecText(text, 'job.json'),
          (error: unknown) => assertTypedInvalid(error) && (error as FaultlineClientError).issues[0]?.path === '(root)',
        );
      }),
      runs(2_000),
    );
  });

  it('a bad --id is refused before the spec is even read', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string(), fc.constantFrom('..', '.', 'a/b', '../x', '', 'x'.repeat(201), 'a b', '-a', 'é')), async (id) => {
        if (jobIdProblem(id) === undefined) return;
        await assert.rejects(client.start(valid, { jobId: id }), (error: unknown) => assertTypedInvalid(error) && (error as FaultlineClientError).issues[0]?.path === 'jobId');
      }),
      runs(1_000),
    );
  });
});

describe('fuzz: error conversion', () => {
  const thrown = fc.oneof(
    fc.anything(),
    fc.tuple(fc.string(), fc.anything()).map(([message, cause]) => new Error(message, { cause })),
    fc.tuple(fc.string(), fc.string(), fc.nat(12)).map(([name, message, depth]) => {
      let error: Error = Object.assign(new Error(message), { name });
      for (let i = 0; i < depth; i++) error = new Error(`${message}/${i}`, { cause: error });
      return error;
    }),
    fc.string().map((message) => {
      const error: Error & { cause?: unknown } = new Error(message);
      error.cause = error; // a cycle
      return error;
    }),
  );
  it('anything thrown becomes a valid ErrorReport', () => {
    fc.assert(
      fc.property(thrown, (value) => {
        const report = toErrorReport(value, { at: '2026-11-22T00:00:00.000Z', item: 'a' });
        const parsed = ErrorReportSchema.safeParse(report);
        assert.ok(parsed.success, JSON.stringify(parsed.error?.issues.slice(0, 2)));
        assert.doesNotThrow(() => JSON.stringify(report), 'the report is plain JSON');
      }),
      runs(3_000),
    );
  });
});

describe('fuzz: storage ids', () => {
  const storage = createStorage('/srv/faultline-storage');
  const jobs = path.join('/srv/faultline-storage', 'jobs');
  const jobFolder = (jobId: string) => path.dirname(path.dirname(fileURLToPath(storage.sliceRecordsUri(jobId, 0, 1))));
  it('accepted job and item ids never escape their folder and never share one', () => {
    const id = fc.oneof(fc.string({ maxLength: 40 }), fc.stringMatching(ITEM_ID_PATTERN, { maxLength: 40 }));
    fc.assert(
      fc.property(id, id, id, (a, b, item) => {
        for (const jobId of [a, b]) {
          if (jobIdProblem(jobId) !== undefined) continue;
          assert.equal(path.dirname(jobFolder(jobId)), jobs, `${JSON.stringify(jobId)} stays one level under jobs/`);
        }
        // An item's working copy is the folder work/<safeSegment(item)>: one segment, never . or ..
        if (ITEM_ID_PATTERN.test(item)) assert.equal(path.posix.join('work', safeSegment(item), '..'), 'work');
        if (a !== b && jobIdProblem(a) === undefined && jobIdProblem(b) === undefined) assert.notEqual(jobFolder(a), jobFolder(b));
      }),
      runs(5_000),
    );
  });
});
