/**
 * The archive activity: a job's manifest is streamed from job storage (not read from a local path),
 * the summary it returns stays small whatever vanished (exact count, first names), and the archive
 * holds the files that exist.
 */
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { MockActivityEnvironment } from '@temporalio/testing';
import { type ArchiveSummary, createArchiveActivities } from '../../src/activities/archive';
import { createLogger } from '../../src/logger';
import type { OutputRecord } from '../../src/shared';
import { createStorage } from '../../src/storage';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-archive-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('archive activity', () => {
  it('streams the manifest from job storage and caps the list of missing files in its summary', async () => {
    const storage = createStorage(path.join(dir, 'storage'));
    const out = path.join(dir, 'out');
    await mkdir(out, { recursive: true });
    const records: OutputRecord[] = [];
    for (let i = 0; i < 2; i++) {
      const file = path.join(out, `kept-${i}.txt`);
      await writeFile(file, `file ${i}`);
      records.push({ item: `kept-${i}`, output: 'result', status: 'Available', location: pathToFileURL(file).toString() });
    }
    for (let i = 0; i < 250; i++) records.push({ item: `gone-${i}`, output: 'result', status: 'Available', location: pathToFileURL(path.join(out, `gone-${i}.txt`)).toString() });
    records.push({ item: 'failed', output: 'result', status: 'Failed' });
    const part = await storage.writeRecordsPart('job-a', 'all', records);
    const manifest = await storage.assembleManifest('job-a', 1, [part]);
    const activities = createArchiveActivities({ allowedRoots: [dir], logger: createLogger({ level: 'error', format: 'json' }), storage });
    const summary: ArchiveSummary = await new MockActivityEnvironment().run(activities.packArchive, { jobId: 'job-a', round: 1, destination: pathToFileURL(out).toString(), manifest });
    assert.equal(summary.files, 2);
    assert.equal(summary.missing, 250, 'the count is exact');
    assert.equal(summary.missingFiles.length, 100, 'the list is capped');
    assert.ok(summary.location);
    assert.ok((await stat(new URL(summary.location))).size > 0);
  });
});
