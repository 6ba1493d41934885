/**
 * The public way to write a pipeline: typed steps whose return values are checkpointed, so a
 * transient retry of a later step, or a retry of the job, resumes an item at the step that failed.
 * `definePipeline` gives one object that a worker runs, a client validates specs with, and whose
 * plain-data plan (steps, retry policies, timeouts, outputs) is all the job workflow ever sees.
 */
import { workerMetrics } from './metrics';
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { ItemContext, ItemWork, PipelineImplementation } from './activities/types';
import { ItemError } from './activities/types';
import { type ItemStorage, type StepServices, type StepTools, stepAgents, stepTools } from './activities/step-tools';
import {
  type StandardSchemaV1,
  validateWithSchema,
  ErrorTypes,
  type JobSpec,
  type OutputRecord,
  type PipelineDefinition,
  type PipelineWork,
  type RetryPolicy,
  type SpecIssue,
  serializedSize,
} from './shared';
import type { Storage, WorkFile } from './storage';

/** What a step says about one output of its item. */
export type OutputResult =
  | { status: 'Available'; value?: unknown; location?: string; bytes?: number; sha256?: string; reason?: string; details?: Record<string, unknown> }
  | { status: 'Missing' | 'Unsolved' | 'Skipped'; reason?: string; details?: Record<string, unknown> };

/** A status per declared output; the last step returns this (and any step may, through `endItem`). */
export type ItemOutputs<O extends string> = { [K in O]?: OutputResult };

const ENDED = Symbol.for('faultline.endItem');
/** An item finished early by a step before the last: its outputs, as the last step would return them. */
export interface EndedItem<O extends string> {
  readonly [ENDED]: true;
  readonly outputs: ItemOutputs<O>;
}
export function endItem<O extends string>(outputs: ItemOutputs<O>): EndedItem<O> {
  return { [ENDED]: true, outputs };
}
function isEnded(value: unknown): value is EndedItem<string> {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[ENDED] === true;
}

export interface StepItem<P> {
  id: string;
  params: P;
  source?: string;
  /** The outputs requested of this item. */
  outputs: readonly string[];
  /** Pre-signed PUT URLs per output, when the spec gives them (`items[].putUrls`). */
  putUrls?: Record<string, string>;
}

export interface StepContext<P, I> {
  item: StepItem<P>;
  /** The previous step's return value (undefined for the first step). */
  input: I;
  /** Attempts of this step for this item in this round, 1-based. */
  attempt: number;
  /** Times the engine has run this item in this round, this one included (crash re-runs count too). */
  dispatch: number;
  step: string;
  job: { jobId: string; round: number; params: unknown; destination?: string };
  /** Aborted when the job is cancelled, the worker shuts down or the item passes its deadline. */
  signal: AbortSignal;
  log: Logger;
  /**
   * Small JSON progress of this item (at most 4 KB), sent with its batch's next heartbeat and shown
   * with the activity in Temporal's UI. The batch heartbeats by itself: call this to say what a long step is doing.
   */
  heartbeat(details: unknown): void;
  /** HTTP through the outbound guard (private targets refused unless allowed; network errors transient). */
  fetch: StepTools['fetch'];
  /** The built-ins' classification of an HTTP status (404 → SourceNotFound, 429/5xx → transient with Retry-After …). */
  statusError: StepTools['statusError'];
  /** A source's bytes: file:// within the allowed roots, http(s) through the guard. */
  openSource: StepTools['openSource'];
  /** Writes `<destination>/<item>/<name>` atomically; returns `{ location, bytes, sha256 }` for an Available output. */
  writeOutput: StepTools['writeOutput'];
  /** A file's size+mtime or a URL's ETag/Last-Modified: what a step's `dependsOn` usually returns. */
  sourceFingerprint: StepTools['sourceFingerprint'];
  /** This item's working files in job storage, for values too large to return (a checkpoint holds JSON up to 1 MB). */
  storage: ItemStorage;
}

