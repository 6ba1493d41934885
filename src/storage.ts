/**
 * Job storage: a directory shared by clients and workers (FAULTLINE_STORAGE). Holds specs too
 * large for a payload, per-job manifests and working copies. Writes are temp + rename so a
 * reader never sees half a file and a retried write never duplicates.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants, createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, readdir, readlink, realpath, rename, rm, stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import os from 'node:os';
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

/** `within`: a real (symlink-free) directory the written file must end up in; outputs pass their destination so a symlink planted on the way is refused. */
export async function writeFileAtomic(target: string, data: string | Buffer, within?: string): Promise<void> {
  await mkdir(path.dirname(target), { recursive: true });
  // The temp name says which process writes it, so a later write can tell a crashed writer's leftover from a live one's.
  const temp = `${target}.tmp-${HOST}-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    // Created new (never through an existing file or symlink), and checked to be where we meant: a
    // symlinked directory on the way would put it elsewhere.
    const handle = await open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o644);
    try {
      if (within) await verifyDescriptorWithin(handle.fd, temp, within);
      await handle.writeFile(data);
    } finally {
      await handle.close();
    }
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  await sweepStaleTemps(target);
}

/** Thrown when an opened file is not at the path that was checked (a symlink somewhere on the way, or a swap after the check). */
export class PathMismatch extends Error {
  readonly code = 'EFAULTLINEPATH';
  constructor(
    readonly opened: string,
    readonly actual: string,
  ) {
    super(`${opened} resolves to ${actual}: a symlink on the way or a swap after the check`);
    this.name = 'PathMismatch';
  }
}

/** Verifies where an open descriptor really is (Linux /proc; elsewhere the realpath of the path it was opened by). */
export async function verifyDescriptorWithin(fd: number, opened: string, within: string): Promise<void> {
  let actual: string;
  try {
    actual = await readlink(`/proc/self/fd/${fd}`);
  } catch {
    actual = await realpath(opened);
  }
  if (actual !== within && !actual.startsWith(within + path.sep)) throw new PathMismatch(opened, actual);
}

const HOST = os.hostname().replace(/[^A-Za-z0-9]/g, '_');

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Temp files of earlier writes of `target` cut short by a crash (SIGKILL between write and
 * rename): those of this host whose process is gone. Other jobs may write the same target at the
 * same time, and other hosts' writers cannot be checked, so their temps are left alone.
 */
async function sweepStaleTemps(target: string): Promise<void> {
  const prefix = `${path.basename(target)}.tmp-${HOST}-`;
  const entries = await readdir(path.dirname(target)).catch(() => [] as string[]);
  for (const entry of entries) {
    if (!entry.startsWith(prefix)) continue;
    const pid = /^(\d+)-[0-9a-f]{12}$/.exec(entry.slice(prefix.length))?.[1];
    if (pid && Number(pid) !== process.pid && !processAlive(Number(pid))) await rm(path.join(path.dirname(target), entry), { force: true });
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
