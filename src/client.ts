/**
 * The typed client API: validate and start jobs, wait for results, follow progress, retry,
 * cancel and list. The CLI is a thin layer over this.
 */
import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { decodeFromPayloadsAtIndex } from '@temporalio/common/lib/internal-non-workflow';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { dataConverterFor } from './codec';
import { OpenTelemetryWorkflowClientInterceptor } from '@temporalio/interceptors-opentelemetry/lib/client';
import { activeTracing, startTracing, tracingWanted } from './tracing';
import { ITEMS_CHUNK, ITEMS_FILE_SUFFIX, InvalidItems, ItemsFileReader, checkedItemLines, isItemsRef, ndjsonLines, writeItemsFile } from './items-file';
import { SearchAttributesMissing, missingSearchAttributes } from './search-attributes-check';
import {
  Client,
  Connection,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  WorkflowUpdateRPCTimeoutOrCancelledError,
  type WorkflowHandle,
} from '@temporalio/client';
import { ApplicationFailure, CancelledFailure, ServiceError, WorkflowFailedError } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import type { Config } from './config';
import { connectionOptions } from './connection';
import { pipelineRegistry } from './pipelines';
import type { Pipeline } from './define-pipeline';
import { encryptSecret, loadSecretKey } from './secrets';
import {
  type ClientErrorCode,
  EXIT_CODES,
  ErrorTypes,
  type JobInput,
  type JobProgress,
  type JobResult,
  type JobSpec,
  type CancelResponse,
  RESULT_MEMO_KEY,
  retryWindowMsOf,
  type Flag,
  type FlagRequest,
  flagUpdate,
  unknownTypeMessage,
  flagWorkflowId,
  type EffectiveLimits,
  type LimitsRequest,
  type OutputRecord,
  type PauseResponse,
  limitsProblems,
  pauseUpdate,
  resumeUpdate,
  setLimitsUpdate,
  itemsToRetry,
  type PipelineRegistry,
  type PipelineDefinition,
  type RetryRequest,
  type RetryResponse,
  SearchKeys,
  type SpecIssue,
  TASK_QUEUE,
  WORKFLOW_TYPES,
  awaitResultUpdate,
  cancelUpdate,
  followUpJobId,
  jobIdProblem,
  newJobId,
  normalizeJobInput,
  normalizeSpec,
  progressQuery,
  type LimiterView,
  type RateKeyProgress,
  limiterViewQuery,
  sliceProgressQuery,
  SLICE_PROGRESS_MEMO_KEY,
  JOB_PROGRESS_MEMO_KEY,
  JOB_REJECTIONS_MEMO_KEY,
  type JobProgressMemo,
  type JobRejectionsMemo,
  addCounts,
  maxCounts,
  sliceCountsKept,
  type SliceCounts,
  type BatchProgress,
  sliceWorkflowId,
  sliceIndexOf,
  retryUpdate,
  resultQuery,
  validateJobSpec,
  DEFAULTS,
  redactUrl,
} from './shared';
import { type Storage, createStorage, localStateDir } from './storage';
import { type ExportManifest, type ExportOptions, exportRecords, exportStore, resultRecords } from './export';
import type { jobWorkflow } from './workflows';
import type { flagWorkflow } from './workflows/flag';

export class FaultlineClientError extends Error {
  readonly exitCode: number;
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    readonly issues: SpecIssue[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'FaultlineClientError';
    this.exitCode = EXIT_CODES[code];
  }
}

/** Specs whose JSON is larger than this go through job storage by reference. */
export const INLINE_SPEC_LIMIT_BYTES = 256 * 1024;

export interface FaultlineClientOptions {
  config: Pick<Config, 'address' | 'namespace' | 'apiKey' | 'tlsCert' | 'tlsKey' | 'tlsCa' | 'tlsServerName' | 'storage' | 'secretKey'> &
    Partial<Pick<Config, 'payloadKey' | 'payloadKeysOld' | 's3'>> & { taskQueue?: string };
  /** Your own pipelines (from `definePipeline`): specs naming them are validated here, before anything starts. */
  pipelines?: readonly Pipeline[];
  /** @deprecated give `pipelines`; a registry of definitions replaces the built-in ones. */
  registry?: PipelineRegistry;
  /**
   * Reuse an existing connection (tests, embedding). A worker's `NativeConnection` (from
   * `createFaultlineWorker` in the same process, on the same task queue) also starts jobs eagerly:
   * the server hands the job's first workflow task straight back to that worker, with no trip
   * through the task queue (about 20 ms less for a one-item job here).
   */
  connection?: Connection | NativeConnection;
  /** Propagate the caller's OpenTelemetry trace into jobs (default: when OTEL_EXPORTER_OTLP_ENDPOINT or _TRACES_ENDPOINT is set). */
  tracing?: boolean;
}

export interface ListFilter {
  status?: string;
  hasErrors?: boolean;
  pipeline?: string;
  /** Only jobs flagged for investigation. */
  flagged?: boolean;
  /** Only jobs of this tenant (`options.tenant`; a job without one is its own tenant). */
  tenant?: string;
  /** Only jobs of this priority (1 = highest … 5). */
  priority?: number;
  limit?: number;
}
export interface JobListEntry {
  jobId: string;
  pipeline: string | null;
  status: string | null;
  hasErrors: boolean | null;
  failedCount: number | null;
  /** Flagged for investigation (while it ran, or afterwards by a flag record). */
  flagged: boolean;
  /** Null for jobs started before tenants were recorded. */
  tenant: string | null;
  priority: number | null;
  startedAt: string;
}

/** Temporal priority of a job's tasks: its priority key, and its tenant as the fairness key with the tenant's weight. */
export function schedulingOf(spec: Pick<JobSpec, 'options'>, jobId: string): { priorityKey: number; fairnessKey: string; fairnessWeight: number } {
  return { priorityKey: spec.options?.priority ?? DEFAULTS.priority, fairnessKey: spec.options?.tenant ?? jobId, fairnessWeight: spec.options?.weight ?? DEFAULTS.weight };
}

/** `snapshot()`: a job as it is now. */
export interface JobSnapshot {
  jobId: string;
  /** Temporal's execution status (RUNNING, COMPLETED, FAILED, CANCELLED, TERMINATED, …). */
  execution: string;
  open: boolean;
  startedAt: string;
  closedAt?: string;
  pipeline: string | null;
  /** An open job's progress (absent while it cannot answer queries, e.g. no worker). */
  progress?: JobProgress;
  /** The last settled round of an open job, or the final result of a closed one. */
  result?: JobResult;
}

/**
 * The JobResult of a closed job. A Failed job fails its execution with an `ApplicationFailure` of
 * type `JobFailed` that carries the JobResult in its details; a job cancelled through Temporal is
 * a cancelled execution with the JobResult in its memo.
 */
export async function closedJobResult(handle: { result(): Promise<unknown>; describe(): Promise<{ memo?: Record<string, unknown> | undefined }> }): Promise<JobResult> {
  try {
    return (await handle.result()) as JobResult;
  } catch (error) {
    const carried = jobResultOf(error);
    if (carried) return carried;
    if (error instanceof WorkflowFailedError && error.cause instanceof CancelledFailure) {
      const memo = (await handle.describe()).memo?.[RESULT_MEMO_KEY] as JobResult | undefined;
      if (memo && typeof memo === 'object' && 'status' in memo) return memo;
    }
    throw error;
  }
}

/** The result with the flags recorded after it was made. */
function withFlags(result: JobResult, later: readonly Flag[]): JobResult {
  return later.length > 0 ? { ...result, flags: [...(result.flags ?? []), ...later] } : result;
}

