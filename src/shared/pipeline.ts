/**
 * How a pipeline is declared: pure data (safe for workflows and clients), so the client, the
 * CLI and the workflow validate specs with exactly the definitions the workers run.
 * The code that does the work lives in `src/activities/<pipeline>.ts`.
 */
import type { StandardSchemaV1 } from './standard-schema';
import type { JobSpec, SpecIssue } from './spec';

export interface RetryPolicy {
  /** All attempts, including the first; 0 = unlimited. */
  maxAttempts: number;
  initialIntervalMs: number;
  backoffCoefficient: number;
  maximumIntervalMs: number;
}

export interface StepDefinition {
  name: string;
  /** Transient-error policy for this step; `options.retry` in a spec overrides it. */
  retry: RetryPolicy;
  /** Upper bound for one item in this step; used to size the batch activity timeouts. */
  itemTimeoutMs: number;
}

/**
 * What a job workflow needs of a pipeline: plain data, returned by the worker that validates the
 * job's spec and carried by the job (so the workflow bundle holds no pipeline code or schema, and
 * a running job keeps the `name@version` it started with).
 */
export interface PipelinePlan {
  name: string;
  version: string;
  /** Every output this pipeline can produce. */
  outputs: readonly string[];
  /** Outputs produced when a spec names none. */
  defaultOutputs: readonly string[];
  steps: readonly StepDefinition[];
  /** The task queue its batches run on; the main queue when absent. */
  taskQueue?: string;
  /**
   * `cpu`: its items keep a core busy (no waiting on I/O), so a job sizes batches to keep every
   * worker process busy to the end (`cpuBatchSize`) rather than to overlap waits. Absent: `io`.
   */
  work?: PipelineWork;
  /**
   * For `work: 'cpu'`: the activity slots its task queue's workers keep busy with computing batches
   * (worker processes polling it × each one's slots for such batches), counted by the worker that
   * checked the job's spec. A slice guides its batches to this many in flight. Absent: not counted
   * (a job started before it was counted, or the count failed): `CPU_WORK_SIZES.batchesAhead`.
   */
  cpuSlots?: number;
}

/** What an item mostly does: waits on I/O (the default) or computes. */
export type PipelineWork = 'io' | 'cpu';

export interface PipelineDefinition extends Omit<PipelinePlan, 'version'> {
  /** Reported in results; defaults to "1". */
  version?: string;
  description: string;
  source: 'required' | 'optional' | 'none';
  destination: 'required' | 'optional' | 'none';
  /** zod schema of `params` (job level) and of each item's `params`. */
  params?: StandardSchemaV1;
  itemParams?: StandardSchemaV1;
  /** Outputs are not known here (a client validating a pipeline only workers know): any name passes. */
  openOutputs?: boolean;
  /** Extended validation that a schema cannot express. */
  validate?: (spec: JobSpec) => SpecIssue[];
}

export type PipelineRegistry = Readonly<Record<string, PipelineDefinition>>;

export const RetryPresets = {
  /** Remote endpoints: a few tries, growing backoff. */
  network: { maxAttempts: 5, initialIntervalMs: 1_000, backoffCoefficient: 2, maximumIntervalMs: 60_000 },
  /** Local work that only fails transiently under pressure. */
  local: { maxAttempts: 3, initialIntervalMs: 200, backoffCoefficient: 2, maximumIntervalMs: 5_000 },
} as const satisfies Record<string, RetryPolicy>;

export function definePipelineDefinition(definition: PipelineDefinition): PipelineDefinition {
  return definition;
}

/** The data a job carries of a pipeline definition. */
export function planOf(definition: PipelineDefinition): PipelinePlan {
  return {
    name: definition.name,
    version: definition.version ?? '1',
    outputs: [...definition.outputs],
    defaultOutputs: [...definition.defaultOutputs],
    steps: definition.steps.map((step) => ({ name: step.name, retry: { ...step.retry }, itemTimeoutMs: step.itemTimeoutMs })),
    ...(definition.taskQueue !== undefined ? { taskQueue: definition.taskQueue } : {}),
    ...(definition.work === 'cpu' ? { work: 'cpu' as const } : {}),
  };
}

/**
 * The built-in pipelines' plans as they were when jobs validated specs inside the workflow: only
 * for replaying and continuing jobs started before pipelines were described by workers.
 */
export const LEGACY_PLANS: Readonly<Record<string, PipelinePlan & Pick<PipelineDefinition, 'source' | 'destination'>>> = {
  synthetic: {
    name: 'synthetic',
    version: '1',
    outputs: ['result'],
    defaultOutputs: ['result'],
    steps: [{ name: 'work', retry: { maxAttempts: 3, initialIntervalMs: 100, backoffCoefficient: 2, maximumIntervalMs: 10_000 }, itemTimeoutMs: 10 * 60_000 }],
    source: 'none',
    destination: 'optional',
  },
  images: {
    name: 'images',
    version: '1',
    outputs: ['thumbnail', 'preview', 'metadata', 'exif', 'fit'],
    defaultOutputs: ['thumbnail', 'preview', 'metadata', 'exif'],
    steps: [
      { name: 'fetch', retry: { maxAttempts: 5, initialIntervalMs: 1_000, backoffCoefficient: 2, maximumIntervalMs: 60_000 }, itemTimeoutMs: 5 * 60_000 },
      { name: 'process', retry: { maxAttempts: 3, initialIntervalMs: 200, backoffCoefficient: 2, maximumIntervalMs: 5_000 }, itemTimeoutMs: 5 * 60_000 },
      { name: 'deliver', retry: { maxAttempts: 5, initialIntervalMs: 1_000, backoffCoefficient: 2, maximumIntervalMs: 60_000 }, itemTimeoutMs: 5 * 60_000 },
    ],
    source: 'required',
    destination: 'optional',
  },
};

/** A registry of the legacy plans, for validating specs of jobs that predate worker-side validation. */
export function legacyRegistry(): PipelineRegistry {
  return Object.fromEntries(Object.entries(LEGACY_PLANS).map(([name, plan]) => [name, { ...plan, description: name }]));
}

/** Delay before attempt `attempt + 1`, after `attempt` failed attempts. */
export function backoffDelayMs(policy: RetryPolicy, attempt: number): number {
  const raw = policy.initialIntervalMs * Math.pow(policy.backoffCoefficient, Math.max(0, attempt - 1));
  return Math.min(raw, policy.maximumIntervalMs);
}
