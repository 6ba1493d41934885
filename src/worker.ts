/**
 * The Faultline worker: the only place that builds real activity dependencies.
 * Graceful shutdown on SIGTERM/SIGINT hands in-flight batches back without spending budgets.
 */
import { writeFileSync } from 'node:fs';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Config } from './config';
import { connectionOptions } from './connection';
import { createArchiveActivities } from './activities/archive';
import { createEngineActivities } from './activities/engine';
import { createImagesPipeline } from './activities/images';
import { protectFromSpecs } from './activities/files';
import { createNotifyActivities } from './activities/notify';
import { createSyntheticPipeline } from './activities/synthetic';
import type { PipelineImplementation } from './activities/types';
import type { Logger } from './logger';
import { installTemporalLogging } from './logger';
import { builtInPipelines } from './pipelines';
import { loadSecretKey } from './secrets';
import { ENV } from './shared/constants';
import { createStorage } from './storage';

export interface FaultlineWorkerOptions {
  config: Config;
  logger: Logger;
  connection?: NativeConnection;
  /** Prebuilt workflow bundle (tests build it once); otherwise bundled from src/workflows. */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** Extra pipelines (user code) next to the built-in ones. */
  extraPipelines?: PipelineImplementation[];
  /** How a synthetic `crash` item ends the process (default: SIGKILL ourselves, like a real crash). */
  crashProcess?: () => void;
  env?: NodeJS.ProcessEnv;
  /** More activities on the same worker (embedding, benchmarks). */
  extraActivities?: Record<string, (...args: never[]) => Promise<unknown>>;
  /** Tuning for tests (e.g. no sticky cache, so a restarted worker takes the next task at once). */
  workerOptions?: Pick<WorkerOptions, 'maxCachedWorkflows'>;
}

export async function createFaultlineWorker(options: FaultlineWorkerOptions): Promise<{ worker: Worker; connection: NativeConnection; ownsConnection: boolean }> {
  const { config, logger } = options;
  installTemporalLogging(logger);
  const connection = options.connection ?? (await NativeConnection.connect(connectionOptions(config)));
  const storage = createStorage(config.storage);
  protectFromSpecs(config.storage);
  const implementations: Record<string, PipelineImplementation> = {};
  for (const implementation of [
    createSyntheticPipeline({ crashProcess: options.crashProcess ?? (() => process.kill(process.pid, 'SIGKILL')), allowedRoots: config.allowedRoots }),
    createImagesPipeline({ storage, allowedRoots: config.allowedRoots, allowedHosts: config.allowedHosts, logger }),
    ...(options.extraPipelines ?? []),
  ]) {
    implementations[implementation.name] = implementation;
  }
  const activities = {
    ...createEngineActivities({ implementations, registry: builtInPipelines, storage, logger }),
    ...createArchiveActivities({ allowedRoots: config.allowedRoots, logger }),
    ...createNotifyActivities({ allowedHosts: config.allowedHosts, secretKey: loadSecretKey(config.secretKey, config.storage, false), env: options.env ?? process.env, logger }),
    ...options.extraActivities,
  };
  const worker = await Worker.create({
    connection,
    namespace: config.namespace,
    taskQueue: config.taskQueue,
    activities,
    ...(options.workflowBundle ? { workflowBundle: options.workflowBundle } : { workflowsPath: require.resolve('./workflows') }),
    maxConcurrentActivityTaskExecutions: config.maxConcurrentActivities,
    shutdownGraceTime: config.shutdownGraceMs,
    // Cancellation reaches an activity only with a heartbeat response: without this cap the SDK
    // throttles heartbeats to 80% of the heartbeat timeout, so a stopped job's batches run on.
    maxHeartbeatThrottleInterval: '1s',
    ...options.workerOptions,
  });
  return { worker, connection, ownsConnection: !options.connection };
}

/** Runs a worker until SIGTERM/SIGINT, then shuts down gracefully. */
export async function runWorker(options: FaultlineWorkerOptions): Promise<void> {
  const { worker, connection, ownsConnection } = await createFaultlineWorker(options);
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
  options.logger.info({ taskQueue: options.config.taskQueue, address: options.config.address, namespace: options.config.namespace }, 'worker started');
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
    if (ownsConnection) await connection.close();
    options.logger.info('worker stopped');
  }
}
