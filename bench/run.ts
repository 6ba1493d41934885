/**
 * `npm run bench [-- --json] [-- --quick]`: raw work vs a naive Temporal workflow vs Faultline,
 * same items and work function, one dev server started here on a free port for the whole run.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, bundleWorkflowCode } from '@temporalio/worker';
import { FaultlineClient } from '../src/client';
import { loadConfig } from '../src/config';
import { burnCpu } from '../src/activities/synthetic';
import { ensureTemporalCli, startDevServer } from '../src/devserver/temporal-cli';
import { createLogger, installTemporalLogging } from '../src/logger';
import { createFaultlineWorker } from '../src/worker';
import { createNaiveActivities, thumbnailWork } from './naive-activities';

const json = process.argv.includes('--json');
const quick = process.argv.includes('--quick');
/** `--only=cpu1ms,latency` runs just those workloads. */
const only = process.argv
  .find((arg) => arg.startsWith('--only='))
  ?.slice(7)
  .split(',');
const wanted = (name: string) => !only || only.includes(name);
const scale = quick ? 0.1 : 1;
const ROOT = path.resolve(__dirname, '..');
const SOURCE = path.join(ROOT, 'samples', 'images', 'with-exif.jpg');
const say = (line: string) => {
  if (!json) console.log(line);
  else console.error(line);
};

interface ModeResult {
  itemsPerSec: number;
  elapsedMs: number;
  completed: boolean;
  eventsPerItem: number | null;
  peakRssMb: number;
  items: number;
  outcome?: string;
  /** Largest history of the job or any of its slice runs, in bytes (the server's limit is 50 MB). */
  maxHistoryBytes?: number;
}

/** Samples this process's RSS (the worker runs in it) while `fn` runs. */
async function measure(items: number, fn: () => Promise<{ completed: boolean; events: number | null; outcome?: string; maxHistoryBytes?: number }>): Promise<ModeResult> {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 100);
  const started = performance.now();
  try {
    const { completed, events, outcome, maxHistoryBytes } = await fn();
    const elapsedMs = Math.round(performance.now() - started);
    return {
      itemsPerSec: Math.round((items / (elapsedMs / 1000)) * 10) / 10,
      elapsedMs,
      completed,
      eventsPerItem: events === null ? null : Math.round((events / items) * 1000) / 1000,
      peakRssMb: Math.round(Math.max(peak, process.memoryUsage().rss) / 1024 / 1024),
      items,
      ...(outcome ? { outcome } : {}),
      ...(maxHistoryBytes !== undefined ? { maxHistoryBytes } : {}),
    };
  } finally {
    clearInterval(timer);
  }
}

