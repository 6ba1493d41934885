/**
 * README's table of what happens to a request in each phase of a job is a promise to users: each
 * row names the tests that check it, and this test fails when a row has none, or a named test is
 * gone or renamed (so the table and the behaviour cannot drift apart unnoticed).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../helpers/env';

/** README row (its first cell, as written) → the tests that check it: [test file, words of the test's title]. */
const CHECKED_BY: Record<string, [string, string][]> = {
  'while the job validates its spec or imports `itemsFrom`': [
    ['integration/races.test.ts', 'a cancel while the job imports its itemsFrom stops the import'],
    ['integration/races.test.ts', 'requests accepted while the spec is validated are answered JobClosed'],
  ],
  'while a round runs: `cancel`': [
    ['integration/operations.test.ts', 'cancel by CLI and by native Temporal cancellation, with hanging items in flight'],
    ['integration/controls.test.ts', 'cancel works while paused: the held items become Cancelled'],
  ],
  'while a round runs: `cancel` after a fatal stop': [['integration/races.test.ts', 'a cancel that arrives after a fatal stop is answered while in-flight batches finish']],
  'while a round runs: `pause`, `resume`, `set`': [
    ['integration/races.test.ts', 'new limits set while a slice is starting reach that slice'],
    ['integration/races.test.ts', 'a pause that cannot reach a just-started slice (it has already finished) is not a slice failure'],
    ['integration/races.test.ts', 'flags and limit changes that arrive during the archive are in the final result and its webhook'],
    ['integration/controls.test.ts', 'cancel works while paused: the held items become Cancelled'],
  ],
  'while a round runs: `retry --item X` of items still in this round': [
    ['integration/operations.test.ts', 'while running: progress shows items in backoff, and retry runs a waiting item now'],
    ['integration/interleavings.test.ts', 'every job closes, every request is answered'],
  ],
  'while a round runs: any other `retry`': [['integration/interleavings.test.ts', 'every job closes, every request is answered']],
  'while the result is being published (manifest, archive, webhook)': [
    ['integration/races.test.ts', 'a retry accepted while the result is being published (webhook) runs as the next round'],
    ['integration/races.test.ts', 'a cancel while the archive child runs cancels the archive and keeps the items truthful'],
  ],
  'in the retry window': [
    ['integration/races.test.ts', 'a retry that lands with the window timer is still run'],
    ['integration/time-skipping.test.ts', 'a job with failures stays open for its 24 h window'],
  ],
  'in the same activation as `cancel`, or after the job ended early / closed': [
    ['integration/races.test.ts', 'retry and cancel in the same activation of the retry window'],
    ['integration/races.test.ts', 'signals that cannot be honoured are recorded in the result'],
    ['integration/controls.test.ts', 'bad input and closed jobs are refused in one line with exit 2'],
  ],
  'while the job continues-as-new': [
    ['integration/races.test.ts', 'a cancel that arrives while the runner waits to continue as new is not lost'],
    ['integration/races.test.ts', 'a cancel that arrives while the job waits for a pause to reach its slices before continuing as new is answered'],
    ['integration/interleavings.test.ts', 'every job closes, every request is answered'],
  ],
  '`result` of a settled round': [['integration/engine-v3.test.ts', 'reading a settled result many times adds nothing to the history']],
  'the client re-sends `retry` (RPC timeout)': [['integration/races.test.ts', 'a retry re-sent with the same update id runs one round, not two']],
};

async function tableRows(): Promise<string[]> {
  const readme = await readFile(path.join(ROOT, 'README.md'), 'utf8');
  const lines = readme.split('\n');
  const start = lines.findIndex((line) => line.startsWith('| request arrives'));
  assert.ok(start >= 0, "README has no 'request arrives' table");
  const rows: string[] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(line.split(' | ')[0]!.replace(/^\| /, '').trim());
  }
  return rows;
}

describe("README's request table", () => {
  it('every row names tests that exist', async () => {
    const rows = await tableRows();
    assert.ok(rows.length >= 10, `${rows.length} rows`);
    for (const row of rows) {
      const tests = CHECKED_BY[row];
      assert.ok(tests && tests.length > 0, `README row "${row}" is checked by no test: add one and name it in CHECKED_BY`);
      for (const [file, title] of tests) {
        const source = await readFile(path.join(ROOT, 'test', file), 'utf8');
        assert.ok(source.includes(title), `${file} has no test "${title}" (README row "${row}")`);
      }
    }
    assert.deepEqual(
      Object.keys(CHECKED_BY).filter((row) => !rows.includes(row)),
      [],
      'rows named here that README no longer has',
    );
  });
});
