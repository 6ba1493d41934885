/**
 * The images pipeline: fetch (safe) → process with sharp (thumbnail, preview, metadata, exif,
 * fit; filters) → deliver to a directory (temp + rename, deterministic names) or to per-output
 * pre-signed PUT URLs.
 */
import { createHash } from 'node:crypto';
import exifReader from 'exif-reader';
import type { Logger } from 'pino';
import sharp from 'sharp';
import { request } from 'undici';
import { ImagesParams } from '../pipelines/images';
import { ErrorTypes, type OutputRecord, redactUrl } from '../shared';
import type { Storage } from '../storage';
import { fetchSource, guardedAgent, localFingerprint, httpStatusError, refuseHost, refusedAddress, refusedLiteral } from './fetch';
import { resolveAllowedPath, writeOutputFile } from './files';
import { ItemError, type ItemContext, type ItemWork, type PipelineImplementation } from './types';

export interface ImagesDeps {
  storage: Storage;
  allowedRoots: string[];
  allowedHosts: string[];
  logger: Logger;
  /** Attempts for one pre-signed PUT before the item is handed back as transient. */
  putAttempts?: number;
}

const DEFAULT_MAX_PIXELS = 100_000_000;
const DEFAULT_MAX_SOURCE_BYTES = 50 * 1024 * 1024;
const FIT_MIN_SIDE = 256;
const FIT_MIN_QUALITY = 10;

interface Produced {
  output: string;
  ext: string;
  contentType: string;
  data?: Buffer;
  status?: 'Missing' | 'Unsolved' | 'Skipped';
  reason?: string;
  details?: Record<string, unknown>;
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Sharp's decode errors, classified. */
function classifySharpError(error: unknown, maxPixels: number): ItemError {
  const message = (error as Error).message ?? String(error);
  if (/exceeds pixel limit/i.test(message)) {
    return new ItemError({ type: ErrorTypes.ImageTooLarge, message: 'image has more pixels than allowed (decompression bomb guard)', details: { maxPixels }, step: 'process', cause: error });
  }
  if (/unsupported image format|bad seek|Input buffer is empty/i.test(message)) {
    return new ItemError({ type: ErrorTypes.UnsupportedFormat, message: 'not an image, or an unsupported format', details: { decoder: message.slice(0, 200) }, step: 'process', cause: error });
  }
  return new ItemError({ type: ErrorTypes.CorruptImage, message: 'the image is corrupt or truncated', details: { decoder: message.slice(0, 200) }, step: 'process', cause: error });
}

/** JSON-safe copy of parsed EXIF (dates to ISO strings, buffers to lengths). */
function plainExif(value: unknown, depth = 0): unknown {
  if (depth > 6) return null;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (Buffer.isBuffer(value)) return { bytes: value.length };
  if (Array.isArray(value)) return value.slice(0, 64).map((entry) => plainExif(entry, depth + 1));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([key, entry]) => [key, plainExif(entry, depth + 1)]));
  }
  if (typeof value === 'number' && !Number.isFinite(value)) return null;
  return value;
}

/** Searches quality, then size, for the largest image under the byte budget. */
async function fitUnder(input: sharp.Sharp, width: number, height: number, maxBytes: number, format: 'jpeg' | 'webp'): Promise<Produced> {
  const longest = Math.max(width, height);
  const floorSide = Math.min(longest, FIT_MIN_SIDE);
  let best: { data: Buffer; quality: number; side: number } | undefined;
  for (let side = longest; ; side = Math.max(floorSide, Math.round(side * 0.75))) {
    // Binary search the highest quality that fits at this size.
    let low = FIT_MIN_QUALITY;
    let high = 90;
    let fitting: { data: Buffer; quality: number } | undefined;
    while (low <= high) {
      const quality = Math.floor((low + high) / 2);
      const pipeline = input.clone().resize({ width: side, height: side, fit: 'inside', withoutEnlargement: true });
      const data = await (format === 'webp' ? pipeline.webp({ quality }) : pipeline.flatten({ background: '#ffffff' }).jpeg({ quality, mozjpeg: true })).toBuffer();
      if (!best || data.length < best.data.length) best = { data, quality, side };
      if (data.length <= maxBytes) {
        fitting = { data, quality };
        low = quality + 1;
      } else {
        high = quality - 1;
      }
    }
    const ext = format === 'webp' ? 'webp' : 'jpg';
    const contentType = format === 'webp' ? 'image/webp' : 'image/jpeg';
    if (fitting) return { output: 'fit', ext, contentType, data: fitting.data, details: { quality: fitting.quality, longestSide: side } };
    if (side <= floorSide) {
      return {
        output: 'fit',
        ext,
        contentType,
        status: 'Unsolved',
        reason: `cannot get under ${maxBytes} bytes without going below ${floorSide}px or quality ${FIT_MIN_QUALITY}; best was ${best?.data.length ?? '?'} bytes`,
        details: { maxBytes, bestBytes: best?.data.length, bestQuality: best?.quality, bestLongestSide: best?.side },
      };
    }
  }
}

