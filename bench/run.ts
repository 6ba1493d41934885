/**
 * `npm run bench [-- --json] [-- --quick] [-- --stack]`: raw work vs a naive Temporal workflow vs
 * Faultline, same items and work function, one dev server started here on a free port for the
 * whole run. `--stack` also runs the scale workloads on the production-like stack (PostgreSQL +
 * the Temporal server built from its Go module + MinIO job storage), with PostgreSQL's CPU, rows
 * and WAL bytes per item beside the server's.
 */
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { createInterface } from 'node:readline';
import { Client, Connection } from '@temporalio/client';
import { Queue } from 'bullmq';
import { DBOS, DBOSClient } from '@dbos-inc/dbos-sdk';
import { NativeConnection, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { FaultlineClient } from '../src/client';
import { createFaultlineWorker } from '../src/worker';
import { loadConfig } from '../src/config';
import { ENV, limiterWorkflowId } from '../src/shared';
import { ensureTemporalCli, freePort, startDevServer } from '../src/devserver/temporal-cli';
import { createLogger, installTemporalLogging } from '../src/logger';
import { startLocalS3 } from '../scripts/minio';
import { S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { psql, stackLayout, stackWorkerSettings, startStack, startStackPostgres, stopStack } from '../scripts/stack';
import { createNaiveActivities } from './naive-activities';
import type { RawShare } from './raw-worker';
import type { BullmqItem } from './bullmq-worker';
import { DBOS_BENCH, type DbosItem } from './dbos-worker';

const json = process.argv.includes('--json');
const quick = process.argv.includes('--quick');
/** `--only=cpu1ms,latency` runs just those workloads. */
const only = process.argv
  .find((arg) => arg.startsWith('--only='))
  ?.slice(7)
  .split(',');
const wanted = (name: string) => !only || only.includes(name);
/** `--modes=faultline` skips the baselines (e.g. repeated A/B runs of one workload). */
const modes = process.argv
  .find((arg) => arg.startsWith('--modes='))
  ?.slice(8)
  .split(',');
const modeWanted = (name: string) => !modes || modes.includes(name);
const onStack = process.argv.includes('--stack');
/**
 * `--from-source`: the Faultline workers and CLI processes run the TypeScript sources through tsx,
 * as in a clone (before 2026-12-06 15:00 UTC, always). Default: what the package ships, `dist/`
 * built first (`npm run build`, ~11 s): tsx's per-function name helpers and its load hooks are no
 * part of a user's worker.
 */
const fromSource = process.argv.includes('--from-source');
/** `--worker-log=FILE` appends the Faultline workers' log (JSON lines) to FILE. */
const workerLogFile = process.argv.find((arg) => arg.startsWith('--worker-log='))?.slice(13);
/** `--cpu1ms-batch=300`: cpu1ms's job sets `options.batchSize` (default: the engine's sizing, 79 items for 5,000). */
const cpuBatch = Number(process.argv.find((arg) => arg.startsWith('--cpu1ms-batch='))?.slice(15)) || undefined;
/** `--cpu1ms-pipeline=synthetic`: cpu1ms's Faultline job runs the built-in synthetic pipeline, which does not declare `work: 'cpu'` (default: bench-cpu, which does). */
const cpuPipeline = process.argv.find((arg) => arg.startsWith('--cpu1ms-pipeline='))?.slice(18) || 'bench-cpu';
/** `--cpu1ms-items=20000`: cpu1ms's item count (default 5,000 × the --quick scale): a longer run weighs the job's fixed way in and out less. */
const cpuItemsArg = Number(process.argv.find((arg) => arg.startsWith('--cpu1ms-items='))?.slice(15)) || undefined;
/** `--cpu1ms-shard=5000`: cpu1ms's job sets `options.shardSize` (items per slice; default: the engine's sizing, 1,580 for 5,000). */
const cpuShard = Number(process.argv.find((arg) => arg.startsWith('--cpu1ms-shard='))?.slice(15)) || undefined;
/**
 * `--dump-histories=DIR`: each Faultline job's history and its slices' (JSON events, one file per
 * workflow) and `<jobId>.times.json` (epoch ms of client.start and of the result held), to read
 * where a job's time went (BENCHMARKS.md "Where a cpu1ms run's time goes").
 */
const dumpHistoriesTo = process.argv.find((arg) => arg.startsWith('--dump-histories='))?.slice(17);
if (dumpHistoriesTo) mkdirSync(dumpHistoriesTo, { recursive: true });
/** scale10m: how often `progress` is asked while the job runs (`--progress-every=MS`, default 5 s). */
const progressEveryMs = Number(process.argv.find((arg) => arg.startsWith('--progress-every='))?.slice(17)) || 5_000;
/** scale10m: where its NDJSON file is (`--items-in=s3`: a MinIO bucket, job storage there too, as on the stack; default: a folder). */
const itemsIn = process.argv.find((arg) => arg.startsWith('--items-in='))?.slice(11) ?? 'folder';
if (itemsIn !== 'folder' && itemsIn !== 's3') throw new Error(`--items-in is folder or s3, not "${itemsIn}"`);
/** The workloads `--stack` runs on the stack too. */
const STACK_WORKLOADS = ['scale10k', 'scale100k', 'scale1m'];
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
  /** Peak resident memory of the processes doing the work, summed (raw: its processes; faultline: the supervisor and its worker processes; naive: the bench process hosting its worker). */
  peakRssMb: number;
  items: number;
  /** Processes doing the work. */
  workers: number;
  /** CPU seconds used during the run: by the work processes, the Temporal server and the bench process (client, naive worker). */
  cpuSeconds: Record<string, number>;
  outcome?: string;
  /** Largest history of the job or any of its slice runs, in bytes (the server's limit is 50 MB). */
  maxHistoryBytes?: number;
  /** History bytes of the job and every run of its slices, per item. */
  historyBytesPerItem?: number;
  /** Temporal server CPU per item, in microseconds. */
  serverCpuUsPerItem?: number;
  /** `--stack`: PostgreSQL's CPU per item (µs), rows it inserted, updated or deleted per item, and WAL bytes it wrote per item. */
  postgresCpuUsPerItem?: number;
  postgresRowsPerItem?: number;
  postgresWalBytesPerItem?: number;
  /** CPU seconds of the work processes by thread kind (Faultline's worker processes: JS main thread, V8 helpers, libuv pool, SDK core threads). */
  workCpuByThread?: Record<string, number>;
  /** scale1m, scale10m: how long `progress` took while the job ran (asked every `--progress-every` ms, default 5 s); `over200` of them took over 200 ms. */
  progress?: { samples: number; p50Ms: number; p90Ms: number; maxMs: number; over200: number; error?: string };
  /** scale10m: where the items were read from (`folder` or `s3`). */
  itemsIn?: string;
  /** scale10m: how long `client.start` took (a folder's file is checked and copied into job storage by the client; an s3:// one by a worker, after the start). */
  startMs?: number;
  /** scale10m: from the job's start to its first slice's (the workers' check or import of the items file). */
  prepareMs?: number;
  /** scale10m, after the job: `faultline result --outputs` (records printed) and `faultline export` (records written), each a CLI process of its own. */
  readBack?: Record<'outputs' | 'export', CliRun & { records: number }>;
}

/** A `faultline` CLI process the bench ran: wall time, peak resident memory (VmHWM), bytes it printed. */
interface CliRun {
  exitCode: number | null;
  elapsedMs: number;
  peakRssMb: number;
  stdoutBytes: number;
}

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** Runs `faultline <args>`, counting what it prints (lines through `onLine`) without keeping it, and sampling its peak memory. */
async function runCli(args: string[], env: NodeJS.ProcessEnv, cwd: string, onLine: (line: string) => void = () => undefined): Promise<CliRun> {
  const started = performance.now();
  const child = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'faultline.js'), ...args], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let peakKb = 0;
  const highWater = () => {
    try {
      peakKb = Math.max(peakKb, Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0));
    } catch {
      // exited
    }
  };
  const sampler = setInterval(highWater, 100);
  let stdoutBytes = 0;
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4_000)));
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (line) => {
    stdoutBytes += Buffer.byteLength(line) + 1;
    onLine(line);
  });
  const [exitCode] = (await once(child, 'exit')) as [number | null];
  clearInterval(sampler);
  if (exitCode !== 0 && exitCode !== 3) throw new Error(`faultline ${args.join(' ')} exited ${exitCode}: ${stderr.trim().slice(-1_000)}`);
  return { exitCode, elapsedMs: Math.round(performance.now() - started), peakRssMb: Math.round(peakKb / 1024), stdoutBytes };
}

/**
 * A process and all its descendants (read from /proc), as of at most a second ago: a fresh look
 * reads every process's stat (~4 ms with ~90 processes here), and the samplers look several times
 * every 200 ms — ~0.2 core-seconds of the bench's own during a 3 s cpu1ms run, taken from the
 * Faultline workers' cores (raw's processes are known by pid and cost nothing to find).
 */
