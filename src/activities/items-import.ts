/**
 * `itemsFrom` an s3:// object or an https:// URL (Step Functions' ItemReader): read by a worker,
 * never by the client. The worker streams the NDJSON once, validates it in chunks against the
 * spec head, and writes the normalized items into the job's own items file in job storage, which
 * every slice then reads. The copy pins the items: a source that changes later changes nothing.
 */
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { request } from 'undici';
import { ITEMS_CHUNK, ItemsFileReader, checkItemsChunk } from '../items-file';
import { type JobSpec, type PipelineRegistry, type SpecIssue, normalizeSpec, redactUrl } from '../shared';
import { type S3Options, type Storage, parseStorageLocation } from '../storage';
import { S3Store } from '../storage/s3';
import { guardedAgent, refusedAddress, refusedLiteral, retryAfterFor } from './fetch';

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

/** Issues listed at most (the first ones, as the client does for a local file). */
const MAX_ISSUES = 100;

export async function importItems(input: { jobId: string; from: string; head: Omit<JobSpec, 'items'> }, deps: ImportDeps): Promise<ImportResult> {
  const target = deps.storage.jobItemsUri(input.jobId);
  // Written whole or not at all: an earlier attempt that got this far already pinned the items.
  if (await deps.storage.exists(target)) return { ok: true, ref: target, itemCount: (await new ItemsFileReader(deps.storage).index(target)).count };
  // Other jobs' items and records are not a source, even in the same bucket (other objects there are).
  if (deps.storage.holdsJobData(input.from))
    return { ok: false, issues: [{ path: 'itemsFrom', code: 'inside_job_storage', message: `${redactUrl(input.from)} is Faultline's own job data, which specs may not read` }] };
  let source: Readable;
  try {
    source = await openSource(input.from, deps);
  } catch (error) {
    if (error instanceof Unreadable) return { ok: false, issues: [{ path: 'itemsFrom', code: error.code, message: error.message }] };
    throw error;
  }
  const issues: SpecIssue[] = [];
  let itemCount = 0;
  const { head, registry } = { head: input.head, registry: deps.registry };
  async function* lines(): AsyncGenerator<string> {
    yield `${JSON.stringify({ head })}\n`;
    const seen = new Set<string>();
    let chunk: unknown[] = [];
    let lineNumbers: number[] = [];
    let number = 0;
    const flush = function* (): Generator<string> {
      const checked = checkItemsChunk(head, chunk, itemCount, seen, registry);
      if (!checked.ok) {
        for (const { index, ...found } of checked.issues) {
          const line = index === undefined ? undefined : lineNumbers[index];
          issues.push(line === undefined ? found : { ...found, message: `${found.message} (line ${line})` });
        }
      } else if (issues.length === 0) {
        for (const item of normalizeSpec(checked.spec).items) yield `${JSON.stringify(item)}\n`;
      }
      itemCount += chunk.length;
      chunk = [];
      lineNumbers = [];
      deps.heartbeat({ items: itemCount });
    };
    for await (const line of createInterface({ input: source, crlfDelay: Infinity })) {
      number += 1;
      if (line.trim() === '') continue;
      try {
        chunk.push(JSON.parse(line));
      } catch (error) {
        // Like the client reading a local file: the first line that is not JSON ends the check.
        issues.push({ path: `items[${itemCount + chunk.length}]`, code: 'invalid_json', message: `line ${number} is not JSON: ${(error as Error).message}` });
        break;
      }
      lineNumbers.push(number);
      if (chunk.length >= ITEMS_CHUNK) yield* flush();
      if (issues.length >= MAX_ISSUES) break;
    }
    if (chunk.length > 0 && issues.length === 0) yield* flush();
    if (itemCount === 0 && issues.length === 0) issues.push({ path: 'itemsFrom', code: 'empty', message: `${redactUrl(input.from)} has no items` });
    // Nothing of an invalid source may be stored: failing the stream aborts the write.
    if (issues.length > 0) throw new InvalidItems();
  }
  try {
    await deps.storage.writeStream(target, lines());
  } catch (error) {
    if (error instanceof InvalidItems || issues.length > 0) return { ok: false, issues: issues.slice(0, MAX_ISSUES) };
    throw error;
  } finally {
    source.destroy();
  }
  return { ok: true, ref: target, itemCount };
}

class InvalidItems extends Error {}

async function openSource(from: string, deps: ImportDeps): Promise<Readable> {
  const url = new URL(from);
  if (url.protocol === 's3:') {
    const location = parseStorageLocation(`s3://${url.host}`);
    if (location.kind !== 's3' || url.pathname.length <= 1) throw new Unreadable('invalid_uri', `${from} is not s3://bucket/key`);
    const store = new S3Store(location.bucket, '', deps.s3);
    try {
      return await store.stream(decodeURIComponent(url.pathname.slice(1)));
    } catch (error) {
      const name = (error as { name?: string }).name ?? '';
      if (['NoSuchKey', 'NoSuchBucket', 'AccessDenied', 'InvalidAccessKeyId', 'NotFound'].includes(name)) throw new Unreadable('unreadable', `cannot read ${from}: ${name}`);
      throw error;
    }
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Unreadable('invalid_uri', `itemsFrom ${url.protocol} is not read by workers (s3:// or https://)`);
  const agent = guardedAgent({ allowedHosts: deps.allowedHosts, readTimeoutMs: 60_000 });
  let current = url;
  for (let hop = 0; hop <= 5; hop++) {
    const literal = refusedLiteral(current, deps.allowedHosts);
    if (literal) throw new Unreadable('host_not_allowed', `${current.hostname} is a private address and not in FAULTLINE_ALLOWED_HOSTS`);
    let response;
    try {
      response = await request(current, { method: 'GET', dispatcher: agent, signal: deps.signal, maxRedirections: 0 } as Parameters<typeof request>[1]);
    } catch (error) {
      if (refusedAddress(error)) throw new Unreadable('host_not_allowed', `${current.hostname} resolves to a private address and is not in FAULTLINE_ALLOWED_HOSTS`);
      throw error; // network trouble: the activity is tried again
    }
    const { statusCode, headers } = response;
    if (statusCode >= 300 && statusCode < 400 && typeof headers.location === 'string') {
      await response.body.dump();
      current = new URL(headers.location, current);
      continue;
    }
    if (statusCode === 200) return response.body;
    await response.body.dump();
    const wait = retryAfterFor(statusCode, headers);
    if (statusCode >= 500 || statusCode === 429 || statusCode === 408) throw new Error(`${redactUrl(from)} answered ${statusCode}${wait ? `; retry after ${wait} ms` : ''}`);
    throw new Unreadable('unreadable', `cannot read ${redactUrl(from)}: HTTP ${statusCode}`);
  }
  throw new Unreadable('unreadable', `${redactUrl(from)}: more than 5 redirects`);
}
