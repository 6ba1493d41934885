/**
 * One rate key's limiter: grants leases in the order they were asked for, at most `perSecond`
 * per second (spread evenly) and `concurrency` at once, and none while the host's Retry-After
 * pause lasts. Every worker process and every job of the namespace asks the same workflow, so the
 * limit holds across all of them; the workflow's clock is the server's.
 *
 * Requests and releases are signals (sync handlers: nothing to wait for at continue-as-new, and no
 * bound on how many wait); askers poll their ticket by query, which writes nothing to history.
 */
import { condition, continueAsNew, workflowInfo } from '@temporalio/workflow';
import { type LeaseRequest, type LimiterState, type LimiterView, type RateLimit, type ReleaseRequest, type TicketsState, RateLimitSchema, UNBOUNDED_CONCURRENCY } from '../shared';

/** A request not granted for this long is dropped (its asker sees `unknown` and asks again, if it still lives). */
const MAX_WAIT_MS = 60_000;
/** A limiter with nothing to do for this long ends; the next request starts it again. */
const IDLE_END_MS = 5 * 60_000;
/** A Retry-After pause is honoured up to this long. */
const MAX_PAUSE_MS = 10 * 60_000;
/** Continue-as-new past this many events (each lease costs a few). */
const ROTATE_AFTER_EVENTS = 8_000;
/**
 * perSecond leases per 1.25 s, not per second: a lease reaches its item up to a few hundred ms after
 * it is granted (the limiter's task completes, the holder polls), and that jitter must not let the
 * host see more than perSecond in any second. The rate achieved is up to 0.8 × perSecond.
 */
const WINDOW_MS = 1_250;
/** Turns a late limiter task may still give out at once (a workflow task takes tens of ms; leases would otherwise be lost to it). */
const CATCH_UP_MS = 100;
/** How long an uncounted lease is kept for its holder to see it granted. */
const PICKUP_MS = 10_000;
/** Grant times kept for the effective rate. */
const RATE_WINDOW_MS = 10_000;

type Lease = LimiterState['leases'][number];
type Waiter = LimiterState['waiting'][number];

export class RateLimiter {
  private readonly waiting: Waiter[];
  private readonly leases: Map<string, Lease>;
  private nextAt: number;
  private blockedUntil: number;
  private granted: number;
  private backoffs: number;
  private lastLimit: Required<RateLimit> | undefined;
  private readonly recentGrants: number[];
  private changed = false;

  constructor(private readonly state: LimiterState) {
    this.leases = new Map(state.leases.map((lease) => [lease.ticket, lease]));
    this.waiting = [...(state.waiting ?? [])];
    this.nextAt = state.nextAt;
    this.blockedUntil = state.blockedUntil;
    this.granted = state.granted;
    this.backoffs = state.backoffs;
    this.lastLimit = state.lastLimit;
    this.recentGrants = [...(state.recentGrants ?? [])];
  }

  request(requests: LeaseRequest[]): void {
    for (const request of Array.isArray(requests) ? requests : []) this.admit(request);
  }

  private admit(request: LeaseRequest): void {
    // A malformed request is dropped: its asker, polling, sees `unknown` (signals cannot answer).
    if (typeof request?.ticket !== 'string' || !RateLimitSchema.safeParse(request.limit).success || request.limit.concurrency === undefined || !(request.ttlMs > 0)) return;
    if (this.leases.has(request.ticket) || this.waiting.some((waiter) => waiter.ticket === request.ticket)) return;
    this.waiting.push({ ...request, admittedAt: Date.now() });
    this.changed = true;
  }

  release(requests: ReleaseRequest[]): void {
    for (const request of Array.isArray(requests) ? requests : []) this.releaseOne(request);
  }

  private releaseOne(request: ReleaseRequest): void {
    this.leases.delete(request.ticket);
    const index = this.waiting.findIndex((waiter) => waiter.ticket === request.ticket);
    if (index >= 0) this.waiting.splice(index, 1);
    if (request.retryAfterMs !== undefined && request.retryAfterMs > 0) {
      this.blockedUntil = Math.max(this.blockedUntil, Date.now() + Math.min(request.retryAfterMs, MAX_PAUSE_MS));
      this.backoffs += 1;
    }
    this.changed = true;
  }

  tickets(tickets: string[]): TicketsState {
    const asked = new Set(Array.isArray(tickets) ? tickets : []);
    const granted = [...asked].filter((ticket) => this.leases.has(ticket));
    const waiting: string[] = [];
    let first: number | undefined;
    for (const [position, waiter] of this.waiting.entries()) {
      if (!asked.has(waiter.ticket)) continue;
      first ??= position;
      waiting.push(waiter.ticket);
    }
    // When the first one's turn may come at this rate (leases in flight may delay it further).
    const etaMs = first === undefined ? undefined : Math.max(0, Math.max(this.nextAt, this.blockedUntil) - Date.now()) + first * (WINDOW_MS / this.limit().perSecond);
    return { granted, waiting, blockedUntil: this.blockedUntil, ...(etaMs !== undefined ? { etaMs } : {}) };
  }

  view(): LimiterView {
    const now = Date.now();
    const jobs: LimiterView['jobs'] = {};
    const entry = (jobId: string) => (jobs[jobId] ??= { inFlight: 0, waiting: 0 });
    for (const lease of this.leases.values()) if (!lease.uncounted) entry(lease.jobId).inFlight += 1;
    for (const waiter of this.waiting) entry(waiter.jobId).waiting += 1;
    const recent = this.recentGrants.filter((at) => at > now - RATE_WINDOW_MS).length;
    return {
      key: this.state.key,
      limit: this.limit(),
      inFlight: this.inFlight(),
      waiting: this.waiting.length,
      jobs,
      effectivePerSecond: Math.round((recent / (RATE_WINDOW_MS / 1000)) * 100) / 100,
      granted: this.granted,
      backoffs: this.backoffs,
      ...(this.blockedUntil > now ? { blockedUntil: new Date(this.blockedUntil).toISOString() } : {}),
    };
  }

