/** Signed webhook delivery with backoff; the outcome is recorded, never the secret. */
import { setTimeout as sleep } from 'node:timers/promises';
import { Context } from '@temporalio/activity';

function cancellation(): AbortSignal | undefined {
  try {
    return Context.current().cancellationSignal;
  } catch {
    return undefined; // not running as an activity
  }
}
import type { Logger } from 'pino';
import { request } from 'undici';
import { guardedAgent, refusedAddress, refusedLiteral, retryAfterFor } from './fetch';
import { ErrorTypes, type JobResult, type Notification, makeReport, webhookDisplay } from '../shared';
import { SIGNATURE_HEADER, decryptSecret, signWebhook } from '../secrets';

export interface NotifyDeps {
  /** Hosts a webhook may reach even though they are private or loopback (FAULTLINE_ALLOWED_HOSTS). */
  allowedHosts: readonly string[];
  secretKey?: Buffer;
  env: NodeJS.ProcessEnv;
  logger: Logger;
  /** Delays between attempts; the first retry comes within 2 s. */
  retryDelaysMs?: number[];
  requestTimeoutMs?: number;
}

const RETRYABLE_STATUS = (status: number) => status >= 500 || status === 408 || status === 429;
/** A receiver's Retry-After is honoured up to this long per wait (the activity's heartbeat timeout is 30 s). */
const MAX_RETRY_AFTER_MS = 20_000;

export function createNotifyActivities(deps: NotifyDeps) {
  // The same outbound guard as source fetches: no private, loopback or metadata receivers unless allowed.
  const dispatcher = guardedAgent({ allowedHosts: deps.allowedHosts, connectTimeoutMs: deps.requestTimeoutMs ?? 10_000, readTimeoutMs: deps.requestTimeoutMs ?? 10_000 });
  const delays = deps.retryDelaysMs ?? [1_000, 2_000, 4_000, 8_000];
  const resolveSecret = (webhook: { secretEncrypted?: string; secretRef?: string }): string => {
    if (webhook.secretRef) {
      const name = webhook.secretRef.replace(/^env:/, '');
      const value = deps.env[name];
      if (!value) throw new Error(`worker has no secret ${webhook.secretRef}`);
      return value;
    }
    if (webhook.secretEncrypted) {
      if (!deps.secretKey) throw new Error('worker has no FAULTLINE_SECRET_KEY to decrypt the webhook secret');
      return decryptSecret(webhook.secretEncrypted, deps.secretKey);
    }
    throw new Error('webhook has no secret');
  };

  return {
    async deliverWebhook(input: { webhook: { url: string; secretEncrypted?: string; secretRef?: string }; result: JobResult }): Promise<Notification> {
      const safeUrl = webhookDisplay(input.webhook.url);
      const log = deps.logger.child({ jobId: input.result.jobId, webhook: safeUrl });
      const { notifications: _notifications, ...body } = input.result;
      const rawBody = JSON.stringify(body);
      let attempts = 0;
      let lastStatus: number | undefined;
      let lastError: string | undefined;
      let retryAfter: number | undefined;
      let secret: string;
      try {
        secret = resolveSecret(input.webhook);
      } catch (error) {
        const report = makeReport({ type: 'WebhookSecretUnavailable', class: 'invalid', message: (error as Error).message, details: {}, step: 'notify', at: new Date().toISOString() });
        return { kind: 'webhook', url: safeUrl, delivered: false, attempts: 0, error: report, round: input.result.round, at: report.at };
      }
      const refusal = (address: string) => {
        const report = makeReport({
          type: ErrorTypes.HostNotAllowed,
          class: 'invalid',
          message: `webhook host ${new URL(input.webhook.url).hostname} resolves to a private, loopback or link-local address (${address}); list it in FAULTLINE_ALLOWED_HOSTS to allow it`,
          details: { url: safeUrl },
          step: 'notify',
          attempts,
          at: new Date().toISOString(),
        });
        log.error({ address }, 'webhook refused by the outbound guard');
        return { kind: 'webhook' as const, url: safeUrl, delivered: false, attempts, error: report, round: input.result.round, at: report.at };
      };
      const literal = refusedLiteral(new URL(input.webhook.url), deps.allowedHosts);
      if (literal) return refusal(literal);
      for (;;) {
        attempts += 1;
        try {
          Context.current().heartbeat({ attempts });
        } catch {
          /* not running as an activity (unit tests) */
        }
        try {
          const response = await request(input.webhook.url, {
            dispatcher,
            method: 'POST',
            headers: { 'content-type': 'application/json', [SIGNATURE_HEADER]: signWebhook(rawBody, secret, Math.floor(Date.now() / 1000)), 'user-agent': 'faultline-webhook/1' },
            body: rawBody,
            signal: AbortSignal.timeout(deps.requestTimeoutMs ?? 10_000),
          });
          lastStatus = response.statusCode;
          retryAfter = retryAfterFor(lastStatus, response.headers);
          await response.body.dump().catch(() => undefined);
          if (lastStatus >= 200 && lastStatus < 300) {
            log.info({ attempts, status: lastStatus }, 'webhook delivered');
            return { kind: 'webhook', url: safeUrl, delivered: true, attempts, lastStatus, round: input.result.round, at: new Date().toISOString() };
          }
          lastError = `receiver answered ${lastStatus}`;
          if (!RETRYABLE_STATUS(lastStatus)) break;
        } catch (error) {
          const refused = refusedAddress(error);
          if (refused) return refusal(refused);
          lastStatus = undefined;
          retryAfter = undefined;
          lastError = `network error: ${(error as Error).name}`;
        }
        const scheduled = delays[attempts - 1];
        if (scheduled === undefined) break;
        const delay = Math.max(scheduled, Math.min(retryAfter ?? 0, MAX_RETRY_AFTER_MS));
        log.warn({ attempts, status: lastStatus }, 'webhook attempt failed; retrying in %d ms', delay);
        await sleep(delay, undefined, { signal: cancellation() }).catch(() => undefined);
        if (cancellation()?.aborted) break;
      }
      const report = makeReport({
        type: lastStatus !== undefined && !RETRYABLE_STATUS(lastStatus) ? 'WebhookRejected' : ErrorTypes.EndpointUnavailable,
        class: lastStatus !== undefined && !RETRYABLE_STATUS(lastStatus) ? 'unprocessable' : 'transient',
        message: `webhook not delivered after ${attempts} attempt(s): ${lastError ?? 'unknown'}`,
        details: { url: safeUrl, ...(lastStatus !== undefined ? { httpStatus: lastStatus } : {}), ...(retryAfter !== undefined ? { retryAfterMs: retryAfter } : {}) },
        step: 'notify',
        attempts,
        at: new Date().toISOString(),
      });
      log.error({ attempts, status: lastStatus }, 'webhook delivery failed');
      return { kind: 'webhook', url: safeUrl, delivered: false, attempts, ...(lastStatus !== undefined ? { lastStatus } : {}), error: report, round: input.result.round, at: report.at };
    },
  };
}
