/** Local files written so a reader never sees half a file and a crashed writer leaves nothing that lasts. */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, readdir, readlink, realpath, rename, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';

/** `within`: a real (symlink-free) directory the written file must end up in; outputs pass their destination so a symlink planted on the way is refused. */
export async function writeFileAtomic(target: string, data: string | Buffer, within?: string): Promise<void> {
  await mkdir(path.dirname(target), { recursive: true });
  const temp = tempName(target);
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

/** Streams `chunks` into `target` (exclusive temp + rename), so a reader never sees a partial file. */
export async function writeStreamAtomic(target: string, chunks: AsyncIterable<Buffer | string>): Promise<void> {
  await mkdir(path.dirname(target), { recursive: true });
  const temp = tempName(target);
  try {
    const handle = await open(temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o644);
    // The stream owns the handle: it closes it when it finishes or fails.
    await pipeline(Readable.from(chunks), handle.createWriteStream());
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  await sweepStaleTemps(target);
}

/** The temp name says which process writes it, so a later write can tell a crashed writer's leftover from a live one's. */
function tempName(target: string): string {
  return `${target}.tmp-${HOST}-${process.pid}-${randomBytes(6).toString('hex')}`;
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
/** Folders this process has swept already (bounded: cleared when large). */
const swept = new Set<string>();
const SWEPT_REMEMBERED = 10_000;

/**
 * Removes temps of `target` left by dead processes on this host. Once per folder per process:
 * temps are left only by a crash, and listing a folder of thousands of checkpoints on every write
 * made writes cost O(files in the folder).
 */
async function sweepStaleTemps(target: string): Promise<void> {
  const dir = path.dirname(target);
  if (swept.has(dir)) return;
  if (swept.size >= SWEPT_REMEMBERED) swept.clear();
  swept.add(dir);
  const prefix = `.tmp-${HOST}-`;
  const entries = await readdir(dir).catch(() => [] as string[]);
  for (const entry of entries) {
    const at = entry.indexOf(prefix);
    if (at < 0) continue;
    const pid = /^(\d+)-[0-9a-f]{12}$/.exec(entry.slice(at + prefix.length))?.[1];
    if (pid && Number(pid) !== process.pid && !processAlive(Number(pid))) await rm(path.join(dir, entry), { force: true });
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