export function createImagesPipeline(deps: ImagesDeps): PipelineImplementation {
  // Uploads go through the same outbound guard as source fetches (no private targets, no redirects).
  const uploads = guardedAgent({ allowedHosts: deps.allowedHosts });
  async function deliverToUrl(url: string, produced: Produced & { data: Buffer }, signal: AbortSignal): Promise<OutputRecord['location']> {
    const attempts = deps.putAttempts ?? 3;
    let last: ItemError | undefined;
    const literal = refusedLiteral(new URL(url), deps.allowedHosts);
    if (literal) throw refuseHost(new URL(url), literal, 'deliver', produced.output);
    for (let attempt = 1; attempt <= attempts; attempt++) {
      try {
        const response = await request(url, {
          dispatcher: uploads,
          method: 'PUT',
          body: produced.data,
          headers: { 'content-type': produced.contentType, 'content-length': String(produced.data.length) },
          signal,
          headersTimeout: 30_000,
          bodyTimeout: 30_000,
        });
        await response.body.dump();
        if (response.statusCode === 401 || response.statusCode === 403) {
          throw new ItemError({
            type: ErrorTypes.DestinationRejected,
            class: 'fatal',
            message: `destination refused the upload (${response.statusCode}); credentials or pre-signed URLs are invalid`,
            details: { httpStatus: response.statusCode, url: redactUrl(url) },
            step: 'deliver',
            output: produced.output,
          });
        }
        const failure = httpStatusError(response.statusCode, url, 'deliver', response.headers);
        if (!failure) return redactUrl(url);
        if (failure.report.class !== 'transient') throw failure;
        last = failure;
      } catch (error) {
        if (error instanceof ItemError && error.report.class !== 'transient') throw error;
        const refused = refusedAddress(error);
        if (refused) throw refuseHost(new URL(url), refused, 'deliver', produced.output);
        last =
          error instanceof ItemError
            ? error
            : new ItemError({
                type: ErrorTypes.NetworkError,
                message: `upload to ${redactUrl(url)} failed: ${(error as Error).name}`,
                details: { url: redactUrl(url) },
                step: 'deliver',
                output: produced.output,
              });
      }
      if (attempt < attempts) await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** (attempt - 1)));
    }
    throw last ?? new ItemError({ type: ErrorTypes.EndpointUnavailable, message: 'upload failed', details: {}, step: 'deliver' });
  }

  return {
    name: 'images',
    async processItem({ job, entry, signal, log }: ItemContext): Promise<ItemWork> {
      const params = ImagesParams.parse(job.params ?? {});
      const itemId = entry.item.id;
      const maxPixels = params.maxPixels ?? DEFAULT_MAX_PIXELS;
      const wanted = new Set(entry.outputs);

      // fetch: into the job's working storage, with size and sha256 recorded. A working copy kept
      // from an earlier attempt of the same source is used again (a retry does not re-fetch).
      const source = entry.item.source ?? '';
      // Not kept: after `retry --from-start`, or when the file changed since (fixed in place).
      const copy = job.fromStart ? undefined : await deps.storage.readWorkingCopy(job.jobId, itemId);
      const fingerprint = await localFingerprint(source);
      const kept = copy?.source === source && copy.fingerprint === fingerprint ? copy : undefined;
      const fetched =
        kept ??
        (await fetchSource(source, {
          allowedRoots: deps.allowedRoots,
          allowedHosts: deps.allowedHosts,
          maxBytes: params.maxSourceBytes ?? DEFAULT_MAX_SOURCE_BYTES,
          ...(params.timeouts?.connectMs !== undefined ? { connectTimeoutMs: params.timeouts.connectMs } : {}),
          ...(params.timeouts?.readMs !== undefined ? { readTimeoutMs: params.timeouts.readMs } : {}),
          signal,
        }));
      const sourceSha = sha256(fetched.data);
      if (!kept) await deps.storage.writeWorkingCopy(job.jobId, itemId, { source, sha256: sourceSha, data: fetched.data, ...(fingerprint !== undefined ? { fingerprint } : {}) });
      log.debug({ bytes: fetched.data.length, sha256: sourceSha, reused: kept !== undefined }, kept ? 'working copy reused' : 'fetched');
      // Every output is final once the item returns: its working copy is not needed again.
      const done = async (work: ItemWork): Promise<ItemWork> => {
        await deps.storage.dropWorkingCopy(job.jobId, itemId);
        return work;
      };

      // process
      const image = sharp(fetched.data, { limitInputPixels: maxPixels, failOn: 'error', sequentialRead: true });
      let meta: sharp.Metadata;
      try {
        // Header only; pixel decoding errors (truncated data) surface while outputs are made,
        // and any failed output fails the whole item before anything is delivered.
        meta = await image.metadata();
      } catch (error) {
        throw classifySharpError(error, maxPixels);
      }
      const width = meta.autoOrient?.width ?? meta.width ?? 0;
      const height = meta.autoOrient?.height ?? meta.height ?? 0;
      const format = meta.format ?? 'unknown';
      const filter = params.filter;
      const skipReason =
        filter?.minWidth !== undefined && width < filter.minWidth
          ? `width ${width}px is below the minimum ${filter.minWidth}px`
          : filter?.minHeight !== undefined && height < filter.minHeight
            ? `height ${height}px is below the minimum ${filter.minHeight}px`
            : filter?.formats && !filter.formats.includes(format as never)
              ? `format ${format} is not one of ${filter.formats.join(', ')}`
              : undefined;
      if (skipReason) {
        return done({ records: entry.outputs.map((output) => ({ item: itemId, output, status: 'Skipped', reason: skipReason })), bytesIn: fetched.data.length, bytesOut: 0 });
      }

      const oriented = image.clone().autoOrient();
      const produced: Produced[] = [];
      try {
        if (wanted.has('thumbnail')) {
          produced.push({
            output: 'thumbnail',
            ext: 'webp',
            contentType: 'image/webp',
            data: await oriented.clone().resize({ width: 256, height: 256, fit: 'inside', withoutEnlargement: true }).webp({ quality: 80 }).toBuffer(),
          });
        }
        if (wanted.has('preview')) {
          produced.push({
            output: 'preview',
            ext: 'jpg',
            contentType: 'image/jpeg',
            data: await oriented.clone().resize({ width: 1024, height: 1024, fit: 'inside', withoutEnlargement: true }).flatten({ background: '#ffffff' }).jpeg({ quality: 82 }).toBuffer(),
          });
        }
        if (wanted.has('metadata')) {
          const summary = { format, width, height, channels: meta.channels, alpha: meta.hasAlpha ?? false, bytes: fetched.data.length, sha256: sourceSha, space: meta.space, density: meta.density };
          produced.push({ output: 'metadata', ext: 'json', contentType: 'application/json', data: Buffer.from(JSON.stringify(summary, null, 2)) });
        }
        if (wanted.has('exif')) {
          if (!meta.exif || meta.exif.length === 0) {
            produced.push({ output: 'exif', ext: 'json', contentType: 'application/json', status: 'Missing', reason: 'image has no EXIF data' });
          } else {
            let tags: unknown;
            try {
              tags = plainExif(exifReader(meta.exif));
            } catch (error) {
              throw new ItemError({
                type: 'CorruptExif',
                class: 'unprocessable',
                message: 'the EXIF block cannot be parsed',
                details: { bytes: meta.exif.length },
                step: 'process',
                output: 'exif',
                cause: error,
              });
            }
            produced.push({ output: 'exif', ext: 'json', contentType: 'application/json', data: Buffer.from(JSON.stringify(tags, null, 2)) });
          }
        }
        if (wanted.has('fit')) {
          const budget = params.fit?.maxBytes ?? 0;
          produced.push(await fitUnder(oriented, width, height, budget, params.fit?.format ?? 'jpeg'));
        }
      } catch (error) {
        if (error instanceof ItemError) throw error;
        throw classifySharpError(error, maxPixels);
      }

      // deliver
      const records: OutputRecord[] = [];
      let bytesOut = 0;
      const destinationDir = job.destination ? await resolveAllowedPath(job.destination, deps.allowedRoots, 'destination', 'deliver') : undefined;
      for (const out of produced) {
        if (out.status || !out.data) {
          records.push({ item: itemId, output: out.output, status: out.status ?? 'Missing', ...(out.reason ? { reason: out.reason } : {}), ...(out.details ? { details: out.details } : {}) });
          continue;
        }
        const putUrl = entry.item.putUrls?.[out.output] ?? params.putUrls?.[itemId]?.[out.output];
        let location: string | undefined;
        if (putUrl) {
          location = await deliverToUrl(putUrl, { ...out, data: out.data }, signal);
        } else if (destinationDir) {
          location = (await writeOutputFile(destinationDir, itemId, `${out.output}.${out.ext}`, out.data)).location;
        } else {
          throw new ItemError({
            type: 'NoDestination',
            class: 'fatal',
            message: `no destination directory and no pre-signed URL for ${itemId}/${out.output}`,
            details: { item: itemId, output: out.output },
            step: 'deliver',
            output: out.output,
          });
        }
        bytesOut += out.data.length;
        records.push({ item: itemId, output: out.output, status: 'Available', location, bytes: out.data.length, sha256: sha256(out.data), ...(out.details ? { details: out.details } : {}) });
      }
      return done({ records, bytesIn: fetched.data.length, bytesOut });
    },
  };
}
