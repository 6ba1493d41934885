/**
 * `images`, written on the public API: fetch (a working copy kept in job storage) → process with
 * sharp → deliver to a directory or to per-output pre-signed PUT URLs. A retry resumes at the
 * step that failed; a source changed since it was fetched is fetched again.
 */
import { z } from 'zod';
import { type ItemOutputs, type OutputResult, definePipeline, endItem, httpHost } from '../define-pipeline';
import { ItemError } from '../activities/types';
import { ErrorTypes } from '../shared';
import { RetryPresets } from '../shared/pipeline';
import type { WorkFile } from '../storage';
import type * as ImageWork from '../activities/images';

export const ImageOutputs = ['thumbnail', 'preview', 'metadata', 'exif', 'fit'] as const;
export const ImageFormats = ['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif', 'heif', 'svg'] as const;

export const ImagesParams = z
  .object({
    fit: z
      .object({ maxBytes: z.number().int().min(100).max(100_000_000), format: z.enum(['jpeg', 'webp']).optional() })
      .strict()
      .optional(),
    filter: z
      .object({
        minWidth: z.number().int().min(1).optional(),
        minHeight: z.number().int().min(1).optional(),
        formats: z.array(z.enum(ImageFormats)).min(1).optional(),
      })
      .strict()
      .optional(),
    /** Older form of items[].putUrls: { "<item>": { "<output>": "https://..." } }; moved onto the items at start. */
    putUrls: z.record(z.record(z.string().url())).optional(),
    maxPixels: z.number().int().min(1).max(1_000_000_000).optional(),
    maxSourceBytes: z.number().int().min(1).max(2_000_000_000).optional(),
    /** HTTP fetch timeouts (defaults 10 s connect, 30 s read). */
    timeouts: z
      .object({ connectMs: z.number().int().min(10).max(300_000).optional(), readMs: z.number().int().min(10).max(3_600_000).optional() })
      .strict()
      .optional(),
  })
  .strict();
export type ImagesParams = z.infer<typeof ImagesParams>;

const DEFAULT_MAX_SOURCE_BYTES = 50 * 1024 * 1024;
const STEP_TIMEOUT_MS = 5 * 60_000;

/** sharp loads on a worker's first image, not in every client that validates specs. */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a lazy load, by design
const work = (): typeof ImageWork => require('../activities/images') as typeof ImageWork;

/** What the process step keeps for deliver: a status, or bytes in the item's working files. */
type MadeOutput = Omit<ImageWork.Produced, 'data'> & { file?: WorkFile };

