/**
 * Job storage: a directory shared by clients and workers (FAULTLINE_STORAGE). Holds specs too
 * large for a payload, per-job manifests and working copies. Writes are temp + rename so a
 * reader never sees half a file and a retried write never duplicates.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { once } from 'node:events';

export interface Storage {
  root: string;
  putSpec(specJson: string): Promise<string>;
  readSpec(ref: string): Promise<unknown>;
  writeRecordsPart(jobId: string, part: string, lines: readonly unknown[]): Promise<string>;
  assembleManifest(jobId: string, round: number, parts: readonly string[]): Promise<string>;
  joinParts(jobId: string, part: string, parts: readonly string[]): Promise<string>;
  jobDir(jobId: string): string;
}

export async function writeFileAtomic(target: string, data: string | Buffer): Promise<void> {
  await mkdir(path.dirname(target), { recursive: true });
  const temp = `${target}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temp, data);
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

function safeSegment(value: string): string {
  return value.replace(/[^A-Za-z0-9._-]/g, '_');
}

export function createStorage(root: string): Storage {
  const absolute = path.resolve(root);
  const jobDir = (jobId: string) => path.join(absolute, 'jobs', safeSegment(jobId));
  return {
    root: absolute,
    jobDir,
    async putSpec(specJson) {
      const hash = createHash('sha256').update(specJson).digest('hex');
      const target = path.join(absolute, 'specs', `${hash}.json`);
      await writeFileAtomic(target, specJson);
      return pathToFileURL(target).toString();
    },
    async readSpec(ref) {
      const file = fileURLToPath(ref);
      if (!path.resolve(file).startsWith(absolute + path.sep)) throw new Error(`spec reference ${ref} is outside job storage ${absolute}`);
      return JSON.parse(await readFile(file, 'utf8')) as unknown;
    },
    async writeRecordsPart(jobId, part, lines) {
      const target = path.join(jobDir(jobId), 'parts', `${safeSegment(part)}.ndjson`);
      await writeFileAtomic(target, lines.map((line) => JSON.stringify(line)).join('\n') + (lines.length > 0 ? '\n' : ''));
      return pathToFileURL(target).toString();
    },
    async assembleManifest(jobId, round, parts) {
      return concatenate(path.join(jobDir(jobId), `manifest-round-${round}.ndjson`), parts);
    },
    async joinParts(jobId, part, parts) {
      return concatenate(path.join(jobDir(jobId), 'parts', `${safeSegment(part)}.ndjson`), parts);
    },
  };
}

/** Concatenates NDJSON parts into `target` (temp + rename); returns its URI. */
async function concatenate(target: string, parts: readonly string[]): Promise<string> {
  await mkdir(path.dirname(target), { recursive: true });
  const temp = `${target}.${randomBytes(6).toString('hex')}.tmp`;
  const out = createWriteStream(temp);
  try {
    for (const part of parts) {
      for await (const chunk of createReadStream(fileURLToPath(part))) {
        if (!out.write(chunk)) await once(out, 'drain');
      }
    }
    await new Promise<void>((resolve, reject) => out.end((error?: Error | null) => (error ? reject(error) : resolve())));
    await rename(temp, target);
  } catch (error) {
    out.destroy();
    await rm(temp, { force: true });
    throw error;
  }
  return pathToFileURL(target).toString();
}
