/**
 * Items that live where the workers are (`itemsFrom`, `faultline start --items`): an NDJSON file
 * in job storage whose first line is the spec head and every further line one item. Workers
 * validate it in chunks and read each slice by seeking to a byte offset, so no process ever
 * holds every item of a large job.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { type JobSpec, type PipelineRegistry, type SpecIssue, validateJobSpec } from './shared';

export const ITEMS_FILE_SUFFIX = '.items.ndjson';
/** Items validated at a time, by the client streaming a file in and by workers checking it: bounded memory, exact paths. */
export const ITEMS_CHUNK = 10_000;

/** An issue of a chunk with its file-wide path; `index` (within the chunk) lets a reader name the line. */
export type ChunkIssue = SpecIssue & { index?: number };

/**
 * Validates one chunk of an items file against the spec head. Issue paths are file-wide
 * (`items[from + i]`), and ids must be unique across chunks: `seen` carries them from chunk to chunk.
 */
export function checkItemsChunk(head: object, chunk: unknown[], from: number, seen: Set<string>, registry: PipelineRegistry): { ok: true; spec: JobSpec } | { ok: false; issues: ChunkIssue[] } {
  const validation = validateJobSpec({ ...head, items: chunk }, registry);
  if (!validation.ok) {
    return {
      ok: false,
      issues: validation.issues.map((issue) => {
        const at = /^items\[(\d+)\]/.exec(issue.path);
        return at ? { ...issue, path: issue.path.replace(at[0], `items[${from + Number(at[1])}]`), index: Number(at[1]) } : issue;
      }),
    };
  }
  const issues: ChunkIssue[] = [];
  for (const [index, item] of validation.spec.items.entries()) {
    if (seen.has(item.id)) issues.push({ path: `items[${from + index}].id`, code: 'duplicate_id', message: `item id "${item.id}" appears more than once`, index });
    seen.add(item.id);
  }
  return issues.length > 0 ? { ok: false, issues } : { ok: true, spec: validation.spec };
}
/** Byte offsets are kept for every this many items (1,000 offsets for 1M items). */
const INDEX_EVERY = 1_000;

export function isItemsRef(ref: string): boolean {
  return ref.endsWith(ITEMS_FILE_SUFFIX);
}

/** Lines of a local NDJSON file (blank lines skipped), with their 1-based line numbers. */
export async function* ndjsonLines(file: string): AsyncGenerator<{ line: string; number: number }> {
  // Opened first: readline does not pass on the errors of a stream it was given (ENOENT would crash).
  const handle = await open(file, 'r');
  try {
    let number = 0;
    for await (const line of handle.readLines()) {
      number += 1;
      if (line.trim() !== '') yield { line, number };
    }
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Writes head + items into job storage (temp + rename) and returns its reference, the item count
 * and the sha256 of the items (for idempotency). `items` yields one JSON text per item.
 */
export async function writeItemsFile(storageRoot: string, head: unknown, items: AsyncIterable<string>): Promise<{ ref: string; itemCount: number; sha256: string }> {
  const dir = path.join(path.resolve(storageRoot), 'specs');
  await mkdir(dir, { recursive: true });
  const temp = path.join(dir, `.partial-${process.pid}-${randomBytes(6).toString('hex')}`);
  const out = createWriteStream(temp, { flags: 'wx' });
  const hash = createHash('sha256');
  let itemCount = 0;
  const write = async (text: string) => {
    if (!out.write(`${text}\n`)) await once(out, 'drain');
  };
  try {
    await write(JSON.stringify({ head }));
    for await (const item of items) {
      hash.update(item).update('\n');
      itemCount += 1;
      await write(item);
    }
    await new Promise<void>((resolve, reject) => out.end((error?: Error | null) => (error ? reject(error) : resolve())));
    const sha256 = hash.digest('hex');
    const target = path.join(dir, `${createHash('sha256').update(JSON.stringify(head)).update(sha256).digest('hex')}${ITEMS_FILE_SUFFIX}`);
    await rename(temp, target);
    return { ref: pathToFileURL(target).toString(), itemCount, sha256 };
  } catch (error) {
    out.destroy();
    await rm(temp, { force: true });
    throw error;
  }
}

/** Reads an items file: its head, and items by index range through a sparse offset index built once per file and process. */
export class ItemsFileReader {
  private readonly indexes = new Map<string, Promise<{ head: unknown; offsets: number[]; count: number }>>();

  constructor(private readonly storageRoot: string) {}

  private file(ref: string): string {
    const file = fileURLToPath(ref);
    if (!path.resolve(file).startsWith(path.resolve(this.storageRoot) + path.sep)) throw new Error(`items reference ${ref} is outside job storage`);
    return file;
  }

  /** One pass over the file: the head, and the byte offset of every INDEX_EVERY-th item. */
  index(ref: string): Promise<{ head: unknown; offsets: number[]; count: number }> {
    let index = this.indexes.get(ref);
    if (!index) {
      index = this.buildIndex(this.file(ref));
      if (this.indexes.size > 16) this.indexes.clear();
      this.indexes.set(ref, index);
      index.catch(() => this.indexes.delete(ref));
    }
    return index;
  }

  private async buildIndex(file: string): Promise<{ head: unknown; offsets: number[]; count: number }> {
    const offsets: number[] = [];
    let head: unknown;
    let position = 0;
    let count = -1; // the head line is not an item
    let pending = Buffer.alloc(0);
    for await (const chunk of createReadStream(file)) {
      let buffer = Buffer.concat([pending, chunk as Buffer]);
      let newline: number;
      while ((newline = buffer.indexOf(10)) !== -1) {
        if (count === -1) head = (JSON.parse(buffer.subarray(0, newline).toString('utf8')) as { head: unknown }).head;
        else if (count % INDEX_EVERY === 0) offsets.push(position);
        count += 1;
        position += newline + 1;
        buffer = buffer.subarray(newline + 1);
      }
      pending = buffer;
    }
    return { head, offsets, count: Math.max(0, count) };
  }

  async head(ref: string): Promise<unknown> {
    return (await this.index(ref)).head;
  }

  /** Items [from, to) as parsed JSON (a line that is not JSON comes back as a string, for the validator to name). */
  async read(ref: string, from: number, to: number): Promise<unknown[]> {
    const { offsets, count } = await this.index(ref);
    const end = Math.min(to, count);
    if (from >= end) return [];
    const block = Math.floor(from / INDEX_EVERY);
    const lines = createInterface({ input: createReadStream(this.file(ref), { start: offsets[block] ?? 0 }), crlfDelay: Infinity });
    const items: unknown[] = [];
    let index = block * INDEX_EVERY;
    for await (const line of lines) {
      if (index >= end) break;
      if (index >= from) {
        try {
          items.push(JSON.parse(line));
        } catch {
          items.push(line);
        }
      }
      index += 1;
    }
    lines.close();
    return items;
  }
}
