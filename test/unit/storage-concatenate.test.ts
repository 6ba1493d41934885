/**
 * Joining record parts (a slice's batch parts, a round's slices): parts are read a few ahead but
 * written in their order, a caller is told every line it wrote (so it tallies without reading the
 * file back), and a missing part fails the join as reading it would, leaving no file and no
 * unhandled rejection behind.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { OutputRecord } from '../../src/shared';
import { createStorage } from '../../src/storage';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-concat-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const recordsOf = (part: number, count: number): OutputRecord[] =>
  Array.from({ length: count }, (_, index) => ({ item: `p${part}-i${index}`, output: 'result', status: index % 7 === 0 ? 'Failed' : 'Available' }));

describe('concatenating record parts', () => {
  it('writes parts in their order and tells each line written, across many parts and large ones', async () => {
    const storage = createStorage(path.join(dir, 'ordered'));
    // Sizes vary so parts finish reading out of order; one part is above the 1 MB write chunk.
    const sizes = [3, 0, 250, 1, 9000, 40, 2, 700, 5, 60, 1, 33];
    const parts: string[] = [];
    for (const [index, size] of sizes.entries()) parts.push(await storage.writeRecordsPart('job-c', `part-${index}`, recordsOf(index, size)));
    const told: string[] = [];
    const uri = storage.sliceRecordsUri('job-c', 0, 1);
    await storage.concatenateInto(uri, parts, (line) => told.push(line));
    const expected = sizes.flatMap((size, index) => recordsOf(index, size).map((record) => JSON.stringify(record)));
    const written = (await readFile(fileURLToPath(uri), 'utf8')).split('\n').filter((line) => line !== '');
    assert.equal(written.length, expected.length);
    assert.deepEqual(written, expected, 'the file holds every part, in order');
    assert.deepEqual(told, expected, 'every line written is told, in order');
    const manifestTold: string[] = [];
    const manifest = await storage.assembleManifest('job-c', 1, [uri], (line) => manifestTold.push(line));
    assert.deepEqual(manifestTold, expected);
    assert.equal(await readFile(fileURLToPath(manifest), 'utf8'), await readFile(fileURLToPath(uri), 'utf8'));
  });

  it('fails on a missing part, wherever it is, and leaves no file or temp', async () => {
    const storage = createStorage(path.join(dir, 'missing'));
    const parts: string[] = [];
    for (let index = 0; index < 6; index++) parts.push(await storage.writeRecordsPart('job-m', `part-${index}`, recordsOf(index, 20)));
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      for (const at of [0, 3, 6]) {
        const withMissing = [...parts.slice(0, at), parts[0]!.replace('part-0', 'no-such-part'), ...parts.slice(at)];
        const uri = storage.sliceRecordsUri('job-m', at, 1);
        await assert.rejects(
          storage.concatenateInto(uri, withMissing, () => undefined),
          (error: NodeJS.ErrnoException) => error.code === 'ENOENT',
        );
      }
      // A turn of the event loop for any rejection left unhandled to surface.
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    const slices = await readdir(path.join(dir, 'missing', 'jobs', 'job-m', 'slices')).catch(() => []);
    assert.deepEqual(slices, [], 'no slice file and no temp is left');
  });
});
