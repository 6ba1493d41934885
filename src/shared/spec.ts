/**
 * The job spec (CONTRACT.md "Job spec"): zod schema plus extended validation. The spec travels
 * as the user wrote it (plain JSON, durations as strings); `resolveJobOptions` turns it into
 * numbers for the engine.
 */
import { z } from 'zod';
import { DurationSchema } from './duration';
import type { PipelineDefinition, PipelinePlan, PipelineRegistry, PipelineWork, RetryPolicy } from './pipeline';
import { validateWithSchema } from './standard-schema';
import { OutputStatuses, type OutputStatus } from './result';
import { RateLimitsSchema } from './rate-limits';

export const LIMITS = {
  maxItems: 1_000_000,
  maxItemJsonBytes: 64 * 1024,
  maxIdLength: 128,
  maxSourceLength: 8192,
  maxBatchSize: 1_000,
  maxConcurrency: 200,
  maxCrashBudget: 100,
  maxRetryWindowMs: 30 * 24 * 3600 * 1000,
} as const;

export const ITEM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** Job ids name storage folders and Web UI links: the same safe alphabet as item ids (so no two ids share a folder and none escapes it), room for `.retry-N` suffixes. */
export const JOB_ID_PATTERN = ITEM_ID_PATTERN;
export const MAX_JOB_ID_LENGTH = 200;

/** Why a caller-chosen job id (`--id`) is refused, or undefined when it is fine. */
export function jobIdProblem(jobId: string): string | undefined {
  if (jobId.length === 0 || jobId.length > MAX_JOB_ID_LENGTH) return `job ids have 1 to ${MAX_JOB_ID_LENGTH} characters`;
  if (!JOB_ID_PATTERN.test(jobId)) return 'job ids use letters, digits, ".", "_" and "-", starting with a letter or digit';
  return undefined;
}
export const SUPPORTED_SOURCE_SCHEMES = ['file:', 'http:', 'https:'] as const;

const durationString = z.string().superRefine((raw, ctx) => {
  const parsed = DurationSchema.safeParse(raw);
  if (!parsed.success) ctx.addIssue({ code: z.ZodIssueCode.custom, message: parsed.error.issues[0]?.message ?? 'bad duration' });
});

export const ItemSchema = z
  .object({
    id: z.string().min(1).max(LIMITS.maxIdLength).regex(ITEM_ID_PATTERN, 'item ids use letters, digits, ".", "_" and "-", starting with a letter or digit'),
    source: z.string().min(1).max(LIMITS.maxSourceLength).optional(),
    outputs: z.array(z.string().min(1)).min(1).optional(),
    params: z.record(z.unknown()).optional(),
    /** Pre-signed upload URL per output of this item (per-item data travels only with its item). */
    putUrls: z.record(z.string().url()).optional(),
  })
  .strict();
export type JobItem = z.infer<typeof ItemSchema>;

const PLAIN_ITEM_KEYS = new Set(['id', 'source', 'outputs', 'params']);
const isPlainObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype;

/**
 * True for an item `ItemSchema` accepts and would return unchanged (plain JSON, no `putUrls`):
 * the shape nearly every item has. Checked by hand because zod walks and copies each item
 * (~1 µs an item, twice per start: the client and the worker's spec check); anything else, valid
 * or not, goes through `ItemSchema` for its exact issues.
 */
function isPlainValidItem(value: unknown): value is JobItem {
  if (!isPlainObject(value)) return false;
  for (const key of Object.keys(value)) if (!PLAIN_ITEM_KEYS.has(key)) return false;
  const { id, source, outputs, params } = value;
  if (typeof id !== 'string' || id.length < 1 || id.length > LIMITS.maxIdLength || !ITEM_ID_PATTERN.test(id)) return false;
  if (source !== undefined && (typeof source !== 'string' || source.length < 1 || source.length > LIMITS.maxSourceLength)) return false;
  if (outputs !== undefined) {
    if (!Array.isArray(outputs) || outputs.length < 1) return false;
    for (let index = 0; index < outputs.length; index++) {
      const output: unknown = outputs[index];
      if (typeof output !== 'string' || output.length < 1) return false;
    }
  }
  // zod drops an own `__proto__` key from a record it copies.
  return params === undefined || (isPlainObject(params) && !Object.hasOwn(params, '__proto__'));
}

