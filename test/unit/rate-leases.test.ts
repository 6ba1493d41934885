import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Client } from '@temporalio/client';
import pino from 'pino';
import { RateLeases } from '../../src/activities/rate-leases';
import type { LeaseRequest, ReleaseRequest, TicketsState } from '../../src/shared';

/**
 * A limiter reached through a fake client: each request signal waits until the test lets it
 * return, queries answer "still waiting", and every message is noted in the order it left.
 */
function fakeLimiter() {
  const sent: ({ kind: 'ask'; tickets: string[] } | { kind: 'asked' } | { kind: 'release'; tickets: string[] })[] = [];
  const gates: (() => void)[] = [];
  const client = {
    workflow: {
      signalWithStart: async (_type: string, options: { signalArgs: [LeaseRequest[]] }) => {
        sent.push({ kind: 'ask', tickets: options.signalArgs[0].map((request) => request.ticket) });
        await new Promise<void>((resolve) => gates.push(resolve));
        sent.push({ kind: 'asked' });
      },
      getHandle: () => ({
        query: async (_query: unknown, tickets: string[]): Promise<TicketsState> => ({ granted: [], waiting: tickets, blockedUntil: 0 }),
        signal: async (_signal: unknown, releases: ReleaseRequest[]) => void sent.push({ kind: 'release', tickets: releases.map((release) => release.ticket) }),
      }),
    },
  } as unknown as Client;
  const leases = new RateLeases(client, 'test-queue', pino({ level: 'silent' }));
  return { leases, sent, letAskReturn: () => gates.shift()?.() };
}

async function until(check: () => boolean, what: string, withinMs = 2_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`not within ${withinMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

describe('rate leases on the worker', () => {
  it('a ticket withdrawn while its request is on its way is given back, after the request', async () => {
    const { leases, sent, letAskReturn } = fakeLimiter();
    const cancel = new AbortController();
    const waiting = leases.acquire('api.test', { perSecond: 2, concurrency: 1 }, { jobId: 'job-1', ttlMs: 60_000 }, cancel.signal);
    await until(() => sent.some((message) => message.kind === 'ask'), 'the ticket is asked for');
    const ticket = sent.find((message) => message.kind === 'ask')?.tickets[0];
    // The job is cancelled while the limiter is still being told about the ticket.
    cancel.abort(new Error('cancelled'));
    await assert.rejects(waiting, /cancelled/);
    // Releases are batched for 5 ms: well past that, nothing may overtake the request still held.
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(
      sent.map((message) => message.kind),
      ['ask'],
      'no release before the request has landed',
    );
    letAskReturn();
    await until(() => sent.some((message) => message.kind === 'release'), 'the withdrawn ticket is given back');
    const order = sent.map((message) => message.kind);
    assert.deepEqual(order.slice(0, 2), ['ask', 'asked']);
    assert.ok(order.indexOf('release') > order.indexOf('asked'), `the release went after the request landed: ${order.join(', ')}`);
    assert.deepEqual(
      sent.find((message) => message.kind === 'release'),
      { kind: 'release', tickets: [ticket] },
      'the withdrawn ticket is given back (else the limiter grants it later and it holds the key for its time to live)',
    );
  });
});
