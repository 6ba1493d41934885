import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { trace } from '@opentelemetry/api';
import { type TestEnv, createTestEnv, eventually, syntheticSpec } from '../helpers/env';

interface OtlpValue {
  stringValue?: string;
  intValue?: number | string;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes?: { key: string; value: OtlpValue }[];
  status?: { code?: number; message?: string };
}
interface ReceivedSpan extends OtlpSpan {
  service: string;
}

const received: ReceivedSpan[] = [];
let receiver: http.Server;
let t: TestEnv;

before(async () => {
  // An OTLP/HTTP receiver on 127.0.0.1: what a collector would get.
  receiver = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        resourceSpans?: { resource?: { attributes?: { key: string; value: OtlpValue }[] }; scopeSpans?: { spans?: OtlpSpan[] }[] }[];
      };
      for (const resourceSpans of body.resourceSpans ?? []) {
        const service = resourceSpans.resource?.attributes?.find((attribute) => attribute.key === 'service.name')?.value.stringValue ?? '';
        for (const scope of resourceSpans.scopeSpans ?? []) for (const span of scope.spans ?? []) received.push({ ...span, service });
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const { port } = receiver.address() as AddressInfo;
  // The standard variables, as a user sets them: the test's client and its worker process both export.
  process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = `http://127.0.0.1:${port}/v1/traces`;
  process.env.OTEL_SERVICE_NAME = 'faultline-tracing-test';
  process.env.OTEL_BSP_SCHEDULE_DELAY = '100';
  t = await createTestEnv({ taskQueue: 'faultline-tracing' });
});

after(async () => {
  await t?.teardown();
  receiver?.closeAllConnections();
  await new Promise<void>((resolve) => receiver?.close(() => resolve()));
});

const attribute = (span: OtlpSpan, key: string) => {
  const value = span.attributes?.find((entry) => entry.key === key)?.value;
  return value?.stringValue ?? (value?.intValue !== undefined ? String(value.intValue) : undefined);
};

describe('OpenTelemetry traces (OTEL_EXPORTER_OTLP_* set)', () => {
  it("a job started inside a caller's span: its workflow, batches, a failed item with its error type and the settled round reach an OTLP receiver, in the caller's trace", async () => {
    const worker = t.spawnWorker();
    try {
      const jobId = `traced-${Date.now()}`;
      const caller = trace.getTracer('test-caller');
      const traceId = await caller.startActiveSpan('caller', async (span) => {
        await t.client.start(syntheticSpec([{ id: 'fine' }, { id: 'broken', params: { outcome: 'unprocessable' } }]), { jobId });
        span.end();
        return span.spanContext().traceId;
      });
      const result = await t.client.result(jobId);
      assert.equal(result.status, 'PartiallySucceeded');
      await t.client.close(); // flushes the client's spans

      const inTrace = () => received.filter((span) => span.traceId === traceId);
      await eventually(() => inTrace().some((span) => span.name === 'faultline.item' && attribute(span, 'faultline.error_type') === 'ItemUnprocessable'), 30_000, 'the failed item span');
      const wanted = ['caller', 'StartWorkflow:jobWorkflow', 'RunWorkflow:jobWorkflow', 'StartActivity:runBatch', 'RunActivity:runBatch', 'faultline.batch'];
      // Workflow spans are exported when their workflow task completes: a moment after the result.
      const names = () => new Set(inTrace().map((span) => span.name));
      await eventually(() => wanted.every((name) => names().has(name)), 15_000, `spans ${wanted.join(', ')} in the caller's trace`).catch((error: Error) => {
        throw new Error(`${error.message} (got ${[...names()].join(', ')})`);
      });
      const failed = inTrace().find((span) => span.name === 'faultline.item' && attribute(span, 'faultline.item_id') === 'broken');
      assert.ok(failed);
      const batch = inTrace().find((span) => span.spanId === failed.parentSpanId);
      assert.equal(batch?.name, 'faultline.batch', 'an item span is a child of its batch');
      assert.equal(attribute(batch, 'faultline.job_id'), jobId);
      assert.equal(attribute(batch, 'faultline.pipeline'), 'synthetic');
      const activity = inTrace().find((span) => span.spanId === batch.parentSpanId);
      assert.equal(activity?.name, 'RunActivity:runBatch', 'a batch span is a child of its activity');
      assert.equal(failed.status?.code, 2, 'a failed item is an error span');
      await eventually(
        () => received.some((span) => span.name === 'faultline.round' && attribute(span, 'faultline.job_id') === jobId && attribute(span, 'faultline.status') === 'PartiallySucceeded'),
        15_000,
        'the round span',
      );
      assert.ok(
        received.every((span) => span.service === 'faultline-tracing-test'),
        'OTEL_SERVICE_NAME names the service',
      );
    } finally {
      await worker.stop();
    }
  });
});
