/**
 * How a pipeline is declared: pure data (safe for workflows and clients), so the client, the
 * CLI and the workflow validate specs with exactly the definitions the workers run.
 * The code that does the work lives in `src/activities/<pipeline>.ts`.
 */
import type { z } from 'zod';
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

export interface PipelineDefinition {
  name: string;
  description: string;
  /** Every output this pipeline can produce. */
  outputs: readonly string[];
  /** Outputs produced when a spec names none. */
  defaultOutputs: readonly string[];
  steps: readonly StepDefinition[];
  source: 'required' | 'optional' | 'none';
  destination: 'required' | 'optional' | 'none';
  /** zod schema of `params` (job level) and of each item's `params`. */
  params?: z.ZodTypeAny;
  itemParams?: z.ZodTypeAny;
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

export function definePipeline(definition: PipelineDefinition): PipelineDefinition {
  return definition;
}

/** Delay before attempt `attempt + 1`, after `attempt` failed attempts. */
export function backoffDelayMs(policy: RetryPolicy, attempt: number): number {
  const raw = policy.initialIntervalMs * Math.pow(policy.backoffCoefficient, Math.max(0, attempt - 1));
  return Math.min(raw, policy.maximumIntervalMs);
}
