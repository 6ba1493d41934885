/**
 * The images pipeline's image work (src/pipelines/images.ts has its steps): decode and make the
 * outputs with sharp (thumbnail, preview, metadata, exif, fit; filters).
 */
import { createHash } from 'node:crypto';
import exifReader from 'exif-reader';
import sharp from 'sharp';
import type { ImagesParams } from '../pipelines/images';
import { ErrorTypes } from '../shared';
import { ItemError } from './types';

const DEFAULT_MAX_PIXELS = 100_000_000;
const FIT_MIN_SIDE = 256;
const FIT_MIN_QUALITY = 10;

/** One output made by the process step: bytes to deliver, or a status without bytes. */
export interface Produced {
  output: string;
  ext: string;
  contentType: string;
  data?: Buffer;
  status?: 'Missing' | 'Unsolved' | 'Skipped';
  reason?: string;
  details?: Record<string, unknown>;
}

export function sha256(data: Buffer): string {
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

/** Decodes the source and makes the wanted outputs; `skipped` when a filter leaves the image out. */
export async function makeOutputs(data: Buffer, params: ImagesParams, wanted: ReadonlySet<string>, sourceSha: string): Promise<{ skipped: string } | { produced: Produced[] }> {
  const maxPixels = params.maxPixels ?? DEFAULT_MAX_PIXELS;
  const image = sharp(data, { limitInputPixels: maxPixels, failOn: 'error', sequentialRead: true });
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
  if (skipReason) return { skipped: skipReason };

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
      const summary = { format, width, height, channels: meta.channels, alpha: meta.hasAlpha ?? false, bytes: data.length, sha256: sourceSha, space: meta.space, density: meta.density };
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

  return { produced };
}