/** `ItemSchema` with the common case checked by hand (`isPlainValidItem`): same results, same issues. */
class FastItemSchema extends z.ZodType<JobItem, z.ZodTypeDef, unknown> {
  _parse(input: z.ParseInput): z.ParseReturnType<JobItem> {
    if (isPlainValidItem(input.data)) return z.OK(input.data);
    return ItemSchema._parse(input);
  }
}
const FastItem = new FastItemSchema({});

export const WebhookSchema = z
  .object({
    url: z.string().url(),
    /** Plain secret: only accepted by clients, which encrypt it before anything is started. */
    secret: z.string().min(1).optional(),
    /** `v1:<iv>:<tag>:<ciphertext>` made with the shared key (FAULTLINE_SECRET_KEY). */
    secretEncrypted: z.string().min(1).optional(),
    /** Name of a secret the worker holds, e.g. `env:WEBHOOK_SECRET`. */
    secretRef: z
      .string()
      .regex(/^env:[A-Za-z_][A-Za-z0-9_]*$/, 'secretRef looks like env:NAME')
      .optional(),
  })
  .strict();

export const RetryOptionsSchema = z
  .object({
    maxAttempts: z.union([z.number().int().min(0).max(1_000_000), z.literal('unlimited')]).optional(),
    initialInterval: durationString.optional(),
    backoffCoefficient: z.number().min(1).max(100).optional(),
    maximumInterval: durationString.optional(),
  })
  .strict();

export const OptionsSchema = z
  .object({
    toleratedFailurePercent: z.number().min(0).max(100).optional(),
    toleratedFailureCount: z.number().int().min(0).optional(),
    retryWindow: durationString.optional(),
    batchSize: z.number().int().min(1).max(LIMITS.maxBatchSize).optional(),
    retry: RetryOptionsSchema.optional(),
    crashBudget: z.number().int().min(1).max(LIMITS.maxCrashBudget).optional(),
    heartbeatTimeout: durationString.optional(),
    concurrency: z.number().int().min(1).max(LIMITS.maxConcurrency).optional(),
    shardSize: z.number().int().min(10).max(5_000).optional(),
    /** Advanced: history length at which job and shard workflows continue-as-new. */
    rotateAfterEvents: z.number().int().min(100).max(40_000).optional(),
    archive: z.boolean().optional(),
    /** The job writes its records grouped by status there when a round settles (like `faultline export`). */
    export: z
      .object({
        destination: z.string().min(1),
        format: z.enum(['ndjson', 'csv']).optional(),
        statuses: z.array(z.enum(OutputStatuses)).min(1).optional(),
      })
      .strict()
      .optional(),
    webhook: WebhookSchema.optional(),
    /** Task queue priority of the job's tasks: 1 (first) … 5 (last); default 3. */
    priority: z.number().int().min(1).max(5).optional(),
    /** Who the job is for: jobs of one tenant share the workers' fair share of that tenant (default: the job id). */
    tenant: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9][A-Za-z0-9._:@-]*$/, 'a tenant is letters, digits, . _ : @ - (at most 64)')
      .optional(),
    /** The tenant's share relative to others (fairness weight); default 1. */
    weight: z.number().min(0.001).max(1000).optional(),
    /** Per rate key (a host, or `*` for every key): `{perSecond, concurrency}`, held across every worker and job. */
    rateLimits: RateLimitsSchema.optional(),
    /**
     * A job that fits one batch runs it on the worker that runs its workflow (default true). Off for a
     * long single item that must show heartbeats and answer `status` at once while it runs.
     */
    runLocally: z.boolean().optional(),
  })
  .strict();

