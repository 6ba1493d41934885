/**
 * Job storage: a directory shared by clients and workers (FAULTLINE_STORAGE). Holds specs too
 * large for a payload, per-job manifests and working copies. Writes are temp + rename so a
 * reader never sees half a file and a retried write never duplicates.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
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
  /** Where every job's folder lives (`<root>/jobs`). */
  jobsDir: string;
  jobDir(jobId: string): string;
  /** Working copies of a job's sources: the job's, or one item's. */
  workDir(jobId: string, item?: string): string;
  /** Where a slice's records of one round live (the newest round ≤ N is the slice's current state). */
  sliceRecordsUri(jobId: string, sliceIndex: number, round: number): string;
  writeLines(uri: string, lines: readonly unknown[]): Promise<string>;
  concatenateInto(uri: string, parts: readonly string[]): Promise<string>;
  readLines<T>(uri: string): AsyncIterable<T>;
  /** For each slice index, the newest round ≤ `round` that has records. */
  latestSliceRounds(jobId: string, round: number): Promise<Map<number, number>>;
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
  await sweepStaleTemps(target);
}

/** Temp files of earlier writes of `target` cut short by a crash (SIGKILL between write and rename); one writer per target, so any left now are stale. */
async function sweepStaleTemps(target: string): Promise<void> {
  const base = path.basename(target);
  const entries = await readdir(path.dirname(target)).catch(() => [] as string[]);
  for (const entry of entries) {
    if (entry.length === base.length + 17 && entry.startsWith(`${base}.`) && /^\.[0-9a-f]{12}\.tmp$/.test(entry.slice(base.length))) await rm(path.join(path.dirname(target), entry), { force: true });
  }
}

/** Bytes of the files below `dir` (0 when it does not exist). */
export async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw error;
  }
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) total += await directoryBytes(full);
    else if (entry.isFile()) total += (await stat(full)).size;
  }
  return total;
}

export function safeSegment(value: string): string {
  return value.replace(/[^A-Za-z0-9._-]/g, '_');
}

export function createStorage(root: string): Storage {
  const absolute = path.resolve(root);
  const jobsDir = path.join(absolute, 'jobs');
  const jobDir = (jobId: string) => path.join(jobsDir, safeSegment(jobId));
  return {
    root: absolute,
    jobsDir,
    jobDir,
    workDir: (jobId, item) => (item === undefined ? path.join(jobDir(jobId), 'work') : path.join(jobDir(jobId), 'work', safeSegment(item))),
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
    sliceRecordsUri(jobId, sliceIndex, round) {
      return pathToFileURL(path.join(jobDir(jobId), 'slices', `slice-${sliceIndex}.r${round}.ndjson`)).toString();
    },
    async writeLines(uri, lines) {
      await writeFileAtomic(inside(uri), lines.map((line) => JSON.stringify(line)).join('\n') + (lines.length > 0 ? '\n' : ''));
      return uri;
    },
    async concatenateInto(uri, parts) {
      return concatenate(inside(uri), parts);
    },
    async *readLines<T>(uri: string): AsyncIterable<T> {
      const lines = createInterface({ input: createReadStream(inside(uri)), crlfDelay: Infinity });
      for await (const line of lines) if (line.trim()) yield JSON.parse(line) as T;
    },
    async latestSliceRounds(jobId, round) {
      const latest = new Map<number, number>();
      let names: string[];
      try {
        names = await readdir(path.join(jobDir(jobId), 'slices'));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return latest;
        throw error;
      }
      for (const name of names) {
        const match = /^slice-(\d+)\.r(\d+)\.ndjson$/.exec(name);
        if (!match) continue;
        const index = Number(match[1]);
        const partRound = Number(match[2]);
        if (partRound <= round && partRound > (latest.get(index) ?? 0)) latest.set(index, partRound);
      }
      return latest;
    },
  };
  function inside(uri: string): string {
    const file = path.resolve(fileURLToPath(uri));
    if (!file.startsWith(absolute + path.sep)) throw new Error(`${uri} is outside job storage ${absolute}`);
    return file;
  }
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