export interface StepDefinitionInput<P, I, R> {
  name: string;
  /** Transient-error policy for this step (defaults: 3 attempts, 1 s doubling to 60 s). */
  retry?: Partial<RetryPolicy>;
  /** Upper bound for one item in this step (default 5 min). */
  itemTimeoutMs?: number;
  /**
   * What this step's value depends on (e.g. `ctx.sourceFingerprint(ctx.item.source)`), told when the
   * step has finished and again before its kept value is used: when it has changed, a retry runs the
   * step again instead of resuming after it.
   */
  dependsOn?: (ctx: StepContext<P, I>) => Promise<string | undefined> | string | undefined;
  /**
   * `false` for a step that changes nothing outside its item's working files (reads, decodes,
   * computes): its value and `ctx.storage` files are then written only if a later step fails, so
   * an item that succeeds at once writes nothing to job storage; a crash runs it again. Default: it
   * has side effects, and its value is kept before the next step runs.
   */
  sideEffects?: boolean;
  run: (ctx: StepContext<P, I>) => Promise<R> | R;
}

type Value<R> = Exclude<Awaited<R>, EndedItem<string>>;
type Mid<P, I, R, O extends string> = StepDefinitionInput<P, I, R | EndedItem<NoInfer<O>>>;
type Last<P, I, O extends string> = StepDefinitionInput<P, I, ItemOutputs<NoInfer<O>>>;

export interface PipelineInput<S extends StandardSchemaV1, O extends string> {
  name: string;
  /** Pinned by each job that starts with it and reported in its result. */
  version: string;
  description?: string;
  outputs: readonly O[];
  /** Outputs an item gets when its spec names none (default: all). */
  defaultOutputs?: readonly O[];
  itemParams?: S;
  /** Schema of the job's `params`. */
  params?: StandardSchemaV1;
  source?: PipelineDefinition['source'];
  destination?: PipelineDefinition['destination'];
  /** Run this pipeline's batches on their own workers (e.g. `'gpu'`); the job stays on the main queue. */
  taskQueue?: string;
  /**
   * `'cpu'` when an item computes rather than waits (image math, parsing, hashing): a job then
   * runs large batches first and small ones last, so every worker process stays busy to the end.
   * Default `'io'`: batches sized for items that wait on the network or disk.
   */
  work?: PipelineWork;
  /** Checks a schema cannot express, over the whole spec. */
  validate?: (spec: JobSpec) => SpecIssue[];
  /**
   * The item's rate key, usually the host it talks to (`({ item }) => new URL(item.source ?? '').host`):
   * where `options.rateLimits` or FAULTLINE_RATE_LIMITS limit the key, the item waits for a lease
   * from the key's limiter before it runs, across every worker and job. Undefined: no limit.
   */
  rateKey?: (ctx: { item: StepItem<StandardSchemaV1.InferOutput<S>>; job: { jobId: string; params: unknown } }) => string | undefined;
}

/** The host (with its port) of an http(s) URL, the usual rate key; undefined for anything else. */
export function httpHost(url: string | undefined): string | undefined {
  if (!url) return undefined;
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.host.toLowerCase() : undefined;
  } catch {
    return undefined;
  }
}

/** A pipeline a worker runs and a client validates with. */
export interface Pipeline<P = unknown, O extends string = string> {
  readonly definition: PipelineDefinition;
  readonly implementation: PipelineImplementation;
  /** Types only: the item params and output names. */
  readonly types?: { params: P; outputs: O };
}

type Params<S extends StandardSchemaV1> = StandardSchemaV1.InferOutput<S>;

