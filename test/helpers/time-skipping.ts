/**
 * The time-skipping test server with Faultline's search attributes, a client, and a worker that
 * can be stopped and started again (so messages land in one activation) with mocked activities.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { temporal } from '@temporalio/proto';
import type { Worker } from '@temporalio/worker';
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
  startWorker(): Promise<void>;
  stopWorker(): Promise<void>;
  readonly workerRunning: boolean;
  teardown(): Promise<void>;
}

export async function createTimeSkippingEnv(options: {
  taskQueue: string;
  /** Activities replacing the real ones (by name). */
  activities?: Record<string, unknown>;
  bundle?: () => ReturnType<typeof workflowBundle>;
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
  const startWorker = async () => {
    const created = await createFaultlineWorker({
      config,
      logger: createLogger({ level: 'error', format: 'json' }),
      connection: testEnv.nativeConnection,
      workflowBundle: await (options.bundle ?? workflowBundle)(),
      ...(options.activities ? { extraActivities: options.activities as never } : {}),
      // No sticky cache: a restarted worker takes the job's next task at once.
      workerOptions: { maxCachedWorkflows: 0 },
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
