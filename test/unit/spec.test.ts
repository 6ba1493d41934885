import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { z } from 'zod';
import { builtInPipelines } from '../../src/pipelines';
import {
  CPU_WORK_SIZES,
  ItemSchema,
  JobSpecSchema,
  type LargeJobSizing,
  type StandardSchemaV1,
  allowedFailures,
  cpuBatchSize,
  firstWaveBatchSize,
  cpuBatchesAhead,
  resolveJobOptions,
  validateJobSpec,
} from '../../src/shared';
import { ConfigError, loadConfig } from '../../src/config';

function issuesOf(spec: unknown) {
  const validation = validateJobSpec(spec, builtInPipelines);
  assert.equal(validation.ok, false, 'spec should be invalid');
  return validation.ok ? [] : validation.issues;
}

function expectIssue(spec: unknown, path: string, code?: string) {
  const issues = issuesOf(spec);
  assert.ok(
    issues.some((issue) => issue.path === path && (code === undefined || issue.code === code)),
    `expected ${code ?? 'an issue'} at ${path}, got ${JSON.stringify(issues)}`,
  );
}

const ok = { pipeline: 'synthetic', items: [{ id: 'a' }] };

describe('job spec validation', () => {
  it('accepts the CONTRACT examples', () => {
    assert.equal(validateJobSpec(ok, builtInPipelines).ok, true);
    const images = {
      pipeline: 'images',
      items: [
        { id: 'cat-1', source: 'file:///data/in/cat.jpg', outputs: ['thumbnail', 'exif'] },
        { id: 'dog-7', source: 'https://example.org/dog.png' },
      ],
      outputs: ['thumbnail', 'preview', 'metadata', 'exif'],
      params: { fit: { maxBytes: 20000 }, filter: { minWidth: 64, minHeight: 64 } },
      destination: 'file:///data/out',
      options: {
        toleratedFailurePercent: 10,
        retryWindow: '1h',
        batchSize: 25,
        retry: { maxAttempts: 5, initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m' },
        webhook: { url: 'https://hooks.example.org/faultline', secret: 's3cret' },
      },
    };
    const validation = validateJobSpec(images, builtInPipelines);
    assert.equal(validation.ok, true, JSON.stringify(validation));
  });

  it('rejects each kind of bad input with its JSON path', () => {
    expectIssue({ items: [] }, 'pipeline', 'invalid_type'); // 1 missing field
    expectIssue({ pipeline: 'nope', items: [] }, 'pipeline', 'unknown_pipeline'); // 2
    expectIssue({ pipeline: 'synthetic', items: [{ id: 'a' }, { id: 'a' }] }, 'items[1].id', 'duplicate_id'); // 3
    expectIssue({ pipeline: 'synthetic', items: [{ id: 'a', outputs: ['nope'] }] }, 'items[0].outputs[0]', 'unknown_output'); // 4
    expectIssue({ pipeline: 'synthetic', items: [{ id: 'a' }], options: { batchSize: 0 } }, 'options.batchSize', 'too_small'); // 5
    expectIssue({ pipeline: 'synthetic', items: [{ id: 'a' }], options: { toleratedFailurePercent: 120 } }, 'options.toleratedFailurePercent', 'too_big'); // 6
    expectIssue({ pipeline: 'synthetic', items: [{ id: 'a' }], options: { retryWindow: 'soon' } }, 'options.retryWindow'); // 7
    expectIssue({ pipeline: 'images', items: [{ id: 'a', source: 'ftp://x/y.png' }], destination: 'file:///tmp/o' }, 'items[0].source', 'unsupported_scheme'); // 8
    expectIssue({ pipeline: 'images', items: [{ id: 'a' }], destination: 'file:///tmp/o' }, 'items[0].source', 'missing_source'); // 9
    expectIssue({ pipeline: 'synthetic', items: [{ id: 'a', params: { outcome: 'explode' } }] }, 'items[0].params.outcome'); // 10
    expectIssue({ pipeline: 'synthetic', items: [{ id: '../etc' }] }, 'items[0].id', 'invalid_string'); // 11
    expectIssue({ pipeline: 'synthetic', items: [{ id: 'a', colour: 'red' }] }, 'items[0]', 'unrecognized_keys'); // 12
    expectIssue({ pipeline: 'synthetic', items: [{ id: 'a' }], options: { toleratedFailureCount: 5 } }, 'options.toleratedFailureCount', 'out_of_range'); // 13
    expectIssue({ pipeline: 'images', items: [{ id: 'a', source: 'file:///x.png' }], outputs: ['fit'], destination: 'file:///o' }, 'params.fit', 'missing_param'); // 14
    expectIssue({ pipeline: 'synthetic', items: [{ id: 'a' }], options: { webhook: { url: 'https://h.example/x' } } }, 'options.webhook', 'webhook_secret'); // 15
    expectIssue({ pipeline: 'synthetic', items: [{ id: 'a' }], options: { retry: { maxAttempts: -1 } } }, 'options.retry.maxAttempts'); // 16
    expectIssue({ pipeline: 'synthetic', items: 'all of them' }, 'items', 'invalid_type'); // 17
    expectIssue({ pipeline: 'images', items: [{ id: 'a', source: 'not a uri' }], destination: 'file:///o' }, 'items[0].source', 'invalid_uri'); // 18
  });

  it('reports every issue, not just the first', () => {
    const issues = issuesOf({ pipeline: 'synthetic', items: [{ id: 'a' }, { id: 'a' }, { id: 'b', outputs: ['x'] }] });
    assert.equal(issues.length, 2);
  });
});

describe('options', () => {
  it('item params: items without params are checked once against {}, each still named by its own path', () => {
    let checks = 0;
    // A Standard Schema that counts its calls: needs `size`, a number.
    const itemParams: StandardSchemaV1 = {
      '~standard': {
        version: 1,
        vendor: 'test',
        validate(value) {
          checks += 1;
          const size = (value as { size?: unknown }).size;
          return typeof size === 'number' ? { value } : { issues: [{ message: 'size is required', path: ['size'] }] };
        },
      },
    };
    const registry = { sized: { ...builtInPipelines.synthetic!, name: 'sized', itemParams } };
    const validation = validateJobSpec({ pipeline: 'sized', items: [{ id: 'a' }, { id: 'b', params: { size: 2 } }, { id: 'c' }, { id: 'd', params: {} }] }, registry);
    assert.equal(validation.ok, false);
    assert.deepEqual(validation.ok ? [] : validation.issues.map((issue) => issue.path), ['items[0].params.size', 'items[2].params.size', 'items[3].params.size']);
    assert.equal(checks, 3, 'b and d checked each, a and c once together');
  });

  it('items: the hand-checked common case gives what zod gives, data and issues alike, for any value', () => {
    const byZod = z.array(ItemSchema);
    const byUs = JobSpecSchema.shape.items;
    const word = fc.constantFrom('', 'a', 'b-1', '-x', 'x'.repeat(129), 'file:///a', ' ', 'é');
    const scalar = fc.oneof(word, fc.constantFrom(0, -0, 1, NaN, Infinity, true, null, undefined));
    // Mostly valid, so the hand-checked path is taken; each field sometimes wrong, absent or odd.
    const validOr = (valid: fc.Arbitrary<unknown>, other: fc.Arbitrary<unknown>) => fc.oneof({ weight: 3, arbitrary: valid }, { weight: 1, arbitrary: other });
    const absent = Symbol('absent');
    const sometimes = (arbitrary: fc.Arbitrary<unknown>, absentWeight: number) => fc.oneof({ weight: absentWeight, arbitrary: fc.constant(absent) }, { weight: 1, arbitrary });
    const oddParams = fc.constantFrom<unknown>(JSON.parse('{"__proto__": 1, "a": 2}'), Object.create(null), new Date(0), [1], 'x', null, undefined, { cpuMs: undefined });
    const item = fc.oneof(
      {
        weight: 9,
        arbitrary: fc
          .tuple(
            sometimes(validOr(fc.constantFrom('a', 'b-1', 'C.9_z'), scalar), 0),
            sometimes(validOr(fc.constantFrom('file:///a', 'x'), scalar), 1),
            sometimes(validOr(fc.array(fc.constantFrom('a', 'b'), { minLength: 1, maxLength: 2 }), fc.constantFrom<unknown>([], [, 'a'], [''], [1], 'a', null, undefined)), 1),
            sometimes(validOr(fc.dictionary(fc.constantFrom('cpuMs', 'size'), scalar), oddParams), 1),
            sometimes(fc.constantFrom<unknown>({ a: 'https://x.test/a' }, { a: 'nope' }, undefined), 6),
            sometimes(scalar, 6),
          )
          .map(([id, source, outputs, params, putUrls, extra]) => {
            const fields = { id, source, outputs, params, putUrls, extra };
            return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== absent));
          }),
      },
      { weight: 1, arbitrary: fc.oneof(scalar, fc.array(scalar), fc.constant(new Date(0))) },
    );
    fc.assert(
      fc.property(fc.array(item, { maxLength: 4 }), (items) => {
        const expected = byZod.safeParse(items);
        const actual = byUs.safeParse(items);
        assert.equal(actual.success, expected.success);
        if (expected.success && actual.success) assert.deepStrictEqual(actual.data, expected.data);
        if (!expected.success && !actual.success) assert.deepStrictEqual(actual.error.issues, expected.error.issues);
      }),
      { numRuns: 3_000 },
    );
  });

  it('item params: repeated flat params are checked once, each item still gets exactly its own issues', () => {
    const itemParams = z.object({ cpuMs: z.number().min(0) }).strict();
    const registry = { sized: { ...builtInPipelines.synthetic!, name: 'sized', itemParams } };
    const paramsOf = fc.oneof(
      fc.constantFrom<unknown>({ cpuMs: 1 }, { cpuMs: -1 }, { cpuMs: -0 }, { cpuMs: NaN }, { cpuMs: '1' }, { cpuMs: null }, { cpuMs: { n: 1 } }, { cpuMs: 1, x: true }, {}, undefined),
      fc.record({ cpuMs: fc.constantFrom(1, -1, NaN, Infinity, '1', true, null) }),
    );
    fc.assert(
      fc.property(fc.array(paramsOf, { maxLength: 8 }), (all) => {
        const items = all.map((params, index) => ({ id: `i${index}`, ...(params !== undefined ? { params } : {}) }));
        const together = validateJobSpec({ pipeline: 'sized', items }, registry);
        // Each item alone never meets another's params: what it must get.
        const alone = items.flatMap((item, index) => {
          const validation = validateJobSpec({ pipeline: 'sized', items: [item] }, registry);
          return validation.ok ? [] : validation.issues.map((issue) => ({ ...issue, path: issue.path.replace('items[0]', `items[${index}]`) }));
        });
        assert.deepStrictEqual(together.ok ? [] : together.issues, alone);
      }),
      { numRuns: 500 },
    );
  });

  it('resolves durations and defaults', () => {
    const options = resolveJobOptions({ options: { retryWindow: '1h', heartbeatTimeout: '5s', retry: { maxAttempts: 'unlimited', initialInterval: '250ms' } } }, 10);
    assert.equal(options.retryWindowMs, 3_600_000);
    assert.equal(options.heartbeatTimeoutMs, 5_000);
    assert.deepEqual(options.retryOverride, { maxAttempts: 0, initialIntervalMs: 250 });
    assert.equal(options.batchSize, 1, 'small jobs run one item per activity');
    assert.equal(resolveJobOptions({}, 100_000).batchSize, 100);
    assert.equal(options.crashBudget, 3);
  });

  it('large-job sizing: v2 grows batches to 5,000 items and slices to 20,000 above 100,000 items; jobs started before keep their sizes', () => {
    const sizes = (items: number, sizing: LargeJobSizing) => {
      const options = resolveJobOptions({}, items, sizing);
      return [options.batchSize, options.shardSize];
    };
    assert.deepEqual(sizes(100_000, 'v2'), [100, 2_000], 'up to 100,000 items nothing changes');
    assert.deepEqual(sizes(250_000, 'v2'), [1_250, 5_000]);
    assert.deepEqual(sizes(1_000_000, 'v2'), [5_000, 20_000]);
    assert.deepEqual(sizes(10_000_000, 'v2'), [5_000, 20_000]);
    assert.deepEqual(sizes(250_000, 'v1'), [250, 5_000]);
    assert.deepEqual(sizes(1_000_000, 'v1'), [1_000, 10_000], 'a job started under v1 keeps its sizes');
    assert.deepEqual(sizes(10_000_000, 'v1'), [1_000, 10_000]);
    assert.deepEqual(sizes(1_000_000, 'none'), [100, 2_000], 'a job started before large-job sizing keeps its sizes');
    const shard = (sizing: LargeJobSizing) => resolveJobOptions({ options: { batchSize: 400 } }, 5_000, sizing).shardSize;
    assert.deepEqual([shard('v2'), shard('v1'), shard('none')], [8_000, 8_000, 2_000], 'a small job with large batches: v2 sizes its slices as v1 did');
    assert.deepEqual(resolveJobOptions({ options: { batchSize: 10, shardSize: 500 } }, 1_000_000, 'v2').shardSize, 500, 'the spec wins');
  });

  it("work: 'cpu': one slice up to 20,000 items, batches from an eighth of it down to a hundredth, the spec wins", () => {
    const sizes = (items: number, options: Record<string, number> = {}) => {
      const resolved = resolveJobOptions({ options }, items, 'v2', 'cpu');
      return [resolved.batchSize, resolved.shardSize];
    };
    assert.deepEqual(sizes(5_000), [625, 5_000]);
    assert.deepEqual(sizes(1), [1, 500], 'a one-item job still fits one batch (it runs locally)');
    assert.deepEqual(sizes(100), [13, 500]);
    assert.deepEqual(sizes(1_000_000), [1_000, 20_000], 'batches up to the largest a spec may ask for; slices as a large job’s');
    assert.deepEqual(sizes(5_000, { batchSize: 50 }), [50, 5_000]);
    assert.deepEqual(sizes(5_000, { shardSize: 1_000 }), [125, 1_000], 'batches sized to the slice asked for');
    assert.deepEqual(resolveJobOptions({}, 5_000, 'v2', 'io').batchSize, 79, 'io (the default) as before');

    // A slice of 5,000 runs guided batches: large first, none below 50 items, all items in about 27 batches.
    let queued = 5_000;
    const batches: number[] = [];
    while (queued > 0) {
      const size = Math.min(queued, cpuBatchSize(queued, 5_000, 625));
      batches.push(size);
      queued -= size;
    }
    assert.equal(batches[0], 625);
    assert.ok(
      batches.every((size, i) => i === 0 || size <= (batches[i - 1] ?? 0)),
      `never larger than the one before: ${batches.join(',')}`,
    );
    assert.ok(batches.slice(0, -1).every((size) => size >= 5_000 / CPU_WORK_SIZES.smallestFraction));
    assert.equal(
      batches.reduce((sum, size) => sum + size, 0),
      5_000,
    );
    assert.ok(batches.length >= 20 && batches.length <= 30, `${batches.length} batches`);
    assert.equal(cpuBatchSize(0, 0, 10), 1, 'never an empty batch');

    // Sized to a fleet of 4 busy slots: a quarter of the queue each (within the job's batch size), fewer batches.
    const guided = (ahead: number) => {
      const sizes: number[] = [];
      for (let left = 5_000; left > 0;) {
        const size = Math.min(left, cpuBatchSize(left, 5_000, 625, ahead));
        sizes.push(size);
        left -= size;
      }
      return sizes;
    };
    assert.deepEqual(guided(4).slice(0, 7), [625, 625, 625, 625, 625, 469, 352]);
    assert.ok(guided(4).length < guided(8).length, `${guided(4).length} batches for 4 slots, ${guided(8).length} for 8`);
    assert.deepEqual(guided(8), batches, 'ahead defaults to batchesAhead');

    // The first wave, started together: each shorter than the one before, down to about half.
    const firstWave = (ahead: number) => {
      const sizes: number[] = [];
      for (let left = 5_000, launched = 0; left > 0; launched++) {
        const size = Math.min(left, firstWaveBatchSize(cpuBatchSize(left, 5_000, 625, ahead), launched, ahead));
        sizes.push(size);
        left -= size;
      }
      return sizes;
    };
    assert.deepEqual(firstWave(4).slice(0, 6), [625, 547, 469, 391, 625, 586], 'then guided again');
    assert.deepEqual(firstWave(2).slice(0, 3), [625, 469, 625]);
    assert.equal(
      firstWave(64).reduce((sum, size) => sum + size, 0),
      5_000,
    );
    assert.equal(firstWaveBatchSize(1, 3, 4), 1, 'never an empty batch');
    assert.equal(firstWaveBatchSize(100, 4, 4), 100, 'past the first wave: the guided size');
  });

  it('a CPU-bound slice keeps one batch in flight per slot its fleet has, within bounds; the fixed count when not counted', () => {
    assert.equal(cpuBatchesAhead(undefined), CPU_WORK_SIZES.batchesAhead);
    assert.equal(cpuBatchesAhead(0), CPU_WORK_SIZES.batchesAhead, 'no worker counted');
    assert.equal(cpuBatchesAhead(Number.NaN), CPU_WORK_SIZES.batchesAhead);
    assert.equal(cpuBatchesAhead(1), CPU_WORK_SIZES.fewestAhead, 'one slot still has the next batch waiting');
    assert.equal(cpuBatchesAhead(4), 4, 'two processes of two slots');
    assert.equal(cpuBatchesAhead(12.5), 12);
    assert.equal(cpuBatchesAhead(10_000), CPU_WORK_SIZES.mostAhead);
  });

  it('tolerated failures: share of all items, strictly greater fails', () => {
    const allowed = (percent?: number, count?: number, total = 10) =>
      allowedFailures(
        resolveJobOptions({ options: { ...(percent !== undefined ? { toleratedFailurePercent: percent } : {}), ...(count !== undefined ? { toleratedFailureCount: count } : {}) } }, total),
        total,
      );
    assert.equal(allowed(), undefined);
    assert.equal(allowed(10), 1);
    assert.equal(allowed(25), 2, '2.5 tolerated: 3 failures exceed it, 2 do not');
    assert.equal(allowed(0), 0);
    assert.equal(allowed(50, 2), 2, 'the stricter of both limits');
  });
});

