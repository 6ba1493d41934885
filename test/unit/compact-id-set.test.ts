import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { CompactIdSet } from '../../src/compact-id-set';

/** The heap that stays: the garbage the loop leaves (its id strings) collected first, so only what the set keeps counts. */
function retainedHeap(): number {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
  return process.memoryUsage().heapUsed;
}

describe('CompactIdSet', () => {
  it('answers has/add/addNew exactly as a Set<string> does, for any ids (fast-check)', () => {
    // Long ids of one length that differ late take the native compare (> 32 bytes); short ones the byte loop.
    const long = (tail: string) => `${'x'.repeat(36)}${tail}`;
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.constantFrom('has', 'add', 'addNew'),
            fc.oneof(fc.string({ maxLength: 6 }), fc.string({ unit: 'grapheme', maxLength: 40 }), fc.constantFrom('a', 'b', 'item-1', 'é', long('a'), long('b'), long('ab'))),
          ),
          { maxLength: 400 },
        ),
        (operations) => {
          const compact = new CompactIdSet();
          const reference = new Set<string>();
          for (const [operation, id] of operations) {
            assert.equal(compact.has(id), reference.has(id), `has(${JSON.stringify(id)})`);
            if (operation === 'add') compact.add(id);
            if (operation === 'addNew') assert.equal(compact.addNew(id), !reference.has(id), `addNew(${JSON.stringify(id)})`);
            if (operation !== 'has') reference.add(id);
          }
          assert.equal(compact.size, reference.size);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('holds a million ids with their duplicates found, outside the JS heap', () => {
    const ids = new CompactIdSet();
    const heapBefore = retainedHeap();
    for (let i = 0; i < 1_000_000; i++) ids.add(`item-${i}`);
    // Measured before a collection, the loop's own garbage decided the result (CI on 0e8afef: 11 MB).
    const heapGrowth = retainedHeap() - heapBefore;
    assert.equal(ids.size, 1_000_000);
    assert.ok(ids.has('item-0') && ids.has('item-999999') && !ids.has('item-1000000') && !ids.has('item-'));
    ids.add('item-500000');
    assert.equal(ids.size, 1_000_000, 'a duplicate is not added twice');
    // A Set<string> of the same ids grows the heap by ~50 MB.
    assert.ok(heapGrowth < 10 * 1024 * 1024, `heap grew ${Math.round(heapGrowth / 1024 / 1024)} MB`);
  });
});
