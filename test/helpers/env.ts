/**
 * Test harness: a real Temporal dev server on a free port (always torn down), the workflow
 * bundle built once per test file, workers in-process or as real child processes.
 */
import { type ChildProcess, type ExecFileOptions, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { NativeConnection, type Worker, bundleWorkflowCode } from '@temporalio/worker';
import { FaultlineClient } from '../../src/client';
import { type Config, loadConfig } from '../../src/config';
import { createLogger, installTemporalLogging } from '../../src/logger';
import { type DevServer, startDevServer } from '../../src/devserver/temporal-cli';
import type { JobSpec } from '../../src/shared';
import { createFaultlineWorker } from '../../src/worker';
import type { Pipeline } from '../../src/define-pipeline';
import { workflowSources } from '../../src/workflow-bundle';

export const ROOT = path.resolve(__dirname, '..', '..');
const TEST_KEY = 'a'.repeat(64);

let bundlePromise: ReturnType<typeof bundleWorkflowCode> | undefined;
export function workflowBundle(): ReturnType<typeof bundleWorkflowCode> {
  bundlePromise ??= bundleWorkflowCode({ ...workflowSources(), logger: { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} } });
  return bundlePromise;
}

export interface TestEnv {
  server: DevServer;
  config: Config;
  client: FaultlineClient;
  connection: Connection;
  dir: string;
  env: NodeJS.ProcessEnv;
  /** An in-process worker; `activities` replace real ones by name (mocked batches). */
  startWorker(overrides?: Partial<Config>, options?: StartWorkerOptions): Promise<RunningWorker>;
  spawnWorker(extraEnv?: NodeJS.ProcessEnv): WorkerProcess;
  teardown(): Promise<void>;
}

export interface StartWorkerOptions {
  activities?: Record<string, (...args: never[]) => Promise<unknown>>;
  pipelines?: readonly Pipeline[];
  /** A pipeline queue instead of the main one. */
  taskQueue?: string;
}

export interface RunningWorker {
  worker: Worker;
  stop(): Promise<void>;
}

/** A real worker process, restarted when it dies (like `faultline dev`), until stopped. */
export interface WorkerProcess {
  readonly current: ChildProcess;
  readonly starts: number;
  /** Everything the worker processes wrote to stderr (their logs). */
  readonly logs: string;
  stop(): Promise<void>;
}

/** A test file stopped by the runner (timeout, Ctrl-C) still runs 'exit' handlers, which kill its servers and workers. */
let exitOnSignal = false;
function installExitOnSignal(): void {
  if (exitOnSignal) return;
  exitOnSignal = true;
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(signal, () => process.exit(128 + os.constants.signals[signal]));
}

installExitOnSignal();