export function definePipeline<S extends StandardSchemaV1, const O extends string>(input: PipelineInput<S, O> & { steps: readonly [Last<Params<S>, undefined, O>] }): Pipeline<Params<S>, O>;
export function definePipeline<S extends StandardSchemaV1, const O extends string, A>(
  input: PipelineInput<S, O> & { steps: readonly [Mid<Params<S>, undefined, A, O>, Last<Params<S>, Value<A>, O>] },
): Pipeline<Params<S>, O>;
export function definePipeline<S extends StandardSchemaV1, const O extends string, A, B>(
  input: PipelineInput<S, O> & { steps: readonly [Mid<Params<S>, undefined, A, O>, Mid<Params<S>, Value<A>, B, O>, Last<Params<S>, Value<B>, O>] },
): Pipeline<Params<S>, O>;
export function definePipeline<S extends StandardSchemaV1, const O extends string, A, B, C>(
  input: PipelineInput<S, O> & {
    steps: readonly [Mid<Params<S>, undefined, A, O>, Mid<Params<S>, Value<A>, B, O>, Mid<Params<S>, Value<B>, C, O>, Last<Params<S>, Value<C>, O>];
  },
): Pipeline<Params<S>, O>;
export function definePipeline<S extends StandardSchemaV1, const O extends string, A, B, C, D>(
  input: PipelineInput<S, O> & {
    steps: readonly [Mid<Params<S>, undefined, A, O>, Mid<Params<S>, Value<A>, B, O>, Mid<Params<S>, Value<B>, C, O>, Mid<Params<S>, Value<C>, D, O>, Last<Params<S>, Value<D>, O>];
  },
): Pipeline<Params<S>, O>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the overloads above carry the types
export function definePipeline(input: PipelineInput<StandardSchemaV1, string> & { steps: readonly StepDefinitionInput<any, any, any>[] }): Pipeline<any, any> {
  return buildPipeline(input as PipelineInput<StandardSchemaV1, string> & { steps: readonly StepDefinitionInput<unknown, unknown, unknown>[] });
}

const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 3, initialIntervalMs: 1_000, backoffCoefficient: 2, maximumIntervalMs: 60_000 };
const DEFAULT_ITEM_TIMEOUT_MS = 5 * 60_000;
/** A checkpoint value above this is refused with a typed error: keep big data in storage and return its location. */
const MAX_CHECKPOINT_BYTES = 1_000_000;
/** An output's `value` travels in records and results: small JSON only. */
const MAX_VALUE_BYTES = 16_000;

/** What is kept per item between attempts and rounds. */
interface Checkpoint {
  round: number;
  /** Values of finished steps, by step name. */
  values: Record<string, unknown>;
  /** Failed attempts of each step in `round`. */
  attempts: Record<string, number>;
  /** What each kept value depended on when it was made (steps with `dependsOn`). */
  depends?: Record<string, string | null>;
}

/** Where checkpoints live; the worker injects its job storage. */
export interface CheckpointStore {
  read(jobId: string, item: string): Promise<unknown>;
  write(jobId: string, item: string, checkpoint: unknown): Promise<void>;
}

let checkpointStore: CheckpointStore | undefined;
/** Set by the worker once it has job storage. */
export function useCheckpointStorage(storage: Pick<Storage, 'readCheckpoint' | 'writeCheckpoint'>): void {
  checkpointStore = { read: (jobId, item) => storage.readCheckpoint(jobId, item), write: (jobId, item, checkpoint) => storage.writeCheckpoint(jobId, item, checkpoint) };
}

