/**
 * The safety tools Faultline's own pipelines use, for users' steps: the outbound guard for HTTP
 * (no private targets unless allowed, no redirects for writes, status classification with
 * Retry-After), sources read within the allowed roots, and outputs written atomically under the
 * job's destination. Every failure is a typed ItemError the engine classifies.
 */
import { createHash } from 'node:crypto';
import { type Dispatcher, request } from 'undici';
import { ErrorTypes, redactUrl } from '../shared';
import { type S3Options, type Storage, type WorkFile, parseStorageLocation, permanentStorageError, safeSegment } from '../storage';
import { S3Store } from '../storage/s3';
import { fetchSource, guardedAgent, httpStatusError, httpValidator, localFingerprint, refuseHost, refusedAddress, refusedLiteral } from './fetch';
import { type WrittenFile, resolveAllowedPath, writeOutputFile } from './files';
import { ItemError } from './types';

/** What a worker gives every step: its allowed roots and hosts, and job storage for working files. */
export interface StepServices {
  allowedRoots: readonly string[];
  allowedHosts: readonly string[];
  storage?: Pick<Storage, 'readWorkFile' | 'writeWorkFile' | 'dropWorkFiles'>;
  /** For s3:// destinations (endpoint, credentials), as for job storage. */
  s3?: S3Options;
}

/** What items keep in job storage: working files and checkpoints. */
export type ItemFiles = Pick<Storage, 'readWorkFile' | 'writeWorkFile' | 'dropWorkFiles' | 'readCheckpoint' | 'writeCheckpoint'>;

/**
 * Job storage as items use it, its failures typed: one no retry can fix is a fatal
 * `StorageUnwritable`, a full disk `DiskFull`, an I/O or network failure (S3 unreachable, a
 * connection reset, a 5xx) `StorageUnavailable`, which a batch waits out without charging the item.
 */
export function guardItemFiles(storage: ItemFiles): ItemFiles {
  return {
    readWorkFile: (...args) => storage.readWorkFile(...args).catch(itemStorageError),
    writeWorkFile: (...args) => storage.writeWorkFile(...args).catch(itemStorageError),
    dropWorkFiles: (...args) => storage.dropWorkFiles(...args).catch(itemStorageError),
    readCheckpoint: (...args) => storage.readCheckpoint(...args).catch(itemStorageError),
    writeCheckpoint: (...args) => storage.writeCheckpoint(...args).catch(itemStorageError),
  };
}

const FULL_DISK = new Set(['ENOSPC', 'EDQUOT']);

function itemStorageError(error: unknown): never {
  if (error instanceof ItemError) throw error;
  const permanent = permanentStorageError(error);
  if (permanent) throw new ItemError({ type: ErrorTypes.StorageUnwritable, message: `job storage is not writable (${permanent})`, details: { code: permanent }, cause: error });
  const code = (error as NodeJS.ErrnoException).code;
  if (code && FULL_DISK.has(code)) throw new ItemError({ type: ErrorTypes.DiskFull, message: `job storage is full (${code})`, details: { code }, cause: error });
  // Errno and network codes, S3 service errors ($metadata) and the SDK's timeouts; anything else (a bug, bad JSON) stays as it is.
  const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  const name = (error as { name?: string }).name;
  if (code !== undefined || (status !== undefined && status >= 500) || name === 'TimeoutError') {
    throw new ItemError({
      type: ErrorTypes.StorageUnavailable,
      message: `job storage did not answer: ${(error as Error).message}`,
      details: { ...(code !== undefined ? { code } : {}), ...(status !== undefined ? { status } : {}) },
      cause: error,
    });
  }
  throw error;
}

/** Where `writeOutput` puts one output, besides the job's destination. */
export interface WriteOutputOptions {
  /** The output this file is: its pre-signed PUT URL (`items[].putUrls[output]`) takes it instead of the destination. */
  output?: string;
  /** Sent with a PUT (default application/octet-stream). */
  contentType?: string;
  /** A PUT URL to use instead of the item's own for `output`. */
  putUrl?: string;
}

/** Files of one item in the job's working storage: kept across its steps, attempts and rounds until the item is final or the job closes. */
export interface ItemStorage {
  /** Keeps bytes under a plain name (a re-put replaces them); returns what a later step needs to read them back. */
  put(name: string, data: Buffer | string): Promise<WorkFile>;
  /** The bytes kept under `name`, or undefined (never kept, dropped, or — given `sha256` — not those bytes). */
  get(name: string, expected?: { sha256: string }): Promise<Buffer | undefined>;
  /** Drops every working file of this item (call it once the item's outputs are final). */
  drop(): Promise<void>;
}

