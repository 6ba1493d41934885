/**
 * Safe fetching of sources: `file://` only inside the allowed roots; `http(s)://` with timeouts,
 * a size cap, a redirect limit, and no loopback/private/link-local/metadata hosts unless listed
 * in FAULTLINE_ALLOWED_HOSTS — checked on the resolved address, on every hop.
 */
import { lookup as dnsLookup } from 'node:dns';
import { constants as fsConstants } from 'node:fs';
import { type FileHandle, open, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { PathMismatch, verifyDescriptorWithin } from '../storage';
import net, { BlockList } from 'node:net';
import { Agent, type Dispatcher, request } from 'undici';
import { ErrorTypes, redactUrl } from '../shared';
import { resolveAllowedPath } from './files';
import { ItemError } from './types';

const PRIVATE_RANGES = new BlockList();
for (const [address, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, incl. cloud metadata 169.254.169.254
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  PRIVATE_RANGES.addSubnet(address, prefix, 'ipv4');
}
for (const [address, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
  ['fd00:ec2::', 32],
  ['::', 96], // IPv4-compatible ::a.b.c.d (deprecated, but a way around the IPv4 list)
  ['64:ff9b::', 96], // NAT64: reaches any IPv4 address, private ones included
  ['64:ff9b:1::', 48], // local-use NAT64
] as const) {
  PRIVATE_RANGES.addSubnet(address, prefix, 'ipv6');
}

export function isPrivateAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) return PRIVATE_RANGES.check(mapped[1], 'ipv4');
  const family = net.isIP(address);
  if (family === 0) return true;
  return PRIVATE_RANGES.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

export interface FetchOptions {
  allowedRoots: readonly string[];
  allowedHosts: readonly string[];
  maxBytes: number;
  maxRedirects?: number;
  connectTimeoutMs?: number;
  readTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface Fetched {
  data: Buffer;
  /** The final URL after redirects (redacted) or the local path. */
  from: string;
  /** What this content was, as the source tells it: an http(s) response's ETag or Last-Modified. */
  validator?: string;
}

const STEP = 'fetch';

function hostAllowed(host: string, allowedHosts: readonly string[]): boolean {
  return allowedHosts.includes(host.toLowerCase().replace(/^\[|\]$/g, ''));
}

export function refuseHost(url: URL, address: string, step = STEP, output?: string): ItemError {
  return new ItemError({
    type: ErrorTypes.HostNotAllowed,
    message: `host ${url.hostname} resolves to a private, loopback or link-local address; list it in FAULTLINE_ALLOWED_HOSTS to allow it`,
    details: { host: url.hostname, address },
    step,
    ...(output ? { output } : {}),
  });
}

/** The one outbound guard: a dispatcher whose DNS lookups refuse private addresses for hosts that are not allowed. */
export function guardedAgent(options: Pick<FetchOptions, 'allowedHosts' | 'connectTimeoutMs' | 'readTimeoutMs'>): Agent {
  return new Agent({
    connect: {
      timeout: options.connectTimeoutMs ?? 10_000,
      lookup(hostname, lookupOptions, callback) {
        dnsLookup(hostname, { ...lookupOptions, all: true }, (error, addresses) => {
          if (error) return callback(error, '', 4);
          const list = addresses;
          if (!hostAllowed(hostname, options.allowedHosts)) {
            const bad = list.find((entry) => isPrivateAddress(entry.address));
            if (bad) {
              const refusal = Object.assign(new Error(`refused private address ${bad.address} for ${hostname}`), { code: 'EFAULTLINEPRIVATE', address: bad.address });
              return callback(refusal, '', 4);
            }
          }
          if ((lookupOptions as { all?: boolean }).all) return (callback as unknown as (e: null, a: typeof list) => void)(null, list);
          const first = list[0];
          return first ? callback(null, first.address, first.family) : callback(new Error(`no address for ${hostname}`), '', 4);
        });
      },
    },
    headersTimeout: options.readTimeoutMs ?? 30_000,
    bodyTimeout: options.readTimeoutMs ?? 30_000,
  });
}

/** The wait a 429 or 503 asks for (Retry-After); other statuses ask for none. Sources and webhooks honour the same rule. */
export function retryAfterFor(status: number, headers: Record<string, string | string[] | undefined>): number | undefined {
  return status === 429 || status === 503 ? retryAfterMs(headers['retry-after']) : undefined;
}

function retryAfterMs(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.min(seconds * 1000, 3_600_000));
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, Math.min(date - Date.now(), 3_600_000)) : undefined;
}

