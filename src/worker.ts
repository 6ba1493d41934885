/**
 * The Faultline worker: the only place that builds real activity dependencies.
 * Graceful shutdown on SIGTERM/SIGINT hands in-flight batches back without spending budgets.
 */
import { ADAPTIVE_SLOTS, activitySlots } from './activity-slots';
import os from 'node:os';
import { readdirSync, writeFileSync } from 'node:fs';
import { type InjectedSinks, NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { enableWorkerMetrics, startMetricsServer, workerMetrics } from './metrics';
import type { FaultlineSinks } from './shared/sinks';
import { freePort } from './devserver/temporal-cli';
import type { Context as ActivityContext } from '@temporalio/activity';
import { OpenTelemetryActivityInboundInterceptor, makeWorkflowExporter } from '@temporalio/interceptors-opentelemetry/lib/worker';
import { activeTracing, recordSpan, startTracing, workflowTracingModule } from './tracing';
import { type Config, ConfigError } from './config';
import { connectionOptions } from './connection';
import { createArchiveActivities } from './activities/archive';
import { createEngineActivities } from './activities/engine';
import { protectFromSpecs } from './activities/files';
import { createNotifyActivities } from './activities/notify';
import { createSyntheticPipeline } from './pipelines/synthetic';
import type { PipelineImplementation } from './activities/types';
import type { Logger } from './logger';
import { installTemporalLogging } from './logger';
import { builtInApiPipelines, pipelineRegistry } from './pipelines';
import { type Pipeline, useCheckpointStorage } from './define-pipeline';
import { guardItemFiles } from './activities/step-tools';
import { loadPipelineModules } from './pipeline-modules';
import { createLogger } from './logger';
import { temporal } from '@temporalio/proto';
import { loadSecretKey } from './secrets';
import { ENV } from './shared/constants';
import { type Storage, StorageUnusable, createStorage, localStateDir } from './storage';
import { prebuiltWorkflowBundle, workflowSources } from './workflow-bundle';
import { dataConverterFor } from './codec';
import { SearchAttributesMissing, missingSearchAttributes } from './search-attributes-check';

export interface FaultlineWorkerOptions {
  config: Config;
  /** Default: a logger at the config's level and format. */
  logger?: Logger;
  connection?: NativeConnection;
  /** Your own pipelines (from `definePipeline`), next to the built-in ones. */
  pipelines?: readonly Pipeline[];
  /**
   * Serve this task queue instead of the main one: a worker for pipelines that declare their own
   * `taskQueue` (e.g. GPU hosts). It runs only those pipelines' batches, no workflows.
   */
  taskQueue?: string;
  /** Job storage that does not answer at start (unreachable, restarting) is waited for instead of failing the start (supervised processes). */
  waitForStorage?: boolean;
  /** Prebuilt workflow bundle (tests build it once); otherwise bundled from src/workflows. */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** Pipeline implementations without a definition of their own (they must be built-in names). */
  extraPipelines?: PipelineImplementation[];
  /** How a synthetic `crash` item ends the process (default: SIGKILL ourselves, like a real crash). */
  crashProcess?: () => void;
  env?: NodeJS.ProcessEnv;
  /** More activities on the same worker (embedding, benchmarks). */
  extraActivities?: Record<string, (...args: never[]) => Promise<unknown>>;
  /** Tuning for tests (e.g. no sticky cache, so a restarted worker takes the next task at once). */
  workerOptions?: Pick<WorkerOptions, 'maxCachedWorkflows' | 'sinks'>;
}

/**
 * Proves job storage works before taking work. `wait`: storage that may answer later (unreachable,
 * restarting) is asked again every few seconds, as a supervised process restarted during a storage
 * outage must; storage that refuses for good fails at once.
 */
async function checkStorage(storage: Storage, wait: boolean, logger: Logger): Promise<void> {
  for (let tries = 1; ; tries++) {
    try {
      await storage.check();
      if (tries > 1) logger.info({ tries }, 'job storage answers again');
      return;
    } catch (error) {
      if (!wait || !(error instanceof StorageUnusable) || error.lasting) throw error;
      const delayMs = Math.min(5_000, 500 * tries);
      logger.warn({ err: error, tries, delayMs }, 'job storage does not answer yet; asking again');
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

export async function createFaultlineWorker(options: FaultlineWorkerOptions): Promise<{ worker: Worker; connection: NativeConnection; ownsConnection: boolean }> {
  const { config } = options;
  const logger = options.logger ?? createLogger({ level: config.logLevel, format: config.logFormat, name: 'faultline-worker' });
  // Metrics: Faultline's counters, and the SDK's exporter on a private loopback port, both served at FAULTLINE_METRICS_ADDRESS.
  const sdkMetricsAddress = config.metricsAddress ? `127.0.0.1:${await freePort()}` : undefined;
  installTemporalLogging(logger, sdkMetricsAddress ? { prometheusAddress: sdkMetricsAddress } : {});
  const connection = options.connection ?? (await connectWorker(config, logger));
  try {
    return await createWorkerOn(connection, options, logger, sdkMetricsAddress);
  } catch (error) {
    // Nothing may hold the process open after a failed start: a supervised process must exit to be restarted.
    if (!options.connection) await connection.close().catch(() => undefined);
    throw error;
  }
}

/** Everything after connecting: checks, activities and the SDK worker (the caller closes a connection it opened if this throws). */
async function createWorkerOn(
  connection: NativeConnection,
  options: FaultlineWorkerOptions,
  logger: Logger,
  sdkMetricsAddress: string | undefined,
): Promise<{ worker: Worker; connection: NativeConnection; ownsConnection: boolean }> {
  const { config } = options;
  const missing = await missingSearchAttributes(connection.operatorService, config.namespace);
  if (missing && missing.length > 0) throw new SearchAttributesMissing(config.namespace, missing);
  const storage = createStorage(config.storage, config.s3);
  // A worker that cannot keep records must not take work: say so in one line at start.
  await checkStorage(storage, options.waitForStorage === true, logger);
  if (storage.localRoot) protectFromSpecs(storage.localRoot);
  let pipelines: readonly Pipeline[];
  let registry: ReturnType<typeof pipelineRegistry>;
  try {
    pipelines = options.pipelines ?? (await loadPipelineModules(config.pipelineModules));
    registry = pipelineRegistry(pipelines); // names checked before anything polls
  } catch (error) {
    throw error instanceof ConfigError ? error : new ConfigError([{ path: ENV.pipelines, message: (error as Error).message }]);
  }
  const implementations: Record<string, PipelineImplementation> = {};
  for (const implementation of [
    createSyntheticPipeline({ crashProcess: options.crashProcess ?? (() => process.kill(process.pid, 'SIGKILL')) }).implementation,
    ...(options.extraPipelines ?? []),
    ...builtInApiPipelines.map((pipeline) => pipeline.implementation),
    ...pipelines.map((pipeline) => pipeline.implementation),
  ]) {
    implementations[implementation.name] = implementation;
  }
  useCheckpointStorage(guardItemFiles(storage));
  const taskQueue = options.taskQueue ?? config.pipelineQueue ?? config.taskQueue;
  const engineActivities = createEngineActivities({
    implementations,
    registry,
    storage,
    logger,
    allowedHosts: config.allowedHosts,
    allowedRoots: config.allowedRoots,
    s3: config.s3,
    taskQueue,
    rateLimits: config.rateLimits,
    workflowTaskQueue: config.taskQueue,
    cpuSlotsPerProcess: config.activitySlots === 'fixed' ? config.maxConcurrentActivities : Math.min(config.maxConcurrentActivities, ADAPTIVE_SLOTS.always),
    pollersOf: async (queue) => {
      const described = await connection.workflowService.describeTaskQueue({
        namespace: config.namespace,
        taskQueue: { name: queue },
        taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
      });
      return described.pollers?.length ?? 0;
    },
  });
  // Traces, like metrics, once every check has passed.
  const tracing = startTracing('faultline-worker', options.env ?? process.env);
  const tracingOptions = tracing
    ? {
        interceptors: { activity: [(ctx: ActivityContext) => ({ inbound: new OpenTelemetryActivityInboundInterceptor(ctx) })], workflowModules: [workflowTracingModule()] },
        sinks: { exporter: makeWorkflowExporter(tracing.spanProcessor, tracing.resource) },
      }
    : undefined;
  /**
   * Metrics are served once every check has passed (a worker refused at start leaves no port open);
   * the worker's own connection, the metrics server and buffered spans close when it stops.
   */
  const created = async (create: () => Promise<Worker>) => {
    const metricsServer = config.metricsAddress
      ? await startMetricsServer({ address: config.metricsAddress, metrics: enableWorkerMetrics(), ...(sdkMetricsAddress ? { sdkAddress: sdkMetricsAddress } : {}) }).catch((error: unknown) => {
          throw new ConfigError([{ path: ENV.metricsAddress, message: `cannot serve metrics on ${config.metricsAddress}: ${(error as Error).message}` }]);
        })
      : undefined;
    if (metricsServer) logger.info({ metrics: metricsServer.url }, 'serving Prometheus metrics');
    let worker: Worker;
    try {
      worker = await create();
    } catch (error) {
      await metricsServer?.close();
      throw error;
    }
    afterRun(worker, [...(options.connection ? [] : [idempotentClose(connection)]), ...(metricsServer ? [() => metricsServer.close()] : []), ...(tracing ? [() => tracing.shutdown()] : [])]);
    return { worker, connection, ownsConnection: !options.connection };
  };
  if (taskQueue !== config.taskQueue) {
    // A pipeline queue: batches of the pipelines that declare it, nothing else.
    const served = pipelines.filter((pipeline) => pipeline.definition.taskQueue === taskQueue);
    if (served.length === 0) throw new ConfigError([{ path: 'taskQueue', message: `no pipeline given to this worker declares task queue "${taskQueue}"` }]);
    const dataConverter = dataConverterFor(config);
    return created(() =>
      Worker.create({
        connection,
        ...(dataConverter ? { dataConverter } : {}),
        namespace: config.namespace,
        taskQueue,
        activities: { runBatch: engineActivities.runBatch },
        ...activitySlots(config.activitySlots, config.maxConcurrentActivities),
        shutdownGraceTime: config.shutdownGraceMs,
        maxHeartbeatThrottleInterval: '1s',
        ...(tracingOptions ? { interceptors: { activity: tracingOptions.interceptors.activity } } : {}),
      }),
    );
  }
  const activities = {
    ...engineActivities,
    ...createArchiveActivities({ allowedRoots: config.allowedRoots, logger, storage }),
    ...createNotifyActivities({ allowedHosts: config.allowedHosts, secretKey: loadSecretKey(config.secretKey, localStateDir(config.storage), false), env: options.env ?? process.env, logger }),
    ...options.extraActivities,
  };
  const dataConverter = dataConverterFor(config);
  return created(() =>
    Worker.create({
      connection,
      ...(dataConverter ? { dataConverter } : {}),
      namespace: config.namespace,
      taskQueue: config.taskQueue,
      activities,
      ...workflowCode(options, tracing !== undefined),
      ...(tracingOptions ? { interceptors: tracingOptions.interceptors } : {}),
      ...activitySlots(config.activitySlots, config.maxConcurrentActivities),
      shutdownGraceTime: config.shutdownGraceMs,
      // Cancellation reaches an activity only with a heartbeat response: without this cap the SDK
      // throttles heartbeats to 80% of the heartbeat timeout, so a stopped job's batches run on.
      maxHeartbeatThrottleInterval: '1s',
      ...options.workerOptions,
      sinks: { ...metricsSinks(), ...tracingOptions?.sinks, ...options.workerOptions?.sinks },
    }),
  );
}

/**
 * A connection the worker opened itself closes when the worker stops, so a process that runs
 * `await worker.run()` and nothing else can exit (an open native connection keeps it alive).
 * Closing is made idempotent: callers that close it themselves, as before, still may.
 */
function idempotentClose(connection: NativeConnection): () => Promise<void> {
  let closing: Promise<void> | undefined;
  const close = connection.close.bind(connection);
  connection.close = () => (closing ??= close());
  return () => connection.close();
}

/** Runs `cleanups` in order once `worker.run()` ends, however it ends. */
function afterRun(worker: Worker, cleanups: (() => Promise<void>)[]): void {
  if (cleanups.length === 0) return;
  const run = worker.run.bind(worker);
  worker.run = async () => {
    try {
      await run();
    } finally {
      for (const cleanup of cleanups) await cleanup();
    }
  };
}

/** The workflow's sink for settled rounds: counted when metrics are on, ignored otherwise (never during replay). */
function metricsSinks(): InjectedSinks<FaultlineSinks> {
  return {
    faultlineMetrics: {
      roundSettled: {
        fn(info, pipeline, status, runSeconds, round) {
          const metrics = workerMetrics();
          metrics?.jobs.inc({ pipeline, status });
          metrics?.jobDuration.observe({ pipeline }, runSeconds);
          if (activeTracing())
            recordSpan('faultline.round', Date.now() - runSeconds * 1000, {
              'faultline.job_id': info.workflowId,
              'faultline.pipeline': pipeline,
              'faultline.round': round,
              'faultline.status': status,
            });
        },
        callDuringReplay: false,
      },
    },
  };
}

/** How long a starting worker waits for an unreachable server (restarting, not up yet) before giving up in one line. */
const CONNECT_PATIENCE_MS = 60_000;

/** Connects, waiting out a server that is restarting or not up yet; a server still unreachable after a minute is one clear error. */
async function connectWorker(config: Config, logger: Logger): Promise<NativeConnection> {
  const deadline = Date.now() + CONNECT_PATIENCE_MS;
  for (let attempt = 1; ; attempt++) {
    try {
      return await NativeConnection.connect(connectionOptions(config));
    } catch (error) {
      const reason = String((error as Error).message).match(/Connection refused|connection reset|timed out|not healthy|service is currently unavailable|dns error[^"]*/i)?.[0];
      if (!reason || Date.now() > deadline) {
        throw new Error(
          `cannot connect to Temporal at ${config.address}${reason ? ` (${reason.toLowerCase()} for ${CONNECT_PATIENCE_MS / 1000} s)` : ''}; check ${ENV.address} and that the server is running`,
          { cause: error },
        );
      }
      if (attempt === 1) logger.warn({ address: config.address, reason }, 'Temporal server not reachable yet; retrying');
      await new Promise((resolve) => setTimeout(resolve, Math.min(2_000, 200 * attempt)));
    }
  }
}

/** A bundle given by the caller or a supervisor, else the prebuilt one, else bundled now (development). */
function workflowCode(options: FaultlineWorkerOptions, tracing: boolean): Pick<WorkerOptions, 'workflowBundle' | 'workflowsPath' | 'bundlerOptions'> {
  if (options.workflowBundle) return { workflowBundle: options.workflowBundle };
  // A supervisor's bundle has the tracing interceptors when tracing is on (it bundles with the same environment); the prebuilt one never does.
  const codePath = (options.env ?? process.env)[ENV.workflowBundle] || (tracing ? undefined : prebuiltWorkflowBundle());
  if (codePath) return { workflowBundle: { codePath } };
  const { workflowsPath, ...bundlerOptions } = workflowSources();
  return { workflowsPath, bundlerOptions };
}

/**
 * A worker process's batch work runs at a lower CPU priority (`FAULTLINE_WORKER_NICE`): on a machine it
 * shares with the Temporal server, its database or a user's shell, they answer first and the worker
 * takes every cycle they leave (at 1,000,000 items here, `progress` p50 went from 27–32 ms to 18 ms at
 * the same throughput).
 */
function lowerCpuPriority(nice: number, logger: Logger): void {
  if (nice === 0) return;
  // Linux keeps a priority per thread: V8's and libuv's threads, started with the process, are set one by one.
  let threads: number[] = [0];
  try {
    threads = readdirSync('/proc/self/task').map(Number);
  } catch {
    // no /proc: the process's priority is its threads'
  }
  for (const thread of threads) {
    try {
      // Only ever lower: a worker started nicer (`nice -n 19 faultline worker`) stays as it was started.
      if (os.getPriority(thread) >= nice) continue;
      os.setPriority(thread, nice);
    } catch (error) {
      // A thread that ended meanwhile is no matter; the process itself refusing is worth a line.
      if (thread === 0 || thread === process.pid) logger.warn({ err: error, nice }, 'could not lower the worker process priority; it runs at its current priority');
    }
  }
}

/** Runs a worker until SIGTERM/SIGINT, then shuts down gracefully. */
export async function runWorker(given: FaultlineWorkerOptions): Promise<void> {
  const options = { ...given, logger: given.logger ?? createLogger({ level: given.config.logLevel, format: given.config.logFormat, name: 'faultline-worker' }) };
  let created: Awaited<ReturnType<typeof createFaultlineWorker>>;
  // Before the SDK starts its threads (workflow threads, the core's runtime), which take this priority with them.
  lowerCpuPriority(options.config.workerNice, options.logger);
  try {
    created = await createFaultlineWorker(options);
  } catch (error) {
    // A supervised process that cannot start (the server's database away while it describes the namespace) exits so it is restarted; the IPC channel would keep it open.
    if (process.connected) process.disconnect();
    throw error;
  }
  const { worker, connection, ownsConnection } = created;
  // Ctrl-C reaches every process of the terminal's group and `faultline dev` sends SIGTERM too:
  // the first signal shuts down, later ones only say it is under way.
  const stop = (signal: NodeJS.Signals) => {
    if (worker.getState() !== 'RUNNING') {
      options.logger.info({ signal, state: worker.getState() }, 'already shutting down');
      return;
    }
    options.logger.info({ signal }, 'shutting down worker gracefully; in-flight batches are handed back');
    worker.shutdown();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Under a supervisor: if it vanishes (kill -9), shut down instead of running on unsupervised.
  const orphaned = () => stop('SIGHUP');
  process.on('disconnect', orphaned);
  options.logger.info({ taskQueue: options.taskQueue ?? options.config.taskQueue, address: options.config.address, namespace: options.config.namespace }, 'worker started');
  // Liveness for container health checks: touched while the worker is running.
  const healthFile = (options.env ?? process.env)[ENV.healthFile];
  const touch = () => {
    if (healthFile && worker.getState() === 'RUNNING') writeFileSync(healthFile, String(Date.now()));
  };
  const health = healthFile ? setInterval(touch, 5_000) : undefined;
  try {
    await worker.run();
  } finally {
    if (health) clearInterval(health);
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
    process.off('disconnect', orphaned);
    if (process.connected) process.disconnect();
    if (ownsConnection) await connection.close();
    options.logger.info('worker stopped');
  }
}