export interface GuardedResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export interface GuardedRequest {
  method?: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Connect and read timeouts (default 10 s / 30 s). */
  timeoutMs?: number;
  /** Bytes of response body kept (default 1 MB); the rest is discarded. */
  maxBodyBytes?: number;
}

export interface StepTools {
  /**
   * An HTTP request through the outbound guard: private, loopback and link-local targets are
   * refused (typed `HostNotAllowed`) unless listed in FAULTLINE_ALLOWED_HOSTS, redirects are not
   * followed, network failures are transient `NetworkError`s. The status is the caller's to judge;
   * `statusError(response)` classifies it the way the built-ins do.
   */
  fetch(url: string, init?: GuardedRequest): Promise<GuardedResponse>;
  /** The built-ins' classification of an HTTP status: undefined for 2xx, else a typed ItemError (429/503 with Retry-After). */
  statusError(response: GuardedResponse, url: string): ItemError | undefined;
  /** A source's bytes (file:// within the allowed roots, opened without following a final symlink; http(s) through the guard, size-capped). */
  openSource(uri: string, options?: { maxBytes?: number; connectTimeoutMs?: number; readTimeoutMs?: number }): Promise<Buffer>;
  /**
   * What a source's content depends on now: a file's size and mtime, an http(s) URL's ETag or
   * Last-Modified (from the response `openSource` read in this run, else one HEAD request).
   * Undefined when it cannot be told. For a step's `dependsOn`.
   */
  sourceFingerprint(uri: string): Promise<string | undefined>;
  /**
   * Writes one output file and returns location, bytes and sha256 for an Available output: to the
   * item's pre-signed PUT URL for `options.output` when the spec gives one (through the guard, a few
   * quick tries; 401/403 is a fatal `DestinationRejected`), else to `<destination>/<item>/<name>`:
   * a folder (atomic, descriptor-checked, inside the allowed roots) or an s3:// prefix. A re-run replaces it.
   */
  writeOutput(name: string, data: Buffer | string, options?: WriteOutputOptions): Promise<WrittenFile>;
}

const DEFAULT_SOURCE_BYTES = 100_000_000;
const DEFAULT_BODY_BYTES = 1_000_000;

