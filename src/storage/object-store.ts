/**
 * Where job storage keeps its objects: a local (or shared) folder, or an S3-compatible bucket
 * (./s3.ts). Keys are `/`-separated paths below the store's root; every object is written whole,
 * so a reader never sees part of one.
 */
import { open, readFile, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { writeFileAtomic, writeStreamAtomic } from './atomic';

export interface StoredObject {
  key: string;
  size: number;
  modifiedMs: number;
}

export interface ObjectStore {
  /** The store as users name it: a folder, or s3://bucket/prefix. */
  readonly display: string;
  uri(key: string): string;
  /** The key of a URI in this store; throws StorageRefOutside for any other URI. */
  keyOf(uri: string): string;
  put(key: string, body: string | Buffer): Promise<void>;
  putStream(key: string, body: AsyncIterable<Buffer | string>): Promise<void>;
  /** The object's bytes, or undefined when there is none. */
  get(key: string): Promise<Buffer | undefined>;
  exists(key: string): Promise<boolean>;
  /** The object's bytes from `start` on; rejects when there is none. */
  stream(key: string, start?: number): Promise<Readable>;
  /** Every object below a folder key (ending in `/`). */
  list(folder: string): AsyncIterable<StoredObject>;
  /** Names of the folders directly below a folder key. */
  folders(folder: string): Promise<string[]>;
  /** Removes an object, or everything below a folder key. */
  remove(keyOrFolder: string): Promise<void>;
}

/** A reference that names something outside job storage (another folder, bucket or scheme). */
export class StorageRefOutside extends Error {
  readonly code = 'EFAULTLINEOUTSIDE';
  constructor(
    readonly ref: string,
    readonly store: string,
  ) {
    super(`${ref} is outside job storage ${store}`);
    this.name = 'StorageRefOutside';
  }
}

export class FileStore implements ObjectStore {
  readonly display: string;
  constructor(readonly root: string) {
    this.display = root;
  }

  private file(key: string): string {
    return path.join(this.root, ...key.split('/'));
  }

  uri(key: string): string {
    return pathToFileURL(this.file(key)).toString();
  }

  keyOf(uri: string): string {
    let file: string;
    try {
      file = path.resolve(fileURLToPath(uri));
    } catch {
      throw new StorageRefOutside(uri, this.root);
    }
    if (!file.startsWith(this.root + path.sep)) throw new StorageRefOutside(uri, this.root);
    return file
      .slice(this.root.length + 1)
      .split(path.sep)
      .join('/');
  }

  put(key: string, body: string | Buffer): Promise<void> {
    return writeFileAtomic(this.file(key), body);
  }

  putStream(key: string, body: AsyncIterable<Buffer | string>): Promise<void> {
    return writeStreamAtomic(this.file(key), body);
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.file(key));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await stat(this.file(key)).catch(() => undefined))?.isFile() ?? false;
  }

  async stream(key: string, start = 0): Promise<Readable> {
    // Opened first, so a missing file rejects here rather than inside a consumer's stream.
    const handle = await open(this.file(key), 'r');
    return handle.createReadStream({ start });
  }

  async *list(folder: string): AsyncIterable<StoredObject> {
    const dir = this.file(folder);
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true, recursive: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const entry of entries) {
      if (!entry.isFile()) continue;
      const full = path.join(entry.parentPath, entry.name);
      const info = await stat(full).catch(() => undefined);
      if (info) yield { key: folder + path.relative(dir, full).split(path.sep).join('/'), size: info.size, modifiedMs: info.mtimeMs };
    }
  }

  async folders(folder: string): Promise<string[]> {
    try {
      return (await readdir(this.file(folder), { withFileTypes: true })).filter((entry) => entry.isDirectory()).map((entry) => entry.name);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
  }

  async remove(folder: string): Promise<void> {
    await rm(this.file(folder), { recursive: true, force: true });
  }
}
