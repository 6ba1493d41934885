/** `images`: fetch → process (sharp) → deliver. Definition only; the work is in src/activities/images.ts. */
import { z } from 'zod';
import { RetryPresets, definePipelineDefinition } from '../shared/pipeline';

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

export const imagesPipeline = definePipelineDefinition({
  name: 'images',
  description: 'Fetch images (file or http), make thumbnail/preview/metadata/exif/fit, deliver to a directory or pre-signed PUT URLs.',
  outputs: ImageOutputs,
  defaultOutputs: ['thumbnail', 'preview', 'metadata', 'exif'],
  steps: [
    { name: 'fetch', retry: RetryPresets.network, itemTimeoutMs: 5 * 60_000 },
    { name: 'process', retry: RetryPresets.local, itemTimeoutMs: 5 * 60_000 },
    { name: 'deliver', retry: RetryPresets.network, itemTimeoutMs: 5 * 60_000 },
  ],
  source: 'required',
  destination: 'optional',
  params: ImagesParams,
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
});
