/**
 * The fault suite behind `npm run chaos` and its short version in `npm test`: a real dev server
 * on a SQLite file, `faultline worker --processes N` as a real supervisor, a flaky HTTP source,
 * and a seeded schedule of worker SIGKILLs and Temporal server kills and restarts while rounds of
 * jobs run. Every round is checked: every output exactly once, exact counts, every Available file
 * present with its recorded size and sha256, nothing else in the destinations.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
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
  serverRestarts: number;
  /** Worker processes under the supervisor. */
  processes: number;
  log?: (line: string) => void;
}

export type HttpFault = 'ok' | 'unavailable' | 'reset' | 'drip';

export interface RoundReport {
  round: number;
  jobs: { jobId: string; pipeline: string; status: string; items: number; counts: JobResult['counts'] }[];
  workerKills: number;
  serverRestarts: number;
  elapsedMs: number;
}

export interface ChaosReport {
  seed: number;
  processes: number;
  rounds: RoundReport[];
  faults: { workerKills: number; serverRestarts: number; workerRestartsSeen: number; http: Record<HttpFault, number> };
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

export async function runChaos(plan: ChaosPlan): Promise<ChaosReport> {
  const log = plan.log ?? (() => undefined);
  const started = Date.now();
  const random = seededRandom(plan.seed);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'faultline-chaos-'));
  const port = await freePort();
  const db = path.join(dir, 'chaos.db');
  let server: DevServer = await startDevServer({ port, db, ui: false });
  const source = await startFlakySource(plan.seed);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TEMPORAL_ADDRESS: server.address,
    FAULTLINE_STORAGE: path.join(dir, 'storage'),
    FAULTLINE_ALLOWED_ROOTS: path.join(dir, 'out'),
    FAULTLINE_ALLOWED_HOSTS: '127.0.0.1',
    FAULTLINE_TASK_QUEUE: 'faultline-chaos',
    FAULTLINE_LOG_LEVEL: 'warn',
    FAULTLINE_LOG_FORMAT: 'json',
    FAULTLINE_SHUTDOWN_GRACE: '2s',
    FAULTLINE_WORKER_PROCESSES: String(plan.processes),
  };
  const config = loadConfig(env, dir);
  let supervisorLog = '';
  const supervisor: ChildProcess = spawn(process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'worker'], { env, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  supervisor.stderr?.on('data', (chunk: Buffer) => {
    supervisorLog = (supervisorLog + chunk.toString()).slice(-2_000_000);
    if (process.env.FAULTLINE_CHAOS_VERBOSE) process.stderr.write(chunk);
  });
  const killSupervisor = () => supervisor.kill('SIGKILL');
  process.once('exit', killSupervisor);
  const connection = await Connection.connect({ address: server.address });
  const client = await FaultlineClient.connect({ config, connection });

  const report: ChaosReport = {
    seed: plan.seed,
    processes: plan.processes,
    rounds: [],
    faults: { workerKills: 0, serverRestarts: 0, workerRestartsSeen: 0, http: source.counts },
    items: 0,
    strayTempFiles: 0,
    elapsedMs: 0,
    violations: [],
  };
  const violation = (line: string) => {
    report.violations.push(line);
    log(`VIOLATION ${line}`);
  };

  const killWorker = async (): Promise<boolean> => {
    const pids = workerChildren(supervisor.pid ?? -1);
    const victim = pids[Math.floor(random() * pids.length)];
    if (victim === undefined) return false;
    process.kill(victim, 'SIGKILL');
    report.faults.workerKills += 1;
    return true;
  };
  const restartServer = async () => {
    server.process.kill('SIGKILL');
    await new Promise((resolve) => (server.process.exitCode !== null || server.process.signalCode !== null ? resolve(undefined) : server.process.once('exit', resolve)));
    await sleep(200 + Math.floor(random() * 1_000)); // down for a moment: workers and clients see it gone
    server = await startDevServer({ port, db, ui: false });
    report.faults.serverRestarts += 1;
  };

  try {
    await persist('workers polling', async () => {
      if (workerChildren(supervisor.pid ?? -1).length < plan.processes) throw new Error('not yet');
    });
    for (let round = 1; round <= plan.rounds || report.faults.workerKills < plan.workerKills || report.faults.serverRestarts < plan.serverRestarts; round++) {
      const roundStarted = Date.now();
      const roundsLeft = Math.max(1, plan.rounds - round + 1);
      const killsThisRound = Math.ceil(Math.max(0, plan.workerKills - report.faults.workerKills) / roundsLeft);
      const restartsThisRound = Math.ceil(Math.max(0, plan.serverRestarts - report.faults.serverRestarts) / roundsLeft);
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
            items: Array.from({ length: plan.syntheticPerRound }, (_, i) => ({ id: `s-${i}`, params: { cpuMs: 2 } })),
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

      // Faults, in a seeded order, while the round's jobs run.
      const faults = [...Array<'kill'>(killsThisRound).fill('kill'), ...Array<'restart'>(restartsThisRound).fill('restart')].sort(() => random() - 0.5);
      let kills = 0;
      let restarts = 0;
      for (const fault of faults) {
        await sleep(300 + Math.floor(random() * 1_200));
        if (closed) break;
        if (fault === 'kill') kills += (await killWorker()) ? 1 : 0;
        else {
          await restartServer();
          restarts += 1;
        }
      }
      const finished = await results;
      const roundReport: RoundReport = { round, jobs: [], workerKills: kills, serverRestarts: restarts, elapsedMs: Date.now() - roundStarted };
      for (const { name, spec, jobId, result } of finished) {
        roundReport.jobs.push({ jobId, pipeline: spec.pipeline, status: result.status, items: spec.items.length, counts: result.counts });
        report.items += spec.items.length;
        const records = await client.records(result);
        await checkJob(name, spec, result, records, violation, report);
      }
      report.rounds.push(roundReport);
      log(
        `round ${round}: ${roundReport.jobs.map((job) => `${job.pipeline} ${job.items} ${job.status}`).join(', ')}; ${kills} worker kills, ${restarts} server restarts, ${Math.round(roundReport.elapsedMs / 1000)} s`,
      );
      if (report.violations.length > 0) break;
      if (round > plan.rounds + 50) {
        violation('the planned faults could not all be injected in 50 extra rounds');
        break;
      }
    }
  } finally {
    report.faults.workerRestartsSeen = (supervisorLog.match(/worker process exited; restarting/g) ?? []).length;
    const gone = new Promise((resolve) => (supervisor.exitCode !== null ? resolve(undefined) : supervisor.once('exit', resolve)));
    supervisor.kill('SIGTERM');
    const timer = setTimeout(killSupervisor, 20_000);
    await gone;
    clearTimeout(timer);
    process.off('exit', killSupervisor);
    await client.close();
    await connection.close();
    await server.stop();
    await source.close();
    await rm(dir, { recursive: true, force: true });
  }
  report.elapsedMs = Date.now() - started;
  return report;
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