export const JobSpecSchema = z
  .object({
    pipeline: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, 'a pipeline name: letters, digits, . _ - (at most 100)'),
    items: z.array(FastItem).max(LIMITS.maxItems),
    outputs: z.array(z.string().min(1)).min(1).optional(),
    params: z.record(z.unknown()).optional(),
    destination: z.string().min(1).optional(),
    options: OptionsSchema.optional(),
    /** Free-form labels shown in the Web UI summary. */
    labels: z.record(z.string()).optional(),
  })
  .strict();
export type JobSpec = z.infer<typeof JobSpecSchema>;

export interface SpecIssue {
  /** JSON path such as `items[3].source`. */
  path: string;
  code: string;
  message: string;
}

export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${part}` : part;
  return out || '(root)';
}

export type SpecValidation = { ok: true; spec: JobSpec; pipeline: PipelineDefinition } | { ok: false; issues: SpecIssue[] };

const MAX_REPORTED_ISSUES = 100;

/** Schema + extended validation. Returns every issue found (capped), each with its JSON path. */
export function validateJobSpec(input: unknown, registry: PipelineRegistry): SpecValidation {
  const parsed = JobSpecSchema.safeParse(input);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => ({ path: formatPath(issue.path), code: issue.code, message: issue.message }));
    return { ok: false, issues: [...issues, ...duplicateIdIssues(input)].slice(0, MAX_REPORTED_ISSUES) };
  }
  const spec = parsed.data;
  const issues: SpecIssue[] = [];
  const add = (path: string, code: string, message: string) => {
    if (issues.length < MAX_REPORTED_ISSUES) issues.push({ path, code, message });
  };
  const pipeline = registry[spec.pipeline];
  if (!pipeline) {
    add('pipeline', 'unknown_pipeline', `unknown pipeline "${spec.pipeline}"; known: ${Object.keys(registry).join(', ')}`);
    return { ok: false, issues };
  }
  const known = new Set(pipeline.outputs);
  const checkOutputs = (outputs: readonly string[] | undefined, path: string) => {
    const seen = new Set<string>();
    outputs?.forEach((name, index) => {
      if (!pipeline.openOutputs && !known.has(name)) add(`${path}[${index}]`, 'unknown_output', `pipeline "${pipeline.name}" has no output "${name}"; known: ${pipeline.outputs.join(', ')}`);
      if (seen.has(name)) add(`${path}[${index}]`, 'duplicate_output', `output "${name}" is listed twice`);
      seen.add(name);
    });
  };
  checkOutputs(spec.outputs, 'outputs');

  if (pipeline.params && spec.params !== undefined) {
    const result = validateWithSchema(pipeline.params, spec.params);
    if (!result.ok) for (const issue of result.issues) add(formatPath(['params', ...issue.path]), issue.code, issue.message);
  }
  if (pipeline.destination === 'required' && !spec.destination) add('destination', 'missing_destination', `pipeline "${pipeline.name}" needs a destination`);
  if (pipeline.destination === 'none' && spec.destination) add('destination', 'unexpected_destination', `pipeline "${pipeline.name}" takes no destination`);
  if (spec.destination) checkUri(spec.destination, 'destination', add, ['file:', 's3:']);
  if (spec.options?.export) checkUri(spec.options.export.destination, 'options.export.destination', add, ['file:', 's3:']);
  if (spec.destination?.startsWith('s3:') && spec.options?.archive) add('options.archive', 'archive_needs_folder', 'options.archive packs a file:// destination; an s3:// destination has no archive');

  const ids = new Map<string, number>();
  // Every item without params is checked against the same `{}`: once per spec, not once per item (millions in an items file).
  let paramlessIssues: ReturnType<typeof validateWithSchema> | undefined;
  // Items mostly repeat a few flat params (`{ "cpuMs": 1 }`): each such object is checked once by
  // its JSON, which names it exactly (`flatParamsKey`). Params schemas are pure functions of the value.
  const checkedParams = new Map<string, ReturnType<typeof validateWithSchema>>();
  const itemParamsCheck = (params: unknown) => {
    if (!pipeline.itemParams) return undefined;
    if (params === undefined) return (paramlessIssues ??= validateWithSchema(pipeline.itemParams, {}));
    const key = flatParamsKey(params);
    if (key === undefined) return validateWithSchema(pipeline.itemParams, params);
    let result = checkedParams.get(key);
    if (!result) checkedParams.set(key, (result = validateWithSchema(pipeline.itemParams, params)));
    return result;
  };
  spec.items.forEach((item, index) => {
    // Paths are built only for an issue: most items have none.
    const previous = ids.get(item.id);
    if (previous !== undefined) add(`items[${index}].id`, 'duplicate_id', `item id "${item.id}" is already used by items[${previous}]`);
    else ids.set(item.id, index);
    if (pipeline.source === 'required' && !item.source) add(`items[${index}].source`, 'missing_source', `pipeline "${pipeline.name}" needs a source for every item`);
    if (pipeline.source === 'none' && item.source) add(`items[${index}].source`, 'unexpected_source', `pipeline "${pipeline.name}" takes no sources`);
    if (item.source) checkUri(item.source, `items[${index}].source`, add, SUPPORTED_SOURCE_SCHEMES);
    if (item.outputs) checkOutputs(item.outputs, `items[${index}].outputs`);
    const params = itemParamsCheck(item.params);
    if (params && !params.ok) for (const issue of params.issues) add(formatPath(['items', index, 'params', ...issue.path]), issue.code, issue.message);
    if (JSON.stringify(item).length > LIMITS.maxItemJsonBytes) add(`items[${index}]`, 'item_too_large', `item is larger than ${LIMITS.maxItemJsonBytes} bytes of JSON`);
  });

  const options = spec.options ?? {};
  if (options.toleratedFailureCount !== undefined && options.toleratedFailureCount > spec.items.length && spec.items.length > 0) {
    add('options.toleratedFailureCount', 'out_of_range', `toleratedFailureCount ${options.toleratedFailureCount} is more than the ${spec.items.length} items of the job`);
  }
  if (options.retryWindow && DurationSchema.parse(options.retryWindow) > LIMITS.maxRetryWindowMs) {
    add('options.retryWindow', 'out_of_range', 'retryWindow may be at most 30d');
  }
  const hb = options.heartbeatTimeout ? DurationSchema.parse(options.heartbeatTimeout) : undefined;
  if (hb !== undefined && (hb < 1_000 || hb > 600_000)) add('options.heartbeatTimeout', 'out_of_range', 'heartbeatTimeout must be between 1s and 10m');
  const webhook = options.webhook;
  if (webhook) {
    const forms = [webhook.secret, webhook.secretEncrypted, webhook.secretRef].filter((form) => form !== undefined).length;
    if (forms !== 1) add('options.webhook', 'webhook_secret', 'give exactly one of secret, secretEncrypted or secretRef');
    if (!/^https?:$/.test(safeProtocol(webhook.url))) add('options.webhook.url', 'unsupported_scheme', 'webhook url must be http(s)');
  }
  if (pipeline.validate) for (const issue of pipeline.validate(spec)) add(issue.path, issue.code, issue.message);
  return issues.length > 0 ? { ok: false, issues } : { ok: true, spec, pipeline };
}

/**
 * The JSON of a params object whose values are all strings, finite numbers (not -0), booleans or
 * null — which its JSON tells apart from every other value — or undefined for any other params.
 */
function flatParamsKey(params: unknown): string | undefined {
  if (!isPlainObject(params) || Object.hasOwn(params, '__proto__')) return undefined;
  for (const key in params) {
    const value = params[key];
    if (typeof value === 'number' ? !Number.isFinite(value) || Object.is(value, -0) : value !== null && typeof value !== 'string' && typeof value !== 'boolean') return undefined;
  }
  return JSON.stringify(params);
}

/** Duplicate ids are worth reporting even when the schema already failed elsewhere. */
function duplicateIdIssues(input: unknown): SpecIssue[] {
  const items = (input as { items?: unknown } | null)?.items;
  if (!Array.isArray(items)) return [];
  const seen = new Map<string, number>();
  const issues: SpecIssue[] = [];
  items.forEach((item, index) => {
    const id = (item as { id?: unknown } | null)?.id;
    if (typeof id !== 'string') return;
    const previous = seen.get(id);
    if (previous !== undefined) issues.push({ path: `items[${index}].id`, code: 'duplicate_id', message: `item id "${id}" is already used by items[${previous}]` });
    else seen.set(id, index);
  });
  return issues;
}

function safeProtocol(raw: string): string {
  try {
    return new URL(raw).protocol;
  } catch {
    return '';
  }
}

function checkUri(raw: string, path: string, add: (path: string, code: string, message: string) => void, schemes: readonly string[]) {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    add(path, 'invalid_uri', `"${raw.slice(0, 200)}" is not an absolute URI (use file:///path or https://...)`);
    return;
  }
  if (!schemes.includes(url.protocol)) add(path, 'unsupported_scheme', `scheme "${url.protocol.replace(/:$/, '')}" is not supported here; use ${schemes.map((s) => s.replace(/:$/, '')).join(', ')}`);
  else if (url.protocol === 'file:' && url.host !== '' && url.host !== 'localhost') add(path, 'invalid_uri', 'file URIs must be local (file:///path)');
}

