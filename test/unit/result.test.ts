import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addCounts, countsOfBeat, maxCounts, emptyTally, sliceCountsKept, sliceIndexOf, sliceWorkflowId, tallyRecords } from '../../src/shared';
import { type OutputRecord, deriveJobStatus, emptyStatusCounts, exitCodeForStatus, isSuccess, makeReport } from '../../src/shared';

const counts = (partial: Partial<ReturnType<typeof emptyStatusCounts>>) => {
  const c = { ...emptyStatusCounts(), ...partial };
  return { ...c, outputs: Object.values(c).reduce((a, b) => a + b, 0) };
};

describe('job status rules (CONTRACT)', () => {
  it('derives every status', () => {
    assert.equal(deriveJobStatus(counts({ Available: 2, Missing: 1, Unsolved: 1 }), undefined), 'Succeeded');
    assert.equal(deriveJobStatus(counts({ Available: 2, Failed: 1 }), undefined), 'PartiallySucceeded');
    assert.equal(deriveJobStatus(counts({ Failed: 3 }), undefined), 'Failed');
    assert.equal(deriveJobStatus(counts({ Available: 3 }), 'fatal'), 'Failed');
    assert.equal(deriveJobStatus(counts({ Available: 3, Cancelled: 1 }), 'cancelled'), 'Cancelled');
    assert.equal(deriveJobStatus(counts({ Skipped: 3 }), undefined), 'Empty');
    assert.equal(deriveJobStatus(counts({ Skipped: 1, Available: 1 }), undefined), 'Succeeded');
  });

  it('success and exit codes follow the status', () => {
    assert.deepEqual(
      ['Succeeded', 'PartiallySucceeded', 'Empty', 'Failed', 'Cancelled'].map((s) => isSuccess(s as never)),
      [true, true, true, false, false],
    );
    assert.deepEqual(
      ['Succeeded', 'Empty', 'PartiallySucceeded', 'Failed', 'Cancelled'].map((s) => exitCodeForStatus(s as never)),
      [0, 0, 3, 1, 1],
    );
  });

  it('tallies failures once per item and type, capped', () => {
    const error = makeReport({ type: 'CorruptImage', message: 'x', at: 'now' });
    const records: OutputRecord[] = [
      { item: 'a', output: 'thumbnail', status: 'Failed', error },
      { item: 'a', output: 'preview', status: 'Failed', error },
      { item: 'b', output: 'thumbnail', status: 'Available' },
    ];
    const tally = tallyRecords(emptyTally(), records);
    assert.deepEqual(tally.failuresByReason, { CorruptImage: ['a'] });
    assert.deepEqual(tally.failureCounts, { CorruptImage: 1 });
    assert.equal(tally.failedItems, 1);
    assert.equal(tally.counts.Failed, 2);
    const many: OutputRecord[] = Array.from({ length: 1_005 }, (_, i) => ({ item: `i${i}`, output: 'o', status: 'Failed', error }));
    const big = tallyRecords(emptyTally(), many);
    assert.equal(big.failuresByReason.CorruptImage?.length, 1_000);
    assert.equal(big.failureCounts.CorruptImage, 1_005);
    assert.equal(big.truncated, true);
    assert.equal(big.errors.length, 100);
    assert.equal(big.errorsTruncated, true);
  });
});

describe('countsOfBeat (a running batch in progress)', () => {
  it('adds the records its heartbeat names in job storage to those it carries, and counts no errored item', () => {
    const record = (item: string, status: OutputRecord['status']): OutputRecord => ({ item, output: 'out', status });
    const counts = countsOfBeat({
      stored: { location: 'file:///parts/b1-beat1.ndjson', finished: '1101', counts: { ...emptyStatusCounts(), Available: 2, Failed: 1 }, failedItems: ['c'], bytesIn: 0, bytesOut: 0 },
      done: [
        { item: 'e', records: [record('e', 'Available'), record('e', 'Missing')], bytesIn: 0, bytesOut: 0 },
        { item: 'f', error: makeReport({ type: 'TransientItemError', class: 'transient', message: 'later', at: '2026-12-03T00:00:00.000Z' }) },
      ],
    });
    assert.deepEqual(counts, { ...emptyStatusCounts(), Available: 3, Missing: 1, Failed: 1 });
    assert.deepEqual(countsOfBeat({ done: [] }), emptyStatusCounts());
  });
});

describe('counts and slice ids (progress read from the server)', () => {
  it('addCounts adds what the second has, key by key, and leaves the first as it was', () => {
    const base = { ...emptyStatusCounts(), Available: 2, outputs: 3 };
    assert.deepEqual(addCounts(base, { ...emptyStatusCounts(), Failed: 1, Available: 1 }), { ...emptyStatusCounts(), Available: 3, Failed: 1, outputs: 3 });
    assert.deepEqual(addCounts(base, { ...emptyStatusCounts(), Cancelled: 2, outputs: 2 }), { ...emptyStatusCounts(), Available: 2, Cancelled: 2, outputs: 5 });
    assert.deepEqual(base, { ...emptyStatusCounts(), Available: 2, outputs: 3 });
  });

  it('maxCounts keeps the larger of each key, and leaves both as they were', () => {
    const now = { ...emptyStatusCounts(), Available: 5, Failed: 0, outputs: 9 };
    const seen = { ...emptyStatusCounts(), Available: 3, Failed: 2, outputs: 9 };
    assert.deepEqual(maxCounts(now, seen), { ...emptyStatusCounts(), Available: 5, Failed: 2, outputs: 9 });
    assert.deepEqual(maxCounts(seen, now), maxCounts(now, seen));
    assert.deepEqual(now, { ...emptyStatusCounts(), Available: 5, Failed: 0, outputs: 9 });
    assert.deepEqual(seen, { ...emptyStatusCounts(), Available: 3, Failed: 2, outputs: 9 });
  });

  it("sliceIndexOf reads back sliceWorkflowId's index for that job and round only", () => {
    for (const index of [0, 7, 120]) assert.deepEqual(sliceIndexOf('job/a', sliceWorkflowId('job/a', index, 1), 1), [index]);
    assert.deepEqual(sliceIndexOf('job/a', sliceWorkflowId('job/a', 3, 2), 1), [], 'another round');
    assert.deepEqual(sliceIndexOf('job', sliceWorkflowId('job/a', 3, 1), 1), [], "another job's slice");
    assert.deepEqual(sliceIndexOf('job', 'job/archive-1', 1), [], 'not a slice');
    assert.deepEqual(sliceIndexOf('job', 'job/slice-03-r1', 1), [], 'not an index this job writes');
  });

  it("sliceCountsKept: a slice's memo plus its running batches' beats; nothing before its first task ends; an older slice is asked", () => {
    const kept = { ...emptyStatusCounts(), Available: 10, outputs: 20 };
    const beat = { done: [{ item: 'x', records: [{ item: 'x', output: 'out', status: 'Failed' as const }], bytesIn: 0, bytesOut: 0 }] };
    assert.deepEqual(sliceCountsKept(kept, 40, [beat, beat]), { ...emptyStatusCounts(), Available: 10, Failed: 2, outputs: 20 });
    assert.deepEqual(sliceCountsKept(undefined, 3, []), { ...emptyStatusCounts(), outputs: 0 }, 'its first workflow task has not ended');
    assert.equal(sliceCountsKept(undefined, 4, []), undefined, 'a slice past its first task without the memo ran older code');
  });
});
