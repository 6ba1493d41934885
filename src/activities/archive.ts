/**
 * Packs a job's Available outputs plus manifest.json into a tar.gz at the destination.
 * Files are hard-linked into a staging folder first, so one that vanishes is counted and
 * reported (not fatal), and nothing can change under the packer.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { copyFile, link, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Context } from '@temporalio/activity';
import type { Logger } from 'pino';
import * as tar from 'tar';
import type { OutputRecord } from '../shared';
import type { Storage } from '../storage';
import { resolveAllowedPath } from './files';

export interface ArchiveInput {
  jobId: string;
  round: number;
  destination: string;
  /** Inline records, or the manifest NDJSON of a large job. */
  outputs?: OutputRecord[];
  manifest?: string;
}

export interface ArchiveSummary {
  location?: string;
  files: number;
  missing: number;
  missingFiles: string[];
  skipped?: string;
}

function safeName(value: string): string {
  return value.replace(/[^A-Za-z0-9._-]/g, '_');
}

async function stageFile(source: string, target: string): Promise<boolean> {
  await mkdir(path.dirname(target), { recursive: true });
  try {
    await link(source, target);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    if (code === 'EXDEV' || code === 'EPERM') {
      return copyFile(source, target).then(
        () => true,
        (copyError: NodeJS.ErrnoException) => (copyError.code === 'ENOENT' ? false : Promise.reject(copyError)),
      );
    }
    throw error;
  }
}

/** Missing files named in an archive summary (the count is always exact). */
const MISSING_LISTED = 100;

export function createArchiveActivities(deps: { allowedRoots: string[]; logger: Logger; storage: Pick<Storage, 'readLines'> }) {
  return {
    async packArchive(input: ArchiveInput): Promise<ArchiveSummary> {
      const dir = await resolveAllowedPath(input.destination, deps.allowedRoots, 'destination', 'archive');
      // The manifest is streamed from job storage (a folder or a bucket), never read whole.
      const records: AsyncIterable<OutputRecord> | OutputRecord[] = input.outputs ?? (input.manifest ? deps.storage.readLines<OutputRecord>(input.manifest) : []);
      const staging = path.join(dir, `.faultline-archive-${safeName(input.jobId)}-${input.round}`);
      const target = path.join(dir, `${safeName(input.jobId)}.tar.gz`);
      // A fresh name created exclusively: never written through a file or symlink someone left there.
      const temp = `${target}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
      const packed: { path: string; item: string; output: string; bytes?: number; sha256?: string }[] = [];
      const missingFiles: string[] = [];
      await rm(staging, { recursive: true, force: true });
      try {
        let index = 0;
        for await (const record of records) {
          if (record.status !== 'Available' || !record.location?.startsWith('file:')) continue;
          if (index++ % 50 === 0) Context.current().heartbeat({ staged: index });
          const source = fileURLToPath(record.location ?? '');
          const relative = path.relative(dir, source);
          const inside = !relative.startsWith('..') && !path.isAbsolute(relative);
          if (inside && (await stageFile(source, path.join(staging, relative)))) {
            packed.push({
              path: relative,
              item: record.item,
              output: record.output,
              ...(record.bytes !== undefined ? { bytes: record.bytes } : {}),
              ...(record.sha256 ? { sha256: record.sha256 } : {}),
            });
          } else {
            missingFiles.push(`${record.item}/${record.output}`);
          }
        }
        if (packed.length === 0) {
          deps.logger.warn({ jobId: input.jobId, missing: missingFiles.length }, 'archive skipped: nothing to pack');
          return { files: 0, missing: missingFiles.length, missingFiles: missingFiles.slice(0, MISSING_LISTED), skipped: 'nothing to pack: no Available output files' };
        }
        await mkdir(staging, { recursive: true });
        await writeFile(path.join(staging, 'manifest.json'), JSON.stringify({ jobId: input.jobId, round: input.round, files: packed, missing: missingFiles }, null, 2));
        // Packing a large job takes longer than the heartbeat timeout: beat by time meanwhile.
        const beating = setInterval(() => Context.current().heartbeat({ packing: packed.length }), 5_000);
        try {
          await pipeline(tar.c({ gzip: true, cwd: staging, portable: true }, ['manifest.json', ...packed.map((entry) => entry.path)]), createWriteStream(temp, { flags: 'wx' }), {
            signal: Context.current().cancellationSignal,
          });
          await rename(temp, target);
        } catch (error) {
          await rm(temp, { force: true });
          throw error;
        } finally {
          clearInterval(beating);
        }
      } finally {
        await rm(staging, { recursive: true, force: true });
        await rm(temp, { force: true });
      }
      if (missingFiles.length > 0) deps.logger.warn({ jobId: input.jobId, missing: missingFiles.length, first: missingFiles.slice(0, 10) }, 'archive: some output files had vanished');
      // The count is exact; the list (in the result, a payload) names the first ones only. The archive's manifest.json lists them all.
      return { location: pathToFileURL(target).toString(), files: packed.length, missing: missingFiles.length, missingFiles: missingFiles.slice(0, MISSING_LISTED) };
    },
  };
}