export interface ResolvedOptions {
  batchSize: number;
  concurrency: number;
  crashBudget: number;
  heartbeatTimeoutMs: number;
  retryWindowMs: number;
  shardSize: number;
  rotateAfterEvents: number;
  toleratedFailureCount?: number;
  toleratedFailurePercent?: number;
  /** Overrides every step's policy when set. */
  retryOverride?: Partial<RetryPolicy>;
  archive: boolean;
  export?: { destination: string; format?: 'ndjson' | 'csv'; statuses?: OutputStatus[] };
  /** A task priority set while the job runs (`set --priority`); new batches and slices take it. */
  priority?: number;
}

export const DEFAULTS = {
  priority: 3,
  weight: 1,
  crashBudget: 3,
  heartbeatTimeoutMs: 20_000,
  retryWindowMs: 0,
  concurrency: 32,
  shardSize: 500,
  maxShardSize: 2_000,
  rotateAfterEvents: 8_000,
  maxAutoBatchSize: 100,
  /** Jobs above this many items get larger batches and slices (`LargeJobSizing`). */
  largeJobItems: 100_000,
} as const;

/**
 * How a job sizes its batches and slices above `DEFAULTS.largeJobItems`, fixed in its first run (a
 * running job keeps the sizing it started with): `none` (before patch largeJobSizing), `v1`
 * (before patch largeJobSizingV2), `v2`.
 */
