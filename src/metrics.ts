/**
 * Prometheus metrics of a worker process (FAULTLINE_METRICS_ADDRESS): Faultline's own counters
 * from prom-client, next to the Temporal SDK's (its runtime's Prometheus exporter, bound to a
 * private loopback port and served through the same /metrics). Off unless configured: without
 * it, `workerMetrics()` is undefined and nothing is counted.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly items = new Counter({
    name: 'faultline_items_total',
    help: 'Outputs a worker brought to a status (items that failed count once per output)',
    labelNames: ['pipeline', 'status'] as const,
    registers: [this.registry],
  });
  readonly itemErrors = new Counter({
    name: 'faultline_item_errors_total',
    help: 'Failed item attempts by error type and class (transient ones are tried again)',
    labelNames: ['pipeline', 'type', 'class'] as const,
    registers: [this.registry],
  });
  readonly stepDuration = new Histogram({
    name: 'faultline_item_duration_seconds',
    help: 'Time of one attempt of one step of an item',
    labelNames: ['pipeline', 'step'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300],
    registers: [this.registry],
  });
  readonly batchesInFlight = new Gauge({ name: 'faultline_batches_in_flight', help: 'Batches this worker is running now', registers: [this.registry] });
  readonly jobs = new Counter({
    name: 'faultline_jobs_total',
    help: 'Rounds of jobs that settled on this worker, by their status',
    labelNames: ['pipeline', 'status'] as const,
    registers: [this.registry],
  });
  readonly jobDuration = new Histogram({
    name: 'faultline_job_duration_seconds',
    help: 'Running time of a settled round (retry windows left out)',
    labelNames: ['pipeline'] as const,
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400],
    registers: [this.registry],
  });
  readonly retries = new Counter({ name: 'faultline_retries_total', help: 'Transient item failures that will be tried again', labelNames: ['pipeline'] as const, registers: [this.registry] });
  readonly crashes = new Counter({
    name: 'faultline_crashes_total',
    help: 'Items dispatched again because the batch that ran them was lost (a worker crash or timeout)',
    labelNames: ['pipeline'] as const,
    registers: [this.registry],
  });
  readonly rateLimited = new Counter({ name: 'faultline_rate_limited_total', help: 'Items that waited for a lease of their rate key', labelNames: ['key'] as const, registers: [this.registry] });
  readonly rateWaiting = new Gauge({
    name: 'faultline_rate_waiting',
    help: 'Items of this worker waiting for a lease of their rate key now',
    labelNames: ['key'] as const,
    registers: [this.registry],
  });
  readonly rateBackoffs = new Counter({
    name: 'faultline_rate_backoffs_total',
    help: 'Retry-After pauses a host asked for (429/503), which pause its key for every worker',
    labelNames: ['key'] as const,
    registers: [this.registry],
  });
}

let current: WorkerMetrics | undefined;

/** This process's metrics, if they are on. */
export function workerMetrics(): WorkerMetrics | undefined {
  return current;
}

export function enableWorkerMetrics(): WorkerMetrics {
  return (current ??= new WorkerMetrics());
}

/** Parses `host:port`; the supervisor gives its N-th process port + N. */
export function metricsAddressFor(address: string, processIndex: number): string {
  const at = address.lastIndexOf(':');
  const port = Number(address.slice(at + 1));
  return `${address.slice(0, at)}:${port === 0 ? 0 : port + processIndex}`;
}

export interface MetricsServer {
  url: string;
  close(): Promise<void>;
}

/** Serves /metrics: the SDK's exporter's text (when it runs) followed by Faultline's. */
export async function startMetricsServer(options: { address: string; metrics: WorkerMetrics; sdkAddress?: string }): Promise<MetricsServer> {
  const at = options.address.lastIndexOf(':');
  const host = options.address.slice(0, at);
  const port = Number(options.address.slice(at + 1));
  const server = http.createServer((request, response) => {
    if (request.method !== 'GET' || !request.url?.startsWith('/metrics')) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('see /metrics\n');
      return;
    }
    const sdk = options.sdkAddress
      ? fetch(`http://${options.sdkAddress}/metrics`, { signal: AbortSignal.timeout(5_000) }).then(
          (answer) => answer.text(),
          () => '',
        )
      : Promise.resolve('');
    Promise.all([sdk, options.metrics.registry.metrics()]).then(
      ([temporalText, ours]) => {
        response.writeHead(200, { 'content-type': options.metrics.registry.contentType });
        response.end(`${temporalText.trimEnd()}${temporalText ? '\n' : ''}${ours}`);
      },
      (error: unknown) => response.writeHead(500, { 'content-type': 'text/plain' }).end(`${(error as Error).message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  return {
    url: `http://${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