const trees = new Map<number, { at: number; pids: number[] }>();
function processTree(root: number): number[] {
  const known = trees.get(root);
  const now = performance.now();
  if (known && now - known.at < 1_000) return known.pids;
  const pids = scanProcessTree(root);
  trees.set(root, { at: now, pids });
  return pids;
}

function scanProcessTree(root: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // ended while we looked
    }
  }
  const tree = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, ppid] of parents) {
      if (!tree.has(pid) && tree.has(ppid)) {
        tree.add(pid);
        grew = true;
      }
    }
  }
  return [...tree];
}

function sumOver(pids: number[], read: (pid: number) => number): number {
  let total = 0;
  for (const pid of pids) {
    try {
      total += read(pid);
    } catch {
      // ended
    }
  }
  return total;
}
const rssOf = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
/** CPU seconds (user + system) a process has used so far. */
const cpuOf = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
};

interface Layout {
  workers: number;
  /** Memory of the processes doing the work. */
  rss: () => number;
  /** CPU seconds so far of each party worth naming (work processes, Temporal server, this bench process). */
  cpu: () => Record<string, number>;
  /** The work processes, sampled one by one: one that exits or is restarted mid-run keeps the CPU it used. */
  workPids?: () => number[];
  /** The same for the backend's processes when they come and go (PostgreSQL backends of a peer's connections): its CPU is then `server`. */
  serverPids?: () => number[];
}

/**
 * CPU of a changing set of processes over a run, by thread: each thread's last sample minus its
 * first (0 for threads born during the run), so a process that exits or restarts keeps what it used.
 * Threads are grouped by their kind (Linux thread name, numbers dropped): the JS main thread
 * (`node`), V8's helpers (`V8 DefaultWorke`: GC, compilation), libuv's pool (`libuv-worker`), and the
 * Temporal SDK core's Rust threads (`tokio-runtime-w` and others).
 */
function workCpuTracker(pids: () => number[]): { sample(): void; seconds(): number; byThread(): Record<string, number> } {
  const first = new Map<string, number>();
  const last = new Map<string, { kind: string; seconds: number }>();
  let initial = true;
  return {
    sample() {
      for (const pid of pids()) {
        let tids: string[];
        try {
          tids = readdirSync(`/proc/${pid}/task`);
        } catch {
          continue; // gone between listing and reading
        }
        for (const tid of tids) {
          let stat: string;
          try {
            stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
          } catch {
            continue;
          }
          const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
          const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
          const seconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
          const key = `${pid}/${tid}`;
          if (!first.has(key)) first.set(key, initial ? seconds : 0);
          last.set(key, { kind: tid === String(pid) ? 'node (JS main thread)' : name.replace(/[\d#]+$/, '').trim() || name, seconds });
        }
      }
      initial = false;
    },
    seconds() {
      let total = 0;
      for (const [key, { seconds }] of last) total += seconds - (first.get(key) ?? 0);
      return total;
    },
    byThread() {
      const kinds: Record<string, number> = {};
      for (const [key, { kind, seconds }] of last) kinds[kind] = (kinds[kind] ?? 0) + seconds - (first.get(key) ?? 0);
      return Object.fromEntries(
        Object.entries(kinds)
          .filter(([, seconds]) => seconds >= 0.05)
          .sort((a, b) => b[1] - a[1])
          .map(([kind, seconds]) => [kind, Math.round(seconds * 10) / 10]),
      );
    },
  };
}

/** Samples memory and CPU of the processes doing the work while `fn` runs. */
/**
 * The bench's own heap, collected before each measured run: reading the histories of the runs
 * before it for their reports leaves garbage, whose collection (~60 ms of major GC on this
 * machine's two cores, right after a job started) would otherwise fall into the next measured run.
 */
v8.setFlagsFromString('--expose-gc');
const collectBenchGarbage = vm.runInNewContext('gc') as () => void;

/**
 * Waits until the work processes and the Temporal server are quiet (under a tenth of a core over
 * 250 ms, for at most 5 s): what a run before left going (the server after a naive run's 15,000
 * events, a peer's cleanup) would otherwise be counted against the next one.
 */
async function settle(layout: Layout): Promise<void> {
  const busy = (cpu: Record<string, number>) => (cpu.work ?? 0) + (cpu.server ?? 0);
  for (const deadline = performance.now() + 5_000; performance.now() < deadline;) {
    const before = busy(layout.cpu());
    await new Promise((resolve) => setTimeout(resolve, 250));
    if ((busy(layout.cpu()) - before) / 0.25 < 0.1) return;
  }
}

async function measure(
  items: number,
  layout: Layout,
  fn: (finished: () => void) => Promise<{ completed: boolean; events: number | null; outcome?: string; maxHistoryBytes?: number; historyBytes?: number; elapsedMs?: number; workCpuSeconds?: number }>,
): Promise<ModeResult> {
  await settle(layout);
  collectBenchGarbage();
  let peak = layout.rss();
  const cpuBefore = layout.cpu();
  const work = layout.workPids ? workCpuTracker(layout.workPids) : undefined;
  const backend = layout.serverPids ? workCpuTracker(layout.serverPids) : undefined;
  work?.sample();
  backend?.sample();
  const timer = setInterval(() => {
    peak = Math.max(peak, layout.rss());
    work?.sample();
    backend?.sample();
  }, 200);
  let cpuAfter: Record<string, number> | undefined;
  // CPU counts until the job's user holds the result: reading histories for the report afterwards is the bench's own work.
  const finished = () => {
    if (cpuAfter) return;
    peak = Math.max(peak, layout.rss());
    work?.sample();
    backend?.sample();
    cpuAfter = layout.cpu();
    clearInterval(timer);
  };
  const started = performance.now();
  try {
    const { completed, events, outcome, maxHistoryBytes, historyBytes, elapsedMs: measured, workCpuSeconds } = await fn(finished);
    const elapsedMs = measured ?? Math.round(performance.now() - started);
    finished();
    const cpuUsed = Object.fromEntries(Object.entries(cpuAfter ?? {}).map(([party, seconds]) => [party, seconds - (cpuBefore[party] ?? 0)]));
    if (backend) cpuUsed.server = backend.seconds();
    const cpuSeconds = Object.fromEntries(Object.entries(cpuUsed).map(([party, seconds]) => [party, Math.round(seconds * 10) / 10]));
    if (work) cpuSeconds.work = Math.round(work.seconds() * 10) / 10;
    const workThreads = work?.byThread();
    // Work processes that exit before the end (raw) told their own CPU.
    if (workCpuSeconds !== undefined) cpuSeconds.work = Math.round(workCpuSeconds * 10) / 10;
    return {
      itemsPerSec: Math.round((items / (elapsedMs / 1000)) * 10) / 10,
      elapsedMs,
      completed,
      eventsPerItem: events === null ? null : Math.round((events / items) * 1000) / 1000,
      peakRssMb: Math.round(peak / 1024 / 1024),
      items,
      workers: layout.workers,
      cpuSeconds,
      ...(outcome ? { outcome } : {}),
      ...(maxHistoryBytes !== undefined ? { maxHistoryBytes } : {}),
      ...(historyBytes !== undefined ? { historyBytesPerItem: Math.round((historyBytes / items) * 10) / 10 } : {}),
      ...(cpuUsed.server !== undefined ? { serverCpuUsPerItem: Math.round((cpuUsed.server * 1e6) / items) } : {}),
      ...(cpuUsed.postgres !== undefined ? { postgresCpuUsPerItem: Math.round((cpuUsed.postgres * 1e6) / items) } : {}),
      ...(workThreads && Object.keys(workThreads).length > 0 ? { workCpuByThread: workThreads } : {}),
    };
  } finally {
    clearInterval(timer);
  }
}

/** The raw baseline on every core: one forked process per core, each with an equal share of the items; timed from "go" (all processes loaded) to the last one done. */
async function runRaw(
  kind: RawShare['kind'],
  count: number,
  processes: number,
  rss: { pids: number[] },
  share: Omit<RawShare, 'kind' | 'from' | 'to'>,
): Promise<{ completed: boolean; events: null; elapsedMs: number; workCpuSeconds: number }> {
  const children: ChildProcess[] = Array.from({ length: processes }, () =>
    fork(path.join(__dirname, 'raw-worker.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  );
  rss.pids = children.flatMap((child) => (child.pid === undefined ? [] : [child.pid]));
  await Promise.all(children.map((child) => new Promise((resolve) => child.once('message', resolve))));
  const started = performance.now();
  let done = 0;
  let workCpuSeconds = 0;
  await Promise.all(
    children.map((child, index) => {
      const from = Math.floor((count * index) / processes);
      const to = Math.floor((count * (index + 1)) / processes);
      return new Promise<void>((resolve, reject) => {
        child.once('message', (message: { done: number; cpuSeconds?: number }) => {
          done += message.done;
          workCpuSeconds += message.cpuSeconds ?? 0;
          resolve();
        });
        child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`raw process exited with ${code}`))));
        child.send({ kind, from, to, ...share } satisfies RawShare);
      });
    }),
  );
  const elapsedMs = Math.round(performance.now() - started);
  await Promise.all(children.map((child) => (child.exitCode === null ? new Promise((resolve) => child.once('exit', resolve)) : undefined)));
  rss.pids = [];
  return { completed: done === count, events: null, elapsedMs, workCpuSeconds };
}

/** Redis for the `bullmq` peer, durable as its users run it (append-only file, fsync every second); undefined when `redis-server` is not installed. */
async function startRedis(dir: string, say: (line: string) => void): Promise<{ port: number; pid: number; stop(): Promise<void> } | undefined> {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
  } catch {
    say('bullmq: skipped, redis-server is not installed (Debian: apt-get install redis-server)');
    return undefined;
  }
  const port = await freePort();
  const data = path.join(dir, 'redis');
  mkdirSync(data, { recursive: true });
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', data, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--maxmemory-policy', 'noeviction'],
    {
      stdio: 'ignore',
    },
  );
  process.once('exit', () => child.kill('SIGKILL'));
  for (const deadline = Date.now() + 20_000; ;) {
    try {
      if (execFileSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).trim() === 'PONG') break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error('redis-server did not answer in 20 s');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    port,
    pid: child.pid ?? -1,
    async stop() {
      const gone = once(child, 'exit');
      child.kill('SIGTERM');
      await gone;
    },
  };
}