export async function createTestEnv(options: { taskQueue?: string; envExtra?: NodeJS.ProcessEnv } = {}): Promise<TestEnv> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-test-'));
  const server = await startDevServer({ ui: false });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TEMPORAL_ADDRESS: server.address,
    FAULTLINE_STORAGE: path.join(dir, 'storage'),
    FAULTLINE_ALLOWED_ROOTS: dir,
    FAULTLINE_TASK_QUEUE: options.taskQueue ?? 'faultline-test',
    FAULTLINE_SECRET_KEY: TEST_KEY,
    FAULTLINE_LOG_LEVEL: process.env.FAULTLINE_LOG_LEVEL ?? 'warn',
    FAULTLINE_LOG_FORMAT: 'json',
    FAULTLINE_SHUTDOWN_GRACE: '0s',
    // One process per spawned worker, so a test's kill hits the worker itself (the supervisor has its own tests).
    FAULTLINE_WORKER_PROCESSES: '1',
    ...options.envExtra,
  };
  const config = loadConfig(env, dir);
  const logger = createLogger({ level: config.logLevel, format: 'json', name: 'test-worker' });
  const connection = await Connection.connect({ address: server.address });
  const client = await FaultlineClient.connect({ config, connection });
  const workers: RunningWorker[] = [];
  const processes: WorkerProcess[] = [];
  let nativeConnection: NativeConnection | undefined;

  const startWorker = async (overrides: Partial<Config> = {}, options: StartWorkerOptions = {}): Promise<RunningWorker> => {
    // The runtime exists only while in-process workers do: it shuts down with the last one.
    installTemporalLogging(logger);
    nativeConnection ??= await NativeConnection.connect({ address: server.address });
    const { worker } = await createFaultlineWorker({
      config: { ...config, ...overrides },
      logger,
      connection: nativeConnection,
      workflowBundle: await workflowBundle(),
      crashProcess: () => {
        throw new Error('crash items need a worker process (spawnWorker)');
      },
      env,
      ...(options.activities ? { extraActivities: options.activities } : {}),
      ...(options.pipelines ? { pipelines: options.pipelines } : {}),
      ...(options.taskQueue ? { taskQueue: options.taskQueue } : {}),
    });
    const running = worker.run();
    const handle: RunningWorker = {
      worker,
      async stop() {
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await running;
      },
    };
    workers.push(handle);
    return handle;
  };

  const spawnWorker = (extraEnv: NodeJS.ProcessEnv = {}): WorkerProcess => {
    let stopped = false;
    let starts = 0;
    let logs = '';
    let current: ChildProcess;
    const launch = () => {
      starts += 1;
      current = spawn(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'worker'], { env: { ...env, ...extraEnv }, stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
      current.stderr?.on('data', (chunk: Buffer) => {
        logs += chunk.toString();
        if (process.env.FAULTLINE_TEST_VERBOSE) process.stderr.write(chunk);
      });
      const child = current;
      const killOnExit = () => child.kill('SIGKILL');
      process.once('exit', killOnExit);
      current.once('exit', () => {
        process.off('exit', killOnExit);
        if (!stopped) setTimeout(launch, 100);
      });
    };
    launch();
    const handle: WorkerProcess = {
      get current() {
        return current;
      },
      get starts() {
        return starts;
      },
      get logs() {
        return logs;
      },
      async stop() {
        stopped = true;
        if (current.exitCode === null && current.signalCode === null) {
          const gone = new Promise((resolve) => current.once('exit', resolve));
          current.kill('SIGTERM');
          const timer = setTimeout(() => current.kill('SIGKILL'), 10_000);
          await gone;
          clearTimeout(timer);
        }
      },
    };
    processes.push(handle);
    return handle;
  };

  return {
    server,
    config,
    client,
    connection,
    dir,
    env,
    startWorker,
    spawnWorker,
    async teardown() {
      await Promise.allSettled(workers.map((worker) => worker.stop()));
      await Promise.allSettled(processes.map((proc) => proc.stop()));
      await client.close();
      await connection.close();
      await nativeConnection?.close();
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export function syntheticSpec(items: JobSpec['items'], options: NonNullable<JobSpec['options']> = {}, extra: Partial<JobSpec> = {}): JobSpec {
  return { pipeline: 'synthetic', items, options, ...extra };
}

/** Waits until `check` is true, polling; fails after `timeoutMs`. */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Total history events of one workflow, read from the server. */
export async function historyLength(client: FaultlineClient, workflowId: string): Promise<number> {
  const history = await client.client.workflow.getHandle(workflowId).fetchHistory();
  return history.events?.length ?? 0;
}

export interface CliOutcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the `faultline` CLI as a user would; a non-zero exit is an outcome to check, not a throw. */
export function runCli(args: string[], options: ExecFileOptions): Promise<CliOutcome> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), ...args], { ...options, encoding: 'utf8' }, (error, stdout, stderr) => {
      // As execFile reports it: the exit code, or what stopped the command (a signal, a full buffer).
      resolve({ code: error ? (error.code as number) : 0, stdout, stderr });
    });
  });
}
