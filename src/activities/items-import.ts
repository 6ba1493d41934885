/**
 * `itemsFrom` an s3:// object or an https:// URL (Step Functions' ItemReader): read by a worker,
 * never by the client. The worker streams the NDJSON once, validates it in chunks against the
 * spec head, and writes the normalized items into the job's own items file in job storage, which
 * every slice then reads. The copy pins the items: a source that changes later changes nothing.
 */
import type { Readable } from 'node:stream';
import { InvalidItems, ItemsFileReader, checkedItemLines, numberedLines, writeItemsFile } from '../items-file';
import { ErrorTypes, type JobSpec, type PipelineRegistry, type SpecIssue, redactUrl } from '../shared';
import { type S3Options, type Storage, parseStorageLocation } from '../storage';
import { S3Store, unrecoverableS3Error } from '../storage/s3';
import { guardedAgent, guardedGet, httpStatusError } from './fetch';
import { ItemError } from './types';

export type ImportResult = { ok: true; ref: string; itemCount: number } | { ok: false; issues: SpecIssue[] };

export interface ImportDeps {
  storage: Storage;
  registry: PipelineRegistry;
  allowedHosts: readonly string[];
  s3: S3Options;
  heartbeat(details: unknown): void;
  signal: AbortSignal;
}

/** The source cannot be read and retrying will not change that (missing, refused, forbidden). */
class Unreadable extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'Unreadable';
  }
}

/** The import's heartbeat period (its heartbeat timeout is 2 minutes). */
const HEARTBEAT_EVERY_MS = 10_000;

/** Issues listed at most in the job's failure (a chunk can hold thousands). */
const MAX_ISSUES = 100;

export async function importItems(input: { jobId: string; from: string; head: Omit<JobSpec, 'items'> }, deps: ImportDeps): Promise<ImportResult> {
  const target = deps.storage.jobItemsUri(input.jobId);
  // Written whole or not at all: an earlier attempt that got this far already pinned the items.
  if (await deps.storage.exists(target)) return { ok: true, ref: target, itemCount: (await new ItemsFileReader(deps.storage).index(target)).count };
  // Other jobs' items and records are not a source, even in the same bucket (other objects there are).
  if (deps.storage.holdsJobData(input.from))
    return { ok: false, issues: [{ path: 'itemsFrom', code: 'inside_job_storage', message: `${redactUrl(input.from)} is Faultline's own job data, which specs may not read` }] };
  let source: { body: Readable; close(): Promise<void> };
  try {
    source = await openSource(input.from, deps);
  } catch (error) {
    if (error instanceof Unreadable) return { ok: false, issues: [{ path: 'itemsFrom', code: error.code, message: error.message }] };
    throw error;
  }
  // By time, not per item: a wrapper generator around a million items costs seconds.
  const beat = setInterval(() => deps.heartbeat(undefined), HEARTBEAT_EVERY_MS);
  try {
    const items = checkedItemLines(input.head, numberedLines(source.body), deps.registry, redactUrl(input.from));
    const { itemCount } = await writeItemsFile(deps.storage, input.head, items, target);
    return { ok: true, ref: target, itemCount };
  } catch (error) {
    // Nothing of an invalid source is stored: failing the stream aborted the write.
    if (error instanceof InvalidItems) return { ok: false, issues: error.issues.slice(0, MAX_ISSUES) };
    throw error;
  } finally {
    clearInterval(beat);
    source.body.destroy();
    await source.close();
  }
}

/** The source's bytes, and what to release once they are read. */
async function openSource(from: string, deps: ImportDeps): Promise<{ body: Readable; close(): Promise<void> }> {
  const url = new URL(from);
  if (url.protocol === 's3:') {
    const location = parseStorageLocation(`s3://${url.host}`);
    if (location.kind !== 's3' || url.pathname.length <= 1) throw new Unreadable('invalid_uri', `${from} is not s3://bucket/key`);
    try {
      return { body: await new S3Store(location.bucket, '', deps.s3).stream(decodeURIComponent(url.pathname.slice(1))), close: async () => undefined };
    } catch (error) {
      const unrecoverable = unrecoverableS3Error(error);
      if (unrecoverable) throw new Unreadable('unreadable', `cannot read ${from}: ${unrecoverable}`);
      throw error;
    }
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Unreadable('invalid_uri', `itemsFrom ${url.protocol} is not read by workers (s3:// or https://)`);
  const agent = guardedAgent({ allowedHosts: deps.allowedHosts, readTimeoutMs: 60_000 });
  const close = () => agent.close().catch(() => undefined);
  try {
    const { response } = await guardedGet(url, { agent, allowedHosts: deps.allowedHosts, signal: deps.signal });
    const failure = httpStatusError(response.statusCode, from, 'itemsFrom', response.headers);
    if (!failure) return { body: response.body, close };
    await response.body.dump();
    throw failure.report.class === 'transient' ? failure : new Unreadable('unreadable', `cannot read ${redactUrl(from)}: HTTP ${response.statusCode}`);
  } catch (error) {
    await close();
    // Refused or redirected away: no retry changes that. Unavailable, rate-limited, network trouble: the activity is tried again.
    if (!(error instanceof ItemError) || error.report.class === 'transient') throw error;
    throw new Unreadable(error.report.type === ErrorTypes.HostNotAllowed ? 'host_not_allowed' : 'unreadable', `cannot read ${redactUrl(from)}: ${error.message}`);
  }
}