/** The `bullmq` peer: one BullMQ worker process per core on one queue, the items added in bulk, timed from the first add to the last job completed. */
async function runBullmq(
  kind: BullmqItem['kind'],
  count: number,
  redisPort: number,
  processes: number,
  pids: { pids: number[] },
  share: Omit<BullmqItem, 'kind' | 'id'>,
): Promise<{ completed: boolean; events: null; outcome?: string }> {
  const connection = { host: '127.0.0.1', port: redisPort };
  const queue = new Queue<BullmqItem>('bench', { connection });
  await queue.obliterate({ force: true });
  const children: ChildProcess[] = Array.from({ length: processes }, () =>
    fork(path.join(__dirname, 'bullmq-worker.ts'), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, BENCH_REDIS_PORT: String(redisPort), BENCH_BULLMQ_CONCURRENCY: kind === 'thumbnail' ? '4' : '1' },
    }),
  );
  pids.pids = children.flatMap((child) => (child.pid === undefined ? [] : [child.pid]));
  try {
    await Promise.all(children.map((child) => new Promise((resolve) => child.once('message', resolve))));
    for (let from = 0; from < count; from += 1_000) {
      await queue.addBulk(Array.from({ length: Math.min(1_000, count - from) }, (_, i) => ({ name: kind, data: { kind, id: `q${from + i}`, ...share } })));
    }
    for (;;) {
      const counts = await queue.getJobCounts('completed', 'failed');
      if ((counts.completed ?? 0) + (counts.failed ?? 0) >= count) return { completed: counts.completed === count, events: null, ...(counts.failed ? { outcome: `${counts.failed} failed` } : {}) };
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    await Promise.all(children.map((child) => (child.exitCode === null ? (child.kill('SIGTERM'), once(child, 'exit')) : undefined)));
    pids.pids = [];
    await queue.obliterate({ force: true });
    await queue.close();
  }
}