export const imagesPipeline = definePipeline({
  name: 'images',
  version: '2',
  description: 'Fetch images (file or http), make thumbnail/preview/metadata/exif/fit, deliver to a directory or pre-signed PUT URLs.',
  outputs: ImageOutputs,
  defaultOutputs: ['thumbnail', 'preview', 'metadata', 'exif'],
  source: 'required',
  destination: 'optional',
  params: ImagesParams,
  // An http(s) source's host is limited by options.rateLimits / FAULTLINE_RATE_LIMITS; files are not.
  rateKey: ({ item }) => httpHost(item.source),
  validate(spec) {
    const issues = [];
    const wantsFit = (spec.outputs ?? []).includes('fit') || spec.items.some((item) => item.outputs?.includes('fit'));
    const params = ImagesParams.safeParse(spec.params ?? {});
    if (wantsFit && params.success && !params.data.fit) {
      issues.push({ path: 'params.fit', code: 'missing_param', message: 'output "fit" needs params.fit.maxBytes' });
    }
    if (!spec.destination && !(params.success && params.data.putUrls) && !spec.items.some((item) => item.putUrls)) {
      issues.push({ path: 'destination', code: 'missing_destination', message: 'give a destination directory (file:///...) or items[].putUrls' });
    }
    return issues;
  },
  steps: [
    {
      name: 'fetch',
      retry: RetryPresets.network,
      itemTimeoutMs: STEP_TIMEOUT_MS,
      sideEffects: false,
      // A source fixed in place (or changed upstream) is fetched again by a retry.
      dependsOn: ({ item, sourceFingerprint }) => sourceFingerprint(item.source ?? ''),
      run: async ({ item, job, openSource, storage, log }) => {
        const params = ImagesParams.parse(job.params ?? {});
        const data = await openSource(item.source ?? '', {
          maxBytes: params.maxSourceBytes ?? DEFAULT_MAX_SOURCE_BYTES,
          ...(params.timeouts?.connectMs !== undefined ? { connectTimeoutMs: params.timeouts.connectMs } : {}),
          ...(params.timeouts?.readMs !== undefined ? { readTimeoutMs: params.timeouts.readMs } : {}),
        });
        const source = await storage.put('source', data);
        log.debug({ bytes: source.bytes, sha256: source.sha256 }, 'fetched');
        return { source };
      },
    },
    {
      name: 'process',
      retry: RetryPresets.local,
      itemTimeoutMs: STEP_TIMEOUT_MS,
      sideEffects: false,
      run: async ({ item, job, input, storage, openSource }) => {
        const params = ImagesParams.parse(job.params ?? {});
        // The working copy, or (gone from storage) the source again.
        const data = (await storage.get('source', input.source)) ?? (await openSource(item.source ?? '', { maxBytes: params.maxSourceBytes ?? DEFAULT_MAX_SOURCE_BYTES }));
        const made = await work().makeOutputs(data, params, new Set(item.outputs), input.source.sha256);
        if ('skipped' in made) {
          await storage.drop();
          const skipped: OutputResult = { status: 'Skipped', reason: made.skipped };
          return endItem(Object.fromEntries(item.outputs.map((output) => [output, skipped])) as ItemOutputs<(typeof ImageOutputs)[number]>);
        }
        const outputs: MadeOutput[] = [];
        for (const { data: bytes, ...produced } of made.produced) {
          outputs.push(bytes ? { ...produced, file: await storage.put(`${produced.output}.${produced.ext}`, bytes) } : produced);
        }
        return { outputs };
      },
    },
    {
      name: 'deliver',
      retry: RetryPresets.network,
      itemTimeoutMs: STEP_TIMEOUT_MS,
      run: async ({ item, job, input, storage, writeOutput }) => {
        const params = ImagesParams.parse(job.params ?? {});
        const results: Record<string, OutputResult> = {};
        for (const out of input.outputs) {
          if (!out.file) {
            results[out.output] = { status: out.status ?? 'Missing', ...(out.reason ? { reason: out.reason } : {}), ...(out.details ? { details: out.details } : {}) };
            continue;
          }
          const bytes = await storage.get(out.file.name, out.file);
          if (!bytes) {
            throw new ItemError({
              type: ErrorTypes.WorkingFileLost,
              message: `the made ${out.output} is gone from job storage; retry with --from-start`,
              details: { file: out.file.name },
              step: 'deliver',
              output: out.output,
            });
          }
          // The older params.putUrls map, for jobs started before clients moved it onto the items.
          const putUrl = item.putUrls?.[out.output] ?? params.putUrls?.[item.id]?.[out.output];
          if (!putUrl && !job.destination) {
            throw new ItemError({
              type: 'NoDestination',
              class: 'fatal',
              message: `no destination directory and no pre-signed URL for ${item.id}/${out.output}`,
              details: { item: item.id, output: out.output },
              step: 'deliver',
              output: out.output,
            });
          }
          const written = await writeOutput(`${out.output}.${out.ext}`, bytes, { output: out.output, contentType: out.contentType, ...(putUrl ? { putUrl } : {}) });
          results[out.output] = { status: 'Available', ...written, ...(out.details ? { details: out.details } : {}) };
        }
        // Every output is final: the item's working files are not needed again.
        await storage.drop();
        return results as ItemOutputs<(typeof ImageOutputs)[number]>;
      },
    },
  ],
});
