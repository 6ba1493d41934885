import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { workflowBundle } from '../helpers/env';

const DIR = path.resolve(__dirname, '..', 'histories');

describe('replay: recorded histories still replay against the current workflow code', () => {
  it('replays every committed history without nondeterminism', async () => {
    const files = readdirSync(DIR).filter((file) => file.endsWith('.json'));
    assert.ok(files.length >= 5, 'histories are committed');
    const histories = files.map((file) => ({
      workflowId: file.replace(/\.json$/, '').replace('__', '/'), // '/' cannot be in a file name
      history: temporal.api.history.v1.History.fromObject(JSON.parse(readFileSync(path.join(DIR, file), 'utf8')) as Record<string, unknown>),
    }));
    const results = [];
    for await (const result of Worker.runReplayHistories({ workflowBundle: await workflowBundle(), replayName: 'faultline-replay' }, histories)) {
      results.push(result);
    }
    const failures = results.filter((result) => result.error).map((result) => `${result.workflowId}: ${String(result.error)}`);
    assert.deepEqual(failures, []);
    assert.equal(results.length, files.length);
  });
});
