/**
 * `deliver`: each item is a record (inline JSON, or the body at its source) sent to an HTTP
 * endpoint, the way a medical-imaging router sends studies to destinations. Built on the public
 * `definePipeline` API with nothing private: the outbound guard, status classification and
 * Retry-After come from the step context.
 *
 * 2xx → Available (response status and id) · 404/410 → Missing · other 4xx → Failed
 * (`DeliveryRejected`, unprocessable, with a body excerpt) · 408/429/5xx/resets → transient,
 * Retry-After honoured. An idempotency key per item (`<jobId>/<itemId>`) makes re-sends safe; an
 * optional HMAC signature (`Faultline-Signature`, as webhooks) proves the sender.
 */
import { z } from 'zod';
import { definePipeline, httpHost } from '../define-pipeline';
import { signWebhook, SIGNATURE_HEADER } from '../secrets';
import { ErrorTypes, RetryPresets, redactUrl } from '../shared';
import { ItemError } from '../activities/types';

export const DeliverParams = z
  .object({
    /** The endpoint every record goes to. */
    url: z.string().url(),
    method: z.enum(['POST', 'PUT']).optional(),
    /** Headers sent with every request (e.g. an API key). */
    headers: z.record(z.string()).optional(),
    /** Header carrying the item's idempotency key (default `Idempotency-Key`). */
    idempotencyHeader: z.string().min(1).optional(),
    /** HMAC-SHA256 signature of every body, with a secret the workers hold (`env:NAME`). */
    signing: z
      .object({ secretRef: z.string().regex(/^env:[A-Za-z_][A-Za-z0-9_]*$/, 'secretRef is env:NAME') })
      .strict()
      .optional(),
    /** Requests in flight per endpoint host, per worker process (default 4). */
    perHostConcurrency: z.number().int().min(1).max(256).optional(),
    timeoutMs: z.number().int().min(100).max(600_000).optional(),
  })
  .strict();
export type DeliverParams = z.infer<typeof DeliverParams>;

const DeliverItemParams = z
  .object({
    /** The record to send as JSON (or give the item a `source` whose bytes are sent). */
    record: z.unknown().optional(),
    contentType: z.string().min(1).optional(),
  })
  .strict();

/** Requests in flight per host in this process, and who waits for a slot. */
const hostSlots = new Map<string, { inFlight: number; waiting: (() => void)[] }>();
async function withHostSlot<T>(host: string, limit: number, signal: AbortSignal, work: () => Promise<T>): Promise<T> {
  let slot = hostSlots.get(host);
  if (!slot) hostSlots.set(host, (slot = { inFlight: 0, waiting: [] }));
  const held = slot;
  while (held.inFlight >= limit) {
    await new Promise<void>((resolve) => held.waiting.push(resolve));
    signal.throwIfAborted();
  }
  held.inFlight += 1;
  try {
    return await work();
  } finally {
    held.inFlight -= 1;
    held.waiting.shift()?.();
  }
}

/** The id a receiver gave the delivered record: a JSON body's `id`, else its Location header. */
function receiverId(body: Buffer, headers: Record<string, string | string[] | undefined>): string | undefined {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { id?: unknown };
    if (typeof parsed.id === 'string' || typeof parsed.id === 'number') return String(parsed.id);
  } catch {
    // not JSON
  }
  const location = headers.location;
  return typeof location === 'string' ? location : undefined;
}

const EXCERPT_CHARS = 300;

export const deliverPipeline = definePipeline({
  name: 'deliver',
  version: '1',
  description: 'Deliver each record (inline JSON or its source) to an HTTP endpoint: idempotency key per item, optional HMAC signature, statuses by response.',
  outputs: ['delivery'],
  source: 'optional',
  destination: 'none',
  params: DeliverParams,
  itemParams: DeliverItemParams,
  // Every item goes to the endpoint's host: options.rateLimits / FAULTLINE_RATE_LIMITS limit it.
  rateKey: ({ job }) => httpHost((job.params as { url?: string } | undefined)?.url),
  validate(spec) {
    const issues = [];
    if (!DeliverParams.safeParse(spec.params ?? {}).success && spec.params === undefined) {
      issues.push({ path: 'params.url', code: 'missing_param', message: 'deliver needs params.url, the endpoint' });
    }
    for (const [index, item] of spec.items.entries()) {
      const record = (item.params as { record?: unknown } | undefined)?.record;
      if (record === undefined && !item.source) issues.push({ path: `items[${index}]`, code: 'missing_record', message: 'give params.record or a source for every item' });
    }
    return issues;
  },
  steps: [
    {
      name: 'deliver',
      retry: RetryPresets.network,
      itemTimeoutMs: 2 * 60_000,
      run: async (ctx) => {
        const params = DeliverParams.parse(ctx.job.params ?? {});
        const { record, contentType } = ctx.item.params;
        const body = record !== undefined ? JSON.stringify(record) : await ctx.openSource(ctx.item.source ?? '', { maxBytes: 50_000_000 });
        const headers: Record<string, string> = {
          'content-type': contentType ?? (record !== undefined ? 'application/json' : 'application/octet-stream'),
          ...params.headers,
          [params.idempotencyHeader ?? 'Idempotency-Key']: `${ctx.job.jobId}/${ctx.item.id}`,
        };
        if (params.signing) {
          const name = params.signing.secretRef.slice('env:'.length);
          const secret = process.env[name];
          if (!secret) throw new ItemError({ type: ErrorTypes.DestinationRejected, class: 'fatal', message: `the signing secret ${name} is not set on this worker`, step: 'deliver' });
          headers[SIGNATURE_HEADER] = signWebhook(typeof body === 'string' ? body : body.toString('utf8'), secret, Math.floor(Date.now() / 1000));
        }
        const host = new URL(params.url).host;
        const response = await withHostSlot(host, params.perHostConcurrency ?? 4, ctx.signal, () =>
          ctx.fetch(params.url, { method: params.method ?? 'POST', headers, body, ...(params.timeoutMs !== undefined ? { timeoutMs: params.timeoutMs } : {}), maxBodyBytes: 64_000 }),
        );
        if (response.status >= 200 && response.status < 300) {
          const id = receiverId(response.body, response.headers);
          return { delivery: { status: 'Available', value: { status: response.status, ...(id !== undefined ? { id } : {}) } } };
        }
        if (response.status === 404 || response.status === 410) {
          return { delivery: { status: 'Missing', reason: `the endpoint answered ${response.status}`, details: { httpStatus: response.status } } };
        }
        const excerpt = response.body.toString('utf8').slice(0, EXCERPT_CHARS);
        if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
          throw new ItemError({
            type: ErrorTypes.DeliveryRejected,
            class: 'unprocessable',
            message: `${redactUrl(params.url)} rejected the record (${response.status}): ${excerpt}`,
            details: { httpStatus: response.status, body: excerpt },
            step: 'deliver',
          });
        }
        throw ctx.statusError(response, params.url) ?? new ItemError({ type: ErrorTypes.EndpointUnavailable, message: `unexpected status ${response.status}`, step: 'deliver' });
      },
    },
  ],
});