/** The `dbos` peer: one DBOS process per core on one queue of a fresh system database, every item a workflow enqueued by a DBOSClient, timed from the first enqueue to the last workflow done. */
async function runDbos(
  kind: DbosItem['kind'],
  count: number,
  postgres: ReturnType<typeof startStackPostgres>,
  processes: number,
  pids: { pids: number[] },
  share: Omit<DbosItem, 'kind' | 'id'>,
): Promise<{ completed: boolean; events: null; outcome?: string }> {
  const url = `postgresql://postgres@127.0.0.1:${postgres.pgPort}/dbos_bench`;
  psql(postgres, 'postgres', 'DROP DATABASE IF EXISTS dbos_bench WITH (FORCE)');
  // DBOS.migrate prints its progress on stdout, which `--json` keeps for the report alone.
  const print = console.log;
  console.log = (...args: unknown[]) => console.error(...args);
  try {
    await DBOS.migrate(url);
  } finally {
    console.log = print;
  }
  const children: ChildProcess[] = Array.from({ length: processes }, () =>
    fork(path.join(__dirname, 'dbos-worker.ts'), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, BENCH_DBOS_URL: url },
    }),
  );
  pids.pids = children.flatMap((child) => (child.pid === undefined ? [] : [child.pid]));
  const client = await DBOSClient.create({ systemDatabaseUrl: url, applicationName: DBOS_BENCH.name });
  try {
    await Promise.all(children.map((child) => new Promise((resolve) => child.once('message', resolve))));
    // No bulk enqueue in DBOS: 32 at a time.
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        for (let i = next++; i < count; i = next++) {
          const item: DbosItem = { kind, id: `d${i}`, ...share };
          await client.enqueue({ queueName: DBOS_BENCH.queue, workflowName: DBOS_BENCH.workflow, appVersion: DBOS_BENCH.version }, item);
        }
      }),
    );
    for (;;) {
      const [done = 0, failed = 0] = psql(postgres, 'dbos_bench', "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), count(*) FILTER (WHERE status = 'ERROR') FROM dbos.workflow_status")
        .split('|')
        .map(Number);
      if (done + failed >= count) return { completed: done === count, events: null, ...(failed ? { outcome: `${failed} failed` } : {}) };
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  } finally {
    await Promise.all(children.map((child) => (child.exitCode === null ? (child.kill('SIGTERM'), once(child, 'exit')) : undefined)));
    pids.pids = [];
    await client.destroy();
  }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-bench-'));
  if (!fromSource) {
    say('building the package (npm run build; --from-source runs the sources through tsx instead)');
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: ['ignore', 2, 2] });
  }
  const server = await startDevServer({ ui: false, log: say });
  const env = {
    ...process.env,
    ...(fromSource ? {} : { [ENV.fromDist]: '1' }),
    TEMPORAL_ADDRESS: server.address,
    FAULTLINE_TASK_QUEUE: 'faultline-bench',
    FAULTLINE_STORAGE: path.join(dir, 'storage'),
    FAULTLINE_ALLOWED_ROOTS: [dir, path.dirname(SOURCE)].join(path.delimiter),
    FAULTLINE_LOG_LEVEL: 'error',
    // The ratelimit workload's receiver is on 127.0.0.1.
    FAULTLINE_ALLOWED_HOSTS: '127.0.0.1',
    // cpu1ms's pipeline, declared CPU-bound as its users would (`work: 'cpu'`).
    FAULTLINE_PIPELINES: path.join(__dirname, 'cpu-pipeline.ts'),
  };
  const config = loadConfig(env, dir);
  installTemporalLogging(createLogger({ level: 'error', format: 'json' }));
  const cores = os.availableParallelism();
  // The naive baseline: one plain worker in this process, as a user would write it.
  const native = await NativeConnection.connect({ address: server.address });
  const naiveQueue = 'faultline-bench-naive';
  const naiveWorker = await Worker.create({
    connection: native,
    taskQueue: naiveQueue,
    workflowBundle: await bundleWorkflowCode({ workflowsPath: require.resolve('./naive-workflow'), logger: { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} } }),
    activities: createNaiveActivities({ source: SOURCE, outDir: path.join(dir, 'naive-out') }),
  });
  const naiveRunning = naiveWorker.run();
  const processes = config.workerProcesses;
  const serverPid = server.process.pid ?? -1;
  const parties = (work: () => number[]) => () => ({ work: sumOver(work(), cpuOf), server: sumOver(processTree(serverPid), cpuOf), bench: cpuOf(process.pid) });
  // Faultline: its default layout, `faultline worker` (one process per core under a supervisor).
  const startWorkers = async (workerEnv: NodeJS.ProcessEnv): Promise<{ supervisor: ChildProcess; layout: Layout }> => {
    let workerLog = '';
    const supervisor = spawn(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'worker'], {
      env: { ...workerEnv, FAULTLINE_LOG_LEVEL: 'info', FAULTLINE_LOG_FORMAT: 'json' },
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const keepLog = workerLogFile ? createWriteStream(workerLogFile, { flags: 'a' }) : undefined;
    supervisor.stderr?.on('data', (chunk: Buffer) => {
      keepLog?.write(chunk);
      workerLog = (workerLog + chunk.toString()).slice(-100_000);
    });
    process.once('exit', () => supervisor.kill('SIGKILL'));
    for (const deadline = Date.now() + 120_000; (workerLog.match(/"worker started"/g) ?? []).length < processes;) {
      if (Date.now() > deadline || supervisor.exitCode !== null) throw new Error(`faultline workers did not start: ${workerLog.slice(-2_000)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // Worker RSS is the worker processes only; the supervisor (a few MB of its own, more under tsx in a clone) is reported apart.
    const workerPids = () => processTree(supervisor.pid ?? -1).filter((pid) => pid !== supervisor.pid);
    const tree = () => processTree(supervisor.pid ?? -1);
    return { supervisor, layout: { workers: processes, rss: () => sumOver(workerPids(), rssOf), cpu: parties(tree), workPids: tree } };
  };
  const stopWorkers = async (supervisor: ChildProcess) => {
    const gone = new Promise((resolve) => supervisor.once('exit', resolve));
    supervisor.kill('SIGTERM');
    await gone;
  };
  const { supervisor: faultlineWorkers, layout: faultlineLayout } = await startWorkers(env);
  say(`faultline worker: ${processes} processes; raw: ${cores} processes; naive: one worker`);
  // What the server spends with nothing to do (its own timers, pollers waiting): part of every run's server CPU.
  const idleFrom = { cpu: sumOver(processTree(serverPid), cpuOf), at: performance.now() };
  await new Promise((resolve) => setTimeout(resolve, 10_000));
  const serverIdleCores = Math.round(((sumOver(processTree(serverPid), cpuOf) - idleFrom.cpu) / ((performance.now() - idleFrom.at) / 1000)) * 1000) / 1000;
  say(`Temporal server idle: ${serverIdleCores} cores`);
  const naiveLayout: Layout = { workers: 1, rss: () => process.memoryUsage().rss, cpu: parties(() => []) };
  const rawPids = { pids: [] as number[] };
  // Raw processes are gone when the run ends: they report their own CPU (runRaw's workCpuSeconds).
  const rawLayout: Layout = { workers: cores, rss: () => sumOver(rawPids.pids, rssOf), cpu: parties(() => []) };
  // The BullMQ peer: its worker processes do the work, Redis is its durable backend (its "server").
  const redis = modeWanted('bullmq') && ['cpu1ms', 'thumbnails', 'scale100k'].some(wanted) ? await startRedis(dir, say) : undefined;
  const bullmqPids = { pids: [] as number[] };
  const bullmqLayout: Layout = {
    workers: cores,
    rss: () => sumOver(bullmqPids.pids, rssOf),
    cpu: () => ({ server: redis ? sumOver([redis.pid], cpuOf) : 0, bench: cpuOf(process.pid) }),
    workPids: () => bullmqPids.pids,
  };
  // The DBOS peer: its processes do the work, PostgreSQL is its durable backend.
  const dbosPostgresOptions = { dir: path.join(os.tmpdir(), 'faultline-bench-dbos'), pgPort: await freePort() };
  let dbosPostgres: ReturnType<typeof startStackPostgres> | undefined;
  if (modeWanted('dbos') && ['cpu1ms', 'thumbnails', 'scale100k'].some(wanted)) {
    rmSync(dbosPostgresOptions.dir, { recursive: true, force: true });
    mkdirSync(dbosPostgresOptions.dir, { recursive: true, mode: 0o755 }); // PostgreSQL runs as its own user and must reach its folder
    dbosPostgres = startStackPostgres(dbosPostgresOptions);
  }
  const dbosPids = { pids: [] as number[] };
  const postmasterOf = (layout: ReturnType<typeof stackLayout>) => Number(readFileSync(path.join(layout.pgData, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const dbosLayout: Layout = {
    workers: cores,
    rss: () => sumOver(dbosPids.pids, rssOf),
    cpu: () => ({ bench: cpuOf(process.pid) }),
    workPids: () => dbosPids.pids,
    // Each DBOS process's connections have their own backends, gone when it exits: sampled while they live.
    serverPids: () => (dbosPostgres ? processTree(postmasterOf(dbosPostgres)) : []),
  };
  const dbos = async (kind: DbosItem['kind'], count: number): Promise<Record<string, ModeResult>> =>
    dbosPostgres ? { dbos: await measure(count, dbosLayout, () => runDbos(kind, count, dbosPostgres, cores, dbosPids, { source: SOURCE, outDir: path.join(dir, 'dbos-out') })) } : {};
  const bullmq = async (kind: BullmqItem['kind'], count: number): Promise<Record<string, ModeResult>> =>
    redis ? { bullmq: await measure(count, bullmqLayout, () => runBullmq(kind, count, redis.port, cores, bullmqPids, { source: SOURCE, outDir: path.join(dir, 'bullmq-out') })) } : {};
  let supervisorPeakRss = 0;
  const supervisorSampler = setInterval(() => (supervisorPeakRss = Math.max(supervisorPeakRss, sumOver([faultlineWorkers.pid ?? -1], rssOf))), 1_000);
  const connection = await Connection.connect({ address: server.address });
  const raw = new Client({ connection });
  const client = await FaultlineClient.connect({ config, connection });

  const historyEvents = async (workflowId: string, withChildren: boolean, temporal: Client = raw): Promise<number> => {
    let total = (await temporal.workflow.getHandle(workflowId).fetchHistory()).events?.length ?? 0;
    if (withChildren) {
      for await (const child of temporal.workflow.list({ query: `WorkflowId STARTS_WITH '${workflowId}/'` })) {
        total += (await temporal.workflow.getHandle(child.workflowId, child.runId).fetchHistory()).events?.length ?? 0;
        // continued-as-new runs of shards share the id; count every run
      }
    }
    return total;
  };

  /** From a job's start to its first slice's start: what the workers spend preparing it (the items file checked or imported). */
  const untilFirstSlice = async (jobId: string): Promise<number | undefined> => {
    const runs: { runId: string; startTime: Date }[] = [];
    for await (const run of raw.workflow.list({ query: `WorkflowId = '${jobId}'` })) runs.push(run);
    const first = runs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime())[0];
    if (!first) return undefined;
    const events = (await raw.workflow.getHandle(jobId, first.runId).fetchHistory()).events ?? [];
    const at = (event: (typeof events)[number] | undefined) => (event?.eventTime ? Number(event.eventTime.seconds) * 1000 + Math.round((event.eventTime.nanos ?? 0) / 1e6) : undefined);
    const started = at(events[0]);
    const sliced = at(events.find((event) => event.startChildWorkflowExecutionInitiatedEventAttributes));
    return started === undefined || sliced === undefined ? undefined : sliced - started;
  };

  /** The largest history of the job and its slice runs, and all of their histories' bytes together. */
  const historySizes = async (workflowId: string, temporal: Client = raw): Promise<{ largest: number; total: number }> => {
    const size = async (id: string, runId?: string) => Number((await temporal.workflow.getHandle(id, runId).describe()).raw.workflowExecutionInfo?.historySizeBytes ?? 0);
    // `--dump-histories`: each history read once more, beside its size.
    const dump = async (id: string, runId?: string) => {
      if (dumpHistoriesTo) writeFileSync(path.join(dumpHistoriesTo, `${id.replace(/\//g, '__')}.json`), JSON.stringify((await temporal.workflow.getHandle(id, runId).fetchHistory()).events));
    };
    const own = await size(workflowId);
    await dump(workflowId);
    const sizes = { largest: own, total: own };
    for await (const child of temporal.workflow.list({ query: `WorkflowId STARTS_WITH '${workflowId}/'` })) {
      await dump(child.workflowId, child.runId);
      const bytes = await size(child.workflowId, child.runId);
      sizes.largest = Math.max(sizes.largest, bytes);
      sizes.total += bytes;
    }
    return sizes;
  };

  /** Asks `progress` of a running job (as `runFaultline`'s `poll`) and keeps how long each answer took. */
  const progressProbe = (on: FaultlineClient) => {
    const tookMs: number[] = [];
    let error: string | undefined;
    const sorted = () => [...tookMs].sort((a, b) => a - b);
    const summary = () => {
      const all = sorted();
      const at = (share: number) => Math.round(all[Math.min(all.length - 1, Math.floor(all.length * share))] ?? 0);
      return { samples: all.length, p50Ms: at(0.5), p90Ms: at(0.9), maxMs: at(1), over200: all.filter((ms) => ms > 200).length, ...(error ? { error } : {}) };
    };
    return {
      poll: async (jobId: string) => {
        const started = performance.now();
        await on.progress(jobId).then(
          () => tookMs.push(performance.now() - started),
          (failure: unknown) => (error ??= String(failure)),
        );
      },
      summary,
      line: () => {
        const { samples, p50Ms, p90Ms, maxMs, over200 } = summary();
        return `answered ${samples} times, p50 ${p50Ms} ms, p90 ${p90Ms} ms, max ${maxMs} ms, ${over200} over 200 ms (in order asked: ${tookMs.map(Math.round).join(' ')})${error ? `; an error: ${error}` : ''}`;
      },
    };
  };

  /** `poll`: called every `progressEveryMs` while the job runs (status latency); `finished`: told the moment the result is held (measure stops counting CPU there). */
  type RunOptions = { on?: FaultlineClient; poll?: (jobId: string) => Promise<void>; temporal?: Client; finished?: () => void };
  /** Runs one job to its result. */
  const runFaultline = async (spec: unknown, { on = client, poll, temporal = raw, finished }: RunOptions = {}) => {
    const asked = performance.now();
    const { jobId } = await on.start(spec);
    const startMs = Math.round(performance.now() - asked);
    let polling = true;
    const polled = (async () => {
      while (poll && polling) {
        await new Promise((resolve) => setTimeout(resolve, progressEveryMs));
        if (polling) await poll(jobId);
      }
    })();
    const result = await on.result(jobId).finally(() => (polling = false));
    // The job's time is until its user holds the result: reading histories for the report below is the bench's own work.
    const elapsedMs = Math.round(performance.now() - asked);
    finished?.();
    if (dumpHistoriesTo) writeFileSync(path.join(dumpHistoriesTo, `${jobId}.times.json`), JSON.stringify({ startAtMs: Date.now() - elapsedMs, resultAtMs: Date.now() }));
    await polled;
    await temporal.workflow
      .getHandle(jobId)
      .result()
      .catch(() => undefined); // closed, so every child history is final
    const accounted = result.counts.Available + result.counts.Failed + result.counts.Cancelled + result.counts.Missing + result.counts.Unsolved + result.counts.Skipped;
    return {
      jobId,
      startMs,
      elapsedMs,
      completed: result.counts.Available === result.counts.items,
      events: await historyEvents(jobId, true, temporal),
      outcome: `${result.status}${accounted === result.counts.outputs ? '' : ` (only ${accounted} of ${result.counts.outputs} outputs accounted for)`}${result.stoppedBy ? `, stopped by ${result.stoppedBy.type}` : ''}, ${result.counts.Cancelled} Cancelled`,
      ...(await historySizes(jobId, temporal).then((sizes) => ({ maxHistoryBytes: sizes.largest, historyBytes: sizes.total }))),
    };
  };
  /** One measured Faultline job: its CPU counted until the result is held. */
  const measureJob = (items: number, layout: Layout, spec: unknown, options: Omit<RunOptions, 'finished'> = {}) => measure(items, layout, (finished) => runFaultline(spec, { ...options, finished }));
  const runNaive = async (kind: 'cpu1ms' | 'thumbnail', count: number, timeoutMs: number) => {
    const workflowId = `naive-${kind}-${count}-${Date.now()}`;
    const handle = await raw.workflow.start('naiveWorkflow', { taskQueue: naiveQueue, workflowId, args: [{ kind, count }] });
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

  /** `count` synthetic items of 1 ms of CPU each, ids `<prefix><i>` (cpu1ms, warm-ups, fairness's big job). */
  const oneMsItems = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => ({ id: `${prefix}${i}`, params: { cpuMs: 1 } }));
  // Workers in production run for hours: V8 has compiled their hot paths long before a job like
  // these arrives. Fresh workers spend seconds of helper-thread CPU in the optimizing compiler
  // (perf, 2026-12-03: 15 % of all worker samples in a 5,000-item cpu1ms run), so unmeasured jobs
  // warm them first. `--cold` measures fresh workers.
  const warm = !process.argv.includes('--cold');
  const warmItems = Math.round(3_000 * scale);
  if (modeWanted('faultline') && warm) {
    // Until V8 has settled: a job's once-per-job paths (spec check, slice start, settling) run once a
    // job, so one job left them cold (2026-12-05: the first batch 0.34–0.39 s after start after one
    // warm-up job, 0.19 s after ten). At least three jobs, then until one is no more than 5 % faster
    // than the one before (at most eight).
    const tookMs: number[] = [];
    for (let job = 0; job < 8; job++) {
      tookMs.push((await runFaultline({ pipeline: 'bench-cpu', items: oneMsItems(`w${job}-`, warmItems) })).elapsedMs);
      const [before, last] = tookMs.slice(-2);
      if (tookMs.length >= 3 && before !== undefined && last !== undefined && last >= before * 0.95) break;
    }
    say(`warm-up: ${tookMs.length} unmeasured jobs of ${warmItems} items on the Faultline workers (${tookMs.join(', ')} ms)`);
  }

  const workloads: Record<string, Record<string, ModeResult>> = {};

  /**
   * `faultlineCpu`: Faultline set up for CPU-bound items as README's "CPU-bound pipelines" says, as
   * BullMQ runs cpu1ms at concurrency 1: workers of their own (on a queue of their own) that take 2
   * batches per process at a time, the job in one slice of batches a quarter of a process's share.
   */
  const runFaultlineCpu = async (items: number): Promise<ModeResult> => {
    const cpuEnv = { ...env, FAULTLINE_TASK_QUEUE: 'faultline-bench-cpu', FAULTLINE_MAX_CONCURRENT_ACTIVITIES: '2' };
    const workers = await startWorkers(cpuEnv);
    const cpuClient = await FaultlineClient.connect({ config: loadConfig(cpuEnv, dir), connection });
    const spec = (prefix: string, count: number) => ({
      pipeline: 'synthetic',
      items: oneMsItems(prefix, count),
      options: { batchSize: Math.min(1_000, Math.ceil(count / (4 * processes))), shardSize: Math.min(5_000, count) },
    });
    try {
      if (warm) await runFaultline(spec('wc', warmItems), { on: cpuClient });
      return await measureJob(items, workers.layout, spec('cc', items), { on: cpuClient });
    } finally {
      await cpuClient.close();
      await stopWorkers(workers.supervisor);
    }
  };

  if (wanted('cpu1ms')) {
    const cpuItems = cpuItemsArg ?? Math.round(5_000 * scale);
    say(`cpu1ms: ${cpuItems} items`);
    workloads.cpu1ms = {
      ...(modeWanted('raw') ? { raw: await measure(cpuItems, rawLayout, () => runRaw('cpu1ms', cpuItems, cores, rawPids, { source: SOURCE, outDir: path.join(dir, 'raw-out') })) } : {}),
      // Faultline before naive Temporal, as in scale100k: naive's one 15,000-event workflow leaves the shared dev server slower
      // for what runs next (cpu1ms 0.755x raw after it, 0.77-0.80x before it, same code and sitting).
      ...(modeWanted('faultline')
        ? {
            faultline: await measureJob(cpuItems, faultlineLayout, {
              pipeline: cpuPipeline,
              ...(cpuBatch || cpuShard ? { options: { ...(cpuBatch ? { batchSize: cpuBatch } : {}), ...(cpuShard ? { shardSize: cpuShard } : {}) } } : {}),
              items: oneMsItems('c', cpuItems),
            }),
          }
        : {}),
      ...(modeWanted('faultline-cpu') ? { faultlineCpu: await runFaultlineCpu(cpuItems) } : {}),
      ...(modeWanted('naive') ? { naive: await measure(cpuItems, naiveLayout, () => runNaive('cpu1ms', cpuItems, 20 * 60_000)) } : {}),
      ...(await bullmq('cpu1ms', cpuItems)),
      ...(await dbos('cpu1ms', cpuItems)),
    };
  }
  if (wanted('thumbnails')) {
    const thumbItems = Math.round(2_000 * scale);
    say(`thumbnails: ${thumbItems} items`);
    workloads.thumbnails = {
      raw: await measure(thumbItems, rawLayout, () => runRaw('thumbnail', thumbItems, cores, rawPids, { source: SOURCE, outDir: path.join(dir, 'raw-out') })),
      faultline: await measureJob(thumbItems, faultlineLayout, {
        pipeline: 'images',
        items: Array.from({ length: thumbItems }, (_, i) => ({ id: `t${i}`, source: pathToFileURL(SOURCE).toString() })),
        outputs: ['thumbnail'],
        destination: pathToFileURL(path.join(dir, 'faultline-out')).toString(),
      }),
      naive: await measure(thumbItems, naiveLayout, () => runNaive('thumbnail', thumbItems, 20 * 60_000)),
      ...(await bullmq('thumbnail', thumbItems)),
      ...(await dbos('thumbnail', thumbItems)),
    };
  }
  /** The scale workloads' jobs: `count` synthetic items of no work in one job. */
  const scaleSpec = (prefix: string, count: number) => ({ pipeline: 'synthetic', items: Array.from({ length: count }, (_, i) => ({ id: `${prefix}${i}` })) });
  const scaleItems: Record<string, number> = { scale10k: Math.round(10_000 * scale), scale100k: Math.round(100_000 * scale), scale1m: Math.round(1_000_000 * scale) };
  if (wanted('scale10k')) {
    const items = scaleItems.scale10k ?? 0;
    say(`scale10k: ${items} items`);
    workloads.scale10k = { faultline: await measureJob(items, faultlineLayout, scaleSpec('k', items)) };
  }
  if (wanted('scale100k')) {
    const bigItems = scaleItems.scale100k ?? 0;
    say(`scale100k: ${bigItems} items`);
    workloads.scale100k = {
      ...(modeWanted('faultline') ? { faultline: await measureJob(bigItems, faultlineLayout, scaleSpec('b', bigItems)) } : {}),
      ...(await bullmq('noop', bigItems)),
      ...(await dbos('noop', bigItems)),
      ...(modeWanted('naive') ? { naive: await measure(bigItems, naiveLayout, () => runNaive('cpu1ms', bigItems, (quick ? 3 : 6) * 60_000)) } : {}),
    };
  }

  if (wanted('storage')) {
    // The same sharded job with job storage in a folder and in an S3 bucket (MinIO built from its Go module), each on its own workers.
    const items = Math.round(100_000 * scale);
    say(`storage: ${items} items with FAULTLINE_STORAGE in a folder, then in MinIO`);
    const s3 = await startLocalS3('bench', say);
    const s3Env = { ...env, ...s3.env, FAULTLINE_STORAGE: 's3://bench/jobs', FAULTLINE_TASK_QUEUE: 'faultline-bench-s3' };
    const s3Workers = await startWorkers(s3Env);
    const s3Client = await FaultlineClient.connect({ config: loadConfig(s3Env, dir), connection });
    const spec = (prefix: string) => ({ pipeline: 'synthetic', items: Array.from({ length: items }, (_, i) => ({ id: `${prefix}${i}` })), options: { shardSize: 1_000 } });
    workloads.storage = {
      file: await measureJob(items, faultlineLayout, spec('f')),
      s3: await measureJob(items, s3Workers.layout, spec('s'), { on: s3Client }),
    };
    await s3Client.close();
    await stopWorkers(s3Workers.supervisor);
    await s3.stop();
  }

  if (wanted('scale1m')) {
    const millionItems = scaleItems.scale1m ?? 0;
    say(`scale1m: ${millionItems} items in one job`);
    const probe = progressProbe(client);
    workloads.scale1m = { faultline: await measureJob(millionItems, faultlineLayout, scaleSpec('m', millionItems), { poll: probe.poll }) };
    if (workloads.scale1m.faultline) workloads.scale1m.faultline.progress = probe.summary();
    say(`scale1m: progress ${probe.line()}`);
  }
  // Opt-in only (`--only=scale10m`; `--quick`: 1,000,000): 10,000,000 items from an NDJSON file, status polled throughout,
  // then read back whole by the CLI: `result --outputs` and `export`.
  if (only?.includes('scale10m')) {
    const count = Math.round(10_000_000 * scale);
    const file = path.join(dir, 'scale10m.ndjson');
    const out = createWriteStream(file);
    for (let i = 0; i < count; i++) if (!out.write(`{"id":"t${i}"}\n`)) await once(out, 'drain');
    out.end();
    await once(out, 'finish');
    // `--items-in=s3`: the file goes to a MinIO bucket, and workers of their own keep job storage there too (the stack's shape).
    const s3 = itemsIn === 's3' ? await startLocalS3('bench', say) : undefined;
    const target = s3
      ? await (async () => {
          const s3Env = { ...env, ...s3.env, FAULTLINE_STORAGE: 's3://bench/jobs', FAULTLINE_TASK_QUEUE: 'faultline-bench-s3' };
          const uploaded = performance.now();
          const s3Client = new S3Client({
            endpoint: s3.endpoint,
            region: 'us-east-1',
            forcePathStyle: true,
            credentials: { accessKeyId: s3.env.AWS_ACCESS_KEY_ID ?? '', secretAccessKey: s3.env.AWS_SECRET_ACCESS_KEY ?? '' },
          });
          await new Upload({ client: s3Client, params: { Bucket: 'bench', Key: 'items/scale10m.ndjson', Body: createReadStream(file) } }).done();
          s3Client.destroy();
          say(`scale10m: uploaded to s3://bench/items/scale10m.ndjson in ${Math.round(performance.now() - uploaded)} ms`);
          const workers = await startWorkers(s3Env);
          return {
            env: s3Env,
            workers,
            layout: workers.layout,
            client: await FaultlineClient.connect({ config: loadConfig(s3Env, dir), connection }),
            itemsFrom: 's3://bench/items/scale10m.ndjson',
            exportTo: 's3://bench/exports/scale10m',
          };
        })()
      : { env, workers: undefined, layout: faultlineLayout, client, itemsFrom: pathToFileURL(file).toString(), exportTo: path.join(dir, 'scale10m-export') };
    say(`scale10m: ${count} items from ${target.itemsFrom}`);
    const probe = progressProbe(target.client);
    let jobId = '';
    let startMs = 0;
    workloads.scale10m = {
      faultline: await measure(count, target.layout, async (finished) => {
        const run = await runFaultline({ pipeline: 'synthetic', itemsFrom: target.itemsFrom }, { on: target.client, poll: probe.poll, finished });
        jobId = run.jobId;
        startMs = run.startMs;
        return run;
      }),
    };
    const measured = workloads.scale10m.faultline;
    if (measured) {
      measured.itemsIn = itemsIn;
      measured.startMs = startMs;
      measured.prepareMs = await untilFirstSlice(jobId);
      say(`scale10m: client.start took ${startMs} ms; the job's start to its first slice ${measured.prepareMs ?? '?'} ms`);
      measured.progress = probe.summary();
    }
    say(`scale10m: progress ${probe.line()}`);
    // Every output read back by a user's CLI: streamed, so its memory stays flat however many items the job had.
    let printed = 0;
    const outputs = await runCli(['result', jobId, '--outputs'], target.env, dir, () => (printed += 1));
    say(`scale10m: result --outputs printed ${printed} records (${Math.round(outputs.stdoutBytes / 1e6)} MB) in ${outputs.elapsedMs} ms, peak RSS ${outputs.peakRssMb} MB`);
    let manifest = '';
    const exported = await runCli(['export', jobId, target.exportTo, '--json'], target.env, dir, (line) => (manifest = line));
    const exportedRecords = (JSON.parse(manifest) as { files: { records: number }[] }).files.reduce((sum, one) => sum + one.records, 0);
    say(`scale10m: export wrote ${exportedRecords} records to ${target.exportTo} in ${exported.elapsedMs} ms, peak RSS ${exported.peakRssMb} MB`);
    if (measured) measured.readBack = { outputs: { ...outputs, records: printed }, export: { ...exported, records: exportedRecords } };
    if (s3) {
      await target.client.close();
      if (target.workers) await stopWorkers(target.workers.supervisor);
      await s3.stop();
    }
    rmSync(file, { force: true });
  }
  if (wanted('stop1m')) {
    // The first item breaks a zero tolerance: the never-started rest becomes Cancelled by activity, not through history.
    const millionItems = Math.round(1_000_000 * scale);
    say(`stop1m: ${millionItems} items, the first one fails with toleratedFailureCount 0`);
    workloads.stop1m = {
      faultline: await measureJob(millionItems, faultlineLayout, {
        pipeline: 'synthetic',
        items: Array.from({ length: millionItems }, (_, i) => ({ id: `x${i}`, ...(i === 0 ? { params: { outcome: 'unprocessable' } } : {}) })),
        options: { toleratedFailureCount: 0 },
      }),
    };
  }

  // latency: one-item jobs from `client.start` to `client.result`, one at a time, idle.
  const latencyJobs = wanted('latency') ? Math.round(50 * (quick ? 0.2 : 1)) : 0;
  say(`latency: ${latencyJobs} one-item jobs`);
  const timed = async (count: number, once: () => Promise<unknown>): Promise<number[]> => {
    const samples: number[] = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await once();
      samples.push(performance.now() - started);
    }
    return samples;
  };
  const oneItemJob = (through: FaultlineClient) => async () => {
    const { jobId } = await through.start({ pipeline: 'synthetic', items: [{ id: 'one' }] });
    const result = await through.result(jobId);
    if (result.status !== 'Succeeded') throw new Error(`latency: one-item job ${jobId} ended ${result.status}`);
  };
  // The `faultline worker` processes, a client of its own (as the CLI or a service apart from the workers).
  if (latencyJobs > 0) await timed(1, oneItemJob(client)); // warm-up: the workers' first workflow
  const samples = await timed(latencyJobs, oneItemJob(client));
  // Temporal's own floor on this machine: a workflow that does nothing (no activity), started and awaited the same way.
  const emptyWorkflow = (through: Client, eager: boolean) => async () =>
    (await through.workflow.start('emptyWorkflow', { taskQueue: naiveQueue, workflowId: `empty-${randomUUID()}`, requestEagerStart: eager })).result();
  const floor = await timed(latencyJobs, emptyWorkflow(raw, false));
  // Embedded: a Faultline worker in this process and a client on its connection, so each job starts
  // eagerly (its first workflow task comes back with the start, not through the task queue).
  let embeddedSamples: number[] = [];
  let eagerFloor: number[] = [];
  if (latencyJobs > 0) {
    const embeddedConfig = { ...config, taskQueue: 'faultline-bench-embedded' };
    const { worker: embeddedWorker } = await createFaultlineWorker({ config: embeddedConfig, connection: native, logger: createLogger({ level: 'error', format: 'json' }) });
    const embeddedRunning = embeddedWorker.run();
    const embedded = await FaultlineClient.connect({ config: embeddedConfig, connection: native });
    try {
      await timed(1, oneItemJob(embedded));
      embeddedSamples = await timed(latencyJobs, oneItemJob(embedded));
      eagerFloor = await timed(latencyJobs, emptyWorkflow(new Client({ connection: native }), true));
    } finally {
      await embedded.close();
      embeddedWorker.shutdown();
      await embeddedRunning;
    }
  }
  const percentile = (values: number[], p: number) => {
    const sorted = [...values].sort((a, b) => a - b);
    return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0);
  };
  const latency = {
    jobs: latencyJobs,
    p50Ms: percentile(samples, 50),
    p95Ms: percentile(samples, 95),
    maxMs: Math.round(Math.max(0, ...samples)),
    emptyWorkflowP50Ms: percentile(floor, 50),
    emptyWorkflowP95Ms: percentile(floor, 95),
    /** A worker in the client's process, on its connection: jobs start eagerly. */
    embedded: {
      p50Ms: percentile(embeddedSamples, 50),
      p95Ms: percentile(embeddedSamples, 95),
      maxMs: Math.round(Math.max(0, ...embeddedSamples)),
      emptyWorkflowP50Ms: percentile(eagerFloor, 50),
      emptyWorkflowP95Ms: percentile(eagerFloor, 95),
    },
  };

  // ratelimit: deliver jobs to a receiver on 127.0.0.1 that answers at once: no limit, a limit that never binds (the limiter's own cost), and 50/s.
  const ratelimit: Record<string, { items: number; elapsedMs: number; itemsPerSec: number; busiestSecond: number; limiterEvents?: number }> = {};
  if (wanted('ratelimit')) {
    const arrivals: number[] = [];
    const receiver = http.createServer((req, res) => {
      arrivals.push(Date.now());
      req.resume();
      req.on('end', () => res.writeHead(200).end());
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const host = `127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    const items = Math.max(100, Math.round(1_000 * scale));
    const busiest = (times: number[]) => {
      let most = 0;
      for (let start = 0, end = 0; end < times.length; end++) {
        while ((times[end] ?? 0) - (times[start] ?? 0) >= 1_000) start++;
        most = Math.max(most, end - start + 1);
      }
      return most;
    };
    const modes: [string, number, Record<string, { perSecond: number; concurrency?: number }> | undefined][] = [
      ['none', items, undefined],
      ['unbound', items, { [host]: { perSecond: 10_000 } }],
      ['50/s', Math.round(items / 4), { [host]: { perSecond: 50 } }],
    ];
    for (const [mode, count, rateLimits] of modes) {
      say(`ratelimit ${mode}: ${count} deliver items`);
      arrivals.length = 0;
      const started = performance.now();
      const { jobId } = await client.start({
        pipeline: 'deliver',
        params: { url: `http://${host}/r` },
        items: Array.from({ length: count }, (_, n) => ({ id: `r${n}`, params: { record: { n } } })),
        options: { ...(rateLimits ? { rateLimits } : {}), batchSize: 10 },
      });
      const result = await client.result(jobId);
      const elapsedMs = Math.round(performance.now() - started);
      if (result.counts.Available !== count) throw new Error(`ratelimit ${mode}: ${JSON.stringify(result.counts)}`);
      let limiterEvents: number | undefined;
      if (rateLimits) {
        limiterEvents = 0;
        for await (const run of client.client.workflow.list({ query: `WorkflowId = '${limiterWorkflowId(host)}'` }))
          limiterEvents += (await client.client.workflow.getHandle(run.workflowId, run.runId).describe()).historyLength;
      }
      ratelimit[mode] = { items: count, elapsedMs, itemsPerSec: Math.round((count / elapsedMs) * 1000), busiestSecond: busiest(arrivals), ...(limiterEvents !== undefined ? { limiterEvents } : {}) };
    }
    receiver.close();
  }

  // fairness: a one-item job's own time (workflow start → close) idle and under a big CPU-bound job, with and without task queue fairness.
  const fairness: Record<string, { idleMedianMs: number; loadedMedianMs: number; loaded: number[]; bigItemsDoneMeanwhile: number }> = {};
  if (wanted('fairness')) {
    const bigItems = Math.round(60_000 * scale);
    for (const on of [true, false]) {
      say(`fairness ${on ? 'on' : 'off'}: one-item jobs idle, then under a ${bigItems}-item job (4 activity slots per worker process)`);
      const fairServer = await startDevServer({ ui: false, fairness: on, log: say });
      const fairEnv = { ...env, TEMPORAL_ADDRESS: fairServer.address, FAULTLINE_TASK_QUEUE: 'faultline-bench-fair', FAULTLINE_MAX_CONCURRENT_ACTIVITIES: '4' };
      const fairWorkers = await startWorkers(fairEnv);
      const fairConnection = await Connection.connect({ address: fairServer.address });
      const fairClient = await FaultlineClient.connect({ config: loadConfig(fairEnv, dir), connection: fairConnection });
      const oneItem = async (): Promise<number> => {
        const { jobId } = await fairClient.start({ pipeline: 'synthetic', items: [{ id: 'one' }], options: { tenant: 'small' } });
        await fairClient.result(jobId);
        for (;;) {
          const description = await fairClient.handle(jobId).describe();
          if (description.closeTime) return description.closeTime.getTime() - description.startTime.getTime();
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      };
      const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
      await oneItem();
      const idle: number[] = [];
      for (let n = 0; n < 5; n++) idle.push(await oneItem());
      const big = await fairClient.start({ pipeline: 'synthetic', items: oneMsItems('f', bigItems), options: { tenant: 'big' } });
      while ((await fairClient.progress(big.jobId)).counts.Available < bigItems / 30) await new Promise((resolve) => setTimeout(resolve, 200));
      const before = (await fairClient.progress(big.jobId)).counts.Available;
      const loaded: number[] = [];
      for (let n = 0; n < 5; n++) loaded.push(await oneItem());
      const meanwhile = (await fairClient.progress(big.jobId)).counts.Available - before;
      await fairClient.cancel(big.jobId, 'bench over').catch(() => undefined);
      fairness[on ? 'on' : 'off'] = { idleMedianMs: median(idle), loadedMedianMs: median(loaded), loaded, bigItemsDoneMeanwhile: meanwhile };
      await fairClient.close();
      await fairConnection.close();
      await stopWorkers(fairWorkers.supervisor);
      await fairServer.stop();
    }
  }

  // The same scale workloads on the production-like stack: PostgreSQL holds Temporal's state, MinIO the job storage.
  const stackWorkloads: Record<string, Record<string, ModeResult>> = {};
  if (onStack && STACK_WORKLOADS.some(wanted)) {
    const stackOptions = {
      dir: path.join(os.tmpdir(), 'faultline-bench-stack'),
      port: 15233,
      pgPort: 15435,
      s3Port: 19300,
      uiPort: 18380,
      webPort: 18534,
      metricsPort: 19764,
      workers: 0,
      web: false,
      log: say,
    };
    await stopStack(stackOptions).catch(() => undefined);
    rmSync(stackOptions.dir, { recursive: true, force: true });
    mkdirSync(stackOptions.dir, { recursive: true, mode: 0o755 }); // PostgreSQL runs as its own user and must reach its folder
    const layout = stackLayout(stackOptions);
    await startStack(stackOptions);
    const { FAULTLINE_METRICS_ADDRESS: _metrics, FAULTLINE_ALLOWED_ROOTS: _roots, ...settings } = stackWorkerSettings(layout);
    const stackEnv = { ...env, ...settings, FAULTLINE_TASK_QUEUE: 'faultline-bench-stack' };
    const stackWorkers = await startWorkers(stackEnv);
    const stackConnection = await Connection.connect({ address: layout.address });
    const stackTemporal = new Client({ connection: stackConnection });
    const stackClient = await FaultlineClient.connect({ config: loadConfig(stackEnv, dir), connection: stackConnection });
    const pidOf = (file: string) => Number(readFileSync(file, 'utf8').split('\n')[0]);
    const workerTree = stackWorkers.layout.workPids ?? (() => []);
    const stackLayoutOfWork: Layout = {
      ...stackWorkers.layout,
      cpu: () => ({
        work: sumOver(workerTree(), cpuOf),
        server: sumOver(processTree(pidOf(path.join(layout.pids, 'temporal.pid'))), cpuOf),
        postgres: sumOver(processTree(pidOf(path.join(layout.pgData, 'postmaster.pid'))), cpuOf),
        bench: cpuOf(process.pid),
      }),
    };
    /** Rows inserted, updated or deleted in Temporal's databases, and WAL bytes written, so far. */
    const postgresWrites = () => ({
      rows: Number(psql(layout, 'postgres', "SELECT sum(tup_inserted + tup_updated + tup_deleted) FROM pg_stat_database WHERE datname IN ('temporal', 'temporal_visibility')")),
      walBytes: Number(psql(layout, 'postgres', "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")),
    });
    // Backends report their counters at most once a second: settle before each reading.
    const settledWrites = async () => {
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      return postgresWrites();
    };
    for (const name of STACK_WORKLOADS.filter(wanted)) {
      const items = scaleItems[name] ?? 0;
      say(`stack ${name}: ${items} items on PostgreSQL + MinIO`);
      const before = await settledWrites();
      const result = await measureJob(items, stackLayoutOfWork, scaleSpec(`${name}-`, items), { on: stackClient, temporal: stackTemporal });
      const after = await settledWrites();
      result.postgresRowsPerItem = Math.round(((after.rows - before.rows) / items) * 100) / 100;
      result.postgresWalBytesPerItem = Math.round((after.walBytes - before.walBytes) / items);
      stackWorkloads[name] = { faultline: result };
    }
    await stackClient.close();
    await stackConnection.close();
    await stopWorkers(stackWorkers.supervisor);
    await stopStack(stackOptions);
    rmSync(stackOptions.dir, { recursive: true, force: true });
  }

  const ratio = (a?: number, b?: number) => (a && b ? Math.round((a / b) * 100) / 100 : null);
  const report = {
    machine: {
      cores,
      faultlineWorkerProcesses: processes,
      /** What the Faultline workers and CLI processes ran: the package as built (`dist`) or the sources through tsx (`--from-source`). */
      faultlineCode: fromSource ? 'source' : 'dist',
      faultlineSupervisorPeakRssMb: Math.round(supervisorPeakRss / 1024 / 1024),
      /** CPU the Temporal server used per second with workers connected and no job (10 s before the workloads). */
      serverIdleCores,
      memoryGb: Math.round(os.totalmem() / 1024 ** 3),
      node: process.version,
      temporalCli: execFileSync(ensureTemporalCli(), ['--version']).toString().trim(),
    },
    quick,
    workloads: { ...workloads, latency },
    ...(Object.keys(stackWorkloads).length > 0 ? { stack: { workloads: stackWorkloads } } : {}),
    ...(Object.keys(fairness).length > 0 ? { fairness } : {}),
    ...(Object.keys(ratelimit).length > 0 ? { ratelimit } : {}),
    latency: { p50Ms: latency.p50Ms, p95Ms: latency.p95Ms, embedded: { p50Ms: latency.embedded.p50Ms, p95Ms: latency.embedded.p95Ms } },
    ratios: {
      cpu1ms_faultline_vs_naive: ratio(workloads.cpu1ms?.faultline?.itemsPerSec, workloads.cpu1ms?.naive?.itemsPerSec),
      cpu1ms_faultline_vs_raw: ratio(workloads.cpu1ms?.faultline?.itemsPerSec, workloads.cpu1ms?.raw?.itemsPerSec),
      cpu1ms_faultlineCpu_vs_raw: ratio(workloads.cpu1ms?.faultlineCpu?.itemsPerSec, workloads.cpu1ms?.raw?.itemsPerSec),
      thumbnails_faultline_vs_raw: ratio(workloads.thumbnails?.faultline?.itemsPerSec, workloads.thumbnails?.raw?.itemsPerSec),
      thumbnails_faultline_vs_naive: ratio(workloads.thumbnails?.faultline?.itemsPerSec, workloads.thumbnails?.naive?.itemsPerSec),
      storage_s3_vs_file: ratio(workloads.storage?.s3?.itemsPerSec, workloads.storage?.file?.itemsPerSec),
      cpu1ms_bullmq_vs_raw: ratio(workloads.cpu1ms?.bullmq?.itemsPerSec, workloads.cpu1ms?.raw?.itemsPerSec),
      cpu1ms_faultline_vs_bullmq: ratio(workloads.cpu1ms?.faultline?.itemsPerSec, workloads.cpu1ms?.bullmq?.itemsPerSec),
      thumbnails_faultline_vs_bullmq: ratio(workloads.thumbnails?.faultline?.itemsPerSec, workloads.thumbnails?.bullmq?.itemsPerSec),
      scale100k_faultline_vs_bullmq: ratio(workloads.scale100k?.faultline?.itemsPerSec, workloads.scale100k?.bullmq?.itemsPerSec),
      cpu1ms_dbos_vs_raw: ratio(workloads.cpu1ms?.dbos?.itemsPerSec, workloads.cpu1ms?.raw?.itemsPerSec),
      cpu1ms_faultline_vs_dbos: ratio(workloads.cpu1ms?.faultline?.itemsPerSec, workloads.cpu1ms?.dbos?.itemsPerSec),
      thumbnails_faultline_vs_dbos: ratio(workloads.thumbnails?.faultline?.itemsPerSec, workloads.thumbnails?.dbos?.itemsPerSec),
      scale100k_faultline_vs_dbos: ratio(workloads.scale100k?.faultline?.itemsPerSec, workloads.scale100k?.dbos?.itemsPerSec),
    },
  };
  clearInterval(supervisorSampler);
  await redis?.stop();
  if (dbosPostgres) {
    await stopStack(dbosPostgresOptions);
    rmSync(dbosPostgresOptions.dir, { recursive: true, force: true });
  }
  naiveWorker.shutdown();
  await naiveRunning;
  await stopWorkers(faultlineWorkers);
  await client.close();
  await connection.close();
  await native.close();
  await server.stop();
  await rm(dir, { recursive: true, force: true });

  if (json) {
    console.log(JSON.stringify(report, null, 2));
    return;
  }
  console.log('\nworkload     mode         procs    items   items/s   elapsed ms  events/item  B hist/item  srv µs/item  peak RSS MB  max history  completed');
  const rows = [...Object.entries(workloads), ...Object.entries(stackWorkloads).map(([name, modes]) => [`stack:${name}`, modes] as const)];
  for (const [name, modes] of rows) {
    for (const [mode, r] of Object.entries(modes)) {
      const history = r.maxHistoryBytes === undefined ? '-' : `${(r.maxHistoryBytes / 1024 / 1024).toFixed(2)} MB`;
      console.log(
        `${name.padEnd(12)} ${mode.padEnd(12)} ${String(r.workers).padStart(5)} ${String(r.items).padStart(8)} ${String(r.itemsPerSec).padStart(9)} ${String(r.elapsedMs).padStart(12)} ${String(r.eventsPerItem ?? '-').padStart(12)} ${String(r.historyBytesPerItem ?? '-').padStart(12)} ${String(r.serverCpuUsPerItem ?? '-').padStart(12)} ${String(r.peakRssMb).padStart(12)} ${history.padStart(12)}  ${r.completed}${r.outcome ? ` (${r.outcome})` : ''}  cpu s ${JSON.stringify(r.cpuSeconds)}${r.workCpuByThread ? `  work by thread ${JSON.stringify(r.workCpuByThread)}` : ''}${r.postgresRowsPerItem !== undefined ? `  postgres: ${r.postgresCpuUsPerItem} µs, ${r.postgresRowsPerItem} rows, ${r.postgresWalBytesPerItem} WAL bytes per item` : ''}`,
      );
    }
  }
  if (latency.jobs > 0)
    console.log(
      `latency      1-item jobs: p50 ${latency.p50Ms} ms, p95 ${latency.p95Ms} ms (n=${latency.jobs}); an empty Temporal workflow (the floor): p50 ${latency.emptyWorkflowP50Ms} ms, p95 ${latency.emptyWorkflowP95Ms} ms`,
    );
  if (latency.jobs > 0)
    console.log(
      `latency      embedded (worker in the client's process, eager start): p50 ${latency.embedded.p50Ms} ms, p95 ${latency.embedded.p95Ms} ms, max ${latency.embedded.maxMs} ms; an empty workflow started eagerly: p50 ${latency.embedded.emptyWorkflowP50Ms} ms, p95 ${latency.embedded.emptyWorkflowP95Ms} ms`,
    );
  for (const [mode, f] of Object.entries(fairness))
    console.log(
      `fairness ${mode.padEnd(3)} 1-item job, workflow start → close: idle median ${f.idleMedianMs} ms; under load median ${f.loadedMedianMs} ms [${f.loaded.join(', ')}]; big job meanwhile +${f.bigItemsDoneMeanwhile} items`,
    );
  for (const [mode, r] of Object.entries(ratelimit))
    console.log(
      `ratelimit ${mode.padEnd(8)} ${r.items} deliver items: ${r.itemsPerSec} items/s (${r.elapsedMs} ms), busiest second ${r.busiestSecond}${r.limiterEvents !== undefined ? `, limiter history ${r.limiterEvents} events (${(r.limiterEvents / r.items).toFixed(2)}/item, all runs of the key so far)` : ''}`,
    );
  console.log(`ratios: ${JSON.stringify(report.ratios)}`);
  console.log(`Temporal server idle: ${serverIdleCores} cores (part of every run's server CPU)`);
}

main().catch((error: unknown) => {
  console.error(error);
  // The dev server, workers and peers it started would keep this process alive: exiting stops them (their exit hooks).
  process.exit(1);
});
