/**
 * `faultline export`: a 100,000-item job's records grouped by status into a folder (NDJSON and
 * CSV), matching `result --outputs` record for record; filters; bad flags exit 2.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { CSV_COLUMNS, type ExportManifest } from '../../src/export';
import type { OutputRecord } from '../../src/shared';
import { type TestEnv, createTestEnv, syntheticSpec, runCli } from '../helpers/env';

let env: TestEnv;
before(async () => {
  env = await createTestEnv({ taskQueue: 'faultline-export' });
  await env.startWorker();
});
after(async () => {
  await env?.teardown();
});

function cli(args: string[]) {
  return runCli(args, { env: env.env, cwd: env.dir, maxBuffer: 256 * 1024 * 1024 });
}

const ITEMS = 100_000;
/** Every 10th item Missing, every 7th (not 10th) Failed, every 13th (neither) Unsolved, the rest Available. */
function outcomeOf(index: number): string | undefined {
  if (index % 10 === 0) return 'missing';
  if (index % 7 === 0) return 'unprocessable';
  if (index % 13 === 0) return 'unsolved';
  return undefined;
}

describe('faultline export', () => {
  let jobId = '';
  before(async () => {
    const items = Array.from({ length: ITEMS }, (_, index) => {
      const outcome = outcomeOf(index);
      return outcome ? { id: `e${index}`, params: { outcome } } : { id: `e${index}` };
    });
    ({ jobId } = await env.client.start(syntheticSpec(items, { toleratedFailurePercent: 100 })));
    const result = await env.client.result(jobId);
    assert.equal(result.counts.outputs, ITEMS);
  });

  it('writes one NDJSON file per status and a manifest that match `result --outputs` exactly', { timeout: 300_000 }, async () => {
    const folder = path.join(env.dir, 'export-ndjson');
    const exported = await cli(['export', jobId, folder, '--json']);
    assert.equal(exported.code, 0, exported.stderr);
    const manifest = JSON.parse(await readFile(path.join(folder, 'manifest.json'), 'utf8')) as ExportManifest;
    assert.deepEqual(JSON.parse(exported.stdout), manifest);
    const result = await env.client.result(jobId);
    assert.deepEqual(manifest.counts, { Available: result.counts.Available, Missing: result.counts.Missing, Failed: result.counts.Failed, Unsolved: result.counts.Unsolved });
    assert.deepEqual((await readdir(folder)).sort(), ['Available.ndjson', 'Failed.ndjson', 'Missing.ndjson', 'Unsolved.ndjson', 'manifest.json']);
    const written: string[] = [];
    for (const file of manifest.files) {
      const bytes = await readFile(path.join(folder, file.file));
      assert.equal(createHash('sha256').update(bytes).digest('hex'), file.sha256, `${file.file}'s sha256`);
      assert.equal(bytes.length, file.bytes);
      const lines = bytes.toString('utf8').trimEnd().split('\n');
      assert.equal(lines.length, file.records);
      assert.ok(
        lines.every((line) => (JSON.parse(line) as OutputRecord).status === file.status),
        `${file.file} holds only ${file.status}`,
      );
      written.push(...lines);
    }
    const outputs = await cli(['result', jobId, '--outputs']);
    assert.equal(outputs.code, 3, outputs.stderr);
    const expected = outputs.stdout.trimEnd().split('\n');
    assert.equal(written.length, ITEMS);
    assert.deepEqual(written.sort(), expected.sort(), 'the same records as result --outputs');
  });

  it('CSV with a fixed header, filtered by status and error type; bad flags exit 2', { timeout: 300_000 }, async () => {
    const folder = path.join(env.dir, 'export-csv');
    const exported = await cli(['export', jobId, folder, '--format', 'csv', '--status', 'Failed,Missing', '--type', 'ItemUnprocessable', '--json']);
    assert.equal(exported.code, 0, exported.stderr);
    const manifest = JSON.parse(exported.stdout) as ExportManifest;
    const failed = (await env.client.result(jobId)).counts.Failed;
    assert.deepEqual(manifest.counts, { Failed: failed }, 'Missing records have no error type');
    const rows = (await readFile(path.join(folder, 'Failed.csv'), 'utf8')).trimEnd().split('\n');
    assert.equal(rows[0], CSV_COLUMNS.join(','));
    assert.equal(rows.length, failed + 1);
    assert.match(rows[1] ?? '', /^e\d+,result,Failed,,,,,ItemUnprocessable,unprocessable,/);
    for (const [args, message] of [
      [['--format', 'xml'], /--format is ndjson or csv/],
      [['--status', 'Broken'], /--status takes Available, Missing, Failed, Unsolved, Skipped, Cancelled; not Broken/],
    ] as const) {
      const bad = await cli(['export', jobId, path.join(env.dir, 'never'), ...args]);
      assert.equal(bad.code, 2, bad.stderr);
      assert.match(bad.stderr, message);
    }
  });

  it('options.export: the job writes its records itself when the round settles; a destination it may not write is an ExportFailed error, the outcome stands', { timeout: 120_000 }, async () => {
    const items = Array.from({ length: 50 }, (_, index) => ({ id: `o${index}`, ...(index % 5 === 0 ? { params: { outcome: 'unprocessable' } } : {}) }));
    const folder = path.join(env.dir, 'export-by-job');
    const { jobId: own } = await env.client.start(syntheticSpec(items, { export: { destination: pathToFileURL(folder).toString(), format: 'csv', statuses: ['Failed'] } }));
    const result = await env.client.result(own);
    assert.equal(result.status, 'PartiallySucceeded');
    assert.deepEqual(result.exported, { destination: folder, counts: { Failed: 10 }, files: 1 });
    assert.equal((await readFile(path.join(folder, 'Failed.csv'), 'utf8')).trimEnd().split('\n').length, 11);
    const manifest = JSON.parse(await readFile(path.join(folder, 'manifest.json'), 'utf8')) as ExportManifest;
    assert.equal(manifest.jobId, own);

    const { jobId: outside } = await env.client.start(syntheticSpec(items, { export: { destination: 'file:///etc/faultline-export' } }));
    const refused = await env.client.result(outside);
    assert.equal(refused.status, 'PartiallySucceeded', 'the export is an extra: the outcome stands');
    assert.equal(refused.exported, undefined);
    const error = refused.errors.find((report) => report.type === 'ExportFailed');
    assert.ok(error, JSON.stringify(refused.errors.map((report) => report.type)));
    assert.match(JSON.stringify(error), /DestinationOutsideAllowedRoots/, 'the cause chain says why');
  });
});
