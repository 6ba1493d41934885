/**
 * The shared definitions the workflow bundle preloads are deep-frozen by the SDK and then used by
 * every workflow of the thread. Frozen the same way here, every exported schema must still parse
 * (a zod object schema fills a cache on its first parse, which a frozen one cannot).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import * as shared from '../../src/shared';
import { fillSchemaCaches } from '../../src/workflows/preload';
import { syntheticSpec } from '../helpers/env';

/** As the SDK's reusable V8 context freezes preloaded modules: objects in depth, functions themselves only. */
function deepFreeze(value: unknown, seen = new WeakSet<object>()): void {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function') || seen.has(value)) return;
  seen.add(value);
  if (Object.isFrozen(value)) return;
  if (typeof value === 'object')
    for (const key of [...Object.getOwnPropertyNames(value), ...Object.getOwnPropertySymbols(value)]) {
      try {
        deepFreeze((value as Record<string | symbol, unknown>)[key], seen);
      } catch {
        // some objects cannot be frozen (typed arrays); the SDK skips them too
      }
    }
  Object.freeze(value);
}

const samples: unknown[] = [undefined, null, {}, [], 'x', 1, { id: 'a' }, { pipeline: 'synthetic', items: [{ id: 'a' }] }, { concurrency: 2 }];

describe('preloaded shared definitions', () => {
  it('every exported schema parses after the freeze (the preload filled their caches)', () => {
    // Importing the preload module has filled the caches, as it does in the bundle.
    deepFreeze(shared);
    const schemas = Object.entries(shared).filter((entry): entry is [string, z.ZodType] => entry[1] instanceof z.ZodType);
    assert.ok(schemas.length >= 5, `only ${schemas.length} schemas found`);
    for (const [name, schema] of schemas) for (const sample of samples) assert.doesNotThrow(() => schema.safeParse(sample), `${name} threw on ${JSON.stringify(sample)}`);
    assert.equal(shared.JobSpecSchema.safeParse(syntheticSpec([{ id: 'a' }])).success, true);
    assert.equal(shared.RateLimitSchema.safeParse({ perSecond: 5, concurrency: 2 }).success, true);
    assert.equal(shared.RateLimitsSchema.safeParse({ 'api.example.com': { perSecond: 5 } }).success, true);
    assert.equal(shared.JobSpecSchema.safeParse(syntheticSpec([{ id: 'not valid!' }])).success, false);
    assert.equal(shared.validateJobSpec(syntheticSpec([{ id: 'a' }]), shared.legacyRegistry()).ok, true);
  });

  it('without the preload, a frozen object schema throws on its first parse (the failure it prevents)', () => {
    const unfilled = z.object({ a: z.string(), nested: z.object({ b: z.number() }) });
    const filled = z.object({ a: z.string(), nested: z.object({ b: z.number() }) });
    fillSchemaCaches(filled);
    deepFreeze(unfilled);
    deepFreeze(filled);
    assert.throws(() => unfilled.safeParse({ a: 'x', nested: { b: 1 } }), TypeError);
    assert.equal(filled.safeParse({ a: 'x', nested: { b: 1 } }).success, true);
  });
});