describe('rate limits', () => {
  it('options.rateLimits: bad keys and limits are issues at their JSON path', () => {
    const spec = (rateLimits: unknown) => ({ pipeline: 'synthetic', items: [{ id: 'a' }], options: { rateLimits } });
    assert.ok(validateJobSpec(spec({ 'api.example.com': { perSecond: 20, concurrency: 4 }, '*': { perSecond: 0.5 } }), builtInPipelines).ok);
    const bad = validateJobSpec(spec({ 'api.example.com': { perSecond: 0 }, 'bad key': { perSecond: 1 }, '127.0.0.1:80': { perSecond: 1, burst: 3 } }), builtInPipelines);
    assert.ok(!bad.ok);
    const paths = bad.issues.map((issue) => issue.path);
    assert.ok(paths.includes('options.rateLimits.api.example.com.perSecond'), paths.join(', '));
    assert.ok(paths.some((at) => at.startsWith('options.rateLimits')) && bad.issues.length >= 3, JSON.stringify(bad.issues));
  });

  it('FAULTLINE_WORKER_NICE: 10 unless set, 0 to 19, else a ConfigError naming the variable (as every setting is named)', () => {
    assert.equal(loadConfig({}, '/tmp').workerNice, 10);
    assert.equal(loadConfig({ FAULTLINE_WORKER_NICE: '0' }, '/tmp').workerNice, 0);
    for (const bad of ['20', '-1', 'low', '2.5']) {
      assert.throws(
        () => loadConfig({ FAULTLINE_WORKER_NICE: bad }, '/tmp'),
        (error: Error) => error instanceof ConfigError && /^invalid configuration: FAULTLINE_WORKER_NICE: /.test(error.message),
        bad,
      );
    }
    assert.throws(
      () => loadConfig({ FAULTLINE_WORKER_MAX_HEAP_MB: 'lots' }, '/tmp'),
      (error: Error) => error instanceof ConfigError && /FAULTLINE_WORKER_MAX_HEAP_MB: /.test(error.message),
    );
  });

  it('FAULTLINE_RATE_LIMITS: JSON of the same shape, or a ConfigError naming the setting', () => {
    assert.deepEqual(loadConfig({ FAULTLINE_RATE_LIMITS: '{"*":{"perSecond":5}}' }, '/tmp').rateLimits, { '*': { perSecond: 5 } });
    assert.deepEqual(loadConfig({}, '/tmp').rateLimits, {});
    assert.throws(
      () => loadConfig({ FAULTLINE_RATE_LIMITS: '{not json' }, '/tmp'),
      (error: Error) => error instanceof ConfigError && /FAULTLINE_RATE_LIMITS: is not JSON/.test(error.message),
    );
    assert.throws(
      () => loadConfig({ FAULTLINE_RATE_LIMITS: '{"h":{"perSecond":-1}}' }, '/tmp'),
      (error: Error) => error instanceof ConfigError && /FAULTLINE_RATE_LIMITS\.h\.perSecond/.test(error.message),
    );
  });
});
