/**
 * The fault suite behind `npm run chaos` and its short versions in `npm test` and `test:stack`:
 * `faultline worker --processes N` as a real supervisor, a flaky HTTP source, and a seeded
 * schedule of faults while rounds of jobs run, against one of two targets:
 * - `dev`: the dev server on a SQLite file; worker SIGKILLs and Temporal server kills + restarts;
 * - `stack`: PostgreSQL + the Temporal server built from its Go module + MinIO holding job storage,
 *   the workers reaching MinIO through a fault-injecting TCP proxy; in addition PostgreSQL
 *   restarts (fast, and stopped for a pause), MinIO killed for a while, and proxy resets and stalls.
 * Every round is checked: every output exactly once, exact counts, every Available file present
 * with its recorded size and sha256, nothing else in the destinations.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Connection } from '@temporalio/client';
import { FaultlineClient } from '../../src/client';
import { loadConfig } from '../../src/config';
import { type DevServer, freePort, startDevServer } from '../../src/devserver/temporal-cli';
import type { JobResult, JobSpec, OutputRecord } from '../../src/shared';
import { ensureBinaries, killStackProcess, restartPostgres, stackLayout, stackWorkerSettings, startStack, startStackMinio, startTemporal, stopStack } from '../../scripts/stack';
import { startFaultProxy } from './fault-proxy';
import { workerChildren } from './processes';

const ROOT = path.resolve(__dirname, '..', '..');
const IMAGE = readFileSync(path.join(ROOT, 'samples', 'images', 'with-exif.jpg'));

export interface ChaosPlan {
  seed: number;
  /** At least this many rounds; more run until every planned fault has been injected. */
  rounds: number;
  imagesPerRound: number;
  syntheticPerRound: number;
  workerKills: number;
  temporalRestarts: number;
  /** Worker processes under the supervisor. */
  processes: number;
  target: ChaosTarget;
  log?: (line: string) => void;
}

/** Where the jobs run, and the faults only that target can take. */
export type ChaosTarget =
  | { kind: 'dev' }
  | {
      kind: 'stack';
      /** Every other one fast (stop + start at once), the rest stopped for `postgresPauseMs`. */
      postgresRestarts: number;
      postgresPauseMs: number;
      /** MinIO SIGKILLed and kept down for a time in `minioOutageMs`. */
      minioOutages: number;
      minioOutageMs: [number, number];
      /** Every other one resets the workers' connections to MinIO, the rest stall them. */
      proxyFaults: number;
    };

export interface ChaosFaults {
  workerKills: number;
  temporalRestarts: number;
  postgresRestarts: number;
  minioOutages: number;
  proxyFaults: number;
}

export type HttpFault = 'ok' | 'unavailable' | 'reset' | 'drip';

export interface RoundReport {
  round: number;
  jobs: { jobId: string; pipeline: string; status: string; items: number; counts: JobResult['counts'] }[];
  faults: ChaosFaults;
  elapsedMs: number;
}

export interface ChaosReport {
  seed: number;
  target: ChaosTarget['kind'];
  processes: number;
  rounds: RoundReport[];
  faults: ChaosFaults & {
    workerRestartsSeen: number;
    http: Record<HttpFault, number>;
    /** Connections to MinIO the proxy's resets cut, and the milliseconds it held bytes. */
    proxy: { connectionsCut: number; stalledMs: number };
  };
  items: number;
  /** Temp files of writes cut short by a SIGKILL (never an output: outputs are renamed into place whole). */
  strayTempFiles: number;
  elapsedMs: number;
  /** Every violated expectation; empty when the run passed. */
  violations: string[];
}

/** mulberry32: small, seedable, good enough to make a fault schedule reproducible. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The fault for the n-th request of one URL: a pure function of (seed, url, n), whatever order requests arrive in. Requests after the second always succeed, so every item stays within its retry budget. */
export function httpFault(seed: number, url: string, attempt: number): HttpFault {
  if (attempt > 2) return 'ok';
  const roll = createHash('sha256').update(`${seed}:${url}:${attempt}`).digest().readUInt32BE(0) / 4294967296;
  if (roll < 0.15) return 'unavailable';
  if (roll < 0.25) return 'reset';
  if (roll < 0.35) return 'drip';
  return 'ok';
}

