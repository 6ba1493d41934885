/**
 * The safety tools Faultline's own pipelines use, for users' steps: the outbound guard for HTTP
 * (no private targets unless allowed, no redirects for writes, status classification with
 * Retry-After), sources read within the allowed roots, and outputs written atomically under the
 * job's destination. Every failure is a typed ItemError the engine classifies.
 */
import { type Dispatcher, request } from 'undici';
import { ErrorTypes, redactUrl } from '../shared';
import type { Storage, WorkFile } from '../storage';
import { fetchSource, guardedAgent, httpStatusError, httpValidator, localFingerprint, refuseHost, refusedAddress, refusedLiteral } from './fetch';
import { type WrittenFile, resolveAllowedPath, writeOutputFile } from './files';
import { ItemError } from './types';

/** What a worker gives every step: its allowed roots and hosts, and job storage for working files. */
export interface StepServices {
  allowedRoots: readonly string[];
  allowedHosts: readonly string[];
  storage?: Pick<Storage, 'readWorkFile' | 'writeWorkFile' | 'dropWorkFiles'>;
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
  storage: ItemStorage;
  /** Writes `<destination>/<item>/<name>` atomically (a re-run replaces it); returns location, bytes and sha256 for an Available output. */
  writeOutput(name: string, data: Buffer | string): Promise<WrittenFile>;
}

const DEFAULT_SOURCE_BYTES = 100_000_000;
const DEFAULT_BODY_BYTES = 1_000_000;

export function stepTools(
  services: StepServices,
  context: { jobId: string; item: string; step: string; destination?: string; signal: AbortSignal; validators?: Map<string, string | undefined> },
  agents: { guarded: Dispatcher },
): StepTools {
  const { step, signal } = context;
  const storage = () => {
    if (!services.storage) throw new ItemError({ type: ErrorTypes.StorageUnwritable, message: "ctx.storage needs the worker's job storage", step });
    return services.storage;
  };
  return {
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
    storage: {
      put: (name, data) => storage().writeWorkFile(context.jobId, context.item, name, typeof data === 'string' ? Buffer.from(data) : data),
      get: (name, expected) => storage().readWorkFile(context.jobId, context.item, name, expected?.sha256),
      drop: () => storage().dropWorkFiles(context.jobId, context.item),
    },
    async writeOutput(name, data) {
      if (!context.destination) throw new ItemError({ type: ErrorTypes.InvalidSpec, class: 'invalid', message: 'ctx.writeOutput needs a destination in the job spec', step });
      if (!context.destination.startsWith('file:')) {
        throw new ItemError({ type: ErrorTypes.UnsupportedSource, class: 'invalid', message: 'ctx.writeOutput writes to file:// destinations', step });
      }
      if (name.includes('/') || name.includes('\\') || name === '..' || name === '.') {
        throw new ItemError({ type: ErrorTypes.InvalidSpec, class: 'invalid', message: `output file name "${name}" must be a plain file name`, step });
      }
      const dir = await resolveAllowedPath(context.destination, services.allowedRoots, 'destination', step);
      return writeOutputFile(dir, context.item, name, data, step);
    },
  };
}

/** One guarded agent per worker, shared by every step. */
export function stepAgents(services: StepServices): { guarded: Dispatcher } {
  return { guarded: guardedAgent({ allowedHosts: services.allowedHosts }) };
}
