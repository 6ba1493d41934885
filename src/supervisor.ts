/**
 * `faultline worker --processes N` and `faultline dev`: N worker processes on one task queue.
 * Item work is JavaScript on one thread per process, so more processes are how a worker host
 * uses all its cores (Temporal's own answer: more workers polling the queue). A dead process is
 * restarted; one SIGINT/SIGTERM shuts every process down gracefully; a process whose supervisor
 * vanishes (SIGKILL) notices through its IPC channel and shuts itself down.
 */
import { metricsAddressFor } from './metrics';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ENV, type WorkerGcMode } from './shared/constants';
import type { Logger } from './logger';
import { prebuiltWorkflowBundle } from './workflow-bundle';
import { untilStopSignal } from './stop-signal';

const CLI = path.resolve(__dirname, '..', 'bin', 'faultline.js');
/** A process that lived this long before dying restarts at once; quicker deaths back off. */
const STABLE_AFTER_MS = 30_000;
const MAX_RESTART_DELAY_MS = 5_000;
/** A worker process that exits with this code cannot start as configured (search attributes, storage, credentials): restarting it would fail the same way. */
export const CONFIG_EXIT_CODE = 2;

export interface SupervisorOptions {
  processes: number;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  /** How long a process may take to hand its work back before it is killed. */
  shutdownGraceMs: number;
  /** V8 old-space limit of each process in MB (0: V8's default, which grows to a quarter of RAM before collecting hard). */
  maxHeapMb?: number;
  /** Where each process collects garbage (`FAULTLINE_WORKER_GC`; default auto). */
  gc?: WorkerGcMode;
}

/**
 * The V8 flags of each supervised process: its heap limit, and garbage collected on its main thread
 * when every core has a process of its own. V8's GC helper threads then only preempt the other
 * processes' items (cpu1ms, 2 processes on 2 cores, six pairs of runs taking turns: the workers'
 * other threads 0.4-0.5 → 0.2 s of CPU a run, 0.79× raw on average against 0.77×; BENCHMARKS.md).
 */
export function workerNodeFlags(options: { processes: number; maxHeapMb?: number; gc?: WorkerGcMode }, cores = os.availableParallelism()): string[] {
  const heap = options.maxHeapMb ? [`--max-old-space-size=${options.maxHeapMb}`] : [];
  const gc = options.gc ?? 'auto';
  const mainThreadGc = gc === 'main-thread' || (gc === 'auto' && options.processes >= cores);
  return [...heap, ...(mainThreadGc ? ['--single-threaded-gc'] : [])];
}

interface Slot {
  index: number;
  child?: ChildProcess;
  startedAt: number;
  quickDeaths: number;
  timer?: NodeJS.Timeout;
}

export class WorkerSupervisor {
  private readonly slots: Slot[] = [];
  private stopping = false;
  private bundleDir: string | undefined;
  private bundle: string | undefined;
  /** Processes restarted after dying (crash items, OOM, kill -9). */
  restarts = 0;
  /** Set when a process exited for a configuration reason: the supervisor stops instead of restarting. */
  configurationExit: Promise<number>;
  private onConfigurationExit: (code: number) => void = () => undefined;

  constructor(private readonly options: SupervisorOptions) {
    this.configurationExit = new Promise((resolve) => (this.onConfigurationExit = resolve));
  }

  /** Builds the workflow bundle once (unless prebuilt) and starts every process. */
  async start(): Promise<void> {
    this.bundle = prebuiltWorkflowBundle();
    if (!this.bundle) {
      const started = performance.now();
      this.bundleDir = await mkdtemp(path.join(os.tmpdir(), 'faultline-bundle-'));
      // In a short-lived process: webpack would keep ~200 MB in the supervisor for its whole life.
      this.bundle = await this.bundleInChild(path.join(this.bundleDir, 'workflow-bundle.js'));
      if (!this.bundle) {
        this.stopping = true; // interrupted while bundling: start nothing
        await rm(this.bundleDir, { recursive: true, force: true });
        return;
      }
      this.options.logger.debug({ ms: Math.round(performance.now() - started) }, 'workflow bundle built once for all worker processes');
    }
    for (let index = 0; index < this.options.processes; index++) {
      const slot: Slot = { index, startedAt: 0, quickDeaths: 0 };
      this.slots.push(slot);
      this.launch(slot);
    }
    this.options.logger.info({ processes: this.options.processes }, 'worker processes started');
  }

