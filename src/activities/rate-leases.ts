/**
 * The worker's side of per-key rate limits: an item whose key is limited asks the key's limiter
 * workflow for a lease (signal-with-start: the first asker starts it) and runs once it is granted;
 * it gives the lease back when it ends, with the host's Retry-After when the host asked for a
 * pause. One poller per key and process asks the limiter (by query: nothing in history) which of
 * the process's tickets are granted, however many of its items wait.
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import {
  type LeaseRequest,
  type RateLimit,
  type ReleaseRequest,
  type TicketsState,
  UNBOUNDED_CONCURRENCY,
  WORKFLOW_TYPES,
  limiterWorkflowId,
  releaseLeaseSignal,
  requestLeaseSignal,
  ticketsQuery,
} from '../shared';
import type { rateLimiterWorkflow } from '../workflows/rate-limiter';
import { workerMetrics } from '../metrics';

export interface RateLease {
  /** Gives the lease back; `retryAfterMs` pauses the key for everyone. */
  release(retryAfterMs?: number): void;
}

const NO_LEASE: RateLease = { release() {} };

/** Polls while tickets wait: soon after the estimated turn, never busier than this nor lazier than that. */
const MIN_POLL_MS = 20;
const MAX_POLL_MS = 100;
/** Leases given back within this long share one signal. */
const RELEASE_EVERY_MS = 5;

interface Waiting {
  request: LeaseRequest;
  /** The limiter has it (its request signal returned). */
  asked: boolean;
  /** Its request left at least once: the limiter may have it even if the signal failed or is still on its way. */
  sent: boolean;
  granted: () => void;
}

export class RateLeases {
  static readonly none = NO_LEASE;
  /** This process, as the limiters know it. */
  private readonly holder = `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  private readonly keys = new Map<string, Map<string, Waiting>>();
  private readonly releases = new Map<string, ReleaseRequest[]>();
  /** Per key, the request signal last sent: releases go after it, so none overtakes its ticket's request. */
  private readonly asking = new Map<string, Promise<void>>();

  constructor(
    private readonly client: Client,
    private readonly taskQueue: string,
    private readonly log: Logger,
  ) {}

  /** Waits for a lease of `key` (until `signal` aborts): waiting is not failing, however long it takes. */
  async acquire(key: string, limit: Required<RateLimit>, request: { jobId: string; ttlMs: number }, signal: AbortSignal): Promise<RateLease> {
    signal.throwIfAborted();
    const metrics = workerMetrics();
    const started = Date.now();
    const ticket = randomUUID();
    let waiting = this.keys.get(key);
    if (!waiting) this.keys.set(key, (waiting = new Map()));
    const tickets = waiting;
    metrics?.rateWaiting.inc({ key });
    let onAbort: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        tickets.set(ticket, { request: { ...request, ticket, holder: this.holder, limit }, asked: false, sent: false, granted: resolve });
        onAbort = () => reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
        signal.addEventListener('abort', onAbort, { once: true });
        if (tickets.size === 1) void this.poll(key, tickets);
      });
    } catch (error) {
      // Given up (cancelled, or the batch's time is up): withdraw the ticket, granted or not; also one
      // whose request is still on its way, or failed after it may have landed (else it would wait, then
      // hold a lease until its time to live, ~30 min, blocking the key for every job).
      const entry = tickets.get(ticket);
      tickets.delete(ticket);
      if (entry?.sent) this.lease(key, ticket, true).release();
      throw error;
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
      metrics?.rateWaiting.dec({ key });
    }
    if (Date.now() - started > 5) metrics?.rateLimited.inc({ key });
    return this.lease(key, ticket, limit.concurrency < UNBOUNDED_CONCURRENCY);
  }

  /** While this process has tickets of `key` waiting: ask for new ones, and hand out those granted. */
  private async poll(key: string, tickets: Map<string, Waiting>): Promise<void> {
    const handle = this.client.workflow.getHandle(limiterWorkflowId(key));
    while (tickets.size > 0) {
      let wait = MAX_POLL_MS;
      try {
        const unasked = [...tickets.values()].filter((entry) => !entry.asked);
        if (unasked.length > 0) {
          for (const entry of unasked) entry.sent = true;
          const asking = this.ask(
            key,
            unasked.map((entry) => entry.request),
          );
          this.asking.set(key, asking);
          await asking;
          for (const entry of unasked) entry.asked = true;
        }
        const known: TicketsState = await handle.query(ticketsQuery, [...tickets.keys()]);
        const granted = new Set(known.granted);
        const waiting = new Set(known.waiting);
        const pause = known.blockedUntil - Date.now();
        // A lease granted just before the host asked for a pause starts after it.
        if (granted.size > 0 && pause > 0) await sleep(Math.min(pause, 60_000));
        for (const [ticket, entry] of tickets) {
          if (granted.has(ticket)) {
            tickets.delete(ticket);
            entry.granted();
          } else if (!waiting.has(ticket)) entry.asked = false; // dropped, or asked of a run that ended: ask again
        }
        if (known.etaMs !== undefined) wait = Math.min(MAX_POLL_MS, Math.max(MIN_POLL_MS, known.etaMs));
      } catch (error) {
        this.log.debug({ err: error, key }, 'could not reach the rate limiter; asking again');
        for (const entry of tickets.values()) entry.asked = false;
      }
      if (tickets.size > 0) await sleep(wait);
    }
  }

  private async ask(key: string, requests: LeaseRequest[]): Promise<void> {
    await this.client.workflow.signalWithStart<typeof rateLimiterWorkflow, [LeaseRequest[]]>(WORKFLOW_TYPES.rateLimiter, {
      workflowId: limiterWorkflowId(key),
      taskQueue: this.taskQueue,
      args: [{ key, nextAt: 0, blockedUntil: 0, leases: [], waiting: [], granted: 0, backoffs: 0 }],
      signal: requestLeaseSignal,
      signalArgs: [requests],
      // Leases gate items: the limiter's workflow tasks go before every job's.
      priority: { priorityKey: 1 },
      staticSummary: `Faultline rate limit of ${key}`,
    });
  }

  /** A lease to give back when its item ends: always when it counts toward a concurrency bound, else only to pass on a host's pause. */
  private lease(key: string, ticket: string, counted: boolean): RateLease {
    let released = false;
    return {
      release: (retryAfterMs) => {
        if (released) return;
        released = true;
        if (retryAfterMs !== undefined) workerMetrics()?.rateBackoffs.inc({ key });
        if (counted || retryAfterMs !== undefined) this.giveBack(key, { ticket, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });
      },
    };
  }

  /** Leases given back within a few ms go in one signal; a host's pause goes at once. */
  private giveBack(key: string, request: ReleaseRequest): void {
    let pending = this.releases.get(key);
    if (!pending) this.releases.set(key, (pending = []));
    pending.push(request);
    if (request.retryAfterMs !== undefined) return void this.flushReleases(key);
    if (pending.length === 1) setTimeout(() => void this.flushReleases(key), RELEASE_EVERY_MS);
  }

  private async flushReleases(key: string): Promise<void> {
    const pending = this.releases.get(key);
    if (!pending?.length) return;
    this.releases.delete(key);
    // A release that overtook its ticket's request would find nothing, and the request would then wait.
    await this.asking.get(key)?.catch(() => undefined);
    await this.client.workflow
      .getHandle(limiterWorkflowId(key))
      .signal(releaseLeaseSignal, pending)
      .catch((error: unknown) => this.log.warn({ err: error, key }, 'could not give rate leases back (they lapse on their own)'));
  }
}