export type LargeJobSizing = 'none' | 'v1' | 'v2';

/** Per sizing: a batch is this fraction of a large job, up to `maxBatch` items; a slice `batchesPerSlice` batches, up to `maxShard`. */
const LARGE_JOB_SIZES = {
  v1: { batchFraction: 1_000, maxBatch: 1_000, batchesPerSlice: 20, maxShard: 10_000 },
  // Each batch and each heartbeat costs the server about the same whatever its size. Slices stay at 20,000 items: with 50,000 the
  // workers' memory (8 slices' item states at once) passed 1 GiB at 1,000,000 items and throughput fell (BENCHMARKS.md).
  v2: { batchFraction: 200, maxBatch: 5_000, batchesPerSlice: 4, maxShard: 20_000 },
} as const;

/**
 * Sizing for pipelines whose items compute (`work: 'cpu'`): the items in flight are not a job's I/O
 * concurrency there, so fewer, larger batches cost the server and the workflow less, and a worker
 * process that takes in more batches than its cores can run only makes the processes' shares
 * unequal. Batches are guided: each takes `1/batchesAhead` of the slice's items still queued, down
 * to `1/smallestFraction` of the slice, so the last batches are short and every process ends at about
 * the same time whatever the number of processes (up to about `batchesAhead` busy slots in all).
 */
