/**
 * Job storage (FAULTLINE_STORAGE), shared by clients and workers: a folder (default
 * `.faultline`), or `s3://bucket/prefix` in an S3-compatible store. Holds specs too large for a
 * payload, items files, per-slice records, manifests and working copies. Every object is written
 * whole, so a reader never sees half of one and a retried write never duplicates.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { FileStore, type ObjectStore, StorageRefOutside } from './object-store';
import { PERMANENT_S3_ERRORS, S3Store, type S3Options } from './s3';

export { PathMismatch, directoryBytes, verifyDescriptorWithin, writeFileAtomic } from './atomic';
export { StorageRefOutside } from './object-store';
export type { S3Options } from './s3';

/** Where job storage is: a folder, or a bucket and key prefix. */
export type StorageLocation = { kind: 'file'; root: string } | { kind: 's3'; bucket: string; prefix: string };

/** `s3://bucket[/prefix]`, or a folder path (relative to `cwd`). Throws a one-line error for a malformed s3 URI. */
export function parseStorageLocation(value: string, cwd = process.cwd()): StorageLocation {
  if (!/^s3:/i.test(value)) return { kind: 'file', root: path.resolve(cwd, value.startsWith('file://') ? fileURLToPath(value) : value) };
  const match = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(value);
  if (!match) throw new Error(`"${value}" is not s3://bucket/prefix (bucket: 3-63 lowercase letters, digits, dots, hyphens)`);
  const prefix = (match[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((segment) => segment === '.' || segment === '..')) throw new Error(`"${value}": the prefix may not contain . or .. segments`);
  return { kind: 's3', bucket: match[1]!, prefix: prefix ? `${prefix}/` : '' };
}

/** A folder for local state (the dev server's database, a generated key): job storage when it is a folder, else `.faultline`. */
export function localStateDir(storage: string, cwd = process.cwd()): string {
  const location = parseStorageLocation(storage, cwd);
  return location.kind === 'file' ? location.root : path.resolve(cwd, '.faultline');
}

/** A file an item's step kept in the job's working storage (`ctx.storage.put`). */
export interface WorkFile {
  name: string;
  bytes: number;
  sha256: string;
}

export interface Storage {
  /** The storage as users name it (a folder, or s3://bucket/prefix). */
  display: string;
  /** The folder, when storage is local: specs may never read or write in it. */
  localRoot: string | undefined;
  /**
   * A whole spec stored by reference: how clients before f67bd0f passed large specs (now they
   * write an items file). Kept so jobs started that way finish; tests write such specs with it.
   */
  putSpec(specJson: string): Promise<string>;
  readSpec(ref: string): Promise<unknown>;
  /** Where a client's items file named `name` goes (`specs/`). */
  itemsFileUri(name: string): string;
  /** Where a job's items imported from `itemsFrom` (s3://, https://) live: one file per job, written once. */
  jobItemsUri(jobId: string): string;
  /** Streams lines into a stored object (written whole, or not at all). */
  writeStream(uri: string, lines: AsyncIterable<string>): Promise<void>;
  exists(uri: string): Promise<boolean>;
  /** Whether `uri` names Faultline's own data in this storage (jobs' records, specs, probes), which no spec may read. */
  holdsJobData(uri: string): boolean;
  /** Removes an object written by this storage (an items file a repeated start did not need). */
  removeRef(uri: string): Promise<void>;
  /** Bytes of a stored object from `start` on. */
  openAt(uri: string, start: number): Promise<Readable>;
  writeRecordsPart(jobId: string, part: string, lines: readonly unknown[]): Promise<string>;
  /** The full form of an error report whose payload copy was cut to its budget. */
  writeErrorReport(jobId: string, name: string, report: unknown): Promise<string>;
  /** An item's step checkpoints (finished steps' values, attempts), or undefined. */
  readCheckpoint(jobId: string, item: string): Promise<unknown>;
  writeCheckpoint(jobId: string, item: string, checkpoint: unknown): Promise<void>;
  /** Marks `name` as started for this job; false if it was marked before (a run that began and was lost). */
  markStarted(jobId: string, name: string): Promise<boolean>;
  /** `eachLine`: told every line written, in order (a caller tallies what it wrote without reading it back). */
  assembleManifest(jobId: string, round: number, parts: readonly string[], eachLine?: (line: string) => void): Promise<string>;
  joinParts(jobId: string, part: string, parts: readonly string[]): Promise<string>;
  /** Where a slice's records of one round live (the newest round ≤ N is the slice's current state). */
  sliceRecordsUri(jobId: string, sliceIndex: number, round: number): string;
  writeLines(uri: string, lines: readonly unknown[]): Promise<string>;
  /** `eachLine`: as for `assembleManifest`. */
  concatenateInto(uri: string, parts: readonly string[], eachLine?: (line: string) => void): Promise<string>;
  /** Each NDJSON line parsed; with `contains`, only lines holding that text are parsed (a fast, safe superset for a filter). */
  readLines<T>(uri: string, contains?: string): AsyncIterable<T>;
  /** For each slice index, the newest round ≤ `round` that has records. */
  latestSliceRounds(jobId: string, round: number): Promise<Map<number, number>>;
  /** A file an item's step kept for its later steps, attempts and rounds; undefined if absent or (given `sha256`) not those bytes. */
  readWorkFile(jobId: string, item: string, name: string, sha256?: string): Promise<Buffer | undefined>;
  writeWorkFile(jobId: string, item: string, name: string, data: Buffer): Promise<WorkFile>;
  /** Drops every working file of one item (it is final). */
  dropWorkFiles(jobId: string, item: string): Promise<void>;
  /** At a job's close: its working copies go; says what is released and what the job keeps. */
  releaseWorkingCopies(jobId: string): Promise<{ releasedBytes: number; keptBytes: number }>;
  /** Every job with storage: its id (as stored), bytes and newest write. */
  jobs(): AsyncIterable<{ jobId: string; bytes: number; modifiedMs: number }>;
  removeJob(jobId: string): Promise<void>;
  /**
   * Proves the storage works: writes, reads back and removes a probe object. `create` first
   * creates a missing bucket. Throws StorageUnusable naming the storage and the cause.
   */
  check(options?: { create?: boolean }): Promise<{ createdBucket: boolean }>;
}

/** Job storage cannot be used (unreachable, no such bucket, no permission); the cause says why. */
export class StorageUnusable extends Error {
  constructor(
    readonly storage: string,
    cause: unknown,
  ) {
    const reason = (cause as { name?: string; code?: string }).code ?? (cause as { name?: string }).name ?? 'Error';
    super(`job storage ${storage} is not usable (${reason}: ${(cause as Error).message ?? String(cause)})`, { cause });
    this.name = 'StorageUnusable';
    this.lasting = permanentStorageError(cause) !== undefined;
  }
  /** No retry can fix it (no such bucket, no permission, read-only); else it may answer later (unreachable, restarting). */
  readonly lasting: boolean;
}

export function safeSegment(value: string): string {
  return value.replace(/[^A-Za-z0-9._-]/g, '_');
}

export function createStorage(storage: string, s3: S3Options = {}): Storage {
  const location = parseStorageLocation(storage);
  const store: ObjectStore = location.kind === 'file' ? new FileStore(location.root) : new S3Store(location.bucket, location.prefix, s3);
  return storageOn(store, location.kind === 'file' ? location.root : undefined);
}

/** How every items file's name ends (`isItemsRef` in items-file.ts tells them from specs by it). */
export const ITEMS_FILE_SUFFIX = '.items.ndjson';

/** Parts read at once while concatenating: each is held whole, so at most this many parts' bytes (plus one chunk) are in memory. */
const PARTS_READ_AHEAD = 4;
const CONCAT_CHUNK_BYTES = 1 << 20;

/**
 * Splits NDJSON bytes into their non-empty lines, chunk by chunk (a line, or a character, may span
 * chunks). Split by hand: readline's async iterator costs more per line than parsing it (a
 * 100,000-record manifest: 3 s vs 1 s).
 */
function lineSplitter(): { lines(chunk: Buffer): string[]; end(): string[] } {
  const decoder = new StringDecoder('utf8');
  let rest = '';
  const nonEmpty = (line: string) => line.trim() !== '';
  return {
    lines(chunk) {
      const lines = (rest + decoder.write(chunk)).split('\n');
      rest = lines.pop() ?? '';
      return lines.filter(nonEmpty);
    },
    end() {
      const last = rest + decoder.end();
      rest = '';
      return nonEmpty(last) ? [last] : [];
    },
  };
}

/** Passes the chunks on, telling `eachLine` every non-empty line in them. */
async function* tapLines(chunks: AsyncIterable<Buffer>, eachLine: (line: string) => void): AsyncGenerator<Buffer> {
  const splitter = lineSplitter();
  for await (const chunk of chunks) {
    for (const line of splitter.lines(chunk)) eachLine(line);
    yield chunk;
  }
  for (const line of splitter.end()) eachLine(line);
}

const ndjson = (lines: readonly unknown[]) => lines.map((line) => JSON.stringify(line)).join('\n') + (lines.length > 0 ? '\n' : '');

function storageOn(store: ObjectStore, localRoot: string | undefined): Storage {
  const jobKey = (jobId: string) => `jobs/${safeSegment(jobId)}/`;
  const workKey = (jobId: string, item: string) => `${jobKey(jobId)}work/${safeSegment(item)}/`;
  const bytesBelow = async (folder: string) => {
    let total = 0;
    for await (const object of store.list(folder)) total += object.size;
    return total;
  };
  /** A whole part; a missing one fails as reading it would (the store's own error). */
  const readPart = async (part: string): Promise<Buffer> => {
    const key = store.keyOf(part);
    const data = await store.get(key);
    if (data !== undefined) return data;
    const chunks: Buffer[] = [];
    for await (const chunk of await store.stream(key)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  };
  /**
   * The parts in order, read a few ahead: each part costs several round trips to the file system
   * or S3, and a slice has dozens of batch parts (27 parts read one after another took 10–48 ms of
   * a 5,000-item job's last 150 ms). Written on in chunks of about `CONCAT_CHUNK_BYTES`.
   */
  async function* concatenated(parts: readonly string[]): AsyncGenerator<Buffer> {
    const ahead: Promise<Buffer>[] = [];
    let next = 0;
    const readAhead = () => {
      while (next < parts.length && ahead.length < PARTS_READ_AHEAD) {
        const reading = readPart(parts[next++] ?? '');
        // Awaited in turn below; a part that fails while an earlier one is awaited is not an unhandled rejection meanwhile.
        reading.catch(() => undefined);
        ahead.push(reading);
      }
    };
    readAhead();
    let held: Buffer[] = [];
    let heldBytes = 0;
    for (let reading = ahead.shift(); reading; reading = ahead.shift()) {
      const data = await reading;
      readAhead();
      held.push(data);
      heldBytes += data.length;
      if (heldBytes >= CONCAT_CHUNK_BYTES) {
        yield Buffer.concat(held);
        held = [];
        heldBytes = 0;
      }
    }
    if (heldBytes > 0) yield Buffer.concat(held);
  }
  const concatenate = async (key: string, parts: readonly string[], eachLine?: (line: string) => void) => {
    await store.putStream(key, eachLine ? tapLines(concatenated(parts), eachLine) : concatenated(parts));
    return store.uri(key);
  };

  return {
    display: store.display,
    localRoot,
    async putSpec(specJson) {
      const key = `specs/${createHash('sha256').update(specJson).digest('hex')}.json`;
      await store.put(key, specJson);
      return store.uri(key);
    },
    async readSpec(ref) {
      const data = await store.get(store.keyOf(ref));
      if (data === undefined) throw new Error(`spec ${ref} is not in job storage ${store.display}`);
      return JSON.parse(data.toString('utf8')) as unknown;
    },
    itemsFileUri: (name) => store.uri(`specs/${safeSegment(name)}`),
    jobItemsUri: (jobId) => store.uri(`${jobKey(jobId)}items${ITEMS_FILE_SUFFIX}`),
    writeStream: (uri, lines) => store.putStream(store.keyOf(uri), lines),
    exists: (uri) => store.exists(store.keyOf(uri)),
    holdsJobData(uri) {
      let key: string;
      try {
        key = store.keyOf(uri);
      } catch {
        return false; // elsewhere
      }
      return /^(jobs|specs|probes)\//.test(key);
    },
    removeRef: (uri) => store.remove(store.keyOf(uri)),
    openAt: (uri, start) => store.stream(store.keyOf(uri), start),
    async writeRecordsPart(jobId, part, lines) {
      const key = `${jobKey(jobId)}parts/${safeSegment(part)}.ndjson`;
      await store.put(key, ndjson(lines));
      return store.uri(key);
    },
    async writeErrorReport(jobId, name, report) {
      const key = `${jobKey(jobId)}errors/${safeSegment(name)}.json`;
      await store.put(key, JSON.stringify(report));
      return store.uri(key);
    },
    async readCheckpoint(jobId, item) {
      const data = await store.get(`${jobKey(jobId)}checkpoints/${safeSegment(item)}.json`).catch(() => undefined);
      return data ? (JSON.parse(data.toString('utf8')) as unknown) : undefined;
    },
    async writeCheckpoint(jobId, item, checkpoint) {
      await store.put(`${jobKey(jobId)}checkpoints/${safeSegment(item)}.json`, JSON.stringify(checkpoint));
    },
    async markStarted(jobId, name) {
      const key = `${jobKey(jobId)}started/${safeSegment(name)}`;
      if (await store.exists(key)) return false;
      await store.put(key, new Date().toISOString());
      return true;
    },
    assembleManifest: (jobId, round, parts, eachLine) => concatenate(`${jobKey(jobId)}manifest-round-${round}.ndjson`, parts, eachLine),
    joinParts: (jobId, part, parts) => concatenate(`${jobKey(jobId)}parts/${safeSegment(part)}.ndjson`, parts),
    sliceRecordsUri: (jobId, sliceIndex, round) => store.uri(`${jobKey(jobId)}slices/slice-${sliceIndex}.r${round}.ndjson`),
    async writeLines(uri, lines) {
      await store.put(store.keyOf(uri), ndjson(lines));
      return uri;
    },
    concatenateInto: (uri, parts, eachLine) => concatenate(store.keyOf(uri), parts, eachLine),
    async *readLines<T>(uri: string, contains?: string): AsyncIterable<T> {
      const splitter = lineSplitter();
      const wanted = (line: string) => contains === undefined || line.includes(contains);
      for await (const chunk of await store.stream(store.keyOf(uri))) {
        for (const line of splitter.lines(chunk as Buffer)) if (wanted(line)) yield JSON.parse(line) as T;
      }
      for (const line of splitter.end()) if (wanted(line)) yield JSON.parse(line) as T;
    },
    async latestSliceRounds(jobId, round) {
      const latest = new Map<number, number>();
      for await (const object of store.list(`${jobKey(jobId)}slices/`)) {
        const match = /\/slice-(\d+)\.r(\d+)\.ndjson$/.exec(object.key);
        if (!match) continue;
        const index = Number(match[1]);
        const partRound = Number(match[2]);
        if (partRound <= round && partRound > (latest.get(index) ?? 0)) latest.set(index, partRound);
      }
      return latest;
    },
    async readWorkFile(jobId, item, name, sha256) {
      const data = await store.get(`${workKey(jobId, item)}${safeSegment(name)}`).catch(() => undefined);
      if (!data) return undefined;
      if (sha256 !== undefined && createHash('sha256').update(data).digest('hex') !== sha256) return undefined;
      return data;
    },
    async writeWorkFile(jobId, item, name, data) {
      await store.put(`${workKey(jobId, item)}${safeSegment(name)}`, data);
      return { name, bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') };
    },
    dropWorkFiles: (jobId, item) => store.remove(workKey(jobId, item)),
    async releaseWorkingCopies(jobId) {
      const work = `${jobKey(jobId)}work/`;
      const releasedBytes = await bytesBelow(work);
      await store.remove(work);
      return { releasedBytes, keptBytes: await bytesBelow(jobKey(jobId)) };
    },
    async *jobs() {
      for (const jobId of (await store.folders('jobs/')).sort()) {
        let bytes = 0;
        let modifiedMs = 0;
        for await (const object of store.list(`jobs/${jobId}/`)) {
          bytes += object.size;
          modifiedMs = Math.max(modifiedMs, object.modifiedMs);
        }
        yield { jobId, bytes, modifiedMs };
      }
    },
    removeJob: (jobId) => store.remove(jobKey(jobId)),
    async check(options = {}) {
      try {
        const createdBucket = options.create && store instanceof S3Store ? await store.createBucket() : false;
        const key = `probes/${process.pid}-${Date.now()}`;
        await store.put(key, 'faultline');
        if ((await store.get(key))?.toString() !== 'faultline') throw new Error('a probe object read back differently');
        await store.remove(key);
        return { createdBucket };
      } catch (error) {
        throw new StorageUnusable(store.display, error);
      }
    },
  };
}

const PERMANENT_FS_ERRORS = new Set(['EACCES', 'EPERM', 'ENOTDIR', 'EROFS', 'EISDIR', 'EEXIST']);

/** The code of a storage error no retry can fix (a file system's errno, or S3's error name), else undefined. */
export function permanentStorageError(error: unknown): string | undefined {
  if (error instanceof StorageRefOutside) return error.code;
  const code = (error as NodeJS.ErrnoException).code;
  if (code && PERMANENT_FS_ERRORS.has(code)) return code;
  const name = (error as { name?: string }).name;
  if (name && PERMANENT_S3_ERRORS.has(name)) return name;
  return undefined;
}