function startFlakySource(seed: number): Promise<{ url: string; counts: Record<HttpFault, number>; close(): Promise<void> }> {
  const attempts = new Map<string, number>();
  const counts: Record<HttpFault, number> = { ok: 0, unavailable: 0, reset: 0, drip: 0 };
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const attempt = (attempts.get(url) ?? 0) + 1;
    attempts.set(url, attempt);
    const fault = httpFault(seed, url, attempt);
    counts[fault] += 1;
    if (fault === 'unavailable') {
      res.writeHead(503, { 'retry-after': '1' }).end('busy');
    } else if (fault === 'reset') {
      req.socket.destroy();
    } else if (fault === 'drip') {
      // The whole body, slowly: eight pieces over about 800 ms.
      res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': IMAGE.length });
      const piece = Math.ceil(IMAGE.length / 8);
      let offset = 0;
      const timer = setInterval(() => {
        res.write(IMAGE.subarray(offset, offset + piece));
        offset += piece;
        if (offset >= IMAGE.length) {
          clearInterval(timer);
          res.end();
        }
      }, 100);
      res.once('close', () => clearInterval(timer));
    } else {
      res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': IMAGE.length }).end(IMAGE);
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        counts,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Retries a client call while the Temporal server is down or restarting. */
async function persist<T>(what: string, fn: () => Promise<T>, timeoutMs = 180_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${what}: still failing after ${timeoutMs / 1000}s`, { cause: error });
      await sleep(500);
    }
  }
}

/** A target the jobs run on: what workers and the client are told, and how to hurt it. */
interface ChaosBackend {
  address: string;
  /** Storage and S3 settings for the workers (through the proxy on the stack). */
  workerSettings: Record<string, string>;
  /** The same for the client that checks the results (straight to storage). */
  clientSettings: Record<string, string>;
  inject(fault: Exclude<keyof ChaosFaults, 'workerKills'>, index: number, report: ChaosReport): Promise<void>;
  stop(): Promise<void>;
}

async function devBackend(dir: string, random: () => number): Promise<ChaosBackend> {
  const port = await freePort();
  const db = path.join(dir, 'chaos.db');
  let server: DevServer = await startDevServer({ port, db, ui: false });
  const settings = { FAULTLINE_STORAGE: path.join(dir, 'storage') };
  return {
    address: server.address,
    workerSettings: settings,
    clientSettings: settings,
    async inject(fault) {
      if (fault !== 'temporalRestarts') throw new Error(`the dev server target cannot inject ${fault}`);
      server.process.kill('SIGKILL');
      await new Promise((resolve) => (server.process.exitCode !== null || server.process.signalCode !== null ? resolve(undefined) : server.process.once('exit', resolve)));
      await sleep(200 + Math.floor(random() * 1_000)); // down for a moment: workers and clients see it gone
      server = await startDevServer({ port, db, ui: false });
    },
    stop: () => server.stop(),
  };
}

/** Ports of the chaos stack: apart from `npm run stack` (17233…) and test:stack (18233…). */
const CHAOS_STACK = { port: 16233, pgPort: 15434, s3Port: 19200, uiPort: 18280, webPort: 18434, metricsPort: 19664 } as const;

async function stackBackend(target: Extract<ChaosTarget, { kind: 'stack' }>, random: () => number, log: (line: string) => void): Promise<ChaosBackend> {
  // A fixed folder (PostgreSQL runs as its own user and must reach it), cleared of any run cut short.
  const options = { ...CHAOS_STACK, dir: path.join(os.tmpdir(), 'faultline-chaos-stack'), workers: 0, web: false, log: (line: string) => log(`[stack] ${line}`) };
  await stopStack(options).catch(() => undefined);
  await rm(options.dir, { recursive: true, force: true });
  await mkdir(options.dir, { recursive: true, mode: 0o755 });
  const layout = stackLayout(options);
  await startStack(options);
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: layout.s3Port });
  const { FAULTLINE_METRICS_ADDRESS: _metrics, FAULTLINE_ALLOWED_ROOTS: _roots, ...settings } = stackWorkerSettings(layout);
  const between = (range: [number, number]) => range[0] + Math.floor(random() * (range[1] - range[0] + 1));
  return {
    address: layout.address,
    workerSettings: { ...settings, FAULTLINE_S3_ENDPOINT: proxy.url },
    clientSettings: settings,
    async inject(fault, index, report) {
      if (fault === 'temporalRestarts') {
        await killStackProcess(layout, 'temporal');
        await sleep(200 + Math.floor(random() * 1_000));
        await startTemporal(layout, ensureBinaries(layout, () => undefined).server);
      } else if (fault === 'postgresRestarts') {
        const pauseMs = index % 2 === 1 ? target.postgresPauseMs : 0;
        log(`PostgreSQL ${pauseMs > 0 ? `stopped for ${pauseMs / 1000} s` : 'restarted (fast)'}`);
        await restartPostgres(layout, pauseMs);
      } else if (fault === 'minioOutages') {
        const downMs = between(target.minioOutageMs);
        log(`MinIO killed for ${downMs / 1000} s`);
        await killStackProcess(layout, 'minio');
        await sleep(downMs);
        await startStackMinio(layout);
      } else if (index % 2 === 0) {
        report.faults.proxy.connectionsCut += proxy.reset();
      } else {
        const ms = between([2_000, 6_000]);
        report.faults.proxy.stalledMs += ms;
        await proxy.stall(ms);
      }
    },
    async stop() {
      await proxy.close();
      await stopStack(options);
      await rm(options.dir, { recursive: true, force: true });
    },
  };
}

export async function runChaos(plan: ChaosPlan): Promise<ChaosReport> {
  const log = plan.log ?? (() => undefined);
  const started = Date.now();
  const random = seededRandom(plan.seed);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-chaos-'));
  const backend = plan.target.kind === 'stack' ? await stackBackend(plan.target, random, log) : await devBackend(dir, random);
  const planned: ChaosFaults = {
    workerKills: plan.workerKills,
    temporalRestarts: plan.temporalRestarts,
    postgresRestarts: plan.target.kind === 'stack' ? plan.target.postgresRestarts : 0,
    minioOutages: plan.target.kind === 'stack' ? plan.target.minioOutages : 0,
    proxyFaults: plan.target.kind === 'stack' ? plan.target.proxyFaults : 0,
  };
  const source = await startFlakySource(plan.seed);
  const common: NodeJS.ProcessEnv = {
    ...process.env,
    TEMPORAL_ADDRESS: backend.address,
    FAULTLINE_ALLOWED_ROOTS: path.join(dir, 'out'),
    FAULTLINE_ALLOWED_HOSTS: '127.0.0.1',
    FAULTLINE_TASK_QUEUE: 'faultline-chaos',
    FAULTLINE_LOG_LEVEL: 'warn',
    FAULTLINE_LOG_FORMAT: 'json',
    FAULTLINE_SHUTDOWN_GRACE: '2s',
    FAULTLINE_WORKER_PROCESSES: String(plan.processes),
  };
  const env = { ...common, ...backend.workerSettings };
  const config = loadConfig({ ...common, ...backend.clientSettings }, dir);
  let supervisorLog = '';
  const supervisor: ChildProcess = spawn(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'worker'], { env, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  supervisor.stderr?.on('data', (chunk: Buffer) => {
    supervisorLog = (supervisorLog + chunk.toString()).slice(-2_000_000);
    if (process.env.FAULTLINE_CHAOS_VERBOSE) process.stderr.write(chunk);
  });
  const killSupervisor = () => supervisor.kill('SIGKILL');
  process.once('exit', killSupervisor);
  // The supervisor must outlive every fault: if it goes, the round fails at once instead of waiting for jobs nobody runs.
  let supervisorGone: string | undefined;
  const supervisorExit = new Promise<never>((_, reject) =>
    supervisor.once('exit', (code, signal) => {
      supervisorGone = `the worker supervisor exited (${code ?? signal}); its last words: ${supervisorLog.slice(-1_500)}`;
      reject(new Error(supervisorGone));
    }),
  );
  supervisorExit.catch(() => undefined);
  const connection = await Connection.connect({ address: backend.address });
  const client = await FaultlineClient.connect({ config, connection });

  const report: ChaosReport = {
    seed: plan.seed,
    target: plan.target.kind,
    processes: plan.processes,
    rounds: [],
    faults: { workerKills: 0, temporalRestarts: 0, postgresRestarts: 0, minioOutages: 0, proxyFaults: 0, workerRestartsSeen: 0, http: source.counts, proxy: { connectionsCut: 0, stalledMs: 0 } },
    items: 0,
    strayTempFiles: 0,
    elapsedMs: 0,
    violations: [],
  };
  const violation = (line: string) => {
    report.violations.push(line);
    log(`VIOLATION ${line}`);
  };
  // On the stack, long ids put the synthetic spec over the client's inline limit: it is stored in MinIO, and its batches read their items by place from there.
  const idPad = plan.target.kind === 'stack' ? `-${'p'.repeat(108)}` : '';
  const kinds = Object.keys(planned) as (keyof ChaosFaults)[];
  const owed = () => kinds.some((kind) => report.faults[kind] < planned[kind]);

  /** Injects one fault; false when there was nothing to hit (no worker process up at that moment). */
  const inject = async (fault: keyof ChaosFaults): Promise<boolean> => {
    if (fault === 'workerKills') {
      const pids = workerChildren(supervisor.pid ?? -1);
      const victim = pids[Math.floor(random() * pids.length)];
      if (victim === undefined) return false;
      process.kill(victim, 'SIGKILL');
    } else await backend.inject(fault, report.faults[fault], report);
    report.faults[fault] += 1;
    return true;
  };

  try {
    await persist('workers polling', async () => {
      if (workerChildren(supervisor.pid ?? -1).length < plan.processes) throw new Error('not yet');
    });
    for (let round = 1; round <= plan.rounds || owed(); round++) {
      const roundStarted = Date.now();
      const roundsLeft = Math.max(1, plan.rounds - round + 1);
      const out = path.join(dir, 'out', `round-${round}`);
      const specs: { name: string; spec: JobSpec }[] = [
        {
          name: 'images',
          spec: {
            pipeline: 'images',
            items: Array.from({ length: plan.imagesPerRound }, (_, i) => ({ id: `img-${i}`, source: `${source.url}/r${round}/img-${i}.jpg` })),
            outputs: ['thumbnail'],
            destination: pathToFileURL(path.join(out, 'images')).toString(),
            options: { crashBudget: 20, heartbeatTimeout: '5s', batchSize: 5 },
          },
        },
        {
          name: 'synthetic',
          spec: {
            pipeline: 'synthetic',
            items: Array.from({ length: plan.syntheticPerRound }, (_, i) => ({ id: `s-${i}${idPad}`, params: { cpuMs: 2 } })),
            destination: pathToFileURL(path.join(out, 'synthetic')).toString(),
            options: { crashBudget: 20, heartbeatTimeout: '5s' },
          },
        },
      ];
      const jobs = await Promise.all(
        specs.map(async ({ name, spec }) => ({ name, spec, jobId: (await persist('start', () => client.start(spec, { jobId: `chaos-${plan.seed}-r${round}-${name}` }))).jobId })),
      );
      let closed = false;
      const results = Promise.all(
        jobs.map(async (job) => {
          await persist(
            `${job.jobId} closed`,
            async () => {
              if ((await client.jobState(job.jobId)).kind !== 'closed') throw new Error('open');
            },
            600_000,
          );
          return { ...job, result: await persist(`${job.jobId} result`, () => client.result(job.jobId)) };
        }),
      ).finally(() => (closed = true));
      results.catch(() => undefined); // awaited below, unless the supervisor's exit ends the round first

      // Faults, in a seeded order, while the round's jobs run; what a round could not inject moves to the next.
      const faults = kinds.flatMap((kind) => Array<keyof ChaosFaults>(Math.ceil(Math.max(0, planned[kind] - report.faults[kind]) / roundsLeft)).fill(kind)).sort(() => random() - 0.5);
      const before = { ...report.faults };
      for (const fault of faults) {
        await sleep(300 + Math.floor(random() * 1_200));
        if (closed || supervisorGone) break;
        await inject(fault);
      }
      let finished: Awaited<typeof results>;
      try {
        finished = await Promise.race([results, supervisorExit]);
      } catch (error) {
        violation(`round ${round}: ${(error as Error).message}`);
        for (const job of jobs) log(`what ${job.jobId} waits on:\n${await pendingWork(connection, job.jobId).catch((e: Error) => `  (describe failed: ${e.message})`)}`);
        log(`the supervisor's last words: ${supervisorLog.slice(-4_000)}`);
        break;
      }
      const injected = Object.fromEntries(kinds.map((kind) => [kind, report.faults[kind] - before[kind]])) as unknown as ChaosFaults;
      const roundReport: RoundReport = { round, jobs: [], faults: injected, elapsedMs: Date.now() - roundStarted };
      for (const { name, spec, jobId, result } of finished) {
        roundReport.jobs.push({ jobId, pipeline: spec.pipeline, status: result.status, items: spec.items.length, counts: result.counts });
        report.items += spec.items.length;
        const records = await persist(`${jobId} records`, () => client.records(result));
        await checkJob(name, spec, result, records, violation, report);
      }
      report.rounds.push(roundReport);
      log(
        `round ${round}: ${roundReport.jobs.map((job) => `${job.pipeline} ${job.items} ${job.status}`).join(', ')}; ` +
          `${kinds.map((kind) => `${injected[kind]} ${kind}`).join(', ')}; ${Math.round(roundReport.elapsedMs / 1000)} s`,
      );
      if (report.violations.length > 0) break;
      if (round > plan.rounds + 50) {
        violation('the planned faults could not all be injected in 50 extra rounds');
        break;
      }
    }
  } finally {
    report.faults.workerRestartsSeen = (supervisorLog.match(/worker process exited; restarting/g) ?? []).length;
    const gone = new Promise((resolve) => (supervisor.exitCode !== null || supervisor.signalCode !== null ? resolve(undefined) : supervisor.once('exit', resolve)));
    supervisor.kill('SIGTERM');
    const timer = setTimeout(killSupervisor, 20_000);
    await gone;
    clearTimeout(timer);
    process.off('exit', killSupervisor);
    await client.close();
    await connection.close();
    await backend.stop();
    await source.close();
    await rm(dir, { recursive: true, force: true });
  }
  report.elapsedMs = Date.now() - started;
  return report;
}