/** A job without a retry window closes as soon as its first round settles. */
function closesWhenSettled(spec: Pick<JobSpec, 'options'>): boolean {
  return retryWindowMsOf(spec.options) === 0;
}

/** The JobResult a failed job execution carries, if it is one. */
export function jobResultOf(error: unknown): JobResult | undefined {
  if (!(error instanceof WorkflowFailedError)) return undefined;
  const cause = error.cause;
  const details = cause instanceof ApplicationFailure && cause.type === ErrorTypes.JobFailed ? cause.details : undefined;
  const result = details?.[0] as JobResult | undefined;
  return result && typeof result === 'object' && 'status' in result && 'counts' in result ? result : undefined;
}

/** A webhook's plain secret replaced by its sealed form (the key is loaded by the caller, which needs it for the hash too). */
function sealSecrets(spec: JobSpec, key: Buffer | undefined): JobSpec {
  const webhook = spec.options?.webhook;
  if (!webhook?.secret) return spec;
  if (!key) throw new Error('internal: a webhook secret reached sealing without its key'); // callers load it first
  const { secret, ...rest } = webhook;
  return { ...spec, options: { ...spec.options, webhook: { ...rest, secretEncrypted: encryptSecret(secret, key) } } };
}

/**
 * The idempotency hash kept in the memo. A webhook secret enters it only as an HMAC under the
 * secret key (which sealing needs anyway), so the memo is no offline guessing oracle for it.
 */
export function specHash(spec: unknown, secretKey?: Buffer): string {
  const webhook = (spec as { options?: { webhook?: { secret?: unknown } } } | null)?.options?.webhook;
  if (secretKey && webhook && typeof webhook.secret === 'string') {
    const digest = createHmac('sha256', secretKey).update(webhook.secret).digest('hex');
    const options = (spec as { options: Record<string, unknown> }).options;
    spec = { ...(spec as object), options: { ...options, webhook: { ...webhook, secret: `hmac-sha256:${digest}` } } };
  }
  return createHash('sha256').update(JSON.stringify(spec)).digest('hex');
}

const GRPC_UNAVAILABLE = 14;
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_ABORTED = 10;