  /** Undefined when Ctrl-C (SIGINT/SIGTERM to the group) stopped the bundler: the caller is stopping anyway. */
  private async bundleInChild(file: string): Promise<string | undefined> {
    const child = spawn(process.execPath, [CLI, 'bundle', file], { stdio: ['ignore', 'inherit', 'inherit'], env: this.options.env ?? process.env });
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    if (signal === 'SIGINT' || signal === 'SIGTERM') return undefined;
    if (code !== 0) throw new Error(`building the workflow bundle failed (exit ${code ?? signal})`);
    return file;
  }

  /** Live worker process ids (chaos tests pick their victims here). */
  pids(): number[] {
    return this.slots.flatMap((slot) => (slot.child?.pid !== undefined && slot.child.exitCode === null && slot.child.signalCode === null ? [slot.child.pid] : []));
  }

  private launch(slot: Slot): void {
    if (this.stopping) return;
    const parent = this.options.env ?? process.env;
    // Each process serves its own /metrics: the N-th on the configured port + N.
    const metricsAddress = parent[ENV.metricsAddress];
    const metrics = metricsAddress ? { [ENV.metricsAddress]: metricsAddressFor(metricsAddress, slot.index) } : {};
    const env = { ...parent, [ENV.workerProcesses]: '1', ...metrics, ...(this.bundle ? { [ENV.workflowBundle]: this.bundle } : {}) };
    const flags = workerNodeFlags(this.options);
    // Extra node flags for the worker processes only, e.g. `--cpu-prof` (not allowed in NODE_OPTIONS).
    const nodeArgs = ((this.options.env ?? process.env)[ENV.workerNodeArgs] ?? '').split(' ').filter(Boolean);
    const child = spawn(process.execPath, [...flags, ...nodeArgs, CLI, 'worker', '--processes', '1'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env });
    slot.child = child;
    slot.startedAt = Date.now();
    child.once('exit', (code, signal) => {
      if (this.stopping) return;
      if (code === CONFIG_EXIT_CODE) {
        // The process said why on stderr (one line); the same start would fail again.
        this.onConfigurationExit(code);
        return;
      }
      this.restarts += 1;
      slot.quickDeaths = Date.now() - slot.startedAt >= STABLE_AFTER_MS ? 0 : slot.quickDeaths + 1;
      const delay = Math.min(MAX_RESTART_DELAY_MS, 250 * slot.quickDeaths);
      this.options.logger.warn({ process: slot.index, code, signal, restarts: this.restarts }, `worker process exited; restarting in ${delay} ms`);
      slot.timer = setTimeout(() => this.launch(slot), delay);
    });
  }

  /** SIGTERM to every process (each hands its in-flight work back), SIGKILL after the grace time. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await Promise.all(
      this.slots.map(async (slot) => {
        clearTimeout(slot.timer);
        const child = slot.child;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), this.options.shutdownGraceMs + 15_000);
        await gone;
        clearTimeout(timer);
      }),
    );
    if (this.bundleDir) await rm(this.bundleDir, { recursive: true, force: true });
    this.options.logger.info({ processes: this.slots.length }, 'worker processes stopped');
  }
}

/**
 * Runs a supervisor until SIGINT/SIGTERM (`faultline worker --processes N`). Returns the exit code:
 * 0 after a stop signal, CONFIG_EXIT_CODE when a process could not start as configured.
 */
export async function superviseWorkers(options: SupervisorOptions): Promise<number> {
  const supervisor = new WorkerSupervisor(options);
  const signal = untilStopSignal((repeated) => options.logger.info({ signal: repeated }, 'already shutting down'));
  await supervisor.start();
  const ended = await Promise.race([signal.stopped.then(() => 0), supervisor.configurationExit]);
  if (ended === 0) options.logger.info('shutting down worker processes gracefully; in-flight batches are handed back');
  await supervisor.stop();
  signal.release();
  return ended;
}
