/**
 * The limiter of one rate key (workflow id `faultline-rate-limit/<key>`), started by the first
 * worker that asks for a lease (signal-with-start) and ended after five idle minutes.
 */
import { setHandler } from '@temporalio/workflow';
import { RateLimiter } from '../engine/limiter';
import { type LimiterState, limiterViewQuery, releaseLeaseSignal, requestLeaseSignal, ticketsQuery } from '../shared';

export async function rateLimiterWorkflow(state: LimiterState): Promise<void> {
  const limiter = new RateLimiter(state);
  setHandler(requestLeaseSignal, (request) => limiter.request(request));
  setHandler(releaseLeaseSignal, (request) => limiter.release(request));
  setHandler(ticketsQuery, (tickets) => limiter.tickets(tickets));
  setHandler(limiterViewQuery, () => limiter.view());
  await limiter.run();
}