export const CPU_WORK_SIZES = { batchesAhead: 8, smallestFraction: 100, maxShard: 20_000, fewestAhead: 2, mostAhead: 64 } as const;

/**
 * The next batch of a `work: 'cpu'` slice: `queued` items still to start of the slice's `sliceItems`,
 * at most `cap`; each takes `1/ahead` of the queue (`ahead`: the batches kept in flight).
 */
export function cpuBatchSize(queued: number, sliceItems: number, cap: number, ahead: number = CPU_WORK_SIZES.batchesAhead): number {
  const smallest = Math.ceil(sliceItems / CPU_WORK_SIZES.smallestFraction);
  return Math.max(1, Math.min(cap, Math.max(smallest, Math.ceil(queued / ahead))));
}

/**
 * A `work: 'cpu'` slice's first `ahead` batches (`launched` started before this one), each shorter
 * than the one before, from the whole guided `size` down to about half of it: the first batches all
 * start at once, and equal ones sharing a process's core all ended at once, leaving it without work
 * for the workflow task that sends the next (~35 ms a process at 5,000 items of 1 ms). Later
 * batches keep their guided size.
 */
export function firstWaveBatchSize(size: number, launched: number, ahead: number): number {
  return launched < ahead ? Math.max(1, Math.ceil(size * (1 - launched / (2 * ahead)))) : size;
}

/**
 * Batches a `work: 'cpu'` slice keeps in flight: one per slot its fleet keeps busy (`PipelinePlan.cpuSlots`),
 * within `fewestAhead`–`mostAhead`; `batchesAhead` when the fleet was not counted. More than the
 * slots only wait on the server, which starts them in any order (a large one started last runs
 * alone at the end); fewer leave slots idle.
 */
export function cpuBatchesAhead(cpuSlots: number | undefined): number {
  if (cpuSlots === undefined || !Number.isFinite(cpuSlots) || cpuSlots < 1) return CPU_WORK_SIZES.batchesAhead;
  return Math.min(CPU_WORK_SIZES.mostAhead, Math.max(CPU_WORK_SIZES.fewestAhead, Math.floor(cpuSlots)));
}

/**
 * Default batch size grows with the job: one activity per item for small jobs, up to 100 items per
 * activity; a large job's batches grow further (`LARGE_JOB_SIZES`), since each batch costs the
 * server the same whatever its size.
 */
export function defaultBatchSize(itemCount: number, sizing: LargeJobSizing = 'none'): number {
  if (sizing !== 'none' && itemCount > DEFAULTS.largeJobItems) {
    const { batchFraction, maxBatch } = LARGE_JOB_SIZES[sizing];
    return Math.min(maxBatch, Math.max(DEFAULTS.maxAutoBatchSize, Math.ceil(itemCount / batchFraction)));
  }
  return Math.max(1, Math.min(DEFAULTS.maxAutoBatchSize, Math.ceil(itemCount / 64)));
}