/** Maps an HTTP status to a classified error (undefined for success). */
export function httpStatusError(status: number, url: string, step: string, headers: Record<string, string | string[] | undefined> = {}): ItemError | undefined {
  if (status >= 200 && status < 300) return undefined;
  const details = { httpStatus: status, url: redactUrl(url) };
  if (status === 404 || status === 410) return new ItemError({ type: ErrorTypes.SourceNotFound, message: `${status} from ${redactUrl(url)}`, details, step });
  if (status === 401 || status === 403) return new ItemError({ type: ErrorTypes.SourceForbidden, message: `${status} from ${redactUrl(url)}`, details, step });
  // 429 and 503 may say when to come back; the runner waits at least that long (in workflow time).
  if (status === 429 || status >= 500 || status === 408) {
    const delay = retryAfterFor(status, headers);
    return new ItemError({
      type: status === 429 ? ErrorTypes.RateLimited : ErrorTypes.EndpointUnavailable,
      message: `${status} from ${redactUrl(url)}`,
      details: { ...details, ...(delay !== undefined ? { retryAfterMs: delay } : {}) },
      step,
      ...(delay !== undefined ? { retryAfterMs: delay } : {}),
    });
  }
  return new ItemError({ type: 'SourceRequestRejected', class: 'unprocessable', message: `${status} from ${redactUrl(url)}`, details, step });
}

function networkError(error: unknown, url: string): ItemError {
  if (error instanceof ItemError) return error;
  const code = (error as { code?: string }).code ?? (error as { cause?: { code?: string } }).cause?.code;
  const address = (error as { address?: string }).address ?? (error as { cause?: { address?: string } }).cause?.address;
  if (code === 'EFAULTLINEPRIVATE') return refuseHost(new URL(url), address ?? 'private');
  return new ItemError({
    type: ErrorTypes.NetworkError,
    message: `network error fetching ${redactUrl(url)}: ${code ?? (error as Error).name}`,
    details: { code: code ?? (error as Error).name, url: redactUrl(url) },
    step: STEP,
  });
}

/** IP literals never reach the DNS hook: a private one (not allowed) is refused before connecting. */
export function refusedLiteral(url: URL, allowedHosts: readonly string[]): string | undefined {
  const literal = url.hostname.replace(/^\[|\]$/g, '');
  return net.isIP(literal) && isPrivateAddress(literal) && !hostAllowed(literal, allowedHosts) ? literal : undefined;
}

/** The address the outbound guard refused, if `error` (or its cause) is that refusal. */
export function refusedAddress(error: unknown): string | undefined {
  for (let current = error as { code?: string; address?: string; cause?: unknown } | undefined, depth = 0; current && depth < 5; current = current.cause as typeof current, depth++) {
    if (current.code === 'EFAULTLINEPRIVATE') return current.address ?? 'private';
  }
  return undefined;
}

export async function fetchSource(source: string, options: FetchOptions): Promise<Fetched> {
  const url = new URL(source);
  if (url.protocol === 'file:') return readLocal(source, options);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ItemError({ type: ErrorTypes.UnsupportedSource, message: `unsupported source scheme ${url.protocol}`, details: { scheme: url.protocol }, step: STEP });
  }
  const agent = guardedAgent(options);
  try {
    const { response, url: current } = await guardedGet(url, { agent, allowedHosts: options.allowedHosts, signal: options.signal, maxRedirects: options.maxRedirects });
    const failure = httpStatusError(response.statusCode, current.toString(), STEP, response.headers);
    if (failure) {
      await response.body.dump();
      throw failure;
    }
    const declared = Number(response.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > options.maxBytes) {
      await response.body.dump();
      throw tooLarge(declared, options.maxBytes);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of response.body) {
        size += (chunk as Buffer).length;
        if (size > options.maxBytes) {
          response.body.destroy();
          throw tooLarge(size, options.maxBytes);
        }
        chunks.push(chunk as Buffer);
      }
    } catch (error) {
      throw networkError(error, current.toString());
    }
    const validator = httpValidator(response.headers);
    return { data: Buffer.concat(chunks), from: redactUrl(current.toString()), ...(validator !== undefined ? { validator } : {}) };
  } finally {
    await agent.close().catch(() => undefined);
  }
}

/**
 * GET through the outbound guard (`agent` from guardedAgent), following redirects — every hop
 * checked, http(s) only — up to `maxRedirects` (default 5). The final response, its status not
 * yet judged, and its URL. Failures are ItemErrors: HostNotAllowed, TooManyRedirects,
 * UnsupportedSource (a redirect elsewhere) and NetworkError.
 */
