/**
 * Items that live where the workers are (`itemsFrom`, `faultline start --items`): an NDJSON file
 * in job storage whose first line is the spec head and every further line one item. Workers
 * validate it in chunks and read each slice by seeking to a byte offset, so no process ever
 * holds every item of a large job.
 */
import { createHash, randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { ITEMS_FILE_SUFFIX, type Storage } from './storage';
import { type JobSpec, type PipelineRegistry, type SpecIssue, normalizeSpec, validateJobSpec } from './shared';
import { CompactIdSet } from './compact-id-set';

export { ITEMS_FILE_SUFFIX } from './storage';
/** Items validated at a time, by the client streaming a file in and by workers checking it: bounded memory, exact paths. */
export const ITEMS_CHUNK = 10_000;

/** An issue of a chunk with its file-wide path; `index` (within the chunk) lets a reader name the line. */
export type ChunkIssue = SpecIssue & { index?: number };

/**
 * Validates one chunk of an items file against the spec head. Issue paths are file-wide
 * (`items[from + i]`), and ids must be unique across chunks: `seen` carries them from chunk to chunk.
 */
export function checkItemsChunk(
  head: object,
  chunk: unknown[],
  from: number,
  seen: { addNew(id: string): boolean },
  registry: PipelineRegistry,
): { ok: true; spec: JobSpec } | { ok: false; issues: ChunkIssue[] } {
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
  const { items } = validation.spec;
  for (let index = 0; index < items.length; index++) {
    const id = items[index]?.id ?? '';
    if (!seen.addNew(id)) issues.push({ path: `items[${from + index}].id`, code: 'duplicate_id', message: `item id "${id}" appears more than once`, index });
  }
  return issues.length > 0 ? { ok: false, issues } : { ok: true, spec: validation.spec };
}
/** Byte offsets are kept for every this many items (1,000 offsets for 1M items). */
const INDEX_EVERY = 1_000;

export function isItemsRef(ref: string): boolean {
  return ref.endsWith(ITEMS_FILE_SUFFIX);
}

/** Non-blank lines of an NDJSON stream, with their 1-based line numbers. */
export async function* numberedLines(input: Readable): AsyncGenerator<{ line: string; number: number }> {
  let number = 0;
  for await (const line of createInterface({ input, crlfDelay: Infinity })) {
    number += 1;
    if (line.trim() !== '') yield { line, number };
  }
}

/** Non-blank lines of a local NDJSON file, with their 1-based line numbers. */
export async function* ndjsonLines(file: string): AsyncGenerator<{ line: string; number: number }> {
  // Opened first: readline does not pass on the errors of a stream it was given (ENOENT would crash).
  const handle = await open(file, 'r');
  try {
    yield* numberedLines(handle.createReadStream());
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** Why an NDJSON items source was refused: the issues of its first bad chunk, a line that is not JSON, or no items. */
export class InvalidItems extends Error {
  constructor(readonly issues: SpecIssue[]) {
    super(`${issues.length} issue(s) in the items`);
    this.name = 'InvalidItems';
  }
}

/**
 * Validates NDJSON lines against the spec head in chunks of ITEMS_CHUNK and yields each chunk's
 * items, normalized, as JSON texts — what the client streaming a local file and a worker reading
 * an s3:// or https:// source both store (a chunk at a time: a million per-item hops cost seconds). It ends with InvalidItems at the first line that is not
 * JSON, at the first chunk with issues (file-wide paths, messages naming their lines), or when
 * there are no items (`source` names the input in that message).
 */
export async function* checkedItemLines(head: object, lines: AsyncIterable<{ line: string; number: number }>, registry: PipelineRegistry, source: string): AsyncGenerator<string[]> {
  const seen = new CompactIdSet();
  let chunk: { item: unknown; number: number }[] = [];
  let count = 0;
  const flush = function* (): Generator<string[]> {
    const checked = checkItemsChunk(
      head,
      chunk.map((entry) => entry.item),
      count - chunk.length,
      seen,
      registry,
    );
    if (!checked.ok) {
      throw new InvalidItems(
        checked.issues.map(({ index, ...found }) => {
          const line = index === undefined ? undefined : chunk[index]?.number;
          return line === undefined ? found : { ...found, message: `${found.message} (line ${line})` };
        }),
      );
    }
    chunk = [];
    yield normalizeSpec(checked.spec).items.map((item) => JSON.stringify(item));
  };
  for await (const { line, number } of lines) {
    let item: unknown;
    try {
      item = JSON.parse(line);
    } catch (error) {
      throw new InvalidItems([{ path: `items[${count}]`, code: 'invalid_json', message: `line ${number} is not JSON: ${(error as Error).message}` }]);
    }
    chunk.push({ item, number });
    count += 1;
    if (chunk.length >= ITEMS_CHUNK) yield* flush();
  }
  if (chunk.length > 0) yield* flush();
  if (count === 0) throw new InvalidItems([{ path: 'itemsFrom', code: 'empty', message: `${source} has no items` }]);
}

/**
 * Writes head + items into job storage — at `uri`, or a new file under `specs/` — and returns its
 * reference, the item count and the sha256 of the items (for idempotency). `items` yields JSON
 * texts, one item each or a batch of them. Written whole or not at all; when `items` fails, its
 * own error is thrown, however the store wrapped it.
 */
export async function writeItemsFile(storage: Storage, head: unknown, items: AsyncIterable<string | readonly string[]>, uri?: string): Promise<{ ref: string; itemCount: number; sha256: string }> {
  const hash = createHash('sha256');
  let itemCount = 0;
  // A new file's name must be known before the upload starts, so it hashes the head and a random
  // part; the content hash goes into the job's idempotency hash instead.
  const ref = uri ?? storage.itemsFileUri(`${createHash('sha256').update(JSON.stringify(head)).update(randomBytes(16)).digest('hex')}${ITEMS_FILE_SUFFIX}`);
  let itemsFailed: { error: unknown } | undefined;
  async function* lines(): AsyncGenerator<string> {
    yield `${JSON.stringify({ head })}\n`;
    try {
      for await (const entry of items) {
        const batch = typeof entry === 'string' ? [entry] : entry;
        const text = batch.map((item) => `${item}\n`).join('');
        hash.update(text);
        itemCount += batch.length;
        yield text;
      }
    } catch (error) {
      itemsFailed = { error };
      throw error;
    }
  }
  try {
    await storage.writeStream(ref, lines());
  } catch (error) {
    throw itemsFailed ? itemsFailed.error : error;
  }
  return { ref, itemCount, sha256: hash.digest('hex') };
}

/** Reads an items file: its head, and items by index range through a sparse offset index built once per file and process. */
export class ItemsFileReader {
  private readonly indexes = new Map<string, Promise<{ head: unknown; offsets: number[]; count: number }>>();

  constructor(private readonly storage: Storage) {}

  /** One pass over the file: the head, and the byte offset of every INDEX_EVERY-th item. */
  index(ref: string): Promise<{ head: unknown; offsets: number[]; count: number }> {
    let index = this.indexes.get(ref);
    if (!index) {
      index = this.buildIndex(ref);
      if (this.indexes.size > 16) this.indexes.clear();
      this.indexes.set(ref, index);
      index.catch(() => this.indexes.delete(ref));
    }
    return index;
  }

  private async buildIndex(ref: string): Promise<{ head: unknown; offsets: number[]; count: number }> {
    const offsets: number[] = [];
    let head: unknown;
    let position = 0;
    let count = -1; // the head line is not an item
    let pending = Buffer.alloc(0);
    for await (const chunk of await this.storage.openAt(ref, 0)) {
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
    const input = await this.storage.openAt(ref, offsets[block] ?? 0);
    const lines = createInterface({ input, crlfDelay: Infinity });
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
    input.destroy();
    return items;
  }
}
