import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ActivityFailure, ApplicationFailure, CancelledFailure, ChildWorkflowFailure, RetryState, TimeoutFailure, TimeoutType } from '@temporalio/common';
import { ErrorReportSchema, ErrorTypes, makeReport, nonRetryableErrorTypes, redactText, redactUrl, reportToFailure, toErrorReport } from '../../src/shared';
import { verifyWebhookSignature, signWebhook, encryptSecret, decryptSecret } from '../../src/secrets';

const at = '2026-01-01T00:00:00.000Z';

describe('error reports', () => {
  it('round-trips a report through an ApplicationFailure', () => {
    const report = makeReport({ type: ErrorTypes.SourceNotFound, message: 'gone', details: { httpStatus: 404 }, item: 'x', step: 'fetch', at });
    const failure = reportToFailure(report);
    assert.equal(failure.type, 'SourceNotFound');
    assert.equal(failure.nonRetryable, true);
    assert.deepEqual(toErrorReport(failure, { at }), report);
    assert.equal(ErrorReportSchema.safeParse(report).success, true);
  });

  it('transient reports stay retryable and carry nextRetryDelay', () => {
    const failure = reportToFailure(makeReport({ type: ErrorTypes.RateLimited, message: 'slow down', at }), { nextRetryDelayMs: 2_000 });
    assert.equal(failure.nonRetryable, false);
    assert.equal(failure.nextRetryDelay, 2_000);
    assert.ok(!nonRetryableErrorTypes.includes(ErrorTypes.RateLimited));
    assert.ok(nonRetryableErrorTypes.includes(ErrorTypes.CorruptImage));
  });

  it('keeps the cause chain from an activity failure inside a child workflow', () => {
    const root = ApplicationFailure.create({ type: 'CorruptImage', message: 'bad bytes', nonRetryable: true, details: [{ offset: 12 }] });
    const activity = new ActivityFailure('activity failed', 'runBatch', 'job/shard-1/batch-2', RetryState.NON_RETRYABLE_FAILURE, 'worker', root);
    const child = new ChildWorkflowFailure('default', { workflowId: 'job/shard-1', runId: 'r' }, 'shardWorkflow', RetryState.NON_RETRYABLE_FAILURE, activity);
    const report = toErrorReport(child, { at });
    assert.equal(report.type, ErrorTypes.ChildJobFailed);
    assert.equal(report.class, 'fatal');
    const cause = report.details.cause as { type: string; class: string; details: Record<string, unknown> };
    assert.equal(cause.type, 'CorruptImage');
    assert.equal(cause.class, 'unprocessable');
    assert.equal(cause.details.activityType, 'runBatch');
    assert.deepEqual(cause.details.failureDetails, [{ offset: 12 }]);
  });

  it('maps heartbeat timeouts to crashes and cancellations to JobCancelled', () => {
    assert.equal(toErrorReport(new TimeoutFailure('hb', undefined, TimeoutType.HEARTBEAT), { at }).type, ErrorTypes.Crashed);
    assert.equal(toErrorReport(new TimeoutFailure('s2c', undefined, TimeoutType.START_TO_CLOSE), { at }).type, ErrorTypes.ItemTimedOut);
    assert.equal(toErrorReport(new CancelledFailure('stop'), { at }).type, ErrorTypes.JobCancelled);
  });

  it('plain errors keep the stack in details.stack only, and their cause', () => {
    const error = new Error('outer', { cause: new TypeError('inner') });
    const report = toErrorReport(error, { at, item: 'i' });
    assert.equal(report.type, ErrorTypes.UnexpectedItemError);
    assert.equal(report.message, 'outer');
    assert.match(String(report.details.stack), /outer/);
    assert.equal((report.details.cause as { message: string }).message, 'inner');
  });

  it('redacts URL credentials and query tokens', () => {
    assert.equal(redactUrl('https://user:pw@h.example/p?token=abc&x=1'), 'https://REDACTED:REDACTED@h.example/p?token=REDACTED&x=REDACTED');
    assert.equal(redactUrl('https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX'), 'https://hooks.slack.com/services/T00000000/B00000000/REDACTED', 'a path token');
    assert.equal(redactUrl('https://bucket.s3.example/k/a1b2c3d4e5f6a7b8c9d0/photo-2024-01-01.jpg'), 'https://bucket.s3.example/k/REDACTED/photo-2024-01-01.jpg', 'file names stay');
    assert.equal(redactUrl('http://127.0.0.1:9/put/a-thumb-flaky'), 'http://127.0.0.1:9/put/a-thumb-flaky', 'ordinary paths stay');
    assert.equal(redactText('fetch https://h.example/a?sig=xyz failed'), 'fetch https://h.example/a?sig=REDACTED failed');
    const report = toErrorReport(new Error('GET https://h.example/a.png?X-Amz-Signature=deadbeef failed'), { at });
    assert.ok(!report.message.includes('deadbeef'));
  });
});

describe('webhook secrets and signatures', () => {
  it('verifies a valid signature and rejects tampering, wrong secret and stale timestamps', () => {
    const body = '{"jobId":"j"}';
    const now = 1_800_000_000;
    const header = signWebhook(body, 'secret', now);
    assert.equal(verifyWebhookSignature(body, header, 'secret', 300, now + 10), true);
    assert.equal(verifyWebhookSignature(`${body} `, header, 'secret', 300, now), false);
    assert.equal(verifyWebhookSignature(body, header, 'other', 300, now), false);
    assert.equal(verifyWebhookSignature(body, header, 'secret', 300, now + 301), false);
    assert.equal(verifyWebhookSignature(body, undefined, 'secret'), false);
  });

  it('encrypts secrets so they never appear in clear', () => {
    const key = Buffer.alloc(32, 7);
    const sealed = encryptSecret('hunter2', key);
    assert.ok(!sealed.includes('hunter2'));
    assert.equal(decryptSecret(sealed, key), 'hunter2');
    assert.throws(() => decryptSecret(sealed, Buffer.alloc(32, 8)));
  });
});