export async function guardedGet(
  url: URL,
  options: { agent: Agent; allowedHosts: readonly string[]; signal?: AbortSignal | undefined; maxRedirects?: number | undefined },
): Promise<{ response: Dispatcher.ResponseData<unknown>; url: URL }> {
  const maxRedirects = options.maxRedirects ?? 5;
  let current = url;
  for (let hop = 0; ; hop++) {
    const literal = refusedLiteral(current, options.allowedHosts);
    if (literal) throw refuseHost(current, literal);
    let response;
    try {
      response = await request(current, { method: 'GET', dispatcher: options.agent, signal: options.signal, maxRedirections: 0 } as Parameters<typeof request>[1]);
    } catch (error) {
      throw networkError(error, current.toString());
    }
    if (!(response.statusCode >= 300 && response.statusCode < 400 && response.headers.location)) return { response, url: current };
    await response.body.dump();
    if (hop >= maxRedirects) {
      throw new ItemError({ type: 'TooManyRedirects', class: 'unprocessable', message: `more than ${maxRedirects} redirects`, details: { url: redactUrl(url.toString()) }, step: STEP });
    }
    current = new URL(String(response.headers.location), current);
    if (current.protocol !== 'http:' && current.protocol !== 'https:') {
      throw new ItemError({ type: ErrorTypes.UnsupportedSource, message: `redirect to unsupported scheme ${current.protocol}`, details: { scheme: current.protocol }, step: STEP });
    }
  }
}

function tooLarge(bytes: number, max: number): ItemError {
  return new ItemError({ type: ErrorTypes.SourceTooLarge, message: `source is larger than ${max} bytes`, details: { bytes, maxBytes: max }, step: STEP });
}

async function readLocal(source: string, options: FetchOptions): Promise<Fetched> {
  const file = await resolveAllowedPath(source, options.allowedRoots, 'source', STEP);
  // Opened without following a final symlink, then checked to be the very file that was allowed:
  // a swap between the check and the open is refused, not read.
  let handle: FileHandle;
  let size: number;
  try {
    handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (error) {
    throw localReadError(error, file);
  }
  try {
    try {
      await verifyDescriptorWithin(handle.fd, file, file);
    } catch (error) {
      if (error instanceof PathMismatch) {
        throw new ItemError({
          type: ErrorTypes.SourceOutsideAllowedRoots,
          class: 'invalid',
          message: `source ${file} changed between its check and its open (${error.actual})`,
          details: { path: file },
          step: STEP,
        });
      }
      throw error;
    }
    const info = await handle.stat();
    if (!info.isFile()) throw new ItemError({ type: ErrorTypes.SourceNotFound, message: `not a file: ${file}`, details: { path: file }, step: STEP });
    size = info.size;
    if (size > options.maxBytes) throw tooLarge(size, options.maxBytes);
    return { data: await handle.readFile(), from: file };
  } finally {
    await handle.close();
  }
}

function localReadError(error: unknown, file: string): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return new ItemError({ type: ErrorTypes.SourceNotFound, message: `no such file: ${file}`, details: { path: file }, step: STEP });
  if (code === 'EACCES' || code === 'EPERM') return new ItemError({ type: ErrorTypes.SourceForbidden, message: `cannot read ${file}`, details: { path: file, code }, step: STEP });
  if (code === 'ELOOP')
    return new ItemError({ type: ErrorTypes.SourceOutsideAllowedRoots, class: 'invalid', message: `source ${file} became a symlink after its check`, details: { path: file }, step: STEP });
  return error;
}

/**
 * What a kept copy of a source depends on, where it is cheap to know: size and modification time
 * of a local file (a file fixed in place invalidates the copy). Undefined for remote sources and
 * for files that cannot be read now (the next fetch reports why).
 */
/** An http(s) response's ETag, else its Last-Modified: what says the content changed (a HEAD answers the same as a GET). */
export function httpValidator(headers: Record<string, string | string[] | undefined>): string | undefined {
  const tag = headers.etag ?? headers['last-modified'];
  return typeof tag === 'string' ? tag : undefined;
}

export async function localFingerprint(source: string): Promise<string | undefined> {
  if (!source.startsWith('file:')) return undefined;
  try {
    const info = await stat(fileURLToPath(source));
    return `${info.size}:${info.mtimeMs}`;
  } catch {
    return undefined;
  }
}
