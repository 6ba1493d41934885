/**
 * OpenTelemetry traces, on when the standard variables name an OTLP endpoint
 * (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; OTEL_SERVICE_NAME names the
 * service). Spans go out over OTLP/HTTP. Off (the default), nothing here is loaded or run.
 */
import { type Attributes, type Span, SpanStatusCode, type Tracer, context, trace } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import type * as OtelResources from '@opentelemetry/resources';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type * as OtelTraceBase from '@opentelemetry/sdk-trace-base';
import type * as OtelTraceNode from '@opentelemetry/sdk-trace-node';
import type * as OtelExporter from '@opentelemetry/exporter-trace-otlp-http';

export interface Tracing {
  resource: Resource;
  spanProcessor: SpanProcessor;
  /** Sends what is buffered and stops. */
  shutdown(): Promise<void>;
}

export function tracingWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) && env.OTEL_SDK_DISABLED !== 'true';
}

let current: Tracing | undefined;

/** The process's tracer provider (registered globally, so the Temporal interceptors and a caller's spans share it), if tracing is wanted. */
export function startTracing(defaultServiceName: string, env: NodeJS.ProcessEnv = process.env): Tracing | undefined {
  if (!tracingWanted(env)) return undefined;
  if (current) return current;
  /* eslint-disable @typescript-eslint/no-require-imports -- loaded only when tracing is on */
  const { Resource } = require('@opentelemetry/resources') as typeof OtelResources;
  const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base') as typeof OtelTraceBase;
  const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node') as typeof OtelTraceNode;
  const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http') as typeof OtelExporter;
  /* eslint-enable @typescript-eslint/no-require-imports */
  const resource = new Resource({ 'service.name': env.OTEL_SERVICE_NAME || defaultServiceName });
  // The exporter reads the OTEL_EXPORTER_OTLP_* variables itself (endpoint, headers, timeout).
  const spanProcessor = new BatchSpanProcessor(new OTLPTraceExporter());
  const provider = new NodeTracerProvider({ resource, spanProcessors: [spanProcessor] });
  provider.register();
  const tracing: Tracing = {
    resource,
    spanProcessor,
    shutdown: async () => {
      current = undefined;
      await provider.shutdown();
    },
  };
  current = tracing;
  return tracing;
}

export function activeTracing(): Tracing | undefined {
  return current;
}

export function faultlineTracer(): Tracer {
  return trace.getTracer('faultline');
}

/** A span that already happened (started at `startTime`, ended now), under the active span. */
export function recordSpan(name: string, startTime: number, attributes: Attributes, error?: { type: string; message: string }, parent?: Span): void {
  const span: Span = faultlineTracer().startSpan(name, { startTime, attributes }, parent ? trace.setSpan(context.active(), parent) : undefined);
  if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: `${error.type}: ${error.message}`.slice(0, 500) });
  span.end();
}

/** Module path of the workflow interceptors that carry trace context through workflows (bundled only when tracing is on). */
export function workflowTracingModule(): string {
  return require.resolve('@temporalio/interceptors-opentelemetry/lib/workflow-interceptors');
}

/** Items of a batch that get a span of their own: every failure, and one in this many of the rest. */
export const ITEM_SPAN_EVERY = 100;