/** A stuck job's open work, its children's too: which activity or child never closed, and why. */
async function pendingWork(connection: Connection, workflowId: string, depth = 0): Promise<string> {
  const indent = '  '.repeat(depth + 1);
  const {
    workflowExecutionInfo: info,
    pendingActivities,
    pendingChildren,
  } = await connection.workflowService.describeWorkflowExecution({
    namespace: 'default',
    execution: { workflowId },
  });
  const lines = [`${indent}${workflowId} run ${info?.execution?.runId ?? '?'}: status ${info?.status ?? '?'}, ${info?.historyLength?.toString() ?? '?'} events`];
  for (const activity of pendingActivities ?? []) {
    lines.push(
      `${indent}  activity ${activity.activityType?.name ?? '?'} (${activity.activityId ?? '?'}): state ${activity.state ?? '?'}, attempt ${activity.attempt ?? '?'}, ` +
        `last failure ${JSON.stringify(activity.lastFailure?.message ?? null)}, last worker ${activity.lastWorkerIdentity ?? '?'}`,
    );
  }
  for (const child of pendingChildren ?? []) {
    if (child.workflowId && depth < 3) lines.push(await pendingWork(connection, child.workflowId, depth + 1).catch((e: Error) => `${indent}  ${child.workflowId}: ${e.message}`));
  }
  return lines.join('\n');
}