  async run(): Promise<void> {
    let idleSince = Date.now();
    for (;;) {
      const now = Date.now();
      this.expire(now);
      this.grant(now);
      const busy = this.leases.size > 0 || this.waiting.length > 0 || this.blockedUntil > now;
      if (busy) idleSince = now;
      else if (now - idleSince >= IDLE_END_MS) return;
      if (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > ROTATE_AFTER_EVENTS) break;
      this.changed = false;
      await condition(() => this.changed, Math.max(1, this.nextWake(now, idleSince) - now));
    }
    // Signal handlers are synchronous: once this task ends, every request so far is in the carried state.
    await continueAsNew<(state: LimiterState) => Promise<void>>(this.carried());
  }

  private carried(): LimiterState {
    return {
      key: this.state.key,
      nextAt: this.nextAt,
      blockedUntil: this.blockedUntil,
      leases: [...this.leases.values()],
      waiting: this.waiting,
      granted: this.granted,
      backoffs: this.backoffs,
      ...(this.lastLimit ? { lastLimit: this.lastLimit } : {}),
      recentGrants: this.recentGrants.filter((at) => at > Date.now() - WINDOW_MS),
    };
  }

  private grantedWithin(now: number, ms: number): number {
    let count = 0;
    for (let index = this.recentGrants.length - 1; index >= 0 && (this.recentGrants[index] ?? 0) > now - ms; index--) count += 1;
    return count;
  }

  /** Leases that count toward the concurrency bound (those given back when their item ends). */
  private inFlight(): number {
    let count = 0;
    for (const lease of this.leases.values()) if (!lease.uncounted) count += 1;
    return count;
  }

  /** The strictest limit of those holding or asking; with none, the last one seen. */
  private limit(): Required<RateLimit> {
    const limits = [...[...this.leases.values()].filter((lease) => !lease.uncounted).map((lease) => lease.limit), ...this.waiting.map((waiter) => waiter.limit)];
    if (limits.length === 0) return this.lastLimit ?? { perSecond: 1, concurrency: 1 };
    return { perSecond: Math.min(...limits.map((limit) => limit.perSecond)), concurrency: Math.min(...limits.map((limit) => limit.concurrency)) };
  }

  private expire(now: number): void {
    for (const [ticket, lease] of this.leases) if (lease.expiresAt <= now) this.leases.delete(ticket);
    for (let index = this.waiting.length - 1; index >= 0; index--) if (now - (this.waiting[index]?.admittedAt ?? now) >= MAX_WAIT_MS) this.waiting.splice(index, 1);
  }

  private grant(now: number): void {
    while (this.waiting.length > 0) {
      const limit = this.limit();
      const interval = WINDOW_MS / limit.perSecond;
      if ((limit.concurrency < UNBOUNDED_CONCURRENCY && this.inFlight() >= limit.concurrency) || now < this.blockedUntil) return;
      // Evenly spaced; a task that runs late catches up on at most CATCH_UP_MS of turns, and never
      // beyond perSecond leases in the last WINDOW_MS.
      const earliest = Math.max(this.nextAt, now - CATCH_UP_MS);
      if (earliest > now || this.grantedWithin(now, WINDOW_MS) >= limit.perSecond) return;
      const waiter = this.waiting.shift();
      if (!waiter) return;
      this.lastLimit = waiter.limit;
      // A lease without a concurrency bound is never given back: it is kept only until its holder has seen it.
      const counted = waiter.limit.concurrency < UNBOUNDED_CONCURRENCY;
      this.leases.set(waiter.ticket, {
        ticket: waiter.ticket,
        jobId: waiter.jobId,
        holder: waiter.holder,
        expiresAt: now + (counted ? waiter.ttlMs : PICKUP_MS),
        limit: waiter.limit,
        waitedMs: now - waiter.admittedAt,
        ...(counted ? {} : { uncounted: true }),
      });
      this.nextAt = earliest + interval;
      this.granted += 1;
      this.recentGrants.push(now);
      while ((this.recentGrants[0] ?? now) <= now - RATE_WINDOW_MS) this.recentGrants.shift();
    }
  }

  /** When something can happen without a message: the next lease's turn, a lapse, a dropped request, or the idle end. */
  private nextWake(now: number, idleSince: number): number {
    const times: number[] = [];
    if (this.waiting.length > 0) {
      const limit = this.limit();
      if (this.inFlight() < limit.concurrency) {
        // With perSecond leases in the last second, the next turn comes when the oldest of them leaves it.
        const full = this.grantedWithin(now, WINDOW_MS) >= limit.perSecond ? (this.recentGrants[this.recentGrants.length - Math.ceil(limit.perSecond)] ?? now) + WINDOW_MS : 0;
        times.push(Math.max(this.nextAt, this.blockedUntil, full));
      }
      times.push((this.waiting[0]?.admittedAt ?? now) + MAX_WAIT_MS);
    }
    for (const lease of this.leases.values()) if (!lease.uncounted) times.push(lease.expiresAt);
    if (times.length === 0) times.push(Math.max(idleSince + IDLE_END_MS, this.blockedUntil));
    return Math.max(now + 1, Math.min(...times));
  }
}