function buildPipeline(input: PipelineInput<StandardSchemaV1, string> & { steps: readonly StepDefinitionInput<unknown, unknown, unknown>[] }): Pipeline {
  if (input.steps.length === 0) throw new Error(`pipeline "${input.name}" has no steps`);
  const names = new Set<string>();
  for (const step of input.steps) {
    if (names.has(step.name)) throw new Error(`pipeline "${input.name}" has two steps named "${step.name}"`);
    names.add(step.name);
  }
  const definition: PipelineDefinition = {
    name: input.name,
    version: input.version,
    description: input.description ?? input.name,
    outputs: [...input.outputs],
    defaultOutputs: [...(input.defaultOutputs ?? input.outputs)],
    steps: input.steps.map((step) => ({ name: step.name, retry: { ...DEFAULT_RETRY, ...step.retry }, itemTimeoutMs: step.itemTimeoutMs ?? DEFAULT_ITEM_TIMEOUT_MS })),
    source: input.source ?? 'optional',
    destination: input.destination ?? 'optional',
    ...(input.taskQueue !== undefined ? { taskQueue: input.taskQueue } : {}),
    ...(input.work === 'cpu' ? { work: 'cpu' as const } : {}),
    ...(input.itemParams ? { itemParams: input.itemParams } : {}),
    ...(input.params ? { params: input.params } : {}),
    ...(input.validate ? { validate: input.validate } : {}),
  };
  const multiStep = input.steps.length > 1;
  let agents: ReturnType<typeof stepAgents> | undefined;

  async function processItem(ctx: ItemContext): Promise<ItemWork> {
    const { entry, job } = ctx;
    const round = job.round ?? 1;
    const store = checkpointStore;
    // Only a later attempt or round can find a checkpoint: first runs never read storage.
    const stored = store && (entry.run > 1 || round > 1) ? ((await store.read(job.jobId, entry.item.id)) as Checkpoint | undefined) : undefined;
    // `retry --from-start` keeps only what this round itself finished.
    const values = job.fromStart && stored?.round !== round ? {} : (stored?.values ?? {});
    const checkpoint: Checkpoint = { round, values, attempts: stored?.round === round ? stored.attempts : {}, depends: { ...stored?.depends } };
    const parsed = input.itemParams ? validateWithSchema(input.itemParams, entry.item.params ?? {}) : { ok: true as const, value: entry.item.params ?? {} };
    if (!parsed.ok) throw new ItemError({ type: ErrorTypes.InvalidSpec, class: 'invalid', message: `item params: ${parsed.issues[0]?.message ?? 'invalid'}`, details: { issues: parsed.issues } });
    const services = ctx.services ?? { allowedRoots: [], allowedHosts: [] };
    agents ??= stepAgents(services);
    const run = new ItemRun(ctx, parsed.value, services, agents, checkpoint, store, stored !== undefined);
    const metrics = workerMetrics();
    let value: unknown = undefined;
    for (const [index, step] of input.steps.entries()) {
      const last = index === input.steps.length - 1;
      const stepCtx = new StepRun(run, step.name, value, (checkpoint.attempts[step.name] ?? 0) + 1);
      const tracked = step.dependsOn !== undefined && store !== undefined && multiStep;
      if (!last && step.name in checkpoint.values) {
        // Kept from an earlier attempt or round, unless what it was made from has changed since.
        if (!tracked || checkpoint.depends?.[step.name] === ((await step.dependsOn?.(stepCtx)) ?? null)) {
          value = checkpoint.values[step.name];
          continue;
        }
        for (const later of input.steps.slice(index)) delete checkpoint.values[later.name];
      }
      run.deferring = step.sideEffects === false;
      let result: unknown;
      const stepStarted = metrics ? performance.now() : 0;
      try {
        result = await step.run(stepCtx);
        metrics?.stepDuration.observe({ pipeline: input.name, step: step.name }, (performance.now() - stepStarted) / 1000);
      } catch (thrown) {
        metrics?.stepDuration.observe({ pipeline: input.name, step: step.name }, (performance.now() - stepStarted) / 1000);
        // A cancelled batch hands its items back as they are; anything else is this item's failure.
        const error = ctx.signal.aborted && !(thrown instanceof ItemError) ? thrown : asItemError(thrown, step.name);
        // Job storage away: nothing can be kept now, and the batch runs the item again once it answers.
        if (store && error instanceof ItemError && error.report.type !== ErrorTypes.StorageUnavailable) {
          // Only an attempt that will be retried in this round needs counting (rounds start afresh).
          if (error.report.class === 'transient') checkpoint.attempts[step.name] = stepCtx.attempt;
          // Finished steps are kept for the retry (a later attempt or round resumes here).
          if (error.report.class === 'transient' || index > 0) await run.persist();
        }
        throw error;
      }
      if (last || isEnded(result)) return toWork(entry.item.id, entry.outputs, isEnded(result) ? result.outputs : (result as ItemOutputs<string>), run.bytesIn);
      if (serializedSize(result) > MAX_CHECKPOINT_BYTES) {
        throw new ItemError({
          type: ErrorTypes.ItemUnprocessable,
          message: `step "${step.name}" returned more than ${MAX_CHECKPOINT_BYTES} bytes of JSON; keep large data with ctx.storage and return its name`,
          step: step.name,
        });
      }
      checkpoint.values[step.name] = result;
      // Told after the step, so a source it read over http(s) answers from that response.
      if (tracked) (checkpoint.depends ??= {})[step.name] = (await step.dependsOn?.(stepCtx)) ?? null;
      // Kept before the next step runs, so a crash in it does not repeat this step's side effects;
      // a step without any is kept only if a later one fails (a crash then runs it again).
      if (store && multiStep && step.sideEffects !== false) await run.persist();
      value = result;
    }
    throw new Error('unreachable: the last step returns');
  }

  const rateKey = input.rateKey;
  const implementation: PipelineImplementation = { name: input.name, processItem };
  if (rateKey) {
    implementation.rateKey = (job, item) => {
      const parsed = input.itemParams ? validateWithSchema(input.itemParams, item.params ?? {}) : { ok: true as const, value: item.params ?? {} };
      if (!parsed.ok) return undefined;
      return rateKey({
        item: { id: item.id, params: parsed.value, ...(item.source !== undefined ? { source: item.source } : {}), outputs: item.outputs ?? [] },
        job: { jobId: job.jobId, params: job.params },
      });
    };
  }
  return { definition, implementation };
}