/** About twenty batches per shard: small shard histories, few shards (larger for large jobs, whose slices keep items out of history). */
export function defaultShardSize(batchSize: number, sizing: LargeJobSizing = 'none', itemCount = 0): number {
  if (sizing === 'none') return Math.min(DEFAULTS.maxShardSize, Math.max(DEFAULTS.shardSize, batchSize * 20));
  // v1 sized every job's slices this way; v2 only large ones.
  const { batchesPerSlice, maxShard } = LARGE_JOB_SIZES[sizing === 'v2' && itemCount <= DEFAULTS.largeJobItems ? 'v1' : sizing];
  return Math.min(maxShard, Math.max(DEFAULTS.shardSize, batchSize * batchesPerSlice));
}

/**
 * The retry window a job's options ask for, in ms. 0 (the default): the job closes as soon as its
 * first round settles — the workflow (`retryWindowMs`) and the client (how it reads the result) both decide from this.
 */
export function retryWindowMsOf(options: JobSpec['options']): number {
  return options?.retryWindow ? DurationSchema.parse(options.retryWindow) : DEFAULTS.retryWindowMs;
}

/**
 * `sizing`: how a large job's batches and slices are sized (see `LargeJobSizing`); `work: 'cpu'`
 * (the job's pipeline plan says so): one slice up to 20,000 items, batches up to an eighth of it
 * (guided smaller by `cpuBatchSize` as a slice runs). Plans recorded before `work` existed never
 * say so, so running jobs replay with the sizing they ran with and need no patch.
 */
export function resolveJobOptions(spec: Pick<JobSpec, 'options'>, itemCount: number, sizing: LargeJobSizing = 'none', work: PipelineWork = 'io'): ResolvedOptions {
  const options = spec.options ?? {};
  const retry = options.retry;
  const retryOverride: Partial<RetryPolicy> | undefined = retry
    ? {
        ...(retry.maxAttempts !== undefined ? { maxAttempts: retry.maxAttempts === 'unlimited' ? 0 : retry.maxAttempts } : {}),
        ...(retry.initialInterval !== undefined ? { initialIntervalMs: DurationSchema.parse(retry.initialInterval) } : {}),
        ...(retry.backoffCoefficient !== undefined ? { backoffCoefficient: retry.backoffCoefficient } : {}),
        ...(retry.maximumInterval !== undefined ? { maximumIntervalMs: DurationSchema.parse(retry.maximumInterval) } : {}),
      }
    : undefined;
  // cpu: its slices (one up to maxShard), and its first batch, the largest of a slice.
  const cpuShard = work === 'cpu' ? (options.shardSize ?? Math.min(CPU_WORK_SIZES.maxShard, Math.max(DEFAULTS.shardSize, itemCount))) : undefined;
  const firstSlice = cpuShard === undefined ? undefined : Math.min(itemCount, cpuShard);
  const batchSize = options.batchSize ?? (firstSlice === undefined ? defaultBatchSize(itemCount, sizing) : cpuBatchSize(firstSlice, firstSlice, LIMITS.maxBatchSize));
  return {
    batchSize,
    concurrency: options.concurrency ?? DEFAULTS.concurrency,
    crashBudget: options.crashBudget ?? DEFAULTS.crashBudget,
    heartbeatTimeoutMs: options.heartbeatTimeout ? DurationSchema.parse(options.heartbeatTimeout) : DEFAULTS.heartbeatTimeoutMs,
    retryWindowMs: retryWindowMsOf(options),
    shardSize: cpuShard ?? options.shardSize ?? defaultShardSize(batchSize, sizing, itemCount),
    rotateAfterEvents: options.rotateAfterEvents ?? DEFAULTS.rotateAfterEvents,
    ...(options.toleratedFailureCount !== undefined ? { toleratedFailureCount: options.toleratedFailureCount } : {}),
    ...(options.toleratedFailurePercent !== undefined ? { toleratedFailurePercent: options.toleratedFailurePercent } : {}),
    ...(retryOverride ? { retryOverride } : {}),
    archive: options.archive ?? false,
    ...(options.export ? { export: options.export } : {}),
  };
}

