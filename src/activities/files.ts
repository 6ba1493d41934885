/** Path safety and atomic output files, shared by pipelines that read or write local files. */
import { createHash } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ErrorTypes } from '../shared';
import { writeFileAtomic } from '../storage';
import { ItemError } from './types';

function inside(child: string, root: string): boolean {
  const relative = path.relative(root, child);
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

/** Resolves the deepest existing ancestor through symlinks, then re-appends the rest. */
async function realpathLoose(target: string): Promise<string> {
  let current = target;
  const rest: string[] = [];
  for (;;) {
    try {
      return path.join(await realpath(current), ...rest.reverse());
    } catch {
      const parent = path.dirname(current);
      if (parent === current) return target;
      rest.push(path.basename(current));
      current = parent;
    }
  }
}

/** Job storage folders of the workers in this process: never a source or destination, even inside an allowed root. */
const protectedDirs = new Set<string>();

/** Called when a worker starts: specs can neither read other jobs' working copies nor write into job storage. */
export function protectFromSpecs(dir: string): void {
  protectedDirs.add(path.resolve(dir));
}

/**
 * The local path of a `file://` URI, refused (class `invalid`) unless it lies inside one of the
 * allowed roots after resolving `..` and symlinks, and outside every protected job storage folder.
 */
export async function resolveAllowedPath(uri: string, roots: readonly string[], kind: 'source' | 'destination', step: string): Promise<string> {
  let file: string;
  try {
    file = path.resolve(fileURLToPath(uri));
  } catch {
    throw new ItemError({ type: ErrorTypes.UnsupportedSource, message: `not a local file URI`, details: { scheme: uri.split(':')[0] }, step });
  }
  const real = await realpathLoose(file);
  const realRoots = await Promise.all(roots.map((root) => realpathLoose(path.resolve(root))));
  if (!realRoots.some((root) => inside(real, root))) {
    throw new ItemError({
      type: kind === 'source' ? ErrorTypes.SourceOutsideAllowedRoots : ErrorTypes.DestinationOutsideAllowedRoots,
      class: kind === 'source' ? 'invalid' : 'fatal',
      message: `${kind} ${file} is outside the allowed roots (FAULTLINE_ALLOWED_ROOTS)`,
      details: { path: file, resolved: real, allowedRoots: roots },
      step,
    });
  }
  for (const dir of protectedDirs) {
    if (inside(real, await realpathLoose(dir))) {
      throw new ItemError({
        type: kind === 'source' ? ErrorTypes.SourceOutsideAllowedRoots : ErrorTypes.DestinationOutsideAllowedRoots,
        class: kind === 'source' ? 'invalid' : 'fatal',
        message: `${kind} ${file} is inside Faultline's job storage, which specs may not read or write`,
        details: { path: file, resolved: real },
        step,
      });
    }
  }
  return real;
}

export interface WrittenFile {
  location: string;
  bytes: number;
  sha256: string;
}

/** Write failures that say something about the destination, by errno: a full disk may free up; a read-only or forbidden destination will not. */
const WRITE_ERRORS: Readonly<Record<string, { type: string; what: string }>> = {
  ENOSPC: { type: ErrorTypes.DiskFull, what: 'no space left on the device' },
  EDQUOT: { type: ErrorTypes.DiskFull, what: 'disk quota exceeded' },
  EACCES: { type: ErrorTypes.DestinationUnwritable, what: 'permission denied' },
  EPERM: { type: ErrorTypes.DestinationUnwritable, what: 'operation not permitted' },
  EROFS: { type: ErrorTypes.DestinationUnwritable, what: 'read-only file system' },
  ENOTDIR: { type: ErrorTypes.DestinationUnwritable, what: 'a path component is a file, not a directory' },
  EEXIST: { type: ErrorTypes.DestinationUnwritable, what: 'a file is where the output directory must be' },
  EFAULTLINEPATH: { type: ErrorTypes.DestinationUnwritable, what: 'a symlink in the output path leads outside the destination' },
  ELOOP: { type: ErrorTypes.DestinationUnwritable, what: 'a symlink where the output file must be' },
  EISDIR: { type: ErrorTypes.DestinationUnwritable, what: 'the output path is a directory' },
};

/** A classified ItemError for a failed write (the errno error kept as its cause), or the error itself when its code says nothing about the destination. */
export function writeError(error: unknown, target: string, step: string): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  const known = code ? WRITE_ERRORS[code] : undefined;
  if (!known) return error;
  return new ItemError({ type: known.type, message: `cannot write ${target}: ${known.what} (${code})`, details: { path: target, code }, step, cause: error });
}

/** Writes `<dir>/<item>/<name>` via temp + rename: a re-run replaces, never duplicates. */
export async function writeOutputFile(dir: string, item: string, name: string, data: Buffer | string, step = 'deliver'): Promise<WrittenFile> {
  const target = path.join(dir, item, name);
  try {
    await writeFileAtomic(target, data, dir);
  } catch (error) {
    throw writeError(error, target, step);
  }
  const buffer = typeof data === 'string' ? Buffer.from(data) : data;
  return { location: pathToFileURL(target).toString(), bytes: buffer.length, sha256: createHash('sha256').update(buffer).digest('hex') };
}