/**
 * One run of one item through its steps: what their contexts share. Built per item, so what it
 * holds is made on first use (most items of most pipelines touch no tool and no storage).
 */
class ItemRun {
  /** Source bytes this run read, for the job's metrics. */
  bytesIn = 0;
  /** The running step declared no side effects: its working files stay in memory until something must be kept. */
  deferring = false;
  readonly item: StepItem<unknown>;
  readonly job: StepContext<unknown, unknown>['job'];
  /** Validators of the sources this run read, so a fresh step's dependsOn needs no extra request. */
  private validatorsMap?: Map<string, string | undefined>;
  private buffered?: Map<string, Buffer>;
  private storageApi?: ItemStorage;

  constructor(
    readonly ctx: ItemContext,
    params: unknown,
    readonly services: StepServices,
    readonly agents: ReturnType<typeof stepAgents>,
    private readonly checkpoint: Checkpoint,
    private readonly store: CheckpointStore | undefined,
    private mayHaveStored: boolean,
  ) {
    const { entry, job } = ctx;
    this.item = {
      id: entry.item.id,
      params,
      outputs: entry.outputs,
      ...(entry.item.source !== undefined ? { source: entry.item.source } : {}),
      ...(entry.item.putUrls !== undefined ? { putUrls: entry.item.putUrls } : {}),
    };
    this.job = { jobId: job.jobId, round: job.round ?? 1, params: job.params, ...(job.destination !== undefined ? { destination: job.destination } : {}) };
  }

  get validators(): Map<string, string | undefined> {
    return (this.validatorsMap ??= new Map());
  }

  get storage(): ItemStorage {
    return (this.storageApi ??= { put: (name, data) => this.put(name, data), get: (name, expected) => this.get(name, expected), drop: () => this.drop() });
  }

  private files(): NonNullable<StepServices['storage']> {
    if (!this.services.storage) throw new ItemError({ type: ErrorTypes.StorageUnwritable, message: "ctx.storage needs the worker's job storage" });
    return this.services.storage;
  }

  private async put(name: string, data: Buffer | string): Promise<WorkFile> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    if (!this.deferring) {
      this.mayHaveStored = true;
      return this.files().writeWorkFile(this.job.jobId, this.item.id, name, bytes);
    }
    (this.buffered ??= new Map()).set(name, bytes);
    return { name, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') };
  }

  private async get(name: string, expected?: { sha256: string }): Promise<Buffer | undefined> {
    return this.buffered?.get(name) ?? (await this.files().readWorkFile(this.job.jobId, this.item.id, name, expected?.sha256));
  }

  private async drop(): Promise<void> {
    this.buffered?.clear();
    if (this.mayHaveStored) await this.files().dropWorkFiles(this.job.jobId, this.item.id);
  }