/** Largest number of failed items the job tolerates, or undefined for no threshold. */
export function allowedFailures(options: ResolvedOptions, totalItems: number): number | undefined {
  const limits: number[] = [];
  if (options.toleratedFailureCount !== undefined) limits.push(options.toleratedFailureCount);
  if (options.toleratedFailurePercent !== undefined) limits.push(Math.floor((options.toleratedFailurePercent / 100) * totalItems + 1e-9));
  return limits.length > 0 ? Math.min(...limits) : undefined;
}

/** A `set` request's problems, in words (empty when it is valid). */
export function limitsProblems(request: { concurrency?: unknown; toleratedFailureCount?: unknown; toleratedFailurePercent?: unknown; priority?: unknown }): string[] {
  const problems: string[] = [];
  const isInt = (value: unknown): value is number => typeof value === 'number' && Number.isInteger(value);
  if (request.concurrency === undefined && request.toleratedFailureCount === undefined && request.toleratedFailurePercent === undefined && request.priority === undefined)
    problems.push('give at least one of concurrency, toleratedFailureCount, toleratedFailurePercent, priority');
  if (request.priority !== undefined && !(isInt(request.priority) && request.priority >= 1 && request.priority <= 5)) problems.push('priority must be a whole number from 1 to 5');
  if (request.concurrency !== undefined && !(isInt(request.concurrency) && request.concurrency >= 1 && request.concurrency <= LIMITS.maxConcurrency))
    problems.push(`concurrency must be a whole number from 1 to ${LIMITS.maxConcurrency}`);
  if (request.toleratedFailureCount !== undefined && !(isInt(request.toleratedFailureCount) && request.toleratedFailureCount >= 0))
    problems.push('toleratedFailureCount must be a whole number, 0 or more');
  if (request.toleratedFailurePercent !== undefined && !(typeof request.toleratedFailurePercent === 'number' && request.toleratedFailurePercent >= 0 && request.toleratedFailurePercent <= 100)) {
    problems.push('toleratedFailurePercent must be from 0 to 100');
  }
  return problems;
}

/**
 * Options after operators' `set` requests, in order. A new tolerated count replaces the job's
 * threshold (a percent given before is dropped) and vice versa.
 */
export function withLimits(
  options: ResolvedOptions,
  changes: readonly { concurrency?: number; toleratedFailureCount?: number; toleratedFailurePercent?: number; priority?: number }[],
): ResolvedOptions {
  let next = { ...options };
  for (const change of changes) {
    if (change.concurrency !== undefined) next.concurrency = change.concurrency;
    if (change.priority !== undefined) next.priority = change.priority;
    if (change.toleratedFailureCount !== undefined || change.toleratedFailurePercent !== undefined) {
      const { toleratedFailureCount: _count, toleratedFailurePercent: _percent, ...rest } = next;
      next = {
        ...rest,
        ...(change.toleratedFailureCount !== undefined ? { toleratedFailureCount: change.toleratedFailureCount } : {}),
        ...(change.toleratedFailurePercent !== undefined ? { toleratedFailurePercent: change.toleratedFailurePercent } : {}),
      };
    }
  }
  return next;
}

/** Moves the older job-level `params.putUrls` (`{item: {output: url}}`) onto the items. */
export function normalizeSpec(spec: JobSpec): JobSpec {
  const params = spec.params as { putUrls?: Record<string, Record<string, string>> } | undefined;
  if (!params?.putUrls) return spec;
  const { putUrls, ...rest } = params;
  return {
    ...spec,
    params: rest,
    items: spec.items.map((item) => (putUrls[item.id] ? { ...item, putUrls: { ...putUrls[item.id], ...item.putUrls } } : item)),
  };
}

export function outputsForItem(spec: Pick<JobSpec, 'outputs'>, item: Pick<JobItem, 'outputs'>, pipeline: Pick<PipelinePlan, 'defaultOutputs'>): readonly string[] {
  return item.outputs ?? spec.outputs ?? pipeline.defaultOutputs;
}
