/**
 * The time-skipping test server with Faultline's search attributes, a client, and a worker that
 * can be stopped and started again (so messages land in one activation) with mocked activities.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { temporal } from '@temporalio/proto';
import type { Worker, WorkerOptions } from '@temporalio/worker';
import { FaultlineClient } from '../../src/client';
import { type Config, loadConfig } from '../../src/config';
import { ensureTestServer } from '../../src/devserver/temporal-cli';
import { createLogger } from '../../src/logger';
import { SEARCH_ATTRIBUTES } from '../../src/shared';
import { createFaultlineWorker } from '../../src/worker';
import { workflowBundle } from './env';

export interface TimeSkippingEnv {
  testEnv: TestWorkflowEnvironment;
  client: FaultlineClient;
  config: Config;
  /**
   * Without a sticky cache by default, so a restarted worker takes a job's next task at once.
   * `cached`: with one, which lets other runs go on while a sink holds one run's activation.
   */
  startWorker(options?: { cached?: boolean }): Promise<void>;
  stopWorker(): Promise<void>;
  readonly workerRunning: boolean;
  teardown(): Promise<void>;
}

export async function createTimeSkippingEnv(options: {
  taskQueue: string;
  /** Activities replacing the real ones (by name). */
  activities?: Record<string, unknown>;
  bundle?: () => ReturnType<typeof workflowBundle>;
  /** Worker sinks (e.g. the activation hold of test/fixtures/hold-interceptors). */
  sinks?: WorkerOptions['sinks'];
}): Promise<TimeSkippingEnv> {
  const testEnv = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path: ensureTestServer() } } });
  const types = {
    Keyword: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    Bool: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    Int: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_INT,
  };
  await testEnv.connection.operatorService.addSearchAttributes({
    namespace: 'default',
    searchAttributes: Object.fromEntries(Object.entries(SEARCH_ATTRIBUTES).map(([name, type]) => [name, types[type]])),
  });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-ts-'));
  const config = loadConfig(
    { ...process.env, FAULTLINE_TASK_QUEUE: options.taskQueue, FAULTLINE_LOG_LEVEL: 'error', FAULTLINE_SECRET_KEY: 'b'.repeat(64), FAULTLINE_STORAGE: path.join(dir, 'storage') },
    dir,
  );
  const client = await FaultlineClient.connect({ config, connection: testEnv.connection });
  let worker: { worker: Worker; running: Promise<void> } | undefined;
  const startWorker = async (startOptions: { cached?: boolean } = {}) => {
    const created = await createFaultlineWorker({
      config,
      logger: createLogger({ level: 'error', format: 'json' }),
      connection: testEnv.nativeConnection,
      workflowBundle: await (options.bundle ?? workflowBundle)(),
      ...(options.activities ? { extraActivities: options.activities as never } : {}),
      workerOptions: { maxCachedWorkflows: startOptions.cached ? 100 : 0, ...(options.sinks ? { sinks: options.sinks } : {}) },
    });
    worker = { worker: created.worker, running: created.worker.run() };
  };
  const stopWorker = async () => {
    if (!worker) return;
    worker.worker.shutdown();
    await worker.running;
    worker = undefined;
  };
  return {
    testEnv,
    client,
    config,
    startWorker,
    stopWorker,
    get workerRunning() {
      return worker !== undefined;
    },
    async teardown() {
      await stopWorker();
      await testEnv.teardown();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