  /** Writes what a later attempt or round needs: buffered working files first, then the checkpoint. */
  async persist(): Promise<void> {
    if (!this.store) return;
    for (const [name, data] of this.buffered ?? []) await this.files().writeWorkFile(this.job.jobId, this.item.id, name, data);
    if (this.buffered?.size) this.mayHaveStored = true;
    this.buffered?.clear();
    await this.store.write(this.job.jobId, this.item.id, this.checkpoint);
  }
}

/** A step's context: its tools are made when a step first reads them (a destructured tool works too). */
class StepRun implements StepContext<unknown, unknown> {
  private toolbox?: StepTools;
  constructor(
    private readonly run: ItemRun,
    readonly step: string,
    readonly input: unknown,
    readonly attempt: number,
  ) {}
  get item(): StepItem<unknown> {
    return this.run.item;
  }
  get dispatch(): number {
    return this.run.ctx.entry.run;
  }
  get job(): StepContext<unknown, unknown>['job'] {
    return this.run.job;
  }
  get signal(): AbortSignal {
    return this.run.ctx.signal;
  }
  // Lazy, as the batch gives it: a child logger per item costs more than most items' work.
  get log(): Logger {
    return this.run.ctx.log;
  }
  get heartbeat(): (details: unknown) => void {
    const ctx = this.run.ctx;
    return (details) => ctx.heartbeat?.(details);
  }
  private tools(): StepTools {
    const { run } = this;
    const { job, item } = run;
    this.toolbox ??= stepTools(
      run.services,
      {
        jobId: job.jobId,
        item: item.id,
        step: this.step,
        signal: run.ctx.signal,
        validators: run.validators,
        ...(job.destination !== undefined ? { destination: job.destination } : {}),
        ...(item.putUrls !== undefined ? { putUrls: item.putUrls } : {}),
      },
      run.agents,
    );
    return this.toolbox;
  }
  get fetch(): StepTools['fetch'] {
    return this.tools().fetch;
  }
  get statusError(): StepTools['statusError'] {
    return this.tools().statusError;
  }
  get openSource(): StepTools['openSource'] {
    const { run } = this;
    const open = this.tools().openSource;
    return async (uri, options) => {
      const data = await open(uri, options);
      run.bytesIn += data.length;
      return data;
    };
  }
  get writeOutput(): StepTools['writeOutput'] {
    return this.tools().writeOutput;
  }
  get sourceFingerprint(): StepTools['sourceFingerprint'] {
    return this.tools().sourceFingerprint;
  }
  get storage(): ItemStorage {
    return this.run.storage;
  }
}

/** A step's error, with the step named; anything not an ItemError is unexpected, its cause chain kept. */
function asItemError(error: unknown, step: string): unknown {
  if (error instanceof ItemError) {
    error.report.step ??= step;
    return error;
  }
  if (!(error instanceof Error)) return error;
  return new ItemError({ type: ErrorTypes.UnexpectedItemError, class: 'unprocessable', message: error.message, step, cause: error });
}

function toWork(item: string, requested: readonly string[], outputs: ItemOutputs<string>, bytesIn: number): ItemWork {
  const records: OutputRecord[] = [];
  let bytesOut = 0;
  for (const output of requested) {
    const result = outputs[output];
    if (!result) continue; // the engine records "no status" as a Failed output
    const record: OutputRecord = { item, output, status: result.status };
    if (result.reason !== undefined) record.reason = result.reason;
    if (result.details !== undefined) record.details = result.details;
    if (result.status === 'Available') {
      if (result.location !== undefined) record.location = result.location;
      if (result.bytes !== undefined) {
        record.bytes = result.bytes;
        bytesOut += result.bytes;
      }
      if (result.sha256 !== undefined) record.sha256 = result.sha256;
      if (result.value !== undefined) {
        if (serializedSize(result.value) > MAX_VALUE_BYTES) {
          throw new ItemError({
            type: ErrorTypes.ItemUnprocessable,
            message: `output "${output}" has a value of more than ${MAX_VALUE_BYTES} bytes of JSON; write it as a file and return its location`,
          });
        }
        record.value = result.value;
      }
    }
    records.push(record);
  }
  return { records, bytesIn, bytesOut };
}