/** True only when the chain shows the server could not be reached (not for rejected requests). */
function isUnavailable(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 6 && current; depth++) {
    const code = (current as { code?: unknown }).code;
    if (code === GRPC_UNAVAILABLE || code === GRPC_DEADLINE_EXCEEDED) return true;
    if (current instanceof Error && /ECONNREFUSED|Failed to connect|failed to connect|No connection established/i.test(current.message)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/** The declared error type of a rejected update (validator or handler), if that is what failed. */
function rejectionType(error: unknown): string | undefined {
  if (error instanceof WorkflowUpdateFailedError && error.cause instanceof ApplicationFailure) return error.cause.type ?? undefined;
  return undefined;
}
function rejectionMessage(error: unknown): string {
  return error instanceof WorkflowUpdateFailedError && error.cause instanceof Error ? error.cause.message : String(error);
}

export class FaultlineClient {
  /** Jobs this client started that close when their first round settles: their result needs no describe first. */
  private readonly startedClosing = new Set<string>();
  /** Highest counts seen per running slice (`highestSliceCounts`). */
  private readonly sliceHighs = new Map<string, SliceCounts>();
  /** Each job's running slices at the last look (`progressFromServer`). */
  private readonly slicesLastSeen = new Map<string, string[]>();
  /** Highest counts shown per job in its running round (`notBelowShown`). */
  private readonly jobHighs = new Map<string, { round: number; counts: JobProgress['counts'] }>();
  /** Jobs last seen keeping their progress in their memo: asked by describe first, not by query. */
  private readonly jobsWithProgressMemo = new Set<string>();

  private constructor(
    readonly client: Client,
    private readonly connection: Connection | NativeConnection,
    private readonly ownsConnection: boolean,
    private readonly options: FaultlineClientOptions,
  ) {}

  static async connect(options: FaultlineClientOptions): Promise<FaultlineClient> {
    let connection = options.connection;
    const owns = !connection;
    if (!connection) {
      try {
        connection = await Connection.connect({ ...connectionOptions(options.config), connectTimeout: '5s' });
      } catch (error) {
        throw new FaultlineClientError('unreachable', `cannot reach Temporal at ${options.config.address}: ${(error as Error).message.split('\n')[0]}`, [], { cause: error });
      }
    }
    const dataConverter = dataConverterFor(options.config);
    // With OTEL_EXPORTER_OTLP_* set, starts and messages carry the caller's trace into the job.
    const traced = options.tracing ?? tracingWanted();
    if (traced) startTracing('faultline-client');
    const interceptors = traced ? { workflow: [new OpenTelemetryWorkflowClientInterceptor()] } : undefined;
    const client = new Client({ connection, namespace: options.config.namespace, ...(dataConverter ? { dataConverter } : {}), ...(interceptors ? { interceptors } : {}) });
    return new FaultlineClient(client, connection, owns, options);
  }

  async close(): Promise<void> {
    // Spans of this client's calls go out before it is gone (a CLI process ends right after).
    await activeTracing()?.spanProcessor.forceFlush();
    if (this.ownsConnection) await this.connection.close();
  }

  private get taskQueue(): string {
    return this.options.config.taskQueue ?? TASK_QUEUE;
  }

  /** Schema + extended validation with the same pipeline definitions the workers use. */
  validate(spec: unknown): JobSpec {
    const validation = validateJobSpec(spec, this.registry);
    if (validation.ok) return validation.spec;
    // A pipeline this client does not know is validated by a worker that does, when the job starts.
    if (validation.issues.length === 1 && validation.issues[0]?.code === 'unknown_pipeline') {
      const general = validateJobSpec(spec, { [(spec as { pipeline: string }).pipeline]: openPipeline((spec as { pipeline: string }).pipeline) });
      if (general.ok) return general.spec;
      throw new FaultlineClientError('invalid', `invalid job spec (${general.issues.length} issue(s))`, general.issues);
    }
    throw new FaultlineClientError('invalid', `invalid job spec (${validation.issues.length} issue(s))`, validation.issues);
  }

  /** The pipelines this client validates specs with. */
  get registry(): PipelineRegistry {
    this.knownPipelines ??= this.options.registry ?? pipelineRegistry(this.options.pipelines ?? []);
    return this.knownPipelines;
  }
  private knownPipelines?: PipelineRegistry;

  /** Validates, seals secrets, moves large specs to storage, and starts the job. Idempotent per `jobId`. */
  async start(rawSpec: unknown, options: { jobId?: string; retryOf?: string } = {}): Promise<{ jobId: string; existing: boolean }> {
    const idProblem = options.jobId === undefined ? undefined : jobIdProblem(options.jobId);
    if (idProblem)
      throw new FaultlineClientError('invalid', `invalid job id ${JSON.stringify(options.jobId?.slice(0, 80))}: ${idProblem}`, [{ path: 'jobId', code: 'invalid_job_id', message: idProblem }]);
    const itemsFrom = (rawSpec as { itemsFrom?: unknown } | null)?.itemsFrom;
    if (itemsFrom !== undefined) return this.startFromItemsFile(rawSpec as Record<string, unknown>, itemsFrom, options);
    const validated = this.validate(rawSpec);
    const secretKey = validated.options?.webhook?.secret ? this.secretKey() : undefined;
    const hash = specHash(rawSpec, secretKey);
    const spec = normalizeSpec(sealSecrets(validated, secretKey));
    const { items, ...head } = spec;
    // Each item serialized once: for the size (the spec's JSON length within a few bytes) and, when
    // too large to travel inline, for the items file and its name.
    const headJson = JSON.stringify(head);
    const itemTexts = items.map((item) => JSON.stringify(item));
    let input: JobInput;
    if (itemTexts.reduce((bytes, text) => bytes + text.length + 1, headJson.length + ',"items":[]'.length) > INLINE_SPEC_LIMIT_BYTES) {
      // An items file, as `itemsFrom` makes: workers check it in chunks and read each slice's items
      // by place. A whole spec file was parsed whole by every worker that touched it (a 1,000,000-item
      // spec after another such job ran the worker out of heap). Named by its content: a repeated
      // start writes the same file.
      const name = createHash('sha256').update(headJson);
      for (const text of itemTexts) name.update('\n').update(text);
      const storage = this.storage();
      const { ref } = await writeItemsFile(storage, head, chunksOf(itemTexts), storage.itemsFileUri(`${name.digest('hex')}${ITEMS_FILE_SUFFIX}`));
      input = { job: { kind: 'stored', ref, head, itemCount: items.length } };
    } else {
      input = { job: { kind: 'inline', spec } };
    }
    // Jobs started before secrets were keyed hold the plain hash.
    return this.startJob(input, spec, spec.items.length, secretKey ? [hash, specHash(rawSpec)] : [hash], options);
  }

  /**
   * `itemsFrom`: an s3:// or https:// source goes to the workers by reference (one reads it when
   * the job starts); a local NDJSON file is streamed into job storage in chunks, each validated on
   * the way (exact `items[i]` paths and line numbers), so neither this client nor any worker holds
   * every item; workers read it slice by slice.
   */
  private async startFromItemsFile(raw: Record<string, unknown>, itemsFrom: unknown, options: { jobId?: string; retryOf?: string }): Promise<{ jobId: string; existing: boolean }> {
    const { itemsFrom: _from, ...rest } = raw;
    const issue = (path: string, code: string, message: string) => new FaultlineClientError('invalid', `invalid job spec (${path}: ${message})`, [{ path, code, message }]);
    if (rest.items !== undefined) throw issue('itemsFrom', 'items_and_items_from', 'give items or itemsFrom, not both');
    const usage = 'itemsFrom is an NDJSON source (one item per line): file:///absolute/path (read here), s3://bucket/key or https://… (read by a worker)';
    if (typeof itemsFrom !== 'string') throw issue('itemsFrom', 'invalid_uri', usage);
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(itemsFrom)?.[1]?.toLowerCase();
    const validatedHead = this.validate({ ...rest, items: [] });
    const secretKey = validatedHead.options?.webhook?.secret ? this.secretKey() : undefined;
    const { items: _none, ...head } = normalizeSpec(sealSecrets(validatedHead, secretKey));
    if (scheme === 's3' || scheme === 'https' || scheme === 'http') {
      try {
        const url = new URL(itemsFrom);
        if (!url.host || url.pathname.length <= 1) throw new Error('no host or path');
      } catch {
        throw issue('itemsFrom', 'invalid_uri', usage);
      }
      // Workers read it: the hash names the source, not its content, which this client never sees.
      const hash = specHash({ ...rest, itemsFrom }, secretKey);
      return this.startJob({ job: { kind: 'remote', from: itemsFrom, head } }, head, `items from ${redactUrl(itemsFrom)}`, [hash], options);
    }
    let file: string;
    try {
      if (scheme !== 'file') throw new Error('not a file URI');
      file = fileURLToPath(itemsFrom);
    } catch {
      throw issue('itemsFrom', 'invalid_uri', usage);
    }
    // Read errors of the file are named as such; storage errors while writing it are not.
    async function* fileLines(): AsyncGenerator<{ line: string; number: number }> {
      try {
        yield* ndjsonLines(file);
      } catch (error) {
        throw issue('itemsFrom', 'unreadable', `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
      }
    }
    const items = checkedItemLines(head, fileLines(), this.registry, file);
    const storage = this.storage();
    let written: Awaited<ReturnType<typeof writeItemsFile>>;
    try {
      written = await writeItemsFile(storage, head, items);
    } catch (error) {
      if (!(error instanceof InvalidItems)) throw error;
      const [only] = error.issues;
      // A line that is not JSON, or no items at all, is one issue of the spec; a bad chunk lists all of its issues.
      if (error.issues.length === 1 && only && (only.code === 'invalid_json' || only.code === 'empty')) throw issue(only.path, only.code, only.message);
      throw new FaultlineClientError('invalid', `invalid items in ${file} (${error.issues.length} issue(s))`, error.issues);
    }
    const { ref, itemCount, sha256 } = written;
    const hash = specHash({ ...rest, itemsSha256: sha256 }, secretKey);
    try {
      const started = await this.startJob({ job: { kind: 'stored', ref, head, itemCount } }, head, itemCount, [hash], options);
      // The job already had its items (a repeated start): this copy is not needed.
      if (started.existing) await storage.removeRef(ref);
      return started;
    } catch (error) {
      // Only where no job can be holding it: a refused start. After an unreachable server the start may have landed.
      if (error instanceof FaultlineClientError && (error.code === 'conflict' || error.code === 'invalid' || error.code === 'rejected')) await storage.removeRef(ref).catch(() => undefined);
      throw error;
    }
  }

  /** `hashes[0]` goes into the memo; any of them matches an existing job with the same id (older jobs hold older forms). */
  private async startJob(
    input: JobInput,
    spec: Omit<JobSpec, 'items'>,
    /** How many items (or where they come from, when only a worker will know). */
    items: number | string,
    hashes: [string, ...string[]],
    options: { jobId?: string; retryOf?: string },
  ): Promise<{ jobId: string; existing: boolean }> {
    const jobId = options.jobId ?? newJobId(randomBytes(6).toString('hex'));
    const [hash] = hashes;
    if (options.retryOf) input.retryOf = options.retryOf;
    const scheduling = schedulingOf(spec, jobId);
    const closing = closesWhenSettled(spec);
    try {
      await this.client.workflow.start<typeof jobWorkflow>(WORKFLOW_TYPES.job, {
        taskQueue: this.taskQueue,
        // Only a worker's connection can take the first task in place; the server falls back to the queue when that worker has no free slot.
        ...(this.connection instanceof Connection ? {} : { requestEagerStart: true }),
        workflowId: jobId,
        args: [input],
        // A job with no retry window closes when its first round settles: its result is then read from the close, not by query.
        memo: { specHash: hash, ...(closing ? { closesWhenSettled: true } : {}) },
        typedSearchAttributes: [
          { key: SearchKeys.pipeline, value: spec.pipeline },
          { key: SearchKeys.status, value: 'Running' },
          { key: SearchKeys.tenant, value: scheduling.fairnessKey },
          { key: SearchKeys.priority, value: scheduling.priorityKey },
        ],
        staticSummary: `Faultline job: ${typeof items === 'number' ? `${items} item(s)` : items}, pipeline ${spec.pipeline}${options.retryOf ? `, retry of ${options.retryOf}` : ''}`,
        staticDetails: spec.labels
          ? Object.entries(spec.labels)
              .map(([key, value]) => `${key}: ${value}`)
              .join('\n')
          : undefined,
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        // Its slices, batches and workflow tasks inherit these: a job's tenant shares the workers fairly with others.
        priority: scheduling,
      });
      if (closing) {
        if (this.startedClosing.size >= 10_000) this.startedClosing.clear();
        this.startedClosing.add(jobId);
      }
      return { jobId, existing: false };
    } catch (error) {
      if (error instanceof WorkflowExecutionAlreadyStartedError) {
        const description = await this.client.workflow.getHandle(jobId).describe();
        const existingHash = (description.memo as Record<string, unknown> | undefined)?.specHash;
        // Jobs started before secrets were keyed hold the plain hash.
        if (hashes.some((candidate) => candidate === existingHash)) return { jobId, existing: true };
        throw new FaultlineClientError('conflict', `conflict: job ${jobId} already exists with a different spec`);
      }
      await this.refuseWithoutSearchAttributes(error);
      throw this.wrap(error, jobId);
    }
  }

  handle(jobId: string): WorkflowHandle<typeof jobWorkflow> {
    return this.client.workflow.getHandle<typeof jobWorkflow>(jobId);
  }

  /** Waits for the result of the current round (returns as soon as the job settles, even while a retry window is open). */
  async result(jobId: string, options: { round?: number } = {}): Promise<JobResult> {
    const handle = this.handle(jobId);
    try {
      // Waiting for the close (a long poll) answers as soon as the job ends; a query would wait for its workflow task, then replay the closed job.
      const firstRound = (options.round ?? 1) <= 1;
      if (firstRound && this.startedClosing.has(jobId)) return await this.closedResult(jobId, handle);
      const description = await handle.describe();
      if (description.status.name !== 'RUNNING') return await this.withLaterFlags(jobId, await closedJobResult(handle));
      if (firstRound && (description.memo as { closesWhenSettled?: unknown } | undefined)?.closesWhenSettled === true) return await this.closedResult(jobId, handle);
      // A settled round is read by query, which adds nothing to the job's history; only a wait is an update.
      const settled = await handle.query(resultQuery).catch(() => null);
      if (settled && (options.round === undefined || settled.round >= options.round)) return settled;
      let runId = description.runId;
      for (let abortedInPlace = 0; ;) {
        try {
          return await handle.executeUpdate(awaitResultUpdate, { args: [{ ...(options.round !== undefined ? { round: options.round } : {}) }] });
        } catch (error) {
          if (error instanceof WorkflowUpdateRPCTimeoutOrCancelledError) continue; // long jobs: keep waiting
          if (error instanceof WorkflowUpdateFailedError && error.cause instanceof ApplicationFailure && error.cause.type === ErrorTypes.JobRotating) continue;
          if (await abortedByContinueAsNew(handle, error)) continue;
          const now = await handle.describe();
          if (now.status.name !== 'RUNNING') return await this.withLaterFlags(jobId, await closedJobResult(handle));
          // The server aborts a waiting update when its run continues as new (gRPC ABORTED or UNAVAILABLE,
          // which the SDK passes on as a plain ServiceError): ask the new run.
          if (now.runId !== runId) {
            runId = now.runId;
            continue;
          }
          if (updateAbortedByServer(error) && ++abortedInPlace <= 5) {
            await sleep(200);
            continue;
          }
          throw error;
        }
      }
    } catch (error) {
      throw this.wrap(error, jobId);
    }
  }

  /**
   * The result of a job that closes when it settles, awaited. Flag records are read meanwhile: one
   * recorded after this read could as well have come after the result was returned.
   */
  private async closedResult(jobId: string, handle: WorkflowHandle<typeof jobWorkflow>): Promise<JobResult> {
    const [result, later] = await Promise.all([closedJobResult(handle), this.flagRecords(jobId)]);
    return withFlags(result, later);
  }

  /** A closed job's result with the flags recorded after it closed (flag records `<jobId>/flag-N`). */
  private async withLaterFlags(jobId: string, result: JobResult): Promise<JobResult> {
    return withFlags(result, await this.flagRecords(jobId));
  }

  private async flagRecords(jobId: string): Promise<Flag[]> {
    const flags: Flag[] = [];
    for (let n = 1; ; n++) {
      try {
        const memo = (await this.client.workflow.getHandle(flagWorkflowId(jobId, n)).describe()).memo as { flag?: Flag } | undefined;
        if (memo?.flag) flags.push(memo.flag);
      } catch (error) {
        if (error instanceof WorkflowNotFoundError) return flags;
        throw error;
      }
    }
  }

  /**
   * Marks a job (or one item's outputs) for investigation. A running job records it in its state
   * and sets `FaultlineFlagged`; a closed one gets a flag record, a workflow `<jobId>/flag-N`.
   */
  async flag(jobId: string, request: FlagRequest): Promise<{ jobId: string; flags: number; record: string }> {
    if (typeof request.reason !== 'string' || request.reason.trim() === '') throw new FaultlineClientError('invalid', 'flag: give a reason (--reason TEXT)');
    const handle = this.handle(jobId);
    try {
      const description = await handle.describe();
      if (description.status.name === 'RUNNING') {
        try {
          const response = await handle.executeUpdate(flagUpdate, { args: [request] });
          return { jobId, flags: response.flags, record: jobId };
        } catch (error) {
          const type = rejectionType(error);
          if (type !== ErrorTypes.JobClosed) {
            if (type !== undefined) throw new FaultlineClientError('rejected', `flag rejected (${type}): ${rejectionMessage(error)}`, [], { cause: error });
            throw error;
          }
        }
      }
      const earlier = await this.flagRecords(jobId);
      const pipeline = description.typedSearchAttributes.get(SearchKeys.pipeline) ?? 'unknown';
      const flag: Flag = { ...(request.item ? { item: request.item } : {}), reason: request.reason, at: new Date().toISOString() };
      // Two flaggers may pick the same number: the id is never reused, so the second takes the next one.
      let id = '';
      for (let n = earlier.length + 1; ; n++) {
        id = flagWorkflowId(jobId, n);
        try {
          // The record is complete at start (memo and search attributes), so it needs no worker to exist.
          await this.client.workflow.start<typeof flagWorkflow>(WORKFLOW_TYPES.flag, {
            taskQueue: this.taskQueue,
            workflowId: id,
            workflowIdReusePolicy: 'REJECT_DUPLICATE',
            args: [{ jobId, pipeline, ...flag }],
            memo: { jobId, flag },
            typedSearchAttributes: [
              { key: SearchKeys.flagged, value: true },
              { key: SearchKeys.pipeline, value: pipeline },
            ],
            staticSummary: `flag on ${jobId}${request.item ? ` (item ${request.item})` : ''}: ${request.reason}`,
          });
          break;
        } catch (error) {
          if (!(error instanceof WorkflowExecutionAlreadyStartedError) || n > earlier.length + 1_000) throw error;
        }
      }
      const previous = await closedJobResult(handle).then(
        (result) => result.flags?.length ?? 0,
        () => 0,
      );
      return { jobId, flags: previous + (await this.flagRecords(jobId)).length, record: id };
    } catch (error) {
      throw this.wrap(error, jobId);
    }
  }

  /** Every rate key's limiter running now (one per key in the namespace): leases, waiting requests and pauses. */
  async rateLimiters(): Promise<LimiterView[]> {
    const views: LimiterView[] = [];
    try {
      for await (const execution of this.client.workflow.list({ query: `WorkflowType = '${WORKFLOW_TYPES.rateLimiter}' AND ExecutionStatus = 'Running'` })) {
        const view = await this.client.workflow
          .getHandle(execution.workflowId)
          .query(limiterViewQuery)
          .catch(() => undefined);
        if (view) views.push(view);
      }
    } catch (error) {
      throw this.wrap(error);
    }
    return views;
  }

  /** A running job's items waiting for or holding rate leases, per key. */
  private withRateLimits(progress: JobProgress, limiters: readonly LimiterView[]): JobProgress {
    if (progress.phase !== 'running' && progress.phase !== 'paused') return progress;
    const keys: RateKeyProgress[] = [];
    for (const view of limiters) {
      const mine = view.jobs[progress.jobId];
      if (!mine) continue;
      keys.push({
        key: view.key,
        perSecond: view.limit.perSecond,
        concurrency: view.limit.concurrency,
        waiting: mine.waiting,
        inFlight: mine.inFlight,
        keyWaiting: view.waiting,
        keyInFlight: view.inFlight,
        effectivePerSecond: view.effectivePerSecond,
        backoffs: view.backoffs,
        ...(view.blockedUntil ? { blockedUntil: view.blockedUntil } : {}),
      });
    }
    return keys.length > 0 ? { ...progress, rateLimits: keys } : progress;
  }

  async progress(jobId: string): Promise<JobProgress> {
    try {
      // At once: the job's own answer (a query, through a worker) unless it is known to keep its
      // progress in its memo, the rate keys' limiters, and what the server keeps (the job's memo,
      // its running slices' memos and heartbeats: no worker).
      const memoKnown = this.jobsWithProgressMemo.has(jobId);
      // A query the memo makes needless is cut off, not left running past this call (a CLI closes its connection next).
      const needless = new AbortController();
      const asked = memoKnown ? undefined : this.client.withAbortSignal(needless.signal, () => this.handle(jobId).query(progressQuery));
      asked?.catch(() => undefined);
      const limiters = this.rateLimiters().catch(() => []);
      const server = await this.progressFromServer(jobId).catch(() => undefined);
      if (server?.progress) {
        this.rememberProgressMemo(jobId);
        needless.abort();
        await asked?.catch(() => undefined);
      } else this.jobsWithProgressMemo.delete(jobId);
      const progress = this.withRateLimits(server?.progress ?? (await (asked ?? this.handle(jobId).query(progressQuery))), await limiters);
      if (!progress.slicesRunning?.length) return this.notBelowShown(progress);
      // A sliced job counts a slice when it ends: add what its running slices did so far.
      const running = await Promise.all(
        progress.slicesRunning.map(async (index) => {
          const workflowId = sliceWorkflowId(jobId, index, progress.round);
          return { workflowId, counts: server?.slices.get(workflowId) ?? (await this.sliceCounts(workflowId)) };
        }),
      );
      let counts = { ...progress.counts };
      for (const { workflowId, counts: slice } of running) if (slice) counts = addCounts(counts, this.highestSliceCounts(workflowId, slice));
      this.forgetSlicesOf(jobId, progress);
      return this.notBelowShown({ ...progress, counts });
    } catch (error) {
      throw this.wrap(error, jobId);
    }
  }

  /**
   * What the server keeps of a running job: its progress while it runs a sliced round (its memo;
   * undefined otherwise, or when the memo is another run's), and its running slices' counts by
   * workflow id (each slice's memo and its batches' heartbeats).
   */
  private async progressFromServer(jobId: string): Promise<{ progress?: JobProgress; slices: Map<string, SliceCounts> }> {
    // The slices running at the last look are asked beside the job (a slice runs many looks long):
    // one round trip, not two; slices new since are asked once the job names them.
    const countsOf = (workflowId: string) => this.sliceCountsFromServer(workflowId).catch(() => undefined);
    const early = new Map((this.slicesLastSeen.get(jobId) ?? []).map((workflowId) => [workflowId, countsOf(workflowId)] as const));
    const description = await this.handle(jobId).describe();
    const children = (description.raw.pendingChildren ?? []).flatMap(({ workflowId }) => (workflowId?.startsWith(`${jobId}/slice-`) ? [workflowId] : []));
    if (this.slicesLastSeen.size >= 10_000) this.slicesLastSeen.clear();
    if (children.length > 0) this.slicesLastSeen.set(jobId, children);
    else this.slicesLastSeen.delete(jobId);
    const slices = new Map<string, SliceCounts>();
    await Promise.all(
      children.map(async (workflowId) => {
        const counts = await (early.get(workflowId) ?? countsOf(workflowId));
        if (counts) slices.set(workflowId, counts);
      }),
    );
    // Slices that ended since the last look: their answers are not used, but no call outlives this one.
    await Promise.all(early.values());
    const kept = description.memo?.[JOB_PROGRESS_MEMO_KEY] as JobProgressMemo | undefined;
    if (description.status.name !== 'RUNNING' || !kept || kept.runId !== description.runId) return { slices };
    const { runId: _runId, slicesRunning: listed, ...shown } = kept;
    let notTaken = children;
    if (listed) {
      // The memo names the slices the job has not taken; one that ended since the last look is read
      // from that look's answer (its memo holds its final counts), or by the caller.
      notTaken = listed.map((index) => sliceWorkflowId(jobId, index, shown.round));
      for (const workflowId of notTaken) {
        const counts = slices.has(workflowId) ? undefined : await early.get(workflowId);
        if (counts) slices.set(workflowId, counts);
      }
    } else if (children.length < kept.inFlight) {
      // Fewer slices running than the memo has not counted: one ended and the job has not taken its
      // result yet (its items are in neither place). When the slices this client saw running at its
      // last look and no longer sees are exactly those, their memos hold their final counts, as the
      // job's query would have them read. Otherwise (a new client: each `faultline status`) the
      // query answers that moment, through the job's worker.
      const ended = [...early.keys()].filter((workflowId) => !children.includes(workflowId));
      if (children.length + ended.length !== kept.inFlight) return { slices };
      for (const workflowId of ended) {
        const counts = await early.get(workflowId);
        if (!counts) return { slices };
        slices.set(workflowId, counts);
      }
      notTaken = [...children, ...ended];
    }
    const rejections = description.memo?.[JOB_REJECTIONS_MEMO_KEY] as JobRejectionsMemo | undefined;
    // Running slices as the query lists them: those of round 1 (later rounds count from the settled result).
    const running = shown.round === 1 ? notTaken.flatMap((workflowId) => sliceIndexOf(jobId, workflowId, 1)) : [];
    const progress: JobProgress = {
      ...shown,
      jobId,
      rejectedRequests: rejections?.runId === description.runId ? rejections.rejected : [],
      ...(running.length > 0 ? { slicesRunning: running } : {}),
    };
    return { progress, slices };
  }

  /**
   * A slice leaves the server's list of running slices a moment before the job's memo counts it
   * (the job's next workflow task): in a running round counts only grow, so this client never
   * shows a job fewer than it showed before in the same round.
   */
  private notBelowShown(progress: JobProgress): JobProgress {
    if (progress.settled) {
      this.jobHighs.delete(progress.jobId);
      return progress;
    }
    const before = this.jobHighs.get(progress.jobId);
    const counts = before?.round === progress.round ? maxCounts(progress.counts, before.counts) : progress.counts;
    // Dropped when they pile up (a long-lived client, e.g. the web server).
    if (this.jobHighs.size >= 10_000) this.jobHighs.clear();
    this.jobHighs.set(progress.jobId, { round: progress.round, counts });
    return { ...progress, counts };
  }

  private rememberProgressMemo(jobId: string): void {
    // Forgotten when they pile up (a long-lived client, e.g. the web server): a forgotten job is asked by query once more.
    if (this.jobsWithProgressMemo.size >= 10_000) this.jobsWithProgressMemo.clear();
    this.jobsWithProgressMemo.add(jobId);
  }

  /** A running slice's counts: from the server when the slice keeps them in its memo, else by asking it (a query). */
  private async sliceCounts(workflowId: string): Promise<SliceCounts | null> {
    const stored = await this.sliceCountsFromServer(workflowId).catch(() => undefined);
    if (stored) return stored;
    return this.client.workflow
      .getHandle(workflowId)
      .query(sliceProgressQuery)
      .catch(() => null);
  }

  /**
   * A slice's counts in its memo (its finished batches) plus what its running batches' last
   * heartbeats say they finished (`sliceCountsKept`). Undefined for a slice that ran older code.
   */
  private async sliceCountsFromServer(workflowId: string): Promise<SliceCounts | undefined> {
    const description = await this.client.workflow.getHandle(workflowId).describe();
    const beats: BatchProgress[] = [];
    for (const activity of description.raw.pendingActivities ?? []) {
      const payloads = activity.heartbeatDetails?.payloads;
      if (activity.activityType?.name !== 'runBatch' || !payloads?.length) continue;
      const beat = await decodeFromPayloadsAtIndex<BatchProgress>(this.client.options.loadedDataConverter, 0, payloads).catch(() => undefined);
      if (beat?.done) beats.push(beat);
    }
    return sliceCountsKept(description.memo?.[SLICE_PROGRESS_MEMO_KEY] as SliceCounts | undefined, description.historyLength, beats);
  }

  /**
   * A batch's items move from its heartbeat to its slice's memo a moment after it ends (the slice's
   * next workflow task): in between they are in neither. Counts only grow in a running round, so
   * this client shows each slice's highest counts so far and progress never steps back.
   */
  private highestSliceCounts(workflowId: string, counts: SliceCounts): SliceCounts {
    const before = this.sliceHighs.get(workflowId);
    const highest = before ? maxCounts(counts, before) : counts;
    // Highs of jobs no one asks about again are dropped when they pile up (a long-lived client, e.g. the web server).
    if (this.sliceHighs.size >= 10_000) this.sliceHighs.clear();
    this.sliceHighs.set(workflowId, highest);
    return highest;
  }

  /** Drops the highs of this job's slices that no longer run. */
  private forgetSlicesOf(jobId: string, progress: JobProgress): void {
    const running = new Set((progress.slicesRunning ?? []).map((index) => sliceWorkflowId(jobId, index, progress.round)));
    for (const workflowId of this.sliceHighs.keys()) if (workflowId.startsWith(`${jobId}/`) && !running.has(workflowId)) this.sliceHighs.delete(workflowId);
  }

  /**
   * What a job shows right now, without waiting and without adding to its history: the progress
   * of an open job and its last settled round's result, or a closed job's final result.
   */
  async snapshot(jobId: string): Promise<JobSnapshot> {
    const handle = this.handle(jobId);
    try {
      const description = await handle.describe();
      const base = {
        jobId,
        execution: description.status.name,
        startedAt: description.startTime.toISOString(),
        ...(description.closeTime ? { closedAt: description.closeTime.toISOString() } : {}),
        pipeline: description.typedSearchAttributes.get(SearchKeys.pipeline) ?? null,
      };
      if (description.status.name !== 'RUNNING') {
        // A terminated job has no result: its execution status says what happened.
        const result = await closedJobResult(handle).then(
          (closed) => this.withLaterFlags(jobId, closed),
          () => undefined,
        );
        return { ...base, open: false, ...(result ? { result } : {}) };
      }
      // A running round has no settled result to show (the query answers null): a busy worker is asked only when there may be one.
      const progress = await this.progress(jobId).catch(() => undefined);
      const settled = progress?.settled === false ? null : await handle.query(resultQuery).catch(() => null);
      return { ...base, open: true, ...(progress ? { progress } : {}), ...(settled ? { result: settled } : {}) };
    } catch (error) {
      throw this.wrap(error, jobId);
    }
  }

  /** The job's spec without its items (and how many items it has), read from the first event of its current run only. */
  async specHead(jobId: string): Promise<{ head: Record<string, unknown>; itemCount?: number; itemsFrom?: string }> {
    try {
      const response = await this.client.workflowService.getWorkflowExecutionHistory({
        namespace: this.options.config.namespace,
        execution: { workflowId: jobId },
        maximumPageSize: 1,
      });
      const payloads = response.history?.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads;
      const input = normalizeJobInput(await decodeFromPayloadsAtIndex(this.client.options.loadedDataConverter, 0, payloads));
      if (!input) throw new FaultlineClientError('not_found', `job ${jobId} has no spec`);
      const job = input.job;
      if (job.kind === 'inline') {
        const { items, ...head } = job.spec;
        return { head, itemCount: items.length };
      }
      if (job.kind === 'stored') return { head: job.head as Record<string, unknown>, itemCount: job.itemCount };
      return { head: job.head as Record<string, unknown>, itemsFrom: redactUrl(job.from) };
    } catch (error) {
      throw this.wrap(error, jobId);
    }
  }

  /**
   * Waits until a worker has checked the job's spec — for a pipeline this client does not know,
   * the only check — and throws its issues as `invalid` (or `PipelineUnavailable` as `failed`).
   * Queries only: nothing is added to the job's history.
   */
  async awaitSpecCheck(jobId: string, options: { onSlow?: () => void; pollMs?: number } = {}): Promise<void> {
    const handle = this.handle(jobId);
    const slowAt = Date.now() + 2_000;
    for (;;) {
      try {
        // The phase first, then the status: a job that failed its check in between is seen failed.
        const phase = (await handle.query(progressQuery).catch(() => undefined))?.phase;
        if ((await handle.describe()).status.name !== 'RUNNING') {
          await this.result(jobId);
          return;
        }
        if (phase !== undefined && phase !== 'validating') return;
      } catch (error) {
        throw error instanceof FaultlineClientError ? error : this.wrap(error, jobId);
      }
      if (options.onSlow && Date.now() > slowAt) {
        options.onSlow();
        options.onSlow = undefined;
      }
      await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 100));
    }
  }

  /**
   * Re-runs failed items. In the retry window (or while running) they merge into the same job;
   * on a closed job a follow-up job with just those items is started.
   */
  async retry(jobId: string, request: RetryRequest = {}): Promise<RetryResponse & { jobId: string; followUp: boolean }> {
    const handle = this.handle(jobId);
    try {
      const description = await handle.describe();
      if (description.status.name === 'RUNNING') {
        // One id for every re-send: the server runs an update id once per run, so a lost answer never makes two rounds.
        const updateId = `retry-${randomUUID()}`;
        for (;;) {
          try {
            const response = await handle.executeUpdate(retryUpdate, { args: [request], updateId });
            return { ...response, jobId, followUp: false };
          } catch (error) {
            if (error instanceof WorkflowUpdateRPCTimeoutOrCancelledError) continue; // the round is still running: keep waiting
            const type = rejectionType(error);
            if (type === ErrorTypes.JobRotating || (await abortedByContinueAsNew(handle, error))) continue; // the request was not carried over: send it again
            if (type === ErrorTypes.JobClosed || (await handle.describe()).status.name !== 'RUNNING') break;
            if (type !== undefined) throw new FaultlineClientError('rejected', `retry rejected (${type}): ${rejectionMessage(error)}`, [], { cause: error });
            throw error;
          }
        }
      }
      return await this.followUp(jobId, request);
    } catch (error) {
      throw this.wrap(error, jobId);
    }
  }

  /** Every failed item of a closed job (read from its manifest when it has one), in a new job. */
  private async followUp(jobId: string, request: RetryRequest): Promise<RetryResponse & { jobId: string; followUp: boolean }> {
    const previous = await this.result(jobId);
    const types = request.types ?? [];
    if (types.length > 0 && !request.includeCancelled && !types.some((type) => (previous.failureCounts[type] ?? 0) > 0)) {
      throw new FaultlineClientError('rejected', `retry rejected (${ErrorTypes.UnknownErrorType}): ${unknownTypeMessage(types, previous.failureCounts)}`);
    }
    const original = await this.originalSpec(jobId);
    const selected = new Set(itemsToRetry(await this.records(previous), request));
    const items = original.items.filter((item) => selected.has(item.id)).map((item) => (request.sources?.[item.id] ? { ...item, source: request.sources[item.id] } : item));
    if (items.length === 0) throw new FaultlineClientError('rejected', `retry rejected (${ErrorTypes.NothingToRetry}): no failed item of ${jobId} matches the selection`);
    let attempt = 1;
    for (; attempt < 100; attempt++) {
      try {
        await this.handle(followUpJobId(jobId, attempt)).describe();
      } catch {
        break;
      }
    }
    const followUpId = followUpJobId(jobId, attempt);
    await this.start({ ...original, items }, { jobId: followUpId, retryOf: jobId });
    return { queued: items.slice(0, 1_000).map((item) => item.id), queuedCount: items.length, round: 1, jobId: followUpId, followUp: true };
  }

  /** All output records of a result: inline, or streamed from its manifest in job storage. */
  async records(result: JobResult): Promise<OutputRecord[]> {
    const records: OutputRecord[] = [];
    for await (const record of this.outputRecords(result)) records.push(record);
    return records;
  }

  /**
   * Writes a job's output records grouped by status (one file per status, `manifest.json` last)
   * to a folder or s3://bucket/prefix, streamed from its manifest. The job's latest settled result
   * unless `round` names one.
   */
  async export(jobId: string, destination: string, options: ExportOptions & { round?: number } = {}): Promise<ExportManifest> {
    const { round, ...filters } = options;
    const result = await this.result(jobId, round !== undefined ? { round } : {});
    let store;
    try {
      store = exportStore(destination, this.options.config.s3);
    } catch (error) {
      throw new FaultlineClientError('invalid', `export destination: ${(error as Error).message}`, [{ path: 'destination', code: 'invalid_destination', message: (error as Error).message }]);
    }
    return exportRecords(result, this.outputRecords(result), store, filters);
  }

  /** The same records one at a time, for results too large to hold. */
  outputRecords(result: JobResult, options: { contains?: string } = {}): AsyncIterable<OutputRecord> {
    return resultRecords(result, this.storage(), options.contains);
  }

  private async originalSpec(jobId: string): Promise<JobSpec> {
    const history = await this.handle(jobId).fetchHistory();
    const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
    const payload = started?.input?.payloads?.[0];
    if (!payload?.data) throw new FaultlineClientError('not_found', `cannot read the spec of ${jobId}`);
    const input = normalizeJobInput(await decodeFromPayloadsAtIndex(this.client.options.loadedDataConverter, 0, started?.input?.payloads));
    if (!input) throw new FaultlineClientError('not_found', `job ${jobId} has no spec`);
    if (input.job.kind === 'inline') return input.job.spec;
    // A remote source's items are the worker's copy, made when the job started: the items the job really ran.
    const ref = input.job.kind === 'remote' ? this.storage().jobItemsUri(jobId) : input.job.ref;
    if (isItemsRef(ref)) {
      return { ...(input.job.head as object), items: await new ItemsFileReader(this.storage()).read(ref, 0, Infinity) } as JobSpec;
    }
    return (await this.storage().readSpec(ref)) as JobSpec;
  }

  cancel(jobId: string, reason = 'cancelled by operator'): Promise<CancelResponse> {
    return this.control(jobId, 'cancel', (handle) => handle.executeUpdate(cancelUpdate, { args: [{ reason }] }));
  }

  /** Holds a running job: in-flight work finishes, nothing new starts, backoff timers hold. */
  pause(jobId: string): Promise<PauseResponse> {
    return this.control(jobId, 'pause', (handle) => handle.executeUpdate(pauseUpdate));
  }

  resume(jobId: string): Promise<PauseResponse> {
    return this.control(jobId, 'resume', (handle) => handle.executeUpdate(resumeUpdate));
  }

  /** New limits for a running job's work not yet started. */
  setLimits(jobId: string, request: LimitsRequest): Promise<EffectiveLimits> {
    const problems = limitsProblems(request);
    if (problems.length > 0) return Promise.reject(new FaultlineClientError('invalid', `set: ${problems.join('; ')}`));
    return this.control(jobId, 'set', (handle) => handle.executeUpdate(setLimitsUpdate, { args: [request] }));
  }

  /** An operator update on an open job; re-sent when the job was continuing as new. */
  private async control<T>(jobId: string, verb: string, send: (handle: WorkflowHandle<typeof jobWorkflow>) => Promise<T>): Promise<T> {
    const handle = this.handle(jobId);
    try {
      for (;;) {
        const description = await handle.describe();
        if (description.status.name !== 'RUNNING')
          throw new FaultlineClientError('rejected', `${verb} rejected (${ErrorTypes.JobClosed}): job ${jobId} is already ${description.status.name.toLowerCase()}`);
        try {
          return await send(handle);
        } catch (error) {
          const type = rejectionType(error);
          if (type === ErrorTypes.JobRotating || (await abortedByContinueAsNew(handle, error))) continue;
          if (type !== undefined) throw new FaultlineClientError('rejected', `${verb} rejected (${type}): ${rejectionMessage(error)}`, [], { cause: error });
          throw error;
        }
      }
    } catch (error) {
      throw this.wrap(error, jobId);
    }
  }

  /** Whether a job is open, closed (and when), or unknown to Temporal. */
  async jobState(jobId: string): Promise<{ kind: 'open' } | { kind: 'closed'; closedAt: number } | { kind: 'unknown' }> {
    try {
      const description = await this.client.workflow.getHandle(jobId).describe();
      if (description.status.name === 'RUNNING') return { kind: 'open' };
      return { kind: 'closed', closedAt: (description.closeTime ?? description.startTime).getTime() };
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) return { kind: 'unknown' };
      throw this.wrap(error, jobId);
    }
  }

  /** Ids of the jobs (job workflows, every status) a Temporal visibility query matches. */
  /** Ids of the jobs a visibility query matches (`runningOnly`: of those still running). */
  async jobIds(query: string, options: { runningOnly?: boolean } = {}): Promise<string[]> {
    if (query.trim() === '') throw new FaultlineClientError('invalid', '--query is empty');
    const problem = queryProblem(query);
    if (problem) {
      const message = `invalid visibility query at character ${problem.at + 1} (${JSON.stringify(query.slice(problem.at, problem.at + 20))}): ${problem.message}`;
      throw new FaultlineClientError('invalid', message, [{ path: 'query', code: 'invalid_query', message }]);
    }
    // Asked alone first, so the server's complaint (a position, a field) is about the user's text, not ours around it.
    try {
      await this.client.workflow.count(query);
    } catch (error) {
      const why = invalidQueryReason(error);
      if (why) throw new FaultlineClientError('invalid', `invalid visibility query ${JSON.stringify(query)}: ${why}`, [{ path: 'query', code: 'invalid_query', message: why }], { cause: error });
      throw this.wrap(error);
    }
    const ids = new Set<string>();
    try {
      const running = options.runningOnly ? ` AND ExecutionStatus = 'Running'` : '';
      for await (const execution of this.client.workflow.list({ query: `WorkflowType = '${WORKFLOW_TYPES.job}' AND (${query})${running}` })) ids.add(execution.workflowId);
    } catch (error) {
      const why = invalidQueryReason(error);
      if (why) throw new FaultlineClientError('invalid', `invalid visibility query ${JSON.stringify(query)}: ${why}`, [{ path: 'query', code: 'invalid_query', message: why }], { cause: error });
      throw this.wrap(error);
    }
    return [...ids];
  }

  async list(filter: ListFilter = {}): Promise<JobListEntry[]> {
    const clauses = [`WorkflowType = '${WORKFLOW_TYPES.job}'`];
    const quote = (value: string) => `'${value.replace(/'/g, "\\'")}'`;
    if (filter.status) clauses.push(`FaultlineStatus = ${quote(filter.status)}`);
    if (filter.hasErrors !== undefined) clauses.push(`FaultlineHasErrors = ${filter.hasErrors}`);
    if (filter.pipeline) clauses.push(`FaultlinePipeline = ${quote(filter.pipeline)}`);
    if (filter.tenant) clauses.push(`FaultlineTenant = ${quote(filter.tenant)}`);
    if (filter.priority !== undefined) clauses.push(`FaultlinePriority = ${Math.trunc(filter.priority)}`);
    const entries: JobListEntry[] = [];
    try {
      // Jobs flagged after they closed are known by their flag records.
      const flaggedLater = new Set<string>();
      for await (const record of this.client.workflow.list({ query: `WorkflowType = '${WORKFLOW_TYPES.flag}'` })) flaggedLater.add(record.workflowId.replace(/\/flag-\d+$/, ''));
      if (filter.flagged) clauses.push(flaggedLater.size > 0 ? `(FaultlineFlagged = true OR WorkflowId IN (${[...flaggedLater].map(quote).join(', ')}))` : 'FaultlineFlagged = true');
      for await (const execution of this.client.workflow.list({ query: clauses.join(' AND ') })) {
        const attrs = execution.typedSearchAttributes;
        entries.push({
          jobId: execution.workflowId,
          pipeline: attrs.get(SearchKeys.pipeline) ?? null,
          status: attrs.get(SearchKeys.status) ?? null,
          hasErrors: attrs.get(SearchKeys.hasErrors) ?? null,
          failedCount: attrs.get(SearchKeys.failedCount) ?? null,
          flagged: attrs.get(SearchKeys.flagged) === true || flaggedLater.has(execution.workflowId),
          tenant: attrs.get(SearchKeys.tenant) ?? null,
          priority: attrs.get(SearchKeys.priority) ?? null,
          startedAt: execution.startTime.toISOString(),
        });
        if (entries.length >= (filter.limit ?? 1_000)) break;
      }
    } catch (error) {
      await this.refuseWithoutSearchAttributes(error);
      throw this.wrap(error);
    }
    // Filters on unregistered attributes match nothing: say why instead of "no jobs".
    if (entries.length === 0) await this.refuseWithoutSearchAttributes();
    return entries;
  }

  /** A namespace without Faultline's search attributes is named in one line (with how to register them), Temporal's own error kept as the cause. */
  private async refuseWithoutSearchAttributes(cause?: unknown): Promise<void> {
    if (cause !== undefined && isUnavailable(cause)) return;
    const missing = await missingSearchAttributes(this.connection.operatorService, this.options.config.namespace);
    if (missing && missing.length > 0) {
      const problem = new SearchAttributesMissing(this.options.config.namespace, missing);
      throw new FaultlineClientError('rejected', problem.message, [], { cause: cause ?? problem });
    }
  }

  private storageHandle: Storage | undefined;
  /** Job storage, opened on first use (a client that never needs it never touches it). */
  storage(): Storage {
    return (this.storageHandle ??= createStorage(this.options.config.storage, this.options.config.s3));
  }

  private secretKey(): Buffer {
    const key = loadSecretKey(this.options.config.secretKey, localStateDir(this.options.config.storage), false);
    if (!key)
      throw new FaultlineClientError('invalid', 'a webhook secret needs FAULTLINE_SECRET_KEY (or run `faultline dev`, which creates one) so it never travels in clear', [
        { path: 'options.webhook.secret', code: 'no_key', message: 'no encryption key configured' },
      ]);
    return key;
  }

  private wrap(error: unknown, jobId?: string): Error {
    if (error instanceof FaultlineClientError) return error;
    if (error instanceof WorkflowNotFoundError || (error instanceof ServiceError && (error as { code?: number }).code === 5)) {
      return new FaultlineClientError('not_found', `no such job: ${jobId ?? '?'}`, [], { cause: error });
    }
    if (error instanceof WorkflowFailedError && error.cause instanceof ApplicationFailure) {
      // A job that failed before it had a result: its typed report, never a bare "Workflow execution failed".
      const cause = error.cause;
      const report = cause.details?.[0] as { details?: { issues?: SpecIssue[] } } | undefined;
      const issues = Array.isArray(report?.details?.issues) ? report.details.issues : [];
      return new FaultlineClientError(cause.type === ErrorTypes.InvalidSpec ? 'invalid' : 'failed', `${cause.type ?? 'Failed'}: ${cause.message}`, issues, { cause: error });
    }
    if (isUnavailable(error)) return new FaultlineClientError('unreachable', `cannot reach Temporal at ${this.options.config.address}`, [], { cause: error });
    return error instanceof Error ? error : new Error(String(error));
  }
}

/** An update the server gave up on before it reached the workflow (retryable: gRPC ABORTED or UNAVAILABLE). */
function updateAbortedByServer(error: unknown): boolean {
  const code = (error instanceof ServiceError ? (error.cause as { code?: unknown } | undefined) : undefined)?.code;
  return code === GRPC_ABORTED || code === GRPC_UNAVAILABLE;
}

/**
 * An update the server admitted to a run that then continued as new is aborted (not found); the
 * job itself still runs, so the caller sends it again to the new run.
 */
async function abortedByContinueAsNew(handle: WorkflowHandle<typeof jobWorkflow>, error: unknown): Promise<boolean> {
  if (!(error instanceof WorkflowNotFoundError)) return false;
  return (await handle.describe().catch(() => undefined))?.status.name === 'RUNNING';
}

/** A stand-in for a pipeline only workers know: the spec's general rules apply, the pipeline's own at the worker. */
function openPipeline(name: string): PipelineDefinition {
  return { name, description: name, outputs: [], defaultOutputs: [], steps: [], source: 'optional', destination: 'optional', openOutputs: true };
}

/** The server's reason when it refused a visibility query (gRPC INVALID_ARGUMENT, possibly wrapped by the SDK). */
function invalidQueryReason(error: unknown): string | undefined {
  for (let at: unknown = error, depth = 0; at && depth < 3; at = (at as { cause?: unknown }).cause, depth++) {
    const grpc = at as { code?: unknown; details?: unknown; message?: unknown };
    if (grpc.code === 3) {
      const reason = typeof grpc.details === 'string' && grpc.details ? grpc.details : String(grpc.message);
      // The server's positions count in its own SQL around the query, not in the user's text.
      return reason.replace(/ at position \d+/, '');
    }
  }
  return undefined;
}

/**
 * What is wrong with a visibility query's shape, pointed at in the user's own text: an unclosed
 * quote or parenthesis, a `)` without its `(`, or `==` (visibility queries compare with `=`).
 */
export function queryProblem(query: string): { at: number; message: string } | undefined {
  const open: number[] = [];
  for (let at = 0; at < query.length; at++) {
    const char = query[at];
    if (char === "'" || char === '"' || char === '`') {
      const end = query.indexOf(char, at + 1);
      if (end < 0) return { at, message: `the string opened here with ${char} is never closed` };
      at = end;
    } else if (char === '(') open.push(at);
    else if (char === ')') {
      if (open.pop() === undefined) return { at, message: 'this ) closes no (' };
    } else if (char === '=' && query[at + 1] === '=') return { at, message: 'compare with = (not ==)' };
  }
  const unclosed = open.pop();
  return unclosed === undefined ? undefined : { at: unclosed, message: 'this ( is never closed' };
}

/** Items' JSON texts, a chunk at a time (what `writeItemsFile` takes). */
async function* chunksOf(itemTexts: readonly string[]): AsyncGenerator<string[]> {
  for (let from = 0; from < itemTexts.length; from += ITEMS_CHUNK) yield itemTexts.slice(from, from + ITEMS_CHUNK);
}