async function pool<T>(count: number, concurrency: number, work: (index: number) => Promise<T>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await work(next++);
    }),
  );
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-bench-'));
  const server = await startDevServer({ ui: false, log: say });
  const env = {
    ...process.env,
    TEMPORAL_ADDRESS: server.address,
    FAULTLINE_TASK_QUEUE: 'faultline-bench',
    FAULTLINE_STORAGE: path.join(dir, 'storage'),
    FAULTLINE_ALLOWED_ROOTS: [dir, path.dirname(SOURCE)].join(path.delimiter),
    FAULTLINE_LOG_LEVEL: 'error',
  };
  const config = loadConfig(env, dir);
  const logger = createLogger({ level: 'error', format: 'json' });
  installTemporalLogging(logger);
  const native = await NativeConnection.connect({ address: server.address });
  const workflowBundle = await bundleWorkflowCode({ workflowsPath: require.resolve('./workflows'), logger: { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} } });
  const { worker } = await createFaultlineWorker({
    config,
    logger,
    connection: native,
    workflowBundle,
    extraActivities: createNaiveActivities({ source: SOURCE, outDir: path.join(dir, 'naive-out') }),
  });
  const running = worker.run();
  const connection = await Connection.connect({ address: server.address });
  const raw = new Client({ connection });
  const client = await FaultlineClient.connect({ config, connection });
  const cores = os.cpus().length;

  const historyEvents = async (workflowId: string, withChildren: boolean): Promise<number> => {
    let total = (await raw.workflow.getHandle(workflowId).fetchHistory()).events?.length ?? 0;
    if (withChildren) {
      for await (const child of raw.workflow.list({ query: `WorkflowId STARTS_WITH '${workflowId}/'` })) {
        total += (await raw.workflow.getHandle(child.workflowId, child.runId).fetchHistory()).events?.length ?? 0;
        // continued-as-new runs of shards share the id; count every run
      }
    }
    return total;
  };

  const maxHistoryBytes = async (workflowId: string): Promise<number> => {
    const size = async (id: string, runId?: string) => Number((await raw.workflow.getHandle(id, runId).describe()).raw.workflowExecutionInfo?.historySizeBytes ?? 0);
    let largest = await size(workflowId);
    for await (const child of raw.workflow.list({ query: `WorkflowId STARTS_WITH '${workflowId}/'` })) largest = Math.max(largest, await size(child.workflowId, child.runId));
    return largest;
  };

  const runFaultline = async (spec: unknown) => {
    const { jobId } = await client.start(spec);
    const result = await client.result(jobId);
    await raw.workflow
      .getHandle(jobId)
      .result()
      .catch(() => undefined); // closed, so every child history is final
    const accounted = result.counts.Available + result.counts.Failed + result.counts.Cancelled + result.counts.Missing + result.counts.Unsolved + result.counts.Skipped;
    return {
      completed: result.counts.Available === result.counts.items,
      events: await historyEvents(jobId, true),
      outcome: `${result.status}${accounted === result.counts.outputs ? '' : ` (only ${accounted} of ${result.counts.outputs} outputs accounted for)`}${result.stoppedBy ? `, stopped by ${result.stoppedBy.type}` : ''}, ${result.counts.Cancelled} Cancelled`,
      maxHistoryBytes: await maxHistoryBytes(jobId),
    };
  };
  const runNaive = async (kind: 'cpu1ms' | 'thumbnail', count: number, timeoutMs: number) => {
    const workflowId = `naive-${kind}-${count}-${Date.now()}`;
    const handle = await raw.workflow.start('naiveWorkflow', { taskQueue: config.taskQueue, workflowId, args: [{ kind, count }] });
    const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), timeoutMs).unref());
    try {
      const outcome = await Promise.race([handle.result(), timeout]);
      if (outcome === 'timeout') {
        await handle.terminate('bench time limit').catch(() => undefined);
        return { completed: false, events: await historyEvents(workflowId, false), outcome: `not finished after ${timeoutMs / 1000}s (terminated)` };
      }
      return { completed: outcome === count, events: await historyEvents(workflowId, false) };
    } catch (error) {
      return {
        completed: false,
        events: await historyEvents(workflowId, false).catch(() => null),
        outcome: `failed: ${(error as Error).message}${(error as Error).cause ? ` (${((error as Error).cause as Error).message})` : ''}`,
      };
    }
  };

  const workloads: Record<string, Record<string, ModeResult>> = {};

  if (wanted('cpu1ms')) {
    const cpuItems = Math.round(5_000 * scale);
    say(`cpu1ms: ${cpuItems} items`);
    workloads.cpu1ms = {
      raw: await measure(cpuItems, async () => {
        await pool(cpuItems, cores, () => burnCpu(1));
        return { completed: true, events: null };
      }),
      naive: await measure(cpuItems, () => runNaive('cpu1ms', cpuItems, 20 * 60_000)),
      faultline: await measure(cpuItems, () => runFaultline({ pipeline: 'synthetic', items: Array.from({ length: cpuItems }, (_, i) => ({ id: `c${i}`, params: { cpuMs: 1 } })) })),
    };
  }
  if (wanted('thumbnails')) {
    const thumbItems = Math.round(2_000 * scale);
    say(`thumbnails: ${thumbItems} items`);
    workloads.thumbnails = {
      raw: await measure(thumbItems, async () => {
        await pool(thumbItems, cores, (i) => thumbnailWork(SOURCE, path.join(dir, 'raw-out'), `r${i}`));
        return { completed: true, events: null };
      }),
      naive: await measure(thumbItems, () => runNaive('thumbnail', thumbItems, 20 * 60_000)),
      faultline: await measure(thumbItems, () =>
        runFaultline({
          pipeline: 'images',
          items: Array.from({ length: thumbItems }, (_, i) => ({ id: `t${i}`, source: pathToFileURL(SOURCE).toString() })),
          outputs: ['thumbnail'],
          destination: pathToFileURL(path.join(dir, 'faultline-out')).toString(),
        }),
      ),
    };
  }
  if (wanted('scale100k')) {
    const bigItems = Math.round(100_000 * scale);
    say(`scale100k: ${bigItems} items`);
    workloads.scale100k = {
      faultline: await measure(bigItems, () => runFaultline({ pipeline: 'synthetic', items: Array.from({ length: bigItems }, (_, i) => ({ id: `b${i}` })) })),
      naive: await measure(bigItems, () => runNaive('cpu1ms', bigItems, (quick ? 3 : 6) * 60_000)),
    };
  }

  if (wanted('scale1m')) {
    const millionItems = Math.round(1_000_000 * scale);
    say(`scale1m: ${millionItems} items in one job`);
    workloads.scale1m = {
      faultline: await measure(millionItems, () => runFaultline({ pipeline: 'synthetic', items: Array.from({ length: millionItems }, (_, i) => ({ id: `m${i}` })) })),
    };
  }
  if (wanted('stop1m')) {
    // The first item breaks a zero tolerance: the never-started rest becomes Cancelled by activity, not through history.
    const millionItems = Math.round(1_000_000 * scale);
    say(`stop1m: ${millionItems} items, the first one fails with toleratedFailureCount 0`);
    workloads.stop1m = {
      faultline: await measure(millionItems, () =>
        runFaultline({
          pipeline: 'synthetic',
          items: Array.from({ length: millionItems }, (_, i) => ({ id: `x${i}`, ...(i === 0 ? { params: { outcome: 'unprocessable' } } : {}) })),
          options: { toleratedFailureCount: 0 },
        }),
      ),
    };
  }

  // latency
  const latencyJobs = wanted('latency') ? Math.round(50 * (quick ? 0.2 : 1)) : 0;
  say(`latency: ${latencyJobs} one-item jobs`);
  const samples: number[] = [];
  for (let i = 0; i < latencyJobs; i++) {
    const started = performance.now();
    const { jobId } = await client.start({ pipeline: 'synthetic', items: [{ id: 'one' }] });
    await client.result(jobId);
    samples.push(performance.now() - started);
  }
  samples.sort((a, b) => a - b);
  const percentile = (p: number) => Math.round(samples[Math.min(samples.length - 1, Math.floor((p / 100) * samples.length))] ?? 0);
  const latency = { jobs: latencyJobs, p50Ms: percentile(50), p95Ms: percentile(95), maxMs: Math.round(samples[samples.length - 1] ?? 0) };

  const ratio = (a?: number, b?: number) => (a && b ? Math.round((a / b) * 100) / 100 : null);
  const report = {
    machine: {
      cores,
      memoryGb: Math.round(os.totalmem() / 1024 ** 3),
      node: process.version,
      temporalCli: execFileSync(ensureTemporalCli(), ['--version']).toString().trim(),
    },
    quick,
    workloads: { ...workloads, latency },
    latency: { p50Ms: latency.p50Ms, p95Ms: latency.p95Ms },
    ratios: {
      cpu1ms_faultline_vs_naive: ratio(workloads.cpu1ms?.faultline?.itemsPerSec, workloads.cpu1ms?.naive?.itemsPerSec),
      cpu1ms_faultline_vs_raw: ratio(workloads.cpu1ms?.faultline?.itemsPerSec, workloads.cpu1ms?.raw?.itemsPerSec),
      thumbnails_faultline_vs_raw: ratio(workloads.thumbnails?.faultline?.itemsPerSec, workloads.thumbnails?.raw?.itemsPerSec),
      thumbnails_faultline_vs_naive: ratio(workloads.thumbnails?.faultline?.itemsPerSec, workloads.thumbnails?.naive?.itemsPerSec),
    },
  };
  worker.shutdown();
  await running;
  await client.close();
  await connection.close();
  await native.close();
  await server.stop();
  await rm(dir, { recursive: true, force: true });

  if (json) {
    console.log(JSON.stringify(report, null, 2));
    return;
  }
  console.log('\nworkload     mode        items   items/s   elapsed ms  events/item  peak RSS MB  max history  completed');
  for (const [name, modes] of Object.entries(workloads)) {
    for (const [mode, r] of Object.entries(modes)) {
      const history = r.maxHistoryBytes === undefined ? '-' : `${(r.maxHistoryBytes / 1024 / 1024).toFixed(2)} MB`;
      console.log(
        `${name.padEnd(12)} ${mode.padEnd(10)} ${String(r.items).padStart(7)} ${String(r.itemsPerSec).padStart(9)} ${String(r.elapsedMs).padStart(12)} ${String(r.eventsPerItem ?? '-').padStart(12)} ${String(r.peakRssMb).padStart(12)} ${history.padStart(12)}  ${r.completed}${r.outcome ? ` (${r.outcome})` : ''}`,
      );
    }
  }
  if (latency.jobs > 0) console.log(`latency      1-item jobs: p50 ${latency.p50Ms} ms, p95 ${latency.p95Ms} ms (n=${latency.jobs})`);
  console.log(`ratios: ${JSON.stringify(report.ratios)}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
