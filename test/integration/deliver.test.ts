/**
 * The `deliver` pipeline against real HTTP servers on 127.0.0.1: each response class becomes its
 * status (2xx Available with the receiver's id, 404/410 Missing, other 4xx Failed with a body
 * excerpt, 429/503/resets transient with Retry-After), every request carries the item's
 * idempotency key and a signature the receiver verifies on its own, the per-host concurrency limit
 * holds, and private hosts are refused unless allowed.
 */
import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ErrorTypes, type JobResult } from '../../src/shared';
import { type RunningWorker, type TestEnv, createTestEnv } from '../helpers/env';

const SECRET = 'deliver-secret-5a1b';
let env: TestEnv;
let worker: RunningWorker;
let server: http.Server;
let url = '';
const seen = new Map<string, { keys: string[]; verified: boolean[] }>();
let inFlight = 0;
let maxInFlight = 0;

function verified(body: string, header: string | undefined): boolean {
  const parts = Object.fromEntries((header ?? '').split(',').map((part) => part.split('=') as [string, string]));
  if (!parts.t || !parts.v1) return false;
  const expected = createHmac('sha256', SECRET).update(`${parts.t}.${body}`).digest();
  const given = Buffer.from(parts.v1, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

before(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      const { behave, n } = JSON.parse(body) as { behave: string; n?: number };
      const key = String(req.headers['idempotency-key']);
      const entry = seen.get(behave + (n ?? '')) ?? { keys: [], verified: [] };
      entry.keys.push(key);
      entry.verified.push(verified(body, req.headers['faultline-signature'] as string | undefined));
      seen.set(behave + (n ?? ''), entry);
      const tries = entry.keys.length;
      if (behave === 'ok') return void res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ id: `rec-${tries}` }));
      if (behave === 'gone') return void res.writeHead(410).end();
      if (behave === 'bad') return void res.writeHead(422).end('field "patient" is required');
      if (behave === 'busy') return tries === 1 ? void res.writeHead(503, { 'retry-after': '1' }).end() : void res.writeHead(200).end();
      if (behave === 'reset') return tries === 1 ? void req.socket.destroy() : void res.writeHead(204).end();
      if (behave === 'slow') {
        inFlight += 1;
        maxInFlight = Math.max(maxInFlight, inFlight);
        return void setTimeout(() => {
          inFlight -= 1;
          res.writeHead(200).end();
        }, 100);
      }
      res.writeHead(400).end('unknown behaviour');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/records`;
  env = await createTestEnv({ taskQueue: 'faultline-deliver', envExtra: { DELIVER_TEST_SECRET: SECRET } });
  process.env.DELIVER_TEST_SECRET = SECRET;
  worker = await env.startWorker({ allowedHosts: ['127.0.0.1'] });
});

after(async () => {
  await worker?.stop();
  await env?.teardown();
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
});

const record = (result: JobResult, item: string) => result.outputs?.find((candidate) => candidate.item === item);

describe('deliver pipeline (real HTTP on 127.0.0.1)', () => {
  it('statuses by response, idempotency keys, signatures, Retry-After and resets', async () => {
    const { jobId } = await env.client.start({
      pipeline: 'deliver',
      params: { url, signing: { secretRef: 'env:DELIVER_TEST_SECRET' } },
      items: ['ok', 'gone', 'bad', 'busy', 'reset'].map((behave) => ({ id: behave, params: { record: { behave } } })),
      options: { retry: { maxAttempts: 3 } },
    });
    const result = await env.client.result(jobId);
    assert.deepEqual(record(result, 'ok')?.value, { status: 201, id: 'rec-1' });
    assert.equal(record(result, 'ok')?.status, 'Available');
    assert.deepEqual([record(result, 'gone')?.status, record(result, 'gone')?.reason], ['Missing', 'the endpoint answered 410']);
    const bad = record(result, 'bad');
    assert.deepEqual([bad?.status, bad?.error?.type, bad?.error?.class], ['Failed', ErrorTypes.DeliveryRejected, 'unprocessable']);
    assert.match(bad?.error?.message ?? '', /422.*field "patient" is required/);
    assert.deepEqual(record(result, 'busy')?.value, { status: 200 });
    assert.deepEqual(record(result, 'reset')?.value, { status: 204 });
    assert.equal(seen.get('busy')?.keys.length, 2, 'a 503 is retried');
    assert.equal(seen.get('reset')?.keys.length, 2, 'a reset is retried');
    assert.equal(seen.get('bad')?.keys.length, 1, 'a 422 is not retried');
    for (const [behave, entry] of seen) {
      assert.ok(entry.verified.every(Boolean), `${behave}: every request is signed`);
      assert.deepEqual(new Set(entry.keys), new Set([`${jobId}/${behave}`]), `${behave}: one idempotency key across attempts`);
    }
    assert.equal(result.status, 'PartiallySucceeded');
    assert.deepEqual(result.failureCounts, { [ErrorTypes.DeliveryRejected]: 1 });
  });

  it('holds the per-host concurrency limit', async () => {
    maxInFlight = 0;
    const { jobId } = await env.client.start({
      pipeline: 'deliver',
      params: { url, perHostConcurrency: 2 },
      items: Array.from({ length: 24 }, (_, n) => ({ id: `s${n}`, params: { record: { behave: 'slow', n } } })),
      options: { batchSize: 2, concurrency: 12 },
    });
    const result = await env.client.result(jobId);
    assert.equal(result.counts.Available, 24);
    assert.equal(maxInFlight, 2, `at most 2 requests in flight to one host (saw ${maxInFlight})`);
  });

  it('refuses a private host that is not allowed, typed, without contacting it', async () => {
    const before = seen.size;
    const { jobId } = await env.client.start({ pipeline: 'deliver', params: { url: url.replace('127.0.0.1', 'localhost') }, items: [{ id: 'p', params: { record: { behave: 'ok' } } }] });
    const result = await env.client.result(jobId);
    assert.equal(record(result, 'p')?.error?.type, ErrorTypes.HostNotAllowed);
    assert.equal(seen.size, before);
  });

  it('a spec without an endpoint, or an item without a record or source, is invalid with JSON paths', () => {
    assert.throws(
      () => env.client.validate({ pipeline: 'deliver', items: [{ id: 'x' }] }),
      (error: Error & { issues: { path: string }[] }) => error.issues.some((issue) => issue.path === 'params.url') && error.issues.some((issue) => issue.path === 'items[0]'),
    );
  });
});