export function stepTools(
  services: StepServices,
  context: { jobId: string; item: string; step: string; destination?: string; putUrls?: Record<string, string>; signal: AbortSignal; validators?: Map<string, string | undefined> },
  agents: StepAgents,
): StepTools {
  const { step, signal } = context;
  const tools: StepTools = {
    async fetch(url, init = {}) {
      const target = new URL(url);
      if (target.protocol !== 'http:' && target.protocol !== 'https:') {
        throw new ItemError({ type: ErrorTypes.UnsupportedSource, message: `ctx.fetch takes http(s) URLs, not ${target.protocol}`, details: { scheme: target.protocol }, step });
      }
      const literal = refusedLiteral(target, services.allowedHosts);
      if (literal) throw refuseHost(target, literal, step);
      try {
        const response = await request(url, {
          dispatcher: agents.guarded,
          method: init.method ?? 'GET',
          ...(init.headers ? { headers: init.headers } : {}),
          ...(init.body !== undefined ? { body: init.body } : {}),
          signal,
          headersTimeout: init.timeoutMs ?? 30_000,
          bodyTimeout: init.timeoutMs ?? 30_000,
        });
        const limit = init.maxBodyBytes ?? DEFAULT_BODY_BYTES;
        const chunks: Buffer[] = [];
        let kept = 0;
        for await (const chunk of response.body as AsyncIterable<Buffer>) {
          if (kept < limit) chunks.push(chunk.subarray(0, limit - kept));
          kept += chunk.length;
        }
        return { status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks) };
      } catch (error) {
        const refused = refusedAddress(error);
        if (refused) throw refuseHost(target, refused, step);
        if (error instanceof ItemError || signal.aborted) throw error;
        throw new ItemError({ type: ErrorTypes.NetworkError, message: `request to ${redactUrl(url)} failed: ${(error as Error).message}`, details: { url: redactUrl(url) }, step, cause: error });
      }
    },
    statusError(response, url) {
      return httpStatusError(response.status, url, step, response.headers);
    },
    async openSource(uri, options = {}) {
      const fetched = await fetchSource(uri, {
        allowedRoots: services.allowedRoots,
        allowedHosts: services.allowedHosts,
        maxBytes: options.maxBytes ?? DEFAULT_SOURCE_BYTES,
        ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
        ...(options.readTimeoutMs !== undefined ? { readTimeoutMs: options.readTimeoutMs } : {}),
        signal,
      });
      context.validators?.set(uri, fetched.validator);
      return fetched.data;
    },
    async sourceFingerprint(uri) {
      if (uri.startsWith('file:')) return localFingerprint(uri);
      // Told by the response this item's run already read: no second request.
      if (context.validators?.has(uri)) return context.validators.get(uri);
      if (!/^https?:/.test(uri) || refusedLiteral(new URL(uri), services.allowedHosts)) return undefined;
      try {
        const response = await request(uri, { dispatcher: agents.guarded, method: 'HEAD', signal, headersTimeout: 10_000, bodyTimeout: 10_000 });
        await response.body.dump();
        if (response.statusCode < 200 || response.statusCode >= 300) return undefined;
        return httpValidator(response.headers);
      } catch {
        return undefined;
      }
    },
    async writeOutput(name, data, options = {}) {
      if (name.includes('/') || name.includes('\\') || name === '..' || name === '.') {
        throw new ItemError({ type: ErrorTypes.InvalidSpec, class: 'invalid', message: `output file name "${name}" must be a plain file name`, step });
      }
      const bytes = typeof data === 'string' ? Buffer.from(data) : data;
      const putUrl = options.putUrl ?? (options.output !== undefined ? context.putUrls?.[options.output] : undefined);
      if (putUrl) return { location: await putWithTries(tools, putUrl, bytes, options), bytes: bytes.length, sha256: sha256(bytes) };
      if (!context.destination)
        throw new ItemError({ type: ErrorTypes.InvalidSpec, class: 'invalid', message: 'ctx.writeOutput needs a destination in the job spec (or a PUT URL for the output)', step });
      if (context.destination.startsWith('s3:')) {
        const location = parseStorageLocation(context.destination);
        if (location.kind !== 's3') throw new ItemError({ type: ErrorTypes.InvalidSpec, class: 'invalid', message: `destination ${context.destination} is not s3://bucket/prefix`, step });
        const key = `${location.bucket}/${location.prefix}`;
        let store = agents.s3.get(key);
        if (!store) agents.s3.set(key, (store = new S3Store(location.bucket, location.prefix, services.s3 ?? {})));
        const objectKey = `${safeSegment(context.item)}/${name}`;
        try {
          await store.put(objectKey, bytes);
        } catch (error) {
          throw new ItemError({ type: ErrorTypes.DestinationUnwritable, class: 'transient', message: `cannot write ${store.uri(objectKey)}: ${(error as Error).message}`, step, cause: error });
        }
        return { location: store.uri(objectKey), bytes: bytes.length, sha256: sha256(bytes) };
      }
      if (!context.destination.startsWith('file:')) {
        throw new ItemError({ type: ErrorTypes.UnsupportedSource, class: 'invalid', message: 'ctx.writeOutput writes to file:// and s3:// destinations', step });
      }
      const dir = await resolveAllowedPath(context.destination, services.allowedRoots, 'destination', step);
      return writeOutputFile(dir, context.item, name, bytes, step);
    },
  };
  return tools;
}

/** What every step of a worker shares: one guarded agent, one S3 client per destination. */
export interface StepAgents {
  guarded: Dispatcher;
  s3: Map<string, S3Store>;
}

export function stepAgents(services: StepServices): StepAgents {
  return { guarded: guardedAgent({ allowedHosts: services.allowedHosts }), s3: new Map() };
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Tries of one PUT in place before the item is handed back to its step's retry policy. */
const PUT_ATTEMPTS = 3;

/**
 * PUTs one output to its pre-signed URL through the outbound guard, with a few quick tries in
 * place for transient answers; 401/403 means the URLs are no good, for every item (fatal).
 */
async function putWithTries(tools: Pick<StepTools, 'fetch' | 'statusError'>, url: string, bytes: Buffer, options: WriteOutputOptions): Promise<string> {
  const output = options.output;
  for (let attempt = 1; ; attempt++) {
    let failure: ItemError | undefined;
    try {
      const response = await tools.fetch(url, {
        method: 'PUT',
        body: bytes,
        headers: { 'content-type': options.contentType ?? 'application/octet-stream', 'content-length': String(bytes.length) },
        maxBodyBytes: 4_096,
      });
      if (response.status === 401 || response.status === 403) {
        throw new ItemError({
          type: ErrorTypes.DestinationRejected,
          class: 'fatal',
          message: `destination refused the upload (${response.status}); credentials or pre-signed URLs are invalid`,
          details: { httpStatus: response.status, url: redactUrl(url) },
          ...(output !== undefined ? { output } : {}),
        });
      }
      failure = tools.statusError(response, url);
      if (!failure) return redactUrl(url);
    } catch (error) {
      if (!(error instanceof ItemError)) throw error;
      failure = error;
    }
    if (output !== undefined) failure.report.output ??= output;
    if (failure.report.class !== 'transient' || attempt >= PUT_ATTEMPTS) throw failure;
    await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** (attempt - 1)));
  }
}