async function checkJob(name: string, spec: JobSpec, result: JobResult, records: OutputRecord[], violation: (line: string) => void, report: ChaosReport): Promise<void> {
  const outputs = spec.outputs ?? ['result'];
  const expected = spec.items.length * outputs.length;
  if (result.status !== 'Succeeded') violation(`${name}: status ${result.status} (${JSON.stringify(result.counts)}; first error ${JSON.stringify(result.errors[0] ?? null)})`);
  if (result.counts.outputs !== expected || result.counts.Available !== expected) violation(`${name}: counts ${JSON.stringify(result.counts)}, expected ${expected} Available`);
  const seen = new Map<string, number>();
  for (const record of records) seen.set(`${record.item}/${record.output}`, (seen.get(`${record.item}/${record.output}`) ?? 0) + 1);
  for (const item of spec.items) {
    for (const output of outputs) {
      const count = seen.get(`${item.id}/${output}`) ?? 0;
      if (count !== 1) violation(`${name}: ${item.id}/${output} has ${count} records`);
    }
  }
  if (records.length !== expected) violation(`${name}: ${records.length} records, expected ${expected}`);
  const locations = new Set<string>();
  for (const record of records.filter((r) => r.status === 'Available')) {
    if (!record.location) {
      violation(`${name}: ${record.item}/${record.output} is Available without a location`);
      continue;
    }
    const file = fileURLToPath(record.location);
    locations.add(file);
    const data = await readFile(file).catch(() => undefined);
    if (!data) violation(`${name}: ${record.item}/${record.output}: ${file} is missing`);
    else if (data.length !== record.bytes || createHash('sha256').update(data).digest('hex') !== record.sha256) violation(`${name}: ${file} differs from its record (bytes or sha256)`);
  }
  // Nothing but the outputs in the destination (a write cut short leaves only a *.tmp, counted).
  const destination = fileURLToPath(spec.destination ?? '');
  for (const entry of await readdir(destination, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    if (locations.has(file)) continue;
    if (/\.tmp(-|$)/.test(path.basename(file))) report.strayTempFiles += 1;
    else violation(`${name}: unexpected file ${file}`);
  }
}
