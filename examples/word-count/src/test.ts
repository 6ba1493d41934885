/** Runs the example against the Temporal server in TEMPORAL_ADDRESS and checks what it promises. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

interface Output {
  item: string;
  status: string;
  value?: unknown;
  reason?: string;
  error?: { type: string; step?: string };
}

test('word-count: statuses, values, step retries without repeats, retry resumes at the failed step', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'word-count-'));
  const log = path.join(dir, 'steps.log');
  const env = { ...process.env, STEP_LOG: log, FAULTLINE_STORAGE: process.env.FAULTLINE_STORAGE ?? path.join(dir, 'storage') };
  const { stdout } = await promisify(execFile)(process.execPath, [path.join(__dirname, 'main.js')], { env, timeout: 120_000 });
  const [first, second] = stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { round: number; status: string; outputs: Output[]; failureCounts?: Record<string, number> });
  assert.ok(first && second);
  const out = (outputs: Output[], item: string) => outputs.find((output) => output.item === item);
  assert.equal(first.status, 'PartiallySucceeded');
  assert.deepEqual(out(first.outputs, 'a')?.value, { n: 3 });
  assert.deepEqual([out(first.outputs, 'empty')?.status, out(first.outputs, 'empty')?.reason], ['Missing', 'no words']);
  assert.deepEqual(out(first.outputs, 'busy')?.value, { n: 2 });
  assert.deepEqual([out(first.outputs, 'bad')?.error?.type, out(first.outputs, 'bad')?.error?.step], ['PoisonWord', 'count']);
  assert.deepEqual(first.failureCounts, { PoisonWord: 1 });
  assert.equal(second.round, 2);
  assert.equal(out(second.outputs, 'bad')?.error?.type, 'PoisonWord');
  const splits = readFileSync(log, 'utf8').trim().split('\n');
  assert.equal(splits.filter((line) => line === 'split busy').length, 1, 'split ran once for an item whose count step failed twice');
  assert.equal(splits.filter((line) => line === 'split bad').length, 1, 'round 2 resumed the failed item at its failed step');
});
