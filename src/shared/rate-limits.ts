/**
 * Per-key rate limits (a key is usually a remote host): the limits' schema, how a job's and a
 * worker's limits combine, and the messages of the limiter workflow that holds one key's limit
 * for every worker process and every job of the namespace.
 */
import { defineQuery, defineSignal } from '@temporalio/workflow';
import { z } from 'zod';

export const RateLimitSchema = z
  .object({
    /** Requests started per second, spread evenly (at most `perSecond` in any second). */
    perSecond: z.number().positive().max(10_000),
    /** Requests in flight at once (default: no bound beyond the rate). */
    concurrency: z.number().int().min(1).max(10_000).optional(),
  })
  .strict();
export type RateLimit = z.infer<typeof RateLimitSchema>;

/** A rate key: a host name (`api.example.com`, `127.0.0.1:8080`) or any name a pipeline gives. */
export const RateKeySchema = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9*][A-Za-z0-9._:@\-[\]]*$/, 'a rate key is a host name or letters, digits, . _ : @ - [ ] (at most 200); "*" is every key');

/** `options.rateLimits` and `FAULTLINE_RATE_LIMITS`: limits by key; `"*"` applies to every key without its own. */
export const RateLimitsSchema = z.record(RateKeySchema, RateLimitSchema);
export type RateLimits = z.infer<typeof RateLimitsSchema>;

/** The concurrency of a limit that gives none: its leases are not counted, and need no release (unless the host asks for a pause). */
export const UNBOUNDED_CONCURRENCY = 10_000;

/** The limit for one key: the job's own (by key, then `*`), then the worker's; the stricter of the two where both apply. */
export function rateLimitFor(key: string, job: RateLimits | undefined, worker: RateLimits | undefined): Required<RateLimit> | undefined {
  const pick = (limits: RateLimits | undefined) => limits?.[key] ?? limits?.['*'];
  const found = [pick(job), pick(worker)].filter((limit): limit is RateLimit => limit !== undefined);
  if (found.length === 0) return undefined;
  return {
    perSecond: Math.min(...found.map((limit) => limit.perSecond)),
    concurrency: Math.min(...found.map((limit) => limit.concurrency ?? UNBOUNDED_CONCURRENCY)),
  };
}

/** The limiter workflow of a key (one per key and namespace). */
export function limiterWorkflowId(key: string): string {
  return `faultline-rate-limit/${key}`;
}

export interface LeaseRequest {
  /** Chosen by the asker; the lease's id once granted. */
  ticket: string;
  jobId: string;
  /** The worker process asking: it polls for all its tickets at once (`holderQuery`). */
  holder: string;
  limit: Required<RateLimit>;
  /** Past this the lease lapses on its own (its holder died). */
  ttlMs: number;
}

/** The tickets a worker process asked about, as the limiter sees them; a ticket in neither list is unknown (dropped, or asked of an earlier run: ask again). */
export interface TicketsState {
  granted: string[];
  waiting: string[];
  /** Until when the host asked for a pause (epoch ms): a granted lease starts no request before it. */
  blockedUntil: number;
  /** When the first of them still waiting may have its turn, in ms (an estimate for the next poll). */
  etaMs?: number;
}

export interface ReleaseRequest {
  /** A granted lease, or a ticket still waiting (withdrawn). */
  ticket: string;
  /** The host asked for a pause (429/503 with Retry-After): no lease of this key starts before it ends. */
  retryAfterMs?: number;
}

export interface LimiterView {
  key: string;
  limit: Required<RateLimit>;
  inFlight: number;
  waiting: number;
  /** Per job: leases held and requests waiting. */
  jobs: Record<string, { inFlight: number; waiting: number }>;
  /** Leases granted over the last 10 s, per second. */
  effectivePerSecond: number;
  granted: number;
  /** Retry-After pauses asked for by the host. */
  backoffs: number;
  blockedUntil?: string;
}

/** What a limiter carries across continue-as-new (its waiting requests too: none is dropped). */
export interface LimiterState {
  key: string;
  nextAt: number;
  blockedUntil: number;
  leases: { ticket: string; jobId: string; holder: string; expiresAt: number; limit: Required<RateLimit>; waitedMs: number; uncounted?: true }[];
  waiting: (LeaseRequest & { admittedAt: number })[];
  granted: number;
  backoffs: number;
  lastLimit?: Required<RateLimit>;
  /** Grant times of the last window, so a new run grants no burst. */
  recentGrants?: number[];
}

/** Signals, not updates: a key may have hundreds of waiting requests, and Temporal bounds updates in flight per workflow (10 by default). */
export const requestLeaseSignal = defineSignal<[LeaseRequest[]]>('requestLeases');
export const releaseLeaseSignal = defineSignal<[ReleaseRequest[]]>('releaseLeases');
/** Each worker process polls its tickets of a key with one query (nothing in history), however many of its items wait. */
export const ticketsQuery = defineQuery<TicketsState, [string[]]>('tickets');
export const limiterViewQuery = defineQuery<LimiterView>('limiterView');
